"""Exercise set 3 (chapter 03_architectures, article §3.2): masks and (multi-head) cross-modal attention, by hand."""

import math

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet(
    "ex03", "Multi-head cross-modal attention with padding masks", chapter="03_architectures", version=3
)

#: Attention must be computed by hand: the library's and torch's attention are off limits.
ATTENTION_SHORTCUTS = (
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    "mmcourse.nn.attention.CrossModalAttention",
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
lengths_q = SET.question("lengths_to_mask", "From sequence lengths to a padding mask", points=5)


@lengths_q.test(points=1, hint="torch.arange(max_len)[None, :] < lengths[:, None]")
def small_example(fn):
    """lengths [2, 0, 3] give the expected (3, 3) bool mask, True = real token"""
    want = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    expect_equal(fn(torch.tensor([2, 0, 3])), want)


@lengths_q.test(points=1, hint="Use max_len columns when it is given.")
def explicit_max_len(fn):
    """max_len sets the number of columns"""
    out = fn(torch.tensor([1, 2]), max_len=4)
    expect_equal(out, torch.tensor([[True, False, False, False], [True, True, False, False]]))


@lengths_q.test(points=1, hint="Check (lengths < 0).any() and raise ValueError.")
def rejects_negative_lengths(fn):
    """a negative length raises ValueError"""
    expect_raises(ValueError, fn, torch.tensor([2, -1]), what="lengths_to_mask([2, -1])")


# ---------------------------------------------------------------------------------------------------------------
weights_q = SET.question(
    "attention_weights",
    "Masked scaled dot-product attention weights, safe in float16",
    forbidden=ATTENTION_SHORTCUTS,
    points=8,
)


def _hadamard(n: int) -> torch.Tensor:
    """An n x n matrix of +-1 whose rows are orthogonal (n a power of 2)."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)])
    return h


@weights_q.test(points=1, hint="softmax over the last dim (the keys) of q @ k.transpose(-2, -1) / sqrt(D).")
def rows_are_probabilities(fn):
    """(B, Lq, D), (B, Lk, D) give (B, Lq, Lk) weights whose rows sum to 1; identical keys share equally"""
    q, k = torch.randn(2, 3, 4, generator=_gen(0)), torch.randn(2, 5, 4, generator=_gen(1))
    w = expect_tensor(fn(q, k), shape=(2, 3, 5), floating=True)
    expect(bool((w >= 0).all()), "attention weights must be >= 0")
    expect_close(w.sum(-1), torch.ones(2, 3), what="the row sums")
    same = torch.ones(1, 4, 3)
    expect_close(fn(q[:1, :2, :3], same), torch.full((1, 2, 4), 0.25), what="the weights over 4 identical keys")


@weights_q.test(
    points=1,
    hint="Fill blocked scores with torch.finfo(scores.dtype).min before the softmax: -1e9 does not exist in float16 "
    "(whose largest number is 65504).",
)
def blocked_keys_get_zero_weight_also_in_float16(fn):
    """keys masked out (mask False) get exactly zero weight, in float32 and in float16"""
    q, k = torch.randn(2, 3, 8, generator=_gen(3)), torch.randn(2, 4, 8, generator=_gen(4))
    mask = torch.tensor([[True, True, False, False], [True, False, True, True]])
    for dtype in (torch.float32, torch.float16):
        w = expect_tensor(fn(q.to(dtype), k.to(dtype), mask), shape=(2, 3, 4), dtype=dtype, what=f"the {dtype} weights")
        expect(bool(torch.isfinite(w).all()), f"the {dtype} weights contain NaN or Inf")
        expect_equal(w[0, :, 2:], torch.zeros(3, 2, dtype=dtype), what=f"the {dtype} weights on sample 0's padding")
        expect_equal(w[1, :, 1], torch.zeros(3, dtype=dtype), what=f"the {dtype} weights on sample 1's blocked key")
        expect_close(w.sum(-1).float(), torch.ones(2, 3), atol=2e-3, what=f"the {dtype} row sums")


@weights_q.test(
    points=1,
    hint="A row with no key to attend to has nothing to average: all its scores are the fill value, so the softmax "
    "spreads 1 evenly (or gives NaN with -inf). Multiply the weights by the mask afterwards.",
)
def fully_masked_rows_are_zero_not_nan(fn):
    """a sample whose keys are all masked gets all-zero weights (not NaN, not uniform)"""
    q, k = torch.randn(2, 2, 4, generator=_gen(5)), torch.randn(2, 3, 4, generator=_gen(6))
    mask = torch.tensor([[True, True, False], [False, False, False]])
    w = fn(q, k, mask)
    expect(bool(torch.isfinite(w).all()), "the weights contain NaN or Inf")
    expect_equal(w[1], torch.zeros(2, 3), what="the weights of the fully masked sample")
    expect_close(w[0].sum(-1), torch.ones(2), what="the row sums of the other sample")


@weights_q.test(
    points=1,
    hint="A (B, Lq, Lk) mask already has a row per query; only a (B, Lk) mask needs the extra dim: mask[:, None, :].",
)
def a_mask_per_query(fn):
    """a (B, Lq, Lk) causal mask: query i attends to keys 0..i only, with the softmax of those scores"""
    q, k = torch.randn(2, 4, 6, generator=_gen(9)), torch.randn(2, 4, 6, generator=_gen(10))
    causal = torch.tril(torch.ones(4, 4, dtype=torch.bool)).expand(2, 4, 4)
    w = expect_tensor(fn(q, k, causal), shape=(2, 4, 4), floating=True)
    expect_equal(w.masked_fill(causal, 0), torch.zeros(2, 4, 4), what="the weights above the diagonal")
    for i in range(4):
        scores = q[:, i : i + 1].double() @ k[:, : i + 1].double().transpose(1, 2) / math.sqrt(6)
        expect_close(w[:, i : i + 1, : i + 1], torch.softmax(scores, dim=-1), atol=1e-5, what=f"query {i}'s weights")


@weights_q.test(
    points=1,
    hint="In float16 q @ kᵀ can pass 65504 and become inf (inf - inf = NaN in the softmax) even when "
    "q @ kᵀ / sqrt(D) would not: divide q by sqrt(D) before the product, or compute the scores in float32 and "
    "return the weights in the input's dtype.",
)
def float16_dot_products_beyond_65504(fn):
    """float16, dot products of 78,400 (> 65504) but scaled scores of 19,600: finite, the matching key wins"""
    signs = _hadamard(16)  # rows: orthogonal +-1 patterns
    k = (70 * signs[[0, 1, 2]])[None].half()  # 3 keys, entries +-70
    q = (70 * signs[[2, 0]])[None].half()  # query 0 matches key 2, query 1 matches key 0: 16 * 70 * 70 = 78400
    w = expect_tensor(fn(q, k), shape=(1, 2, 3), dtype=torch.float16)
    expect(bool(torch.isfinite(w).all()), "the float16 weights contain NaN or Inf", got=str(w.tolist()))
    expect_close(w.float(), torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
cross_q = SET.question(
    "cross_modal_attention",
    "Text attends to image patches",
    forbidden=ATTENTION_SHORTCUTS,
    points=4,
    printed_in="03_architectures: multi_head_attention",
)


def _cross_inputs(seed: int):
    g = _gen(seed)
    text, image = torch.randn(2, 3, 6, generator=g), torch.randn(2, 4, 5, generator=g)
    w_q, w_k, w_v = torch.randn(6, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(5, 7, generator=g)
    return text, image, w_q, w_k, w_v


@cross_q.test(points=1, hint="Return (output (B, Lt, Dv), weights (B, Lt, Li)).")
def output_and_weight_shapes(fn):
    """returns output (B, Lt, Dv) and weights (B, Lt, Li)"""
    out = fn(*_cross_inputs(0))
    expect(isinstance(out, tuple) and len(out) == 2, "must return a tuple (output, weights)", got=type(out).__name__)
    expect_tensor(out[0], shape=(2, 3, 7), floating=True, what="the output")
    expect_tensor(out[1], shape=(2, 3, 4), floating=True, what="the weights")


@cross_q.test(points=1, hint="output = weights @ (image @ w_v)")
def output_is_weighted_sum_of_values(fn):
    """the output is the weights applied to the image values"""
    text, image, w_q, w_k, w_v = _cross_inputs(1)
    out, weights = fn(text, image, w_q, w_k, w_v)
    expect_close(out, weights @ (image @ w_v), atol=1e-5, what="the output")


@cross_q.test(points=1, hint="Pass image_mask on to your attention_weights.")
def padded_patches_are_ignored(fn):
    """image patches masked out by image_mask receive no attention"""
    text, image, w_q, w_k, w_v = _cross_inputs(2)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    _, weights = fn(text, image, w_q, w_k, w_v, image_mask=mask)
    expect_equal(weights[0, :, 3], torch.zeros(3), what="weights on sample 0's padded patch")
    expect_equal(weights[1, :, 1:], torch.zeros(3, 3), what="weights on sample 1's padded patches")
    expect(
        abs(float(weights[1, :, 0].sum()) - 3.0) < 1e-5,
        "sample 1 must attend only to its first patch",
        expected="weights 1.0 on patch 0",
        got=str([round(float(x), 4) for x in weights[1, :, 0]]),
    )


# ---------------------------------------------------------------------------------------------------------------
multi_q = SET.question(
    "multi_head_cross_attention",
    "Multi-head cross-attention, fp16-safe, with per-word masks",
    forbidden=ATTENTION_SHORTCUTS,
    points=16,
)


def _multi_inputs(seed: int, batch=2, len_t=3, len_i=5, dim_t=6, dim_i=4, dim=8, dim_out=5):
    g = _gen(seed)
    text, image = torch.randn(batch, len_t, dim_t, generator=g), torch.randn(batch, len_i, dim_i, generator=g)
    w_q, w_k = torch.randn(dim_t, dim, generator=g) / 2, torch.randn(dim_i, dim, generator=g) / 2
    w_v, w_o = torch.randn(dim_i, dim, generator=g), torch.randn(dim, dim_out, generator=g)
    return text, image, w_q, w_k, w_v, w_o


def _per_head_reference(text, image, w_q, w_k, w_v, w_o, num_heads, image_mask=None):
    """One head at a time: head h owns columns h*d:(h+1)*d of w_q, w_k, w_v and rows h*d:(h+1)*d of w_o.
    image_mask: (B, Li) or (B, Lt, Li); a word with no patch to attend to gets weights 0."""
    text, image, w_q, w_k, w_v, w_o = (x.double() for x in (text, image, w_q, w_k, w_v, w_o))
    d = w_q.shape[1] // num_heads
    if image_mask is not None and image_mask.dim() == 2:
        image_mask = image_mask[:, None, :]
    out, weights = 0, []
    for h in range(num_heads):
        cols = slice(h * d, (h + 1) * d)
        scores = (text @ w_q[:, cols]) @ (image @ w_k[:, cols]).transpose(1, 2) / math.sqrt(d)
        if image_mask is not None:
            scores = scores.masked_fill(~image_mask, -math.inf)
        w = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
        out = out + (w @ (image @ w_v[:, cols])) @ w_o[cols]
        weights.append(w)
    return out, torch.stack(weights, dim=1)


@multi_q.test(points=1, hint="Return (output (B, Lt, Dout), weights (B, H, Lt, Li)); raise ValueError if H ∤ D.")
def shapes_and_head_check(fn):
    """returns output (B, Lt, Dout) and weights (B, H, Lt, Li); rejects a width that H does not divide"""
    out = fn(*_multi_inputs(0), num_heads=4)
    expect(isinstance(out, tuple) and len(out) == 2, "must return a tuple (output, weights)", got=type(out).__name__)
    expect_tensor(out[0], shape=(2, 3, 5), floating=True, what="the output")
    expect_tensor(out[1], shape=(2, 4, 3, 5), floating=True, what="the weights")
    expect_raises(ValueError, fn, *_multi_inputs(0), num_heads=3, what="num_heads=3 with a width of 8")


@multi_q.test(
    points=1,
    hint="Split with view(B, L, H, d).transpose(1, 2), scale by sqrt(d) = sqrt(D / H) (not sqrt(D)), merge with "
    "transpose(1, 2).reshape(B, L, D), then @ w_o. A (B, Li) mask becomes image_mask[:, None, None, :].",
)
def agrees_with_a_per_head_loop(fn):
    """agrees with a loop over heads (head h = its own slice of the width, scaled by sqrt(D/H)), with a padding mask"""
    inputs = _multi_inputs(1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])  # 2 samples, 2 heads: a wrong broadcast fits
    want_out, want_w = _per_head_reference(*inputs, num_heads=2, image_mask=mask)
    out, weights = fn(*inputs, num_heads=2, image_mask=mask)
    expect_close(weights, want_w.float(), atol=1e-5, what="the weights")
    expect_close(out, want_out.float(), atol=1e-4, what="the output")


@multi_q.test(
    points=1,
    hint="The mask is (B, Li): index it as image_mask[:, None, None, :] and fill with torch.finfo(dtype).min.",
)
def padding_mask_in_float16(fn):
    """float16, padding mask: finite output, zero weight on padded patches, close to a float64 reference"""
    inputs = _multi_inputs(2, batch=3)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True, True, True, True, False]])
    out, weights = fn(*(x.half() for x in inputs), num_heads=2, image_mask=mask)
    expect_tensor(out, shape=(3, 3, 5), dtype=torch.float16, what="the float16 output")
    expect(bool(torch.isfinite(out).all() and torch.isfinite(weights).all()), "float16 gives NaN or Inf")
    expect_equal(weights[1, ..., 2:], torch.zeros(2, 3, 3, dtype=torch.float16), what="weights on padded patches")
    want_out, _ = _per_head_reference(*(x.half() for x in inputs), num_heads=2, image_mask=mask)
    expect_close(out, want_out.float(), atol=0.05, rtol=0.02, what="the float16 output")


@multi_q.test(
    points=1,
    hint="A word with no real patch: after the softmax its weights are uniform (finfo.min) or NaN (-inf); multiply "
    "the weights by the mask so that they, and the output, are 0.",
)
def nothing_to_attend_to_gives_zeros(fn):
    """a sample whose patches are all padding gets zero weights and a zero output (no NaN)"""
    inputs = _multi_inputs(3)
    mask = torch.tensor([[True, False, True, False, False], [False] * 5])
    out, weights = fn(*inputs, num_heads=4, image_mask=mask)
    expect(bool(torch.isfinite(out).all() and torch.isfinite(weights).all()), "the result contains NaN or Inf")
    expect_equal(weights[1], torch.zeros(4, 3, 5), what="the weights of the fully masked sample")
    expect_equal(out[1], torch.zeros(3, 5), what="the output of the fully masked sample")


@multi_q.test(
    points=2,
    hint="A (B, Lt, Li) mask has a row per word; it is the same for every head: image_mask[:, None, :, :] "
    "(not image_mask[None], which lines the batch up with the heads).",
)
def a_mask_per_word(fn):
    """a (B, Lt, Li) mask (each word its own patches; one word none): agrees with the per-head loop, zeros there"""
    inputs = _multi_inputs(4, len_t=4)
    mask = torch.rand(2, 4, 5, generator=_gen(40)) < 0.5
    mask[:, :, 0] = True  # every word sees patch 0 ...
    mask[1, 2] = False  # ... except word 2 of sample 1, which sees nothing
    want_out, want_w = _per_head_reference(*inputs, num_heads=2, image_mask=mask)
    out, weights = fn(*inputs, num_heads=2, image_mask=mask)
    expect_close(weights, want_w.float(), atol=1e-5, what="the weights")
    expect_close(out, want_out.float(), atol=1e-4, what="the output")
    expect_equal(out[1, 2], torch.zeros(5), what="the output of the word that sees no patch")


@multi_q.test(
    points=2,
    hint="In float16, Q Kᵀ can pass 65504 (inf, then NaN in the softmax) although Q Kᵀ / sqrt(d) would not: scale Q "
    "by 1 / sqrt(d) before the product, or compute the scores in float32 and cast the weights back.",
)
def float16_per_head_scores_beyond_65504(fn):
    """float16, per-head dot products of 78,400 (> 65504), scaled 19,600: finite, each head finds its own patch"""
    signs = _hadamard(16)  # rows: orthogonal +-1 patterns; head 0 owns features 0-15, head 1 features 16-31
    image = 70 * torch.stack([torch.cat([signs[p], signs[p + 4]]) for p in range(4)])[None]  # (1, 4 patches, 32)
    targets = [(2, 1), (0, 3)]  # word t matches patch a in head 0 and patch b in head 1
    text = 70 * torch.stack([torch.cat([signs[a], signs[b + 4]]) for a, b in targets])[None]  # (1, 2 words, 32)
    eye = torch.eye(32)
    w_v, w_o = torch.randn(32, 32, generator=_gen(41)) / 32, torch.randn(32, 6, generator=_gen(42)) / 4
    inputs = tuple(x.half() for x in (text, image, eye, eye, w_v, w_o))
    out, weights = fn(*inputs, num_heads=2)
    expect_tensor(out, shape=(1, 2, 6), dtype=torch.float16, what="the float16 output")
    expect(bool(torch.isfinite(out).all() and torch.isfinite(weights).all()), "float16 gives NaN or Inf")
    want_w = torch.zeros(1, 2, 2, 4)
    for t, (a, b) in enumerate(targets):
        want_w[0, 0, t, a] = want_w[0, 1, t, b] = 1.0
    expect_close(weights.float(), want_w, atol=1e-3, what="the weights (one patch per word and head)")
    want_out, _ = _per_head_reference(*inputs, num_heads=2)
    expect_close(out, want_out.float(), atol=0.05, rtol=0.01, what="the float16 output")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("one_head_or_two", "Experiment: one head or two?", points=3)
