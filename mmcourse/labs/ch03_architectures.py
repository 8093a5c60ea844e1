"""A relational task to compare fusion architectures: "is the red circle left of the blue square?" (chapter 3).

Article §3.1–3.2 say that cross-modal attention lets one modality look for the relevant parts of the other.
Chapter 3 tests that claim on a question that needs exactly this: to decide whether *the red circle* is left of
*the blue square*, a model has to find both objects named in the text and compare where they are.

* :func:`left_of_questions` — yes/no questions from two-object ShapesWorld scenes whose objects sit side by side
  and have different colours; each scene gives one "yes" question (left object named first) and one "no" question
  (the same two objects, swapped), so the answer depends on the image *and* on the word order, never on one alone.
* :class:`PatchStatsEncoder` — the image tokens every model gets: each ``patch × patch`` square is described by
  the colour of the object pixels in it, how much of it they cover and where the patch is, then embedded by a
  small MLP. Tokens never mix patches, so a cross-attention weight on a token *is* attention to that image square
  (faithful heat-maps), and the vision problem is made easy on purpose: the models differ only in how they fuse.
* :func:`build_fusion_model`, :func:`fusion_loss`, :func:`train_fusion` — the three fusion classifiers of
  :mod:`mmcourse.models.fusion` on these tokens and a small text transformer, trained for a fixed number of steps
  (the chapter shows the forwards and the loss as code; ``tests/test_ch03_lesson.py`` checks they agree);
* :func:`fusion_seed_sweep`, :func:`plot_fusion_curves` — the comparison over several seeds at matched sizes, and its
  learning curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.data.language import relation
from mmcourse.data.render import BACKGROUND
from mmcourse.labs.common import classifier_accuracy
from mmcourse.models.fusion import (
    CrossAttentionFusionClassifier,
    EarlyFusionClassifier,
    LateFusionClassifier,
)
from mmcourse.nn.encoders import EncoderOutput, TextTransformer
from mmcourse.train import History, evaluating, fit, module_device, seeded

__all__ = [
    "FUSION_KINDS", "left_of_questions", "PatchStatsEncoder", "build_fusion_model", "fusion_loss", "train_fusion",
    "fusion_accuracy", "parameter_count", "fusion_seed_sweep", "plot_fusion_curves", "patch_heatmaps",
    "word_patch_attention", "upsample_heatmap", "attention_mass", "show_word_attention",
]

_MODEL_INPUTS = ("images", "input_ids", "attention_mask", "labels")

FUSION_KINDS: tuple[str, ...] = ("late", "early", "cross")
"""Decision-level (late), feature-level (early) and cross-attention fusion, see :mod:`mmcourse.models.fusion`."""


def left_of_questions(world, tokenizer, indices: Sequence[int] | None = None, max_len: int = 12) -> dict:
    """Yes/no questions "is the <colour> <shape> left of the <colour> <shape>?" about two-object scenes.

    A scene is used when it holds exactly two objects of different colours whose relation is horizontal
    (``"left of"`` / ``"right of"`` in :func:`mmcourse.data.relation`). It gives two questions, in this order: the
    left object named first (answer yes = 1) and the right object named first (answer no = 0).

    Args:
        world: a ``ShapesWorld``; tokenizer: its :class:`mmcourse.data.Tokenizer`.
        indices: scenes to draw from (default: all).
        max_len: token length of the questions.
    Returns:
        dict with ``images`` ``(Q, 3, H, W)``, ``input_ids`` / ``attention_mask`` ``(Q, max_len)``, ``labels``
        ``(Q,)`` (1 = yes), ``scene_ids`` ``(Q,)``, ``questions`` (list of ``Q`` str) and ``objects`` ``(Q, 2)``,
        the world's object slot named first and second in each question.
    """
    indices = range(len(world)) if indices is None else [int(i) for i in indices]
    questions, labels, scenes, slots = [], [], [], []
    for i in indices:
        objects = world.objects(i)
        if len(objects) != 2 or objects[0]["color"] == objects[1]["color"]:
            continue
        if relation(objects[0], objects[1]) not in ("left of", "right of"):
            continue
        left = 0 if objects[0]["x"] < objects[1]["x"] else 1
        for first, second, answer in ((left, 1 - left, 1), (1 - left, left, 0)):
            a, b = objects[first], objects[second]
            questions.append(f"is the {a['color']} {a['shape']} left of the {b['color']} {b['shape']}?")
            labels.append(answer)
            scenes.append(i)
            slots.append((first, second))
    if not questions:
        raise ValueError("no scene qualifies: left_of_questions needs two-object scenes (min_objects=2) with "
                         "different colours side by side")
    input_ids, attention_mask = tokenizer.encode(questions, max_len=max_len)
    scene_ids = torch.tensor(scenes)
    return {
        "images": world.images[scene_ids],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor(labels),
        "scene_ids": scene_ids,
        "questions": questions,
        "objects": torch.tensor(slots),
    }


class PatchStatsEncoder(nn.Module):
    """Image tokens from simple per-patch statistics: object colour, coverage and position → MLP.

    For each ``patch_size × patch_size`` square (row-major over the grid): the mean RGB of its *object* pixels
    (those differing from the background grey by more than ``threshold``, summed over channels; zeros if none),
    the fraction of its pixels that are object pixels, and the patch centre ``(x, y)`` in ``[-1, 1]``. These six
    numbers go through ``Linear(6, dim) → GELU → Linear(dim, dim)``, patch by patch.

    Args:
        image_size: side ``S`` of the (square) images; patch_size: side of a patch (divides ``S``).
        dim: token width ``D``; threshold: object-pixel threshold; background: the canvas grey level.

    ``forward(images (B, 3, S, S)) → EncoderOutput(tokens (B, N, D), pooled (B, D) = mean of tokens)`` with
    ``N = (S / patch_size)²``; ``.grid_size`` is ``S / patch_size``.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 64,
        threshold: float = 0.1,
        background: float = BACKGROUND,
    ):
        super().__init__()
        check_positive(image_size, "image_size", integer=True)
        check_positive(patch_size, "patch_size", integer=True)
        check_positive(dim, "dim", integer=True)
        check_positive(threshold, "threshold")
        if image_size % patch_size != 0:
            raise ValueError(
                f"image_size must be divisible by patch_size, got image_size={image_size}, patch_size={patch_size}"
            )
        self.image_size, self.patch_size, self.dim = image_size, patch_size, dim
        self.threshold, self.background = float(threshold), float(background)
        self.grid_size = image_size // patch_size
        centres = (torch.arange(self.grid_size, dtype=torch.float32) + 0.5) / self.grid_size * 2 - 1
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("coords", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(6, dim), nn.GELU(), nn.Linear(dim, dim))

    def patch_statistics(self, images: torch.Tensor) -> torch.Tensor:
        """The six numbers per patch: ``(B, 3, S, S) → (B, N, 6)`` = object RGB, coverage, x, y."""
        check_tensor(images, "images", ndim=4, floating=True)
        if images.size(1) != 3 or tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"images must have shape (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}"
            )
        b, p, g = images.size(0), self.patch_size, self.grid_size
        patches = images.unfold(2, p, p).unfold(3, p, p).reshape(b, 3, g * g, p * p)  # (B, 3, N, P)
        is_object = ((patches - self.background).abs().sum(dim=1, keepdim=True) > self.threshold).to(images.dtype)
        coverage = is_object.mean(dim=-1)  # (B, 1, N)
        color = (patches * is_object).sum(dim=-1) / is_object.sum(dim=-1).clamp_min(1.0)  # (B, 3, N)
        coords = self.coords.to(images.dtype).t().expand(b, -1, -1)  # (B, 2, N)
        return torch.cat([color, coverage, coords], dim=1).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        tokens = self.mlp(self.patch_statistics(images))
        return EncoderOutput(tokens, tokens.mean(dim=1))


