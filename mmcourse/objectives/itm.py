"""Image-text matching (ITM) with hard negatives — article §4.2, chapter 5.

ITM is a binary classifier on a *fused* image-text representation: does this caption describe this image?
Random negatives are too easy; ALBEF/BLIP instead draw, for every caption, a negative image with probability
``softmax(similarity)`` from the contrastive (ITC) scores — the images the model currently confuses with
the right one — and likewise a negative caption for every image. The positive itself, and any pair that
shows the same scene (``group_ids``), is never drawn.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmcourse._checks import check_positive, check_tensor, has_values

__all__ = ["sample_hard_negatives", "make_itm_pairs", "ITMHead", "itm_loss", "itm_accuracy"]


def sample_hard_negatives(
    similarity: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """For each row, draw one negative column with probability ``softmax(similarity[row])``.

    Args:
        similarity: ``(B, B)`` scores of row item ``i`` against column item ``j`` (e.g. text→image logits);
            the positive of row ``i`` is column ``i``.
        group_ids: optional ``(B,)`` scene/image ids; columns with the same id as the row are positives too
            and are never drawn (two captions of one scene in a batch are not a negative pair).
        generator: optional ``torch.Generator``. With ``similarity`` on the generator's device the draw is
            ``torch.multinomial``'s; with a CPU generator and ``similarity`` on an accelerator, uniform numbers are
            drawn on the CPU and the cumulative distribution is inverted on the accelerator, so the scores never
            travel back to the CPU (that read-back would stall the GPU at every step).
        eps: added to every probability *before* the positives are zeroed, so a row whose softmax puts all
            its mass on the positive (one-hot-like similarities) still has a valid distribution and
            ``torch.multinomial`` does not fail.
    Returns:
        ``(B,)`` long indices on ``similarity``'s device; never ``i`` and never a column sharing row
        ``i``'s group.
    Raises:
        ValueError: batch size 1 (no negative exists), a row whose every column shares its group,
            non-square or non-finite similarity.
    """
    b = _check_similarity(similarity)
    check_positive(eps, "eps")
    groups = _check_group_ids(group_ids, b, similarity.device)
    invalid = torch.eye(b, dtype=torch.bool, device=similarity.device)
    if groups is not None:
        invalid |= groups.unsqueeze(0) == groups.unsqueeze(1)
    no_negative = invalid.all(dim=1)
    if has_values(no_negative) and no_negative.any():
        row = int(no_negative.nonzero()[0])
        raise ValueError(
            f"row {row} of similarity has no valid negative: every column shares its group id "
            f"({int(groups[row]) if groups is not None else row})"
        )
    with torch.no_grad():
        weights = similarity.detach().float().softmax(dim=1) + eps
        weights = weights.masked_fill(invalid, 0.0)
        if generator is None or generator.device == weights.device:
            return torch.multinomial(weights, 1, generator=generator).squeeze(1)
        threshold = (1.0 - torch.rand(b, 1, generator=generator)).to(weights.device)  # uniform in (0, 1]
        cdf = weights.cumsum(dim=1)
        return (cdf < threshold * cdf[:, -1:]).sum(dim=1).clamp_max(b - 1)  # first column reaching the threshold


def make_itm_pairs(
    similarity_i2t: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3B (image, text) pairs of an ITM batch: B positives, B negative images, B negative texts.

    Args:
        similarity_i2t: ``(B, B)`` image→text scores (row = image, column = text); ``similarity_i2t.T``
            gives the text→image scores used to pick a negative image for every text.
        group_ids: optional ``(B,)`` scene ids (see :func:`sample_hard_negatives`).
        generator: optional ``torch.Generator``.
    Returns:
        ``image_index (3B,)``, ``text_index (3B,)``, ``labels (3B,)`` (1 = match): rows ``[0, B)`` are
        ``(i, i, 1)``, rows ``[B, 2B)`` are ``(neg_image(i), i, 0)``, rows ``[2B, 3B)`` are
        ``(i, neg_text(i), 0)``.
    """
    check_tensor(similarity_i2t, "similarity_i2t", ndim=2, floating=True)
    neg_image_for_text = sample_hard_negatives(similarity_i2t.t(), group_ids, generator)
    neg_text_for_image = sample_hard_negatives(similarity_i2t, group_ids, generator)
    b = similarity_i2t.shape[0]
    arange = torch.arange(b, device=similarity_i2t.device)
    image_index = torch.cat([arange, neg_image_for_text, arange])
    text_index = torch.cat([arange, arange, neg_text_for_image])
    labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)])
    return image_index, text_index, labels.to(similarity_i2t.device)


class ITMHead(nn.Module):
    """Two-way classifier (no match / match) on the fused [CLS] vector: ``(N, dim) -> (N, 2)``."""

    def __init__(self, dim: int):
        super().__init__()
        check_positive(dim, "dim", integer=True)
        self.proj = nn.Linear(dim, 2)

    def forward(self, fused_cls: torch.Tensor) -> torch.Tensor:
        check_tensor(fused_cls, "fused_cls", ndim=2, floating=True)
        if fused_cls.shape[1] != self.proj.in_features:
            raise ValueError(f"fused_cls must be (N, {self.proj.in_features}), got {tuple(fused_cls.shape)}")
        return self.proj(fused_cls)

    def match_score(self, fused_cls: torch.Tensor) -> torch.Tensor:
        """``(N,)`` probability that each pair matches (used to re-rank retrieval candidates)."""
        return self(fused_cls).softmax(dim=-1)[:, 1]


def _check_itm(logits: torch.Tensor, labels: torch.Tensor) -> None:
    check_tensor(logits, "logits", ndim=2, floating=True)
    check_tensor(labels, "labels", ndim=1, floating=False)
    if logits.shape[1] != 2:
        raise ValueError(f"logits must be (N, 2) (no match, match), got {tuple(logits.shape)}")
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits (N, 2) and labels (N,) must agree on N, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("logits must not be empty")


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the ITM head. ``logits (N, 2)``, ``labels (N,)`` with 1 = match → scalar."""
    _check_itm(logits, labels)
    return F.cross_entropy(logits, labels)


def itm_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of pairs classified correctly. ``logits (N, 2)``, ``labels (N,)``."""
    _check_itm(logits, labels)
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def _check_similarity(similarity) -> int:
    """Raise unless ``similarity`` is a finite square ``(B, B)`` score matrix with ``B >= 2``; return ``B``."""
    check_tensor(similarity, "similarity", ndim=2, floating=True)
    b, n = similarity.shape
    if b != n:
        raise ValueError(
            f"similarity must be square (B, B) with positives on the diagonal, got {tuple(similarity.shape)}"
        )
    if b == 0:
        raise ValueError("similarity must not be empty, got shape (0, 0)")
    if b == 1:
        raise ValueError(
            "hard negatives need a batch size of at least 2: with B=1 the only candidate is the positive"
        )
    if has_values(similarity) and not torch.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or Inf values")
    return b


def _check_group_ids(group_ids, size: int, device) -> torch.Tensor | None:
    if group_ids is None:
        return None
    if not isinstance(group_ids, torch.Tensor):
        group_ids = torch.as_tensor(group_ids)
    check_tensor(group_ids, "group_ids", ndim=1, floating=False)
    if group_ids.numel() != size:
        raise ValueError(f"group_ids must have one id per row/column ({size}), got {group_ids.numel()}")
    return group_ids.to(device)
