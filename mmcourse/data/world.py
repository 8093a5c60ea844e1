"""ShapesWorld: the course's own multimodal dataset — images, captions, relations, VQA, hard negatives, audio.

Serves every chapter (course design, "The data world: ShapesWorld"): chapter 1 shows its scenes and modalities,
chapter 2 aligns images, text (and audio), chapters 3-5 train and probe on its captions and hard negatives,
chapter 6 retrieves, captions and answers questions about it, chapter 7 uses its held-out combinations.

Everything is generated at construction from ``seed`` with a local ``torch.Generator`` (layout, images, noise,
audio) and per-scene ``random.Random`` streams (questions, negatives), so the same arguments always give the same
tensors and texts, whatever the global random state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import Dataset, Subset

from mmcourse._checks import check_choice
from mmcourse.data import language
from mmcourse.data.audio import SAMPLE_RATE, log_mel_spectrogram, synthesize
from mmcourse.data.layout import place_objects, sample_objects
from mmcourse.data.render import render_scenes
from mmcourse.data.vocab import ANSWERS, COLORS, NEGATIVE_KINDS, QUESTION_TYPES, SHAPES, SIZES

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 128
MAX_OBJECTS = 3
PIXELS_PER_OBJECT = 8
"""``image_size`` must be at least ``PIXELS_PER_OBJECT * max_objects`` (16 px for 2 objects, 24 px for 3)."""

OVERLAP_TOLERANCE = 0.05
"""With ``max_overlap=0`` the shapes are disjoint; anti-aliased edge pixels shared by two objects amount to at most
this fraction of the smaller object's coverage (measured worst case: 2.7 % at 16 px, 0.4 % at 32 px)."""

_QUESTION_STREAM = 1
_NEGATIVE_STREAM = 2


# ----------------------------------------------------------------------------------------------- validation


def _check_int(value, name: str, low: int, high: int | None = None, why: str = "") -> None:
    allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}{why}, got {value!r}")


def _check_number(value, name: str, low: float, high: float, *, high_open: bool = False) -> None:
    bracket = ")" if high_open else "]"
    allowed = f"a number in [{low}, {high}{bracket}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or value < low or too_high:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_names(values, name: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """A non-empty selection of names from ``allowed``, returned in ``allowed``'s order."""
    if values is None:
        return tuple(allowed)
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of names from {list(allowed)}, got {values!r}")
    values = list(values)
    for v in values:
        if v not in allowed:
            raise ValueError(f"{name} must contain only names from {list(allowed)}, got {v!r}")
    if not values:
        raise ValueError(f"{name} must name at least one of {list(allowed)}, got an empty list")
    return tuple(a for a in allowed if a in values)


def _check_pairs(pairs, name: str, colors: tuple[str, ...], shapes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """A list of (colour, shape) pairs from the world's palette."""
    if pairs is None:
        return ()
    if isinstance(pairs, (str, tuple)) and len(pairs) == 2 and all(isinstance(p, str) for p in pairs):
        raise TypeError(f"{name} must be a list of (color, shape) pairs, e.g. [{tuple(pairs)!r}], got {pairs!r}")
    if isinstance(pairs, str) or not isinstance(pairs, Iterable):
        raise TypeError(f"{name} must be a list of (color, shape) pairs, got {pairs!r}")
    result = []
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"{name} must hold (color, shape) pairs such as ('green', 'triangle'), got {pair!r}")
        color, shape = pair
        if color not in colors or shape not in shapes:
            raise ValueError(
                f"{name} must hold (color, shape) pairs with color in {list(colors)} and shape in "
                f"{list(shapes)}, got {tuple(pair)!r}"
            )
        result.append((color, shape))
    return tuple(dict.fromkeys(result))


# ----------------------------------------------------------------------------------------------- the world


