"""Tests of mmcourse.models.generator (the sprite decoder) and its data and training in chapter 6's lab."""

from __future__ import annotations

import pytest
import torch

from mmcourse.data import ShapesWorld
from mmcourse.labs.ch06_applications import object_sprites, scene_background, train_sprite_decoder
from mmcourse.models.generator import SpriteDecoder
from mmcourse.train import seeded


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(40, image_size=32, max_objects=2, seed=3)


def test_decoder_draws_sprites_in_the_unit_range():
    with seeded(0):
        model = SpriteDecoder(text_dim=8, hidden=16, patch=6)
    with torch.no_grad():
        sprites = model(torch.randn(5, 8), torch.tensor([0, 1, 0, 1, 1]))
    assert sprites.shape == (5, 3, 6, 6)
    assert float(sprites.min()) >= 0.0 and float(sprites.max()) <= 1.0


def test_decoder_validates_its_inputs():
    with pytest.raises(ValueError, match="even"):
        SpriteDecoder(patch=5)
    model = SpriteDecoder(text_dim=8, hidden=16, patch=4)
    with pytest.raises(ValueError, match="text must be"):
        model(torch.randn(2, 7), torch.zeros(2))
    with pytest.raises(ValueError, match="sizes"):
        model(torch.randn(2, 8), torch.zeros(3))


def test_paste_puts_the_sprite_at_its_centre_and_cuts_at_the_border():
    sprite = torch.ones(1, 3, 4, 4)
    background = torch.tensor([0.1, 0.2, 0.3])
    image = SpriteDecoder.paste(sprite, torch.tensor([[5, 2]]), 8, background)[0]
    assert image.shape == (3, 8, 8)
    assert torch.equal(image[:, 0:4, 3:7], torch.ones(3, 4, 4))  # rows y-2..y+1, columns x-2..x+1
    assert torch.allclose(image[:, 5, 0], background) and torch.allclose(image[:, 0, 0], background)
    corner = SpriteDecoder.paste(sprite, torch.tensor([[0, 7]]), 8, background)[0]
    assert int((corner[0] == 1).sum()) == 2 * 3  # columns 0-1, rows 5-7: the rest fell off the image
    with pytest.raises(ValueError, match="centres must be pixel positions"):
        SpriteDecoder.paste(sprite, torch.tensor([[8, 0]]), 8, background)
    with pytest.raises(ValueError, match="centres must be"):
        SpriteDecoder.paste(sprite, torch.tensor([[1, 1], [2, 2]]), 8, background)
    with pytest.raises(ValueError, match="background"):
        SpriteDecoder.paste(sprite, torch.tensor([[1, 1]]), 8, background[:2])


def test_sprites_pasted_back_give_the_scenes(world):
    data = object_sprites(world, range(len(world.images)), patch=16)
    scenes = data["scenes"].tolist()
    assert scenes and all(int(world.num_objects[i]) == 1 for i in scenes)
    assert data["sprites"].shape == (len(scenes), 3, 16, 16) and data["centres"].shape == (len(scenes), 2)
    rebuilt = SpriteDecoder.paste(data["sprites"], data["centres"], 32, scene_background(world))
    assert torch.allclose(rebuilt, world.images[scenes], atol=1e-6)
    with pytest.raises(ValueError, match="one-object"):
        object_sprites(world, [i for i in range(len(world.images)) if int(world.num_objects[i]) == 2])


def test_paint_is_forward_then_paste():
    with seeded(0):
        model = SpriteDecoder(text_dim=8, hidden=16, patch=4).eval()
    text, sizes, centres = torch.randn(3, 8), torch.tensor([0, 1, 1]), torch.tensor([[1, 1], [4, 6], [7, 0]])
    background = torch.zeros(3)
    with torch.no_grad():
        expected = SpriteDecoder.paste(model(text, sizes), centres, 8, background)
    assert torch.equal(model.paint(text, sizes, centres, 8, background), expected)


def test_training_learns_sprites_and_is_deterministic(world):
    data = object_sprites(world, range(len(world.images)), patch=16)
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(len(data["scenes"]), 8, generator=g)  # one fixed "caption embedding" per scene
    tensors = {"text": codes, "sizes": data["sizes"], "sprites": data["sprites"]}
    results = []
    for _ in range(2):
        with seeded(0):
            model = SpriteDecoder(text_dim=8, hidden=64, patch=16)
        history = train_sprite_decoder(model, tensors, steps=60, batch_size=8, lr=3e-3, seed=1)
        results.append((history.losses, model(codes, data["sizes"]).detach()))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    assert results[0][0][-1] < results[0][0][0] / 3
    with pytest.raises(TypeError, match="SpriteDecoder"):
        train_sprite_decoder(torch.nn.Linear(2, 2), tensors)
    with pytest.raises(ValueError, match="share dim 0"):
        train_sprite_decoder(model, dict(tensors, sizes=data["sizes"][:-1]))
