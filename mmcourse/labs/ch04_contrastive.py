"""Chapter 4's experiments (article §4.1): the softmax temperature, and what TinyCLIP does not learn.

* Temperature — :func:`scaled_softmax`, :func:`negative_weights` (how the push is shared among the negatives),
  :func:`effective_negatives`, :func:`temperature_sweep`, and their figures (:func:`show_softmax_temperatures`,
  :func:`show_temperature`, :func:`show_temperature_sweep`).
* Prompts — :func:`zero_shot_template_accuracies`: zero-shot accuracy of each template alone and of the ensemble.
* Training curves — :func:`show_training` (loss and learnt temperature per step) and
  :func:`show_template_accuracies` (zero-shot accuracy of each template during training), from the log of the
  chapter's visible training loop.
* The bag-of-words effect — :func:`negative_caption_test` (does an image prefer its caption to a hard negative of
  each kind of :data:`RELATIONAL_NEGATIVE_KINDS`?) and :func:`relational_retrieval` (two-object captions).

Training TinyCLIP on ShapesWorld is shared with other chapters: :mod:`mmcourse.labs.common`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.labs.common import SHAPES_TEMPLATES, _color_shape_task, same_words
from mmcourse.models.clip import TinyCLIP
from mmcourse.objectives.contrastive import clip_loss
from mmcourse.retrieval import (
    encode_images,
    encode_texts,
    recall_at_k,
    zero_shot_accuracy,
    zero_shot_classifier,
)

__all__ = [
    "zero_shot_template_accuracies", "RELATIONAL_NEGATIVE_KINDS", "negative_caption_test", "relational_retrieval",
    "scaled_softmax", "negative_weights", "effective_negatives", "temperature_sweep", "show_softmax_temperatures",
    "show_temperature", "show_temperature_sweep", "show_training", "show_template_accuracies",
]


@torch.no_grad()
def zero_shot_template_accuracies(
    model: TinyCLIP,
    world,
    tokenizer,
    indices: Sequence[int] | None = None,
    templates: Sequence[str] = SHAPES_TEMPLATES,
    max_len: int = 16,
) -> dict[str, float]:
    """Zero-shot colour+shape accuracy of each prompt template alone, and of their ensemble.

    Same task as :func:`zero_shot_color_shape_accuracy` (the images are embedded once).

    Returns:
        ``{template: accuracy, ..., "ensemble": accuracy}`` in the order of ``templates``.
    """
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError(f"templates must be a non-empty list of strings with '{{}}', got {templates!r}")
    classnames, features, labels = _color_shape_task(model, world, indices)
    out = {}
    for template in templates:
        classifier = zero_shot_classifier(model, tokenizer, classnames, (template,), max_len=max_len)
        out[template] = zero_shot_accuracy(features, classifier, labels)
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, max_len=max_len)
    out["ensemble"] = zero_shot_accuracy(features, classifier, labels)
    return out


RELATIONAL_NEGATIVE_KINDS: tuple[str, ...] = (
    "swap_objects",
    "swap_colors",
    "swap_relation",
    "replace_relation",
    "replace_color",
    "replace_shape",
)
"""Hard-negative caption kinds of a two-object scene (see ``mmcourse.data.NEGATIVE_KINDS``): the first two use
exactly the words of the true caption in another order, the others change a word."""


@torch.no_grad()
def negative_caption_test(
    model: TinyCLIP,
    world,
    tokenizer,
    indices: Sequence[int] | None = None,
    kinds: Sequence[str] = RELATIONAL_NEGATIVE_KINDS,
    max_len: int = 16,
) -> dict[str, dict[str, float]]:
    """Does each image prefer its own caption to a hard-negative caption of a given kind?

    For every scene of ``indices`` where the kind is possible, compare ``cos(image, caption)`` with
    ``cos(image, negative)`` (e.g. "a red circle left of a blue square" against its ``swap_objects`` negative
    "a blue square left of a red circle"). A tie counts as a failure.

    Args:
        indices: scenes to test (default: every scene).
        kinds: names from ``mmcourse.data.NEGATIVE_KINDS``.
    Returns:
        ``{kind: {"accuracy", "caption_similarity", "negative_similarity", "text_similarity", "same_words",
        "count"}}``: the share of images that prefer their caption, the mean image–caption and image–negative
        cosines, the mean cosine between the caption and the negative *text* embeddings, the share of pairs made
        of the same words (:func:`same_words`) and the number of scenes tested. Kinds impossible for every scene
        are left out.
    """
    from mmcourse.data import NEGATIVE_KINDS

    if isinstance(kinds, str) or len(kinds) == 0:
        raise ValueError(f"kinds must be a non-empty list of names from {list(NEGATIVE_KINDS)}, got {kinds!r}")
    for kind in kinds:
        check_choice(kind, "kinds", NEGATIVE_KINDS)
    indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise ValueError("indices must select at least one scene")
    out = {}
    for kind in kinds:
        chosen = [i for i in indices if world.negative(i, kind) is not None]
        if not chosen:
            continue
        captions = [world.captions[i] for i in chosen]
        negatives = [world.negative(i, kind) for i in chosen]
        images = encode_images(model, world.images[torch.tensor(chosen)])
        caption_embeds = encode_texts(model, tokenizer, captions, max_len=max_len)
        negative_embeds = encode_texts(model, tokenizer, negatives, max_len=max_len)
        caption_similarity = (images * caption_embeds).sum(-1)
        negative_similarity = (images * negative_embeds).sum(-1)
        out[kind] = {
            "accuracy": float((caption_similarity > negative_similarity).float().mean()),
            "caption_similarity": float(caption_similarity.mean()),
            "negative_similarity": float(negative_similarity.mean()),
            "text_similarity": float((caption_embeds * negative_embeds).sum(-1).mean()),
            "same_words": sum(same_words(c, n) for c, n in zip(captions, negatives, strict=True)) / len(chosen),
            "count": len(chosen),
        }
    return out


@torch.no_grad()
def relational_retrieval(
    model: TinyCLIP,
    world,
    tokenizer,
    indices: Sequence[int] | None = None,
    ks: Sequence[int] = (1,),
    max_len: int = 16,
) -> dict[str, float]:
    """Text→image retrieval where only the *relation* tells the right picture from a wrong one.

    From the two-object scenes of ``indices`` we keep one scene per pair of (different) objects, and add its
    mirror image (:func:`mmcourse.data.twins.counterfactual_twins`, ``"swap_relation"``: "a red circle left of a blue
    square" becomes "... right of ..."). So the two objects of every caption appear in exactly two gallery images,
    the scene and its mirror image, and only the arrangement separates them. Every caption queries the gallery;
    an image is correct when it shows the stated fact (:func:`mmcourse.labs.common.fact_key`).

    Returns:
        ``{"t2i_R@k": ..., "t2i_objects_R@k": ..., "relation_chance_R@1": ..., "queries": Q}``:
        ``objects`` counts an image as correct when it holds the two named objects (in either arrangement);
        ``relation_chance_R@1 = t2i_objects_R@1 / 2`` is what a model that finds the objects but ignores their
        arrangement scores.
    """
    from mmcourse.data.twins import counterfactual_twins
    from mmcourse.labs.common import fact_key, mentioned_objects

    indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
    chosen, seen = [], set()
    for i in indices:
        if int(world.num_objects[i]) != 2:
            continue
        objects = tuple(sorted(mentioned_objects(world.captions[i])))
        if len(set(objects)) == 2 and objects not in seen:
            seen.add(objects)
            chosen.append(i)
    if not chosen:
        raise ValueError("indices must hold at least one two-object scene with two different objects")
    twins = counterfactual_twins(world, chosen, ("swap_relation",))
    images = torch.cat([world.images[torch.tensor(chosen)], twins["images"]])
    captions = [world.captions[i] for i in chosen] + list(twins["captions"])
    facts = [fact_key(c) for c in captions]
    fact_ids = torch.tensor([{f: j for j, f in enumerate(dict.fromkeys(facts))}[f] for f in facts])
    scene_ids = torch.arange(len(chosen)).repeat(2)  # the scene and its mirror image share the objects
    fact_positives = fact_ids[:, None] == fact_ids[None, :]  # (Q, G): query caption q, gallery image g
    object_positives = scene_ids[:, None] == scene_ids[None, :]
    similarity = (encode_texts(model, tokenizer, captions, max_len=max_len) @ encode_images(model, images).t()).cpu()
    out = {f"t2i_R@{k}": v for k, v in recall_at_k(similarity, fact_positives, tuple(ks)).items()}
    out |= {f"t2i_objects_R@{k}": v for k, v in recall_at_k(similarity, object_positives, tuple(ks)).items()}
    out["relation_chance_R@1"] = out.get("t2i_objects_R@1", recall_at_k(similarity, object_positives, 1)[1]) / 2
    out["queries"] = len(captions)
    return out


def _check_square(similarity, name: str = "similarity") -> None:
    check_tensor(similarity, name, ndim=2, floating=True, finite=True)
    if similarity.size(0) != similarity.size(1) or similarity.size(0) < 2:
        raise ValueError(f"{name} must be a square (N, N) matrix with N >= 2, got shape {tuple(similarity.shape)}")


def scaled_softmax(similarity: torch.Tensor, temperature: float, direction: str = "image_to_text") -> torch.Tensor:
    """``softmax(similarity / τ)``: each image's distribution over the texts, or each text's over the images.

    Args:
        similarity: ``(N_img, N_txt)`` cosine similarities (any 2-D matrix).
        temperature: ``τ > 0``.
        direction: ``"image_to_text"`` (rows sum to 1) or ``"text_to_image"`` (columns sum to 1).
    Returns:
        ``(N_img, N_txt)`` probabilities.
    """
    check_tensor(similarity, "similarity", ndim=2, floating=True, finite=True)
    check_positive(temperature, "temperature")
    check_choice(direction, "direction", ("image_to_text", "text_to_image"))
    return (similarity / temperature).softmax(dim=1 if direction == "image_to_text" else 0)


def negative_weights(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each image's push on its negative texts, as shares that sum to 1 over the negatives.

    For the image→text cross-entropy ``L_i = −log softmax(S_i / τ)_i``, ``∂L_i/∂S_ij = p_ij / τ`` for ``j ≠ i``:
    the negatives are pushed away in proportion to their softmax probability. Renormalised over ``j ≠ i`` those
    are the shares returned here.

    Args:
        similarity: ``(N, N)``, diagonal = matching pairs.
        temperature: ``τ > 0``.
    Returns:
        ``(N, N)`` with a zero diagonal and rows summing to 1.
    """
    _check_square(similarity)
    check_positive(temperature, "temperature")
    n = similarity.size(0)
    diagonal = torch.eye(n, dtype=torch.bool, device=similarity.device)
    logits = (similarity / temperature).masked_fill(diagonal, float("-inf"))
    return logits.softmax(dim=1)


def effective_negatives(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """How many negatives really share each image's push: ``exp(entropy)`` of :func:`negative_weights` rows.

    Returns:
        ``(N,)`` values in ``[1, N − 1]``: ``N − 1`` when all negatives are pushed equally (high ``τ``), close to
        1 when only the hardest negative is (low ``τ``).
    """
    weights = negative_weights(similarity, temperature)
    entropy = -(weights * torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))).sum(dim=1)
    return entropy.exp()


