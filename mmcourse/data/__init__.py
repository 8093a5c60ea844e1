"""ShapesWorld, the course's own multimodal dataset, and the tools to feed it to models.

Serves every chapter (course design, "The data world: ShapesWorld"). Modules:

- :mod:`~mmcourse.data.vocab` — colours, shapes, sizes, relations, question types, answers, negative kinds;
- :mod:`~mmcourse.data.layout` — which objects a scene holds and where (no overlap, clear relations);
- :mod:`~mmcourse.data.render` — vectorised rendering of whole batches of scenes;
- :mod:`~mmcourse.data.language` — captions, paraphrases, VQA pairs and hard negatives, checked against scenes;
- :mod:`~mmcourse.data.audio` — optional sound per scene and its log-mel spectrogram;
- :mod:`~mmcourse.data.tokenizer` — the word-level tokenizer with fixed special ids;
- :mod:`~mmcourse.data.world` — :class:`ShapesWorld`, its VQA view and the compositional split;
- :mod:`~mmcourse.data.batching` — :func:`collate` and :func:`make_loader`;
- :mod:`~mmcourse.data.photos` — :func:`real_photos`: eight real photos with captions and licences (chapters 4, 6, 8).

Quick start::

    from mmcourse.data import ShapesWorld, Tokenizer, collate
    world = ShapesWorld(2000, image_size=32, max_objects=2, seed=0)
    tok = Tokenizer.from_world(world)
    batch = collate([world[i] for i in range(8)], tok)   # images (8,3,32,32), input_ids (8,16), ...
"""

from __future__ import annotations

from mmcourse.data.audio import log_mel_spectrogram, synthesize
from mmcourse.data.batching import collate, make_loader
from mmcourse.data.language import relation
from mmcourse.data.photos import Photo, photos_to_tensor, real_photos
from mmcourse.data.render import object_coverage, render_scenes
from mmcourse.data.tokenizer import SPECIAL_IDS, SPECIAL_TOKENS, Tokenizer, tokenize
from mmcourse.data.vocab import (
    ANSWERS,
    BASE_WORDS,
    CLASS_NAMES,
    COLOR_RGB,
    COLORS,
    NEGATIVE_KINDS,
    QUESTION_TYPES,
    RELATIONS,
    SHAPES,
    SIZES,
)
from mmcourse.data.world import ShapesWorld, VQADataset, compositional_split

__all__ = [
    "ShapesWorld",
    "VQADataset",
    "compositional_split",
    "Tokenizer",
    "tokenize",
    "collate",
    "make_loader",
    "COLORS",
    "COLOR_RGB",
    "SHAPES",
    "SIZES",
    "RELATIONS",
    "CLASS_NAMES",
    "QUESTION_TYPES",
    "ANSWERS",
    "NEGATIVE_KINDS",
    "BASE_WORDS",
    "SPECIAL_TOKENS",
    "SPECIAL_IDS",
    "relation",
    "render_scenes",
    "object_coverage",
    "synthesize",
    "log_mel_spectrogram",
    "Photo",
    "real_photos",
    "photos_to_tensor",
]