def build_fusion_model(
    kind: str,
    vocab_size: int,
    *,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 64,
    text_depth: int = 1,
    fusion_depth: int = 2,
    num_heads: int = 4,
    max_len: int = 12,
    num_classes: int = 2,
    hidden_dim: int = 128,
    seed: int = 0,
) -> nn.Module:
    """A fusion classifier of ``kind`` (``"late"``, ``"early"`` or ``"cross"``) on :class:`PatchStatsEncoder`
    tokens and a :class:`mmcourse.nn.encoders.TextTransformer` (``text_depth`` layers, width ``dim``).

    ``"cross"`` is a :class:`mmcourse.models.fusion.CrossAttentionFusionClassifier` with ``fusion_depth`` layers (two:
    the first lets each word find its object, the second lets ``[CLS]`` compare what the words found).
    ``hidden_dim`` is the width of the early/late fusion MLP heads (raise it to match the cross model's size).
    ``seed`` seeds the initial weights, so a model does not depend on the random state left by earlier code.
    """
    check_choice(kind, "kind", FUSION_KINDS)
    with seeded(seed):
        image_encoder = PatchStatsEncoder(image_size, patch_size, dim)
        text_encoder = TextTransformer(vocab_size, dim, text_depth, num_heads, max_len=max_len)
        if kind == "late":
            return LateFusionClassifier(image_encoder, text_encoder, num_classes, hidden_dim=hidden_dim)
        if kind == "early":
            return EarlyFusionClassifier(image_encoder, text_encoder, num_classes, hidden_dim=hidden_dim)
        return CrossAttentionFusionClassifier(image_encoder, text_encoder, num_classes, depth=fusion_depth,
                                              num_heads=num_heads)


