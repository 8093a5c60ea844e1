"""INT8 quantization of CLIP (article §8.2): size, speed and fidelity of each ``quantize_*`` path.

Targets:
* CLIP ViT-B/32 on CPU — ≥ 3.5× smaller and ≥ 2× faster image features than float32, cosine to float32 ≥ 0.995
  (legacy dynamic INT8 as first measured: 2.57× smaller, 1.61× faster image, 1.49× text, cosine 0.9997/0.998);
* TinyCLIP — INT8 zero-shot accuracy within 0.5 points of float32.

ViT-B/32 is built from ``CLIPConfig()`` (the article's architecture, random weights: size and speed do not depend
on the values; cosine to float32 measures numerical fidelity). TinyCLIP is trained on ShapesWorld for a fixed
number of steps, then every path is scored on held-out scenes. ``quick=True`` runs the same measurements on an
untrained TinyCLIP only, in a few seconds. Latencies are best-of-rounds medians of interleaved measurements
(:func:`mmcourse.labs.ch08_quantization.compare_latency`); on a shared machine they still vary by ±20 %.

With torchao installed (``pip install torchao``) the CPU table also has torchao's INT8
weight-only path, and the notes time torchao's INT8 dynamic path once (it has no fast int8 kernel on CPUs without
VNNI). ``device="cuda"`` measures what runs on a GPU instead (:func:`accelerator_table`): float32, float16 and
torchao's INT8 paths on the ViT-B/32 image tower at batch 1, 8 and 64.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mmcourse import quantization as Q
from mmcourse.labs import ch08_quantization as measure

PATHS = {
    "fp32": None,
    "dynamic (article)": Q.quantize_dynamic,
    "dynamic + embeddings": Q.quantize_dynamic_with_embeddings,
    "from scratch": Q.quantize_from_scratch,
}
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
if HAS_TORCHAO:
    PATHS["torchao weight-only"] = lambda model: Q.quantize_torchao(model, mode="int8_weight_only")

COLUMNS = ["model", "path", "size_mb", "size_x", "image_b1_ms", "image_b1_x", "image_b8_ms", "image_b8_x",
           "text_b1_ms", "text_b1_x", "image_cos", "text_cos", "zero_shot", "i2t_R@1"]

TARGETS = {"size_x": 3.5, "image_speedup": 2.0, "cosine": 0.995, "zero_shot_drop_points": 0.5}


def _speed_and_fidelity(label: str, models: dict, image_batches: dict, text_inputs: tuple, *,
                        repeats: int, rounds: int) -> list[dict]:
    """One row per path: size, image latency per batch size, text latency at batch 1, cosine to float32."""
    from mmcourse.hf import as_clip_encoder

    ids, mask = text_inputs
    fns = {}
    for name, model in models.items():
        encoder = as_clip_encoder(model)
        for b, images in image_batches.items():
            fns[(name, f"image_b{b}")] = lambda e=encoder, x=images: e.encode_image(x, normalize=False)
        fns[(name, "text_b1")] = lambda e=encoder: e.encode_text(ids, mask, normalize=False)
    timings = measure.compare_latency(fns, warmup=1, repeats=repeats, rounds=rounds)
    sizes = {name: Q.model_size_bytes(m) for name, m in models.items()}
    reference = models["fp32"]
    probe = next(iter(image_batches.values()))
    rows = []
    for name, model in models.items():
        row = {"model": label, "path": name, "size_mb": round(sizes[name] / 1e6, 2),
               "size_x": round(sizes["fp32"] / sizes[name], 2)}
        for key in [k for (n, k) in fns if n == name]:
            t, t_ref = timings[(name, key)].median, timings[("fp32", key)].median
            row[f"{key}_ms"], row[f"{key}_x"] = round(t * 1e3, 2), round(t_ref / t, 2)
        cos = measure.compare_features(reference, model, images=probe, input_ids=ids, attention_mask=mask)
        row["image_cos"], row["text_cos"] = round(cos["image_cosine"], 5), round(cos["text_cosine"], 5)
        rows.append(row)
    return rows


def _clip_vit_b32() -> torch.nn.Module:
    """The article's architecture, ``CLIPConfig()`` with random weights (no download)."""
    from mmcourse.hf import load_clip

    return load_clip("openai/clip-vit-base-patch32", pretrained=False, seed=0)


