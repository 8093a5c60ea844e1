"""Scene layout of ShapesWorld: which objects a scene holds and where they sit (vectorised sampling).

Serves :class:`mmcourse.data.ShapesWorld`. A layout is resolution-independent: positions and radii are fractions
of the image side, so the same seed gives the same scenes at 16, 32 or 64 px.
"""

from __future__ import annotations

import torch

from mmcourse.data.vocab import SHAPE_BOUND, SHAPES, SIZE_RADIUS, SIZES

MIN_GAP = 0.02
"""Extra distance (fraction of the side) between the enclosing circles of two objects when ``max_overlap=0``."""

_SHAPE_BOUND = torch.tensor([SHAPE_BOUND[s] for s in SHAPES])
_SIZE_RADIUS = torch.tensor(SIZE_RADIUS)


def object_radius(shapes: torch.Tensor, sizes: torch.Tensor, object_scale: float) -> torch.Tensor:
    """Radius of each object as a fraction of the image side.

    Args:
        shapes, sizes: (N, K) shape / size ids, -1 for absent objects.
    Returns:
        (N, K) radius (0 for absent objects).
    """
    radius = _SIZE_RADIUS[sizes.clamp(min=0)] * object_scale
    return torch.where(shapes >= 0, radius, torch.zeros(()))


def bounding_radius(shapes: torch.Tensor, sizes: torch.Tensor, object_scale: float) -> torch.Tensor:
    """Radius of the circle enclosing each object (fraction of the image side), (N, K); 0 for absent objects."""
    return object_radius(shapes, sizes, object_scale) * _SHAPE_BOUND[shapes.clamp(min=0)]


def sample_objects(
    num_samples: int,
    *,
    min_objects: int,
    max_objects: int,
    pool: torch.Tensor,
    required: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the number of objects and their attributes for every scene.

    Within a scene no two objects share the same (colour, shape) pair, so "the red circle" always names one
    object. Object order inside a scene is random (object 0 is the subject of the caption).

    Args:
        pool: (P, 2) allowed (colour id, shape id) pairs, P >= max_objects.
        required: (R, 2) pairs of which every scene holds exactly one chosen at random (and possibly others by
            chance), or None. Every required pair must be in ``pool``.
    Returns:
        num_objects (N,), colors (N, K), shapes (N, K), sizes (N, K) with K = max_objects; -1 where absent.
    """
    n, k = num_samples, max_objects
    num_objects = torch.randint(min_objects, max_objects + 1, (n,), generator=generator)
    keys = torch.rand(n, pool.size(0), generator=generator)
    if required is not None:
        pick = torch.randint(0, required.size(0), (n,), generator=generator)
        # position of each required pair inside the pool: (R,)
        where_in_pool = (required[:, None, :] == pool[None, :, :]).all(-1).float().argmax(1)
        keys[torch.arange(n), where_in_pool[pick]] = -1.0  # sorts first: slot 0 holds the required pair
    chosen = pool[keys.argsort(dim=1)[:, :k]]  # (N, K, 2), distinct pairs
    # shuffle the real objects of each scene so the required one is not always the subject
    slot = torch.arange(k)[None, :]
    present = slot < num_objects[:, None]
    order_keys = torch.rand(n, k, generator=generator) + (~present).float() * 2.0
    chosen = torch.gather(chosen, 1, order_keys.argsort(dim=1)[:, :, None].expand(n, k, 2))
    sizes = torch.randint(0, len(SIZES), (n, k), generator=generator)
    absent = torch.full((n, k), -1, dtype=torch.long)
    colors = torch.where(present, chosen[..., 0], absent)
    shapes = torch.where(present, chosen[..., 1], absent)
    sizes = torch.where(present, sizes, absent)
    return num_objects, colors, shapes, sizes


def place_objects(
    shapes: torch.Tensor,
    sizes: torch.Tensor,
    num_objects: torch.Tensor,
    *,
    object_scale: float,
    max_overlap: float,
    relation_margin: float,
    generator: torch.Generator,
    candidates: int = 64,
    max_rounds: int = 200,
) -> torch.Tensor:
    """Place every object inside the image so that objects do not overlap and relations are unambiguous.

    Objects are placed one slot at a time, all scenes at once: each slot draws ``candidates`` random centres per
    scene and keeps the first that satisfies, against every earlier object,

    - separation: centre distance >= ``(1 - max_overlap) * (bound_a + bound_b)`` (enclosing-circle radii), plus
      ``MIN_GAP`` when ``max_overlap=0``, so the shapes never intersect (only anti-aliased edge pixels may);
    - a clear dominant axis: ``| |dx| - |dy| | >= relation_margin``, so "left of" vs "above" is never a tie.

    Scenes where some slot finds no valid candidate are drawn again (only those scenes).

    Args:
        shapes, sizes: (N, K) ids, -1 where absent; num_objects: (N,).
    Returns:
        positions: (N, K, 2) object centres (x, y) as fractions of the image side in [0, 1]; -1 where absent.
    """
    n, k = shapes.shape
    bound = bounding_radius(shapes, sizes, object_scale)
    positions = torch.full((n, k, 2), -1.0)
    todo = torch.arange(n)
    for _ in range(max_rounds):
        if todo.numel() == 0:
            return positions
        placed, ok = _try_place(bound[todo], num_objects[todo], max_overlap, relation_margin, candidates, generator)
        positions[todo[ok]] = placed[ok]
        todo = todo[~ok]
    if todo.numel() == 0:
        return positions
    raise ValueError(
        f"objects do not fit: max_objects={k}, object_scale={object_scale}, relation_margin={relation_margin}, "
        f"max_overlap={max_overlap} left {todo.numel()} scenes unplaced after {max_rounds} rounds; allowed: "
        "lower object_scale, relation_margin or max_objects, or raise max_overlap"
    )


def _try_place(
    bound: torch.Tensor,
    num_objects: torch.Tensor,
    max_overlap: float,
    relation_margin: float,
    candidates: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One attempt for a batch of scenes: (positions (n, K, 2), success (n,))."""
    n, k = bound.shape
    positions = torch.full((n, k, 2), -1.0)
    ok = torch.ones(n, dtype=torch.bool)
    rows = torch.arange(n)
    for slot in range(k):
        active = num_objects > slot
        low = bound[:, slot, None, None]  # (n, 1, 1): keep the whole object inside the image
        cand = low + torch.rand(n, candidates, 2, generator=generator) * (1.0 - 2.0 * low)  # (n, M, 2)
        valid = torch.ones(n, candidates, dtype=torch.bool)
        for other in range(slot):
            delta = cand - positions[:, other, None, :]  # (n, M, 2)
            need = (1.0 - max_overlap) * (bound[:, slot] + bound[:, other]) + MIN_GAP * (max_overlap == 0)
            separated = delta.norm(dim=-1) >= need[:, None]
            clear_axis = (delta[..., 0].abs() - delta[..., 1].abs()).abs() >= relation_margin
            valid &= separated & clear_axis
        first = valid.to(torch.uint8).argmax(dim=1)  # index of the first valid candidate
        found = valid.any(dim=1)
        positions[:, slot] = torch.where(active[:, None], cand[rows, first], torch.full((1, 2), -1.0))
        ok &= found | ~active
    return positions, ok
