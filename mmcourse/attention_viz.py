"""Words → image patches: cross-attention heat-maps (article §3.2, chapter 3).

A cross-attention layer gives, for every text token and every head, a probability distribution over the image
tokens. When the image tokens form a ``g × g`` grid (ViT patches, CNN cells, :class:`mmcourse.relational.
PatchStatsEncoder` patches, all row-major), that distribution is a ``g × g`` heat-map: where the word looks.

* :func:`patch_heatmaps` — weights ``(B, H, L, N)`` → heat-maps ``(B, L, g, g)`` (mean or one head);
* :func:`word_patch_attention` — run a :class:`mmcourse.fusion.CrossAttentionFusionClassifier` and return the
  heat-maps of one fusion layer;
* :func:`attention_mass` — how much of a word's attention falls on a region (e.g. the pixels of the object the
  word names), a number to check a heat-map with;
* :func:`show_word_attention` — the image and one overlay per chosen word (matplotlib, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mmcourse._checks import check_tensor
from mmcourse.train import evaluating, module_device

__all__ = ["patch_heatmaps", "word_patch_attention", "attention_mass", "upsample_heatmap", "show_word_attention"]


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
            ``(logits, [weights (B, H, L, N) per layer])``, e.g. :class:`mmcourse.fusion.
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
