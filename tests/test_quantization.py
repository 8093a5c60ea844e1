"""Tests of mmcourse.quantization: INT8 from scratch, the quantize_* paths, measurement and error analysis."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported anywhere

import io
import warnings

import pytest
import torch
from torch import nn

from mmcourse import quantization as Q
from mmcourse.dev.timing import Timing
from mmcourse.labs import ch08_bit_width as bit_width
from mmcourse.labs import ch08_quantization as measure

QUANTIZE_PATHS = [Q.quantize_dynamic, Q.quantize_dynamic_with_embeddings, Q.quantize_from_scratch]


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


class TinyTextModel(nn.Module):
    """Embedding + nn.TransformerEncoder + head: the layers the quantize_* paths touch, in miniature."""

    def __init__(self, vocab: int = 50, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(dim=1))


@pytest.fixture(scope="module")
def text_model():
    torch.manual_seed(0)
    return TinyTextModel().eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tiny_hf_clip():
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**small, "vocab_size": 100, "max_position_embeddings": 12, "eos_token_id": 99,
                     "bos_token_id": 98, "pad_token_id": 0},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval()


@pytest.fixture(scope="module")
def clip_inputs():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 99, (3, 12), generator=g)
    input_ids[:, -1] = 99
    return torch.randn(3, 3, 32, 32, generator=g), input_ids


# ------------------------------------------------------------------------------------------ core maths


def test_qmax_for_bits_and_bad_bit_widths():
    assert [Q.qmax_for_bits(b) for b in (8, 6, 4, 2)] == [127, 31, 7, 1]
    for bad in (1, 9, 16, 0):
        with pytest.raises(ValueError, match="bits"):
            Q.qmax_for_bits(bad)
    for bad in (8.0, "8", True):
        with pytest.raises(TypeError, match="bits"):
            Q.qmax_for_bits(bad)
    with pytest.raises(ValueError, match="bits"):
        Q.quantize_from_scratch(nn.Linear(2, 2), bits=12)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_round_trip_error_is_at_most_half_a_step(bits, granularity):
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(bits))
    q, scale = Q.quantize_symmetric(x, bits, granularity)
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert int(q.abs().max()) <= Q.qmax_for_bits(bits)
    assert scale.shape == ((16,) if granularity == "per_channel" else ())
    x_hat = Q.dequantize_symmetric(q, scale)
    step = scale[:, None] if granularity == "per_channel" else scale
    assert torch.all((x - x_hat).abs() <= step / 2 + 1e-6)
    assert int(q.abs().max()) == Q.qmax_for_bits(bits)  # the largest value uses the full range


def test_per_channel_beats_per_tensor_when_rows_differ_in_range():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 64, generator=g) * torch.logspace(-2, 1, 8)[:, None]  # rows span 3 decades
    per_tensor = Q.quantization_error(w, 8, "per_tensor")
    per_channel = Q.quantization_error(w, 8, "per_channel")
    assert per_channel["relative"] < per_tensor["relative"] / 2
    assert per_channel["sqnr_db"] > per_tensor["sqnr_db"]


def test_each_bit_adds_about_six_decibels():
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    sqnr = {b: Q.quantization_error(x, b)["sqnr_db"] for b in (8, 6, 4)}
    assert 9 < sqnr[8] - sqnr[6] < 15 and 9 < sqnr[6] - sqnr[4] < 15


def test_zero_tensor_and_axis_handling():
    q, scale = Q.quantize_symmetric(torch.zeros(3, 4))
    assert torch.equal(q, torch.zeros(3, 4, dtype=torch.int8)) and torch.equal(scale, torch.ones(3))
    x = torch.randn(2, 5, 3)
    q, scale = Q.quantize_symmetric(x, axis=-1)
    assert scale.shape == (3,)
    assert _relative_error(Q.dequantize_symmetric(q, scale, axis=-1), x) < 0.01
    with pytest.raises(ValueError, match="axis"):
        Q.quantize_symmetric(x, axis=3)
    with pytest.raises(ValueError, match="scale must have"):
        Q.dequantize_symmetric(q, torch.ones(4), axis=-1)


def test_non_float_and_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="floating-point"):
        Q.quantize_symmetric(torch.arange(6).view(2, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        Q.quantize_symmetric([1.0, 2.0])
    with pytest.raises(ValueError, match="granularity"):
        Q.quantize_symmetric(torch.randn(2, 2), granularity="per_row")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Q.quantize_symmetric(torch.tensor([1.0, float("nan")]))


def test_packed_size_bytes():
    assert Q.packed_size_bytes(1000, 8) == 1000 + 4
    assert Q.packed_size_bytes(1000, 4, num_scales=10) == 500 + 40
    assert Q.packed_size_bytes(3, 6, num_scales=0) == 3  # 18 bits -> 3 bytes
    with pytest.raises(ValueError, match="num_values"):
        Q.packed_size_bytes(-1, 8)


def test_int8_matmul_is_exact():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (5, 64), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (7, 64), generator=g, dtype=torch.int8)
    want = a.long() @ b.long().t()
    assert torch.equal(Q.int8_matmul(a, b).long(), want)
    with pytest.raises(TypeError, match="int8"):
        Q.int8_matmul(a.int(), b)
    with pytest.raises(ValueError, match="share K"):
        Q.int8_matmul(a, b[:, :10])


# ---------------------------------------------------------------------------------------- int8 modules


@pytest.mark.parametrize("activation", ["dynamic", "weight_only"])
def test_int8_linear_matches_float_linear(activation):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    layer = Q.Int8Linear.from_float(linear, activation=activation)
    assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.shape == (48, 64)
    assert layer.weight_scale.shape == (48,)
    y = layer(x)
    assert y.shape == (2, 5, 48)
    assert _relative_error(y, linear(x).detach()) < 0.02
    assert torch.allclose(layer.weight, linear.weight, atol=float(layer.weight_scale.max()))
    with pytest.raises(ValueError, match=r"\(\.\.\., 64\)"):
        layer(torch.randn(3, 63))


def test_int8_linear_uses_the_integer_product():
    """The dynamic mode equals (x_q @ W_q^T) * s_x * s_w + b computed by hand."""
    torch.manual_seed(1)
    linear = nn.Linear(16, 4)
    layer = Q.Int8Linear.from_float(linear)
    x = torch.randn(3, 16)
    x_q, x_s = Q.quantize_symmetric(x, 8, "per_channel", axis=0)
    by_hand = (x_q.long() @ layer.weight_int8.long().t()).float() * x_s[:, None] * layer.weight_scale + linear.bias
    assert torch.allclose(layer(x), by_hand.detach(), atol=1e-5)


def test_int8_linear_from_float_refuses_bad_layers():
    with pytest.raises(TypeError, match="nn.Linear"):
        Q.Int8Linear.from_float(nn.Conv2d(1, 1, 1))
    linear = nn.Linear(4, 4)
    linear.weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.int8), requires_grad=False)
    with pytest.raises(TypeError, match="non-float|floating-point"):
        Q.Int8Linear.from_float(linear)
    with pytest.raises(ValueError, match="activation"):
        Q.Int8Linear.from_float(nn.Linear(4, 4), activation="static")


def test_int8_embedding_and_conv():
    torch.manual_seed(0)
    embedding = nn.Embedding(20, 8, padding_idx=0)
    q_embedding = Q.Int8Embedding.from_float(embedding)
    ids = torch.tensor([[1, 5, 19], [0, 2, 2]])
    assert q_embedding(ids).shape == (2, 3, 8)
    assert torch.allclose(q_embedding(ids), q_embedding.weight[ids])
    assert _relative_error(q_embedding(ids), embedding(ids).detach()) < 0.01
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    q_conv = Q.Int8Conv2d.from_float(conv)
    assert q_conv(x).shape == conv(x).shape
    assert _relative_error(q_conv(x), conv(x).detach()) < 0.02
    with pytest.raises(TypeError, match="nn.Embedding"):
        Q.Int8Embedding.from_float(nn.Linear(2, 2))


def test_dynamic_patch_conv_equals_the_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, kernel_size=4, stride=4, bias=False)
    patch = Q.DynamicInt8PatchConv2d(conv)
    x = torch.randn(2, 3, 17, 16)  # 17 rows: the convolution drops the last one, so must the patch layer
    assert patch(x).shape == conv(x).shape == (2, 16, 4, 4)
    assert _relative_error(patch(x), conv(x).detach()) < 0.03
    assert patch.weight.shape == conv.weight.shape and patch.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="stride == kernel_size"):
        Q.DynamicInt8PatchConv2d(nn.Conv2d(3, 4, 3, padding=1))


# ----------------------------------------------------------------------------------- model-level paths


def _snapshot(model: nn.Module):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()], model.training


@pytest.mark.parametrize("quantize", QUANTIZE_PATHS, ids=lambda f: f.__name__)
def test_paths_return_a_close_copy_and_leave_the_input_untouched(quantize, text_model, ids):
    text_model.train()  # any mode: the input must keep it
    state, types, training = _snapshot(text_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = quantize(text_model)
        with torch.no_grad():
            got = quantized(ids)
    assert not [w for w in caught if "quantiz" in str(w.message).lower()], [str(w.message)[:80] for w in caught]
    assert type(quantized) is TinyTextModel and quantized is not text_model and not quantized.training
    new_state, new_types, new_training = _snapshot(text_model)
    assert new_types == types and new_training == training
    assert all(torch.equal(state[k], new_state[k]) for k in state)
    assert not any(isinstance(m, nn.Linear) and type(m) is nn.Linear for m in quantized.modules()
                   if m is quantized.head)
    with torch.no_grad():
        want = text_model.eval()(ids)
    assert _relative_error(got, want) < 0.1
    assert torch.backends.mha.get_fastpath_enabled()  # the guard restored torch's global setting


def test_quantized_transformer_encoder_runs_in_eval_mode(text_model, ids):
    """The pitfall: a dynamically quantized nn.TransformerEncoder crashed in eval mode (fast path)."""
    quantized = Q.quantize_dynamic(text_model)
    assert torch.backends.mha.get_fastpath_enabled()
    with torch.inference_mode():
        out = quantized.eval()(ids)
    assert out.shape == (4, 8) and torch.isfinite(out).all()
    assert torch.backends.mha.get_fastpath_enabled()


def test_which_layers_each_path_swaps(text_model):
    dyn = Q.quantize_dynamic(text_model)
    assert type(dyn.head).__name__ == "Linear" and type(dyn.head).__module__.startswith("torch.ao")
    assert isinstance(dyn.embed, nn.Embedding)
    assert isinstance(dyn.encoder.layers[0].self_attn.out_proj, nn.Linear)  # read directly by attention
    full = Q.quantize_dynamic_with_embeddings(text_model)
    assert isinstance(full.embed, Q.Int8Embedding)
    scratch = Q.quantize_from_scratch(text_model, bits=4, granularity="per_tensor")
    assert isinstance(scratch.head, Q.Int8Linear) and scratch.head.bits == 4
    assert isinstance(scratch.encoder.layers[0].linear1, Q.Int8Linear)
    skipped = Q.quantize_from_scratch(text_model, skip=["head"])
    assert type(skipped.head) is nn.Linear


def test_sizes_shrink_as_expected(text_model):
    fp32 = Q.model_size_bytes(text_model)
    buffer = io.BytesIO()
    torch.save(text_model.state_dict(), buffer)
    assert fp32 == len(buffer.getvalue())
    # nn.MultiheadAttention keeps its projection weights in float (it reads them directly), hence only ~1.5x here
    assert Q.model_size_bytes(Q.quantize_from_scratch(text_model)) < fp32 / 1.4
    mlp = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64))
    assert Q.model_size_bytes(Q.quantize_from_scratch(mlp)) < Q.model_size_bytes(mlp) / 3.5
    assert Q.model_size_bytes(Q.quantize_dynamic_with_embeddings(text_model)) < Q.model_size_bytes(
        Q.quantize_dynamic(text_model, per_channel=True)
    )


def test_bad_models_are_refused(text_model):
    with pytest.raises(ValueError, match="no torch.nn.Linear"):
        Q.quantize_dynamic(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="no torch.nn.Linear"):
        Q.quantize_from_scratch(Q.quantize_dynamic(text_model))  # already quantized
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Q.quantize_dynamic("clip")
    with pytest.raises(TypeError, match="float32"):
        Q.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)).half())
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="meta"):
        Q.quantize_from_scratch(meta)
    with pytest.raises(TypeError, match="skip"):
        Q.quantize_dynamic(text_model, skip="head")
    with pytest.raises(ValueError, match="no torch.nn.Linear"):
        Q.quantize_from_scratch(nn.Sequential(nn.Linear(2, 2)), skip=["0"])


def test_quantize_torchao_without_torchao_says_how_to_install(monkeypatch, text_model):
    import sys

    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(ImportError, match="pip install torchao"):
        Q.quantize_torchao(text_model)
    with pytest.raises(ValueError, match="mode"):
        Q.quantize_torchao(text_model, mode="int4")


# ------------------------------------------------------------------------------------ Hugging Face CLIP


@pytest.mark.parametrize("quantize", QUANTIZE_PATHS, ids=lambda f: f.__name__)
def test_hf_clip_stays_a_clip_model(quantize, tiny_hf_clip, clip_inputs):
    pixels, input_ids = clip_inputs
    quantized = quantize(tiny_hf_clip)
    assert type(quantized) is type(tiny_hf_clip)
    out = quantized(input_ids=input_ids, pixel_values=pixels)
    assert out.logits_per_image.shape == (3, 3)
    cos = measure.compare_features(tiny_hf_clip, quantized, images=pixels, input_ids=input_ids)
    assert cos["image_cosine"] > 0.99 and cos["text_cosine"] > 0.99


@pytest.mark.parametrize("mode", ["int8_dynamic", "int8_weight_only"])
def test_quantize_torchao_keeps_the_model_and_its_interface(mode, tiny_hf_clip, clip_inputs):
    pytest.importorskip("torchao")  # optional extra: pip install -e ".[dev,torchao]"
    pixels, input_ids = clip_inputs
    before = {k: v.clone() for k, v in tiny_hf_clip.state_dict().items()}
    quantized = Q.quantize_torchao(tiny_hf_clip, mode=mode)
    assert type(quantized) is type(tiny_hf_clip) and quantized is not tiny_hf_clip
    assert all(torch.equal(before[k], v) for k, v in tiny_hf_clip.state_dict().items())  # input untouched
    fc1 = quantized.vision_model.encoder.layers[0].mlp.fc1
    assert type(fc1.weight) is not nn.Parameter and type(fc1.weight) is not torch.Tensor  # a torchao int8 tensor
    assert type(tiny_hf_clip.vision_model.encoder.layers[0].mlp.fc1.weight) is nn.Parameter
    out = quantized(input_ids=input_ids, pixel_values=pixels)
    assert out.logits_per_image.shape == (3, 3)
    cos = measure.compare_features(tiny_hf_clip, quantized, images=pixels, input_ids=input_ids)
    assert cos["image_cosine"] > 0.99 and cos["text_cosine"] > 0.99
    assert Q.model_size_bytes(quantized) < 0.7 * Q.model_size_bytes(tiny_hf_clip)  # 0.62: int8 Linears, float rest


def test_quantize_torchao_honours_skip(text_model, ids):
    pytest.importorskip("torchao")
    quantized = Q.quantize_torchao(text_model, mode="int8_weight_only", skip=["head"])
    assert type(quantized.head.weight) is nn.Parameter
    assert type(quantized.encoder.layers[0].linear1.weight) is not nn.Parameter
    assert torch.allclose(quantized(ids), text_model(ids), atol=0.05)


def test_full_path_quantizes_embeddings_and_patch_conv(tiny_hf_clip):
    q = Q.quantize_dynamic_with_embeddings(tiny_hf_clip)
    assert isinstance(q.text_model.embeddings.token_embedding, Q.Int8Embedding)
    assert isinstance(q.vision_model.embeddings.patch_embedding, Q.DynamicInt8PatchConv2d)
    assert isinstance(tiny_hf_clip.vision_model.embeddings.patch_embedding, nn.Conv2d)


def test_the_articles_snippet_on_vit_b32():
    """Article §8.2, verbatim except the model (same architecture, random weights), the warning filter and the
    file (an in-memory buffer, so that the test leaves no 235 MB file behind)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Q.silence_quantization_warnings():
            quantized_model = torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            saved = io.BytesIO()
            torch.save(quantized_model.state_dict(), saved)
    assert caught == []
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())  # (torch.save adds < 0.1 % to this)
    ratio = fp32_bytes / saved.getbuffer().nbytes
    assert 2.3 < ratio < 2.8  # the token embedding and patch conv stay float32
    with warnings.catch_warnings(record=True) as caught:  # without the filter, the warning is really there
        warnings.simplefilter("always")
        torch.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {nn.Linear}, dtype=torch.qint8)
    assert DeprecationWarning in {w.category for w in caught}