class ShapesWorld(Dataset):
    """A deterministic world of small RGB scenes of coloured shapes, with text, questions, negatives and sound.

    Args:
        num_samples: N, number of scenes (> 0).
        image_size: H = W in pixels, in [16, 128] and >= 8 * max_objects.
        max_objects, min_objects: each scene holds between min_objects and max_objects objects (1..3).
        seed: the world's seed (an int >= 0); same arguments -> identical tensors and texts.
        noise: standard deviation of Gaussian pixel noise (images are clamped to [0, 1]) and of audio noise.
        audio: also synthesise a sound per scene (``world.audio`` (N, T), ``world.spectrograms`` (N, 32, F)).
        colors, shapes: the palette, a subset of ``COLORS`` / ``SHAPES`` (default: all of them).
        exclude_combinations: (colour, shape) pairs that no object of the world ever has and no text names —
            the training side of a compositional split, e.g. ``[("green", "triangle")]``.
        require_combinations: every scene holds one object with one of these pairs (chosen at random) — the test
            side of a compositional split. See :func:`compositional_split`.
        sized_captions: canonical captions say the size ("a large red circle ...").
        max_overlap: how far the enclosing circles of two objects may interpenetrate, as a fraction of the sum of
            their radii; 0 (default) keeps the shapes disjoint (only anti-aliased edge pixels may touch).
        relation_margin: minimum of ``| |dx| - |dy| |`` between any two object centres (fraction of the side),
            so that every relation is clear-cut.
        object_scale: multiplies object radii; default 1.0 for max_objects <= 2 and 0.8 for 3 objects.
        sample_rate, audio_seconds: audio format (8 kHz, 0.25 s -> T = 2000 samples, 32 frames).

    Attributes (N scenes, K = max_objects slots; -1 marks an absent object):
        images: (N, 3, H, W) float32 in [0, 1]. captions: list of N canonical captions.
        num_objects: (N,). object_colors, object_shapes, object_sizes: (N, K) ids into COLORS/SHAPES/SIZES.
        positions: (N, K, 2) object centres (x, y) as fractions of the side, y downwards.
        labels: (N,) class id of object 0, ``color_id * len(SHAPES) + shape_id`` (see ``CLASS_NAMES``).
        audio: (N, T) or None; spectrograms: (N, 32, F) or None.
        colors, shapes: the palette; combinations: allowed (colour, shape) pairs; answer_vocab: ``ANSWERS``.

    ``world[i]`` is a dict: image, caption, paraphrases, objects (dicts shape/color/size/x/y), questions (dicts
    question/answer/type), negatives (kind -> caption, only kinds possible for the scene), scene_id,
    num_objects, label, and audio/spectrogram when ``audio=True``.
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int = 32,
        max_objects: int = 2,
        seed: int = 0,
        *,
        min_objects: int = 1,
        noise: float = 0.0,
        audio: bool = False,
        colors: Sequence[str] | None = None,
        shapes: Sequence[str] | None = None,
        exclude_combinations: Iterable[tuple[str, str]] | None = None,
        require_combinations: Iterable[tuple[str, str]] | None = None,
        sized_captions: bool = False,
        max_overlap: float = 0.0,
        relation_margin: float = 0.1,
        object_scale: float | None = None,
        sample_rate: int = SAMPLE_RATE,
        audio_seconds: float = 0.25,
    ):
        _check_int(num_samples, "num_samples", 1)
        _check_int(max_objects, "max_objects", 1, MAX_OBJECTS)
        _check_int(min_objects, "min_objects", 1, max_objects, why=" (at most max_objects)")
        _check_int(image_size, "image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        if image_size < PIXELS_PER_OBJECT * max_objects:
            raise ValueError(
                f"image_size must be >= {PIXELS_PER_OBJECT} * max_objects = {PIXELS_PER_OBJECT * max_objects} "
                f"px to fit max_objects={max_objects}, got image_size={image_size}"
            )
        _check_int(seed, "seed", 0)
        _check_number(noise, "noise", 0.0, 1.0, high_open=True)
        for flag, flag_name in ((audio, "audio"), (sized_captions, "sized_captions")):
            if not isinstance(flag, bool):
                raise TypeError(f"{flag_name} must be True or False, got {flag!r}")
        _check_number(max_overlap, "max_overlap", 0.0, 0.5)
        _check_number(relation_margin, "relation_margin", 0.0, 0.3)
        if object_scale is None:
            object_scale = 1.0 if max_objects <= 2 else 0.8
        _check_number(object_scale, "object_scale", 0.3, 1.5)
        _check_int(sample_rate, "sample_rate", 2000, 48000)
        _check_number(audio_seconds, "audio_seconds", 0.05, 4.0)

        self.colors = _check_names(colors, "colors", COLORS)
        self.shapes = _check_names(shapes, "shapes", SHAPES)
        self.exclude_combinations = _check_pairs(exclude_combinations, "exclude_combinations", self.colors, self.shapes)
        self.require_combinations = _check_pairs(require_combinations, "require_combinations", self.colors, self.shapes)
        self.combinations: tuple[tuple[str, str], ...] = tuple(
            (c, s) for c in self.colors for s in self.shapes if (c, s) not in self.exclude_combinations
        )
        clash = [p for p in self.require_combinations if p in self.exclude_combinations]
        if clash:
            raise ValueError(f"require_combinations must not be excluded, got {clash} in both lists")
        if len(self.combinations) < max_objects:
            raise ValueError(
                f"max_objects={max_objects} needs at least {max_objects} allowed (color, shape) pairs, got "
                f"{len(self.combinations)} from colors={list(self.colors)}, shapes={list(self.shapes)}"
            )

        self.num_samples, self.image_size, self.seed = num_samples, image_size, seed
        self.max_objects, self.min_objects = max_objects, min_objects
        self.noise, self.has_audio, self.sized_captions = float(noise), audio, sized_captions
        self.max_overlap, self.relation_margin = float(max_overlap), float(relation_margin)
        self.object_scale = float(object_scale)
        self.sample_rate, self.audio_seconds = sample_rate, float(audio_seconds)
        self._pool_set = set(self.combinations)
        self._generate()
        self._cache: dict[int, dict] = {}
        self._negative_cache: dict[str, list[str | None]] = {}

    # ------------------------------------------------------------------------------------------- generation

    def _generate(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        pair_ids = [(COLORS.index(c), SHAPES.index(s)) for c, s in self.combinations]
        required = [(COLORS.index(c), SHAPES.index(s)) for c, s in self.require_combinations]
        self.num_objects, self.object_colors, self.object_shapes, self.object_sizes = sample_objects(
            self.num_samples,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            pool=torch.tensor(pair_ids),
            required=torch.tensor(required) if required else None,
            generator=g,
        )
        self.positions = place_objects(
            self.object_shapes,
            self.object_sizes,
            self.num_objects,
            object_scale=self.object_scale,
            max_overlap=self.max_overlap,
            relation_margin=self.relation_margin,
            generator=g,
        )
        images = render_scenes(
            self.object_colors,
            self.object_shapes,
            self.object_sizes,
            self.positions,
            self.image_size,
            object_scale=self.object_scale,
        )
        if self.noise > 0:
            images = (images + self.noise * torch.randn(images.shape, generator=g)).clamp_(0.0, 1.0)
        self.images = images
        self.audio = self.spectrograms = None
        if self.has_audio:
            self.audio = synthesize(
                self.object_colors,
                self.object_shapes,
                self.object_sizes,
                self.positions,
                self.num_objects,
                sample_rate=self.sample_rate,
                seconds=self.audio_seconds,
                noise=self.noise,
                generator=g,
            )
            self.spectrograms = log_mel_spectrogram(self.audio, sample_rate=self.sample_rate)
        self.labels = torch.where(
            self.object_colors[:, 0] >= 0, self.object_colors[:, 0] * len(SHAPES) + self.object_shapes[:, 0], -1
        )
        self._objects = self._scene_objects()
        self.captions: list[str] = [language.caption(objs, self.sized_captions) for objs in self._objects]

    def _scene_objects(self) -> list[list[language.SceneObject]]:
        colors, shapes = self.object_colors.tolist(), self.object_shapes.tolist()
        sizes, positions = self.object_sizes.tolist(), self.positions.tolist()
        scenes = []
        for c_row, s_row, z_row, p_row in zip(colors, shapes, sizes, positions, strict=True):
            scenes.append(
                [
                    language.SceneObject(COLORS[c], SHAPES[s], SIZES[z], p[0], p[1])
                    for c, s, z, p in zip(c_row, s_row, z_row, p_row, strict=True)
                    if c >= 0
                ]
            )
        return scenes

    def _rng(self, index: int, stream: int) -> random.Random:
        """A random stream private to one scene and one purpose (independent of access order)."""
        return random.Random((self.seed << 40) | (index << 8) | stream)

    # ------------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        extra = ""
        if self.exclude_combinations:
            extra += f", exclude_combinations={list(self.exclude_combinations)}"
        if self.require_combinations:
            extra += f", require_combinations={list(self.require_combinations)}"
        return (
            f"ShapesWorld(num_samples={self.num_samples}, image_size={self.image_size}, "
            f"max_objects={self.max_objects}, seed={self.seed}, min_objects={self.min_objects}, "
            f"noise={self.noise}, audio={self.has_audio}{extra})"
        )

    def _index(self, index) -> int:
        if isinstance(index, torch.Tensor) and index.dim() == 0 and not index.is_floating_point():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, got {index!r} ({type(index).__name__})")
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index must be in [-{self.num_samples}, {self.num_samples}), got {index}")
        return index % self.num_samples

    def __getitem__(self, index) -> dict:
        i = self._index(index)
        if i not in self._cache:
            self._cache[i] = {
                "caption": self.captions[i],
                "paraphrases": self.paraphrases(i),
                "objects": self.objects(i),
                "questions": self.questions(i),
                "negatives": {k: n for k in NEGATIVE_KINDS if (n := self.negative(i, k)) is not None},
            }
        item = {
            "image": self.images[i],
            **self._cache[i],
            "scene_id": i,
            "num_objects": int(self.num_objects[i]),
            "label": int(self.labels[i]),
        }
        if self.has_audio:
            item["audio"] = self.audio[i]
            item["spectrogram"] = self.spectrograms[i]
        return item

    def objects(self, index: int) -> list[dict]:
        """The scene's objects: [{"shape", "color", "size", "x", "y"}, ...] (x, y in [0, 1], y downwards)."""
        return [o._asdict() for o in self._objects[self._index(index)]]

    def paraphrases(self, index: int) -> list[str]:
        """True rewordings of ``captions[index]`` (inverted relation, "there is ...", synonyms, sizes)."""
        return language.paraphrases(self._objects[self._index(index)], self.sized_captions)

    def questions(self, index: int) -> list[dict]:
        """VQA pairs [{"question", "answer", "type"}, ...] for one scene; answers are in ``answer_vocab``."""
        i = self._index(index)
        rng = self._rng(i, _QUESTION_STREAM)
        return language.questions(self._objects[i], list(self.combinations), self.shapes, self.colors, rng)

    def negative(self, index: int, kind: str) -> str | None:
        """The hard-negative caption of ``kind`` for one scene, or None where that kind is impossible."""
        check_choice(kind, "kind", NEGATIVE_KINDS)
        i = self._index(index)
        rng = None
        if kind in language.RANDOM_NEGATIVE_KINDS:
            rng = self._rng(i, _NEGATIVE_STREAM + NEGATIVE_KINDS.index(kind))
        return language.negative(
            self._objects[i], kind, self._pool_set, self.colors, self.shapes, rng, self.sized_captions
        )

    def negatives(self, kind: str) -> list[str | None]:
        """Hard negatives of one kind for every scene (None where impossible), see ``NEGATIVE_KINDS``."""
        check_choice(kind, "kind", NEGATIVE_KINDS)
        if kind not in self._negative_cache:
            self._negative_cache[kind] = [self.negative(i, kind) for i in range(self.num_samples)]
        return list(self._negative_cache[kind])

    def attribute(self, name: str, obj: int = 0) -> torch.Tensor:
        """Id of the ``obj``-th object's colour / shape / size in every scene: (N,) LongTensor, -1 if absent."""
        check_choice(name, "name", ["color", "shape", "size"])
        _check_int(obj, "obj", 0, self.max_objects - 1)
        table = {"color": self.object_colors, "shape": self.object_shapes, "size": self.object_sizes}[name]
        return table[:, obj].clone()

    @property
    def answer_vocab(self) -> list[str]:
        """The VQA answers (``ANSWERS``, identical for every world): answer id = position."""
        return list(ANSWERS)

    @staticmethod
    def answer_id(answer: str) -> int:
        """Position of ``answer`` in ``answer_vocab``."""
        check_choice(answer, "answer", ANSWERS)
        return ANSWERS.index(answer)

    def scene_key(self, index: int) -> tuple:
        """What makes two scenes the same picture: their objects with positions rounded to whole pixels."""
        h = self.image_size
        return tuple(
            sorted(
                (o.color, o.shape, o.size, round(o.x * h), round(o.y * h)) for o in self._objects[self._index(index)]
            )
        )

    # ------------------------------------------------------------------------------------------- views

    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int | None = None, subsets: bool = False
    ) -> dict:
        """Random train / val / test partition that never shares a scene.

        Scenes with the same :meth:`scene_key` (the same objects at the same pixels) always land in the same part,
        so no test picture also appears in training.

        Args:
            fractions: three non-negative numbers summing to 1 (train, val, test).
            seed: shuffling seed (default: the world's seed).
            subsets: return ``torch.utils.data.Subset`` objects instead of sorted index lists.
        Returns:
            {"train": ..., "val": ..., "test": ...}.
        """
        if isinstance(fractions, str) or not isinstance(fractions, Sequence) or len(fractions) != 3:
            raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
        for f in fractions:
            _check_number(f, "fractions[i]", 0.0, 1.0)
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {list(fractions)} (sum {sum(fractions)})")
        seed = self.seed if seed is None else seed
        _check_int(seed, "seed", 0)
        groups: dict[tuple, list[int]] = {}
        for i in range(self.num_samples):
            groups.setdefault(self.scene_key(i), []).append(i)
        order = list(groups.values())
        random.Random(seed).shuffle(order)
        n = self.num_samples
        train_end, val_end = round(fractions[0] * n), round((fractions[0] + fractions[1]) * n)
        parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        placed = 0
        for group in order:
            name = "train" if placed < train_end else ("val" if placed < val_end else "test")
            parts[name].extend(group)
            placed += len(group)
        result = {name: sorted(ids) for name, ids in parts.items()}
        if subsets:
            return {name: Subset(self, ids) for name, ids in result.items()}
        return result

    def vqa(self, indices: Iterable[int] | None = None, types: Iterable[str] | None = None) -> VQADataset:
        """A dataset of one (image, question, answer) per item, over the scenes ``indices`` (default: all)."""
        return VQADataset(self, indices, types)