def _clip_vit_b32_rows(model: torch.nn.Module, repeats: int, rounds: int) -> list[dict]:
    models = {name: (model if fn is None else fn(model)) for name, fn in PATHS.items()}
    g = torch.Generator().manual_seed(0)
    images = {1: torch.randn(1, 3, 224, 224, generator=g), 8: torch.randn(8, 3, 224, 224, generator=g)}
    ids = torch.randint(0, 49406, (1, 77), generator=g)
    ids[0, 20] = model.config.text_config.eos_token_id  # a 21-token caption padded to 77
    mask = (torch.arange(77) <= 20).long()[None]
    return _speed_and_fidelity("CLIP ViT-B/32", models, images, (ids, mask), repeats=repeats, rounds=rounds)


def _tinyclip_rows(quick: bool) -> tuple[list[dict], str]:
    from mmcourse.data import ShapesWorld, Tokenizer
    from mmcourse.labs.common import (
        caption_retrieval,
        scene_text_pairs,
        train_tiny_clip,
        zero_shot_color_shape_accuracy,
    )
    from mmcourse.models.clip import build_tiny_clip
    from mmcourse.train import seeded

    train_world = ShapesWorld(200 if quick else 3000, image_size=32, max_objects=2, seed=0)
    test_world = ShapesWorld(100 if quick else 1000, image_size=32, max_objects=2, seed=1)
    tok = Tokenizer.from_world(train_world)
    start = time.perf_counter()
    if quick:
        torch.manual_seed(0)
        model = build_tiny_clip(tok.vocab_size).eval()
    else:
        with seeded(0):
            model = build_tiny_clip(tok.vocab_size, image_size=32, max_len=16)
        train_tiny_clip(model, scene_text_pairs(train_world, tok), steps=300, seed=0)
    train_s = time.perf_counter() - start
    models = {name: (model if fn is None else fn(model)) for name, fn in PATHS.items()}
    images = {1: test_world.images[:1], 8: test_world.images[:8]}
    ids, mask = tok.encode(test_world.captions[:1], max_len=16)
    rows = _speed_and_fidelity("TinyCLIP" if quick else "TinyCLIP (trained)", models, images, (ids, mask),
                               repeats=3 if quick else 10, rounds=1 if quick else 3)
    n_eval = 100 if quick else 500
    for row, m in zip(rows, models.values()):
        row["zero_shot"] = round(100 * zero_shot_color_shape_accuracy(m, test_world, tok), 2)
        r = caption_retrieval(m, test_world.images[:n_eval], test_world.captions[:n_eval], tok, ks=(1,))
        row["i2t_R@1"] = round(r["i2t_R@1"], 3)
    note = f"TinyCLIP: {'untrained' if quick else 'trained 300 steps'} ({train_s:.0f} s), i2t_R@1 on {n_eval} held-out "
    return rows, note + "captions, "


