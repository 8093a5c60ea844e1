"""Reusing a frozen pretrained image encoder: compute its tokens once, train only what sits on top — chapter 6
(article §5.2 captioning and §5.3 VQA on top of §5.1's contrastive encoder).

Applications rarely train their image encoder from scratch: ClipCap captions from frozen CLIP features, BLIP-2
and LLaVA answer questions on top of a frozen CLIP/ViT encoder. When the encoder does not change, its output for a
given image does not change either, so it can be computed **once** and cached:

* :func:`frozen_image_tokens` — ``images (N, C, H, W) → tokens (N, T, D)`` in eval mode, without gradients, in
  batches (BatchNorm statistics and weights stay untouched);
* :class:`PrecomputedTokens` — a stand-in "image encoder" whose input *is* the cached tokens: give it to any model
  that takes an image encoder (``Captioner``, ``VQAModel``) and train it on the cache, at the cost of the layers
  on top only.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.nn.encoders import EncoderOutput, tokens_of
from mmcourse.train import evaluating, module_device

__all__ = ["frozen_image_tokens", "PrecomputedTokens"]


def frozen_image_tokens(encoder: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The tokens of a frozen image encoder for every image, computed once.

    Args:
        encoder: returns an ``EncoderOutput`` (``.tokens``), a ``(tokens, pooled)`` tuple or a tokens tensor.
        images: ``(N, C, H, W)``.
        batch_size: images encoded at once.
    Returns:
        ``(N, T, D)`` on the encoder's device. The encoder runs in ``eval()`` mode and gets its previous mode
        back; nothing in it changes.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    check_tensor(images, "images", ndim=4, floating=True)
    if images.size(0) == 0:
        raise ValueError(f"images must hold at least one image, got shape {tuple(images.shape)}")
    check_positive(batch_size, "batch_size", integer=True)
    device = module_device(encoder)
    with evaluating(encoder):
        parts = [tokens_of(encoder(images[i : i + batch_size].to(device))) for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


class PrecomputedTokens(nn.Module):
    """An "image encoder" for cached tokens: ``forward(tokens (B, T, D)) → EncoderOutput(tokens, mean)``.

    Args:
        dim: token width ``D``.
        grid_size: the tokens form a ``grid_size × grid_size`` grid (``T = grid_size²``), as the encoder that
            produced them (e.g. ``SmallCNN(image_size=32).grid_size == 4``); ``None`` = any number of tokens.

    It has no parameters: models built on it train only their own layers.
    """

    def __init__(self, dim: int, grid_size: int | None = None):
        super().__init__()
        check_positive(dim, "dim", integer=True)
        if grid_size is not None:
            check_positive(grid_size, "grid_size", integer=True)
        self.dim = dim
        self.grid_size = grid_size

    def forward(self, tokens: torch.Tensor) -> EncoderOutput:
        check_tensor(tokens, "tokens", ndim=3, floating=True)
        expected = self.grid_size**2 if self.grid_size is not None else tokens.size(1)
        if tokens.size(1) != expected or tokens.size(2) != self.dim:
            want = f"(B, {expected}, {self.dim})" if self.grid_size is not None else f"(B, T, {self.dim})"
            raise ValueError(f"tokens must have shape {want} (cached encoder tokens), got {tuple(tokens.shape)}")
        return EncoderOutput(tokens, tokens.mean(dim=1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, grid_size={self.grid_size}"
