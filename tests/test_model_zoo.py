"""Tests of mmcourse.labs.ch08_model_zoo: the §8.1 table's entries, parameter counting and summaries (tiny configs
only)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported anywhere

import pytest
import torch
from torch import nn

from mmcourse.labs import ch08_model_zoo as Z

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def _tiny_config(key):
    """The entry's config class with tiny sizes (same architecture family, seconds → milliseconds)."""
    import transformers

    entry = Z.get_entry(key)
    cls = getattr(transformers, entry.config_class)
    if entry.config_class == "ViltConfig":
        return cls(**SMALL, vocab_size=60, max_position_embeddings=8, image_size=32, patch_size=16)
    text = {**SMALL, "vocab_size": 60, "max_position_embeddings": 8, "eos_token_id": 59, "bos_token_id": 58,
            "pad_token_id": 0}
    vision = {**SMALL, "image_size": 32, "patch_size": 16}
    return cls(text_config=text, vision_config=vision)


def test_zoo_covers_the_articles_tiers():
    assert {e.tier for e in Z.MODEL_ZOO.values()} == set(Z.TIERS)
    assert {"clip-vit-b32", "clip-vit-l14", "vilt-b32", "mobileclip-like"} <= set(Z.MODEL_ZOO)
    assert all(isinstance(e, Z.ZooEntry) and e.hub_id and e.name for e in Z.MODEL_ZOO.values())
    assert Z.get_entry(Z.MODEL_ZOO["vilt-b32"]) is Z.MODEL_ZOO["vilt-b32"]
    with pytest.raises(ValueError, match="must be one of"):
        Z.get_entry("gpt-4v")
    with pytest.raises(TypeError, match="key"):
        Z.get_entry(3)


def test_vit_b32_config_and_meta_counts():
    """The article's model counted without allocating memory (meta device): 151.3 M parameters."""
    model = Z.build_model("clip-vit-b32", device="meta")
    counts = Z.count_parameters(model)
    assert 151_000_000 < counts["total"] < 151_600_000
    assert counts["by_component"]["text_model"] == pytest.approx(63.2e6, rel=0.01)  # 25.3 M of it: tokens
    assert counts["by_component"]["vision_model"] == pytest.approx(87.8e6, rel=0.01)
    assert sum(counts["by_component"].values()) == counts["total"]
    assert Z.estimated_size_bytes(model) == 4 * counts["total"]


def test_large_tier_is_counted_on_meta_only():
    with pytest.raises(ValueError, match="meta"):
        Z.build_model("llava-1.5-7b")
    row = Z.model_summary("llava-1.5-7b")
    assert 7.0e3 < row["params_m"] < 7.1e3 and row["size_source"] == "estimate"
    assert 3.9 < row["fp32_mb"] / row["int8_mb"] < 4.0  # nearly every weight is a Linear or Embedding
    with pytest.raises(ValueError, match="not run here"):
        Z.example_inputs("llava-1.5-7b")


def test_count_parameters_counts_shared_weights_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight
            self.scale = nn.Parameter(torch.ones(()))

    counts = Z.count_parameters(Tied())
    assert counts["total"] == 41
    assert counts["by_component"] == {"(root)": 1, "embed": 40}
    with pytest.raises(TypeError, match="nn.Module"):
        Z.count_parameters("clip")


def test_estimated_int8_size():
    model = nn.Sequential(nn.Linear(100, 50), nn.LayerNorm(50))
    fp32 = Z.estimated_size_bytes(model)
    assert fp32 == 4 * (100 * 50 + 50 + 100)
    assert Z.estimated_size_bytes(model, int8=True) == 100 * 50 + 4 * 50 + 4 * 50 + 4 * 100


