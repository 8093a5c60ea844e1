"""Batching ShapesWorld samples: one collate function for captions, questions, labels and hard negatives.

Serves every training loop of the course (chapters 2-7).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset

from mmcourse.data.tokenizer import Tokenizer
from mmcourse.data.vocab import ANSWERS, COLORS, NEGATIVE_KINDS, QUESTION_TYPES, SHAPES, SIZES


def _object_table(samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """(B, K) colour / shape / size ids of each sample's objects, -1 padded, K = most objects in the batch."""
    k = max(len(s["objects"]) for s in samples)
    tables = {name: torch.full((len(samples), k), -1, dtype=torch.long) for name in ("colors", "shapes", "sizes")}
    for row, sample in enumerate(samples):
        for slot, obj in enumerate(sample["objects"]):
            tables["colors"][row, slot] = COLORS.index(obj["color"])
            tables["shapes"][row, slot] = SHAPES.index(obj["shape"])
            tables["sizes"][row, slot] = SIZES.index(obj["size"])
    return tables


def collate(
    samples: Sequence[dict],
    tokenizer: Tokenizer,
    max_len: int = 16,
    *,
    text_key: str | None = None,
    start: str | None = "cls",
    negative: str | None = None,
) -> dict:
    """Stack a list of ``world[i]`` (or ``world.vqa()[i]``) dicts into a batch.

    Args:
        samples: B dicts with at least "image" and the text under ``text_key``.
        tokenizer: a :class:`Tokenizer`; max_len: padded text length L; start: see ``Tokenizer.encode``.
        text_key: which text to encode; default "question" when the samples have one, else "caption".
        negative: a kind of ``NEGATIVE_KINDS``: also encode that hard negative of each scene.
    Returns:
        dict with
        images (B, 3, H, W), input_ids (B, L), attention_mask (B, L), texts (list of B str), scene_ids (B,);
        when present in the samples: labels (B,), num_objects (B,), colors / shapes / sizes (B, K) (-1 padded),
        answers (B,) ids into ``ANSWERS`` and question_types (B,) ids into ``QUESTION_TYPES``,
        audio (B, T), spectrograms (B, M, F);
        with ``negative``: negative_input_ids (B, L), negative_attention_mask (B, L) and has_negative (B,) bool
        (rows without such a negative hold an empty text and False).
    """
    if isinstance(samples, dict) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a list of sample dicts, got {type(samples).__name__}")
    if len(samples) == 0:
        raise ValueError("samples must hold at least one sample, got an empty list")
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or "image" not in s:
            raise TypeError(f"samples[{i}] must be a dict with an 'image', got {type(s).__name__}")
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a mmcourse.data.Tokenizer, got {type(tokenizer).__name__}")
    if text_key is None:
        text_key = "question" if "question" in samples[0] else "caption"
    missing = [i for i, s in enumerate(samples) if text_key not in s]
    if missing:
        raise ValueError(f"text_key={text_key!r} is missing from samples {missing[:5]}; keys: {sorted(samples[0])}")
    texts = [s[text_key] for s in samples]
    input_ids, attention_mask = tokenizer.encode(texts, max_len, start=start)
    batch = {
        "images": torch.stack([s["image"] for s in samples]),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "texts": texts,
    }

    def has(key: str) -> bool:
        return all(key in s for s in samples)

    if has("scene_id"):
        batch["scene_ids"] = torch.tensor([s["scene_id"] for s in samples])
    if has("label"):
        batch["labels"] = torch.tensor([s["label"] for s in samples])
    if has("num_objects"):
        batch["num_objects"] = torch.tensor([s["num_objects"] for s in samples])
    if has("objects"):
        batch.update(_object_table(samples))
    if has("answer"):
        batch["answers"] = torch.tensor([ANSWERS.index(s["answer"]) for s in samples])
    if has("type"):
        batch["question_types"] = torch.tensor([QUESTION_TYPES.index(s["type"]) for s in samples])
    if has("audio"):
        batch["audio"] = torch.stack([s["audio"] for s in samples])
    if has("spectrogram"):
        batch["spectrograms"] = torch.stack([s["spectrogram"] for s in samples])
    if negative is not None:
        if negative not in NEGATIVE_KINDS:
            raise ValueError(f"negative must be one of {list(NEGATIVE_KINDS)} or None, got {negative!r}")
        if not has("negatives"):
            raise ValueError("negative needs samples with 'negatives' (items of a ShapesWorld), got none")
        found = [s["negatives"].get(negative) for s in samples]
        neg_ids, neg_mask = tokenizer.encode([f or "" for f in found], max_len, start=start)
        batch["negative_input_ids"], batch["negative_attention_mask"] = neg_ids, neg_mask
        batch["has_negative"] = torch.tensor([f is not None for f in found])
    return batch


def make_loader(
    dataset: Dataset,
    tokenizer: Tokenizer,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    seed: int = 0,
    max_len: int = 16,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    **collate_kwargs,
) -> DataLoader:
    """A single-process ``DataLoader`` using :func:`collate`; shuffling is seeded, so epochs are reproducible.

    ``pin_memory`` (default: whether CUDA is available) puts batches in page-locked memory, so that
    ``batch.to("cuda", non_blocking=True)`` (as :func:`mmcourse.train.fit` does) overlaps the copy with compute.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a mmcourse.data.Tokenizer, got {type(tokenizer).__name__}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        collate_fn=partial(collate, tokenizer=tokenizer, max_len=max_len, **collate_kwargs),
    )
