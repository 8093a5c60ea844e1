"""Chapter 7's weak-supervision and self-supervision experiments (mmcourse.labs.ch07_sparsity)."""

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch07_sparsity import (
    SMALL_MODEL,
    build_small_clip,
    nearest_neighbour_probe,
    noisy_scene_text_pairs,
    pretrain_image_encoder,
    score_pairs,
    seed_spread,
    weak_pairs,
)

SHAPES3 = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(200, image_size=16, max_objects=1, seed=0, shapes=SHAPES3)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def test_weak_pairs_keep_the_clean_pairs_and_mismatch_only_the_weak_ones(world, tokenizer):
    clean, weak = list(range(20)), list(range(20, 60))
    data = weak_pairs(world, tokenizer, clean, weak, noise_rate=0.5, seed=0)
    right = noisy_scene_text_pairs(world, tokenizer, clean + weak)
    assert data["images"].shape == right["images"].shape
    same = (data["input_ids"] == right["input_ids"]).all(dim=-1).squeeze(1)
    assert bool(same[:20].all())
    assert int((~same[20:]).sum()) >= 10  # half of 40 rotated; a few may hit an identical caption
    zero = weak_pairs(world, tokenizer, clean, weak, noise_rate=0.0, seed=0)
    assert all(torch.equal(zero[k], right[k]) for k in right)


def test_ssl_pretraining_is_deterministic_and_learns(world):
    images = world.images[:64]
    first, history = pretrain_image_encoder(images, steps=12, batch_size=32, seed=0)
    again, _ = pretrain_image_encoder(images, steps=12, batch_size=32, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert history.losses[-1] < history.losses[0]
    assert first.dim == SMALL_MODEL["vision_dim"] and not first.training


def test_score_pairs_takes_a_pretrained_image_encoder_and_weak_pairs(world, tokenizer):
    encoder, _ = pretrain_image_encoder(world.images[:64], steps=3, batch_size=32, seed=0)
    kwargs = dict(seeds=[0], steps=3)
    plain = score_pairs(world, tokenizer, list(range(20)), list(range(150, 200)), **kwargs)
    started = score_pairs(world, tokenizer, list(range(20)), list(range(150, 200)), image_encoder=encoder, **kwargs)
    assert plain != started
    weak = score_pairs(world, tokenizer, list(range(20)), list(range(150, 200)), weak_indices=list(range(20, 60)),
                       weak_noise_rate=0.5, **kwargs)
    assert set(weak) == {"accuracy", "color", "shape"}
    with pytest.raises(ValueError, match="image_encoder"):
        score_pairs(world, tokenizer, list(range(20)), list(range(150, 200)), image_encoder=encoder,
                    init=build_small_clip(tokenizer.vocab_size, image_size=16), **kwargs)


def test_nearest_neighbour_probe_and_seed_spread(world):
    encoder, _ = pretrain_image_encoder(world.images[:64], steps=2, batch_size=32, seed=0)
    probe = nearest_neighbour_probe(encoder, world, list(range(150)), list(range(150, 200)))
    assert set(probe) == {"color", "shape"} and all(0 <= v <= 1 for v in probe.values())
    # a scene's own image is its nearest neighbour: perfect
    assert nearest_neighbour_probe(encoder, world, list(range(50)), list(range(50))) == {"color": 1.0, "shape": 1.0}
    assert seed_spread({0: {"accuracy": 0.2}, 1: {"accuracy": 0.4}}) == pytest.approx((0.3, 0.2, 0.4))
    with pytest.raises(ValueError):
        seed_spread({})
