"""Contrastive image–text objectives: the article's §4.1, chapter 4.

* :func:`contrastive_loss` — the article's CLIP loss with its signature ``(image_features, text_features,
  temperature=0.07)``: cosine similarities divided by the temperature, cross-entropy towards the diagonal in both
  directions (image→text and text→image), averaged.
* :func:`clip_loss` — the same loss from a ready-made logit matrix (as Hugging Face's CLIP computes it), optionally
  with extra hard-negative texts and a mask of pairs that are not negatives (ALBEF's ITC on ShapesWorld).
* :class:`LogitScale` — CLIP's learnable temperature: ``scale = exp(t)``, ``t`` initialised at ``ln(1/0.07)``,
  the scale clamped to ``≤ 100``.
* :func:`siglip_loss`, :class:`SigLIPHead` — SigLIP's pairwise sigmoid loss with learnable scale and bias
  (initialised at 10 and −10).

Zero-shot classification with such a model is in :mod:`mmcourse.retrieval`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_same_size, check_tensor

__all__ = ["MAX_LOGIT_SCALE", "clip_loss", "contrastive_loss", "LogitScale", "siglip_loss", "SigLIPHead"]

MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learnable logit scale (1 / temperature) to at most 100


def _check_pair(image_features, text_features) -> None:
    check_tensor(image_features, "image_features", ndim=2, floating=True, finite=True)
    check_tensor(text_features, "text_features", ndim=2, floating=True, finite=True)
    check_same_size(image_features, text_features, "image_features", "text_features", dim=0)
    check_same_size(image_features, text_features, "image_features", "text_features", dim=1)


def _check_temperature_like(value, name: str) -> None:
    """A positive finite number, or a tensor with one positive finite element (learnable)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        item = float(value.detach())
        if not (item > 0 and math.isfinite(item)):
            raise ValueError(f"{name} must be > 0, got {item!r}")
    else:
        check_positive(value, name)


