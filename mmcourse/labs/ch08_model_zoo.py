"""Model selection (article §8.1): real multimodal architectures, built offline from their configs, compared.

The article sorts models by scale — small (MobileCLIP), medium (ViLT, CLIP), large (GPT-4V, Flamingo). This
module puts numbers on that advice without downloading anything: every entry of :data:`MODEL_ZOO` is a
Hugging Face architecture built from its configuration with random weights. Parameter counts and sizes are
exact for the architecture; latency does not depend on the weights' values; only accuracy would need the
pretrained weights.

* :data:`MODEL_ZOO` — ``key → ZooEntry`` (name, Hub id, tier, family, how to build it and feed it).
* :func:`build_config`, :func:`shallow_config` — an entry's configuration, or a copy with a fraction of its
  layers (same widths, patches and tokens: each layer costs the same, so timing a quarter-depth copy is a cheap
  way to compare latencies).
* :func:`build_model` — a zoo model on CPU (random weights, seeded) or on the ``meta`` device (shapes only, no
  memory: how a 7 B-parameter model is counted on a laptop).
* :func:`count_parameters` — total and per top-level component (vision / text / fusion …).
* :func:`example_inputs` — a batch of random inputs of the right shapes.
* :func:`count_flops` — floating-point operations of one forward pass (torch's ``FlopCounterMode``; on the meta
  device too, so a model too large for the laptop is counted without memory).
* :func:`show_model_costs` — the chapter's figure: parameters of every entry, latency against GFLOPs of the timed.
* :func:`model_summary`, :func:`model_table` — parameters, fp32 / INT8 size (``torch.save`` bytes, or an
  estimate for meta-built models), CPU latency of one forward pass at batch 1 and 8, fp32 and INT8
  (:func:`mmcourse.quantization.quantize_dynamic_with_embeddings`).

Closed models (GPT-4V) and Flamingo have no configuration in transformers; LLaVA-1.5-7B stands for the large
tier (CLIP ViT-L/14-336 + a 7 B language model). transformers is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from mmcourse._checks import check_choice, check_positive
from mmcourse.train import seeded

__all__ = [
    "TIERS", "ZooEntry", "MODEL_ZOO", "get_entry", "build_config", "shallow_config", "build_model",
    "count_parameters", "estimated_size_bytes", "example_inputs", "count_flops", "model_summary", "model_table",
    "show_model_costs",
]

TIERS: tuple[str, ...] = ("small", "medium", "large")


@dataclass(frozen=True)
class ZooEntry:
    """One architecture of the §8.1 table.

    Attributes:
        key: short id (``"clip-vit-b32"``); name: display name; hub_id: the pretrained checkpoint it mirrors.
        tier: ``"small" | "medium" | "large"`` as in the article; family: how the modalities meet.
        model_class: name of the transformers class; config_class: name of its config class.
        config_kwargs: keyword arguments of the config (``{}`` = the class defaults).
        inputs: ``"dual"`` (pixel_values + input_ids), ``"vilt"`` (+ pixel_mask) or ``"none"`` (not run here).
        image_size, text_len: input shapes used for latency.
        cpu_runnable: False for models only counted on the meta device (too large for a laptop).
        note: one line for the table.
    """

    key: str
    name: str
    hub_id: str
    tier: str
    family: str
    model_class: str
    config_class: str
    config_kwargs: dict = field(default_factory=dict)
    inputs: str = "dual"
    image_size: int = 224
    text_len: int = 77
    cpu_runnable: bool = True
    note: str = ""


MODEL_ZOO: dict[str, ZooEntry] = {
    e.key: e
    for e in [
        ZooEntry(
            "mobileclip-like", "MobileCLIP-S0-sized CLIP", "apple/MobileCLIP-S0", "small", "dual encoder",
            "CLIPModel", "CLIPConfig",
            {"text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                             "num_hidden_layers": 4},
             "vision_config": {"hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 6,
                               "num_hidden_layers": 12, "patch_size": 16, "image_size": 224},
             "projection_dim": 512},
            note="ViT-S/16 + 4-layer text: MobileCLIP's size class (its MobileOne/FastViT towers are not in "
                 "transformers)",
        ),
        ZooEntry(
            "clip-vit-b32", "CLIP ViT-B/32", "openai/clip-vit-base-patch32", "medium", "dual encoder",
            "CLIPModel", "CLIPConfig", {}, note="the article's model; CLIPConfig() defaults",
        ),
        ZooEntry(
            "siglip-base", "SigLIP B/16-224", "google/siglip-base-patch16-224", "medium", "dual encoder",
            "SiglipModel", "SiglipConfig",
            {"text_config": {"bos_token_id": None, "eos_token_id": 1, "pad_token_id": 1}},
            text_len=64, note="sigmoid loss instead of softmax; 196 patches",
        ),
        ZooEntry(
            "vilt-b32", "ViLT-B/32", "dandelin/vilt-b32-mlm", "medium", "single-stream fusion",
            "ViltModel", "ViltConfig", {}, inputs="vilt", image_size=384, text_len=40,
            note="one transformer over text tokens + image patches, no vision backbone",
        ),
        ZooEntry(
            "blip-base", "BLIP base (ITC)", "Salesforce/blip-itm-base-coco", "medium", "dual encoder + fusion",
            "BlipModel", "BlipConfig", {}, image_size=384, text_len=32,
            note="ViT-B/16 at 384 px + BERT-base text encoder",
        ),
        ZooEntry(
            "clip-vit-l14", "CLIP ViT-L/14", "openai/clip-vit-large-patch14", "large", "dual encoder",
            "CLIPModel", "CLIPConfig",
            {"text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                             "num_hidden_layers": 12},
             "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                               "num_hidden_layers": 24, "patch_size": 14, "image_size": 224},
             "projection_dim": 768},
            note="256 patches x 24 layers: ~20x the image FLOPs of ViT-B/32",
        ),
        ZooEntry(
            "llava-1.5-7b", "LLaVA-1.5-7B", "llava-hf/llava-1.5-7b-hf", "large", "multimodal LLM",
            "LlavaForConditionalGeneration", "LlavaConfig", {}, inputs="none", image_size=336, text_len=0,
            cpu_runnable=False, note="CLIP ViT-L/14-336 + 7 B decoder; counted on the meta device only",
        ),
    ]
}
"""The §8.1 table, small to large. Each config mirrors the checkpoint named by ``hub_id``."""


def get_entry(key) -> ZooEntry:
    """The :class:`ZooEntry` for ``key`` (or ``key`` itself when it already is one)."""
    if isinstance(key, ZooEntry):
        return key
    if not isinstance(key, str):
        raise TypeError(f"key must be a str or a ZooEntry, got {type(key).__name__}")
    if key not in MODEL_ZOO:
        raise ValueError(f"key must be one of {list(MODEL_ZOO)}, got {key!r}")
    return MODEL_ZOO[key]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' config/deprecation log lines while zoo models are built (they would go to stderr)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def build_config(key):
    """The transformers config of a zoo entry."""
    import transformers

    entry = get_entry(key)
    with _quiet_transformers():
        return getattr(transformers, entry.config_class)(**entry.config_kwargs)


def shallow_config(key, depth: float = 0.25):
    """The entry's config with ``depth`` of the layers of every tower (rounded, at least one), all else unchanged.

    A transformer's layers within a tower are identical, so compute and latency scale with their number: a
    quarter-depth copy costs about a quarter of the FLOPs and time of the full model, in the same proportions.
    """
    import copy

    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 < depth <= 1:
        raise ValueError(f"depth must be a fraction in (0, 1], got {depth!r}")
    config = copy.deepcopy(build_config(key))
    towers = [getattr(config, name) for name in ("text_config", "vision_config") if hasattr(config, name)]
    for tower in towers or [config]:
        tower.num_hidden_layers = max(1, round(tower.num_hidden_layers * depth))
    return config


def build_model(key, *, device: str = "cpu", seed: int = 0, config=None) -> nn.Module:
    """A zoo model in eval mode: random float32 weights on CPU (``seed``), or shapes only on ``"meta"``.

    Args:
        key: a :data:`MODEL_ZOO` key or a :class:`ZooEntry`.
        device: ``"cpu"`` or ``"meta"`` (no memory: for counting parameters of models too large to build).
        seed: seeds the random initialisation.
        config: a config to use instead of the entry's (e.g. a tiny one in tests).
    """
    import transformers

    entry = get_entry(key)
    check_choice(device, "device", ("cpu", "meta"))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if device == "cpu" and not entry.cpu_runnable and config is None:
        raise ValueError(f"{entry.name} is too large to build on CPU here; use device='meta' to count it")
    config = build_config(entry) if config is None else config
    model_class = getattr(transformers, entry.model_class)
    with seeded(seed):
        with _quiet_transformers(), torch.device(device):
            model = model_class(config)
        return model.float().eval() if device == "cpu" else model.eval()


def count_parameters(model: nn.Module) -> dict:
    """Parameters of ``model`` (shared tensors counted once).

    Returns:
        ``{"total": int, "by_component": {child_name: int}}`` over the top-level children (for HF models one
        level below the base model when the top level has a single child, e.g. ``LlavaForConditionalGeneration``
        → ``vision_tower``, ``language_model``…); parameters held directly by the root are under ``"(root)"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    root = model
    children = [(n, c) for n, c in root.named_children() if any(True for _ in c.parameters())]
    while len(children) == 1 and not any(True for _ in root.parameters(recurse=False)):
        root = children[0][1]
        children = [(n, c) for n, c in root.named_children() if any(True for _ in c.parameters())]
    seen: set[int] = set()
    by_component: dict[str, int] = {}
    direct = sum(p.numel() for p in root.parameters(recurse=False) if not _seen(p, seen))
    if direct:
        by_component["(root)"] = direct
    for name, child in children:
        count = sum(p.numel() for p in child.parameters() if not _seen(p, seen))
        if count:
            by_component[name] = count
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return {"total": total, "by_component": by_component}


