"""Hidden tests of exercise set 3 (instructor only: not in the package, not in the student release)."""

import math

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_raises
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


def _row_by_row(q, k, mask):
    """Softmax over the allowed keys only, one query row at a time; a row with no allowed key stays 0."""
    scale = 1 / math.sqrt(q.shape[-1])
    rows = []
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            allowed = mask[b, i].nonzero().flatten()
            weights = torch.zeros(k.shape[1], dtype=q.dtype)
            if len(allowed):
                weights = weights.index_put((allowed,), torch.softmax(k[b, allowed] @ q[b, i] * scale, dim=0))
            rows.append(weights)
    return torch.stack(rows).reshape(q.shape[0], q.shape[1], k.shape[1])


@HIDDEN.test("attention_weights", points=1)
def gradients_of_fully_masked_rows(fn):
    """with fully masked rows: the gradients are finite and equal those of a row-by-row softmax over allowed keys"""
    q = torch.randn(2, 3, 4, generator=_gen(30), dtype=torch.float64)
    k = torch.randn(2, 5, 4, generator=_gen(31), dtype=torch.float64)
    mask = torch.rand(2, 3, 5, generator=_gen(32)) < 0.6
    mask[0, 1] = False  # one query of sample 0 sees no key
    mask[1] = False  # sample 1 sees nothing
    mask[0, 0, 0] = mask[0, 2, 3] = True
    upstream = torch.randn(2, 3, 5, generator=_gen(33), dtype=torch.float64)
    grads = []
    for f in (fn, _row_by_row):
        qq, kk = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
        (f(qq, kk, mask) * upstream).sum().backward()
        grads.append((qq.grad, kk.grad))
    for name, got, want in zip(("query", "key"), grads[0], grads[1], strict=True):
        expect(got is not None, f"no gradient reaches the {name}")
        expect(bool(torch.isfinite(got).all()), f"the {name} gradient contains NaN or Inf")
        expect_close(got, want, atol=1e-6, what=f"the {name} gradient")


@HIDDEN.test("cross_modal_attention", points=1)
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


def _multi(seed, batch=3, len_t=4, len_i=6, dim_t=8, dim_i=5, dim=8, dim_out=8):
    g = _gen(seed)
    text, image = torch.randn(batch, len_t, dim_t, generator=g), torch.randn(batch, len_i, dim_i, generator=g)
    w_q, w_k = torch.randn(dim_t, dim, generator=g) / 2, torch.randn(dim_i, dim, generator=g) / 2
    w_v, w_o = torch.randn(dim_i, dim, generator=g), torch.randn(dim, dim_out, generator=g)
    return text, image, w_q, w_k, w_v, w_o


_PADDING = torch.arange(6)[None, :] < torch.tensor([6, 3, 1])[:, None]  # (3, 6): 6, 3 and 1 real patches


def _mha(heads, w_q, w_k, w_v, w_o):
    """nn.MultiheadAttention with the given projections (no bias), for comparison."""
    mha = torch.nn.MultiheadAttention(
        w_q.shape[1], heads, bias=False, kdim=w_k.shape[0], vdim=w_v.shape[0], batch_first=True
    ).eval()
    with torch.no_grad():
        mha.q_proj_weight.copy_(w_q.T)
        mha.k_proj_weight.copy_(w_k.T)
        mha.v_proj_weight.copy_(w_v.T)
        mha.out_proj.weight.copy_(w_o.T)
    return mha


@HIDDEN.test("multi_head_cross_attention", points=1)
def agrees_with_nn_multihead_attention(fn):
    """agrees with torch's nn.MultiheadAttention (kdim/vdim, key_padding_mask = ~mask), 2 and 4 heads"""
    text, image, w_q, w_k, w_v, w_o = _multi(10)
    for heads in (2, 4):
        mha = _mha(heads, w_q, w_k, w_v, w_o)
        with torch.no_grad():
            want_out, want_w = mha(text, image, image, key_padding_mask=~_PADDING, average_attn_weights=False)
        out, weights = fn(text, image, w_q, w_k, w_v, w_o, num_heads=heads, image_mask=_PADDING)
        expect_close(weights, want_w, atol=1e-5, what=f"the weights ({heads} heads)")
        expect_close(out, want_out, atol=1e-4, what=f"the output ({heads} heads)")


@HIDDEN.test("multi_head_cross_attention", points=1)
def heads_are_interchangeable(fn):
    """reordering the heads (column blocks of w_q, w_k, w_v, row blocks of w_o) reorders the weights only"""
    text, image, w_q, w_k, w_v, w_o = _multi(11)
    order = [2, 0, 3, 1]
    cols = torch.cat([torch.arange(h * 2, h * 2 + 2) for h in order])
    out, weights = fn(text, image, w_q, w_k, w_v, w_o, num_heads=4, image_mask=_PADDING)
    out_p, weights_p = fn(text, image, w_q[:, cols], w_k[:, cols], w_v[:, cols], w_o[cols], num_heads=4,
                          image_mask=_PADDING)
    expect_close(out_p, out, atol=1e-5, what="the output with the heads reordered")
    expect_close(weights_p, weights[:, order], atol=1e-6, what="the weights with the heads reordered")


@HIDDEN.test("multi_head_cross_attention", points=1)
def padding_content_is_invisible(fn):
    """changing padded patches changes nothing, and no gradient reaches them"""
    text, image, w_q, w_k, w_v, w_o = _multi(12)
    other = torch.where(_PADDING[..., None], image, 100 * torch.randn(image.shape, generator=_gen(13)))
    other.requires_grad_(True)
    out, _ = fn(text, image, w_q, w_k, w_v, w_o, num_heads=2, image_mask=_PADDING)
    out_other, _ = fn(text, other, w_q, w_k, w_v, w_o, num_heads=2, image_mask=_PADDING)
    expect_close(out_other, out, atol=1e-4, what="the output after changing the padded patches")
    out_other.sum().backward()
    expect(other.grad is not None and bool((other.grad[~_PADDING] == 0).all()) and other.grad.abs().sum() > 0,
           "the gradient must reach the real patches and be exactly 0 on the padded ones")