def _int8_gemm_ceiling(repeats: int, rounds: int) -> tuple[list[dict], str]:
    """The ceiling of any INT8 path on this CPU: one ViT-B/32 MLP matmul at batch 8 (400 tokens x 768 -> 3072).

    float32 ``F.linear`` versus the quantized engine's INT8 kernels — dynamic (activations quantized on the fly,
    what ``quantize_dynamic`` runs) and static (activations already INT8: the matmul alone) — for each engine
    this build supports. If the bare INT8 matmul is less than 2x faster than float32, no INT8 path can make the
    whole model 2x faster: LayerNorm, GELU, softmax and the attention matmuls stay in float32.
    """
    import functools

    import torch.nn.functional as F
    from torch.ao.nn.quantized import Linear as StaticLinear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    g = torch.Generator().manual_seed(0)
    tokens, d_in, d_out = 8 * 50, 768, 3072
    x = torch.randn(tokens, d_in, generator=g)
    weight, bias = torch.randn(d_out, d_in, generator=g) * 0.02, torch.zeros(d_out)
    previous = torch.backends.quantized.engine
    fns = {"float32 F.linear": lambda: F.linear(x, weight, bias)}
    engines = [e for e in ("fbgemm", "onednn") if e in torch.backends.quantized.supported_engines]

    def use(engine, layer, inputs):
        torch.backends.quantized.engine = engine
        return layer(inputs)

    # quantized tensor creation is deprecated (the warning is silenced); this measures the kernels anyway
    with Q.silence_quantization_warnings():
        q_weight = torch.quantize_per_channel(weight, weight.abs().amax(1) / 127,
                                              torch.zeros(d_out, dtype=torch.long), 0, torch.qint8)
        x_q = torch.quantize_per_tensor(x, float(x.abs().max()) / 127, 128, torch.quint8)
        try:
            for engine in engines:
                torch.backends.quantized.engine = engine
                dynamic = DynamicLinear(d_in, d_out)
                dynamic.set_weight_bias(q_weight, bias)
                static = StaticLinear(d_in, d_out)
                static.set_weight_bias(q_weight, bias)
                static.scale, static.zero_point = 0.05, 64
                fns[f"{engine} INT8 dynamic"] = functools.partial(use, engine, dynamic, x)
                fns[f"{engine} INT8 static"] = functools.partial(use, engine, static, x_q)
            timings = measure.compare_latency(fns, warmup=2, repeats=repeats, rounds=rounds)
        finally:
            torch.backends.quantized.engine = previous
    reference = timings["float32 F.linear"].median
    flops = 2 * tokens * d_in * d_out
    rows = [{"kernel": name, "ms": round(t.median * 1e3, 2), "x": round(reference / t.median, 2),
             "GFLOP/s": round(flops / t.median / 1e9, 1)} for name, t in timings.items()]
    best = max((r["x"] for r in rows if "INT8" in r["kernel"]), default=float("nan"))
    note = (f" INT8 ceiling — one ViT-B/32 MLP matmul at batch 8 ({tokens}x{d_in}->{d_out}): "
            + ", ".join(f"{r['kernel']} {r['ms']} ms ({r['x']}x)" for r in rows)
            + f". The whole image tower cannot beat the best bare INT8 matmul ({best}x float32 here): LayerNorm, "
            "GELU, softmax and the attention matmuls stay float32.")
    return rows, note


def _verdict(rows: list[dict]) -> str:
    lines = []
    clip = {r["path"]: r for r in rows if r["model"] == "CLIP ViT-B/32"}
    for path, r in clip.items():
        if path == "fp32":
            continue
        checks = {
            "size": r["size_x"] >= TARGETS["size_x"],
            "image b1": r["image_b1_x"] >= TARGETS["image_speedup"],
            "image b8": r["image_b8_x"] >= TARGETS["image_speedup"],
            "cosine": min(r["image_cos"], r["text_cos"]) >= TARGETS["cosine"],
        }
        met = [k for k, ok in checks.items() if ok]
        missed = [k for k, ok in checks.items() if not ok]
        lines.append(f"ViT-B/32 {path}: {r['size_x']}x smaller, image {r['image_b1_x']}x (b1) / {r['image_b8_x']}x "
                     f"(b8), text {r['text_b1_x']}x, cos {r['image_cos']}/{r['text_cos']} -> meets "
                     f"{', '.join(met) or 'nothing'}; misses {', '.join(missed) or 'nothing'}")
    tiny = {r["path"]: r for r in rows if r["model"] == "TinyCLIP (trained)"}
    if "fp32" in tiny:
        for path, r in tiny.items():
            if path != "fp32":
                drop = tiny["fp32"]["zero_shot"] - r["zero_shot"]
                ok = drop <= TARGETS["zero_shot_drop_points"]
                lines.append(f"TinyCLIP {path}: zero-shot {r['zero_shot']} % vs {tiny['fp32']['zero_shot']} % "
                             f"(drop {drop:.2f} points) -> {'meets' if ok else 'misses'} the target")
    return "\n".join(lines)


