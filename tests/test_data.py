"""ShapesWorld: every text re-derived from the scene attributes, rendering, layout, determinism, splits,
tokenizer, collate, audio and input validation."""

import hashlib
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from mmcourse.data import (
    ANSWERS,
    CLASS_NAMES,
    COLOR_RGB,
    COLORS,
    NEGATIVE_KINDS,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    ShapesWorld,
    Tokenizer,
    collate,
    compositional_split,
    make_loader,
)
from mmcourse.data.audio import PITCH_HZ
from mmcourse.data.render import BACKGROUND, object_coverage
from mmcourse.data.vocab import SHAPE_BOUND, SIZE_RADIUS
from mmcourse.data.world import OVERLAP_TOLERANCE

# ------------------------------------------------------------------ an independent reading of the sentences

SHAPE_WORDS = {
    "circle": "circle",
    "disk": "circle",
    "square": "square",
    "box": "square",
    "triangle": "triangle",
    "cross": "cross",
}
RELATION_WORDS = {
    "left of": "left of",
    "to the left of": "left of",
    "right of": "right of",
    "to the right of": "right of",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
}
_NP = rf"(?:a|an|the) (?:(small|large) )?({'|'.join(COLORS)}) ({'|'.join(SHAPE_WORDS)})"
_REL = "(to the left of|to the right of|left of|right of|above|over|below|under)"
SENTENCE = re.compile(rf"^(?:there is |a picture of )?{_NP}(?: (?:is )?{_REL} {_NP})?((?: and {_NP})*)$")
TAIL_NP = re.compile(_NP)


