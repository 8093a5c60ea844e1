"""The vocabulary of ShapesWorld: colours, shapes, sizes, relations, question types, answers, sentence words.

Serves every chapter through :mod:`mmcourse.data` (course design, "The data world: ShapesWorld"). Everything
here is a constant; attribute *indices* used across the package (``world.attribute("color")``, labels, answer
ids) are positions in these tuples, so they never depend on which world was generated.
"""

from __future__ import annotations

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
"""Colour names; index ``i`` is colour id ``i`` everywhere in the package."""

COLOR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.10, 0.75, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.65, 0.20, 0.90),
    "orange": (1.00, 0.55, 0.00),
}
"""Fill colour of each colour name, RGB in [0, 1] (pairwise distances >= 0.35, far from the background)."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Shape names; index ``i`` is shape id ``i`` everywhere in the package."""

SIZES: tuple[str, ...] = ("small", "large")
"""Size names; index 0 = small, 1 = large."""

SIZE_RADIUS: tuple[float, ...] = (0.12, 0.18)
"""Object radius per size, as a fraction of the image side (before ``object_scale``)."""

SHAPE_BOUND: dict[str, float] = {"circle": 1.0, "square": 1.26, "triangle": 1.3, "cross": 1.17}
"""Radius of the circle that encloses each shape, in units of the object radius (used to prevent overlap)."""

CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)
"""Names of the (colour, shape) classes: class id = ``color_id * len(SHAPES) + shape_id``."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
"""Spatial relations, decided by the dominant axis between two object centres (image y grows downwards)."""

INVERSE_RELATION: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
PERPENDICULAR_RELATIONS: dict[str, tuple[str, str]] = {
    "left of": ("above", "below"),
    "right of": ("above", "below"),
    "above": ("left of", "right of"),
    "below": ("left of", "right of"),
}
LONG_RELATION: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
RELATION_ANSWER: dict[str, str] = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
"""The one-word answer to "where is X relative to Y?"."""

SYNONYMS: dict[str, str] = {"circle": "disk", "square": "box", "above": "over", "below": "under"}
"""Words that paraphrases may use instead of the canonical ones."""

PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three")
"""Answers of counting questions (index = count)."""

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "size", "count", "existence", "relation")

ANSWERS: tuple[str, ...] = (
    ("yes", "no") + COLORS + SHAPES + SIZES + NUMBER_WORDS + tuple(RELATION_ANSWER[r] for r in RELATIONS)
)
"""The VQA answer vocabulary: answer id = position in this tuple (the same for every world)."""

NEGATIVE_KINDS: tuple[str, ...] = (
    "swap_colors",
    "swap_shapes",
    "swap_objects",
    "swap_relation",
    "replace_relation",
    "replace_color",
    "replace_shape",
    "replace_size",
)
"""Kinds of hard-negative captions; each is a minimal edit of the canonical caption that makes it false:

- ``swap_colors`` / ``swap_shapes``: the two related objects exchange colours / shapes;
- ``swap_objects``: the two related objects exchange places in the sentence (same bag of words!);
- ``swap_relation``: the relation becomes its inverse ("left of" -> "right of");
- ``replace_relation``: the relation becomes a perpendicular one ("left of" -> "above");
- ``replace_color`` / ``replace_shape``: one object gets a colour / shape that no object of the scene has in
  that combination;
- ``replace_size``: the caption with size words, one size flipped ("a small ..." -> "a large ...").
"""

_TEMPLATE_WORDS = (
    "a", "an", "the", "there", "is", "are", "and", "to", "of", "this",
    "photo", "picture", "image", "what", "how", "many", "where", "relative",
    "object", "objects", "color", "shape", "size",
)  # fmt: skip

BASE_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        _TEMPLATE_WORDS
        + COLORS
        + SHAPES
        + tuple(PLURALS.values())
        + SIZES
        + ("left", "right", "above", "below")
        + tuple(SYNONYMS.values())
        + NUMBER_WORDS
        + ("yes", "no")
    )
)
"""Every word ShapesWorld ever writes (plus "photo", "picture", "image", "this", "an" for prompt templates such as
"a photo of a red circle"), in a fixed order: the tokenizer's ids for them never change."""
