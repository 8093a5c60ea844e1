"""Chapter 5's pretraining lessons, measured (article §4.2).

1. Compositionality: two-object relational retrieval ("a red circle left of a blue square") after training with
   ITC alone, ITC + hard-negative captions (NegCLIP-style: ShapesWorld's ``swap_relation`` / ``swap_colors`` /
   ``swap_shapes`` captions as extra text columns), and ITC + ITM with the top-k re-ranked by ITM.
   Target: text→image R@1 >= 0.90 within 60 s of CPU training.
2. Captioning (ITG): colour+shape words of generated captions match held-out scenes >= 90 % (greedy and beam).

Both come from library functions the chapters call (:func:`mmcourse.albef.compositionality_experiment`,
:func:`mmcourse.captioner.captioning_experiment`), with a fixed number of steps; ``train_s`` is the measured
wall-clock training time, which depends on the machine and on its load.
"""

from __future__ import annotations

import os
import time

import torch

from mmcourse.albef import compositionality_experiment
from mmcourse.captioner import captioning_experiment
from mmcourse.timing import measure

COLUMNS = ["experiment", "setting", "steps", "train_s", "t2i_R@1", "t2i_R@5", "i2t_R@1", "objects_match", "fact_match"]

FULL = {
    "retrieval": dict(steps=600, batch_size=64, num_scenes=6000, gallery_size=500),
    "captioning": dict(steps=400, batch_size=64, num_scenes=4000, test_size=500),
}
QUICK = {
    "retrieval": dict(
        steps=3,
        batch_size=16,
        num_scenes=300,
        gallery_size=40,
        rerank_k=4,
        model_kwargs=dict(cnn_width=4, dim=16, embed_dim=16, text_depth=1, num_heads=2),
    ),
    "captioning": dict(steps=3, batch_size=16, num_scenes=200, test_size=20, dim=16, depth=1, cnn_width=4),
}


def run(quick: bool = False) -> dict:
    cfg = QUICK if quick else FULL
    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    results = {}

    def retrieval():
        results["retrieval"] = compositionality_experiment(**cfg["retrieval"])

    def captioning():
        results["captioning"] = captioning_experiment(**cfg["captioning"])

    t_retrieval = measure(retrieval, warmup=0, repeats=1)
    t_captioning = measure(captioning, warmup=0, repeats=1)
    rows = []
    for r in results["retrieval"]["rows"]:
        rows.append(
            {
                "experiment": "two-object retrieval",
                "setting": r["setting"],
                "steps": r["steps"],
                "train_s": r["train_s"],
                "t2i_R@1": round(r["t2i_R@1"], 3),
                "t2i_R@5": round(r["t2i_R@5"], 3),
                "i2t_R@1": round(r["i2t_R@1"], 3),
                "objects_match": "",
                "fact_match": "",
            }
        )
    for r in results["captioning"]["rows"]:
        rows.append(
            {
                "experiment": "captioning (held-out)",
                "setting": r["decoding"],
                "steps": r["steps"],
                "train_s": r["train_s"],
                "t2i_R@1": "",
                "t2i_R@5": "",
                "i2t_R@1": "",
                "objects_match": round(r["objects_match"], 3),
                "fact_match": round(r["fact_match"], 3),
            }
        )
    rerank = [r for r in results["retrieval"]["rows"] if "t2i_R@1_before_rerank" in r]
    notes = (
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other jobs share the cores: train_s is noisy, the numbers are not). "
        f"Wall time: retrieval experiment {t_retrieval.median:.0f} s (all settings, incl. data and evaluation), "
        f"captioning {t_captioning.median:.0f} s; process CPU time {time.process_time() - cpu_start:.0f} s. "
        "Retrieval: each caption of the held-out gallery queries all its images; an image is correct when it "
        "shows the stated fact (same objects, same relation, either word order)."
    )
    if rerank:
        notes += f" ITM row: text→image R@1 {rerank[0]['t2i_R@1_before_rerank']:.3f} before re-ranking."
    example = results["captioning"]["rows"][0]["example"]
    notes += f" Caption example (greedy): {example}."
    return {
        "title": "Pretraining objectives: compositional retrieval and captioning",
        "columns": COLUMNS,
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    import sys

    result = run(quick="--quick" in sys.argv)
    print(result["title"])
    widths = {c: max(len(c), *(len(str(r[c])) for r in result["rows"])) for c in result["columns"]}
    print("  ".join(c.ljust(widths[c]) for c in result["columns"]))
    for row in result["rows"]:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in result["columns"]))
    print(result["notes"])
