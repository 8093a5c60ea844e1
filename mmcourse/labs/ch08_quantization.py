"""Measuring a quantized model: bytes on disk, latency, and how close its outputs stay to float32 (chapter 8).

* :func:`~mmcourse.quantization.model_size_bytes` — the size ``torch.save(model.state_dict())`` writes (not
  ``numel × element_size``: a dynamically quantized Linear keeps its weight in packed params, outside ``parameters()``).
* :func:`measure_latency`, :func:`compare_latency` — warm-up, then medians (:func:`mmcourse.dev.timing.measure`);
  ``compare_latency`` interleaves the candidates over several rounds and keeps each one's best median, so a
  burst of load from another process hits all of them alike instead of one.
* :func:`feature_cosine`, :func:`compare_features` — cosine similarity of embeddings to the float32 model's.
* :func:`evaluate_zero_shot`, :func:`evaluate_retrieval` — task accuracy of TinyCLIP or an HF CLIP.
* :func:`compare_models` — all of the above as one table (a list of dict rows).
* :func:`matmul_speedup`, :func:`matmul_speedup_in_fresh_process` — the ceiling of INT8 speed-ups: the matrix
  products of one transformer layer (:data:`VIT_B32_LAYER_SHAPES`) in float32 and with torch's INT8 kernels, timed
  alone — in this process or in a fresh one with some environment variables removed (e.g. the ``MKL_CBWR`` pin).
* :func:`speedup_text` — ``"2.31x faster"`` / ``"1.20x slower"``: the form the notebooks' sanitize file masks,
  since speed-ups vary from machine to machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_same_size, check_tensor
from mmcourse.dev.timing import Timing, measure
from mmcourse.quantization.convert import model_size_bytes

__all__ = [
    "measure_latency", "compare_latency", "feature_cosine", "compare_features",
    "evaluate_zero_shot", "evaluate_retrieval", "compare_models",
    "VIT_B32_LAYER_SHAPES", "matmul_speedup", "matmul_speedup_in_fresh_process", "speedup_text",
]

#: ``(in_features, out_features)`` of the Linear layers of one CLIP ViT-B/32 image-encoder layer: the query, key,
#: value and output projections of attention, then the MLP's two layers.
VIT_B32_LAYER_SHAPES: tuple[tuple[int, int], ...] = ((768, 768),) * 4 + ((768, 3072), (3072, 768))




def measure_latency(fn: Callable, *args, warmup: int = 2, repeats: int = 10, **kwargs) -> Timing:
    """Seconds per call of ``fn(*args, **kwargs)`` under ``torch.inference_mode()``: median, min, max.

    ``fn`` is any callable: a model (``measure_latency(model, pixel_values)``) or a function
    (``measure_latency(lambda: model.get_image_features(pixel_values=x))``).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (a model or a function), got {type(fn).__name__}")

    def call():
        with torch.inference_mode():
            return fn(*args, **kwargs)

    return measure(call, warmup=warmup, repeats=repeats)


def compare_latency(
    fns: Mapping[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 5, rounds: int = 3
) -> dict[str, Timing]:
    """Time several zero-argument callables fairly on a busy machine.

    Each round measures every candidate once (``warmup`` + ``repeats`` calls, in the given order); the result per
    candidate is the round with the lowest median (extra load only ever adds time).

    Returns:
        ``{name: Timing}`` with ``repeats`` = calls in the kept round.
    """
    if not isinstance(fns, Mapping) or not fns:
        raise TypeError(f"fns must be a non-empty mapping name -> callable, got {type(fns).__name__}")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] must be callable, got {type(fn).__name__}")
    check_positive(rounds, "rounds", integer=True)
    best: dict[str, Timing] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            timing = measure_latency(fn, warmup=warmup, repeats=repeats)
            if name not in best or timing.median < best[name].median:
                best[name] = timing
    return best