def temperature_sweep(similarity: torch.Tensor, temperatures: Sequence[float]) -> dict[str, list[float]]:
    """The symmetric contrastive loss of one similarity matrix at several temperatures, and what comes with it.

    ``loss`` is ``clip_loss(S / τ)`` — exactly the article's ``contrastive_loss`` of the features that gave ``S``.

    Args:
        similarity: ``(N, N)`` cosine similarities, diagonal = matching pairs.
        temperatures: the ``τ`` values (each > 0).
    Returns:
        ``{"temperature", "loss", "positive_probability" (mean image→text probability of the matching text),
        "gradient_norm" (Frobenius norm of ∂loss/∂S), "effective_negatives" (mean of :func:`effective_negatives`)}``,
        one list entry per temperature.
    """
    _check_square(similarity)
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence) or not temperatures:
        raise ValueError(f"temperatures must be a non-empty sequence of positive numbers, got {temperatures!r}")
    for t in temperatures:
        check_positive(t, "temperatures[...]")
    out: dict[str, list[float]] = {
        k: [] for k in ("temperature", "loss", "positive_probability", "gradient_norm", "effective_negatives")
    }
    base = similarity.detach().double()  # float64: low temperatures give logits in the hundreds
    for t in temperatures:
        s = base.clone().requires_grad_(True)
        loss = clip_loss(s / t)
        (gradient,) = torch.autograd.grad(loss, s)
        out["temperature"].append(float(t))
        out["loss"].append(float(loss.detach()))
        out["positive_probability"].append(float(scaled_softmax(base, t).diagonal().mean()))
        out["gradient_norm"].append(float(gradient.norm()))
        out["effective_negatives"].append(float(effective_negatives(base, t).mean()))
    return out


