"""Exercise set 8 (chapter 08_practice, article §8.2): per-channel INT8 quantization and an INT8 linear layer."""

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex08", "INT8 quantization from scratch", chapter="08_practice", version=3)

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
quant_q = SET.question(
    "quantize_per_channel",
    "Symmetric per-channel INT8 quantization",
    forbidden=QUANTIZERS,
    points=5,
    printed_in="08_practice: quantize_per_channel",
)


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
deq_q = SET.question("dequantize_per_channel", "Back to float", forbidden=QUANTIZERS, points=4)


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
    points=3,
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
size_q = SET.question(
    "state_dict_bytes",
    "Model size on disk",
    forbidden=("mmcourse.quantization.model_size_bytes",),
    points=4,
)


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


# ---------------------------------------------------------------------------------------------------------------
linear_q = SET.question(
    "Int8Linear",
    "An INT8 linear layer: per-channel weights, per-token inputs, int32 sums",
    kind="class",
    forbidden=(
        *QUANTIZERS,
        "mmcourse.quantization.Int8Linear",
        "mmcourse.quantization.int8_matmul",
        "mmcourse.quantization.quantize_dynamic",
        "mmcourse.quantization.quantize_from_scratch",
    ),
    points=15,
)


def _linear(in_features: int, out_features: int, seed: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, in_features, generator=_gen(seed)) / in_features**0.5)
        if bias:
            layer.bias.copy_(torch.randn(out_features, generator=_gen(seed + 1)))
    return layer


@linear_q.test(points=1, hint="register_buffer('weight_q', int8 (out, in)) and ('weight_scale', float32 (out,)).")
def stores_int8_weights_and_one_scale_per_output_channel(fn):
    """Int8Linear(nn.Linear(7, 5)) keeps weight_q int8 (5, 7) and weight_scale float32 (5,) as buffers"""
    layer = _linear(7, 5, 0)
    module = fn(layer)
    expect(isinstance(module, nn.Module), "Int8Linear must be an nn.Module", got=type(module).__name__)
    expect_tensor(module.weight_q, shape=(5, 7), dtype=torch.int8, what="weight_q")
    expect_tensor(module.weight_scale, shape=(5,), dtype=torch.float32, what="weight_scale")
    keys = set(module.state_dict())
    expect(
        {"weight_q", "weight_scale"} <= keys,
        "weight_q and weight_scale must be buffers (in the state_dict)",
        got=sorted(keys),
    )
    error = (module.weight_q.float() * module.weight_scale[:, None] - layer.weight.detach()).abs()
    expect(
        bool((error <= module.weight_scale[:, None] / 2 + 1e-6).all()),
        "weight_q * weight_scale must be the weight rounded to its row's grid",
        got=f"max error / scale = {float((error / module.weight_scale[:, None]).max()):.3f}",
    )


@linear_q.test(
    points=2,
    hint="Per token: peak = x.abs().amax(dim=-1, keepdim=True); scale = peak / 127, or 1 where the peak is 0. One "
    "scale for the whole input (the chapter's quantize_per_tensor) lets the largest token set every token's step.",
)
def quantize_input_gives_every_token_its_own_scale(fn):
    """quantize_input on (2, 4, in): int8 values, one float32 scale per token, each token's largest |q| is 127,
    a zero token gets scale 1"""
    module = fn(_linear(6, 3, 1))
    x = torch.randn(2, 4, 6, generator=_gen(2)) * torch.tensor([0.01, 1.0, 30.0, 1000.0])[:, None]
    x[1, 2] = 0.0
    out = module.quantize_input(x)
    expect(
        isinstance(out, tuple) and len(out) == 2, "quantize_input must return (x_q, x_scale)", got=type(out).__name__
    )
    x_q, x_scale = out
    expect_tensor(x_q, shape=(2, 4, 6), dtype=torch.int8, what="x_q")
    expect_tensor(x_scale, shape=(2, 4, 1), dtype=torch.float32, what="x_scale")
    peaks = x_q.abs().amax(dim=-1).to(torch.long)
    want = torch.full((2, 4), 127)
    want[1, 2] = 0
    expect_equal(peaks, want, what="max |x_q| of every token")
    expect_close(x_scale[1, 2], torch.ones(1), atol=0, what="the scale of the all-zero token")
    error = (x_q.float() * x_scale - x).abs()
    expect(
        bool((error <= x_scale / 2 + 1e-6 * x.abs()).all()),
        "x_q * x_scale must be x rounded to its token's grid (error <= x_scale / 2)",
        got=f"max error / x_scale = {float((error / x_scale).max()):.3f}",
    )


@linear_q.test(points=1, hint="Cast both int8 operands to int32 before the matmul: x_q.to(torch.int32) @ ...")
def accumulate_returns_the_integer_products_in_int32(fn):
    """accumulate: a hand-computed example, as int32"""
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.125]]))  # weight_q = [[127, -127], [127, 32]]
    module = fn(layer)
    acc = module.accumulate(torch.tensor([[1, 2], [-3, 4]], dtype=torch.int8))
    expect_tensor(acc, shape=(2, 2), dtype=torch.int32, what="accumulate(x_q)")
    expect_equal(acc, torch.tensor([[-127, 191], [-889, -253]], dtype=torch.int32), what="accumulate(x_q)")


@linear_q.test(points=1, hint="y = accumulate(x_q) * x_scale * weight_scale + bias")
def output_is_close_to_the_float_layer(fn):
    """the output is float32 and within 2 % (relative) of the float layer's"""
    layer = _linear(64, 32, 3)
    x = torch.randn(10, 64, generator=_gen(4))
    with torch.no_grad():
        want, got = layer(x), fn(layer)(x)
    expect_tensor(got, shape=(10, 32), dtype=torch.float32)
    expect_number(float((got - want).norm() / want.norm()), low=0.0, high=0.02, what="the relative error")


@linear_q.test(
    points=2,
    hint="Work on the last dim only (amax(dim=-1, keepdim=True)), so that (..., in) inputs give (..., out) outputs "
    "and a token's scale depends on that token alone.",
)
def each_token_is_computed_as_if_alone(fn):
    """an input (2, 3, in) of tokens of very different sizes gives (2, 3, out), each token as if it came alone"""
    module = fn(_linear(8, 5, 5))
    x = torch.randn(2, 3, 8, generator=_gen(6)) * torch.logspace(-2, 3, 6).reshape(2, 3, 1)
    with torch.no_grad():
        out = expect_tensor(module(x), shape=(2, 3, 5), dtype=torch.float32)
        alone = torch.stack([module(token[None])[0] for token in x.reshape(6, 8)]).reshape(2, 3, 5)
    expect_close(out, alone, atol=1e-6, rtol=1e-6, what="the outputs of the batch, against each token alone")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("outlier_token", "Experiment: one outlier token, per-token vs per-tensor input scales", points=3)
