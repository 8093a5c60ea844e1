"""Chapter 3 shows multi-head attention, the three fusion forwards, the training loss and the word→patch heat-maps as
code (cells tagged ``lesson``); these tests check that the shown code computes what the library computes."""

import pytest
import torch
from lesson_code import lesson_namespace

from mmcourse.labs.ch03_architectures import (
    build_fusion_model,
    fusion_loss,
    train_fusion,
    word_patch_attention,
)
from mmcourse.nn.attention import CrossModalAttention
from mmcourse.train import fit, seeded

VOCAB, LENGTH = 30, 8


@pytest.fixture(scope="module")
def ns():
    return lesson_namespace("03_architectures.ipynb")


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 16, 16, generator=g)
    input_ids = torch.randint(7, VOCAB, (6, LENGTH), generator=g)
    attention_mask = torch.ones(6, LENGTH, dtype=torch.long)
    attention_mask[1, 5:] = 0
    attention_mask[4, 3:] = 0
    return images, input_ids, attention_mask


def _model(kind, seed=0):
    return build_fusion_model(kind, VOCAB, image_size=16, patch_size=4, dim=16, max_len=LENGTH, hidden_dim=24,
                              seed=seed).eval()


def test_lesson_cells_only_define(ns):
    for name in ("split_heads", "merge_heads", "multi_head_attention", "early_fusion_forward", "late_fusion_forward",
                 "cross_fusion_forward", "fusion_loss", "word_patch_heatmaps"):
        assert callable(ns[name]), name


def test_head_split_and_merge_are_inverse(ns):
    x = torch.randn(2, 5, 12)
    heads = ns["split_heads"](x, 3)
    assert heads.shape == (2, 3, 5, 4)
    torch.testing.assert_close(heads[:, 1], x[..., 4:8])  # head 1 holds the second slice of the width
    assert torch.equal(ns["merge_heads"](heads), x)


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_matches_the_library(ns, masked):
    with seeded(1):
        attn = CrossModalAttention(32, num_heads=4, dropout=0.0).eval()
    g = torch.Generator().manual_seed(2)
    query, key = torch.randn(3, 5, 32, generator=g), torch.randn(3, 7, 32, generator=g)
    mask = None
    if masked:
        mask = torch.ones(3, 7, dtype=torch.bool)
        mask[0, 4:] = False
        mask[2, 1:] = False
    with torch.no_grad():
        out, weights = ns["multi_head_attention"](attn, query, key, key, mask=mask)
        lib_out, lib_weights = attn(query, key, key, mask=mask, need_weights=True)
        fast_out = attn(query, key, key, mask=mask)  # the SDPA path
    assert weights.shape == (3, 4, 5, 7)
    torch.testing.assert_close(out, lib_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights, lib_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, fast_out, atol=1e-5, rtol=1e-4)
    if masked:
        assert (weights[0, ..., 4:] == 0).all() and (weights[2, ..., 1:] == 0).all()


def test_multi_head_attention_is_finite_in_float16(ns):
    attn = CrossModalAttention(16, num_heads=2, dropout=0.0).eval().half()
    x = torch.randn(2, 3, 16).half()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out, _ = ns["multi_head_attention"](attn, x, x, x, mask=mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["early", "late", "cross"])
def test_fusion_forwards_match_the_library_classes(ns, inputs, kind):
    model = _model(kind)
    with torch.no_grad():
        shown = ns[f"{kind}_fusion_forward"](model, *inputs)
        if kind == "cross":
            shown, weights = shown
            lib_logits, lib_weights = model(*inputs, need_weights=True)
            assert len(weights) == len(lib_weights) == 2
            for w, lw in zip(weights, lib_weights):
                torch.testing.assert_close(w, lw, atol=1e-6, rtol=1e-5)
        else:
            lib_logits = model(*inputs)
    assert shown.shape == (6, 2)
    torch.testing.assert_close(shown, lib_logits, atol=1e-5, rtol=1e-4)


def test_the_shown_loss_is_the_labs_and_trains_the_same_model(ns, inputs):
    images, input_ids, attention_mask = inputs
    data = {"images": images, "input_ids": input_ids, "attention_mask": attention_mask,
            "labels": torch.tensor([0, 1, 1, 0, 1, 0])}
    model = _model("early")
    assert torch.equal(ns["fusion_loss"](model, data), fusion_loss(model, data))
    a, b = _model("early", seed=3), _model("early", seed=3)
    shown = fit(a, ns["fusion_loss"], data, steps=4, batch_size=4, lr=3e-3, lr_schedule="cosine", warmup_steps=1,
                seed=5)
    lab = train_fusion(b, data, steps=4, batch_size=4, warmup_steps=1, seed=5)
    assert shown.losses == lab.losses
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("head", [None, 1])
def test_word_patch_heatmaps_match_the_lab(ns, inputs, head):
    model = _model("cross")
    for layer in (0, 1):
        shown = ns["word_patch_heatmaps"](model, *inputs, layer=layer, head=head)
        lab = word_patch_attention(model, *inputs, layer=layer, head=head)
        assert shown.shape == lab.shape == (6, LENGTH, 4, 4)
        torch.testing.assert_close(shown, lab, atol=1e-6, rtol=1e-5)