# ------------------------------------------------------------------------------------------------------ figures
def _check_labels(labels, n: int, name: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    if isinstance(labels, str) or len(labels) != n:
        raise ValueError(f"{name} must hold one string per row/column ({n}), got {labels!r}")
    return [str(x) for x in labels]


def _heatmap(ax, probabilities: torch.Tensor, row_labels, col_labels, title: str, annotate: bool) -> object:
    values = probabilities.detach().cpu().float().numpy()
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    if annotate:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if values[i, j] > 0.6 else "white",
                )
    return image


def show_softmax_temperatures(
    similarity: torch.Tensor,
    temperatures: Sequence[float],
    image_labels: Sequence[str] | None = None,
    text_labels: Sequence[str] | None = None,
    annotate: bool = True,
):
    """The cosine similarities and their image→text softmax at each temperature, side by side.

    Args:
        similarity: ``(N_img, N_txt)``; temperatures: one panel each; labels: tick labels of rows / columns.
    Returns:
        a matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    check_tensor(similarity, "similarity", ndim=2, floating=True, finite=True)
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence) or not temperatures:
        raise ValueError(f"temperatures must be a non-empty sequence of positive numbers, got {temperatures!r}")
    rows = _check_labels(image_labels, similarity.size(0), "image_labels")
    cols = _check_labels(text_labels, similarity.size(1), "text_labels")
    panels = len(temperatures) + 1
    fig, axes = plt.subplots(1, panels, figsize=(2.9 * panels, 3.6), constrained_layout=True)
    values = similarity.detach().cpu().float().numpy()
    image = axes[0].imshow(values, cmap="magma", vmin=min(0.0, float(values.min())), vmax=1.0)
    axes[0].set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    axes[0].set_yticks(range(len(rows)), rows, fontsize=8)
    axes[0].set_title("cosine similarity", fontsize=10)
    fig.colorbar(image, ax=axes[0], shrink=0.7)
    for ax, t in zip(axes[1:], temperatures, strict=True):
        probabilities = scaled_softmax(similarity, t)
        last = _heatmap(ax, probabilities, rows, cols, f"softmax, temperature {t:g}", annotate)
        ax.set_yticklabels([])
    fig.colorbar(last, ax=axes[1:], shrink=0.7, label="probability (rows sum to 1)")
    fig.supxlabel("text (caption)", fontsize=9)
    fig.supylabel("image", fontsize=9)
    return fig


def show_temperature(
    similarity: torch.Tensor,
    temperature: float,
    row: int = 0,
    image_labels: Sequence[str] | None = None,
    text_labels: Sequence[str] | None = None,
):
    """One temperature: the image→text softmax matrix, and one image's distribution over the texts as bars.

    The title reports the loss (``clip_loss(S / τ)``) and the effective number of negatives at this ``τ``.
    """
    import matplotlib.pyplot as plt

    _check_square(similarity)
    check_positive(temperature, "temperature")
    n = similarity.size(0)
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < n:
        raise ValueError(f"row must be an int in [0, {n}), got {row!r}")
    rows = _check_labels(image_labels, n, "image_labels")
    cols = _check_labels(text_labels, n, "text_labels")
    probabilities = scaled_softmax(similarity, temperature)
    loss = float(clip_loss(similarity.double() / temperature))
    spread = float(effective_negatives(similarity, temperature).mean())
    fig, (ax_matrix, ax_bars) = plt.subplots(1, 2, figsize=(9.5, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    _heatmap(ax_matrix, probabilities, rows, cols, "softmax(similarity / temperature)", annotate=True)
    ax_matrix.add_patch(plt.Rectangle((-0.5, row - 0.5), n, 1, fill=False, edgecolor="red", lw=2))
    values = probabilities[row].detach().cpu().float().numpy()
    colors = ["tab:green" if j == row else "tab:gray" for j in range(n)]
    ax_bars.bar(range(n), values, color=colors)
    ax_bars.set_xticks(range(n), cols, rotation=60, ha="right", fontsize=8)
    ax_bars.set_ylim(0, 1)
    ax_bars.set_ylabel("probability")
    ax_bars.set_title(f"image '{rows[row]}': which caption? (green = its own)", fontsize=10)
    fig.suptitle(
        f"temperature {temperature:.3g} (logit scale {1 / temperature:.1f}): loss {loss:.3f}, "
        f"effective negatives {spread:.1f} of {n - 1}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def show_temperature_sweep(sweeps: dict[str, dict[str, list[float]]], mark: float | None = None):
    """Loss, gradient norm and effective negatives against the temperature (log axis), one line per sweep.

    Args:
        sweeps: ``name → temperature_sweep(...)`` result.
        mark: a temperature to mark with a vertical line (e.g. CLIP's 0.07).
    """
    import matplotlib.pyplot as plt

    if not isinstance(sweeps, dict) or not sweeps:
        raise ValueError(f"sweeps must be a non-empty dict name -> temperature_sweep result, got {sweeps!r}")
    panels = (
        ("loss", "loss"),
        ("gradient_norm", "gradient norm |dL/dS|"),
        ("effective_negatives", "effective negatives"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    for name, sweep in sweeps.items():
        for ax, (key, _) in zip(axes, panels, strict=True):
            ax.plot(sweep["temperature"], sweep[key], marker="o", ms=3, label=name)
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("temperature")
        ax.set_ylabel(label)
        if key != "loss":
            ax.set_yscale("log")
        if mark is not None and math.isfinite(mark):
            ax.axvline(mark, color="gray", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    return fig


def _smoothed(values: Sequence[float], window: int) -> list[float]:
    """Running mean over the last ``window`` values."""
    return [sum(values[max(0, i + 1 - window) : i + 1]) / min(i + 1, window) for i in range(len(values))]


def show_training(log: dict, floor: float | None = None, window: int = 20):
    """The chapter's training log: loss per step (and its running mean), and the temperature ``1 / logit scale``.

    Args:
        log: ``{"loss": [...], "logit_scale": [...]}``, one value per step (the notebook's ``train_clip`` log).
        floor: a loss level to draw as a dashed line (the false-negative floor).
        window: the running mean's window.
    """
    import matplotlib.pyplot as plt

    if not isinstance(log, dict) or not log.get("loss") or len(log.get("logit_scale", [])) != len(log["loss"]):
        raise ValueError("log must hold equally long, non-empty lists 'loss' and 'logit_scale'")
    check_positive(window, "window", integer=True)
    steps = range(1, len(log["loss"]) + 1)
    fig, (ax_loss, ax_scale) = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    ax_loss.plot(steps, log["loss"], lw=0.8, alpha=0.5, label="loss per step")
    ax_loss.plot(steps, _smoothed(log["loss"], window), lw=2, label=f"mean of {window} steps")
    if floor is not None:
        ax_loss.axhline(floor, color="gray", ls="--", lw=1, label="false-negative floor")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("contrastive loss")
    ax_loss.set_title("TinyCLIP: symmetric InfoNCE loss")
    ax_loss.legend(fontsize=8)
    ax_scale.plot(steps, [1 / s for s in log["logit_scale"]])
    ax_scale.set_xlabel("training step")
    ax_scale.set_ylabel("temperature = 1 / logit scale")
    ax_scale.set_title("The learnt temperature")
    return fig


def show_template_accuracies(evaluations: dict[int, dict[str, float]], chance: float | None = None):
    """Zero-shot accuracy of each prompt template and of their ensemble at each evaluated step.

    Args:
        evaluations: ``{step: {template: accuracy, ..., "ensemble": accuracy}}``.
        chance: drawn as a dashed line.
    """
    import matplotlib.pyplot as plt

    if not isinstance(evaluations, dict) or not evaluations:
        raise ValueError("evaluations must be a non-empty dict step -> {template: accuracy}")
    steps = sorted(evaluations)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for name in evaluations[steps[0]]:
        style = dict(lw=2.5, color="black") if name == "ensemble" else dict(lw=1, alpha=0.8)
        label = name if name == "ensemble" else repr(name)
        ax.plot(steps, [evaluations[s][name] for s in steps], marker="o", ms=3, label=label, **style)
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("training step")
    ax.set_ylabel("zero-shot accuracy")
    ax.set_title("Zero-shot colour + shape: single templates and their ensemble")
    ax.legend(fontsize=8)
    return fig
