"""Exercise set 8 (chapter 08_practice, article §8.2): per-channel INT8 quantization from scratch."""

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex08", "INT8 quantization from scratch", chapter="08_practice", version=1)

#: Quantization must be written by hand: torch's and the library's quantizers are off limits.
QUANTIZERS = (
    "torch.quantize_per_channel",
    "torch.quantize_per_tensor",
    "torch.fake_quantize_per_channel_affine",
    "mmcourse.quantization.quantize_symmetric",
    "mmcourse.quantization.dequantize_symmetric",
    "mmcourse.quantization.symmetric_scale",
    "mmcourse.quantization.fake_quantize",
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
quant_q = SET.question("quantize_per_channel", "Symmetric per-channel INT8 quantization", forbidden=QUANTIZERS)


@quant_q.test(points=1, hint="Return (q int8 (out, in), scale float32 (out,)).")
def dtypes_and_shapes(fn):
    """returns q (out, in) int8 and scale (out,) float32"""
    out = fn(torch.randn(5, 7, generator=_gen(0)))
    expect(isinstance(out, tuple) and len(out) == 2, "must return (q, scale)", got=type(out).__name__)
    expect_tensor(out[0], shape=(5, 7), dtype=torch.int8, what="q")
    expect_tensor(out[1], shape=(5,), dtype=torch.float32, what="scale")


@quant_q.test(points=1, hint="scale = max |w| of the row / 127, so the largest entry maps to +-127.")
def each_row_uses_the_full_range(fn):
    """the largest |q| of every non-zero row is exactly 127"""
    q, _ = fn(torch.randn(6, 9, generator=_gen(1)) * torch.tensor([0.01, 1, 5, 100, 0.5, 3])[:, None])
    expect_equal(q.abs().amax(dim=1).to(torch.long), torch.full((6,), 127), what="max |q| per row")


@quant_q.test(points=1, hint="q = round(w / scale), clamped to [-127, 127].")
def small_example_by_hand(fn):
    """a hand-computed 2 x 3 example"""
    w = torch.tensor([[1.27, -0.635, 0.1], [-2.54, 0.0, 2.54]])
    q, scale = fn(w)
    expect_close(scale, torch.tensor([0.01, 0.02]), atol=1e-7, what="scale")
    expect_equal(q, torch.tensor([[127, -64, 10], [-127, 0, 127]], dtype=torch.int8), what="q")


@quant_q.test(points=1, hint="An all-zero row would divide by 0: give it scale 1.")
def zero_rows_are_safe(fn):
    """an all-zero row gives q = 0 and scale = 1 (no NaN)"""
    q, scale = fn(torch.tensor([[0.0, 0.0], [1.0, -2.0]]))
    expect_equal(q[0], torch.zeros(2, dtype=torch.int8), what="q of the zero row")
    expect_close(scale[0:1], torch.ones(1), what="scale of the zero row")


# ---------------------------------------------------------------------------------------------------------------
deq_q = SET.question("dequantize_per_channel", "Back to float", forbidden=QUANTIZERS)


@deq_q.test(points=1, hint="w_hat = q.float() * scale[:, None]")
def dequantized_example_by_hand(fn):
    """a hand-computed example, as float32"""
    q = torch.tensor([[127, -64], [0, 5]], dtype=torch.int8)
    out = expect_tensor(fn(q, torch.tensor([0.01, 0.5])), shape=(2, 2), dtype=torch.float32)
    expect_close(out, torch.tensor([[1.27, -0.64], [0.0, 2.5]]), atol=1e-6)


@deq_q.test(points=1, hint="Rounding moves each value by at most half a step (scale / 2).")
def round_trip_error_is_at_most_half_a_step(fn):
    """a quantize/dequantize round trip is within scale/2 of every weight"""
    w = torch.randn(8, 16, generator=_gen(2))
    scale = w.abs().amax(dim=1) / 127
    q = torch.round(w / scale[:, None]).to(torch.int8)
    error = (fn(q, scale) - w).abs()
    expect(
        bool((error <= scale[:, None] / 2 + 1e-6).all()),
        "some weight moved by more than scale / 2",
        expected="<= scale / 2",
        got=f"max error / scale = {float((error / scale[:, None]).max()):.3f}",
    )


# ---------------------------------------------------------------------------------------------------------------
err_q = SET.question(
    "relative_error",
    "How much does INT8 lose?",
    forbidden=(*QUANTIZERS, "mmcourse.quantization.quantization_error", "mmcourse.labs.ch08_bit_width.weight_errors"),
)


@err_q.test(points=1, hint="Return ||w - w_hat|| / ||w|| as a Python float.")
def returns_a_small_float(fn):
    """a Gaussian weight matrix loses well under 1 % (a Python float)"""
    out = fn(torch.randn(32, 64, generator=_gen(3)))
    expect(isinstance(out, float), "relative_error must return a Python float", got=type(out).__name__)
    expect_number(out, low=0.0, high=0.01, what="the relative error")


@err_q.test(points=1, hint="Values already on the INT8 grid survive the round trip exactly.")
def values_on_the_grid_are_exact(fn):
    """weights that are integer multiples of their row's scale have zero error"""
    w = torch.tensor([[127.0, -3.0, 0.0], [0.5 * 127, 0.5 * 64, -0.5]])
    expect_number(fn(w), 0.0, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
size_q = SET.question("state_dict_bytes", "Model size on disk", forbidden=("mmcourse.quantization.model_size_bytes",))


@size_q.test(points=1, hint="torch.save(model.state_dict(), buffer) into an io.BytesIO; return its length (int).")
def returns_an_int(fn):
    """returns a Python int"""
    out = fn(nn.Linear(4, 3))
    expect(
        isinstance(out, int) and not isinstance(out, bool),
        "state_dict_bytes must return an int",
        got=type(out).__name__,
    )


@size_q.test(points=1, hint="Count what torch.save writes, not numel * element_size: the file has a header.")
def a_linear_layer_costs_its_float32_weights_plus_a_header(fn):
    """nn.Linear(100, 100): 40,400 bytes of float32 plus a small header"""
    size = fn(nn.Linear(100, 100))
    expect_number(size, low=40_400, high=40_400 + 4096, what="the size in bytes")