# --------------------------------------------------------------------------------- measurement/analysis


def test_latency_helpers(text_model, ids):
    timing = measure.measure_latency(text_model, ids, warmup=1, repeats=2)
    assert isinstance(timing, Timing) and timing.repeats == 2 and timing.min <= timing.median <= timing.max
    best = measure.compare_latency({"a": lambda: text_model(ids), "b": lambda: None}, warmup=0, repeats=2, rounds=2)
    assert set(best) == {"a", "b"} and all(isinstance(t, Timing) for t in best.values())
    with pytest.raises(TypeError, match="callable"):
        measure.measure_latency(3)


def test_feature_cosine_and_compare_models(tiny_hf_clip, clip_inputs):
    a = torch.randn(4, 8)
    assert measure.feature_cosine(a, 2 * a)["min"] == pytest.approx(1.0)
    assert measure.feature_cosine(a, -a)["mean"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        measure.feature_cosine(a, a[:, :4])
    pixels, input_ids = clip_inputs
    rows = measure.compare_models({"fp32": tiny_hf_clip, "int8": Q.quantize_dynamic(tiny_hf_clip)}, images=pixels,
                            input_ids=input_ids, warmup=0, repeats=1, rounds=1)
    assert [r["model"] for r in rows] == ["fp32", "int8"]
    assert rows[0]["size_ratio"] == 1.0 and rows[1]["size_ratio"] > 1.5
    assert rows[0]["image_cosine"] == pytest.approx(1.0) and rows[1]["text_cosine"] > 0.99
    assert rows[1]["image_ms"] > 0 and "image_speedup" in rows[1]


def test_evaluate_zero_shot_and_retrieval(tiny_hf_clip, clip_inputs):
    from mmcourse.data import Tokenizer

    tok = Tokenizer(["red", "blue", "circle", "square"])
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "vocab_size": len(tok), "max_position_embeddings": 8,
                                     "eos_token_id": tok.eos_id, "bos_token_id": tok.bos_id, "pad_token_id": 0},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    pixels = clip_inputs[0]
    labels = torch.tensor([0, 1, 1])
    acc = measure.evaluate_zero_shot(model, tok, pixels, labels, ["red circle", "blue square"], max_len=8)
    q_acc = measure.evaluate_zero_shot(Q.quantize_dynamic(model), tok, pixels, labels, ["red circle", "blue square"],
                                 max_len=8)
    assert 0 <= acc <= 1 and 0 <= q_acc <= 1
    assert acc * 3 == pytest.approx(round(acc * 3)) and q_acc * 3 == pytest.approx(round(q_acc * 3))
    with pytest.raises(ValueError, match="labels"):
        measure.evaluate_zero_shot(model, tok, pixels, torch.tensor([0, 1, 2]), ["a", "b"], max_len=8)
    ids, mask = tok.encode(["red circle", "blue square", "red square"], max_len=8)
    metrics = measure.evaluate_retrieval(model, pixels, ids, mask, ks=(1, 2))
    assert set(metrics) >= {"i2t_R@1", "t2i_R@2"} and 0 <= metrics["i2t_R@1"] <= 1