@HIDDEN.test("multi_head_cross_attention", points=1)
def patch_order_does_not_matter(fn):
    """shuffling the patches (and the mask) leaves the output unchanged and shuffles the weights"""
    text, image, w_q, w_k, w_v, w_o = _multi(14)
    perm = torch.randperm(6, generator=_gen(15))
    out, weights = fn(text, image, w_q, w_k, w_v, w_o, num_heads=4, image_mask=_PADDING)
    out_p, weights_p = fn(text, image[:, perm], w_q, w_k, w_v, w_o, num_heads=4, image_mask=_PADDING[:, perm])
    expect_close(out_p, out, atol=1e-5, what="the output with the patches shuffled")
    expect_close(weights_p, weights[..., perm], atol=1e-6, what="the weights with the patches shuffled")


@HIDDEN.test("multi_head_cross_attention", points=1)
def large_scores_in_float16(fn):
    """float16 with large scores (near the float16 range) and 8 heads: finite, and the right patch wins"""
    text, image, w_q, w_k, w_v, w_o = _multi(16, batch=2)
    image = image.clone()
    image[:, 2] = 0
    image[:, 2, 0] = 40.0  # patch 2 has a huge key in every head
    w_k = torch.zeros(5, 8)
    w_k[0] = 1.0
    text = torch.ones(2, 4, 8) * 30  # scores of 30 * 40 = 1200 per head before scaling
    w_q = torch.eye(8)
    mask = torch.tensor([[True] * 6, [False] * 6])
    out, weights = fn(*(x.half() for x in (text, image, w_q, w_k, w_v, w_o)), num_heads=8, image_mask=mask)
    expect(bool(torch.isfinite(out).all() and torch.isfinite(weights).all()), "float16 gives NaN or Inf")
    expect_close(weights[0, ..., 2].float(), torch.ones(8, 4), atol=1e-3, what="the weights on the huge key")
    expect_equal(weights[1], torch.zeros(8, 4, 6, dtype=torch.float16), what="the fully masked sample")


@HIDDEN.test("multi_head_cross_attention", points=1)
def a_mask_per_word_agrees_with_nn_multihead_attention(fn):
    """a (B, Lt, Li) mask agrees with nn.MultiheadAttention's attn_mask (one (Lt, Li) block per sample and head)"""
    text, image, w_q, w_k, w_v, w_o = _multi(17)
    mask = torch.rand(3, 4, 6, generator=_gen(18)) < 0.4
    mask[torch.arange(3)[:, None], torch.arange(4)[None, :], torch.tensor([[0, 5, 2, 3]])] = True  # >= 1 per word
    for heads in (2, 4):
        with torch.no_grad():
            want_out, want_w = _mha(heads, w_q, w_k, w_v, w_o)(
                text, image, image, attn_mask=~mask.repeat_interleave(heads, dim=0), average_attn_weights=False
            )
        out, weights = fn(text, image, w_q, w_k, w_v, w_o, num_heads=heads, image_mask=mask)
        expect_close(weights, want_w, atol=1e-5, what=f"the weights ({heads} heads)")
        expect_close(out, want_out, atol=1e-4, what=f"the output ({heads} heads)")


def _word_by_word(text, image, w_q, w_k, w_v, w_o, num_heads, mask):
    """Head by head and word by word: softmax over the patches the word may see, nothing where it sees none."""
    d = w_q.shape[1] // num_heads
    out = torch.zeros(text.shape[0], text.shape[1], w_o.shape[1], dtype=text.dtype)
    for h in range(num_heads):
        cols = slice(h * d, (h + 1) * d)
        q, k, v = text @ w_q[:, cols], image @ w_k[:, cols], image @ w_v[:, cols]
        rows = _row_by_row(q, k, mask)
        out = out + (rows @ v) @ w_o[cols]
    return out


@HIDDEN.test("multi_head_cross_attention", points=2)
def gradients_where_words_see_nothing(fn):
    """with words and a sample that see nothing: finite gradients, equal to a word-by-word reference; none reaches
    the unseen sample's patches"""
    inputs = [x.double() for x in _multi(19, batch=2, len_t=3, len_i=4)]
    mask = torch.rand(2, 3, 4, generator=_gen(20)) < 0.5
    mask[0, :, 1] = True
    mask[0, 2] = False  # word 2 of sample 0 sees nothing
    mask[1] = False  # sample 1 sees nothing
    upstream = torch.randn(2, 3, 8, generator=_gen(21), dtype=torch.float64)
    grads = []
    for f in (fn, _word_by_word):
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        out = f(*leaves, num_heads=2, mask=mask) if f is _word_by_word else f(*leaves, num_heads=2, image_mask=mask)[0]
        (out * upstream).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    names = ("text", "image", "w_q", "w_k", "w_v", "w_o")
    for name, got, want in zip(names, grads[0], grads[1], strict=True):
        expect(got is not None, f"no gradient reaches {name}")
        expect(bool(torch.isfinite(got).all()), f"the gradient of {name} contains NaN or Inf")
        expect_close(got, want, atol=1e-6, what=f"the gradient of {name}")
    expect_equal(grads[0][1][1], torch.zeros(4, 5, dtype=torch.float64), what="the gradient of the unseen patches")