def true_relation(a, b):
    """Relation of object a to object b along the dominant axis (y grows downwards)."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def lookup(objects, size, color, shape_word):
    shape = SHAPE_WORDS[shape_word]
    hits = [o for o in objects if o["color"] == color and o["shape"] == shape and size in (None, o["size"])]
    assert len(hits) <= 1, "a (color, shape) pair must name one object"
    return hits[0] if hits else None


def sentence_is_true(text, objects):
    """Parse a caption / paraphrase / negative and evaluate it on the objects."""
    m = SENTENCE.match(text)
    assert m is not None, f"unexpected sentence form: {text!r}"
    z1, c1, s1, rel, z2, c2, s2, tail = m.groups()[:8]
    mentioned = [lookup(objects, z1, c1, s1)]
    if rel is not None:
        mentioned.append(lookup(objects, z2, c2, s2))
    mentioned += [lookup(objects, z or None, c, s) for z, c, s in TAIL_NP.findall(tail)]
    if any(o is None for o in mentioned):
        return False
    return rel is None or true_relation(mentioned[0], mentioned[1]) == RELATION_WORDS[rel]


def mentioned_objects(text):
    m = SENTENCE.match(text)
    count = 1 + (m.group(4) is not None) + len(TAIL_NP.findall(m.group(8)))
    return count


def articles_agree(text):
    words = text.split()
    return all((nxt[0] in "aeiou") == (w == "an") for w, nxt in zip(words, words[1:], strict=False) if w in ("a", "an"))


def bag_of_words(text):
    return Counter("a" if w == "an" else w for w in text.split())


NUMBERS = ("zero", "one", "two", "three")
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "crosses": "cross"}


def expected_answer(question, objects):
    """(type, answer) re-derived from the objects for every question form."""

    def find(color, shape):
        hits = [o for o in objects if o["color"] == color and o["shape"] == shape]
        assert len(hits) == 1
        return hits[0]

    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        hits = [o for o in objects if o["shape"] == m[1]]
        assert len(hits) == 1, "colour questions must name a unique shape"
        return "color", hits[0]["color"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        hits = [o for o in objects if o["color"] == m[1]]
        assert len(hits) == 1, "shape questions must name a unique colour"
        return "shape", hits[0]["shape"]
    if m := re.fullmatch(r"what size is the (\w+) (\w+)\?", question):
        return "size", find(m[1], m[2])["size"]
    if question == "how many objects are there?":
        return "count", NUMBERS[len(objects)]
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return "count", NUMBERS[sum(o["color"] == m[1] for o in objects)]
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        return "count", NUMBERS[sum(o["shape"] == PLURAL[m[1]] for o in objects)]
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        present = any(o["color"] == m[1] and o["shape"] == m[2] for o in objects)
        return "existence", "yes" if present else "no"
    if m := re.fullmatch(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", question):
        holds = true_relation(find(m[1], m[2]), find(m[4], m[5])) == m[3]
        return "relation", "yes" if holds else "no"
    if m := re.fullmatch(r"where is the (\w+) (\w+) relative to the (\w+) (\w+)\?", question):
        rel = true_relation(find(m[1], m[2]), find(m[3], m[4]))
        return "relation", {"left of": "left", "right of": "right"}.get(rel, rel)
    raise AssertionError(f"unexpected question form: {question!r}")


# ------------------------------------------------------------------ shared tiny worlds


@pytest.fixture(scope="module")
def world3():
    """1-3 objects, with sound and noise."""
    return ShapesWorld(240, image_size=32, max_objects=3, seed=3, noise=0.05, audio=True)


@pytest.fixture(scope="module")
def world2():
    """1-2 objects, size words in the captions."""
    return ShapesWorld(300, image_size=32, max_objects=2, seed=5, sized_captions=True)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_world(None)


def world_hash(world):
    h = hashlib.sha256()
    h.update(world.images.numpy().tobytes())
    h.update("\n".join(world.captions).encode())
    for i in range(len(world)):
        h.update(repr(world.questions(i)).encode())
        h.update(repr(world.paraphrases(i)).encode())
    for kind in NEGATIVE_KINDS:
        h.update(repr(world.negatives(kind)).encode())
    if world.audio is not None:
        h.update(world.audio.numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ contract


def test_contract_shapes_and_items(world3):
    n = len(world3)
    assert world3.images.shape == (n, 3, 32, 32) and world3.images.dtype == torch.float32
    assert world3.images.min() >= 0 and world3.images.max() <= 1
    assert len(world3.captions) == n and world3.num_objects.dtype == torch.long
    assert set(world3.num_objects.tolist()) == {1, 2, 3}
    item = world3[7]
    assert set(item) >= {
        "image",
        "caption",
        "paraphrases",
        "objects",
        "questions",
        "negatives",
        "scene_id",
        "audio",
        "spectrogram",
        "label",
        "num_objects",
    }
    assert torch.equal(item["image"], world3.images[7]) and item["caption"] == world3.captions[7]
    assert item["scene_id"] == 7 and len(item["objects"]) == item["num_objects"] == int(world3.num_objects[7])
    assert set(item["objects"][0]) == {"shape", "color", "size", "x", "y"}
    assert all(set(q) == {"question", "answer", "type"} for q in item["questions"])
    assert set(item["negatives"]) <= set(NEGATIVE_KINDS) and all(isinstance(v, str) for v in item["negatives"].values())
    assert item["audio"].shape == (2000,) and item["spectrogram"].shape == (32, 32)
    assert world3[-1]["scene_id"] == n - 1


@pytest.mark.parametrize("size", [16, 64])
def test_image_sizes(size):
    world = ShapesWorld(12, image_size=size, max_objects=2, seed=1)
    assert world.images.shape == (12, 3, size, size)
    assert world.images.min() >= 0 and world.images.max() <= 1


def test_attributes_and_labels_match_objects(world3):
    colors, shapes, sizes = (world3.attribute(n, 0) for n in ("color", "shape", "size"))
    second = world3.attribute("color", 1)
    for i in range(len(world3)):
        objs = world3.objects(i)
        assert COLORS[colors[i]] == objs[0]["color"] and SHAPES[shapes[i]] == objs[0]["shape"]
        assert SIZES[sizes[i]] == objs[0]["size"]
        assert (second[i] == -1) == (len(objs) == 1)
        assert CLASS_NAMES[world3.labels[i]] == f"{objs[0]['color']} {objs[0]['shape']}"


def test_palette_colours_are_distinct():
    rgb = torch.tensor([COLOR_RGB[c] for c in COLORS])
    distances = torch.cdist(rgb, rgb) + torch.eye(len(COLORS)) * 10
    assert distances.min() >= 0.35
    assert (rgb - BACKGROUND).norm(dim=1).min() >= 0.5
    assert len(COLORS) >= 4 and len(SHAPES) >= 3 and len(SIZES) >= 2


# ------------------------------------------------------------------ texts are true / false as claimed


@pytest.mark.parametrize("name", ["world3", "world2"])
def test_every_caption_and_paraphrase_is_true(name, request):
    world = request.getfixturevalue(name)
    for i in range(len(world)):
        objs = world.objects(i)
        caption = world.captions[i]
        assert sentence_is_true(caption, objs), (caption, objs)
        assert mentioned_objects(caption) == len(objs), "the caption names every object"
        assert articles_agree(caption)
        if world.sized_captions:
            assert all(o["size"] in caption for o in objs)
        paraphrases = world.paraphrases(i)
        assert len(paraphrases) >= 3 and caption not in paraphrases and len(set(paraphrases)) == len(paraphrases)
        for text in paraphrases:
            assert sentence_is_true(text, objs), (text, objs)
            assert articles_agree(text)


@pytest.mark.parametrize("name", ["world3", "world2"])
def test_every_hard_negative_is_false(name, request):
    world = request.getfixturevalue(name)
    made = Counter()
    for kind in NEGATIVE_KINDS:
        for i, text in enumerate(world.negatives(kind)):
            objs = world.objects(i)
            if text is None:
                if kind in ("swap_relation", "swap_objects", "replace_relation"):
                    assert len(objs) == 1, f"{kind} is possible for every multi-object scene"
                continue
            made[kind] += 1
            assert not sentence_is_true(text, objs), (kind, text, objs)
            assert text != world.captions[i] and articles_agree(text)
            if kind in ("swap_objects", "swap_colors", "swap_shapes"):
                assert bag_of_words(text) == bag_of_words(world.captions[i]), "same bag of words"
    assert set(made) == set(NEGATIVE_KINDS)
    assert world[0]["negatives"] == {k: world.negatives(k)[0] for k in NEGATIVE_KINDS if world.negatives(k)[0]}


def test_every_vqa_answer_is_right(world3):
    types, answers = Counter(), Counter()
    for i in range(len(world3)):
        objs = world3.objects(i)
        for qa in world3.questions(i):
            kind, answer = expected_answer(qa["question"], objs)
            assert (qa["type"], qa["answer"]) == (kind, answer), (qa, objs)
            assert qa["answer"] in world3.answer_vocab
            types[kind] += 1
            answers[answer] += 1
    assert set(types) == set(QUESTION_TYPES)
    yes_share = answers["yes"] / (answers["yes"] + answers["no"])
    assert 0.35 < yes_share < 0.65


def test_vqa_dataset_and_answer_ids(world3):
    scenes = [0, 1, 2, 3]
    vqa = world3.vqa(scenes, types=["relation", "count"])
    expected = [q for i in scenes for q in world3.questions(i) if q["type"] in ("relation", "count")]
    assert len(vqa) == len(expected)
    for k in range(len(vqa)):
        item = vqa[k]
        assert item["question"] == expected[k]["question"] and item["scene_id"] in scenes
        assert ANSWERS[item["answer_id"]] == item["answer"] and QUESTION_TYPES[item["type_id"]] == item["type"]
        assert torch.equal(item["image"], world3.images[item["scene_id"]])
    assert world3.answer_vocab == list(ANSWERS) and len(set(ANSWERS)) == len(ANSWERS)


# ------------------------------------------------------------------ rendering and layout


def test_pixels_show_the_attributes():
    """Noise-free 64 px scenes: centre pixel colour, centroid, size and fill ratio of every object."""
    world = ShapesWorld(60, image_size=64, max_objects=2, seed=11)
    h = 64
    fill_ratio = {s: [] for s in SHAPES}
    area = {}
    grid = torch.arange(h) + 0.5
    for i in range(len(world)):
        image = world.images[i]
        for o in world.objects(i):
            rgb = torch.tensor(COLOR_RGB[o["color"]])
            cx, cy = o["x"] * h, o["y"] * h
            assert torch.allclose(image[:, int(cy), int(cx)], rgb, atol=0.02)
            radius = SIZE_RADIUS[SIZES.index(o["size"])] * world.object_scale * h
            distance = ((grid[None, :] - cx) ** 2 + (grid[:, None] - cy) ** 2).sqrt()
            near = distance <= radius * SHAPE_BOUND[o["shape"]] + 1
            mine = ((image - rgb[:, None, None]).abs().max(0).values < 0.05) & near
            ys, xs = mine.nonzero(as_tuple=True)
            if o["shape"] != "triangle":  # the triangle's centre is its centroid, not its box centre
                assert abs(xs.float().mean() + 0.5 - cx) < 1.0 and abs(ys.float().mean() + 0.5 - cy) < 1.0
            box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
            fill_ratio[o["shape"]].append(mine.sum().item() / box.item())
            area.setdefault((o["shape"], o["size"]), []).append(mine.sum().item())
    mean = {s: float(np.mean(v)) for s, v in fill_ratio.items()}
    assert 0.70 < mean["circle"] < 0.86 and mean["square"] > 0.9
    assert 0.40 < mean["triangle"] < 0.60 and 0.50 < mean["cross"] < 0.68
    for shape in SHAPES:
        assert min(area[(shape, "large")]) > max(area[(shape, "small")])


def test_objects_do_not_overlap_beyond_threshold():
    for size, k in [(16, 2), (24, 3)]:
        world = ShapesWorld(300, image_size=size, max_objects=k, min_objects=k, seed=2)
        cov = object_coverage(
            world.object_shapes, world.object_sizes, world.positions, size, object_scale=world.object_scale
        )
        for a in range(k):
            for b in range(a + 1, k):
                shared = torch.minimum(cov[:, a], cov[:, b]).sum((1, 2))
                smaller = torch.minimum(cov[:, a].sum((1, 2)), cov[:, b].sum((1, 2)))
                assert (shared / smaller).max() <= OVERLAP_TOLERANCE
        # geometry from the attributes: enclosing circles apart, objects inside the image
        for i in range(len(world)):
            objs = world.objects(i)
            bound = [SIZE_RADIUS[SIZES.index(o["size"])] * world.object_scale * SHAPE_BOUND[o["shape"]] for o in objs]
            for o, r in zip(objs, bound, strict=True):
                assert r - 1e-6 <= o["x"] <= 1 - r + 1e-6 and r - 1e-6 <= o["y"] <= 1 - r + 1e-6
            for a in range(k):
                for b in range(a + 1, k):
                    dx, dy = objs[a]["x"] - objs[b]["x"], objs[a]["y"] - objs[b]["y"]
                    assert math.hypot(dx, dy) >= bound[a] + bound[b]
                    assert abs(abs(dx) - abs(dy)) >= world.relation_margin - 1e-6


def test_max_overlap_allows_closer_objects():
    tight = ShapesWorld(400, image_size=32, max_objects=2, min_objects=2, seed=4)
    loose = ShapesWorld(400, image_size=32, max_objects=2, min_objects=2, seed=4, max_overlap=0.4)

    def gaps(world):
        out = []
        for i in range(len(world)):
            a, b = world.objects(i)
            ba, bb = (SIZE_RADIUS[SIZES.index(o["size"])] * SHAPE_BOUND[o["shape"]] for o in (a, b))
            out.append(math.hypot(a["x"] - b["x"], a["y"] - b["y"]) / (ba + bb))
        return torch.tensor(out)

    assert gaps(loose).min() >= 0.6 - 1e-6 and gaps(loose).min() < 1.0 <= gaps(tight).min()


def test_noise_option():
    clean = ShapesWorld(20, image_size=32, seed=8)
    noisy = ShapesWorld(20, image_size=32, seed=8, noise=0.1)
    assert clean.captions == noisy.captions
    diff = noisy.images - clean.images
    assert 0.05 < diff.std() < 0.12 and noisy.images.min() >= 0 and noisy.images.max() <= 1


# ------------------------------------------------------------------ determinism


def test_determinism_hash(world3):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002  (the global state is what this test watches)
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())  # noqa: NPY002
    again = ShapesWorld(240, image_size=32, max_objects=3, seed=3, noise=0.05, audio=True)
    assert torch.equal(state[0], torch.get_rng_state()) and state[1] == random.getstate()
    assert np.array_equal(state[2], np.random.get_state()[1]), "no global RNG is touched"  # noqa: NPY002
    assert world_hash(again) == world_hash(world3)
    other = ShapesWorld(240, image_size=32, max_objects=3, seed=4, noise=0.05, audio=True)
    assert world_hash(other) != world_hash(world3)


def test_determinism_across_processes():
    code = (
        "from mmcourse.data import ShapesWorld, NEGATIVE_KINDS\n"
        "import hashlib\n"
        "w = ShapesWorld(40, 16, 2, seed=9)\n"
        "h = hashlib.sha256(w.images.numpy().tobytes())\n"
        "h.update(repr([w.captions, [w.questions(i) for i in range(40)],"
        " [w.negatives(k) for k in NEGATIVE_KINDS]]).encode())\n"
        "print(h.hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    w = ShapesWorld(40, 16, 2, seed=9)
    h = hashlib.sha256(w.images.numpy().tobytes())
    h.update(repr([w.captions, [w.questions(i) for i in range(40)], [w.negatives(k) for k in NEGATIVE_KINDS]]).encode())
    assert out.stdout.strip() == h.hexdigest()


def test_layout_is_resolution_independent():
    small, large = ShapesWorld(30, 16, seed=6), ShapesWorld(30, 64, seed=6)
    assert small.captions == large.captions and torch.equal(small.positions, large.positions)


# ------------------------------------------------------------------ splits


def test_split_disjoint_and_grouped():
    # one colour, one shape, one object at 16 px: many scenes are the same picture
    world = ShapesWorld(400, 16, 1, seed=0, colors=["red"], shapes=["circle"])
    parts = world.split((0.6, 0.2, 0.2))
    ids = [set(parts[p]) for p in ("train", "val", "test")]
    assert sum(map(len, ids)) == len(world) and set.union(*ids) == set(range(len(world)))
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    keys = [{world.scene_key(i) for i in part} for part in ids]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2]), "a picture in two parts"
    assert len({world.scene_key(i) for i in range(len(world))}) < len(world), "the test needs duplicates"
    assert abs(len(ids[0]) - 240) <= 12
    subsets = world.split((0.6, 0.2, 0.2), subsets=True)
    assert list(subsets["val"].indices) == parts["val"] and subsets["val"][0]["scene_id"] == parts["val"][0]
    assert world.split((0.6, 0.2, 0.2), seed=1) != parts


def test_unseen_combinations_never_seen_in_training():
    held = [("green", "triangle"), ("red", "square")]
    worlds = compositional_split(held, 300, 80, seed=0, image_size=32, max_objects=2)
    train, test = worlds["train"], worlds["test"]
    for i in range(len(train)):
        assert not any((o["color"], o["shape"]) in held for o in train.objects(i))
        texts = [train.captions[i], *train.paraphrases(i)]
        texts += [q["question"] for q in train.questions(i)]
        texts += [train.negative(i, k) or "" for k in NEGATIVE_KINDS]
        for text in texts:
            assert "green triangle" not in text and "red square" not in text and "red box" not in text, text
    for i in range(len(test)):
        assert any((o["color"], o["shape"]) in held for o in test.objects(i))
        assert sentence_is_true(test.captions[i], test.objects(i))
    seen = {(o["color"], o["shape"]) for i in range(len(test)) for o in test.objects(i)}
    assert set(held) <= seen
    # the single-object zero-shot test set holds only the held-out pairs
    zero_shot = ShapesWorld(50, 32, 1, seed=1, require_combinations=held)
    assert {(o["color"], o["shape"]) for i in range(50) for o in zero_shot.objects(i)} == set(held)


# ------------------------------------------------------------------ tokenizer


def test_tokenizer_special_ids_and_format(tok):
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.bos_id, tok.eos_id, tok.unk_id) == tuple(range(7))
    assert tok.special_ids == tuple(range(7)) and tok.vocab[:7] == [
        "[PAD]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[BOS]",
        "[EOS]",
        "[UNK]",
    ]
    ids, mask = tok.encode(["What color is the circle?", "a red zebra"], max_len=8)
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (2, 8)
    assert ids[0, 0] == tok.cls_id and ids[0, 6] == tok.eos_id and ids[0, 7] == tok.pad_id
    assert mask[0].tolist() == [1] * 7 + [0] and ids[1, 3] == tok.unk_id
    assert tok.decode(ids[0]) == "what color is the circle" and tok.decode(ids)[1] == "a red [UNK]"
    bos, _ = tok.encode("a red circle", max_len=6, start="bos")
    assert bos[0].tolist()[:5] == [tok.bos_id, *tok.token_ids("a red circle"), tok.eos_id]


def test_tokenizer_truncation_keeps_eos(tok):
    ids, mask = tok.encode("there is a small red circle to the left of a large blue square", max_len=6)
    assert ids[0, -1] == tok.eos_id and mask[0].sum() == 6
    assert tok.decode(ids[0]) == "there is a small"


def test_tokenizer_round_trip_covers_all_world_text(world3, tok):
    texts = list(world3.captions)
    for i in range(len(world3)):
        texts += world3.paraphrases(i) + [q["question"] for q in world3.questions(i)]
        texts += list(world3[i]["negatives"].values())
    texts += list(ANSWERS) + [f"a photo of a {c}" for c in CLASS_NAMES]
    ids, mask = tok.encode(texts, max_len=20)
    assert (ids != tok.unk_id).all(), "the base vocabulary covers every generated word"
    assert mask.sum(1).max() < 20, "nothing was truncated"
    assert tok.decode(ids) == [" ".join(re.findall(r"[a-z0-9]+", t.lower())) for t in texts]
    assert tok.vocab_size < 80


def test_tokenizer_from_world_appends_extra_words(world3, tok):
    extended = Tokenizer.from_world(world3, extra_texts=["a zebra and a giraffe"])
    assert extended.vocab[: tok.vocab_size] == tok.vocab
    assert extended.vocab[tok.vocab_size :] == ["giraffe", "zebra"]
    assert extended.encode("a zebra")[0][0, 2] == extended.token_to_id["zebra"]


# ------------------------------------------------------------------ batching


def test_collate_captions(world3, tok):
    samples = [world3[i] for i in range(5)]
    batch = collate(samples, tok, max_len=16, negative="swap_relation")
    assert batch["images"].shape == (5, 3, 32, 32)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (5, 16)
    assert batch["texts"] == world3.captions[:5] and batch["scene_ids"].tolist() == list(range(5))
    assert batch["labels"].tolist() == world3.labels[:5].tolist()
    assert batch["colors"].shape == (5, 3) and batch["audio"].shape == (5, 2000)
    assert batch["spectrograms"].shape == (5, 32, 32)
    for i in range(5):
        assert (batch["colors"][i] >= 0).sum() == world3.num_objects[i]
        assert bool(batch["has_negative"][i]) == (world3.num_objects[i] > 1)
        if batch["has_negative"][i]:
            assert tok.decode(batch["negative_input_ids"][i]) == world3.negative(i, "swap_relation")


def test_collate_vqa_and_loader(world3, tok):
    vqa = world3.vqa(range(10))
    batch = collate([vqa[k] for k in range(6)], tok)
    assert batch["texts"] == [vqa[k]["question"] for k in range(6)]
    assert batch["answers"].tolist() == [vqa[k]["answer_id"] for k in range(6)]
    assert batch["question_types"].tolist() == [vqa[k]["type_id"] for k in range(6)]
    first = [b["scene_ids"].tolist() for b in make_loader(world3, tok, batch_size=50, shuffle=True, seed=1)]
    again = [b["scene_ids"].tolist() for b in make_loader(world3, tok, batch_size=50, shuffle=True, seed=1)]
    assert first == again and sorted(sum(first, [])) == list(range(len(world3)))


# ------------------------------------------------------------------ audio


def test_audio_encodes_colour_pitch_and_leaves_images_alone():
    world = ShapesWorld(40, 32, 1, seed=2, audio=True, shapes=["circle"])
    silent = ShapesWorld(40, 32, 1, seed=2, shapes=["circle"])
    assert torch.equal(world.images, silent.images) and silent.audio is None
    spectrum = torch.fft.rfft(world.audio).abs()
    freqs = torch.fft.rfftfreq(world.audio.size(1), 1 / world.sample_rate)
    for i in range(len(world)):
        peak = freqs[spectrum[i].argmax()].item()
        assert abs(peak - PITCH_HZ[world.objects(i)[0]["color"]]) < 8.0
    assert world.audio.abs().max() <= 1.0 and torch.isfinite(world.spectrograms).all()
    # loudness follows size
    energy = world.audio.square().mean(1)
    large = world.attribute("size") == SIZES.index("large")
    assert energy[large].min() > energy[~large].max()


# ------------------------------------------------------------------ bad input

BAD_WORLDS = [
    (dict(num_samples=0), ValueError, r"num_samples.*>= 1.*0"),
    (dict(num_samples=-3), ValueError, r"num_samples.*-3"),
    (dict(num_samples=2.5), TypeError, r"num_samples.*int.*2\.5"),
    (dict(num_samples=10, image_size=16, max_objects=3), ValueError, r"image_size.*>= 8 \* max_objects = 24.*16"),
    (dict(num_samples=10, image_size=8), ValueError, r"image_size.*\[16, 128\].*8"),
    (dict(num_samples=10, max_objects=4), ValueError, r"max_objects.*\[1, 3\].*4"),
    (dict(num_samples=10, min_objects=3, max_objects=2), ValueError, r"min_objects.*\[1, 2\].*3"),
    (dict(num_samples=10, noise=-0.1), ValueError, r"noise.*\[0.0, 1.0\).*-0\.1"),
    (dict(num_samples=10, seed=-1), ValueError, r"seed.*>= 0.*-1"),
    (dict(num_samples=10, colors=["pink"]), ValueError, r"colors.*'red'.*'pink'"),
    (
        dict(num_samples=10, exclude_combinations=[("green", "hexagon")]),
        ValueError,
        r"exclude_combinations.*shape in.*'hexagon'",
    ),
    (
        dict(num_samples=10, exclude_combinations=("green", "triangle")),
        TypeError,
        r"exclude_combinations.*list of \(color, shape\) pairs",
    ),
    (dict(num_samples=10, colors=["red"], shapes=["circle"]), ValueError, r"max_objects=2 needs at least 2"),
    (
        dict(num_samples=10, require_combinations=[("red", "cross")], exclude_combinations=[("red", "cross")]),
        ValueError,
        r"require_combinations.*excluded",
    ),
    (dict(num_samples=10, audio="yes"), TypeError, r"audio.*True or False.*'yes'"),
    (
        dict(num_samples=20, min_objects=2, object_scale=1.5, relation_margin=0.3),
        ValueError,
        r"objects do not fit: max_objects=2, object_scale=1.5, relation_margin=0.3",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_WORLDS)
def test_bad_world_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ShapesWorld(**kwargs)


def test_bad_calls(world2, tok):
    with pytest.raises(ValueError, match=r"kind must be one of \[.*'swap_colors'.*got 'swap_everything'"):
        world2.negatives("swap_everything")
    with pytest.raises(ValueError, match=r"name must be one of.*'weight'"):
        world2.attribute("weight")
    with pytest.raises(ValueError, match=r"obj must be an int in \[0, 1\], got 5"):
        world2.attribute("color", obj=5)
    with pytest.raises(IndexError, match=r"index must be in \[-300, 300\), got 300"):
        world2[300]
    with pytest.raises(ValueError, match=r"fractions must sum to 1"):
        world2.split((0.5, 0.5, 0.5))
    with pytest.raises(TypeError, match=r"texts must be a str or a sequence of str, got int"):
        tok.encode(123)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got None"):
        tok.encode(["a red circle", None])
    with pytest.raises(ValueError, match=r"max_len must be >= 2.*got 1"):
        tok.encode("a red circle", max_len=1)
    with pytest.raises(ValueError, match=r"start must be one of.*'eos'"):
        tok.encode("a red circle", start="eos")
    with pytest.raises(ValueError, match=r"samples must hold at least one sample"):
        collate([], tok)
    with pytest.raises(ValueError, match=r"negative must be one of.*'nope'"):
        collate([world2[0]], tok, negative="nope")
    with pytest.raises(TypeError, match=r"tokenizer must be a mmcourse.data.Tokenizer, got str"):
        collate([world2[0]], "tok")
    with pytest.raises(ValueError, match=r"held_out must name at least one"):
        compositional_split([], 10, 10)
    with pytest.raises(TypeError, match=r"extra_texts\[0\] must be a str, got 3"):
        Tokenizer.from_world(None, extra_texts=[3])


def test_one_relation_rule_decides_by_the_dominant_axis():
    from mmcourse.data.language import SceneObject, relation, relation_of_offset

    assert relation_of_offset(-0.3, 0.1) == "left of" and relation_of_offset(0.3, -0.1) == "right of"
    assert relation_of_offset(0.1, -0.3) == "above" and relation_of_offset(-0.1, 0.3) == "below"
    assert relation_of_offset(0.2, 0.2) == "right of", "a tie goes to the horizontal axis"
    a, b = SceneObject("red", "circle", "small", 0.2, 0.5), SceneObject("blue", "square", "small", 0.7, 0.6)
    assert relation(a, b) == relation_of_offset(a.x - b.x, a.y - b.y) == "left of"


def test_special_ids_are_module_constants_every_tokenizer_shares():
    from mmcourse.data import SPECIAL_IDS, SPECIAL_TOKENS, Tokenizer
    from mmcourse.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID

    tokenizer = Tokenizer(["red", "circle"])
    assert tokenizer.special_ids == SPECIAL_IDS == tuple(range(len(SPECIAL_TOKENS)))
    assert [tokenizer.vocab[i] for i in (PAD_ID, MASK_ID, BOS_ID, EOS_ID)] == ["[PAD]", "[MASK]", "[BOS]", "[EOS]"]
    ids = (tokenizer.pad_id, tokenizer.mask_id, tokenizer.bos_id, tokenizer.eos_id)
    assert ids == (PAD_ID, MASK_ID, BOS_ID, EOS_ID)
