"""Chapter 8's shown code (the cells tagged ``lesson``) agrees with the library: the per-channel weight quantizer with
:func:`mmcourse.quantization.quantize_symmetric`, the int32 accumulation with :func:`int8_matmul`, and the INT8 linear
layer with :class:`mmcourse.quantization.Int8Linear` (bit for bit where both use the same activation scale); plus the
lab's timing helpers behind the chapter's speed ceiling, on tiny shapes."""

import pytest
import torch
import torch.nn.functional as F
from lesson_code import lesson_namespace

from mmcourse.labs.ch08_quantization import matmul_speedup, matmul_speedup_in_fresh_process, speedup_text
from mmcourse.quantization import Int8Linear, int8_matmul, quantize_dynamic, quantize_symmetric
from mmcourse.train import seeded


@pytest.fixture(scope="module")
def ns():
    return lesson_namespace("08_practice.ipynb")


@pytest.fixture(scope="module")
def linear():
    with seeded(0):
        return torch.nn.Linear(96, 40)


def _same_row_max(rows: int, features: int) -> torch.Tensor:
    """Inputs whose rows all share one max |x| (alternating signs): per-tensor scale = every row's scale."""
    with seeded(1):
        x = torch.randn(rows, features).clamp(-2.5, 2.5)
    x[:, 0] = 3.0 * torch.tensor([1.0, -1.0]).repeat(rows)[:rows]
    return x


def test_quantize_per_channel_is_the_librarys(ns, linear):
    weight = linear.weight.detach()
    q, scale = ns["quantize_per_channel"](weight)
    q_lib, scale_lib = quantize_symmetric(weight, 8, "per_channel", axis=0)
    assert q.dtype == torch.int8 and scale.shape == (40,)
    assert torch.equal(q, q_lib) and torch.equal(scale, scale_lib)
    zero_row = weight.clone()
    zero_row[3] = 0
    q0, s0 = ns["quantize_per_channel"](zero_row)
    assert torch.equal(q0[3], torch.zeros(96, dtype=torch.int8)) and s0[3] == 1


def test_int32_accumulation_is_int8_matmul(ns, linear):
    x_q, x_scale = ns["quantize_per_tensor"](torch.randn(7, 96))
    w_q, _ = ns["quantize_per_channel"](linear.weight.detach())
    acc = x_q.to(torch.int32) @ w_q.to(torch.int32).T
    assert x_q.dtype == torch.int8 and x_scale.dim() == 0 and int(x_q.abs().max()) == 127
    assert torch.equal(acc.float(), int8_matmul(x_q, w_q))


@pytest.mark.parametrize("rows", [1, 6])
def test_int8_linear_equals_int8linear_bit_for_bit_with_one_activation_scale(ns, linear, rows):
    """The library scales each row (token); with one shared row max both compute exactly the same numbers."""
    x = _same_row_max(rows, 96)
    w_q, w_scale = ns["quantize_per_channel"](linear.weight.detach())
    with torch.no_grad():
        shown = ns["int8_linear"](x, w_q, w_scale, linear.bias)
        library = Int8Linear.from_float(linear)(x)
    assert shown.shape == (rows, 40) and shown.dtype == torch.float32
    assert torch.equal(shown, library)


def test_int8_linear_is_close_to_float_and_to_the_library_on_any_input(ns, linear):
    with seeded(2):
        x = torch.randn(20, 96) * torch.rand(20, 1) * 3  # rows of different ranges: the scales differ
    w_q, w_scale = ns["quantize_per_channel"](linear.weight.detach())
    with torch.no_grad():
        want = F.linear(x, linear.weight, linear.bias)
        shown = ns["int8_linear"](x, w_q, w_scale, linear.bias)
        library = Int8Linear.from_float(linear)(x)
        torch_int8 = quantize_dynamic(torch.nn.Sequential(linear))(x)
    for got in (shown, library, torch_int8):
        assert float((got - want).norm() / want.norm()) < 0.03
    assert float((shown - library).norm() / want.norm()) < 0.03


def test_matmul_speedup_times_every_candidate_on_tiny_shapes(ns):
    timings = matmul_speedup([(16, 8), (8, 16)], tokens=4, plain_int8=ns["int8_linear"], warmup=0, repeats=2,
                             rounds=1)
    assert set(timings) == {"fp32", "torch INT8", "plain PyTorch INT8"}
    assert all(t.median > 0 and t.repeats == 2 for t in timings.values())
    with pytest.raises(ValueError, match="shapes"):
        matmul_speedup([], tokens=4)
    with pytest.raises(ValueError, match="another process"):
        matmul_speedup_in_fresh_process(plain_int8=ns["int8_linear"])


def test_matmul_speedup_in_fresh_process_without_a_variable(monkeypatch):
    monkeypatch.setenv("MMCOURSE_TEST_PIN", "1")
    medians = matmul_speedup_in_fresh_process(unset=["MMCOURSE_TEST_PIN"], shapes=[(8, 8)], tokens=2, warmup=0,
                                              repeats=1, rounds=1)
    assert set(medians) == {"fp32", "torch INT8"} and all(v > 0 for v in medians.values())


def test_speedup_text():
    assert speedup_text(2.0, 1.0) == "2.00x faster"
    assert speedup_text(1.0, 1.2) == "1.20x slower"
    with pytest.raises((TypeError, ValueError)):
        speedup_text(0, 1.0)
