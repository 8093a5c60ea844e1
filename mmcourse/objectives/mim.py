"""Masked image modelling (MIM) — article §4.2, chapter 5.

MAE's recipe: cut the image into patches, hide most of them (per sample, uniformly at random), encode only
the visible ones, and ask a light decoder to reconstruct the pixels of the hidden ones. The loss is
computed on the hidden patches only, optionally against per-patch normalised pixels (``norm_pix``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from mmcourse._checks import check_positive, check_probability, check_shape, check_tensor, has_values

__all__ = ["patchify", "unpatchify", "num_kept", "random_masking", "restore_order", "mim_loss"]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into flattened, non-overlapping square patches (row-major, MAE's layout).

    Args:
        images: ``(B, C, H, W)``; ``H`` and ``W`` must be multiples of ``patch_size``.
        patch_size: side ``p`` of a patch in pixels.
    Returns:
        ``(B, L, p * p * C)`` with ``L = (H / p) * (W / p)``; inside a patch the values run over rows,
        columns, then channels.
    """
    check_tensor(images, "images", ndim=4)
    check_positive(patch_size, "patch_size", integer=True)
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image height and width must be multiples of patch_size={patch_size}, got {h}x{w}")
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, patch_size: int, image_size: int | tuple[int, int], channels: int = 3):
    """Inverse of :func:`patchify`.

    Args:
        patches: ``(B, L, p * p * C)``.
        patch_size: ``p``.
        image_size: ``H`` (square) or ``(H, W)``.
        channels: ``C``.
    Returns:
        ``(B, C, H, W)``.
    """
    check_tensor(patches, "patches", ndim=3)
    check_positive(patch_size, "patch_size", integer=True)
    check_positive(channels, "channels", integer=True)
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h % patch_size or w % patch_size:
        raise ValueError(f"image_size must be a multiple of patch_size={patch_size}, got {h}x{w}")
    gh, gw = h // patch_size, w // patch_size
    b, length, dim = patches.shape
    if length != gh * gw or dim != patch_size * patch_size * channels:
        raise ValueError(
            f"patches must have shape (B, {gh * gw}, {patch_size * patch_size * channels}) for a {h}x{w} "
            f"image with patch_size={patch_size} and {channels} channels, got {tuple(patches.shape)}"
        )
    x = patches.reshape(b, gh, gw, patch_size, patch_size, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return x.reshape(b, channels, h, w)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """How many of ``num_patches`` stay visible: ``floor(L * (1 - mask_ratio))``, computed exactly.

    The float expression ``int(L * (1 - mask_ratio))`` falls into a rounding trap: ``1 - 0.9`` is
    ``0.09999999999999998`` in binary floating point, so ``int(10 * (1 - 0.9))`` is 0, not 1. Here the
    ratio is read as the decimal it prints as (``Fraction(repr(0.9)) == 9/10``) and the product is computed
    with integers, so ``num_kept(10, 0.9) == 1`` and ``num_kept(64, 0.75) == 16``.
    """
    check_positive(num_patches, "num_patches", integer=True)
    check_probability(mask_ratio, "mask_ratio")
    ratio = Fraction(repr(float(mask_ratio)))
    return math.floor(num_patches * (1 - ratio))


def random_masking(
    patches: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by argsort of uniform noise.

    Args:
        patches: ``(B, L, D)`` patch tokens (or flattened pixels).
        mask_ratio: share of patches to hide, in (0, 1); exactly ``L - num_kept(L, mask_ratio)`` per row.
        generator: optional ``torch.Generator`` (noise is drawn on its device, CPU by default).
    Returns:
        ``kept``: ``(B, len_keep, D)`` the visible patches, in shuffled order;
        ``mask``: ``(B, L)`` float, 1 = hidden (removed), 0 = visible, in the original patch order;
        ``ids_restore``: ``(B, L)`` long; ``torch.gather`` of ``[kept, hidden]`` with it restores the
        original order (see :func:`restore_order`).
    """
    check_tensor(patches, "patches", ndim=3)
    b, length, dim = patches.shape
    if b == 0 or length == 0:
        raise ValueError(
            f"patches must have at least one sample and one patch, got shape {tuple(patches.shape)}"
        )
    len_keep = num_kept(length, mask_ratio)
    if len_keep == 0:
        raise ValueError(f"mask_ratio={mask_ratio} would hide all {length} patches; keep at least one")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(b, length, generator=generator, device=draw_device).to(patches.device)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(
        b, length, device=patches.device, dtype=patches.dtype if patches.is_floating_point() else None
    )
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def restore_order(shuffled: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Put tokens given in shuffled order (visible first, then fillers) back into the original patch order.

    Args:
        shuffled: ``(B, L, D)`` e.g. ``torch.cat([kept, mask_tokens], dim=1)``.
        ids_restore: ``(B, L)`` from :func:`random_masking`.
    Returns:
        ``(B, L, D)``.
    """
    check_tensor(shuffled, "shuffled", ndim=3)
    check_tensor(ids_restore, "ids_restore", floating=False)
    check_shape(ids_restore, "ids_restore", shuffled.shape[:2], "(B, L) of shuffled (B, L, D)")
    return torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, shuffled.shape[-1]))


def mim_loss(
    pred: torch.Tensor,
    target_patches: torch.Tensor,
    mask: torch.Tensor,
    norm_pix: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mean squared reconstruction error over the hidden patches only.

    Args:
        pred: ``(B, L, D)`` reconstructed patches, in the original order.
        target_patches: ``(B, L, D)`` e.g. ``patchify(images, p)``.
        mask: ``(B, L)`` 1 = hidden (counted), 0 = visible (ignored: changing visible predictions or
            targets does not change the loss, even to NaN).
        norm_pix: normalise each target patch to zero mean and unit variance first (MAE's
        ``norm_pix_loss``).
        eps: added to the variance when ``norm_pix``.
    Returns:
        scalar: ``sum_i mask_i * mse_i / sum_i mask_i``.
    """
    check_tensor(pred, "pred", ndim=3, floating=True)
    check_tensor(target_patches, "target_patches", floating=True)
    check_shape(target_patches, "target_patches", pred.shape, "(B, L, D) of pred")
    check_tensor(mask, "mask")
    check_shape(mask, "mask", pred.shape[:2], "(B, L)")
    if pred.numel() == 0:
        raise ValueError(f"pred must not be empty, got shape {tuple(pred.shape)}")
    check_positive(eps, "eps")
    weight = mask.to(pred.dtype)
    if has_values(weight) and not (weight.sum() > 0):
        raise ValueError("mask hides no patch: the MIM loss is undefined when nothing is masked")
    target = target_patches
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = (
            target.var(dim=-1, keepdim=True, unbiased=True)
            if target.shape[-1] > 1
            else torch.zeros_like(mean)
        )
        target = (target - mean) * (var + eps).rsqrt()  # = / sqrt(var + eps); rsqrt rounds alike on every CPU
    hidden = weight > 0
    # Select before squaring, so visible patches leak nothing (not even NaN) into the loss or its gradient.
    diff = torch.where(
        hidden.unsqueeze(-1), pred - target, torch.zeros((), dtype=pred.dtype, device=pred.device)
    )
    per_patch = (diff**2).mean(dim=-1)
    return (per_patch * weight).sum() / weight.sum()