def feature_cosine(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Row-wise cosine similarity of ``candidate (B, D)`` to ``reference (B, D)``: ``{"mean", "min"}``."""
    check_tensor(reference, "reference", ndim=2, floating=True)
    check_tensor(candidate, "candidate", ndim=2, floating=True)
    if reference.shape != candidate.shape:
        raise ValueError(f"reference and candidate must have the same shape, got {tuple(reference.shape)} and "
                         f"{tuple(candidate.shape)}")
    cos = F.cosine_similarity(reference.float(), candidate.float().to(reference.device), dim=-1)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def _embeddings(model, images, input_ids, attention_mask) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    from mmcourse.hf import image_embeddings, text_embeddings

    image = None if images is None else image_embeddings(model, images, normalize=False)
    text = None if input_ids is None else text_embeddings(model, input_ids, attention_mask, normalize=False)
    return image, text


def compare_features(
    reference_model: nn.Module,
    model: nn.Module,
    *,
    images: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """Cosine of ``model``'s image/text embeddings to ``reference_model``'s (TinyCLIP or HF CLIP, any mix).

    Args:
        images: ``(B, 3, H, W)`` (HF: ``pixel_values``); input_ids, attention_mask: ``(B, L)``. At least one.
    Returns:
        ``{"image_cosine", "image_cosine_min", "text_cosine", "text_cosine_min"}`` for the inputs given.
    """
    if images is None and input_ids is None:
        raise ValueError("give images, input_ids or both")
    ref_image, ref_text = _embeddings(reference_model, images, input_ids, attention_mask)
    image, text = _embeddings(model, images, input_ids, attention_mask)
    out: dict[str, float] = {}
    for kind, ref, got in (("image", ref_image, image), ("text", ref_text, text)):
        if ref is not None:
            cos = feature_cosine(ref, got)
            out[f"{kind}_cosine"], out[f"{kind}_cosine_min"] = cos["mean"], cos["min"]
    return out


def evaluate_zero_shot(
    model: nn.Module,
    tokenizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    classnames: Sequence[str],
    templates: Sequence[str] = ("{}",),
    *,
    max_len: int = 16,
) -> float:
    """Zero-shot accuracy in ``[0, 1]`` of TinyCLIP or an HF CLIP (float or quantized).

    Args:
        images: ``(N, 3, H, W)`` (already preprocessed for an HF model); labels: ``(N,)`` indices into
        ``classnames``; templates: prompt templates with ``{}`` (ensembled).
    """
    from mmcourse.hf import as_clip_encoder, image_embeddings
    from mmcourse.retrieval import zero_shot_accuracy, zero_shot_classifier

    check_tensor(labels, "labels", ndim=1, floating=False)
    check_tensor(images, "images", ndim=4, floating=True)
    check_same_size(images, labels, "images", "labels")
    if int(labels.min()) < 0 or int(labels.max()) >= len(classnames):
        raise ValueError(f"labels must lie in [0, {len(classnames)}), got [{int(labels.min())}, {int(labels.max())}]")
    with torch.no_grad():
        classifier = zero_shot_classifier(as_clip_encoder(model), tokenizer, classnames, templates, max_len=max_len)
        features = image_embeddings(model, images)
    return zero_shot_accuracy(features, classifier.to(features.device), labels)


def evaluate_retrieval(
    model: nn.Module,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    text_to_image: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Recall@K both ways (:func:`mmcourse.retrieval.retrieval_metrics`) of TinyCLIP or an HF CLIP."""
    from mmcourse.retrieval import retrieval_metrics

    image, text = _embeddings(model, images, input_ids, attention_mask)
    return retrieval_metrics(image, text, text_to_image, ks)


def compare_models(
    models: Mapping[str, nn.Module],
    *,
    images: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    reference: str | None = None,
    warmup: int = 1,
    repeats: int = 5,
    rounds: int = 3,
    timed: bool = True,
) -> list[dict]:
    """Size, latency and fidelity of several versions of one CLIP-like model, one row per model.

    Args:
        models: ``{name: model}``, e.g. ``{"fp32": model, "int8 dynamic": quantize_dynamic(model)}``.
        images, input_ids, attention_mask: the inputs timed and compared (at least one of images / input_ids).
        reference: the name the others are compared to (default: the first).
        warmup, repeats, rounds: see :func:`compare_latency` (the image and text encoders are timed separately).
        timed: False skips the latency columns.
    Returns:
        rows ``{"model", "size_mb", "size_ratio", "image_ms", "image_speedup", "text_ms", "text_speedup",
        "image_cosine", "text_cosine"}`` (ratios are reference / model: larger = smaller or faster; columns of
        an input not given are absent).
    """
    from mmcourse.hf import as_clip_encoder

    if not isinstance(models, Mapping) or not models:
        raise TypeError(f"models must be a non-empty mapping name -> model, got {type(models).__name__}")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference must be one of {list(models)}, got {reference!r}")
    if images is None and input_ids is None:
        raise ValueError("give images, input_ids or both")
    sizes = {name: model_size_bytes(m) for name, m in models.items()}
    timings: dict[str, Timing] = {}
    if timed:
        fns: dict[str, Callable[[], object]] = {}
        for name, m in models.items():
            encoder = as_clip_encoder(m)
            if images is not None:
                fns[f"{name}/image"] = lambda e=encoder: e.encode_image(images, normalize=False)
            if input_ids is not None:
                fns[f"{name}/text"] = lambda e=encoder: e.encode_text(input_ids, attention_mask, normalize=False)
        timings = compare_latency(fns, warmup=warmup, repeats=repeats, rounds=rounds)
    rows = []
    for name, m in models.items():
        row: dict = {"model": name, "size_mb": sizes[name] / 1e6, "size_ratio": sizes[reference] / sizes[name]}
        for kind, given in (("image", images is not None), ("text", input_ids is not None)):
            if given and timed:
                t, t_ref = timings[f"{name}/{kind}"].median, timings[f"{reference}/{kind}"].median
                row[f"{kind}_ms"], row[f"{kind}_speedup"] = t * 1e3, t_ref / t
        row.update(compare_features(models[reference], m, images=images, input_ids=input_ids,
                                    attention_mask=attention_mask))
        for key in ("image_cosine_min", "text_cosine_min"):
            row.pop(key, None)
        rows.append(row)
    return rows


def matmul_speedup(
    shapes: Sequence[tuple[int, int]] = VIT_B32_LAYER_SHAPES,
    tokens: int = 50,
    *,
    plain_int8: Callable | None = None,
    warmup: int = 2,
    repeats: int = 10,
    rounds: int = 3,
    seed: int = 0,
) -> dict[str, Timing]:
    """Time the matrix products of one layer alone: float32 ``nn.Linear`` vs torch's dynamic INT8 kernels.

    The model-level INT8 speed-up cannot exceed the speed-up of its matrix products (everything else — attention
    scores, norms, activations — stays float32 on both sides), so ``fp32 / torch INT8`` here is its ceiling.

    Args:
        shapes: ``(in_features, out_features)`` of the layers, each applied to its own input ``(1, tokens, in)``.
        tokens: rows per product (50 = one 224-px image through ViT-B/32).
        plain_int8: optionally ``plain_int8(x (tokens, in), w_q int8 (out, in), w_scale (out,), bias (out,))``
            — a from-scratch INT8 linear in plain PyTorch — timed on the same layers (``"plain PyTorch INT8"``).
        warmup, repeats, rounds: see :func:`compare_latency` (median of ``repeats`` after ``warmup``, best round).
        seed: the random weights and inputs (speed does not depend on the values).
    Returns:
        ``{"fp32": Timing, "torch INT8": Timing[, "plain PyTorch INT8": Timing]}``, seconds per pass over all layers.
    """
    from mmcourse.quantization import quantize_dynamic, quantize_symmetric
    from mmcourse.train import seeded

    shapes = [tuple(shape) for shape in shapes]
    if not shapes or not all(len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape)
                             for shape in shapes):
        raise ValueError(f"shapes must be a non-empty list of (in_features, out_features), got {shapes!r}")
    check_positive(tokens, "tokens", integer=True)
    with seeded(seed):
        layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in shapes).eval()
        inputs = [torch.randn(1, tokens, n_in) for n_in, _ in shapes]
    int8_layers = quantize_dynamic(layers)

    def run(modules):
        return lambda: [layer(x) for layer, x in zip(modules, inputs)]

    fns = {"fp32": run(layers), "torch INT8": run(int8_layers)}
    if plain_int8 is not None:
        packed = [(*quantize_symmetric(layer.weight.detach(), 8, "per_channel"), layer.bias.detach())
                  for layer in layers]
        fns["plain PyTorch INT8"] = lambda: [plain_int8(x[0], *p) for p, x in zip(packed, inputs)]
    return compare_latency(fns, warmup=warmup, repeats=repeats, rounds=rounds)