def test_weight_and_layer_output_errors(text_model, ids):
    rows = bit_width.weight_errors(text_model)
    names = [r["layer"] for r in rows]
    assert "head" in names and "embed" in names
    assert all(0 < r["relative"] < 0.02 and r["sqnr_db"] > 35 for r in rows)
    four_bit = {r["layer"]: r["relative"] for r in bit_width.weight_errors(text_model, bits=4)}
    assert all(four_bit[r["layer"]] > 5 * r["relative"] for r in rows)
    quantized = Q.quantize_from_scratch(text_model)
    errors = bit_width.layer_output_errors(text_model, quantized, lambda m: m(ids))
    assert errors[0]["layer"] == "embed" and errors[-1]["layer"] == "head"
    assert all(0 <= e["relative"] < 0.2 and e["cosine"] > 0.98 for e in errors)
    with pytest.raises(ValueError, match="no layer"):
        bit_width.weight_errors(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="not the same model"):
        bit_width.layer_output_errors(text_model, nn.Sequential(nn.Linear(2, 2)), lambda m: None)


def test_bit_width_sweep(text_model, ids):
    rows = bit_width.bit_width_sweep(text_model)
    assert [(r["bits"], r["granularity"]) for r in rows] == [
        (8, "per_tensor"), (8, "per_channel"), (6, "per_tensor"), (6, "per_channel"),
        (4, "per_tensor"), (4, "per_channel")]
    by = {(r["bits"], r["granularity"]): r for r in rows}
    for g in ("per_tensor", "per_channel"):
        assert by[(8, g)]["relative"] < by[(6, g)]["relative"] < by[(4, g)]["relative"]
        assert by[(8, g)]["packed_mb"] > by[(4, g)]["packed_mb"]
    for b in (8, 6, 4):
        assert by[(b, "per_channel")]["relative"] <= by[(b, "per_tensor")]["relative"]
    with torch.no_grad():
        reference = text_model.eval()(ids)
    scored = bit_width.bit_width_sweep(text_model, bits=(8, 4), granularities=("per_channel",),
                               evaluate=lambda m: float(torch.cosine_similarity(m(ids), reference).mean()))
    assert scored[0]["metric"] > scored[1]["metric"] and scored[0]["metric"] > 0.99
    several = bit_width.bit_width_sweep(text_model, bits=(8, 2), granularities=("per_tensor",),
                                evaluate=lambda m: {"cosine": float(torch.cosine_similarity(m(ids), reference).mean()),
                                                    "bits_seen": 1})
    assert "metric" not in several[0] and several[0]["cosine"] > several[1]["cosine"]
    assert several[0]["bits_seen"] == 1.0
    with pytest.raises(ValueError, match="clashes"):
        bit_width.bit_width_sweep(text_model, bits=(8,), evaluate=lambda m: {"relative": 0.0})
    tensor_rows = bit_width.bit_width_sweep(torch.randn(8, 8), bits=(8,))
    assert len(tensor_rows) == 2 and "metric" not in tensor_rows[0]
    with pytest.raises(ValueError, match="bits"):
        bit_width.bit_width_sweep(text_model, bits=(8, 3, 1))
    with pytest.raises(ValueError, match="evaluate needs a model"):
        bit_width.bit_width_sweep(torch.randn(3, 3), evaluate=lambda m: 0.0)


