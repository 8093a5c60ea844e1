"""Vectorised rendering of ShapesWorld scenes: whole batches at once, one tensor mask per object slot and shape.

Serves :class:`mmcourse.data.ShapesWorld` (and chapter 1's "modalities as tensors"). Each shape is a signed
distance function evaluated on the pixel grid of every scene at once; coverage ``clamp(0.5 - distance, 0, 1)``
gives one pixel of anti-aliased edge. No Python loop runs over pixels or scenes, only over object slots and shapes.
"""

from __future__ import annotations

import math

import torch

from mmcourse.data.layout import object_radius
from mmcourse.data.vocab import COLOR_RGB, COLORS, SHAPES

BACKGROUND = 0.08
"""Grey level of the empty canvas."""

_COLOR_TABLE = torch.tensor([COLOR_RGB[c] for c in COLORS])  # (C, 3)
_SQRT3_2 = math.sqrt(3.0) / 2.0


def _circle(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.hypot(dx, dy).sub_(r)  # hypot, not sqrt: the same bits on every CPU (README, stored outputs)


def _square(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # half side chosen so that the square has the circle's area: (2a)^2 = pi r^2
    return torch.maximum(dx.abs(), dy.abs()).sub_(0.886 * r)


def _triangle(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # equilateral, pointing up, centroid at the centre, circumradius 1.3 r; inradius = circumradius / 2
    return torch.maximum(_SQRT3_2 * dx.abs() - 0.5 * dy, dy).sub_(0.65 * r)


def _cross(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    ax, ay = dx.abs(), dy.abs()
    arm, half_width = 1.1 * r, 0.4 * r
    horizontal = torch.maximum(ax - arm, ay - half_width)
    vertical = torch.maximum(ax - half_width, ay - arm)
    return torch.minimum(horizontal, vertical)


_SIGNED_DISTANCE = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross}


def _slot_coverage(
    out: torch.Tensor, shapes: torch.Tensor, radius: torch.Tensor, positions: torch.Tensor, image_size: int
) -> None:
    """Write one object slot's coverage of every scene into ``out``.

    Args:
        out: (n, H, W) buffer, overwritten (zeros where the slot is empty).
        shapes: (n,) shape ids (-1 = absent); radius: (n,) pixels; positions: (n, 2) in [0, 1].
    """
    h = image_size
    centres = torch.arange(h, dtype=torch.float32) + 0.5  # pixel centres, in pixels
    out.zero_()
    for shape_id, shape in enumerate(SHAPES):
        rows = (shapes == shape_id).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        dx = centres[None, None, :] - positions[rows, 0, None, None] * h  # (n, 1, W)
        dy = centres[None, :, None] - positions[rows, 1, None, None] * h  # (n, H, 1)
        distance = _SIGNED_DISTANCE[shape](dx, dy, radius[rows, None, None])  # (n, H, W)
        out[rows] = distance.neg_().add_(0.5).clamp_(0.0, 1.0)


def object_coverage(
    shapes: torch.Tensor,
    sizes: torch.Tensor,
    positions: torch.Tensor,
    image_size: int,
    *,
    object_scale: float = 1.0,
) -> torch.Tensor:
    """How much of each pixel each object covers (``clamp(0.5 - signed distance, 0, 1)``).

    Args:
        shapes, sizes: (N, K) ids (-1 where absent); positions: (N, K, 2) centres (x, y) in [0, 1].
        image_size: side H = W in pixels.
    Returns:
        coverage: (N, K, H, W) in [0, 1]; all zero for absent objects.
    """
    n, k = shapes.shape
    radius = object_radius(shapes, sizes, object_scale) * image_size  # (N, K) pixels
    coverage = torch.empty(k, n, image_size, image_size)
    for slot in range(k):
        _slot_coverage(coverage[slot], shapes[:, slot], radius[:, slot], positions[:, slot], image_size)
    return coverage.transpose(0, 1)


def render_scenes(
    colors: torch.Tensor,
    shapes: torch.Tensor,
    sizes: torch.Tensor,
    positions: torch.Tensor,
    image_size: int,
    *,
    object_scale: float = 1.0,
    background: float = BACKGROUND,
    chunk: int = 512,
) -> torch.Tensor:
    """Paint every scene: a grey canvas, then each object in slot order, alpha-blended by its coverage
    (``canvas = canvas * (1 - alpha) + alpha * colour``).

    Args:
        colors, shapes, sizes: (N, K) ids (-1 where absent); positions: (N, K, 2) in [0, 1].
        chunk: scenes painted together (bounds the temporaries, which keeps allocation cheap).
    Returns:
        images: (N, 3, H, W) float32 in [0, 1].
    """
    n, k = colors.shape
    h = image_size
    images = torch.empty(n, 3, h, h)
    radius = object_radius(shapes, sizes, object_scale) * h  # (N, K) pixels
    fill = _COLOR_TABLE[colors.clamp(min=0)]  # (N, K, 3)
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        canvas = images[part].fill_(float(background))  # a view: painted in place
        alpha = torch.empty(canvas.size(0), 1, h, h)
        for slot in range(k):
            _slot_coverage(alpha[:, 0], shapes[part, slot], radius[part, slot], positions[part, slot], h)
            canvas.mul_(1.0 - alpha).addcmul_(alpha, fill[part, slot, :, None, None])
    return images
