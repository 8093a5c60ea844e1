"""Model selection (article §8.1): parameters, fp32/INT8 size and CPU latency of real multimodal architectures.

Every model is built offline from its Hugging Face config with random weights (:mod:`mmcourse.labs.ch08_model_zoo`);
latency is one forward pass (image + text) at batch 1 and 8, float32 and INT8
(:func:`mmcourse.quantization.quantize_dynamic_with_embeddings`). The large tier (LLaVA-1.5-7B) is counted on
the meta device, its sizes estimated from parameter shapes. ``quick=True`` only counts parameters (meta device,
every entry, no latency).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mmcourse.labs import ch08_model_zoo as Z

COLUMNS = ["model", "tier", "family", "params_m", "fp32_mb", "int8_mb", "size_source", "fp32_b1_ms", "int8_b1_ms",
           "fp32_b8_ms", "int8_b8_ms"]


def _quick_row(key: str) -> dict:
    entry = Z.get_entry(key)
    model = Z.build_model(entry, device="meta")
    return {"model": entry.name, "tier": entry.tier, "family": entry.family,
            "params_m": Z.count_parameters(model)["total"] / 1e6,
            "fp32_mb": Z.estimated_size_bytes(model) / 1e6,
            "int8_mb": Z.estimated_size_bytes(model, int8=True) / 1e6, "size_source": "estimate"}


def run(quick: bool = False, threads: int = 1) -> dict:
    """The table; ``threads`` = torch CPU threads while measuring (1 = the course's reference environment)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(previous)


def _run(quick: bool) -> dict:
    rows = []
    for key, entry in Z.MODEL_ZOO.items():
        if quick:
            row = _quick_row(key)
        else:
            big = entry.cpu_runnable and entry.key == "clip-vit-l14"
            row = Z.model_summary(key, batch_sizes=(1, 8), warmup=1, repeats=2 if big else 3)
        for column in COLUMNS:
            value = row.get(column, "-")
            row[column] = round(value, 1) if isinstance(value, float) else value
        rows.append({c: row[c] for c in COLUMNS})
    notes = (
        f"CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}; random weights (latency and size do not "
        "depend on their values). Latency = median of one forward pass with images + captions "
        "(CLIP/MobileCLIP-like 224 px + 77 tokens, SigLIP 224 px + 64, ViLT/BLIP 384 px + 40/32). "
        "INT8 = dynamic Linear + INT8 embeddings + INT8 patch conv. size_source 'estimate' = from parameter shapes "
        "(4 B/param; INT8: Linear/Embedding weights 1 B + a float32 scale per row). GPT-4V is closed and Flamingo "
        "has no transformers config; LLaVA-1.5-7B stands for that tier. Shared machine: latency +/-20 %."
    )
    return {"title": "Model selection (§8.1): size and CPU latency", "columns": COLUMNS, "rows": rows, "notes": notes}
