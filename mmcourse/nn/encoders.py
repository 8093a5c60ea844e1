"""Modality encoders and projection heads: the "encoding layer" of the article's Fig. 2 (§2.1), chapters 2–6.

Every encoder returns an :class:`EncoderOutput` ``(tokens, pooled)``:

* image encoders — ``tokens`` ``(B, N, D)`` (ViT patches or CNN feature-map cells, row-major over the grid, so
  ``tokens.view(B, grid, grid, D)`` is the spatial layout used for heat-maps) and ``pooled`` ``(B, D)``;
* the text encoder — ``tokens`` ``(B, L, D)`` (one per input position, padding included) and ``pooled``
  ``(B, D)`` (the CLS or EOS token, or the masked mean).

Each encoder exposes its output width as ``.dim`` and, for images, its token grid as ``.grid_size``.
:class:`ProjectionHead` maps an encoder's pooled output into the shared embedding space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor, has_values
from mmcourse.nn.blocks import TransformerEncoder

__all__ = ["EncoderOutput", "tokens_of", "PatchEmbedding", "TinyViT", "SmallCNN", "TextTransformer", "ProjectionHead"]


class EncoderOutput(NamedTuple):
    """What every encoder returns: per-token features ``(B, N, D)`` and one pooled vector ``(B, D)``."""

    tokens: torch.Tensor
    pooled: torch.Tensor


def tokens_of(encoder_output) -> torch.Tensor:
    """The ``(B, N, D)`` tokens of an image encoder's output: an :class:`EncoderOutput`, a tuple or a tensor."""
    tokens = getattr(encoder_output, "tokens", None)
    if tokens is None:
        tokens = encoder_output[0] if isinstance(encoder_output, (tuple, list)) else encoder_output
    check_tensor(tokens, "image tokens", ndim=3, floating=True)
    return tokens


def _check_images(images, in_channels: int, image_size: int | None) -> None:
    check_tensor(images, "images", ndim=4, floating=True)
    if images.size(1) != in_channels:
        raise ValueError(
            f"images must have shape (B, {in_channels}, H, W), got {tuple(images.shape)} ({images.size(1)} channels)"
        )
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"images must be {image_size}x{image_size} for this encoder, got shape {tuple(images.shape)}")


