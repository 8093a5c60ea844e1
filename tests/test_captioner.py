"""Tests of mmcourse.models.captioner: the ITG caption decoder, its loss and its decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.labs.common import mentioned_objects, object_match_rate, train_captioner
from mmcourse.models.captioner import Captioner
from mmcourse.nn.encoders import SmallCNN

CLS, BOS, EOS, PAD = 1, 4, 5, 0
VOCAB, LENGTH = 15, 4  # copy task: 4 symbols from ids 7..14


class SymbolEncoder(nn.Module):
    """'Images' that are one-hot symbol sequences (B, LENGTH, VOCAB) → tokens (B, LENGTH, dim)."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, LENGTH, dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.pos


def copy_batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(7, VOCAB, (n, LENGTH), generator=g)
    ids = torch.cat([torch.full((n, 1), CLS), symbols, torch.full((n, 1), EOS)], dim=1)
    return F.one_hot(symbols, VOCAB).float(), ids, symbols


@pytest.fixture(scope="module")
def copier() -> Captioner:
    torch.manual_seed(0)
    model = Captioner(VOCAB, SymbolEncoder(32), dim=32, depth=1, num_heads=2, max_len=8)
    images, ids, _ = copy_batch(4096, seed=0)
    history = train_captioner(model, {"images": images, "caption_ids": ids}, steps=150, batch_size=32, lr=3e-3, seed=0)
    assert history.losses[-1] < history.losses[0] / 10
    return model


def test_greedy_decoding_of_a_trained_copier_returns_the_copy(copier):
    images, _, symbols = copy_batch(64, seed=123)  # sequences never seen as a batch
    out = copier.generate(images, max_len=7)
    assert out.dtype == torch.long and out.shape[0] == 64 and out.shape[1] <= 7
    assert torch.equal(out[:, :LENGTH], symbols)
    assert (out[:, LENGTH] == EOS).all()
    assert copier.training  # generate restores the training mode


def test_beam_with_one_beam_equals_greedy_and_wider_beams_also_copy(copier):
    images, _, symbols = copy_batch(32, seed=7)
    greedy, g_scores = copier.generate(images, num_beams=1, max_len=7, return_scores=True)
    from mmcourse.objectives.itg import beam_search

    memory = copier.encode_images(images)
    copier.eval()
    beam, b_scores = beam_search(
        lambda t, i: copier.decode(t, memory[i])[:, -1], 32, BOS, EOS, 7, num_beams=1
    )
    copier.train()
    assert torch.equal(greedy, beam) and torch.allclose(g_scores, b_scores)
    wide = copier.generate(images, num_beams=4, max_len=7, length_penalty=0.7)
    assert torch.equal(wide[:, :LENGTH], symbols)


def test_captioner_loss_ignores_pad_and_is_teacher_forced():
    torch.manual_seed(0)
    model = Captioner(VOCAB, SymbolEncoder(16), dim=16, depth=1, num_heads=2, max_len=8).eval()
    images, ids, _ = copy_batch(3, seed=1)
    padded = torch.cat([ids, torch.full((3, 2), PAD)], dim=1)
    # extra PAD columns change nothing (causal attention: real positions never see them)
    assert torch.allclose(model.loss(images, ids), model.loss(images, padded), atol=1e-6)
    # the loss is the cross-entropy of logits for [BOS] w1..wn against w1..wn [EOS]
    inputs = ids[:, :-1].clone()
    inputs[:, 0] = BOS
    logits = model(images, inputs)
    assert logits.shape == (3, ids.shape[1] - 1, VOCAB)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert torch.allclose(model.loss(images, ids), expected, atol=1e-6)


def test_causal_decoder_does_not_look_ahead():
    torch.manual_seed(0)
    model = Captioner(VOCAB, SymbolEncoder(16), dim=16, depth=2, num_heads=2, max_len=8).eval()
    images, ids, _ = copy_batch(2, seed=2)
    a = model(images, ids[:, :5])
    changed = ids[:, :5].clone()
    changed[:, 4] = 7 if changed[0, 4] != 7 else 8
    b = model(images, changed)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4], b[:, 4])


def test_captioner_on_images_and_device_plumbing():
    torch.manual_seed(0)
    model = Captioner(20, SmallCNN(width=4, dim=16, image_size=16), dim=16, depth=1, num_heads=2, max_len=10)
    images = torch.rand(3, 3, 16, 16)
    out = model.generate(images, num_beams=2, max_len=6)
    assert out.device == images.device and out.shape[0] == 3 and out.shape[1] <= 6
    assert ((out >= 0) & (out < 20)).all()
    if torch.cuda.is_available():
        model = model.cuda()
        out = model.generate(images.cuda(), num_beams=2, max_len=6)
        assert out.device.type == "cuda"


def test_captioner_bad_inputs():
    model = Captioner(VOCAB, SymbolEncoder(16), dim=16, depth=1, num_heads=2, max_len=6)
    images, ids, _ = copy_batch(2, seed=0)
    with pytest.raises(ValueError, match="max_len"):
        model.generate(images, max_len=7)
    with pytest.raises(ValueError, match="longer than max_len"):
        model(images, torch.ones(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        model(images, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        model.generate(images[:0])
    with pytest.raises(TypeError, match="image_encoder"):
        Captioner(VOCAB, "cnn")
    with pytest.raises(ValueError, match="dim"):
        Captioner(VOCAB, nn.Linear(3, 3))
    with pytest.raises(ValueError, match="bos_id"):
        Captioner(VOCAB, SymbolEncoder(16), bos_id=VOCAB)


def test_mentioned_objects_and_match_rate():
    assert mentioned_objects("a red circle left of a blue box") == [("red", "circle"), ("blue", "square")]
    assert mentioned_objects("there is a large green disk") == [("green", "circle")]
    assert mentioned_objects("a red") == []
    objs = [[{"color": "blue", "shape": "square"}, {"color": "red", "shape": "circle"}]]
    assert object_match_rate(["a red circle left of a blue square"], objs) == 1.0
    assert object_match_rate(["a blue circle left of a red square"], objs) == 0.0
    assert object_match_rate(["a red circle"], objs) == 0.0
    with pytest.raises(ValueError, match="same length"):
        object_match_rate(["a", "b"], objs)