def matmul_speedup_in_fresh_process(unset: Sequence[str] = ("MKL_CBWR",), **kwargs) -> dict[str, float]:
    """:func:`matmul_speedup` in a fresh Python process whose environment lacks the variables ``unset``.

    Libraries such as MKL read their settings once, when they load, so measuring without a pin needs a new
    process. Everything else is as here: the other environment variables, the number of threads, and torch's
    deterministic mode (``mmcourse.setup`` turns it on; it fills new tensors, which costs time in small products).
    ``kwargs`` go to :func:`matmul_speedup` (not ``plain_int8``).
    Returns:
        ``{name: median seconds}`` as :func:`matmul_speedup` measured them there.
    """
    if isinstance(unset, str) or not all(isinstance(name, str) for name in unset):
        raise TypeError(f"unset must be a list of environment variable names, got {unset!r}")
    if "plain_int8" in kwargs:
        raise ValueError("plain_int8 cannot be sent to another process")
    env = {name: value for name, value in os.environ.items() if name not in set(unset)}
    settings = {"kwargs": kwargs, "threads": torch.get_num_threads(),
                "deterministic": torch.are_deterministic_algorithms_enabled()}
    code = "from mmcourse.labs.ch08_quantization import _fresh_process_main; _fresh_process_main()"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(settings)], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the fresh process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fresh_process_main() -> None:
    """The fresh process's side of :func:`matmul_speedup_in_fresh_process`: settings from argv, medians to stdout."""
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings["threads"])
    if settings["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    kwargs = settings["kwargs"]
    if "shapes" in kwargs:
        kwargs["shapes"] = [tuple(shape) for shape in kwargs["shapes"]]
    print(json.dumps({name: t.median for name, t in matmul_speedup(**kwargs).items()}))


def speedup_text(reference_seconds: float, seconds: float) -> str:
    """``reference / seconds`` as ``"2.31x faster"`` (>= 1) or ``"1.20x slower"`` (< 1)."""
    check_positive(reference_seconds, "reference_seconds")
    check_positive(seconds, "seconds")
    ratio = reference_seconds / seconds
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