class PatchEmbedding(nn.Module):
    """Cut an image into non-overlapping ``patch_size`` squares and embed each linearly (ViT's first layer).

    ``(B, C, H, W) → (B, N, D)`` with ``N = (H / patch_size) * (W / patch_size)``, patches in row-major order.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_channels: int = 3, dim: int = 64):
        super().__init__()
        for name, value in (
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
        ):
            check_positive(value, name, integer=True)
        check_positive(dim, "dim", integer=True)
        if image_size % patch_size != 0:
            raise ValueError(
                f"image_size must be divisible by patch_size, got image_size={image_size}, patch_size={patch_size}"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.dim = dim
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, self.in_channels, self.image_size)
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, D, g, g) → (B, g*g, D)


class TinyViT(nn.Module):
    """A tiny Vision Transformer: patch embedding + [CLS] + learned positions + pre-norm transformer.

    Args:
        image_size, patch_size, in_channels: input geometry (``image_size`` divisible by ``patch_size``).
        dim, depth, num_heads, mlp_ratio, dropout: transformer size.
        pool: ``"cls"`` (the [CLS] token) or ``"mean"`` (mean of patch tokens) for ``pooled``.

    ``forward(images (B, C, S, S)) → EncoderOutput(tokens (B, N, D) patch tokens only, pooled (B, D))``.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pool: str = "cls",
    ):
        super().__init__()
        check_choice(pool, "pool", ("cls", "mean"))
        self.pool = pool
        self.dim = dim
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, dim)
        self.grid_size = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patch_embed.num_patches, dim) * 0.02)
        self.encoder = TransformerEncoder(dim, depth, num_heads, mlp_ratio, dropout)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        patches = self.patch_embed(images)  # (B, N, D)
        cls = self.cls_token.expand(patches.size(0), -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.pos_embed
        x = self.encoder(x)
        tokens = x[:, 1:]
        pooled = x[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        return EncoderOutput(tokens, pooled)


def _norm2d(kind: str, channels: int) -> nn.Module:
    """``"batch"`` → BatchNorm2d, ``"group"`` → GroupNorm with up to 4 groups, ``"none"`` → Identity."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels)
    return nn.Identity()


def _convs_per_block(convs) -> tuple[int, int, int]:
    """``2`` → ``(2, 2, 2)``; three ints >= 1 pass through; anything else is a ``ValueError``."""
    per_block = (convs,) * 3 if isinstance(convs, int) and not isinstance(convs, bool) else convs
    if (
        not isinstance(per_block, Sequence)
        or len(per_block) != 3
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in per_block)
    ):
        raise ValueError(f"convs must be an int >= 1 or three of them (one per block), got {convs!r}")
    return tuple(per_block)


class SmallCNN(nn.Module):
    """A small 3-block CNN image encoder: a cheap, strong alternative to :class:`TinyViT` on tiny images.

    Block ``i`` (i = 0, 1, 2): ``convs[i]`` (default two) ``3×3`` convolutions with ``width·2^i`` channels, each
    followed by a normalisation and ReLU, then a ``2×2`` max-pool; a final ``1×1`` convolution maps to ``dim``. A
    32×32 image becomes a 4×4 grid of tokens. With ``dim=64``: ``width=8`` ≈ 21 k parameters, ``12`` ≈ 44 k, ``16``
    ≈ 77 k.

    Args:
        in_channels, width, dim: input channels, base width, token width ``D``.
        convs: convolutions per block — one int for all three blocks or three ints. The full-resolution block
            costs the most time per image: ``(1, 2, 2)`` trains ~10 % faster per step than ``2`` and, on
            ShapesWorld, learns as fast per step.
        image_size: if given, inputs must be exactly this size (and ``grid_size`` is known); divisible by 8.
        pool: ``"mean"`` or ``"max"`` of the tokens for ``pooled``.
        norm: ``"batch"`` (default; on ShapesWorld it trains far faster than the others), ``"group"`` or
            ``"none"`` — to see what normalisation does.

    ``forward(images (B, C, H, W)) → EncoderOutput(tokens (B, (H/8)·(W/8), D), pooled (B, D))``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 16,
        dim: int = 64,
        image_size: int | None = None,
        pool: str = "mean",
        norm: str = "batch",
        convs: int | Sequence[int] = 2,
    ):
        super().__init__()
        check_positive(in_channels, "in_channels", integer=True)
        check_positive(width, "width", integer=True)
        check_positive(dim, "dim", integer=True)
        if image_size is not None:
            check_positive(image_size, "image_size", integer=True)
            if image_size % 8 != 0:
                raise ValueError(f"image_size must be divisible by 8 (three 2x poolings), got {image_size}")
        check_choice(pool, "pool", ("mean", "max"))
        check_choice(norm, "norm", ("batch", "group", "none"))
        self.pool = pool
        self.in_channels = in_channels
        self.image_size = image_size
        self.grid_size = image_size // 8 if image_size is not None else None
        self.dim = dim
        layers: list[nn.Module] = []
        channels = in_channels
        bias = norm != "batch"  # BatchNorm has its own shift
        self.convs = _convs_per_block(convs)
        for i, count in enumerate(self.convs):
            out = width * 2**i
            for _ in range(count):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=bias), _norm2d(norm, out), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.to_tokens = nn.Conv2d(channels, dim, 1)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        _check_images(images, self.in_channels, self.image_size)
        if images.size(-1) < 8 or images.size(-2) < 8:
            raise ValueError(f"images must be at least 8x8 (three 2x poolings), got shape {tuple(images.shape)}")
        # channels-last memory layout: the same numbers, ~15-30 % faster convolutions on CPU
        fmap = self.to_tokens(self.features(images.contiguous(memory_format=torch.channels_last)))  # (B, D, h, w)
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, h*w, D)
        pooled = tokens.mean(dim=1) if self.pool == "mean" else tokens.amax(dim=1)
        return EncoderOutput(tokens, pooled)


