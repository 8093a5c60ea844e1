"""Hidden tests of exercise set 8 (instructor only: not in the package, not in the student release)."""

import io

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_tensor
from mmcourse.grading.public.ex08 import _linear
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex08")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_quantize(w):
    peak = w.abs().amax(dim=1)
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak)).float()
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


@HIDDEN.test("quantize_per_channel", points=1)
def quantization_matches_the_reference(fn):
    """random matrices of very different row scales agree with the reference"""
    for seed, (rows, cols) in enumerate([(1, 1), (4, 33), (17, 5)]):
        w = torch.randn(rows, cols, generator=_gen(seed)) * torch.logspace(-3, 2, rows)[:, None]
        want_q, want_scale = _reference_quantize(w)
        q, scale = fn(w)
        expect_close(scale, want_scale, atol=0, rtol=1e-6, what="scale")
        expect_number(float((q.long() - want_q.long()).abs().max()), 0.0, atol=0, what="largest difference in q")


@HIDDEN.test("dequantize_per_channel", points=1)
def dequantization_matches_the_reference(fn):
    """random INT8 values and scales agree with q * scale"""
    q = torch.randint(-127, 128, (6, 10), generator=_gen(10)).to(torch.int8)
    scale = torch.rand(6, generator=_gen(11)) + 0.01
    expect_close(fn(q, scale), q.float() * scale[:, None], atol=1e-7)


@HIDDEN.test("dequantize_per_channel", points=1)
def returns_float32(fn):
    """the result is float32 even though q is int8"""
    out = fn(torch.ones(2, 2, dtype=torch.int8), torch.ones(2))
    expect_equal(str(out.dtype), "torch.float32", what="the dtype")


@HIDDEN.test("relative_error", points=1)
def error_matches_the_reference(fn):
    """random matrices agree with ||w - w_hat|| / ||w||"""
    for seed in range(3):
        w = torch.randn(12, 20, generator=_gen(seed + 20)) * (seed + 1)
        q, scale = _reference_quantize(w)
        want = float((w - q.float() * scale[:, None]).norm() / w.norm())
        expect_number(fn(w), want, atol=1e-6)


def _reference_size(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@HIDDEN.test("state_dict_bytes", points=1)
def matches_torch_save_exactly(fn):
    """equals the number of bytes torch.save writes"""
    torch.manual_seed(0)
    for model in (nn.Linear(7, 3), nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 2))):
        expect_number(fn(model), float(_reference_size(model)), atol=0, what=f"the size of {type(model).__name__}")


@HIDDEN.test("state_dict_bytes", points=1)
def int8_weights_are_about_four_times_smaller(fn):
    """an int8 copy of a big weight is about 4x smaller on disk"""

    class Holder(nn.Module):
        def __init__(self, tensor):
            super().__init__()
            self.register_buffer("weight", tensor)

    weight = torch.randn(256, 256, generator=_gen(30))
    ratio = fn(Holder(weight)) / fn(Holder(weight.to(torch.int8)))
    expect_number(ratio, low=3.5, high=4.0, what="float32 size / int8 size")


def _reference_int8_linear(layer, x):
    """float64 reference: per-channel weights, per-token inputs, exact integer sums (int64)."""
    w_q, w_scale = _reference_quantize(layer.weight.detach())
    peak = x.abs().amax(dim=-1, keepdim=True)
    x_scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak)).float()
    x_q = torch.clamp(torch.round(x / x_scale), -127, 127).long()
    acc = x_q @ w_q.long().T
    y = acc.double() * x_scale.double() * w_scale.double()
    return y if layer.bias is None else y + layer.bias.detach().double()


@HIDDEN.test("Int8Linear", points=2)
def forward_matches_an_independent_reference(fn):
    """random layers (with and without bias) and tokens of very different sizes agree with an int64 reference"""
    for seed, (n, d_in, d_out, bias) in enumerate([(5, 16, 8, True), (7, 33, 4, False), (1, 3, 9, True)]):
        layer = _linear(d_in, d_out, 10 * seed, bias=bias)
        x = torch.randn(n, d_in, generator=_gen(10 * seed + 5)) * torch.logspace(-2, 2, n)[:, None]
        with torch.no_grad():
            got = fn(layer)(x)
        expect_close(
            got.double(),
            _reference_int8_linear(layer, x),
            atol=1e-5,
            rtol=1e-5,
            what=f"the output ({n} tokens, {d_in} -> {d_out}, bias={bias})",
        )


