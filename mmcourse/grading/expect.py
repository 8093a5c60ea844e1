"""Assertions for exercise tests: each failure says what was expected and what came, in deterministic text.

A test function receives the student's object and calls these helpers; a failed expectation raises
:class:`Mismatch` (an ``AssertionError``) whose ``expected`` / ``got`` lines are shown to the student by
:func:`mmcourse.grading.check` and written into the instructor's feedback files. Values are printed rounded
(4 significant decimals), shapes as tuples: no memory addresses, no timings, so reports can be compared as text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "Mismatch",
    "expect",
    "expect_tensor",
    "expect_close",
    "expect_equal",
    "expect_number",
    "expect_raises",
    "fmt",
]

_PREVIEW = 6


class Mismatch(AssertionError):
    """A failed expectation: ``what`` was checked, ``expected`` and ``got`` describe both sides."""

    def __init__(self, what: str, expected: str = "", got: str = "", detail: str = ""):
        self.what, self.expected, self.got, self.detail = what, expected, got, detail
        super().__init__(self.lines()[0] if self.lines() else what)

    def lines(self) -> list[str]:
        out = [self.what]
        if self.expected:
            out.append(f"expected: {self.expected}")
        if self.got:
            out.append(f"got:      {self.got}")
        if self.detail:
            out.append(self.detail)
        return out


def _fmt_number(x) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4f}"


def fmt(value) -> str:
    """A short, deterministic description of a value: tensors as shape/dtype plus their first values."""
    if isinstance(value, torch.Tensor):
        head = f"tensor of shape {tuple(value.shape)}, dtype {str(value.dtype).replace('torch.', '')}"
        flat = value.detach().reshape(-1)[:_PREVIEW].tolist()
        vals = ", ".join(_fmt_number(v) for v in flat)
        more = ", ..." if value.numel() > _PREVIEW else ""
        return f"{head}: [{vals}{more}]"
    if isinstance(value, (bool, int, float)):
        return _fmt_number(value)
    if isinstance(value, (tuple, list)):
        inner = ", ".join(fmt(v) if not isinstance(v, torch.Tensor) else f"tensor{tuple(v.shape)}" for v in value)
        return (
            f"{type(value).__name__} of length {len(value)} ({inner})"
            if len(value) <= 4
            else (f"{type(value).__name__} of length {len(value)}")
        )
    if value is None:
        return "None"
    return f"a {type(value).__name__}"


def expect(condition: bool, what: str, *, expected: str = "", got: str = "") -> None:
    """Fail with ``what`` (and the optional expected/got lines) unless ``condition`` holds."""
    if not condition:
        raise Mismatch(what, expected, got)


def expect_tensor(
    got,
    *,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    floating: bool | None = None,
    what: str = "the result",
) -> torch.Tensor:
    """Check that ``got`` is a plain ``torch.Tensor`` (subclasses are refused) of the given shape / dtype."""
    if type(got) is not torch.Tensor:
        kind = "a torch.Tensor subclass" if isinstance(got, torch.Tensor) else fmt(got)
        raise Mismatch(f"{what} must be a torch.Tensor", "a torch.Tensor", kind)
    if shape is not None and tuple(got.shape) != tuple(shape):
        raise Mismatch(f"{what} has the wrong shape", f"shape {tuple(shape)}", f"shape {tuple(got.shape)}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if got.dtype not in allowed:
            want = " or ".join(str(d).replace("torch.", "") for d in allowed)
            raise Mismatch(f"{what} has the wrong dtype", want, str(got.dtype).replace("torch.", ""))
    if floating is True and not got.is_floating_point():
        raise Mismatch(f"{what} must be a floating-point tensor", "float dtype", str(got.dtype))
    if floating is False and got.is_floating_point():
        raise Mismatch(f"{what} must be an integer or bool tensor", "integer/bool dtype", str(got.dtype))
    return got


def expect_close(
    got,
    expected: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    what: str = "the result",
) -> torch.Tensor:
    """Check that ``got`` is a tensor of ``expected``'s shape whose values match within ``atol + rtol*|expected|``."""
    expected = expected.detach()
    got = expect_tensor(got, shape=expected.shape, what=what)
    got_values = got.detach().to(torch.float64)
    want_values = expected.to(torch.float64)
    if not torch.isfinite(got_values).all() and torch.isfinite(want_values).all():
        raise Mismatch(f"{what} contains NaN or Inf", fmt(expected), fmt(got.detach()))
    diff = (got_values - want_values).abs()
    tolerance = atol + rtol * want_values.abs()
    bad = diff > tolerance
    if bad.any():
        worst = int(torch.argmax(torch.where(bad, diff, torch.zeros_like(diff))).item())
        index = (
            tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), tuple(expected.shape)))
            if (expected.dim() > 0)
            else ()
        )
        detail = (
            f"{int(bad.sum())} of {bad.numel()} values differ; largest difference "
            f"{_fmt_number(diff.reshape(-1)[worst].item())} at index {index}"
        )
        raise Mismatch(f"{what} has the wrong values", fmt(expected), fmt(got.detach()), detail)
    return got


