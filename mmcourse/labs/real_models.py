"""Pretrained multimodal models on real photos: the "now on a real model" sections of chapters 4, 6 and 8.

:func:`load_real` gives a model and its processor for one of three jobs (:data:`REAL_MODELS`): ``"clip"`` — CLIP
ViT-B/32 (zero-shot classification, retrieval, INT8), ``"captioner"`` — BLIP base, ``"vqa"`` — ViLT.

* Where the Hugging Face Hub is reachable (Colab) it downloads the checkpoint at its pinned revision
  (:data:`mmcourse.hf.PINNED_REVISIONS`) — after one line that states the size — with the Hub's progress bars; a
  local Hugging Face cache that holds it is used without a download.
* Elsewhere — offline, as where the course's stored outputs are made — it builds a tiny stand-in of the same
  transformers classes with random weights (:mod:`mmcourse.dev.stand_in`) and says so in one line: the same cells
  run, so the code path is tested on every machine, and the outputs are noise. ``HF_HUB_OFFLINE=1`` is respected
  (no network attempt); an unreachable Hub or a download cut off gives that one line instead of a traceback.

Also here: the zero-shot classes and templates (:data:`PHOTO_CLASSES`, :data:`PHOTO_TEMPLATES`), one question per
photo for VQA (:data:`PHOTO_QUESTIONS`), :func:`caption_photos`, :func:`answer_questions`, :func:`show_photos`.
Photos: :func:`mmcourse.data.real_photos`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mmcourse.data import BASE_WORDS, Photo, real_photos
from mmcourse.hf import (
    BLIP_CAPTIONING,
    CLIP_VIT_B32,
    DOWNLOAD_MB,
    PINNED_REVISIONS,
    VILT_VQA,
    PretrainedUnavailable,
    hub_offline,
    hub_reachable,
    load_pretrained,
    pretrained_in_cache,
)

__all__ = [
    "RealSpec",
    "REAL_MODELS",
    "PHOTO_CLASSES",
    "PHOTO_TEMPLATES",
    "PHOTO_QUESTIONS",
    "RealModel",
    "load_real",
    "stand_in_words",
    "caption_photos",
    "answer_questions",
    "answer_matches",
    "show_photos",
]


@dataclass(frozen=True)
class RealSpec:
    """A pretrained checkpoint: Hub id, transformers model class, the name a reader knows, what its stand-in's
    output is worth, and what the pretrained model shows instead."""

    name: str
    model_class: str
    title: str
    noise: str
    shows: str


REAL_MODELS: dict[str, RealSpec] = {
    "clip": RealSpec(CLIP_VIT_B32, "CLIPModel", "CLIP ViT-B/32", "its similarities and zero-shot choices are noise",
                     "CLIP's"),
    "captioner": RealSpec(BLIP_CAPTIONING, "BlipForConditionalGeneration", "BLIP base (captioning)",
                          "its captions are noise", "BLIP's captions"),
    "vqa": RealSpec(VILT_VQA, "ViltForQuestionAnswering", "ViLT B/32 (VQA)", "its answers are noise",
                    "ViLT's answers"),
}
"""The three jobs of :func:`load_real`. Download sizes: :data:`mmcourse.hf.DOWNLOAD_MB`."""

PHOTO_CLASSES: tuple[str, ...] = ("astronaut", "cat", "coffee cup", "rocket", "galaxy", "retina", "pagoda", "flower",
                                  "dog", "airplane", "car", "bird")
"""Zero-shot classes: the eight photos' labels and four classes no photo shows (chance 1/12)."""

PHOTO_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a close-up photo of a {}.", "a blurry photo of a {}.",
                                    "a good photo of the {}.")
"""Four of the 80 prompt templates CLIP's authors ensembled for ImageNet."""

PHOTO_QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "astronaut": ("what color is her suit?", ("orange",)),
    "cat": ("what animal is this?", ("cat", "kitten")),
    "coffee": ("what color is the saucer?", ("red", "brown")),
    "rocket": ("what is in the middle of the picture?", ("rocket",)),
    "galaxies": ("what color is the background?", ("black",)),
    "retina": ("what shape is it?", ("circle", "round")),
    "pagoda": ("is there water?", ("yes",)),
    "dahlia": ("what color is the flower?", ("orange", "peach")),
}
"""One question per photo, with the answers that count as right (VQA v2 style: a few accepted words)."""


@dataclass(eq=False)
class RealModel:
    """What :func:`load_real` returns: ``model`` and ``processor`` (transformers objects), ``pretrained`` (False for
    the stand-in), and the :class:`RealSpec` it stands for."""

    spec: RealSpec
    model: nn.Module
    processor: object
    pretrained: bool

    def __repr__(self) -> str:
        kind = f"pretrained {self.spec.name}" if self.pretrained else "tiny stand-in, random weights"
        return f"RealModel({self.spec.title}: {kind})"


def stand_in_words() -> list[str]:
    """Every word of the photos' captions and labels, the classes, templates, questions and answers, and
    ShapesWorld's words: the vocabulary of the stand-ins' tokenizers."""
    texts = [*PHOTO_CLASSES, *PHOTO_TEMPLATES, *BASE_WORDS]
    texts += [caption for photo in real_photos(size=16) for caption in (*photo.captions, photo.label)]
    texts += [text for question, answers in PHOTO_QUESTIONS.values() for text in (question, *answers)]
    return sorted({word for text in texts for word in re.findall(r"[a-z]+", text.lower())})


