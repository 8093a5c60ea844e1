"""Wall-clock measurement with warm-up and medians, shared by the quantization chapter and the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmcourse._checks import check_positive

__all__ = ["Timing", "measure"]


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and range over ``repeats`` timed calls."""

    median: float
    min: float
    max: float
    repeats: int

    @property
    def median_ms(self) -> float:
        return self.median * 1e3

    def __str__(self) -> str:
        return f"{self.median * 1e3:.2f} ms (min {self.min * 1e3:.2f}, max {self.max * 1e3:.2f}, n={self.repeats})"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 10) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed; CUDA is synchronised around calls."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_positive(repeats, "repeats", integer=True)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times), repeats)