def expect_equal(got, expected, *, what: str = "the result"):
    """Exact equality: tensors element-wise (same shape and dtype kind), anything else with ``==``."""
    if isinstance(expected, torch.Tensor):
        got = expect_tensor(got, shape=expected.shape, what=what)
        if expected.dtype == torch.bool and got.dtype != torch.bool:
            raise Mismatch(f"{what} must be a bool tensor", "dtype bool", str(got.dtype).replace("torch.", ""))
        if not torch.equal(got.detach().to(expected.dtype), expected.detach()):
            mismatched = int((got.detach().to(expected.dtype) != expected.detach()).sum())
            detail = f"{mismatched} of {expected.numel()} entries differ"
            raise Mismatch(f"{what} has the wrong values", fmt(expected), fmt(got.detach()), detail)
        return got
    if type(got) is not type(expected) and not (
        isinstance(expected, (int, float)) and isinstance(got, (int, float)) and not isinstance(got, bool)
    ):
        raise Mismatch(f"{what} has the wrong type", type(expected).__name__, type(got).__name__)
    if got != expected:
        raise Mismatch(f"{what} is wrong", fmt(expected), fmt(got))
    return got


def expect_number(
    got, expected: float | None = None, *, atol: float = 1e-5, low=None, high=None, what: str = "the result"
) -> float:
    """A Python number or 0-d tensor, equal to ``expected`` within ``atol`` and/or inside ``[low, high]``."""
    if type(got) is torch.Tensor and got.dim() == 0:
        value = float(got.detach())
    elif isinstance(got, (int, float)) and not isinstance(got, bool):
        value = float(got)
    else:
        raise Mismatch(f"{what} must be a number (or a 0-d tensor)", "a number", fmt(got))
    if expected is not None and not (abs(value - expected) <= atol):
        raise Mismatch(f"{what} has the wrong value", _fmt_number(expected), _fmt_number(value))
    if low is not None and not value >= low:
        raise Mismatch(f"{what} is too small", f">= {_fmt_number(low)}", _fmt_number(value))
    if high is not None and not value <= high:
        raise Mismatch(f"{what} is too large", f"<= {_fmt_number(high)}", _fmt_number(value))
    return value


def expect_raises(
    exception: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., object],
    *args,
    what: str = "the call",
    **kwargs,
) -> BaseException:
    """Call ``fn(*args, **kwargs)`` and check that it raises ``exception`` (e.g. ``ValueError`` on bad input)."""
    kinds = exception if isinstance(exception, tuple) else (exception,)
    names = " or ".join(k.__name__ for k in kinds)
    try:
        fn(*args, **kwargs)
    except kinds as exc:
        return exc
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the student
        raise Mismatch(f"{what} should raise {names}", names, f"{type(exc).__name__}: {exc}") from None
    raise Mismatch(f"{what} should raise {names}", names, "no exception")