def clip_loss(
    logits_per_image: torch.Tensor,
    extra_negatives: torch.Tensor | None = None,
    *,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric cross-entropy of a square logit matrix whose diagonal holds the matching pairs.

    Args:
        logits_per_image: ``(N, N)``; row ``i`` scores image ``i`` against every text.
        extra_negatives: optional ``(N, M)`` scores of each image against ``M`` more texts that match no image (hard
            negatives, as in NegCLIP): extra columns of the image→text softmax.
        negative_mask: optional ``(N, N + M)`` bool, ``False`` where a column must not count as a negative of that
            row's image (e.g. another caption stating the same fact). The diagonal always counts. The text→image
            direction uses the first ``N`` columns, transposed.
    Returns:
        scalar ``(CE(image→text, diag) + CE(text→image, diag)) / 2``.
    """
    check_tensor(logits_per_image, "logits_per_image", ndim=2, floating=True, finite=True)
    n = logits_per_image.size(0)
    if logits_per_image.size(1) != n:
        raise ValueError(f"logits_per_image must be square (N, N), got shape {tuple(logits_per_image.shape)}")
    i2t, t2i = logits_per_image, logits_per_image.t()
    if extra_negatives is not None:
        check_tensor(extra_negatives, "extra_negatives", ndim=2, floating=True)
        check_same_size(logits_per_image, extra_negatives, "logits_per_image", "extra_negatives", dim=0)
        i2t = torch.cat([i2t, extra_negatives], dim=1)  # (N, N + M)
    if negative_mask is not None:
        if negative_mask.dtype != torch.bool or tuple(negative_mask.shape) != tuple(i2t.shape):
            raise ValueError(
                f"negative_mask must be a bool tensor of shape {tuple(i2t.shape)}, got {negative_mask.dtype} "
                f"{tuple(negative_mask.shape)}"
            )
        keep = negative_mask | F.pad(torch.eye(n, dtype=torch.bool, device=i2t.device), (0, i2t.size(1) - n))
        blocked = torch.finfo(i2t.dtype).min
        i2t, t2i = i2t.masked_fill(~keep, blocked), t2i.masked_fill(~keep[:, :n].t(), blocked)
    labels = torch.arange(n, device=i2t.device)  # the diagonal holds the matching pairs
    return (F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels)) / 2


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, temperature: float | torch.Tensor = 0.07
) -> torch.Tensor:
    """The article's §4.1 CLIP contrastive loss (InfoNCE in both directions).

    Args:
        image_features: ``(N, D)``; row ``i`` pairs with row ``i`` of ``text_features``. Not necessarily
            normalised: both are L2-normalised here, as in the article.
        text_features: ``(N, D)``.
        temperature: ``τ > 0`` (a number, or a one-element tensor for a learnable temperature);
            logits are ``cos(image_i, text_j) / τ``.
    Returns:
        scalar loss ``(CE(logits, diag) + CE(logits.T, diag)) / 2``.

    Reference values: all embeddings identical → ``log N``; orthonormal embeddings → ``log(1 + (N−1)·e^{−1/τ})``.
    """
    _check_pair(image_features, text_features)
    _check_temperature_like(temperature, "temperature")
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = image_features @ text_features.t() / temperature
    return clip_loss(logits)


class LogitScale(nn.Module):
    """CLIP's learnable inverse temperature: ``forward() → scale = min(exp(t), max_scale)``.

    ``t`` (the parameter ``log_scale``) starts at ``ln(1 / init_temperature)`` (``ln(1/0.07) ≈ 2.659``,
    scale ≈ 14.3). The clamp keeps the scale ``≤ 100`` as CLIP does (beyond it the gradient is zero).
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        check_positive(init_temperature, "init_temperature")
        check_positive(max_scale, "max_scale")
        self.max_scale = float(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    @property
    def temperature(self) -> float:
        """The current temperature ``1 / scale`` as a plain float."""
        return 1.0 / float(self().detach())


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor = 10.0,
    logit_bias: float | torch.Tensor = -10.0,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every image–text pair is a binary classification.

    ``z_ij = s · cos(image_i, text_j) + b``, label ``y_ij = +1`` on the diagonal and ``−1`` elsewhere;
    ``loss = −(1/N) Σ_ij log σ(y_ij · z_ij)`` (sum over all ``N²`` pairs divided by the batch size, as in the
    paper and in Hugging Face's ``SiglipModel``). Features are L2-normalised here.

    Args:
        image_features, text_features: ``(N, D)``, row ``i`` of each form a pair.
        logit_scale: the positive multiplier ``s`` itself (not its log); init 10 in SigLIP.
        logit_bias: the bias ``b``; init −10 in SigLIP.
    Returns:
        scalar loss.

    Closed forms (checked in the tests), with ``softplus(x) = log(1 + e^x) = −log σ(−x)``:

    * all ``2N`` embeddings identical: every logit is ``s + b``, so the loss is
      ``softplus(−(s+b)) + (N−1) · softplus(s+b)``; at the init ``s = 10, b = −10`` every logit is 0 and the
      loss is exactly ``N · ln 2`` (``ln 2`` per pair, ``N²`` pairs, divided by ``N``);
    * orthonormal pairs (``cos = 1`` on the diagonal, 0 off it): ``softplus(−(s+b)) + (N−1) · softplus(b)``,
      ≈ ``0.693 + (N−1) · 4.5e−5`` at the init values.
    """
    _check_pair(image_features, text_features)
    _check_temperature_like(logit_scale, "logit_scale")
    if isinstance(logit_bias, torch.Tensor):
        if logit_bias.numel() != 1:
            raise ValueError(f"logit_bias must be a number or a one-element tensor, got {tuple(logit_bias.shape)}")
    elif isinstance(logit_bias, bool) or not isinstance(logit_bias, (int, float)) or not math.isfinite(logit_bias):
        raise ValueError(f"logit_bias must be a finite number or a one-element tensor, got {logit_bias!r}")
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = image_features @ text_features.t() * logit_scale + logit_bias  # (N, N)
    n = logits.size(0)
    signs = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(signs * logits).sum() / n


class SigLIPHead(nn.Module):
    """Learnable SigLIP scale and bias; ``forward(image_features, text_features) → siglip_loss``.

    Parameters: ``log_scale`` (init ``ln 10``, so ``scale = exp(log_scale) = 10``) and ``bias`` (init −10).
    """

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        check_positive(init_scale, "init_scale")
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return siglip_loss(image_features, text_features, self.scale, self.bias)
