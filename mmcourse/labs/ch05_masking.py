"""Seeing what masked pretraining hides — article §4.2, chapter 5.

MLM and MIM start with a random choice of what to hide. This module counts and draws those choices:

* :func:`mask_fates` — how BERT's 80/10/10 rule treated a batch of token ids (``[MASK]``, random token, unchanged);
* :func:`show_token_masking` — captions as rows of token boxes, coloured by what MLM did to each token;
* :func:`hide_patches` — images with their hidden patches painted over (what a SimMIM-style encoder sees);
* :func:`show_patch_masking` — original / masked / reconstructed images, one column per image;
* :func:`masking_figure` — both at once, for chapter 5's masking explorer.

matplotlib is imported here only; every function that draws returns the ``Figure`` and never calls ``show()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from mmcourse._checks import check_positive, check_probability, check_tensor
from mmcourse.objectives.mim import patchify, random_masking, unpatchify
from mmcourse.objectives.mlm import IGNORE_INDEX, mask_tokens

__all__ = [
    "FATE_COLORS", "HIDDEN_GREY", "mask_fates", "show_token_masking", "hide_patches", "show_patch_masking",
    "masking_figure",
]

FATE_COLORS: dict[str, str] = {
    "kept": "#e8e8e8",
    "mask": "#6baed6",
    "random": "#fd8d3c",
    "unchanged": "#74c476",
}
"""Box colours of :func:`show_token_masking`: not chosen, chosen → ``[MASK]``, chosen → random token, chosen but
left unchanged (the model must still predict it)."""

HIDDEN_GREY = 0.35
"""Grey level :func:`hide_patches` paints hidden patches with (darker than ShapesWorld's background)."""


def _check_mlm_triplet(input_ids: torch.Tensor, masked_ids: torch.Tensor, labels: torch.Tensor) -> None:
    for tensor, name in ((input_ids, "input_ids"), (masked_ids, "masked_ids"), (labels, "labels")):
        check_tensor(tensor, name, ndim=2, floating=False)
    if masked_ids.shape != input_ids.shape or labels.shape != input_ids.shape:
        raise ValueError(
            "input_ids, masked_ids and labels must have the same shape (B, L), got "
            f"{tuple(input_ids.shape)}, {tuple(masked_ids.shape)} and {tuple(labels.shape)}"
        )


def mask_fates(
    input_ids: torch.Tensor,
    masked_ids: torch.Tensor,
    labels: torch.Tensor,
    mask_id: int,
    special_ids: Sequence[int] | None = None,
) -> dict[str, int]:
    """Count what :func:`~mmcourse.objectives.mlm.mask_tokens` did.

    Args:
        input_ids: ``(B, L)`` the original ids; masked_ids: ``(B, L)`` the corrupted ids; labels: ``(B, L)`` with
            ``-100`` where nothing is predicted.
        mask_id: the ``[MASK]`` id.
        special_ids: if given, also count the ``eligible`` tokens (those not special), so that
            ``chosen / eligible`` estimates ``mlm_probability``.
    Returns:
        ``{"chosen", "mask", "random", "unchanged"[, "eligible"]}`` as ints. A random replacement that happens to
        draw the original token counts as ``unchanged`` (it is indistinguishable from one).
    """
    _check_mlm_triplet(input_ids, masked_ids, labels)
    if isinstance(mask_id, bool) or not isinstance(mask_id, int):
        raise TypeError(f"mask_id must be an int, got {mask_id!r}")
    chosen = labels != IGNORE_INDEX
    to_mask = chosen & (masked_ids == mask_id)
    unchanged = chosen & (masked_ids == input_ids) & ~to_mask
    to_random = chosen & ~to_mask & ~unchanged
    out = {
        "chosen": int(chosen.sum()),
        "mask": int(to_mask.sum()),
        "random": int(to_random.sum()),
        "unchanged": int(unchanged.sum()),
    }
    if special_ids is not None:
        special = torch.tensor(sorted({int(i) for i in special_ids}), dtype=input_ids.dtype)
        out["eligible"] = int((~torch.isin(input_ids, special.to(input_ids.device))).sum())
    return out


def _token_fates(input_ids, masked_ids, labels, mask_id) -> list[list[str]]:
    chosen = labels != IGNORE_INDEX
    fates = []
    for row in range(input_ids.shape[0]):
        fates.append([])
        for col in range(input_ids.shape[1]):
            if not chosen[row, col]:
                fates[-1].append("kept")
            elif masked_ids[row, col] == mask_id:
                fates[-1].append("mask")
            elif masked_ids[row, col] == input_ids[row, col]:
                fates[-1].append("unchanged")
            else:
                fates[-1].append("random")
    return fates


def _draw_tokens(ax, input_ids, masked_ids, labels, vocab, mask_id, hide_ids, fontsize: float = 8) -> None:
    """Token boxes on ``ax``: one row per sequence, the shown token in the box, the original below if changed."""
    fates = _token_fates(input_ids, masked_ids, labels, mask_id)
    rows = input_ids.shape[0]
    width = 1.0
    max_cols = 1
    for r in range(rows):
        col = 0
        for c in range(input_ids.shape[1]):
            original = int(input_ids[r, c])
            if original in hide_ids:
                continue
            shown = int(masked_ids[r, c])
            fate = fates[r][c]
            y = rows - 1 - r
            ax.add_patch(Rectangle((col * width + 0.03, y + 0.28), width - 0.06, 0.6, color=FATE_COLORS[fate], lw=0))
            ax.text(col * width + width / 2, y + 0.58, vocab[shown], ha="center", va="center", fontsize=fontsize)
            if fate in ("mask", "random"):
                ax.text(
                    col * width + width / 2,
                    y + 0.12,
                    f"({vocab[original]})",
                    ha="center",
                    va="center",
                    fontsize=fontsize - 1.5,
                    color="#555555",
                )
            col += 1
        max_cols = max(max_cols, col)
    ax.set_xlim(0, max_cols * width)
    ax.set_ylim(-0.05, rows)
    ax.axis("off")


def show_token_masking(
    input_ids: torch.Tensor,
    masked_ids: torch.Tensor,
    labels: torch.Tensor,
    vocab: Sequence[str],
    mask_id: int,
    hide_ids: Sequence[int] = (0,),
    title: str | None = None,
) -> Figure:
    """Captions as rows of token boxes, coloured by their MLM fate (see :data:`FATE_COLORS`).

    Args:
        input_ids, masked_ids, labels: ``(B, L)`` as for :func:`mask_fates` (a handful of rows).
        vocab: id → token string (``tokenizer.vocab``).
        mask_id: the ``[MASK]`` id.
        hide_ids: ids not drawn (padding by default).
        title: figure title.
    Each box shows the token the model *reads*; under a replaced token, its original in brackets (what the model
    must predict).
    """
    _check_mlm_triplet(input_ids, masked_ids, labels)
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids must hold at least one sequence")
    hi = int(torch.maximum(input_ids.max(), masked_ids.max()))
    if hi >= len(vocab):
        raise ValueError(f"vocab has {len(vocab)} entries but the ids go up to {hi}")
    rows = input_ids.shape[0]
    fig, ax = plt.subplots(figsize=(10, 0.55 * rows + 0.9))
    _draw_tokens(ax, input_ids, masked_ids, labels, vocab, mask_id, set(hide_ids))
    handles = [Patch(color=c, label=label) for label, c in FATE_COLORS.items()]
    labels_text = ["not chosen", "chosen -> [MASK]", "chosen -> random token", "chosen, left unchanged"]
    for handle, text in zip(handles, labels_text, strict=True):
        handle.set_label(text)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def hide_patches(images: torch.Tensor, hidden: torch.Tensor, patch_size: int, fill: float = HIDDEN_GREY):
    """``images (B, C, H, W)`` with every patch where ``hidden (B, L)`` is 1 painted ``fill`` → ``(B, C, H, W)``.

    The patches are :func:`~mmcourse.objectives.mim.patchify`'s (row-major, ``L = (H / p) * (W / p)``).
    """
    check_tensor(images, "images", ndim=4, floating=True)
    check_tensor(hidden, "hidden", ndim=2)
    patches = patchify(images, patch_size)
    if hidden.shape != patches.shape[:2]:
        raise ValueError(
            f"hidden must have shape (B, L) = {tuple(patches.shape[:2])} for patch_size={patch_size}, "
            f"got {tuple(hidden.shape)}"
        )
    keep = (hidden == 0).unsqueeze(-1).to(images.dtype)
    filled = patches * keep + fill * (1 - keep)
    return unpatchify(filled, patch_size, tuple(images.shape[-2:]), images.shape[1])


def _show_image(ax, image: torch.Tensor) -> None:
    ax.imshow(image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_patch_rows(axes, images, hidden, patch_size, reconstructions, row_titles) -> None:
    masked = hide_patches(images, hidden, patch_size)
    rows = [images, masked] + ([reconstructions] if reconstructions is not None else [])
    for r, row in enumerate(rows):
        for c in range(images.shape[0]):
            _show_image(axes[r][c], row[c])
        axes[r][0].set_ylabel(row_titles[r], fontsize=9)


def show_patch_masking(
    images: torch.Tensor,
    hidden: torch.Tensor,
    patch_size: int,
    reconstructions: torch.Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """Original, masked and (optionally) reconstructed images, one column per image.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1] (a handful).
        hidden: ``(B, L)`` 1 = hidden patch (from :func:`~mmcourse.objectives.mim.random_masking`).
        patch_size: side of a patch in pixels.
        reconstructions: ``(B, 3, H, W)`` e.g. ``ALBEF.reconstruct(...)[1]``.
        title: figure title.
    """
    check_tensor(images, "images", ndim=4, floating=True)
    if images.shape[0] == 0 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W) with B >= 1, got {tuple(images.shape)}")
    if reconstructions is not None:
        check_tensor(reconstructions, "reconstructions", ndim=4, floating=True)
        if reconstructions.shape != images.shape:
            raise ValueError(
                f"reconstructions must have the images' shape {tuple(images.shape)}, got {tuple(reconstructions.shape)}"
            )
    nrows = 3 if reconstructions is not None else 2
    b = images.shape[0]
    fig, axes = plt.subplots(nrows, b, figsize=(1.3 * b + 0.6, 1.35 * nrows + 0.3), squeeze=False)
    _draw_patch_rows(axes, images, hidden, patch_size, reconstructions, ["original", "masked", "reconstructed"])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def masking_figure(
    images: torch.Tensor,
    patch_size: int,
    mask_ratio: float,
    input_ids: torch.Tensor,
    vocab: Sequence[str],
    special_ids: Sequence[int],
    mask_id: int,
    mlm_probability: float,
    seed: int = 0,
    reconstruct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Figure:
    """MIM and MLM side by side: images with a share ``mask_ratio`` of their patches hidden (and reconstructed, if
    ``reconstruct`` is given) above captions corrupted by BERT's rule at ``mlm_probability``.

    Args:
        images: ``(B, 3, H, W)``; patch_size: MIM patch side; mask_ratio: share of patches hidden, in (0, 1).
        input_ids: ``(B', L)`` encoded captions; vocab, special_ids, mask_id: the tokenizer's.
        mlm_probability: in (0, 1), the share of ordinary tokens chosen.
        seed: one seed for both random draws (same seed → same figure).
        reconstruct: ``reconstruct(images, hidden) → (B, 3, H, W)`` images with the hidden patches filled in.
    """
    check_tensor(images, "images", ndim=4, floating=True)
    check_positive(patch_size, "patch_size", integer=True)
    check_probability(mask_ratio, "mask_ratio")
    check_probability(mlm_probability, "mlm_probability")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    _, hidden, _ = random_masking(patchify(images, patch_size), mask_ratio, generator)
    masked_ids, labels = mask_tokens(
        input_ids, list(special_ids), len(vocab), mlm_probability, generator, mask_id=mask_id
    )
    recon = reconstruct(images, hidden) if reconstruct is not None else None
    n_img_rows = 3 if recon is not None else 2
    b = images.shape[0]
    text_rows = input_ids.shape[0]
    fig = plt.figure(figsize=(max(8.0, 1.3 * b + 0.6), 1.3 * n_img_rows + 0.5 * text_rows + 1.2))
    grid = fig.add_gridspec(n_img_rows + 1, b, height_ratios=[1.0] * n_img_rows + [0.42 * text_rows])
    axes = [[fig.add_subplot(grid[r, c]) for c in range(b)] for r in range(n_img_rows)]
    _draw_patch_rows(axes, images, hidden, patch_size, recon, ["original", "masked", "reconstructed"])
    hidden_count = int(hidden[0].sum())
    axes[0][0].set_title(f"MIM: {hidden_count} of {hidden.shape[1]} patches hidden", fontsize=9, loc="left")
    ax_text = fig.add_subplot(grid[n_img_rows, :])
    _draw_tokens(ax_text, input_ids, masked_ids, labels, vocab, mask_id, {0})
    fates = mask_fates(input_ids, masked_ids, labels, mask_id)
    ax_text.set_title(
        f"MLM at p = {mlm_probability:.2f}: {fates['chosen']} tokens chosen "
        f"({fates['mask']} [MASK], {fates['random']} random, {fates['unchanged']} unchanged)",
        fontsize=9,
        loc="left",
    )
    fig.tight_layout()
    return fig
