"""Three ways to fuse an image and a text for classification: chapter 3's comparison (article §3.1–3.2).

All three share the interface ``forward(images (B, C, H, W), input_ids (B, L), attention_mask=None (B, L))
→ logits (B, num_classes)`` and take the image and text encoders as arguments (any encoder of
:mod:`mmcourse.nn.encoders`: they return ``(tokens, pooled)`` and expose ``.dim``), so only the fusion differs:

* :class:`EarlyFusionClassifier` — *feature-level (early) fusion*: concatenate the pooled image and text vectors,
  then one MLP sees both;
* :class:`LateFusionClassifier` — *decision-level (late) fusion*: each modality predicts on its own, the two
  predictions are averaged; no interaction between modalities before the decision;
* :class:`CrossAttentionFusionClassifier` — *cross-attention fusion*: text tokens attend to image tokens
  (:class:`mmcourse.nn.blocks.MultimodalEncoder`), word by word; the attention weights can be returned for heat-maps.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.nn.blocks import MultimodalEncoder
from mmcourse.nn.encoders import EncoderOutput

__all__ = [
    "EarlyFusionClassifier",
    "LateFusionClassifier",
    "CrossAttentionFusionClassifier",
]


class _TwoTowerBase(nn.Module):
    """Holds the two encoders and runs them with input checks."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, num_classes: int):
        super().__init__()
        check_positive(num_classes, "num_classes", integer=True)
        for name, enc in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not isinstance(enc, nn.Module) or not isinstance(getattr(enc, "dim", None), int):
                raise TypeError(f"{name} must be an nn.Module with an int attribute .dim, got {type(enc).__name__}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.num_classes = num_classes

    def encode(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[EncoderOutput, EncoderOutput]:
        check_tensor(images, "images", ndim=4, floating=True)
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        if images.size(0) != input_ids.size(0):
            raise ValueError(
                f"images and input_ids must have the same batch size, got {tuple(images.shape)} "
                f"and {tuple(input_ids.shape)}"
            )
        return self.image_encoder(images), self.text_encoder(input_ids, attention_mask)


class EarlyFusionClassifier(_TwoTowerBase):
    """``MLP([pooled_image ; pooled_text]) → logits``: the two modalities meet in one feature vector.

    Args:
        image_encoder, text_encoder: encoders with ``.dim``; num_classes: ``C``.
        hidden_dim: width of the MLP's hidden layer; dropout: before the last layer.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        num_classes: int,
        hidden_dim: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__(image_encoder, text_encoder, num_classes)
        fused = image_encoder.dim + text_encoder.dim
        self.head = nn.Sequential(
            nn.LayerNorm(fused), nn.Linear(fused, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )  # fmt: skip

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        image, text = self.encode(images, input_ids, attention_mask)
        return self.head(torch.cat([image.pooled, text.pooled], dim=-1))


class LateFusionClassifier(_TwoTowerBase):
    """Each modality classifies alone; the decisions are averaged.

    Args:
        combine: ``"logits"`` (mean of the two logit vectors) or ``"probs"`` (mean of the two probability vectors,
            returned as log-probabilities so ``cross_entropy`` still applies).

    :meth:`modality_logits` returns the two single-modality predictions (to see which one is right when).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        num_classes: int,
        hidden_dim: int = 128,
        combine: str = "logits",
    ):
        super().__init__(image_encoder, text_encoder, num_classes)
        check_choice(combine, "combine", ("logits", "probs"))
        self.combine = combine
        self.image_head = _mlp(image_encoder.dim, hidden_dim, num_classes)
        self.text_head = _mlp(text_encoder.dim, hidden_dim, num_classes)

    def modality_logits(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_logits (B, C), text_logits (B, C))``."""
        image, text = self.encode(images, input_ids, attention_mask)
        return self.image_head(image.pooled), self.text_head(text.pooled)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        image_logits, text_logits = self.modality_logits(images, input_ids, attention_mask)
        if self.combine == "logits":
            return (image_logits + text_logits) / 2
        probs = (image_logits.softmax(-1) + text_logits.softmax(-1)) / 2
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class CrossAttentionFusionClassifier(_TwoTowerBase):
    """Text tokens attend to image tokens through ``depth`` fusion layers; the first text token is classified.

    Args:
        dim: width of the fusion layers (text tokens are projected to it if the text encoder is narrower/wider).
        depth, num_heads, mlp_ratio, dropout: size of the :class:`mmcourse.nn.blocks.MultimodalEncoder`.
        pool: ``"first"`` (the [CLS] position) or ``"mean"`` (mean of real text tokens).

    ``forward(images, input_ids, attention_mask=None, need_weights=False)`` → logits ``(B, C)``, and with
    ``need_weights=True`` also the list of cross-attention weights ``(B, H, L, N_patches)`` per layer.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        num_classes: int,
        dim: int | None = None,
        depth: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pool: str = "first",
    ):
        super().__init__(image_encoder, text_encoder, num_classes)
        check_choice(pool, "pool", ("first", "mean"))
        dim = dim or text_encoder.dim
        self.pool = pool
        self.text_proj = nn.Identity() if dim == text_encoder.dim else nn.Linear(text_encoder.dim, dim)
        self.fusion = MultimodalEncoder(dim, depth, num_heads, mlp_ratio, dropout, context_dim=image_encoder.dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        image, text = self.encode(images, input_ids, attention_mask)
        mask = attention_mask.bool() if attention_mask is not None else None
        text_tokens = self.text_proj(text.tokens)
        weights = None
        if need_weights:
            fused, weights = self.fusion(text_tokens, image.tokens, mask, need_weights=True)
        else:
            fused = self.fusion(text_tokens, image.tokens, mask)
        if self.pool == "first" or mask is None:
            pooled = fused[:, 0] if self.pool == "first" else fused.mean(1)
        else:
            w = mask.to(fused.dtype).unsqueeze(-1)
            pooled = (fused * w).sum(1) / w.sum(1).clamp_min(1.0)
        logits = self.head(pooled)
        return (logits, weights) if need_weights else logits


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