ACCELERATOR_PATHS = {  # name -> (make the model, dtype of its input images)
    "fp32": (lambda model: model, torch.float32),
    "fp16": (lambda model: copy.deepcopy(model).half(), torch.float16),
    "torchao int8 weight-only": (lambda model: Q.quantize_torchao(model, mode="int8_weight_only"), torch.float32),
    "torchao int8 dynamic": (lambda model: Q.quantize_torchao(model, mode="int8_dynamic"), torch.float32),
}
ACCELERATOR_COLUMNS = ["model", "path", "size_mb", "size_x", "image_b1_ms", "image_b1_x", "image_b8_ms",
                       "image_b8_x", "image_b64_ms", "image_b64_x", "image_cos"]


def accelerator_table(quick: bool = False, device: str = "cuda") -> dict:
    """What runs on a GPU: float32, float16 and torchao's INT8 paths on the ViT-B/32 image tower (a tiny HF CLIP
    with ``quick``), batch 1, 8 and 64 (1 and 8 with ``quick``). Paths that cannot run here (no torchao, a kernel
    missing on this device) get a row with the reason instead of numbers."""
    from mmcourse.dev.stand_in import build_tiny_hf_clip
    from mmcourse.hf import as_clip_encoder

    torch.manual_seed(0)
    if quick:
        from mmcourse.data import ShapesWorld, Tokenizer

        label, side = "tiny HF CLIP", 32
        model = build_tiny_hf_clip(Tokenizer.from_world(ShapesWorld(10, image_size=side, seed=0)), seed=0)
    else:
        label, side = "CLIP ViT-B/32", 224
        model = _clip_vit_b32()
    model = model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    batches = (1, 8) if quick else (1, 8, 64)
    images = {b: torch.randn(b, 3, side, side, generator=g).to(device) for b in batches}
    fns, models, skipped = {}, {}, {}
    for name, (make, dtype) in ACCELERATOR_PATHS.items():
        try:
            candidate = make(model)
            encoder = as_clip_encoder(candidate)
            with torch.inference_mode():
                encoder.encode_image(images[1].to(dtype), normalize=False)  # fails here if a kernel is missing
        except Exception as exc:  # e.g. torchao not installed, or no int8 kernel for this device
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        models[name] = (candidate, encoder, dtype)
        for b, x in images.items():
            cast = x.to(dtype)
            fns[(name, b)] = lambda e=encoder, x=cast: e.encode_image(x, normalize=False)
    timings = measure.compare_latency(fns, warmup=2 if not quick else 1, repeats=3 if quick else 20,
                                rounds=1 if quick else 3)
    with torch.inference_mode():
        reference = models["fp32"][1].encode_image(images[8], normalize=False)
    rows = []
    size_fp32 = Q.model_size_bytes(model)
    for name, (candidate, encoder, dtype) in models.items():
        size = Q.model_size_bytes(candidate)
        row = {"model": label, "path": name, "size_mb": round(size / 1e6, 2), "size_x": round(size_fp32 / size, 2)}
        for b in batches:
            t, t_ref = timings[(name, b)].median, timings[("fp32", b)].median
            row[f"image_b{b}_ms"], row[f"image_b{b}_x"] = round(t * 1e3, 3), round(t_ref / t, 2)
        with torch.inference_mode():
            out = encoder.encode_image(images[8].to(dtype), normalize=False)
        row["image_cos"] = round(measure.feature_cosine(reference, out)["mean"], 5)
        rows.append(row)
    for name, reason in skipped.items():
        rows.append({"model": label, "path": name, "size_mb": f"not run: {reason}"})
    for row in rows:
        for column in ACCELERATOR_COLUMNS:
            row.setdefault(column, "-")
    name = torch.cuda.get_device_name(0) if str(device).startswith("cuda") else str(device)
    notes = (f"{name}, torch {torch.__version__}; image = get_image_features at {side} px; *_x = fp32 time / path "
             "time (size_x likewise); cos = mean cosine of the batch-8 embeddings to fp32. Latency: best-of-rounds "
             "median, CUDA synchronised around each call. On a GPU, half precision is the first step (no "
             "calibration, tensor cores); INT8 through torchao pays off where its int8 matmul kernels exist.")
    return {"title": f"Inference precision on {device}: size, speed, fidelity ({label})",
            "columns": ACCELERATOR_COLUMNS, "rows": rows, "notes": notes}


