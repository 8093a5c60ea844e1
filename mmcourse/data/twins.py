"""Counterfactual twins: ShapesWorld scenes re-rendered so that one of their hard-negative captions is true.

A twin is the ideal hard negative on both sides at once: its image is the hard negative *image* for the source's
caption, its caption the hard negative *text* for the source image. Chapter 4 shows one (a mirrored scene CLIP
cannot tell from its source), chapter 5 trains and tests on them (:mod:`mmcourse.models.albef`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmcourse._checks import check_choice
from mmcourse.data import language
from mmcourse.data.render import render_scenes
from mmcourse.data.vocab import COLORS, SHAPES

__all__ = ["TWIN_KINDS", "counterfactual_twins"]

TWIN_KINDS: tuple[str, ...] = ("swap_relation", "swap_colors")
"""Counterfactual twins :func:`counterfactual_twins` can render: the relation inverted (the scene mirrored along
the relation's axis) or the two objects' colours exchanged."""


def counterfactual_twins(world, indices: Sequence[int], kinds: Sequence[str] = TWIN_KINDS) -> dict:
    """Re-render two-object scenes so that one of their hard-negative captions becomes true.

    ``swap_relation``: the scene mirrored along its relation's axis (x → 1 − x for "left of"/"right of",
    y → 1 − y for "above"/"below": shapes stay upright, distances and overlaps unchanged), so "a red circle left
    of a blue square" becomes "a red circle right of a blue square". ``swap_colors``: the two objects exchange
    colours (skipped when they share a colour, or when the world excludes the new combination). Each twin is the
    ideal hard negative *image* for its source's caption, and its caption the ideal hard negative *text* for the
    source image — with a correct positive on both sides.

    Returns:
        ``{"images": (M, 3, S, S), "captions": [M str] (the twins' canonical captions), "source": LongTensor (M,)
        (the scene each twin comes from), "kind": [M str], "objects": [M lists of SceneObject] (sizes not
        tracked)}``; noise-free renders at the world's size and scale.
    """
    for kind in kinds:
        check_choice(kind, "kinds", TWIN_KINDS)
    allowed = set(world.combinations)
    colors_out, shapes_out, sizes_out, positions_out, captions, source, made, scenes = [], [], [], [], [], [], [], []
    for i in (int(i) for i in indices):
        if int(world.num_objects[i]) != 2:
            continue
        colors = world.object_colors[i, :2].clone()
        shapes = world.object_shapes[i, :2].clone()
        sizes = world.object_sizes[i, :2].clone()
        positions = world.positions[i, :2].clone()
        for kind in kinds:
            c, p = colors.clone(), positions.clone()
            if kind == "swap_relation":
                horizontal = language.relation_of_offset(*(p[0] - p[1]).tolist()) in ("left of", "right of")
                axis = 0 if horizontal else 1
                p[:, axis] = 1.0 - p[:, axis]
            else:
                if c[0] == c[1]:
                    continue
                c = c.flip(0)
                if any((COLORS[a], SHAPES[b]) not in allowed for a, b in zip(c.tolist(), shapes.tolist(), strict=True)):
                    continue
            objects = [
                language.SceneObject(COLORS[a], SHAPES[b], "small", float(x), float(y))
                for a, b, (x, y) in zip(c.tolist(), shapes.tolist(), p.tolist(), strict=True)
            ]
            colors_out.append(c), shapes_out.append(shapes), sizes_out.append(sizes), positions_out.append(p)
            captions.append(language.caption(objects))
            scenes.append(objects)
            source.append(i)
            made.append(kind)
    if not source:
        empty = torch.zeros(0, 3, world.image_size, world.image_size)
        return {"images": empty, "captions": [], "source": torch.zeros(0, dtype=torch.long), "kind": [], "objects": []}
    images = render_scenes(
        torch.stack(colors_out),
        torch.stack(shapes_out),
        torch.stack(sizes_out),
        torch.stack(positions_out),
        world.image_size,
        object_scale=world.object_scale,
    )
    return {"images": images, "captions": captions, "source": torch.tensor(source), "kind": made, "objects": scenes}