def _seen(p: torch.Tensor, seen: set[int]) -> bool:
    if id(p) in seen:
        return True
    seen.add(id(p))
    return False


def estimated_size_bytes(model: nn.Module, *, int8: bool = False) -> int:
    """Size without serialising (works on meta models): 4 bytes per parameter; with ``int8``, Linear and
    Embedding weights at 1 byte + one float32 scale per row, everything else at 4 bytes."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {id(p): p for p in model.parameters()}
    if not int8:
        return 4 * sum(p.numel() for p in params.values())
    quantized = {id(m.weight): m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    size = 0
    for key, p in params.items():
        size += (p.numel() + 4 * p.shape[0]) if key in quantized else 4 * p.numel()
    return size


def example_inputs(key, batch_size: int = 1, *, config=None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for one forward pass of a zoo model: images ``(B, 3, S, S)``, token ids ``(B, L)`` ending
    with the end-of-text id where the model pools there (CLIP), plus ``pixel_mask`` for ViLT."""
    entry = get_entry(key)
    check_positive(batch_size, "batch_size", integer=True)
    if entry.inputs == "none":
        raise ValueError(f"{entry.name} is not run here (counted on the meta device only)")
    config = build_config(entry) if config is None else config
    text_config = getattr(config, "text_config", config)
    vision_config = getattr(config, "vision_config", config)
    image_size = getattr(vision_config, "image_size", entry.image_size)
    text_len = min(entry.text_len, getattr(text_config, "max_position_embeddings", entry.text_len))
    generator = torch.Generator().manual_seed(seed)
    vocab = text_config.vocab_size
    inputs = {
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=generator),
        "input_ids": torch.randint(3, vocab - 1, (batch_size, text_len), generator=generator),
    }
    eos = getattr(text_config, "eos_token_id", None)
    if isinstance(eos, int) and 0 <= eos < vocab:
        inputs["input_ids"][:, -1] = eos
    if entry.inputs == "vilt":
        inputs["pixel_mask"] = torch.ones(batch_size, image_size, image_size, dtype=torch.long)
    return inputs


