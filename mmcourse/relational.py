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
* :func:`build_fusion_model`, :func:`train_fusion` — the three fusion classifiers of :mod:`mmcourse.fusion` on
  these tokens and a small text transformer, trained for a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.data.language import relation
from mmcourse.data.render import BACKGROUND
from mmcourse.encoders import EncoderOutput, TextTransformer
from mmcourse.fusion import (
    CrossAttentionFusionClassifier,
    EarlyFusionClassifier,
    LateFusionClassifier,
    classifier_accuracy,
)
from mmcourse.train import History, fit

__all__ = [
    "FUSION_KINDS",
    "left_of_questions",
    "PatchStatsEncoder",
    "build_fusion_model",
    "train_fusion",
    "fusion_accuracy",
]

_MODEL_INPUTS = ("images", "input_ids", "attention_mask", "labels")

FUSION_KINDS: tuple[str, ...] = ("late", "early", "cross")
"""Decision-level (late), feature-level (early) and cross-attention fusion, see :mod:`mmcourse.fusion`."""


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
    seed: int = 0,
) -> nn.Module:
    """A fusion classifier of ``kind`` (``"late"``, ``"early"`` or ``"cross"``) on :class:`PatchStatsEncoder`
    tokens and a :class:`mmcourse.encoders.TextTransformer` (``text_depth`` layers, width ``dim``).

    ``"cross"`` is a :class:`mmcourse.fusion.CrossAttentionFusionClassifier` with ``fusion_depth`` layers (two:
    the first lets each word find its object, the second lets ``[CLS]`` compare what the words found).
    ``seed`` seeds the initial weights, so a model does not depend on the random state left by earlier code.
    """
    check_choice(kind, "kind", FUSION_KINDS)
    torch.manual_seed(seed)
    image_encoder = PatchStatsEncoder(image_size, patch_size, dim)
    text_encoder = TextTransformer(vocab_size, dim, text_depth, num_heads, max_len=max_len)
    if kind == "late":
        return LateFusionClassifier(image_encoder, text_encoder, num_classes)
    if kind == "early":
        return EarlyFusionClassifier(image_encoder, text_encoder, num_classes)
    return CrossAttentionFusionClassifier(image_encoder, text_encoder, num_classes, depth=fusion_depth,
                                          num_heads=num_heads)


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

    def step(m, batch):
        logits = m(batch["images"], batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(logits, batch["labels"])

    history = fit(model, step, tensors, steps=steps, batch_size=batch_size, lr=lr, lr_schedule="cosine",
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