class TextTransformer(nn.Module):
    """A small text transformer: token + learned position embeddings, pre-norm encoder, pooling.

    Args:
        vocab_size: number of token ids.
        dim, depth, num_heads, mlp_ratio, dropout: transformer size.
        max_len: longest input the position table covers.
        pool: ``"eos"`` (the last real token: with ``[CLS] w1 … wn [EOS] [PAD]…`` inputs that is ``[EOS]``,
            as in CLIP), ``"cls"`` (position 0) or ``"mean"`` (mean of real tokens).
        causal: causal self-attention (CLIP's text encoder is causal; then ``"eos"`` sees the whole text).

    ``forward(input_ids (B, L), attention_mask=None (B, L), 1 = real token) → EncoderOutput(tokens (B, L, D),
    pooled (B, D))``. Without ``attention_mask`` every position is treated as real.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        max_len: int = 32,
        pool: str = "eos",
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        causal: bool = False,
    ):
        super().__init__()
        check_positive(vocab_size, "vocab_size", integer=True)
        check_positive(max_len, "max_len", integer=True)
        check_choice(pool, "pool", ("eos", "cls", "mean"))
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.pool = pool
        self.dim = dim
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.encoder = TransformerEncoder(dim, depth, num_heads, mlp_ratio, dropout, causal=causal)

    def _check(self, input_ids, attention_mask) -> None:
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        if input_ids.size(1) > self.max_len:
            raise ValueError(
                f"input_ids has length {input_ids.size(1)}, longer than max_len={self.max_len} of this encoder"
            )
        in_range = lambda: int(input_ids.min()) >= 0 and int(input_ids.max()) < self.vocab_size
        if input_ids.numel() and has_values(input_ids) and not in_range():
            raise ValueError(
                f"input_ids must lie in [0, {self.vocab_size}), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        if attention_mask is not None:
            check_tensor(attention_mask, "attention_mask", ndim=2)
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                    f"got {tuple(attention_mask.shape)}"
                )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        self._check(input_ids, attention_mask)
        length = input_ids.size(1)
        x = self.token_embed(input_ids) + self.pos_embed[:, :length]
        mask = attention_mask.bool() if attention_mask is not None else None
        tokens = self.encoder(x, mask)
        return EncoderOutput(tokens, self._pool(tokens, mask))

    def _pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pool == "cls":
            return tokens[:, 0]
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if self.pool == "mean":
            weights = mask.to(tokens.dtype).unsqueeze(-1)
            return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        last = (mask.long().sum(dim=1) - 1).clamp_min(0)  # index of the last real token ([EOS])
        return tokens[torch.arange(tokens.size(0), device=tokens.device), last]


class ProjectionHead(nn.Module):
    """Map encoder features into the shared embedding space: ``(..., in_dim) → (..., out_dim)``.

    ``hidden_dim=None`` gives one linear map without bias (as in CLIP); otherwise
    ``Linear → GELU → Dropout → Linear``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        check_positive(in_dim, "in_dim", integer=True)
        check_positive(out_dim, "out_dim", integer=True)
        self.in_dim = in_dim
        self.out_dim = out_dim
        if hidden_dim is None:
            self.net = nn.Linear(in_dim, out_dim, bias=False)
        else:
            check_positive(hidden_dim, "hidden_dim", integer=True)
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", floating=True)
        if x.size(-1) != self.in_dim:
            raise ValueError(f"x must have last dim {self.in_dim}, got shape {tuple(x.shape)}")
        return self.net(x)
