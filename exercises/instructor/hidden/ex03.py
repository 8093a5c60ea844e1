"""Hidden tests of exercise set 3 (instructor only: not in the package, not in the student release)."""

import math

import torch

from mmcourse.grading.expect import expect_close, expect_equal, expect_raises
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex03")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_weights(q, k, mask=None):
    scores = torch.einsum("bqd,bkd->bqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[:, None, :]
        mask = mask.expand_as(scores)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0).float()


@HIDDEN.test("lengths_to_mask", points=1)
def matches_a_loop_on_random_lengths(fn):
    """random lengths agree with a loop"""
    lengths = torch.randint(0, 9, (11,), generator=_gen(0))
    want = torch.zeros(11, 12, dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        want[i, :n] = True
    expect_equal(fn(lengths, max_len=12), want)
    expect_equal(fn(lengths), want[:, : int(lengths.max())], what="the mask without max_len")


@HIDDEN.test("lengths_to_mask", points=1)
def rejects_lengths_beyond_max_len(fn):
    """a length larger than max_len raises ValueError"""
    expect_raises(ValueError, fn, torch.tensor([5, 1]), max_len=3, what="lengths_to_mask([5, 1], max_len=3)")


@HIDDEN.test("attention_weights", points=1)
def matches_the_reference_without_mask(fn):
    """random queries and keys agree with the reference (scaling by sqrt(D) included)"""
    for seed, (b, lq, lk, d) in enumerate([(1, 1, 1, 1), (3, 4, 6, 8), (2, 5, 2, 16)]):
        q, k = torch.randn(b, lq, d, generator=_gen(seed)), torch.randn(b, lk, d, generator=_gen(seed + 7)) * 3
        expect_close(fn(q, k), _reference_weights(q, k), atol=1e-5)


@HIDDEN.test("attention_weights", points=1)
def matches_the_reference_with_a_3d_mask(fn):
    """a (B, Lq, Lk) mask (e.g. causal) agrees with the reference"""
    q, k = torch.randn(2, 4, 8, generator=_gen(11)), torch.randn(2, 4, 8, generator=_gen(12))
    mask = torch.tril(torch.ones(4, 4, dtype=torch.bool)).expand(2, 4, 4).clone()
    mask[1, 2] = False
    expect_close(fn(q, k, mask), _reference_weights(q, k, mask), atol=1e-5)


@HIDDEN.test("cross_modal_attention", points=2)
def matches_the_reference(fn):
    """random inputs, with and without a mask, agree with the reference"""
    g = _gen(20)
    text, image = torch.randn(3, 5, 6, generator=g), torch.randn(3, 7, 4, generator=g)
    w_q, w_k, w_v = torch.randn(6, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, 3, generator=g)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 1])[:, None]
    for m in (None, mask):
        want_w = _reference_weights(text @ w_q, image @ w_k, m)
        out, weights = fn(text, image, w_q, w_k, w_v, image_mask=m)
        expect_close(weights, want_w, atol=1e-5, what="the weights")
        expect_close(out, want_w @ (image @ w_v), atol=1e-4, what="the output")


@HIDDEN.test("cross_modal_attention", points=1)
def a_word_finds_its_patch(fn):
    """a query aligned with one key puts (almost) all its weight there"""
    text = torch.tensor([[[10.0, 0.0]]])
    image = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]])
    eye = torch.eye(2)
    _, weights = fn(text, image, eye, eye * 4, eye)
    expect_close(weights[0, 0], _reference_weights(text, image * 4)[0, 0], atol=1e-5)
    expect_equal(int(weights[0, 0].argmax()), 1, what="the most attended patch")