def _stand_in(kind: str, seed: int):
    from mmcourse.dev import stand_in

    words = stand_in_words()
    if kind == "clip":
        return stand_in.tiny_clip_stand_in(words, seed=seed)
    if kind == "captioner":
        return stand_in.tiny_blip_captioner(words, seed=seed)
    answers = [answer for _, accepted in PHOTO_QUESTIONS.values() for answer in accepted]
    return stand_in.tiny_vilt_vqa(words, [*answers, "yes", "no", "two"], seed=seed)


@contextmanager
def _progress_bars():
    """Show the Hub's download progress bars inside the block (a chapter may have turned them off), then restore."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging

    hub_off, transformers_on = are_progress_bars_disabled(), logging.is_progress_bar_enabled()
    enable_progress_bars()
    logging.enable_progress_bar()
    try:
        yield
    finally:
        if not transformers_on:
            logging.disable_progress_bar()
        if hub_off:
            disable_progress_bars()


def _pretrained(spec: RealSpec, online: bool) -> RealModel:
    revision = PINNED_REVISIONS.get(spec.name)
    at = f"revision {revision[:12]}" if revision else "its main branch (not pinned)"
    if online and not pretrained_in_cache(spec.name):
        print(f"{spec.title}: downloading {spec.name} at {at}, about {DOWNLOAD_MB[spec.name]} MB — once; later runs "
              "load it from the Hugging Face cache.")
    with _progress_bars():
        model = load_pretrained(spec.model_class, spec.name)
        processor = load_pretrained("AutoProcessor", spec.name)
    print(f"{spec.title}: the pretrained {spec.name} ({at}).")
    return RealModel(spec, model, processor, pretrained=True)


def load_real(kind: str, *, seed: int = 0) -> RealModel:
    """The pretrained model of :data:`REAL_MODELS` ``[kind]`` with its processor where it can be had, else a tiny
    stand-in (random weights, ``seed``) — either way after one printed line that says which.

    Args:
        kind: ``"clip"``, ``"captioner"`` or ``"vqa"``.
    Returns:
        a :class:`RealModel` (``.model`` in eval mode, float32; ``.processor``; ``.pretrained``).
    """
    if kind not in REAL_MODELS:
        raise ValueError(f"kind must be one of {sorted(REAL_MODELS)}, got {kind!r}")
    spec = REAL_MODELS[kind]
    online = hub_reachable()
    if online or pretrained_in_cache(spec.name):
        try:
            return _pretrained(spec, online)
        except PretrainedUnavailable as err:
            reason = f"{err}; so"
    else:
        reason = "offline (HF_HUB_OFFLINE is set):" if hub_offline() else "the Hugging Face Hub is out of reach:"
        reason += f" {spec.name} is not in the local cache, so"
    model, processor = _stand_in(kind, seed)
    print(f"{reason} a tiny stand-in with random weights runs the same code — {spec.noise}; on Colab this cell "
          f"shows {spec.shows}.")
    return RealModel(spec, model, processor, pretrained=False)


@torch.no_grad()
def caption_photos(captioner: RealModel, photos: Sequence[Photo], *, max_new_tokens: int = 20,
                   num_beams: int = 3) -> list[str]:
    """One caption per photo from BLIP (or its stand-in): processor → ``generate`` (beam search) → decode."""
    inputs = captioner.processor(images=[p.image for p in photos], return_tensors="pt")
    ids = captioner.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
    return [text.strip() for text in captioner.processor.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def answer_questions(vqa: RealModel, photos: Sequence[Photo], questions: Sequence[str]) -> list[tuple[str, float]]:
    """ViLT's (or its stand-in's) answer to one question per photo, with its probability: ``[(answer, p), …]``.

    ViLT classifies over the answers it was trained on (3,129 frequent VQA v2 answers): one sigmoid score each.
    """
    if len(questions) != len(photos):
        raise ValueError(f"give one question per photo: {len(questions)} questions, {len(photos)} photos")
    inputs = vqa.processor(images=[p.image for p in photos], text=list(questions), return_tensors="pt",
                           padding=True)
    probabilities = vqa.model(**inputs).logits.sigmoid()  # (N, answers)
    best = probabilities.argmax(dim=-1)
    return [(vqa.model.config.id2label[int(i)], float(p[i])) for i, p in zip(best, probabilities)]


def answer_matches(answer: str, accepted: Sequence[str]) -> bool:
    """True when ``answer`` is one of the ``accepted`` words (case and surrounding spaces ignored)."""
    return answer.strip().lower() in {a.lower() for a in accepted}


def show_photos(photos: Sequence[Photo], rows: Sequence[tuple[str, Sequence[str]]] = (), *, ncols: int = 4,
                title: str | None = None, wrap: int = 40):
    """The photos in a grid, each with its name and licence and, below it, one line per ``rows`` entry
    (``(label, one text per photo)``). Returns the figure."""
    import textwrap

    import matplotlib.pyplot as plt

    texts = ["\n".join(textwrap.fill(f"{label}: {values[i]}", wrap) for label, values in rows)
             for i in range(len(photos))]
    nrows = -(-len(photos) // ncols)
    text_height = 0.17 * max((t.count("\n") + 1 for t in texts if t), default=0)
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(3.0 * ncols, (2.5 + text_height) * nrows + 0.4 * bool(title)),
                             gridspec_kw={"height_ratios": [2.5, max(text_height, 0.01)] * nrows}, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, photo in enumerate(photos):
        image_ax, text_ax = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        image_ax.imshow(photo.image)
        image_ax.set_title(f"{photo.name} ({photo.licence})", fontsize=9)
        text_ax.text(0.0, 1.0, texts[i], transform=text_ax.transAxes, va="top", ha="left", fontsize=7.5)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