def count_flops(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> int:
    """Floating-point operations of one forward pass ``model(**inputs)`` (a multiply-add counts 2).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: matrix products, convolutions and attention — the
    operations that dominate a transformer; element-wise work (norms, activations, softmax) is not counted. The
    inputs are moved to the model's device, so a model built on ``"meta"`` is counted without computing anything.

    Raises:
        ValueError: the forward pass cannot run on the meta device (shapes that depend on values, e.g. ViLT's
            patch sampling): count such a model on CPU.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, Mapping) or not inputs:
        raise TypeError(f"inputs must be a non-empty mapping name -> tensor, got {type(inputs).__name__}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    moved = {}
    for name, value in inputs.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"inputs[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
        moved[name] = value.to(device)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counter = FlopCounterMode(display=False)
    try:  # attention through the math backend, whose matrix products the counter sees on every device
        with counter, torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
            model(**moved)
    except (RuntimeError, NotImplementedError) as err:
        if device.type != "meta":
            raise
        raise ValueError(f"{type(model).__name__} cannot run on the meta device ({str(err).splitlines()[0]}); "
                         "count it on CPU") from err
    return int(counter.get_total_flops())


def model_summary(
    key,
    *,
    batch_sizes: Sequence[int] = (1, 8),
    latency: bool = True,
    int8: bool = True,
    warmup: int = 1,
    repeats: int = 3,
    config=None,
    seed: int = 0,
    device: str | None = None,
    flops: bool = False,
    size: bool = True,
) -> dict:
    """One row of the §8.1 table for a zoo entry.

    Args:
        key: a :data:`MODEL_ZOO` key or :class:`ZooEntry`.
        batch_sizes: batch sizes timed (one forward pass with image + text).
        latency: time the forward pass (CPU-runnable models only).
        int8: also quantize (:func:`mmcourse.quantization.quantize_dynamic_with_embeddings`), measure its size
            and, with ``latency``, its speed.
        warmup, repeats: per measurement (:func:`mmcourse.labs.ch08_quantization.measure_latency`).
        config: use this config instead of the entry's (tests use tiny ones).
        device: ``"cpu"`` or ``"meta"``; default: CPU for CPU-runnable entries, else meta. ``"meta"`` only
            counts (no memory, no latency; sizes estimated from shapes) — every entry in a fraction of a second.
        flops: add ``"gflops"``, GFLOPs of one forward pass at batch 1 (:func:`count_flops`; ``None`` where the
            model cannot run on meta, e.g. ViLT) — and ``"by_component"``, parameters per top-level component.
        size: measure ``fp32_mb`` / ``int8_mb`` with ``torch.save`` on CPU-built models (False: estimate them from
            the shapes, as on meta — no serialisation).
    Returns:
        ``{"model", "tier", "family", "params_m", "fp32_mb", "int8_mb", "size_source",
        "fp32_b{B}_ms", "int8_b{B}_ms" …}``; ``size_source`` is ``"torch.save"`` or ``"estimate"`` (meta).
    """
    from mmcourse.labs.ch08_quantization import measure_latency
    from mmcourse.quantization import quantize_dynamic_with_embeddings
    from mmcourse.quantization.convert import model_size_bytes

    entry = get_entry(key)
    batch_sizes = list(batch_sizes)
    for b in batch_sizes:
        check_positive(b, "batch_sizes[i]", integer=True)
    runnable = entry.cpu_runnable or config is not None
    if device is not None:
        check_choice(device, "device", ("cpu", "meta"))
        if device == "cpu" and not runnable:
            raise ValueError(f"{entry.name} is too large to build on CPU here; use device='meta'")
        runnable = device == "cpu"
    model = build_model(entry, device="cpu" if runnable else "meta", seed=seed, config=config)
    counts = count_parameters(model)
    row: dict = {"model": entry.name, "tier": entry.tier, "family": entry.family,
                 "params_m": counts["total"] / 1e6}
    if flops:
        row["by_component"] = counts["by_component"]
        row["gflops"] = None
        if entry.inputs != "none":
            try:
                row["gflops"] = count_flops(model, example_inputs(entry, 1, config=model.config, seed=seed)) / 1e9
            except ValueError:
                pass
    if not runnable or not size:
        row.update(fp32_mb=estimated_size_bytes(model) / 1e6, int8_mb=estimated_size_bytes(model, int8=True) / 1e6,
                   size_source="estimate")
    if not runnable:
        return row
    if size:
        row["fp32_mb"], row["size_source"] = model_size_bytes(model) / 1e6, "torch.save"
    quantized = quantize_dynamic_with_embeddings(model) if int8 else None
    if quantized is not None and size:
        row["int8_mb"] = model_size_bytes(quantized) / 1e6
    if latency:
        for b in batch_sizes:
            inputs = example_inputs(entry, b, config=model.config, seed=seed)
            row[f"fp32_b{b}_ms"] = measure_latency(model, warmup=warmup, repeats=repeats, **inputs).median * 1e3
            if quantized is not None:
                row[f"int8_b{b}_ms"] = measure_latency(quantized, warmup=warmup, repeats=repeats, **inputs).median * 1e3
    return row


def model_table(keys: Sequence[str] | None = None, **summary_kwargs) -> list[dict]:
    """:func:`model_summary` for several entries (default: the whole zoo, small to large)."""
    keys = list(MODEL_ZOO) if keys is None else list(keys)
    return [model_summary(k, **summary_kwargs) for k in keys]


def show_model_costs(zoo: Sequence[Mapping], timed: Sequence[Mapping], *, timed_label: str = ""):
    """Two panels: parameters of every ``zoo`` row (log scale); latency (``fp32_b1_ms``) against ``gflops`` of the
    ``timed`` rows. Rows as returned by :func:`model_summary`. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    if not zoo or not timed:
        raise ValueError("zoo and timed must be non-empty lists of model_summary rows")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    axes[0].barh([row["model"] for row in zoo], [row["params_m"] for row in zoo], color="tab:gray")
    axes[0].set_xscale("log")
    axes[0].invert_yaxis()
    axes[0].set_xlabel("parameters (millions, log scale)")
    axes[0].set_title("Memory follows parameters")
    for i, row in enumerate(timed):
        axes[1].scatter(row["gflops"], row["fp32_b1_ms"], s=40)
        axes[1].annotate(row["model"], (row["gflops"], row["fp32_b1_ms"]), textcoords="offset points",
                         xytext=(8, 8 if i % 2 else -12), fontsize=8)
    axes[1].set_xlabel(f"GFLOPs per image-text pair{timed_label}")
    axes[1].set_ylabel(f"CPU latency, batch 1 (ms){timed_label}")
    axes[1].set_xlim(0, max(row["gflops"] for row in timed) * 1.6)
    axes[1].set_ylim(0, max(row["fp32_b1_ms"] for row in timed) * 1.25)
    axes[1].set_title("Latency follows computation")
    fig.tight_layout()
    return fig
