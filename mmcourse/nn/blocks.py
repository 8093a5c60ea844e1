"""Transformer building blocks of the multimodal transformer (article §3.1, Fig. 3); chapters 3, 5, 6.

All blocks are *pre-norm* (``x + sublayer(LayerNorm(x))``, as in ViT, CLIP and GPT-2) and use
:class:`mmcourse.nn.attention.CrossModalAttention` for every attention, so masks follow one rule everywhere:
``1``/``True`` = attend, ``0``/``False`` = blocked; padding masks are ``(B, L)`` with 1 on real tokens.

* :class:`FeedForward` — the position-wise MLP.
* :class:`SelfAttentionBlock` — self-attention + MLP (one encoder layer).
* :class:`CrossAttentionBlock` — queries from one modality attend to keys/values of the other, + MLP;
  optionally a self-attention first (an ALBEF/BLIP fusion layer).
* :class:`TransformerEncoder` — a stack of self-attention blocks with a final LayerNorm.
* :class:`MultimodalEncoder` — a stack of fusion layers: text self-attention + text→image cross-attention; with
  ``causal=True`` the same stack is an image-conditioned text decoder (a captioner's).
* :func:`causal_mask`, :func:`combine_masks` — mask helpers.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.nn.attention import CrossModalAttention

__all__ = [
    "causal_mask", "combine_masks", "FeedForward", "SelfAttentionBlock", "CrossAttentionBlock",
    "TransformerEncoder", "MultimodalEncoder",
]


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-triangular bool mask ``(L, L)``: position ``i`` may attend to positions ``j <= i``."""
    check_positive(length, "length", integer=True)
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def combine_masks(
    padding_mask: torch.Tensor | None, causal: bool, length: int, device=None
) -> torch.Tensor | None:
    """Merge an optional key padding mask ``(B, L)`` (1 = real token) with a causal mask.

    Returns ``None`` (no mask), the padding mask as bool ``(B, L)``, or a bool ``(B|1, 1, L, L)`` mask.
    """
    if padding_mask is not None:
        check_tensor(padding_mask, "padding_mask", ndim=2)
        if padding_mask.size(1) != length:
            raise ValueError(
                f"padding_mask must have shape (B, {length}) to match the sequence, "
                f"got {tuple(padding_mask.shape)}"
            )
        padding_mask = padding_mask.bool()
        device = padding_mask.device
    if not causal:
        return padding_mask
    mask = causal_mask(length, device)[None, None]  # (1, 1, L, L)
    if padding_mask is not None:
        mask = mask & padding_mask[:, None, None, :]
    return mask


