"""Where quantization error comes from: per-layer errors and bit-width sweeps as plain data (chapter 8).

* :func:`weight_errors` — quantization error of each layer's weight (no data needed);
* :func:`layer_output_errors` — each layer's *output* in the quantized model vs the float model, on real inputs;
* :func:`bit_width_sweep` — 8 / 6 / 4 bits × per-tensor / per-channel: error, ideal packed size and, optionally,
  any metric of the quantized model (cosine to float32, zero-shot accuracy…).

Every function returns a list of dict rows of plain numbers and strings: easy to print, tabulate or plot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_tensor
from mmcourse.quantization.convert import _check_model, quantizable_layers, quantize_from_scratch
from mmcourse.quantization.core import (
    GRANULARITIES,
    _check_bits,
    fake_quantize,
    packed_size_bytes,
    qmax_for_bits,
    quantization_error,
)

__all__ = ["weight_errors", "layer_output_errors", "bit_width_sweep", "show_bit_width", "show_quantization_table"]

_WEIGHT_LAYERS = (nn.Linear, nn.Embedding, nn.Conv2d)


def weight_errors(
    model: nn.Module,
    bits: int = 8,
    granularity: str = "per_channel",
    types: tuple[type[nn.Module], ...] = _WEIGHT_LAYERS,
) -> list[dict]:
    """Quantization error of every weight of the layers of ``types`` (the model is not changed).

    Returns:
        rows ``{"layer", "type", "shape", "params", "relative", "sqnr_db", "max_abs"}`` in model order; see
        :func:`mmcourse.quantization.core.quantization_error`.
    """
    _check_model(model)
    _check_bits(bits)
    check_choice(granularity, "granularity", GRANULARITIES)
    rows = []
    for name, layer in quantizable_layers(model, types):
        weight = layer.weight.detach()
        if not weight.is_floating_point():
            raise TypeError(f"layer {name!r} has a non-float weight ({weight.dtype}): is the model quantized already?")
        err = quantization_error(weight, bits, granularity, axis=0)
        rows.append({"layer": name, "type": type(layer).__name__, "shape": tuple(weight.shape),
                     "params": weight.numel(), "relative": err["relative"], "sqnr_db": err["sqnr_db"],
                     "max_abs": err["max_abs"]})
    if not rows:
        raise ValueError(f"model ({type(model).__name__}) has no layer of types {[t.__name__ for t in types]}")
    return rows


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def layer_output_errors(
    reference_model: nn.Module,
    quantized_model: nn.Module,
    run: Callable[[nn.Module], object],
    types: tuple[type[nn.Module], ...] = _WEIGHT_LAYERS,
) -> list[dict]:
    """Compare every layer's output in ``quantized_model`` with the same-named layer of ``reference_model``.

    ``run(model)`` feeds the same inputs to a model (e.g. ``lambda m: m.get_image_features(pixel_values=x)``);
    it is called once per model with forward hooks recording the outputs of the layers that are of ``types``
    in the reference (their quantized replacements keep the names). Errors accumulate through the network, so
    the deepest layers show the largest relative error.

    Returns:
        rows ``{"layer", "relative", "cosine"}`` in the order the layers ran: ``‖y_q − y‖ / ‖y‖`` and the
        mean cosine between output rows, over all calls of that layer.
    """
    _check_model(reference_model)
    _check_model(quantized_model)
    if not callable(run):
        raise TypeError(f"run must be callable(model), got {type(run).__name__}")
    names = [name for name, _ in quantizable_layers(reference_model, types)]
    if not names:
        raise ValueError(f"reference_model has no layer of types {[t.__name__ for t in types]}")
    quantized_modules = dict(quantized_model.named_modules())
    missing = [n for n in names if n not in quantized_modules]
    if missing:
        raise ValueError(f"quantized_model lacks layers of reference_model, e.g. {missing[:3]}: not the same model")

    def record(model: nn.Module) -> dict[str, list[torch.Tensor]]:
        outputs: dict[str, list[torch.Tensor]] = {}
        handles = []
        modules = dict(model.named_modules())
        for name in names:
            def hook(module, args, output, name=name):
                tensor = _first_tensor(output)
                if tensor is not None:
                    outputs.setdefault(name, []).append(tensor.detach().float().cpu())
            handles.append(modules[name].register_forward_hook(hook))
        try:
            with torch.no_grad():
                run(model)
        finally:
            for handle in handles:
                handle.remove()
        return outputs

    ref_out, q_out = record(reference_model), record(quantized_model)
    rows = []
    for name in ref_out:  # the order layers ran in
        if name not in q_out or len(q_out[name]) != len(ref_out[name]):
            continue
        ref = torch.cat([t.reshape(-1, t.shape[-1]) for t in ref_out[name]])
        got = torch.cat([t.reshape(-1, t.shape[-1]) for t in q_out[name]])
        norm = float(ref.norm())
        rows.append({"layer": name, "relative": float((got - ref).norm()) / norm if norm > 0 else 0.0,
                     "cosine": float(F.cosine_similarity(ref, got, dim=-1).mean())})
    return rows


def bit_width_sweep(
    model_or_tensor,
    bits: Sequence[int] = (8, 6, 4),
    granularities: Sequence[str] = GRANULARITIES,
    *,
    evaluate: Callable[[nn.Module], float] | None = None,
    activation: str = "weight_only",
) -> list[dict]:
    """Error (and optionally a metric) for each bit width × granularity.

    Args:
        model_or_tensor: a float model (its Linear, Embedding and Conv2d weights are quantized together) or a
            single float tensor (per channel = along dim 0).
        bits: bit widths to try (2..8).
        granularities: subset of ``("per_tensor", "per_channel")``.
        evaluate: for a model, ``evaluate(quantized_model) → float`` (e.g. cosine to float32, accuracy); its
            value is the ``"metric"`` column. It may also return a dict ``{column: float}`` to add several
            columns at once (e.g. ``{"cosine": …, "accuracy": …}``). The quantized model comes from
            :func:`quantize_from_scratch`.
        activation: passed to :func:`quantize_from_scratch` (``"weight_only"`` isolates the weight bits).
    Returns:
        rows ``{"bits", "granularity", "relative", "sqnr_db", "packed_mb"[, "metric" or evaluate's columns]}``:
        ``relative`` and
        ``sqnr_db`` over all weights together; ``packed_mb`` = weights packed at ``bits`` bits + float32 scales
        (other tensors not counted).
    """
    bits = list(bits)
    if not bits:
        raise ValueError("bits must list at least one bit width")
    for b in bits:
        _check_bits(b)
    granularities = list(granularities)
    if not granularities:
        raise ValueError("granularities must list at least one granularity")
    for g in granularities:
        check_choice(g, "granularity", GRANULARITIES)
    if isinstance(model_or_tensor, torch.Tensor):
        if evaluate is not None:
            raise ValueError("evaluate needs a model, got a tensor")
        weights = [model_or_tensor.detach()]
    elif isinstance(model_or_tensor, nn.Module):
        weights = [row_layer.weight.detach() for _, row_layer in quantizable_layers(model_or_tensor, _WEIGHT_LAYERS)]
        if not weights:
            raise ValueError(f"model ({type(model_or_tensor).__name__}) has no Linear, Embedding or Conv2d layer")
    else:
        raise TypeError(f"model_or_tensor must be an nn.Module or a tensor, got {type(model_or_tensor).__name__}")
    for w in weights:
        if not w.is_floating_point():
            raise TypeError(f"weights must be floating point, got {w.dtype} (is the model quantized already?)")
    rows = []
    for b in bits:
        for g in granularities:
            signal = noise = 0.0
            packed = 0
            for w in weights:
                err = quantization_error(w, b, g, axis=0)
                w_sq = float(w.float().pow(2).sum())
                signal += w_sq
                noise += err["relative"] ** 2 * w_sq
                packed += packed_size_bytes(w.numel(), b, w.shape[0] if g == "per_channel" and w.dim() else 1)
            row = {"bits": b, "granularity": g,
                   "relative": (noise / signal) ** 0.5 if signal > 0 else 0.0,
                   "sqnr_db": 10 * torch.log10(torch.tensor(signal / noise)).item() if noise > 0 else float("inf"),
                   "packed_mb": packed / 1e6}
            if evaluate is not None:
                quantized = quantize_from_scratch(model_or_tensor, bits=b, granularity=g, activation=activation)
                with torch.no_grad():
                    value = evaluate(quantized)
                if isinstance(value, Mapping):
                    for column, number in value.items():
                        if column in row:
                            raise ValueError(f"evaluate's column {column!r} clashes with a sweep column")
                        row[column] = float(number)
                else:
                    row["metric"] = float(value)
            rows.append(row)
    return rows

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
        sweep: rows of :func:`mmcourse.labs.ch08_bit_width.bit_width_sweep` (``"bits"``, ``"granularity"``,
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
    """Bars of model size (MB) and latency (ms) for each row of :func:`mmcourse.labs.ch08_quantization.compare_models`,
    each annotated with its ratio to the first row, the reference ("2.57x smaller", "1.60x faster", "1.2x slower").

    Args:
        rows: ``{"model", "size_mb", latency …}`` rows (a latency of ``None``: drawn as "not timed").
        latency: the latency column to plot (``"image_ms"``, ``"text_ms"``), or ``""`` for size only.
    """
    import matplotlib.pyplot as plt

    rows = list(rows)
    if not rows or not all(isinstance(r, Mapping) and "model" in r and "size_mb" in r for r in rows):
        raise ValueError("rows must be a non-empty list of compare_models rows ('model', 'size_mb', …)")
    if latency and any(latency not in r for r in rows):
        raise ValueError(f"every row needs the latency column {latency!r} (None = not timed; or pass latency='')")
    names = [str(r["model"]) for r in rows]
    panels = [("size_mb", "size on disk (MB)")] + ([(latency, "latency (ms, batch 1)")] if latency else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.5 + 0.45 * len(rows)), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        timed = [r[column] is not None for r in rows]
        values = [float(r[column]) if t else 0.0 for r, t in zip(rows, timed)]
        ax.barh(range(len(rows)), values, color=["gray"] + ["tab:blue"] * (len(rows) - 1))
        ax.set_yticks(range(len(rows)), names)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        better, worse = ("smaller", "larger") if column == "size_mb" else ("faster", "slower")
        for i, v in enumerate(values):
            if not timed[i]:
                ax.text(0, i, " not timed", va="center", fontsize=8)
                continue
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
