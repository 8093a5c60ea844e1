"""Chapter 6's shown code agrees with the library: the VQA forward pass written out in the notebook gives
VQAModel's logits, and the notebook's generator training loop gives the same bits as train_sprite_decoder."""

from __future__ import annotations

import pytest
import torch

from mmcourse.data import Tokenizer
from mmcourse.labs.ch06_applications import train_sprite_decoder
from mmcourse.models.generator import SpriteDecoder
from mmcourse.models.vqa import VQAModel
from mmcourse.nn.encoders import SmallCNN
from mmcourse.nn.frozen import PrecomputedTokens
from mmcourse.train import seeded
from tests.lesson_code import lesson_namespace


@pytest.fixture(scope="module")
def ns() -> dict:
    return lesson_namespace("06_applications.ipynb")


QUESTIONS = ["what color is the circle?", "how many objects are there?", "is there a cross?",
             "where is the red square relative to the blue circle?"]  # fmt: skip


@pytest.mark.parametrize("depth", [1, 2])
def test_vqa_forward_matches_the_model_on_cached_tokens(ns, depth):
    tokenizer = Tokenizer()
    with seeded(0):
        model = VQAModel(tokenizer.vocab_size, PrecomputedTokens(16, grid_size=2), dim=32, num_heads=4,
                         fusion_depth=depth, max_len=14).eval()  # fmt: skip
        for p in model.parameters():  # move every weight off its initial value (LayerNorms included)
            p.data.add_(0.1 * torch.randn_like(p))
        tokens = torch.randn(len(QUESTIONS), 4, 16)
    ids, mask = tokenizer.encode(QUESTIONS, max_len=14)  # questions of different lengths: padding matters
    assert not mask.all()
    with torch.no_grad():
        expected = model(tokens, ids, mask)
        got = ns["vqa_forward"](model, tokens, ids, mask)
    assert got.shape == expected.shape == (len(QUESTIONS), model.num_answers)
    assert torch.allclose(got, expected, atol=1e-5)


def test_vqa_forward_matches_the_model_on_images(ns):
    tokenizer = Tokenizer()
    with seeded(1):
        model = VQAModel(tokenizer.vocab_size, SmallCNN(3, width=4, dim=16, image_size=16), dim=16, num_heads=2,
                         max_len=14).eval()  # fmt: skip
        images = torch.rand(len(QUESTIONS), 3, 16, 16)
    ids, mask = tokenizer.encode(QUESTIONS, max_len=14)
    with torch.no_grad():
        assert torch.allclose(ns["vqa_forward"](model, images, ids, mask), model(images, ids, mask), atol=1e-5)


def test_generator_training_loop_gives_the_library_bits(ns):
    g = torch.Generator().manual_seed(0)
    data = {"text": torch.randn(70, 8, generator=g), "sizes": torch.randint(0, 2, (70,), generator=g),
            "sprites": torch.rand(70, 3, 4, 4, generator=g)}  # fmt: skip
    models = []
    for _ in range(2):
        with seeded(0):
            models.append(SpriteDecoder(text_dim=8, hidden=16, patch=4))
    losses = ns["train_generator"](models[0], data["text"], data["sizes"], data["sprites"], steps=7, batch_size=32,
                                   lr=1e-2, seed=3)  # fmt: skip
    history = train_sprite_decoder(models[1], data, steps=7, batch_size=32, lr=1e-2, seed=3)
    assert losses == history.losses  # 2 batches of 32 per epoch: the 7 steps cross epochs
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    assert not models[0].training and not models[1].training