def test_plots_draw_a_sweep_and_a_table(text_model):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = bit_width.bit_width_sweep(text_model, bits=(2, 4, 8), evaluate=lambda m: 1.0)
    weight = text_model.head.weight.detach()
    fig = bit_width.show_bit_width(weight, sweep, bits=4, granularity="per_tensor")
    assert len(fig.axes) == 3 and "levels" in fig.axes[2].get_title() and "15" in fig.axes[2].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="metric"):
        bit_width.show_bit_width(weight, [{"bits": 8, "granularity": "per_tensor", "relative": 0.1}], bits=8)
    with pytest.raises(ValueError, match="sweep"):
        bit_width.show_bit_width(weight, [], bits=8)
    with pytest.raises(ValueError, match="bits"):
        bit_width.show_bit_width(weight, sweep, bits=9)
    rows = [{"model": "fp32", "size_mb": 4.0, "image_ms": 10.0}, {"model": "int8", "size_mb": 1.0, "image_ms": 20.0}]
    fig = bit_width.show_quantization_table(rows, title="t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("4.00x smaller" in t for t in texts) and any("2.00x slower" in t for t in texts)
    plt.close(fig)
    assert len(bit_width.show_quantization_table(rows, latency="").axes) == 1
    plt.close("all")
    with pytest.raises(ValueError, match="latency column"):
        bit_width.show_quantization_table([{"model": "a", "size_mb": 1.0}])
    with pytest.raises(ValueError, match="rows"):
        bit_width.show_quantization_table([])


def test_int8_conv2d_is_built_from_sizes_like_its_siblings_and_from_float_quantizes():
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding="valid", bias=True)
    q = Q.Int8Conv2d.from_float(conv)
    empty = Q.Int8Conv2d(4, 6, 3, stride=2, padding="valid")
    assert empty.weight_int8.shape == q.weight_int8.shape == (6, 4, 3, 3) and empty.weight_scale.shape == (6,)
    empty.load_state_dict(q.state_dict())  # same buffers: a saved INT8 conv loads into one built from sizes
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(empty(x), q(x))
    assert (q(x) - conv(x)).abs().max() < 0.05 * conv(x).abs().max()
    with pytest.raises(ValueError, match="groups"):
        Q.Int8Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="padding_mode"):
        Q.Int8Conv2d.from_float(torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"))
