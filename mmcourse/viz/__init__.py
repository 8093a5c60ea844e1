"""Drawing ShapesWorld: scene grids with captions, the colour x shape palette, VQA samples, hard negatives and
spectrograms.

Serves chapter 1 (what the data looks like in each modality) and every later chapter that shows examples.
matplotlib is imported here only; every function returns the ``Figure`` and never calls ``show()``, so in a
notebook end the cell with ``plt.show()`` or ``_ = show_scenes(...)``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from mmcourse._checks import check_tensor
from mmcourse.data import NEGATIVE_KINDS, ShapesWorld
from mmcourse.data.vocab import COLORS, SHAPES

__all__ = ["image_to_numpy", "show_scenes", "show_palette", "show_vqa", "show_negatives", "show_spectrogram"]


def image_to_numpy(image: torch.Tensor):
    """(3, H, W) float tensor in [0, 1] -> (H, W, 3) numpy array for ``imshow``."""
    check_tensor(image, "image", ndim=3, floating=True)
    if image.size(0) != 3:
        raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _check_index(world: ShapesWorld, index, name: str = "index") -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"{name} must be an int, got {index!r} ({type(index).__name__})")
    if not 0 <= index < len(world):
        raise ValueError(f"{name} must be in [0, {len(world)}), got {index}")
    return index


def show_scenes(
    world_or_images,
    indices: Sequence[int] | None = None,
    captions: bool | Sequence[str] = True,
    ncols: int = 8,
    *,
    cell_size: float = 1.7,
    wrap: int = 20,
    title: str | None = None,
) -> Figure:
    """A grid of scenes, each titled with its caption.

    Args:
        world_or_images: a ShapesWorld, or images (N, 3, H, W) / one image (3, H, W) in [0, 1].
        indices: which scenes to draw (default: the first 16, or all if fewer).
        captions: True -> the world's captions (nothing for bare images), False -> none, or one str per drawn
            scene (e.g. predictions).
        ncols: columns of the grid; cell_size: inches per cell; wrap: caption characters per line.
    Returns:
        the matplotlib Figure.
    """
    if isinstance(world_or_images, ShapesWorld):
        images, world_captions = world_or_images.images, world_or_images.captions
    elif isinstance(world_or_images, torch.Tensor):
        check_tensor(world_or_images, "world_or_images", ndim=(3, 4), floating=True)
        images = world_or_images[None] if world_or_images.dim() == 3 else world_or_images
        if images.size(1) != 3:
            raise ValueError(f"world_or_images must have shape (N, 3, H, W), got {tuple(world_or_images.shape)}")
        world_captions = None
    else:
        raise TypeError(
            f"world_or_images must be a ShapesWorld or an image tensor, got {type(world_or_images).__name__}"
        )
    n = images.size(0)
    if indices is None:
        indices = list(range(min(n, 16)))
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    indices = list(indices)
    if not indices:
        raise ValueError("indices must select at least one scene, got an empty list")
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"indices must be ints in [0, {n}), got {i!r}")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    if captions is True:
        texts = [world_captions[i] for i in indices] if world_captions is not None else None
    elif captions is False or captions is None:
        texts = None
    else:
        texts = list(captions)
        if len(texts) != len(indices) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"captions must be True, False or {len(indices)} str (one per scene), got {captions!r}")
    ncols = min(ncols, len(indices))
    nrows = -(-len(indices) // ncols)
    wrapped = [textwrap.fill(t, wrap) for t in texts] if texts else None
    text_height = 0.16 * max(t.count("\n") + 1 for t in wrapped) if wrapped else 0.0
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(cell_size * ncols, (cell_size + text_height) * nrows), squeeze=False,
        layout="constrained",  # room for every caption (tight_layout let 3-line captions overlap the row above)
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(indices):
        ax = axes.flat[k]
        ax.imshow(image_to_numpy(images[i]), interpolation="nearest")
        if wrapped:
            ax.set_title(wrapped[k], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def show_palette(image_size: int = 32, *, cell_size: float = 1.0) -> Figure:
    """Every colour (rows) x shape (columns) of ShapesWorld, large and centred: the world's visual vocabulary."""
    from mmcourse.data.render import render_scenes

    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 256:
        raise ValueError(f"image_size must be an int in [8, 256], got {image_size!r}")
    c, s = len(COLORS), len(SHAPES)
    colors = torch.arange(c).repeat_interleave(s)[:, None]
    shapes = torch.arange(s).repeat(c)[:, None]
    sizes = torch.ones_like(colors)
    positions = torch.full((c * s, 1, 2), 0.5)
    images = render_scenes(colors, shapes, sizes, positions, image_size, object_scale=1.3)
    fig, axes = plt.subplots(c, s, figsize=(cell_size * s + 1.0, cell_size * c), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.imshow(image_to_numpy(images[k]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        row, col = divmod(k, s)
        if row == 0:
            ax.set_title(SHAPES[col], fontsize=9)
        if col == 0:
            ax.set_ylabel(COLORS[row], fontsize=9)
    fig.tight_layout()
    return fig


def show_vqa(world: ShapesWorld, index: int = 0, *, max_questions: int | None = None) -> Figure:
    """One scene beside its questions and answers (all of them, or the first ``max_questions``)."""
    if not isinstance(world, ShapesWorld):
        raise TypeError(f"world must be a ShapesWorld, got {type(world).__name__}")
    index = _check_index(world, index)
    qa = world.questions(index)[:max_questions]
    fig, (ax_img, ax_txt) = plt.subplots(
        1, 2, figsize=(9, max(2.8, 0.2 * len(qa) + 0.6)), gridspec_kw={"width_ratios": [1, 2.6]}
    )
    ax_img.imshow(image_to_numpy(world.images[index]), interpolation="nearest")
    ax_img.set_title(textwrap.fill(world.captions[index], 28), fontsize=9)
    ax_img.axis("off")
    ax_txt.axis("off")
    lines = [f"[{q['type']}] {q['question']}  ->  {q['answer']}" for q in qa]
    ax_txt.text(
        0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=9, family="monospace", transform=ax_txt.transAxes
    )
    fig.tight_layout()
    return fig


def show_negatives(world: ShapesWorld, index: int = 0, kinds: Sequence[str] | None = None) -> Figure:
    """One scene, its true caption (green) and its hard negatives (red), one line per kind."""
    if not isinstance(world, ShapesWorld):
        raise TypeError(f"world must be a ShapesWorld, got {type(world).__name__}")
    index = _check_index(world, index)
    kinds = list(NEGATIVE_KINDS) if kinds is None else list(kinds)
    for kind in kinds:
        if kind not in NEGATIVE_KINDS:
            raise ValueError(f"kinds must be names from {list(NEGATIVE_KINDS)}, got {kind!r}")
    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(8, 3.0), gridspec_kw={"width_ratios": [1, 2.4]})
    ax_img.imshow(image_to_numpy(world.images[index]), interpolation="nearest")
    ax_img.axis("off")
    ax_txt.axis("off")
    rows = [("caption", world.captions[index], "tab:green")]
    rows += [(k, world.negative(index, k) or "(impossible for this scene)", "tab:red") for k in kinds]
    step = 1.0 / (len(rows) + 1)
    for r, (name, text, color) in enumerate(rows):
        ax_txt.text(
            0.0,
            1.0 - r * step,
            f"{name:>16}: {text}",
            va="top",
            ha="left",
            fontsize=9,
            family="monospace",
            color=color,
            transform=ax_txt.transAxes,
        )
    fig.tight_layout()
    return fig


def show_spectrogram(
    world_or_spectrogram,
    index: int = 0,
    *,
    waveform: torch.Tensor | None = None,
    sample_rate: int = 8000,
    hop_length: int = 64,
) -> Figure:
    """A scene's sound: its image, waveform and log-mel spectrogram (or a bare spectrogram / waveform pair).

    Args:
        world_or_spectrogram: a ShapesWorld built with ``audio=True``, or a spectrogram (n_mels, frames).
        index: the scene, when a world is given.
        waveform: (T,) waveform to draw above a bare spectrogram (optional).
        sample_rate, hop_length: for the time axes of a bare spectrogram (a world knows its own).
    """
    image = caption = None
    if isinstance(world_or_spectrogram, ShapesWorld):
        world = world_or_spectrogram
        if not world.has_audio:
            raise ValueError("world_or_spectrogram must be a ShapesWorld built with audio=True, got audio=False")
        index = _check_index(world, index)
        spectrogram, waveform = world.spectrograms[index], world.audio[index]
        image, caption, sample_rate = world.images[index], world.captions[index], world.sample_rate
    elif isinstance(world_or_spectrogram, torch.Tensor):
        spectrogram = check_tensor(world_or_spectrogram, "world_or_spectrogram", ndim=2, floating=True)
        if waveform is not None:
            check_tensor(waveform, "waveform", ndim=1, floating=True)
    else:
        raise TypeError(
            f"world_or_spectrogram must be a ShapesWorld or a (n_mels, frames) tensor, got "
            f"{type(world_or_spectrogram).__name__}"
        )
    panels = (image is not None) + (waveform is not None) + 1
    widths = ([1.0] if image is not None else []) + ([2.0] if waveform is not None else []) + [2.0]
    fig, axes = plt.subplots(
        1, panels, figsize=(3.0 * panels, 2.8), gridspec_kw={"width_ratios": widths}, squeeze=False
    )
    axes = list(axes.flat)
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(image_to_numpy(image), interpolation="nearest")
        ax.set_title(textwrap.fill(caption, 26), fontsize=8)
        ax.axis("off")
    if waveform is not None:
        ax = axes.pop(0)
        seconds = torch.arange(waveform.numel()) / sample_rate
        ax.plot(seconds.cpu().numpy(), waveform.detach().cpu().numpy(), linewidth=0.5)
        ax.set_xlabel("time (s)")
        ax.set_title("waveform", fontsize=9)
    ax = axes.pop(0)
    frames = spectrogram.size(1)
    extent = (0.0, frames * hop_length / sample_rate, 0, spectrogram.size(0))
    im = ax.imshow(spectrogram.detach().cpu().numpy(), origin="lower", aspect="auto", extent=extent, cmap="magma")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    ax.set_title("log-mel spectrogram", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig
