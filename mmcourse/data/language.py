"""The language of ShapesWorld: captions, paraphrases, VQA questions and hard negatives, derived from attributes.

Serves chapters 1-6 through :class:`mmcourse.data.ShapesWorld`. Every sentence is built from a *claim* — the
objects it mentions and the relation between the first two — and a claim is checked against the scene's objects
by :func:`claim_holds`, so a caption is true and a hard negative is false by construction *and* by check.

An object is a :class:`SceneObject` (colour, shape, size, x, y); positions are fractions of the image side with
y growing downwards, so "above" means a smaller y.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import NamedTuple

from mmcourse.data.vocab import (
    INVERSE_RELATION,
    LONG_RELATION,
    NUMBER_WORDS,
    PERPENDICULAR_RELATIONS,
    PLURALS,
    RELATION_ANSWER,
    RELATIONS,
    SIZES,
    SYNONYMS,
)


class SceneObject(NamedTuple):
    """One object of a scene; ``x``, ``y`` in [0, 1] (fractions of the image side, y downwards)."""

    color: str
    shape: str
    size: str
    x: float
    y: float


class Mention(NamedTuple):
    """An object as a sentence names it; ``size`` is None when the sentence does not say it."""

    color: str
    shape: str
    size: str | None = None


class Claim(NamedTuple):
    """What a caption asserts: these objects exist and ``relation`` holds from the first to the second."""

    mentions: tuple[Mention, ...]
    relation: str | None = None


def relation(a: SceneObject | dict, b: SceneObject | dict) -> str:
    """The relation of ``a`` to ``b`` along the dominant axis of their centres: "left of", "above", ...

    Objects may be :class:`SceneObject` or the dicts of ``world.objects(i)``.
    """
    if isinstance(a, dict):
        a = SceneObject(**a)
    if isinstance(b, dict):
        b = SceneObject(**b)
    return relation_of_offset(a.x - b.x, a.y - b.y)


def relation_of_offset(dx: float, dy: float) -> str:
    """The relation an offset states, ``(dx, dy)`` = a's centre minus b's (image y grows downwards): the dominant
    axis decides, a tie goes to the horizontal one. ``(-0.3, 0.1)`` → ``"left of"``."""
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def find(objects: list[SceneObject], mention: Mention) -> SceneObject | None:
    """The object a mention names (colour, shape and, when given, size), or None."""
    for obj in objects:
        if obj.color == mention.color and obj.shape == mention.shape:
            if mention.size is None or mention.size == obj.size:
                return obj
    return None


def claim_holds(objects: list[SceneObject], claim: Claim) -> bool:
    """True when every mentioned object exists and the relation (if any) holds between the first two."""
    found = [find(objects, m) for m in claim.mentions]
    if any(f is None for f in found):
        return False
    if claim.relation is None:
        return True
    return relation(found[0], found[1]) == claim.relation


def true_claim(objects: list[SceneObject], sized: bool = False) -> Claim:
    """The canonical claim of a scene: all objects in order, relation of object 0 to object 1."""
    mentions = tuple(Mention(o.color, o.shape, o.size if sized else None) for o in objects)
    rel = relation(objects[0], objects[1]) if len(objects) >= 2 else None
    return Claim(mentions, rel)


# ----------------------------------------------------------------------------------------------- sentences


def noun_phrase(mention: Mention, article: str = "a", synonyms: bool = False) -> str:
    """ "a red circle", "an orange cross", "the large blue square", "a red disk" (``synonyms``)."""
    shape = SYNONYMS.get(mention.shape, mention.shape) if synonyms else mention.shape
    words = ([mention.size] if mention.size else []) + [mention.color, shape]
    return f"{indefinite(words[0]) if article == 'a' else article} {' '.join(words)}"


def indefinite(word: str) -> str:
    """ "an" before a vowel ("an orange circle"), "a" otherwise."""
    return "an" if word[0] in "aeiou" else "a"


def render_claim(claim: Claim, *, style: str = "plain", synonyms: bool = False) -> str:
    """Write a claim as a sentence.

    Styles: ``plain`` "a red circle left of a blue square [and a green cross]",
    ``there`` "there is a red circle to the left of a blue square ...", ``definite`` "the red circle is to the
    left of the blue square", ``picture`` "a picture of a red circle".
    """
    m = claim.mentions
    article = "the" if style == "definite" else "a"
    first = noun_phrase(m[0], article, synonyms)
    if claim.relation is None:
        body = first
    else:
        rel = claim.relation
        if style in ("there", "definite"):
            rel = LONG_RELATION[rel]
        if synonyms:
            rel = SYNONYMS.get(rel, rel)
        verb = " is" if style == "definite" else ""
        body = f"{first}{verb} {rel} {noun_phrase(m[1], article, synonyms)}"
    extra = m[2:] if claim.relation is not None else m[1:]
    for mention in extra:
        body += " and " + noun_phrase(mention, "a", synonyms)
    if style == "there":
        return "there is " + body
    if style == "picture":
        return "a picture of " + body
    return body


def caption(objects: list[SceneObject], sized: bool = False) -> str:
    """The canonical caption: "a red circle", "a red circle left of a blue square", "... and a green cross"."""
    return render_claim(true_claim(objects, sized))


def paraphrases(objects: list[SceneObject], sized: bool = False) -> list[str]:
    """True rewordings of the canonical caption (word order, relation inverted, synonyms, with / without sizes),
    distinct and different from the canonical caption (which says sizes when ``sized``)."""
    base = true_claim(objects)
    sized_claim = true_claim(objects, sized=True)
    variants = [render_claim(base), render_claim(sized_claim)]  # the canonical one is dropped below
    if base.relation is None:
        variants += [
            render_claim(base, style="there"),
            render_claim(base, synonyms=True),
            render_claim(base, style="picture"),
        ]
    else:
        m = base.mentions
        flipped = Claim((m[1], m[0]) + m[2:], INVERSE_RELATION[base.relation])
        variants += [
            render_claim(flipped),
            render_claim(base, style="there"),
            render_claim(flipped, style="there"),
            render_claim(base, synonyms=True),
        ]
        if len(m) == 2:
            variants.append(render_claim(base, style="definite"))
    canonical = render_claim(sized_claim if sized else base)
    return [v for v in dict.fromkeys(variants) if v != canonical]


# ----------------------------------------------------------------------------------------------- questions


def questions(
    objects: list[SceneObject],
    pool: list[tuple[str, str]],
    shapes: tuple[str, ...],
    colors: tuple[str, ...],
    rng: random.Random,
) -> list[dict]:
    """VQA pairs of every type the scene allows, answers derived from the attributes.

    Args:
        pool: the (colour, shape) pairs the world may contain (absent objects are drawn from it).
        shapes, colors: the world's palette (counting questions ask about one of them).
    Returns:
        list of {"question", "answer", "type"}; types as in ``QUESTION_TYPES``.
    """
    qa: list[dict] = []

    def add(question: str, answer: str, kind: str) -> None:
        qa.append({"question": question, "answer": answer, "type": kind})

    shape_count = Counter(o.shape for o in objects)
    color_count = Counter(o.color for o in objects)
    for o in objects:
        if shape_count[o.shape] == 1:
            add(f"what color is the {o.shape}?", o.color, "color")
    for o in objects:
        if color_count[o.color] == 1:
            add(f"what shape is the {o.color} object?", o.shape, "shape")
    for o in objects:
        add(f"what size is the {o.color} {o.shape}?", o.size, "size")
    add("how many objects are there?", NUMBER_WORDS[len(objects)], "count")
    shape = rng.choice(shapes)
    add(f"how many {PLURALS[shape]} are there?", NUMBER_WORDS[shape_count[shape]], "count")
    color = rng.choice(colors)
    add(f"how many {color} objects are there?", NUMBER_WORDS[color_count[color]], "count")
    present = rng.choice(objects)
    add(f"is there {indefinite(present.color)} {present.color} {present.shape}?", "yes", "existence")
    present_pairs = {(o.color, o.shape) for o in objects}
    absent = [p for p in pool if p not in present_pairs]
    if absent:
        c, s = rng.choice(absent)
        add(f"is there {indefinite(c)} {c} {s}?", "no", "existence")
    if len(objects) >= 2:
        a, b = rng.sample(objects, 2)
        rel = relation(a, b)
        wrong = rng.choice([r for r in RELATIONS if r != rel])
        add(f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?", "yes", "relation")
        add(f"is the {a.color} {a.shape} {wrong} the {b.color} {b.shape}?", "no", "relation")
        add(f"where is the {a.color} {a.shape} relative to the {b.color} {b.shape}?", RELATION_ANSWER[rel], "relation")
    return qa


# ----------------------------------------------------------------------------------------------- negatives


RANDOM_NEGATIVE_KINDS = ("replace_relation", "replace_color", "replace_shape", "replace_size")
"""Kinds whose edit is drawn at random (the others are fully determined by the scene)."""


def negative_claim(
    objects: list[SceneObject],
    kind: str,
    pool: set[tuple[str, str]],
    colors: tuple[str, ...],
    shapes: tuple[str, ...],
    rng: random.Random | None = None,
    sized: bool = False,
) -> Claim | None:
    """A minimal edit of the canonical claim that is false for the scene, or None when the kind is impossible.

    ``rng`` picks the edit of the ``RANDOM_NEGATIVE_KINDS`` (required for them). ``sized``: the canonical
    captions mention sizes (``replace_size`` always does). Only (colour, shape) pairs from ``pool`` are ever
    written, so a world that holds out a combination never names it. Each candidate is checked with
    :func:`claim_holds`; the first false one is returned.
    """
    if kind in RANDOM_NEGATIVE_KINDS and rng is None:
        raise ValueError(f"rng must be a random.Random for kind={kind!r}, got None")
    base = true_claim(objects, sized=sized or kind == "replace_size")
    for claim in _edits(base, kind, colors, shapes, rng):
        if all((x.color, x.shape) in pool for x in claim.mentions) and not claim_holds(objects, claim):
            return claim
    return None


def _edits(base: Claim, kind: str, colors: tuple[str, ...], shapes: tuple[str, ...], rng: random.Random | None):
    """Candidate edits of ``base`` for one kind of negative, lazily, in (random) order of preference."""
    m = base.mentions
    rel = base.relation
    if kind in ("swap_colors", "swap_shapes", "swap_objects", "swap_relation", "replace_relation"):
        if rel is None:
            return
        a, b, rest = m[0], m[1], m[2:]
        if kind == "swap_colors":
            yield Claim((a._replace(color=b.color), b._replace(color=a.color)) + rest, rel)
        elif kind == "swap_shapes":
            yield Claim((a._replace(shape=b.shape), b._replace(shape=a.shape)) + rest, rel)
        elif kind == "swap_objects":
            yield Claim((b, a) + rest, rel)
        elif kind == "swap_relation":
            yield Claim(m, INVERSE_RELATION[rel])
        else:
            options = list(PERPENDICULAR_RELATIONS[rel])
            rng.shuffle(options)
            for r in options:
                yield Claim(m, r)
        return
    targets = list(range(min(len(m), 2)))
    rng.shuffle(targets)
    for t in targets:
        if kind == "replace_size":
            edits = [m[t]._replace(size=SIZES[1 - SIZES.index(m[t].size)])]
        elif kind == "replace_color":
            edits = [m[t]._replace(color=c) for c in colors if c != m[t].color]
        else:  # replace_shape
            edits = [m[t]._replace(shape=s) for s in shapes if s != m[t].shape]
        rng.shuffle(edits)
        for e in edits:
            yield Claim(m[:t] + (e,) + m[t + 1 :], rel)


def negative(
    objects: list[SceneObject],
    kind: str,
    pool: set[tuple[str, str]],
    colors: tuple[str, ...],
    shapes: tuple[str, ...],
    rng: random.Random | None = None,
    sized: bool = False,
) -> str | None:
    """The hard-negative caption of ``kind`` for the scene (see ``NEGATIVE_KINDS``), or None if impossible."""
    claim = negative_claim(objects, kind, pool, colors, shapes, rng, sized)
    return None if claim is None else render_claim(claim)
