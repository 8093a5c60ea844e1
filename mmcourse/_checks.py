"""Input validation shared by every module: clear errors that say what was expected and what came."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_tensor(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Raise a clear error unless ``x`` is a tensor of the expected rank / kind; return it unchanged."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)} ({x.dim()}-D)")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if floating is False and x.is_floating_point():
        raise TypeError(f"{name} must be an integer or bool tensor, got dtype {x.dtype}")
    if finite and x.is_floating_point() and has_values(x) and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_same_size(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, dim: int = 0) -> None:
    """Raise unless ``a.size(dim) == b.size(dim)``."""
    if a.size(dim) != b.size(dim):
        raise ValueError(
            f"{name_a} and {name_b} must have the same size along dim {dim}: "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_shape(x: torch.Tensor, name: str, shape: Sequence[int | None], what: str = "") -> None:
    """Raise unless ``x.shape`` is ``shape`` (``None`` = any size there); ``what`` names the dims, e.g. "(B, L)"."""
    if len(x.shape) != len(shape) or any(want is not None and got != want for got, want in zip(x.shape, shape)):
        want = tuple("?" if d is None else d for d in shape)
        raise ValueError(f"{name} must have shape {what + ' = ' if what else ''}{want}, got {tuple(x.shape)}")


def check_token_ids(x, name: str, vocab_size: int | None = None) -> torch.Tensor:
    """Raise unless ``x`` is a non-empty integer tensor of token ids (not bool), each in ``[0, vocab_size)`` when
    ``vocab_size`` is given (values are read only where :func:`has_values`)."""
    check_tensor(x, name, floating=False)
    if x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype torch.bool")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if vocab_size is not None and has_values(x) and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(
            f"{name} must lie in [0, vocab_size={vocab_size}), got values in [{int(x.min())}, {int(x.max())}]"
        )
    return x


def check_positive(value, name: str, *, integer: bool = False) -> None:
    """Raise unless ``value`` is a positive (finite) number, an int when ``integer``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "int" if integer else "number"
        raise TypeError(f"{name} must be a positive {kind}, got {value!r} ({type(value).__name__})")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if not (value > 0) or not math.isfinite(value):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_probability(value, name: str, *, low_open: bool = True, high_open: bool = True) -> None:
    """Raise unless ``value`` lies in (0, 1) (ends included when the matching ``*_open`` is False)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r} ({type(value).__name__})")
    lo_ok = value > 0 if low_open else value >= 0
    hi_ok = value < 1 if high_open else value <= 1
    if not (lo_ok and hi_ok):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value!r}")


def check_choice(value, name: str, choices: Sequence) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def has_values(tensor: torch.Tensor) -> bool:
    """Whether value checks (ranges, 0/1 masks, NaN) may read ``tensor``'s data: only on the CPU. On a GPU a read
    waits for every queued kernel (a host synchronisation per check, per step), so value checks run where the data
    enters, on the CPU, and the GPU's own kernels check indices; the data-less ``meta`` device has no values."""
    return tensor.device.type == "cpu"