def _torchao_dynamic_cpu_note(model: torch.nn.Module) -> str:
    """One timing of torchao's INT8 dynamic path on the ViT-B/32 ``model``'s image tower at batch 1 (slow on this
    CPU)."""
    from mmcourse.hf import as_clip_encoder

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    encoders = {"fp32": as_clip_encoder(model), "torchao": as_clip_encoder(Q.quantize_torchao(model))}
    calls = {name: (lambda e=e: e.encode_image(x, normalize=False)) for name, e in encoders.items()}
    timings = measure.compare_latency(calls, warmup=1, repeats=3, rounds=1)
    ratio = timings["torchao"].median / timings["fp32"].median
    return (f" torchao INT8 dynamic (int8 activations too) on the ViT-B/32 image tower at batch 1: "
            f"{timings['torchao'].median * 1e3:.0f} ms vs {timings['fp32'].median * 1e3:.0f} ms float32 "
            f"({ratio:.1f}x slower: no fast int8 x int8 kernel for this CPU; it is the GPU path).")


def run(quick: bool = False, threads: int = 1, device: str = "cpu") -> dict:
    """The table; ``threads`` = torch CPU threads while measuring (1 = the course's reference environment);
    ``device="cuda"``: :func:`accelerator_table` instead."""
    if device != "cpu":
        return accelerator_table(quick, device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(previous)


def _run(quick: bool) -> dict:
    torch.manual_seed(0)
    rows: list[dict] = []
    vit_b32 = None if quick else _clip_vit_b32()
    if not quick:
        rows += _clip_vit_b32_rows(vit_b32, repeats=5, rounds=3)
    gemm_rows, gemm_note = _int8_gemm_ceiling(repeats=3 if quick else 10, rounds=1 if quick else 3)
    tiny_rows, tiny_note = _tinyclip_rows(quick)
    rows += tiny_rows
    for row in rows:
        for column in COLUMNS:
            row.setdefault(column, "-")
    notes = (
        f"CPU, {torch.get_num_threads()} thread(s) (the reference environment runs one), torch {torch.__version__}, "
        f"quantized engine "
        f"{Q.ensure_quantized_engine()}. ViT-B/32 = CLIPConfig() with random weights; image = get_image_features "
        "at 224 px, text = get_text_features on 77 tokens; *_x = fp32 time / path time (size_x likewise); "
        f"cos = mean cosine of the embeddings to fp32. {tiny_note}zero-shot % over colour x shape classes on "
        "held-out one-object scenes. Latency: best-of-rounds median; the machine "
        "is shared, expect +/-20 %." + gemm_note
        + (_torchao_dynamic_cpu_note(vit_b32) if HAS_TORCHAO and not quick else "")
        + ("" if HAS_TORCHAO else " torchao is not installed: its rows are missing (pip install torchao).")
        + "\n" + _verdict(rows)
    )
    return {"title": "INT8 quantization on CPU: size, speed, fidelity", "columns": COLUMNS, "rows": rows,
            "notes": notes, "int8_gemm_ceiling": gemm_rows}