def fusion_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """One training step's loss: cross-entropy of ``model(images, input_ids, attention_mask)`` against ``labels``."""
    logits = model(batch["images"], batch["input_ids"], batch["attention_mask"])  # (B, num_classes)
    return F.cross_entropy(logits, batch["labels"])


def train_fusion(
    model: nn.Module,
    data: dict,
    *,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_steps: int = 20,
    seed: int = 0,
    eval_fn=None,
    eval_every: int | None = None,
    device: torch.device | str | None = None,
) -> History:
    """Train a classifier ``model(images, input_ids, attention_mask) → logits`` on ``data`` with cross-entropy.

    Args:
        data: dict with ``images``, ``input_ids``, ``attention_mask`` and ``labels`` (other keys are ignored).
        steps, batch_size, lr, warmup_steps, seed, eval_fn, eval_every, device: see :func:`mmcourse.train.fit`
            (AdamW, warm-up + cosine learning rate).
    Returns:
        the :class:`mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    tensors = _model_inputs(data)
    history = fit(model, fusion_loss, tensors, steps=steps, batch_size=batch_size, lr=lr, lr_schedule="cosine",
                  warmup_steps=warmup_steps, seed=seed, eval_fn=eval_fn, eval_every=eval_every, device=device)
    model.eval()
    return history


def _model_inputs(data: dict) -> dict:
    missing = [k for k in _MODEL_INPUTS if k not in data]
    if missing:
        raise ValueError(f"data must contain {list(_MODEL_INPUTS)}, missing {missing}")
    return {k: data[k] for k in _MODEL_INPUTS}


def fusion_accuracy(model: nn.Module, data: dict) -> float:
    """Fraction of ``data["labels"]`` the classifier predicts (eval mode; other keys of ``data`` are ignored)."""
    return classifier_accuracy(model, _model_inputs(data))


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def fusion_seed_sweep(
    train: dict,
    test: dict,
    vocab_size: int,
    *,
    kinds: Sequence[str] = FUSION_KINDS,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 400,
    hidden_dims: dict | None = None,
    eval_every: int = 50,
    device: torch.device | str | None = None,
    **build_kwargs,
) -> dict:
    """Train every fusion ``kind`` once per seed (the seed sets both the initial weights and the batch order).

    Args:
        train, test: question sets from :func:`left_of_questions`; vocab_size: the tokenizer's.
        hidden_dims: ``kind → hidden_dim`` of :func:`build_fusion_model` (to match the models' sizes).
        steps, eval_every, device: see :func:`train_fusion`; build_kwargs: passed to :func:`build_fusion_model`.
    Returns:
        dict with ``"accuracy"`` (``kind → [test accuracy per seed]``), ``"curves"`` (``kind → [History per
        seed]``, test accuracy every ``eval_every`` steps), ``"params"`` (``kind → parameter count``),
        ``"models"`` (``kind → [trained model per seed]``) and ``"seeds"``.
    """
    hidden_dims = hidden_dims or {}
    result: dict = {"accuracy": {}, "curves": {}, "params": {}, "models": {}, "seeds": list(seeds)}
    for kind in kinds:
        for seed in seeds:
            model = build_fusion_model(kind, vocab_size, hidden_dim=hidden_dims.get(kind, 128), seed=seed,
                                       **build_kwargs)
            history = train_fusion(model, train, steps=steps, seed=seed, eval_every=eval_every, device=device,
                                   eval_fn=lambda m: fusion_accuracy(m, test))
            result["params"][kind] = parameter_count(model)
            result["models"].setdefault(kind, []).append(model)
            result["curves"].setdefault(kind, []).append(history)
            result["accuracy"].setdefault(kind, []).append(history.last("eval"))  # after the last step
    return result


def plot_fusion_curves(sweep: dict, title: str = "Is the X left of the Y?", figsize=(9.5, 3.0)):
    """Test accuracy against training step, one panel per fusion kind, one line per seed (from
    :func:`fusion_seed_sweep`). Returns the Figure."""
    import matplotlib.pyplot as plt

    kinds = list(sweep["curves"])
    fig, axes = plt.subplots(1, len(kinds), figsize=figsize, sharey=True, squeeze=False)
    names = {"late": "late fusion", "early": "early fusion", "cross": "cross-attention fusion"}
    for ax, kind in zip(axes[0], kinds):
        for seed, history in zip(sweep["seeds"], sweep["curves"][kind]):
            ax.plot(history.eval_steps, history.eval_metrics["eval"], marker="o", ms=3, label=f"seed {seed}")
        ax.axhline(0.5, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{names.get(kind, kind)} ({sweep['params'][kind]:,} params)", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylim(0.4, 1.05)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def patch_heatmaps(weights: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """Cross-attention weights as heat-maps over a square grid of image tokens.

    Args:
        weights: ``(B, H, L, N)`` attention of ``L`` text tokens over ``N = g²`` image tokens (rows sum to 1, or to
            0 for a masked query).
        head: average over heads (``None``) or keep one head.
    Returns:
        ``(B, L, g, g)``.
    """
    check_tensor(weights, "weights", ndim=4, floating=True)
    n = weights.size(-1)
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"weights must attend over a square grid of image tokens, got N={n} (shape "
                         f"{tuple(weights.shape)})")
    if head is None:
        maps = weights.mean(dim=1)
    else:
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < weights.size(1):
            raise ValueError(f"head must be None or an int in [0, {weights.size(1)}), got {head!r}")
        maps = weights[:, head]
    return maps.reshape(maps.size(0), maps.size(1), grid, grid)


def word_patch_attention(
    model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    layer: int = 0, head: int | None = None,
) -> torch.Tensor:
    """Heat-maps ``(B, L, g, g)`` of fusion layer ``layer`` of a cross-attention fusion classifier (eval mode).

    Args:
        model: anything whose ``forward(images, input_ids, attention_mask, need_weights=True)`` returns
            ``(logits, [weights (B, H, L, N) per layer])``, e.g. :class:`mmcourse.models.fusion.
            CrossAttentionFusionClassifier`.
        layer: which fusion layer (negative indices count from the last).
        head: ``None`` = mean over heads.
    Returns:
        the heat-maps on the CPU (for plots), whatever device the model runs on; the inputs move to it.
    """
    device = module_device(model)
    images, input_ids = images.to(device), input_ids.to(device)
    attention_mask = attention_mask.to(device) if attention_mask is not None else None
    with evaluating(model):
        _, all_weights = model(images, input_ids, attention_mask, need_weights=True)
    if not -len(all_weights) <= layer < len(all_weights):
        raise ValueError(f"layer must be in [-{len(all_weights)}, {len(all_weights)}), got {layer}")
    return patch_heatmaps(all_weights[layer].cpu(), head)


def upsample_heatmap(heatmap: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of a ``(g, g)`` heat-map to ``(size, size)`` pixels (``g`` divides ``size``)."""
    check_tensor(heatmap, "heatmap", ndim=2, floating=True)
    grid = heatmap.size(0)
    if heatmap.size(1) != grid or size % grid != 0:
        raise ValueError(f"heatmap must be square (g, g) with g dividing size={size}, got {tuple(heatmap.shape)}")
    factor = size // grid
    return heatmap.repeat_interleave(factor, dim=0).repeat_interleave(factor, dim=1)


def attention_mass(heatmaps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of each heat-map's attention that falls inside a region of the image.

    Args:
        heatmaps: ``(B, g, g)`` attention over patches (each summing to 1).
        region: ``(B, S, S)`` pixel weights in ``[0, 1]`` (e.g. an object's coverage), ``g`` dividing ``S``; a
            patch counts as much as the mean of its pixels' weights.
    Returns:
        ``(B,)``: ``Σ_patches attention × patch share of the region``.
    """
    check_tensor(heatmaps, "heatmaps", ndim=3, floating=True)
    check_tensor(region, "region", ndim=3, floating=True)
    if heatmaps.size(0) != region.size(0):
        raise ValueError(f"heatmaps and region must have the same batch size, got {tuple(heatmaps.shape)} and "
                         f"{tuple(region.shape)}")
    grid, size = heatmaps.size(-1), region.size(-1)
    if size % grid != 0:
        raise ValueError(f"the heat-map grid {grid} must divide the region size {size}")
    patch = size // grid
    share = region.reshape(region.size(0), grid, patch, grid, patch).mean(dim=(2, 4))  # (B, g, g)
    return (heatmaps * share).sum(dim=(1, 2))


def show_word_attention(
    image: torch.Tensor,
    heatmaps: torch.Tensor,
    words: Sequence[str],
    positions: Sequence[int],
    *,
    title: str | None = None,
    alpha: float = 0.6,
    cell_size: float = 1.9,
):
    """The image, then the image overlaid with the heat-map of each chosen word.

    Args:
        image: ``(3, S, S)`` in ``[0, 1]``; heatmaps: ``(L, g, g)`` for every token of the text.
        words: the ``L`` tokens (for the panel titles); positions: which tokens to show.
        title: figure title; alpha: opacity of the heat-map; cell_size: inches per panel.
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    check_tensor(image, "image", ndim=3, floating=True)
    check_tensor(heatmaps, "heatmaps", ndim=3, floating=True)
    if len(words) != heatmaps.size(0):
        raise ValueError(f"words must name the {heatmaps.size(0)} tokens of heatmaps, got {len(words)} words")
    for p in positions:
        if not 0 <= p < heatmaps.size(0):
            raise ValueError(f"positions must index tokens in [0, {heatmaps.size(0)}), got {p}")
    picture = image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    size = image.size(-1)
    fig, axes = plt.subplots(1, 1 + len(positions), figsize=(cell_size * (1 + len(positions)), cell_size + 0.4),
                             squeeze=False)
    axes = axes[0]
    axes[0].imshow(picture, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, p in zip(axes[1:], positions):
        heat = upsample_heatmap(heatmaps[p].detach().cpu().float(), size).numpy()
        ax.imshow(picture * 0.5, interpolation="nearest")
        ax.imshow(heat, cmap="magma", alpha=alpha, vmin=0.0, vmax=max(float(heat.max()), 1e-6),
                  interpolation="nearest")
        ax.set_title(f'"{words[p]}"', fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