class VQADataset(Dataset):
    """Flat view of a world's questions: item = {"image", "question", "answer", "answer_id", "type", "type_id",
    "scene_id"} (+ "audio", "spectrogram" when the world has sound).

    Args:
        world: a ShapesWorld; indices: scenes to draw questions from (e.g. ``world.split()["train"]``);
        types: question types to keep (default: all of ``QUESTION_TYPES``).
    """

    def __init__(self, world: ShapesWorld, indices: Iterable[int] | None = None, types: Iterable[str] | None = None):
        if not isinstance(world, ShapesWorld):
            raise TypeError(f"world must be a ShapesWorld, got {type(world).__name__}")
        self.world = world
        self.types = _check_names(types, "types", QUESTION_TYPES)
        scene_ids = range(len(world)) if indices is None else [world._index(i) for i in indices]
        self.items: list[tuple[int, dict]] = [
            (i, q) for i in scene_ids for q in world.questions(i) if q["type"] in self.types
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, got {index!r} ({type(index).__name__})")
        scene, qa = self.items[index]
        item = {
            "image": self.world.images[scene],
            "question": qa["question"],
            "answer": qa["answer"],
            "answer_id": ANSWERS.index(qa["answer"]),
            "type": qa["type"],
            "type_id": QUESTION_TYPES.index(qa["type"]),
            "scene_id": scene,
        }
        if self.world.has_audio:
            item["audio"] = self.world.audio[scene]
            item["spectrogram"] = self.world.spectrograms[scene]
        return item


def compositional_split(
    held_out: Iterable[tuple[str, str]],
    num_train: int,
    num_test: int,
    *,
    seed: int = 0,
    **world_kwargs,
) -> dict[str, ShapesWorld]:
    """Two worlds for compositional generalisation: ``held_out`` (colour, shape) pairs are never seen in "train"
    (neither in images nor in any text), and every "test" scene contains one of them.

    Example: ``compositional_split([("green", "triangle")], 2000, 200, image_size=32, max_objects=1)``: train
    on green things and on triangles, never on a green triangle; test zero-shot on green triangles.

    Args:
        held_out: (colour, shape) pairs to hold out.
        num_train, num_test: scenes in each world.
        seed: the train world's seed; the test world uses ``seed + 1``.
        world_kwargs: any other ShapesWorld argument, shared by both worlds (not the combination arguments).
    Returns:
        {"train": ShapesWorld, "test": ShapesWorld}.
    """
    for key in ("exclude_combinations", "require_combinations"):
        if key in world_kwargs:
            raise TypeError(f"compositional_split sets {key} itself; pass the pairs as held_out, got {key}=...")
    held_out = list(held_out) if held_out is not None else []
    if not held_out:
        raise ValueError("held_out must name at least one (color, shape) pair, got an empty list")
    train = ShapesWorld(num_train, seed=seed, exclude_combinations=held_out, **world_kwargs)
    test = ShapesWorld(num_test, seed=seed + 1, require_combinations=held_out, **world_kwargs)
    return {"train": train, "test": test}
