"""Figures of quantization (chapter 8): what fewer bits do to the weights and to the model.

* :func:`show_bit_width` — three panels for one bit width: the weight error and a model metric against the bit
  width (per tensor and per channel), and the histogram of one weight matrix before and after quantization
  (the few levels a low bit width leaves are visible as spikes).
* :func:`show_quantization_table` — size and latency of several versions of one model side by side, from the rows
  of :func:`mmcourse.quantization.compare_models`.

matplotlib is imported inside the functions (``import mmcourse.quantization`` stays light); figure text is Latin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmcourse._checks import check_choice, check_tensor
from mmcourse.quantization.core import GRANULARITIES, _check_bits, fake_quantize, qmax_for_bits

__all__ = ["show_bit_width", "show_quantization_table"]

_COLORS = {"per_tensor": "tab:orange", "per_channel": "tab:blue"}
_LABELS = {"per_tensor": "per tensor", "per_channel": "per channel"}


def _sweep_series(rows: Sequence[Mapping], granularity: str, column: str) -> tuple[list[int], list[float]]:
    picked = sorted((int(r["bits"]), float(r[column])) for r in rows if r["granularity"] == granularity)
    return [b for b, _ in picked], [v for _, v in picked]


def show_bit_width(
    weight: torch.Tensor,
    sweep: Sequence[Mapping],
    bits: int = 8,
    granularity: str = "per_channel",
    *,
    metric: str = "metric",
    metric_label: str = "model metric",
    weight_name: str = "weight",
    bins: int = 120,
):
    """One bit width in context: errors, a metric, and a weight histogram.

    Args:
        weight: a float weight ``(out, in)`` (or any shape; per channel = along dim 0) to histogram.
        sweep: rows of :func:`mmcourse.quantization.bit_width_sweep` (``"bits"``, ``"granularity"``,
            ``"relative"`` and the ``metric`` column), e.g. for bit widths 2..8.
        bits: the bit width shown (marked in the curves, used for the histogram).
        granularity: ``"per_tensor"`` or ``"per_channel"`` for the histogram (both are drawn in the curves).
        metric: the column of ``sweep`` plotted in the middle panel; metric_label: its axis label.
        weight_name: title of the histogram panel.
    Returns:
        a matplotlib Figure (1 × 3 panels).
    """
    import matplotlib.pyplot as plt

    check_tensor(weight, "weight", floating=True, finite=True)
    _check_bits(bits)
    check_choice(granularity, "granularity", GRANULARITIES)
    rows = list(sweep)
    if not rows or not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("sweep must be a non-empty list of rows from bit_width_sweep")
    for column in ("bits", "granularity", "relative", metric):
        if any(column not in r for r in rows):
            raise ValueError(f"every row of sweep needs a {column!r} column")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for g in GRANULARITIES:
        if not any(r["granularity"] == g for r in rows):
            continue
        xs, ys = _sweep_series(rows, g, "relative")
        axes[0].plot(xs, ys, marker="o", color=_COLORS[g], label=_LABELS[g])
        xs, ys = _sweep_series(rows, g, metric)
        axes[1].plot(xs, ys, marker="o", color=_COLORS[g], label=_LABELS[g])
    for ax in axes[:2]:
        ax.axvline(bits, color="gray", lw=1, ls="--")
        ax.set_xlabel("bits per weight")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("relative weight error")
    axes[0].set_title("Weight error: about halves per extra bit")
    axes[1].set_ylabel(metric_label)
    axes[1].set_title(f"Model: {metric_label}")

    w = weight.detach().cpu().float().flatten()
    w_hat = fake_quantize(weight.detach().cpu().float(), bits, granularity, axis=0).flatten()
    low, high = float(w.min()), float(w.max())
    edges = torch.linspace(low, high, bins + 1).cpu().numpy()
    axes[2].hist(w.cpu().numpy(), bins=edges, color="lightgray", label="float32")
    axes[2].hist(w_hat.cpu().numpy(), bins=edges, histtype="step", color=_COLORS[granularity], lw=1.2,
                 label=f"INT{bits} {_LABELS[granularity]}")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("weight value")
    axes[2].set_title(f"{weight_name}: {2 * qmax_for_bits(bits) + 1} levels per scale")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_quantization_table(rows: Sequence[Mapping], *, title: str = "", latency: str = "image_ms"):
    """Bars of model size (MB) and latency (ms) for each row of :func:`mmcourse.quantization.compare_models`,
    each annotated with its ratio to the first row, the reference ("2.57x smaller", "1.60x faster", "1.2x slower").

    Args:
        rows: ``{"model", "size_mb", latency …}`` rows.
        latency: the latency column to plot (``"image_ms"``, ``"text_ms"``), or ``""`` for size only.
    """
    import matplotlib.pyplot as plt

    rows = list(rows)
    if not rows or not all(isinstance(r, Mapping) and "model" in r and "size_mb" in r for r in rows):
        raise ValueError("rows must be a non-empty list of compare_models rows ('model', 'size_mb', …)")
    if latency and any(latency not in r for r in rows):
        raise ValueError(f"every row needs the latency column {latency!r} (or pass latency='')")
    names = [str(r["model"]) for r in rows]
    panels = [("size_mb", "size on disk (MB)")] + ([(latency, "latency (ms, batch 1)")] if latency else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.5 + 0.45 * len(rows)), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        values = [float(r[column]) for r in rows]
        ax.barh(range(len(rows)), values, color=["gray"] + ["tab:blue"] * (len(rows) - 1))
        ax.set_yticks(range(len(rows)), names)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        better, worse = ("smaller", "larger") if column == "size_mb" else ("faster", "slower")
        for i, v in enumerate(values):
            note = f" {v:.0f}"
            if i > 0 and v > 0:
                ratio = values[0] / v
                note += f"  ({ratio:.2f}x {better})" if ratio >= 1 else f"  ({1 / ratio:.2f}x {worse})"
            ax.text(v, i, note, va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
