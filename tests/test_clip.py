"""TinyCLIP: embeddings, logits, temperature, deterministic training, and the ShapesWorld evaluation helpers."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmcourse.clip import (
    SHAPES_TEMPLATES,
    build_tiny_clip,
    caption_retrieval,
    class_prompt_names,
    train_tiny_clip,
    zero_shot_color_shape_accuracy,
)
from mmcourse.contrastive import contrastive_loss
from mmcourse.data import COLORS, SHAPES, ShapesWorld, Tokenizer


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(48, image_size=16, max_objects=1, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_world(None)


def _small_model(tokenizer, image_encoder="cnn"):
    torch.manual_seed(0)
    return build_tiny_clip(
        tokenizer.vocab_size, image_size=16, image_encoder=image_encoder, cnn_width=4, vision_dim=16,
        vision_depth=1, text_dim=16, text_depth=1, num_heads=2, embed_dim=8,
    )  # fmt: skip


@pytest.mark.parametrize("image_encoder", ["cnn", "vit"])
def test_embeddings_are_normalised_and_logits_are_scaled_cosines(world, tokenizer, image_encoder):
    model = _small_model(tokenizer, image_encoder).eval()
    images = world.images[:5]
    ids, mask = tokenizer.encode(world.captions[:5])
    img, txt = model.encode_image(images), model.encode_text(ids, mask)
    assert img.shape == (5, 8) and txt.shape == (5, 8)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(5))
    logits_per_image, logits_per_text = model(images, ids, mask)
    torch.testing.assert_close(logits_per_image, (1 / 0.07) * img @ txt.t())
    torch.testing.assert_close(logits_per_text, logits_per_image.t())
    # the model's loss is the article's loss at the model's temperature
    temperature = 1 / float(model.logit_scale().detach())
    torch.testing.assert_close(
        model.loss(images, ids, mask), contrastive_loss(img, txt, temperature), atol=1e-5, rtol=1e-5
    )


def test_logit_scale_starts_at_one_over_0_07_and_is_clamped(tokenizer):
    model = _small_model(tokenizer)
    assert float(model.logit_scale.log_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.log_scale.fill_(8.0)
    assert float(model.logit_scale().detach()) == 100.0


def test_training_is_deterministic_and_lowers_the_loss(world, tokenizer):
    runs = []
    for _ in range(2):
        model, history = train_tiny_clip(
            world, tokenizer, steps=25, batch_size=16, lr=1e-2, warmup_steps=2, seed=5, **_SMALL
        )
        runs.append((history.losses, model.encode_image(world.images[:3])))
    assert runs[0][0] == runs[1][0]
    torch.testing.assert_close(runs[0][1], runs[1][1])
    losses = runs[0][0]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert not model.training


_SMALL = dict(cnn_width=4, vision_dim=16, text_dim=16, text_depth=1, num_heads=2, embed_dim=8)


class _OracleCLIP(torch.nn.Module):
    """Perfect embeddings: one-hot of the (colour, shape) class, read from the world and from the words."""

    def __init__(self, world, tokenizer):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.world, self.tokenizer = world, tokenizer
        self.dim = len(COLORS) * len(SHAPES)

    def encode_image(self, images):
        same = (images[:, None] == self.world.images[None]).flatten(2).all(-1)  # (B, N)
        return F.one_hot(self.world.labels[same.float().argmax(1)], self.dim).float()

    def encode_text(self, ids, mask):
        rows = []
        for text in self.tokenizer.decode(ids):
            words = text.split()
            color = next(COLORS.index(w) for w in words if w in COLORS)
            shape = next(SHAPES.index(w) for w in words if w in SHAPES)
            rows.append(color * len(SHAPES) + shape)
        return F.one_hot(torch.tensor(rows), self.dim).float()


def test_zero_shot_accuracy_pipeline_with_an_oracle(world, tokenizer):
    oracle = _OracleCLIP(world, tokenizer)
    assert zero_shot_color_shape_accuracy(oracle, world, tokenizer) == 1.0
    assert class_prompt_names(["orange", "red"], ["circle"]) == ["an orange circle", "a red circle"]
    assert all("{}" in t for t in SHAPES_TEMPLATES)

    # a model that always answers "red circle" is right exactly on the red circles
    class RedCircle(_OracleCLIP):
        def encode_image(self, images):
            return F.one_hot(torch.zeros(len(images), dtype=torch.long), self.dim).float()

    expected = float((world.labels == 0).float().mean())
    assert zero_shot_color_shape_accuracy(RedCircle(world, tokenizer), world, tokenizer) == pytest.approx(expected)


def test_caption_retrieval_groups_identical_captions(world, tokenizer):
    oracle = _OracleCLIP(world, tokenizer)
    metrics = caption_retrieval(oracle, world.images, world.captions, tokenizer, ks=(1,))
    assert metrics == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}


def test_bad_inputs(world, tokenizer):
    model = _small_model(tokenizer)
    with pytest.raises(ValueError, match="same number of pairs"):
        model.loss(world.images[:4], *tokenizer.encode(world.captions[:3]))
    with pytest.raises(ValueError, match="images must be 16x16"):
        model.encode_image(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="captions must hold one caption per image"):
        caption_retrieval(model, world.images[:4], world.captions[:3], tokenizer)
    with pytest.raises(ValueError, match="image_encoder must be one of"):
        build_tiny_clip(10, image_encoder="resnet")
    with pytest.raises(ValueError, match="steps must be > 0"):
        train_tiny_clip(world, tokenizer, steps=0)
