"""Hidden tests of exercise set 8 (instructor only: not in the package, not in the student release)."""

import io

import torch
from torch import nn

from mmcourse.grading.expect import expect_close, expect_equal, expect_number
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex08")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_quantize(w):
    peak = w.abs().amax(dim=1)
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak)).float()
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


@HIDDEN.test("quantize_per_channel", points=2)
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
