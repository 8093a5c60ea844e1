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

from mmcourse._checks import check_choice
from mmcourse.quantization.convert import _check_model, quantizable_layers, quantize_from_scratch
from mmcourse.quantization.core import GRANULARITIES, _check_bits, packed_size_bytes, quantization_error

__all__ = ["weight_errors", "layer_output_errors", "bit_width_sweep"]

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