class FeedForward(nn.Module):
    """Position-wise MLP ``Linear(D, r·D) → GELU → Dropout → Linear(r·D, D) → Dropout``: (B, L, D) → same."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        check_positive(dim, "dim", integer=True)
        check_positive(mlp_ratio, "mlp_ratio")
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttentionBlock(nn.Module):
    """Pre-norm encoder layer: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``.

    Args:
        dim, num_heads, mlp_ratio, dropout: width, heads, MLP expansion, dropout (attention and MLP).
        causal: mask future positions (decoder-style self-attention).

    ``forward(x (B, L, D), mask=None, need_weights=False)`` → ``(B, L, D)`` (and weights ``(B, H, L, L)``);
    ``mask`` is a padding mask ``(B, L)`` or any mask :class:`CrossModalAttention` accepts.
    """

    def __init__(
        self, dim: int, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, causal: bool = False
    ):
        super().__init__()
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossModalAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False):
        check_tensor(x, "x", ndim=3, floating=True)
        if self.causal:
            mask = _merge_causal(mask, x.size(1), x.device)
        h = self.norm1(x)
        attended = self.attn(h, h, h, mask=mask, need_weights=need_weights)
        weights = None
        if need_weights:
            attended, weights = attended
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return (x, weights) if need_weights else x


class CrossAttentionBlock(nn.Module):
    """Pre-norm fusion layer [``x + SelfAttn(LN(x))``], ``x + CrossAttn(LN(x), LN(ctx))``, ``x + MLP(LN(x))``

    Queries come from ``x`` (modality A, e.g. text tokens), keys and values from ``context`` (modality B, e.g.
    image patches).

    Args:
        dim, num_heads, mlp_ratio, dropout: as in :class:`SelfAttentionBlock`.
        context_dim: width of ``context`` if different from ``dim`` (it is then projected to ``dim``).
        self_attention: put a self-attention over ``x`` before the cross-attention (ALBEF/BLIP layer).
        causal: make that self-attention causal (a decoder layer: position ``t`` sees text positions ``<= t``).

    ``forward(x (B, Lq, D), context (B, Lk, Dc), x_mask=None (B, Lq), context_mask=None (B, Lk),
    need_weights=False)`` → ``(B, Lq, D)`` (and the cross-attention weights ``(B, H, Lq, Lk)``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        context_dim: int | None = None,
        self_attention: bool = False,
        causal: bool = False,
    ):
        super().__init__()
        if causal and not self_attention:
            raise ValueError(
                "causal=True needs self_attention=True (the causal mask applies to self-attention)"
            )
        self.causal = causal
        self.self_block = None
        if self_attention:
            self.norm_self = nn.LayerNorm(dim)
            self.self_block = CrossModalAttention(dim, num_heads, dropout)
        self.context_proj = nn.Identity() if context_dim in (None, dim) else nn.Linear(context_dim, dim)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = CrossModalAttention(dim, num_heads, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        check_tensor(x, "x", ndim=3, floating=True)
        check_tensor(context, "context", ndim=3, floating=True)
        if x.size(0) != context.size(0):
            raise ValueError(
                "x and context must have the same batch size, "
                f"got {tuple(x.shape)} and {tuple(context.shape)}"
            )
        if self.self_block is not None:
            self_mask = _merge_causal(x_mask, x.size(1), x.device) if self.causal else x_mask
            h = self.norm_self(x)
            x = x + self.self_block(h, h, h, mask=self_mask)
        ctx = self.norm_context(self.context_proj(context))
        attended = self.cross_attn(self.norm_query(x), ctx, ctx, mask=context_mask, need_weights=need_weights)
        weights = None
        if need_weights:
            attended, weights = attended
        x = x + attended
        x = x + self.mlp(self.norm_mlp(x))
        return (x, weights) if need_weights else x


def _merge_causal(mask: torch.Tensor | None, length: int, device) -> torch.Tensor:
    """Causal mask ``(1, 1, L, L)`` combined with an optional padding ``(B, L)`` or full mask."""
    if mask is None or mask.dim() == 2:
        return combine_masks(mask, True, length, device)
    full = mask.bool() if mask.dim() == 4 else mask.bool()[:, None]
    return full & causal_mask(length, mask.device)


class TransformerEncoder(nn.Module):
    """A stack of ``depth`` :class:`SelfAttentionBlock` layers and a final LayerNorm.

    ``forward(x (B, L, D), mask=None (B, L)) → (B, L, D)``; with ``need_weights=True`` also a list of the
    per-layer attention weights ``(B, H, L, L)``.
    """

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        causal: bool = False,
    ):
        super().__init__()
        check_positive(depth, "depth", integer=True)
        self.dim = dim
        self.layers = nn.ModuleList(
            SelfAttentionBlock(dim, num_heads, mlp_ratio, dropout, causal=causal) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False):
        all_weights = []
        for layer in self.layers:
            if need_weights:
                x, weights = layer(x, mask, need_weights=True)
                all_weights.append(weights)
            else:
                x = layer(x, mask)
        x = self.norm(x)
        return (x, all_weights) if need_weights else x


class MultimodalEncoder(nn.Module):
    """ALBEF-style fusion encoder: ``depth`` layers of text self-attention + text→image cross-attention + MLP, and a
    final LayerNorm. With ``causal=True`` the self-attention is causal and the same stack is an image-conditioned
    text decoder (a captioner's, BLIP's): position ``t`` sees text positions ``<= t`` and every unmasked image token.

    Args:
        dim: text width ``D``; ``context_dim``: the image-token width if different (projected to ``D``).

    ``forward(text (B, Lt, D), image (B, Li, Dc), text_mask=None (B, Lt), image_mask=None (B, Li),
    need_weights=False) → (B, Lt, D)``; with ``need_weights`` also the list of cross-attention weights
    ``(B, H, Lt, Li)`` per layer (words → patches heat-maps).
    """

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        context_dim: int | None = None,
        causal: bool = False,
    ):
        super().__init__()
        check_positive(depth, "depth", integer=True)
        self.dim = dim
        self.layers = nn.ModuleList(
            CrossAttentionBlock(dim, num_heads, mlp_ratio, dropout, context_dim, self_attention=True, causal=causal)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        all_weights = []
        x = text
        for layer in self.layers:
            if need_weights:
                x, weights = layer(x, image, text_mask, image_mask, need_weights=True)
                all_weights.append(weights)
            else:
                x = layer(x, image, text_mask, image_mask)
        x = self.norm(x)
        return (x, all_weights) if need_weights else x
