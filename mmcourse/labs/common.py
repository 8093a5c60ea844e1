"""What several chapters' experiments share (chapters 1–8 import it; it imports no chapter's lab).

* **Claim lines** — :func:`claim` prints a chapter's conclusion as a line every machine can check (see below).
* **TinyCLIP on ShapesWorld** — :func:`scene_text_pairs` (each scene's image and its captions as tensors),
  :func:`train_tiny_clip` (``(model, data, *, steps, …) -> History``), and what the model learnt:
  :func:`zero_shot_color_shape_accuracy` (prompt templates :data:`SHAPES_TEMPLATES`, :func:`class_prompt_names`),
  :func:`caption_retrieval`; :func:`same_words` (two captions made of the same words).
* **Captions** — :func:`mentioned_objects`, :func:`fact_key` (what a caption asserts, whatever its word order),
  :func:`object_match_rate`; :func:`train_captioner`, :func:`caption_images`.
* **Classifiers** — :func:`classifier_accuracy` of any image+text classifier on a dict of tensors (chapters 1, 3).

About claim lines: what a chapter concludes from its numbers, printed so that every machine can check it.

A chapter's prose draws conclusions from measured numbers ("fusion beats the best single modality"). The numbers
themselves are exact only on the platform the stored outputs were made on; on another CPU, a GPU or another torch
version training lands on slightly different floats. The conclusion should not move. So each one is printed as a
claim line next to the numbers::

    >>> claim("fused beats the best single modality by >= 0.10", fused - max(image, text) >= 0.10)
    claim: fused beats the best single modality by >= 0.10: yes

The notebook tests compare claim lines on every machine (README, "What the tests check where"): a lesson whose
claim no longer holds prints ``NO`` and fails everywhere. Write the statement with the margin the lesson needs, not
the decimals one run happened to give, and keep it true over several seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.models.captioner import Captioner
from mmcourse.models.clip import TinyCLIP
from mmcourse.retrieval import (
    encode_images,
    encode_texts,
    recall_both_ways,
    zero_shot_accuracy,
    zero_shot_classifier,
)
from mmcourse.train import History, evaluating, fit, module_device

__all__ = [
    "CLAIM_PREFIX",
    "claim",
    "SHAPES_TEMPLATES",
    "tokenize_scene_texts",
    "draw_text_choice",
    "scene_text_pairs",
    "check_scene_text_pairs",
    "train_tiny_clip",
    "class_prompt_names",
    "zero_shot_color_shape_accuracy",
    "caption_retrieval",
    "same_words",
    "mentioned_objects",
    "fact_key",
    "object_match_rate",
    "train_captioner",
    "caption_images",
    "classifier_accuracy",
]

CLAIM_PREFIX = "claim: "
"""How every claim line starts (the notebook tests keep only these lines on a platform other than the reference)."""


def claim(statement: str, holds) -> None:
    """Print ``claim: <statement>: yes`` (or ``NO``).

    It returns nothing, so a cell may end with it without echoing a value.

    Args:
        statement: the conclusion, in words, with its threshold (one line, no trailing colon).
        holds: whether the measurement supports it: a bool, or anything with a truth value (a 0-d tensor, a numpy
            bool).
    """
    if not isinstance(statement, str) or not statement.strip() or "\n" in statement:
        raise ValueError(f"statement must be one non-empty line of text, got {statement!r}")
    print(f"{CLAIM_PREFIX}{statement.strip()}: {'yes' if bool(holds) else 'NO'}")

SHAPES_TEMPLATES: tuple[str, ...] = ("{}", "a photo of {}", "a picture of {}", "there is {}")
"""Prompt templates for zero-shot classification on ShapesWorld; ``{}`` is a class name with its article
("a red circle", "an orange square"), see :func:`class_prompt_names`."""


def _scene_texts(world, indices: Sequence[int], use_paraphrases: bool) -> list[list[str]]:
    """The caption (and optionally the paraphrases) of each scene."""
    if not use_paraphrases:
        return [[world.captions[i]] for i in indices]
    if hasattr(world, "paraphrases"):
        return [[world.captions[i], *world.paraphrases(i)] for i in indices]
    return [[world.captions[i], *world[i]["paraphrases"]] for i in indices]


def _tokenize_texts_per_scene(tokenizer, texts: list[list[str]], max_len: int) -> tuple[torch.Tensor, ...]:
    """``(N, P, L)`` ids and masks (each scene's texts, padded by repeating its caption) and counts ``(N,)``."""
    most = max(len(t) for t in texts)
    flat = [scene[j] if j < len(scene) else scene[0] for scene in texts for j in range(most)]
    ids, mask = tokenizer.encode(flat, max_len=max_len)
    counts = torch.tensor([len(t) for t in texts])
    return ids.view(len(texts), most, -1), mask.view(len(texts), most, -1), counts



def tokenize_scene_texts(world, tokenizer, indices: Sequence[int], use_paraphrases: bool, max_len: int):
    """Each scene's caption (and paraphrases) tokenized: ids, masks ``(N, P, L)`` and counts ``(N,)``."""
    return _tokenize_texts_per_scene(tokenizer, _scene_texts(world, indices, use_paraphrases), max_len)


def draw_text_choice(counts: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of its texts each scene of a batch uses this step: ``counts (B,)`` texts per scene → ``(rows, choice)``,
    two ``(B,)`` index tensors on ``counts``' device, for ``per_scene[rows, choice]`` of any ``(B, P, ...)`` tensor.

    The draw is made on the CPU from ``generator``, so the same seed picks the same texts on every device.
    """
    uniform = torch.rand(len(counts), generator=generator).to(counts.device)  # drawn on the CPU, no read-back
    return torch.arange(len(counts), device=counts.device), (uniform * counts).long()

def scene_text_pairs(
    world,
    tokenizer,
    indices: Sequence[int] | None = None,
    *,
    use_paraphrases: bool = True,
    max_len: int = 16,
) -> dict[str, torch.Tensor]:
    """ShapesWorld scenes and their texts, as the tensors :func:`train_tiny_clip` trains on.

    Args:
        world: a ``ShapesWorld`` (``.images``, ``.captions``, ``.paraphrases(i)`` or ``world[i]["paraphrases"]``).
        tokenizer: its :class:`mmcourse.data.Tokenizer`.
        indices: the scenes (default: all); keep held-out scenes out of a training set.
        use_paraphrases: each scene's texts are its caption and its true rewordings (else the caption alone).
        max_len: token length.
    Returns:
        ``{"images" (N, 3, H, W), "input_ids" (N, P, L), "attention_mask" (N, P, L), "counts" (N,)}``: scene
        ``i``'s ``P`` text slots hold its ``counts[i]`` texts (caption first), padded by repeating the caption.
    """
    indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise ValueError("indices must select at least one scene")
    ids, mask, counts = tokenize_scene_texts(world, tokenizer, indices, use_paraphrases, max_len)
    return {"images": world.images[torch.tensor(indices)], "input_ids": ids, "attention_mask": mask, "counts": counts}


_PAIR_KEYS = ("images", "input_ids", "attention_mask", "counts")


def check_scene_text_pairs(data, minimum: int = 1) -> int:
    """Validate a :func:`scene_text_pairs` dict (at least ``minimum`` scenes); return its number of scenes ``N``."""
    if not isinstance(data, dict):
        raise TypeError(f"data must be the dict of scene_text_pairs(...), got {type(data).__name__}")
    missing = [k for k in _PAIR_KEYS if k not in data]
    if missing:
        raise ValueError(f"data must hold {list(_PAIR_KEYS)} (see scene_text_pairs), missing {missing}")
    check_tensor(data["images"], "data['images']", ndim=4, floating=True)
    for key in ("input_ids", "attention_mask"):
        check_tensor(data[key], f"data[{key!r}]", ndim=3, floating=False)
    n = data["images"].size(0)
    if any(data[k].size(0) != n for k in _PAIR_KEYS):
        raise ValueError(f"data's tensors must have one row per scene, got {[data[k].size(0) for k in _PAIR_KEYS]}")
    if n < minimum:
        raise ValueError(f"data must hold at least {minimum} scene(s), got {n}")
    return n


def train_tiny_clip(
    model: TinyCLIP,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 140,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 20,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    eval_fn=None,
    eval_every: int | None = None,
) -> History:
    """Train a :class:`TinyCLIP` (in place) on ShapesWorld image–text pairs for a fixed number of steps.

    Each step draws ``batch_size`` scenes (shuffled, seeded) and, for each, one of its texts at random — the
    caption or, in data built with paraphrases, one of its true rewordings — then minimises the symmetric
    contrastive loss (AdamW, warm-up + cosine learning rate, gradient clipping at 1).

    The defaults (140 steps of 128 pairs, lr 3e-3, 32 px; the model from
    :func:`mmcourse.models.clip.build_tiny_clip` under ``seeded(seed)``) reach ≥ 99 % zero-shot colour+shape
    accuracy on held-out one-object scenes for every seed tried (0, 3, 4, 5, 6): ≈ 30 s of CPU time on one thread
    of a shared machine, ≈ 0.2 s per step. With batch 64 some seeds get stuck: image and text embeddings of the
    shapes of one colour collapse together and only colour is learnt — larger batches hold more
    same-colour/other-shape negatives, which pull the shapes apart.

    Args:
        model: the model to train, e.g. ``with seeded(0): model = build_tiny_clip(tokenizer.vocab_size, ...)``.
        data: :func:`scene_text_pairs` output: ``images (N, 3, H, W)``, ``input_ids`` / ``attention_mask
            (N, P, L)``, ``counts (N,)``.
        steps, batch_size, lr, weight_decay, warmup_steps: optimisation (the batch is ``min(batch_size, N)``).
        seed: seeds the batches and the text choice: same model, data and seed, same result.
        device: default: where the model is.
        progress, eval_fn, eval_every: passed to :func:`mmcourse.train.fit`.
    Returns:
        the :class:`~mmcourse.train.History` (``metrics["logit_scale"]`` per step); the model is left in ``eval()``
        mode.
    """
    if not isinstance(model, TinyCLIP):
        raise TypeError(f"model must be a TinyCLIP, got {type(model).__name__}")
    n = check_scene_text_pairs(data)
    check_positive(steps, "steps", integer=True)
    choice_generator = torch.Generator().manual_seed(seed + 1)

    def step(model: TinyCLIP, batch):
        rows, pick = draw_text_choice(batch["counts"], choice_generator)
        loss = model.loss(batch["images"], batch["input_ids"][rows, pick], batch["attention_mask"][rows, pick])
        return loss, {"logit_scale": model.logit_scale().detach()}

    step.__name__ = "TinyCLIP"  # fit labels its progress bar with the step function's name
    history = fit(
        model,
        step,
        {k: data[k] for k in _PAIR_KEYS},
        steps=steps,
        batch_size=min(batch_size, n),
        lr=lr,
        weight_decay=weight_decay,
        lr_schedule="cosine",
        warmup_steps=warmup_steps,
        grad_clip=1.0,
        device=device,
        seed=seed,
        progress=progress,
        eval_fn=eval_fn,
        eval_every=eval_every,
    )
    model.eval()
    return history


def class_prompt_names(colors: Sequence[str], shapes: Sequence[str]) -> list[str]:
    """ "a red circle", "an orange square", …: every colour × shape with its article, colour-major order."""
    return [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c in colors for s in shapes]


def _color_shape_labels(world, indices: list[int]) -> torch.Tensor:
    from mmcourse.data import SHAPES

    index = torch.tensor(indices)
    colors = world.attribute("color")[index]
    shapes = world.attribute("shape")[index]
    if (colors < 0).any() or (shapes < 0).any():
        raise ValueError("every selected scene needs an object (colour and shape labels are -1 somewhere)")
    return colors * len(SHAPES) + shapes


@torch.no_grad()
def zero_shot_color_shape_accuracy(
    model: TinyCLIP,
    world,
    tokenizer,
    indices: Sequence[int] | None = None,
    templates: Sequence[str] = SHAPES_TEMPLATES,
    max_len: int = 16,
) -> float:
    """Zero-shot accuracy over the ``len(COLORS) × len(SHAPES)`` classes "red circle", … on one-object scenes.

    The class of a scene is its first object's ``colour * len(SHAPES) + shape`` (the order of
    ``mmcourse.data.CLASS_NAMES``); prompts are built from ``templates`` with template ensembling.
    Default ``indices``: every scene with exactly one object.
    """
    classnames, features, labels = _color_shape_task(model, world, indices)
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, max_len=max_len)
    return zero_shot_accuracy(features, classifier, labels)


def _color_shape_task(model: TinyCLIP, world, indices: Sequence[int] | None):
    """The colour+shape zero-shot task: class names, image features ``(N, D)`` and labels ``(N,)``.

    Default ``indices``: every scene with exactly one object.
    """
    from mmcourse.data import COLORS, SHAPES

    if indices is None:
        indices = (world.num_objects == 1).nonzero().flatten().tolist()
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no scenes to evaluate: indices is empty (or the world has no one-object scene)")
    features = encode_images(model, world.images[torch.tensor(indices)])
    return class_prompt_names(COLORS, SHAPES), features, _color_shape_labels(world, indices)


@torch.no_grad()
def caption_retrieval(
    model: TinyCLIP,
    images: torch.Tensor,
    captions: Sequence[str],
    tokenizer,
    ks: Sequence[int] = (1, 5),
    max_len: int = 16,
) -> dict[str, float]:
    """Recall@K between images and their captions, treating identical captions as one text.

    The text gallery is the set of *distinct* captions: image→text has exactly one correct text per image;
    text→image counts every image with that caption as correct.

    Args:
        images: ``(N, 3, H, W)``; captions: ``N`` strings, caption ``i`` describes image ``i``.
    Returns:
        ``{"i2t_R@1": …, "t2i_R@1": …, …}`` (ranks use the pessimistic tie rule of :mod:`mmcourse.retrieval`).
    """
    check_tensor(images, "images", ndim=4, floating=True)
    if len(captions) != images.size(0):
        raise ValueError(f"captions must hold one caption per image ({images.size(0)}), got {len(captions)}")
    distinct = list(dict.fromkeys(captions))
    position = {c: j for j, c in enumerate(distinct)}
    caption_id = torch.tensor([position[c] for c in captions])
    image_embeds = encode_images(model, images)
    text_embeds = encode_texts(model, tokenizer, distinct, max_len=max_len)
    similarity = image_embeds @ text_embeds.t()  # (N, T)
    positives = caption_id.to(similarity.device)[:, None] == torch.arange(len(distinct), device=similarity.device)
    return recall_both_ways(similarity, positives, ks)


def same_words(text_a: str, text_b: str) -> bool:
    """Whether two sentences are made of the same words, ignoring order and the article "a"/"an"."""
    if not isinstance(text_a, str) or not isinstance(text_b, str):
        raise TypeError(f"text_a and text_b must be str, got {type(text_a).__name__} and {type(text_b).__name__}")

    def bag(text: str) -> list[str]:
        return sorted("a" if w == "an" else w for w in text.lower().split())

    return bag(text_a) == bag(text_b)


# ---------------------------------------------------------------------------------------------- ShapesWorld
def mentioned_objects(text: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a ShapesWorld sentence names, in order ("a red circle left of a blue box" →
    ``[("red", "circle"), ("blue", "square")]``); shape synonyms and plurals are mapped back, sizes skipped."""
    from mmcourse.data.vocab import COLORS, PLURALS, SHAPES, SYNONYMS

    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    to_shape = {s: s for s in SHAPES} | {v: k for k, v in SYNONYMS.items() if k in SHAPES}
    to_shape |= {v: k for k, v in PLURALS.items()}
    found, color = [], None
    for word in text.lower().split():
        if word in COLORS:
            color = word
        elif word in to_shape and color is not None:
            found.append((color, to_shape[word]))
            color = None
    return found


_RELATION_PHRASES = {"left of": "left of", "right of": "right of", "above": "above", "below": "below",
                     "over": "above", "under": "below"}  # fmt: skip
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def fact_key(text: str) -> tuple:
    """What a two-object ShapesWorld caption asserts, independent of its word order.

    "a red circle left of a blue square" and "a blue square right of a red circle" get the same key, any other
    caption a different one; sentences that are not "<object> <relation> <object>" are keyed by their words.
    """
    objects = mentioned_objects(text)
    words = " ".join(text.lower().split())
    relations = [r for phrase, r in _RELATION_PHRASES.items() if f" {phrase} " in f" {words} "]
    if len(objects) != 2 or len(relations) != 1:
        return ("text", words)
    (a, b), rel = objects, relations[0]
    return min((a, rel, b), (b, _INVERSE[rel], a))


def object_match_rate(texts: Sequence[str], objects: Sequence[Sequence[dict]]) -> float:
    """Share of captions whose (colour, shape) mentions equal the scene's objects, as multisets.

    Args:
        texts: generated captions, one per scene.
        objects: per scene, the list of ``{"color", "shape", ...}`` dicts (``world.objects(i)``).
    """
    if isinstance(texts, str) or len(texts) != len(objects):
        raise ValueError(f"texts and objects must be sequences of the same length, got {len(texts)} and {len(objects)}")
    if not texts:
        raise ValueError("texts must not be empty")
    hits = 0
    for text, objs in zip(texts, objects, strict=True):
        hits += sorted(mentioned_objects(text)) == sorted((o["color"], o["shape"]) for o in objs)
    return hits / len(texts)


def train_captioner(
    model: Captioner,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 2e-3,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> History:
    """Teacher-forced training of ``model`` (in place) for exactly ``steps`` steps (see :func:`mmcourse.train.fit`;
    warm-up + cosine learning rate unless ``fit_kwargs`` say otherwise).

    Args:
        model: a :class:`~mmcourse.models.captioner.Captioner`.
        data: ``{"images": (N, ...), "caption_ids": (N, L)}``: what the captioner's image side takes for each
            example (images ``(N, 3, S, S)``, or cached image tokens ``(N, T, D)``) and its encoded caption
            (``tokenizer.encode(captions, max_len=L)[0]``).
        steps, batch_size, lr, label_smoothing, seed, device, progress, fit_kwargs: optimisation, see
            :func:`mmcourse.train.fit`.
    Returns:
        the training :class:`~mmcourse.train.History`.
    """
    if not isinstance(data, dict) or not {"images", "caption_ids"} <= set(data):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"data must be a dict with 'images' and 'caption_ids', got {got}")
    images, caption_ids = data["images"], data["caption_ids"]
    check_tensor(images, "data['images']", floating=True)
    check_tensor(caption_ids, "data['caption_ids']", ndim=2, floating=False)
    if images.shape[0] != caption_ids.shape[0]:
        raise ValueError(
            f"data['images'] and data['caption_ids'] must hold the same number of rows, got {images.shape[0]} and "
            f"{caption_ids.shape[0]}"
        )

    def step(m: Captioner, batch: dict):
        return m.loss(batch["images"], batch["caption_ids"], label_smoothing)

    fit_kwargs.setdefault("lr_schedule", "cosine")
    fit_kwargs.setdefault("warmup_steps", min(50, steps // 10))
    return fit(
        model,
        step,
        {"images": images, "caption_ids": caption_ids},
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        progress=progress,
        **fit_kwargs,
    )


def caption_images(model: Captioner, images: torch.Tensor, tokenizer, batch_size: int = 256, **generate_kwargs):
    """Generated captions (list of str) for ``images (N, 3, S, S)``, in batches, decoded by ``tokenizer``."""
    device = module_device(model)
    texts: list[str] = []
    for start in range(0, images.shape[0], batch_size):
        ids = model.generate(images[start : start + batch_size].to(device), **generate_kwargs)
        texts += tokenizer.decode(ids.cpu())
    return texts


def classifier_accuracy(model: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 512) -> float:
    """Fraction of ``data["labels"] (N,)`` that ``model(images, input_ids, attention_mask) → logits (N, C)``
    predicts, in chunks of ``batch_size`` on the model's device, in eval mode (the model's mode is restored).
    Keys of ``data`` other than those four are ignored."""
    device = module_device(model)
    n = data["labels"].size(0)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with evaluating(model):
        for start in range(0, n, batch_size):
            part = {k: data[k][start : start + batch_size].to(device)
                    for k in ("images", "input_ids", "attention_mask", "labels")}
            logits = model(part["images"], part["input_ids"], part["attention_mask"])
            correct += (logits.argmax(-1) == part["labels"]).sum()
    return int(correct) / n  # one read-back for the whole set
