"""Contrastive image–text objectives and zero-shot classification: the article's §4.1, chapter 4.

* :func:`contrastive_loss` — the article's CLIP loss with its signature ``(image_features, text_features,
  temperature=0.07)``: cosine similarities divided by the temperature, cross-entropy towards the diagonal in both
  directions (image→text and text→image), averaged.
* :func:`clip_loss` — the same loss from a ready-made logit matrix (as Hugging Face's CLIP computes it).
* :class:`LogitScale` — CLIP's learnable temperature: ``scale = exp(t)``, ``t`` initialised at ``ln(1/0.07)``,
  the scale clamped to ``≤ 100``.
* :func:`siglip_loss`, :class:`SigLIPHead` — SigLIP's pairwise sigmoid loss with learnable scale and bias
  (initialised at 10 and −10).
* :func:`zero_shot_classifier`, :func:`zero_shot_predict`, :func:`zero_shot_accuracy` — class prompts
  ("a photo of a {}") turned into a linear classifier, with template ensembling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_same_size, check_tensor
from mmcourse.train import module_device

__all__ = [
    "contrastive_loss",
    "clip_loss",
    "LogitScale",
    "siglip_loss",
    "SigLIPHead",
    "zero_shot_classifier",
    "zero_shot_predict",
    "zero_shot_accuracy",
    "MAX_LOGIT_SCALE",
]

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


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a square logit matrix whose diagonal holds the matching pairs.

    Args:
        logits_per_image: ``(N, N)``; row ``i`` scores image ``i`` against every text.
    Returns:
        scalar ``(CE(logits, arange) + CE(logits.T, arange)) / 2``.
    """
    check_tensor(logits_per_image, "logits_per_image", ndim=2, floating=True, finite=True)
    if logits_per_image.size(1) != logits_per_image.size(0):
        raise ValueError(f"logits_per_image must be square (N, N), got shape {tuple(logits_per_image.shape)}")
    return _symmetric_cross_entropy(logits_per_image)


def _symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.size(0), device=logits.device)  # the diagonal holds the matching pairs
    loss_i2t = F.cross_entropy(logits, labels)
    loss_t2i = F.cross_entropy(logits.t(), labels)
    return (loss_i2t + loss_t2i) / 2


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
    return _symmetric_cross_entropy(logits)


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


def _encode_text_fn(model_or_encode_text_fn) -> Callable:
    if hasattr(model_or_encode_text_fn, "encode_text"):
        return model_or_encode_text_fn.encode_text
    if callable(model_or_encode_text_fn):
        return model_or_encode_text_fn
    raise TypeError(
        "model_or_encode_text_fn must have an encode_text method or be callable(input_ids, attention_mask), "
        f"got {type(model_or_encode_text_fn).__name__}"
    )


def _device_of(obj, default) -> torch.device:
    if default is not None:
        return torch.device(default)
    owner = obj if isinstance(obj, nn.Module) else getattr(obj, "__self__", None)  # a bound method: model.encode_text
    return module_device(owner) if isinstance(owner, nn.Module) else torch.device("cpu")


@torch.no_grad()
def zero_shot_classifier(
    model_or_encode_text_fn,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = ("a photo of a {}",),
    *,
    max_len: int = 16,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build zero-shot class weights ``(C, D)`` from prompts, CLIP style, with template ensembling.

    For each class ``c``, every template (e.g. ``"a photo of a {}"``, ``"{}"``) is filled with ``c``, encoded,
    L2-normalised; the template embeddings are averaged and the mean is L2-normalised again.

    Args:
        model_or_encode_text_fn: a model with ``encode_text(input_ids, attention_mask) → (B, D)`` (e.g.
            :class:`mmcourse.clip.TinyCLIP`) or such a function.
        tokenizer: has ``encode(texts, max_len=...) → (input_ids (B, L), attention_mask (B, L))``.
        classnames: ``C`` class names, e.g. ``["red circle", "blue square"]``.
        templates: prompt templates, each with one ``{}``.
        max_len: token length passed to the tokenizer.
        device: where to run the text encoder (default: the model's device, else CPU).
    Returns:
        ``(C, D)`` unit-norm rows; ``image_features @ weights.T`` gives class scores.
    """
    encode_text = _encode_text_fn(model_or_encode_text_fn)
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError(f"classnames must be a non-empty list of strings, got {classnames!r}")
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError(f"templates must be a non-empty list of strings with '{{}}', got {templates!r}")
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise ValueError(f"every template must be a string containing '{{}}', got {t!r}")
    device = _device_of(model_or_encode_text_fn, device)
    texts = [t.format(c) for c in classnames for t in templates]  # class-major: C blocks of T prompts
    input_ids, attention_mask = tokenizer.encode(texts, max_len=max_len)
    embeddings = encode_text(input_ids.to(device), attention_mask.to(device))  # (C*T, D)
    check_tensor(embeddings, "encode_text output", ndim=2, floating=True, finite=True)
    embeddings = F.normalize(embeddings.float(), dim=-1).view(len(classnames), len(templates), -1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def zero_shot_predict(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Predicted class per image: ``argmax_c cos(image, class_c)``.

    Args:
        image_features: ``(B, D)`` (normalised here).
        classifier: ``(C, D)`` from :func:`zero_shot_classifier`.
    Returns:
        LongTensor ``(B,)`` on the device of ``image_features``.
    """
    check_tensor(image_features, "image_features", ndim=2, floating=True, finite=True)
    check_tensor(classifier, "classifier", ndim=2, floating=True, finite=True)
    check_same_size(image_features, classifier, "image_features", "classifier", dim=1)
    scores = F.normalize(image_features.float(), dim=-1) @ classifier.to(image_features.device).float().t()
    return scores.argmax(dim=-1)


def zero_shot_accuracy(image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose :func:`zero_shot_predict` equals ``labels`` ``(B,)``."""
    predictions = zero_shot_predict(image_features, classifier)
    check_tensor(labels, "labels", ndim=1, floating=False)
    check_same_size(image_features, labels, "image_features", "labels", dim=0)
    return float((predictions == labels.to(predictions.device)).float().mean())
