"""ShapesWorld generation speed on one CPU thread, and the cost of the dataset sizes the chapters use.

Rows of kind "speed" build ``num_samples`` scenes (layout, rendering, captions) at 16 / 32 / 64 px, with and
without audio (waveform + log-mel spectrogram). Rows of kind "chapter" build the worlds the chapters use and also
time the first pass over every item (paraphrases, questions and hard negatives are built lazily, then cached).
"""

from __future__ import annotations

import time

import torch

from mmcourse.data import ShapesWorld
from mmcourse.dev.timing import measure

COLUMNS = [
    "kind",
    "setting",
    "image_size",
    "num_samples",
    "max_objects",
    "audio",
    "build_s",
    "scenes_per_s",
    "all_items_s",
    "tensors_MB",
]

CHAPTER_WORLDS = [
    # (setting, num_samples, image_size, max_objects, audio)
    ("ch.4 zero-shot colour+shape, 1 object", 2000, 32, 1, False),
    ("ch.2/4/5 captions with relations, 1-2 objects", 2000, 32, 2, False),
    ("ch.3/4 tiny ViT, 16 px", 2000, 16, 2, False),
    ("ch.6 VQA, 1-3 objects", 3000, 32, 3, False),
    ("ch.2 audio binding", 2000, 32, 2, True),
]


def _megabytes(world: ShapesWorld) -> float:
    tensors = [world.images] + ([world.audio, world.spectrograms] if world.has_audio else [])
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1)


def _build(holder: list, *args, **kwargs) -> None:
    holder[:] = [ShapesWorld(*args, **kwargs)]


def run(quick: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        n = 200 if quick else 5000
        warmup, repeats = (0, 1) if quick else (1, 5)
        for audio in (False, True):
            for size in (16, 32, 64):
                built: list = []
                timing = measure(
                    lambda s=size, a=audio, b=built: _build(b, n, s, 2, seed=0, audio=a),
                    warmup=warmup,
                    repeats=repeats,
                )
                rows.append(
                    {
                        "kind": "speed",
                        "setting": "1-2 objects",
                        "image_size": size,
                        "num_samples": n,
                        "max_objects": 2,
                        "audio": audio,
                        "build_s": round(timing.median, 3),
                        "scenes_per_s": round(n / timing.median),
                        "all_items_s": "-",
                        "tensors_MB": _megabytes(built[0]),
                    }
                )
        worlds = CHAPTER_WORLDS[:1] if quick else CHAPTER_WORLDS
        for setting, num, size, k, audio in worlds:
            num = min(num, 100) if quick else num
            built = []
            timing = measure(
                lambda num=num, size=size, k=k, audio=audio, b=built: _build(b, num, size, k, seed=0, audio=audio),
                warmup=0,
                repeats=1 if quick else 3,
            )
            world = built[0]
            start = time.perf_counter()
            for i in range(len(world)):
                world[i]
            items_s = time.perf_counter() - start
            rows.append(
                {
                    "kind": "chapter",
                    "setting": setting,
                    "image_size": size,
                    "num_samples": num,
                    "max_objects": k,
                    "audio": audio,
                    "build_s": round(timing.median, 3),
                    "scenes_per_s": round(num / timing.median),
                    "all_items_s": round(items_s, 3),
                    "tensors_MB": _megabytes(world),
                }
            )
    finally:
        torch.set_num_threads(threads)
    notes = (
        "One CPU thread (torch.set_num_threads(1)); build_s = median construction time of ShapesWorld (layout, "
        "vectorised rendering, canonical captions; plus waveform and spectrogram when audio=True); "
        "all_items_s = first pass over world[i] for every scene (paraphrases, VQA pairs, 8 kinds of hard "
        "negatives, built lazily and cached). Target: >= 5,000 scenes/s at 32 px without audio. Timings on a "
        "shared machine are noisy."
    )
    return {"title": "ShapesWorld generation", "columns": COLUMNS, "rows": rows, "notes": notes}
