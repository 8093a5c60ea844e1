"""Measuring a quantized model: bytes on disk, latency, and how close its outputs stay to float32 (chapter 8).

* :func:`~mmcourse.quantization.model_size_bytes` — the size ``torch.save(model.state_dict())`` writes (not
  ``numel × element_size``: a dynamically quantized Linear keeps its weight in packed params, outside ``parameters()``).
* :func:`measure_latency`, :func:`compare_latency` — warm-up, then medians (:func:`mmcourse.dev.timing.measure`);
  ``compare_latency`` interleaves the candidates over several rounds and keeps each one's best median, so a
  burst of load from another process hits all of them alike instead of one.
* :func:`feature_cosine`, :func:`compare_features` — cosine similarity of embeddings to the float32 model's.
* :func:`evaluate_zero_shot`, :func:`evaluate_retrieval` — task accuracy of TinyCLIP or an HF CLIP.
* :func:`compare_models` — all of the above as one table (a list of dict rows).
"""

from __future__ import annotations

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
]




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