@pytest.mark.parametrize("key", ["clip-vit-b32", "siglip-base", "vilt-b32", "blip-base"])
def test_each_runnable_family_builds_and_runs_tiny(key):
    config = _tiny_config(key)
    model = Z.build_model(key, config=config, seed=1)
    assert not model.training
    inputs = Z.example_inputs(key, batch_size=2, config=config)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    assert int(inputs["input_ids"].max()) < 60
    with torch.no_grad():
        model(**inputs)
    again = Z.build_model(key, config=config, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_model_summary_on_a_tiny_config():
    row = Z.model_summary("clip-vit-b32", config=_tiny_config("clip-vit-b32"), batch_sizes=(1, 2), warmup=0,
                          repeats=1)
    assert row["model"] == "CLIP ViT-B/32" and row["tier"] == "medium" and row["size_source"] == "torch.save"
    model = Z.build_model("clip-vit-b32", config=_tiny_config("clip-vit-b32"))
    assert row["params_m"] == pytest.approx(Z.count_parameters(model)["total"] / 1e6)
    assert row["int8_mb"] < row["fp32_mb"]
    assert {"fp32_b1_ms", "fp32_b2_ms", "int8_b1_ms", "int8_b2_ms"} <= set(row)
    assert all(row[k] > 0 for k in ("fp32_b1_ms", "int8_b2_ms"))
    plain = Z.model_summary("clip-vit-b32", config=_tiny_config("clip-vit-b32"), latency=False, int8=False)
    assert "int8_mb" not in plain and "fp32_b1_ms" not in plain
    with pytest.raises(ValueError, match="batch_sizes"):
        Z.model_summary("clip-vit-b32", config=_tiny_config("clip-vit-b32"), batch_sizes=(0,))


def test_count_flops_of_a_linear_layer_and_on_meta():
    layer = nn.Sequential(nn.Linear(8, 4))
    assert Z.count_flops(layer, {"input": torch.zeros(3, 8)}) == 2 * 3 * 8 * 4  # a multiply-add = 2 FLOPs
    with torch.device("meta"):
        meta_layer = nn.Sequential(nn.Linear(8, 4))
    assert Z.count_flops(meta_layer, {"input": torch.zeros(3, 8)}) == 2 * 3 * 8 * 4  # inputs moved to meta
    with pytest.raises(TypeError, match="inputs"):
        Z.count_flops(layer, {})
    with pytest.raises(TypeError, match="inputs"):
        Z.count_flops(layer, {"input": [1.0] * 8})
    with pytest.raises(TypeError, match="model"):
        Z.count_flops("clip", {"input": torch.zeros(1, 8)})


def test_count_flops_is_the_same_on_meta_and_cpu_and_refuses_data_dependent_models():
    config = _tiny_config("clip-vit-b32")
    inputs = Z.example_inputs("clip-vit-b32", 1, config=config)
    cpu = Z.count_flops(Z.build_model("clip-vit-b32", config=config), inputs)
    meta = Z.count_flops(Z.build_model("clip-vit-b32", config=config, device="meta"), inputs)
    assert cpu == meta > 0
    vilt_config = _tiny_config("vilt-b32")
    vilt_inputs = Z.example_inputs("vilt-b32", 1, config=vilt_config)
    assert Z.count_flops(Z.build_model("vilt-b32", config=vilt_config), vilt_inputs) > 0
    with pytest.raises(ValueError, match="meta"):
        Z.count_flops(Z.build_model("vilt-b32", config=vilt_config, device="meta"), vilt_inputs)


def test_model_summary_on_meta_with_flops_and_without_serialising():
    config = _tiny_config("clip-vit-b32")
    meta = Z.model_summary("clip-vit-b32", config=config, device="meta", flops=True)
    assert meta["size_source"] == "estimate" and "fp32_b1_ms" not in meta
    assert meta["gflops"] > 0 and sum(meta["by_component"].values()) == round(meta["params_m"] * 1e6)
    cpu = Z.model_summary("clip-vit-b32", config=config, flops=True, size=False, int8=False, batch_sizes=(1,),
                          warmup=0, repeats=1)
    assert cpu["gflops"] == pytest.approx(meta["gflops"]) and cpu["size_source"] == "estimate"
    assert cpu["fp32_mb"] == pytest.approx(meta["fp32_mb"]) and cpu["fp32_b1_ms"] > 0
    vilt = Z.model_summary("vilt-b32", config=_tiny_config("vilt-b32"), device="meta", flops=True)
    assert vilt["gflops"] is None  # data-dependent patch selection cannot run on meta
    assert Z.model_summary("llava-1.5-7b", device="meta", flops=True)["gflops"] is None  # not run here
    with pytest.raises(ValueError, match="device"):
        Z.model_summary("clip-vit-b32", config=config, device="cuda")
    with pytest.raises(ValueError, match="meta"):
        Z.model_summary("llava-1.5-7b", device="cpu")


def test_shallow_config_keeps_widths_and_cuts_every_towers_layers():
    full, quarter = Z.build_config("clip-vit-b32"), Z.shallow_config("clip-vit-b32", depth=0.25)
    assert (quarter.text_config.num_hidden_layers, quarter.vision_config.num_hidden_layers) == (3, 3)
    assert quarter.vision_config.hidden_size == full.vision_config.hidden_size
    assert full.vision_config.num_hidden_layers == 12  # the entry's own config is untouched
    assert Z.shallow_config("mobileclip-like").text_config.num_hidden_layers == 1
    assert Z.shallow_config("vilt-b32").num_hidden_layers == 3  # one tower: the config itself
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="depth"):
            Z.shallow_config("clip-vit-b32", depth=bad)
