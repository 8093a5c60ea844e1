"""Exercise set 3 (chapter 03_architectures, article §3.2): masks and cross-modal attention, by hand."""

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex03", "Cross-modal attention with padding masks", chapter="03_architectures", version=1)

#: Attention must be computed by hand: the library's and torch's attention are off limits.
ATTENTION_SHORTCUTS = (
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    "mmcourse.nn.attention.CrossModalAttention",
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
lengths_q = SET.question("lengths_to_mask", "From sequence lengths to a padding mask")


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
    "attention_weights", "Masked scaled dot-product attention weights", forbidden=ATTENTION_SHORTCUTS
)


@weights_q.test(points=1, hint="softmax over the last dim (the keys) of q @ k.transpose(-2, -1) / sqrt(D).")
def rows_are_probabilities(fn):
    """(B, Lq, D), (B, Lk, D) give (B, Lq, Lk) weights whose rows sum to 1"""
    q, k = torch.randn(2, 3, 4, generator=_gen(0)), torch.randn(2, 5, 4, generator=_gen(1))
    w = expect_tensor(fn(q, k), shape=(2, 3, 5), floating=True)
    expect(bool((w >= 0).all()), "attention weights must be >= 0")
    expect_close(w.sum(-1), torch.ones(2, 3), what="the row sums")


@weights_q.test(points=1, hint="Equal scores give equal weights.")
def identical_keys_share_attention(fn):
    """identical keys receive identical (uniform) weights"""
    q = torch.randn(1, 2, 3, generator=_gen(2))
    k = torch.ones(1, 4, 3)
    expect_close(fn(q, k), torch.full((1, 2, 4), 0.25))


@weights_q.test(points=1, hint="Fill blocked scores with torch.finfo(scores.dtype).min before the softmax.")
def blocked_keys_get_zero_weight(fn):
    """keys masked out (mask False) get exactly zero weight"""
    q, k = torch.randn(1, 2, 4, generator=_gen(3)), torch.randn(1, 3, 4, generator=_gen(4))
    mask = torch.tensor([[True, False, True]])
    w = fn(q, k, mask)
    expect_equal(w[..., 1], torch.zeros(1, 2), what="the weights of the blocked key")
    expect_close(w.sum(-1), torch.ones(1, 2), what="the row sums")


@weights_q.test(points=1, hint="A row with no key to attend to: its softmax gives NaN; set such rows to 0.")
def fully_masked_rows_are_zero_not_nan(fn):
    """a sample whose keys are all masked gets all-zero weights (no NaN)"""
    q, k = torch.randn(2, 2, 4, generator=_gen(5)), torch.randn(2, 3, 4, generator=_gen(6))
    mask = torch.tensor([[True, True, False], [False, False, False]])
    w = fn(q, k, mask)
    expect(bool(torch.isfinite(w).all()), "the weights contain NaN or Inf")
    expect_equal(w[1], torch.zeros(2, 3), what="the weights of the fully masked sample")


# ---------------------------------------------------------------------------------------------------------------
cross_q = SET.question("cross_modal_attention", "Text attends to image patches", forbidden=ATTENTION_SHORTCUTS)


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