@HIDDEN.test("Int8Linear", points=2)
def error_is_within_what_rounding_can_cause(fn):
    """rows and tokens of very different sizes: every output is within the error that rounding each x and w to
    its own grid (half a step each) can cause"""
    layer = _linear(64, 16, 80)
    with torch.no_grad():
        layer.weight.mul_(torch.logspace(-2, 1, 16)[:, None])  # output channels of very different sizes
    x = torch.randn(6, 64, generator=_gen(81)) * torch.logspace(-3, 3, 6)[:, None]  # and tokens too
    with torch.no_grad():
        got = fn(layer)(x).double()
    w, xd, b = layer.weight.detach().double(), x.double(), layer.bias.detach().double()
    want = xd @ w.T + b
    s_x = xd.abs().amax(dim=1, keepdim=True) / 127  # (N, 1): one step per token
    s_w = w.abs().amax(dim=1) / 127  # (out,): one step per output channel
    abs_x, abs_w = xd.abs().sum(dim=1, keepdim=True), w.abs().sum(dim=1)
    # x_i w_i - x̂_i ŵ_i = (x_i - x̂_i) w_i + x̂_i (w_i - ŵ_i), with |x_i - x̂_i| <= s_x / 2 and |w_i - ŵ_i| <= s_w / 2
    bound = s_x / 2 * abs_w + s_w / 2 * (abs_x + 64 * s_x / 2)
    bound = bound + 1e-5 * (xd.abs() @ w.abs().T + b.abs())  # float32 rescaling
    ratio = (got - want).abs() / bound
    worst = divmod(int(ratio.argmax()), 16)
    expect(
        bool((ratio <= 1).all()),
        "some outputs are further from the float layer than rounding to per-token and per-channel grids allows",
        expected="|y - linear(x)| <= s_x/2 · Σ|w| + s_w/2 · Σ(|x| + s_x/2) for every token and output",
        got=f"{float(ratio.max()):.1f} times that bound at token {worst[0]}, output {worst[1]}",
    )


@HIDDEN.test("Int8Linear", points=1)
def integer_sums_are_exact_beyond_float32(fn):
    """4096 inputs of large products: accumulate returns int32 sums exact to the last unit (float32 is not)"""
    layer = nn.Linear(4096, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(0.8 + 0.2 * torch.rand(3, 4096, generator=_gen(40)))
    module = fn(layer)
    x_q = torch.randint(90, 128, (4, 4096), generator=_gen(41)).to(torch.int8)
    acc = module.accumulate(x_q)
    expect_tensor(acc, shape=(4, 3), dtype=torch.int32, what="accumulate(x_q)")
    want = x_q.long() @ module.weight_q.long().T
    expect_number(
        float((acc.long() - want).abs().max()),
        0.0,
        atol=0,
        what="largest difference from the exact integer sums (~5e7: beyond float32's 2^24)",
    )


@HIDDEN.test("Int8Linear", points=1)
def each_token_is_quantized_on_its_own(fn):
    """scaling one token by 1000 leaves the other tokens' outputs unchanged, bit for bit"""
    module = fn(_linear(12, 6, 50))
    x = torch.randn(3, 12, generator=_gen(51))
    louder = x.clone()
    louder[1] *= 1000
    with torch.no_grad():
        expect_equal(module(louder)[[0, 2]], module(x)[[0, 2]], what="the outputs of tokens 0 and 2")


@HIDDEN.test("Int8Linear", points=1)
def doubling_the_input_doubles_the_output_before_the_bias(fn):
    """dynamic input scale: forward(4 x) - b equals 4 (forward(x) - b) (the integers do not change)"""
    layer = _linear(20, 7, 60)
    module = fn(layer)
    x = torch.randn(5, 20, generator=_gen(61))
    bias = layer.bias.detach()
    with torch.no_grad():
        expect_close(module(4 * x) - bias, 4 * (module(x) - bias), atol=1e-5, rtol=1e-6)


@HIDDEN.test("Int8Linear", points=1)
def zero_rows_and_no_bias_are_safe(fn):
    """no bias, a zero weight row and a zero token: zeros come out, no NaN, the float layer is untouched"""
    layer = _linear(5, 3, 70, bias=False)
    with torch.no_grad():
        layer.weight[1] = 0.0
    before = layer.weight.detach().clone()
    x = torch.randn(3, 5, generator=_gen(71))
    x[2] = 0.0
    with torch.no_grad():
        out = fn(layer)(x)
    expect(bool(torch.isfinite(out).all()), "the output contains NaN or inf", got=str(out))
    expect_close(out[:, 1], torch.zeros(3), atol=0, what="the output of the all-zero weight row")
    expect_close(out[2], torch.zeros(3), atol=0, what="the output of the all-zero token")
    expect_equal(layer.weight.detach(), before, what="the float layer's weight after building Int8Linear")
