"""Tests of mmcourse.hf: offline loading with fallback, the tokenizer guard, a tiny HF CLIP, the adapters."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported anywhere

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmcourse import hf
from mmcourse.data import Tokenizer
from mmcourse.dev import stand_in


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_world(None, extra_texts=["a photo of a red circle"])


@pytest.fixture(scope="module")
def model(tok):
    return stand_in.build_tiny_hf_clip(tok, image_size=16, patch_size=8, hidden_size=32, num_layers=1, num_heads=2,
                                 projection_dim=16, max_len=12, seed=0)


@pytest.fixture(scope="module")
def processor(tok):
    return stand_in.ShapesCLIPProcessor(tok, image_size=16, max_len=12)


TINY = {
    "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "vocab_size": 50, "max_position_embeddings": 8, "eos_token_id": 49, "bos_token_id": 48,
                    "pad_token_id": 0},
    "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "image_size": 16, "patch_size": 8},
    "projection_dim": 8,
}


def test_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, mmcourse.hf, mmcourse.quantization, mmcourse.labs.ch08_model_zoo; "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_offline_detection(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf.hub_offline() and not hf.hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    assert not hf.hub_offline()
    with pytest.raises(ValueError, match="timeout"):
        hf.hub_reachable(timeout=0)


def test_known_configs_and_pinned_revisions():
    config = hf.clip_config(hf.CLIP_VIT_B32)
    assert config.vision_config.patch_size == 32 and config.text_config.hidden_size == 512
    large = hf.clip_config(hf.CLIP_VIT_L14)
    assert large.vision_config.patch_size == 14 and large.vision_config.num_hidden_layers == 24
    assert all(len(sha) == 40 and int(sha, 16) >= 0 for sha in hf.PINNED_REVISIONS.values())
    with pytest.raises(ValueError, match="must be one of"):
        hf.clip_config("openai/clip-vit-huge")


def test_load_clip_falls_back_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(hf.KNOWN_CLIP_CONFIGS, "course/tiny-clip", TINY)
    model = hf.load_clip("course/tiny-clip", seed=3)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "course/tiny-clip" in lines[0] and "random weights" in lines[0]
    assert type(model).__name__ == "CLIPModel" and not model.training
    assert model.config._name_or_path == ""  # not pretrained
    assert model.config.vision_config.image_size == 16
    again = hf.load_clip("course/tiny-clip", seed=3, pretrained=False)
    assert capsys.readouterr().out == ""  # asked for random weights: nothing to announce
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_load_clip_loads_saved_weights_without_a_message(tmp_path, capsys):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    saved = CLIPModel(CLIPConfig(**TINY))
    saved.save_pretrained(tmp_path)
    loaded = hf.load_clip(str(tmp_path))
    assert capsys.readouterr().out == ""
    assert loaded.config._name_or_path == str(tmp_path) and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))


def test_load_clip_unknown_name_offline_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot load 'someone/not-a-clip'.*no network"):
        hf.load_clip("someone/not-a-clip")
    with pytest.raises(TypeError, match="name"):
        hf.load_clip("")
    with pytest.raises(TypeError, match="revision"):
        hf.load_clip(hf.CLIP_VIT_B32, revision="")


def test_offline_clip_tokenizer_is_refused():
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:  # the trap of transformers 5 (4.x raises instead)
        with pytest.raises(ValueError, match="only 2 tokens"):
            hf.check_tokenizer(transformers.CLIPTokenizer())  # what from_pretrained silently gives offline
    with pytest.raises(ValueError, match="tokenizer"):
        hf.load_clip_tokenizer(hf.CLIP_VIT_B32)


def test_tiny_config_follows_the_tokenizer(tok, model):
    text = model.config.text_config
    assert text.vocab_size == len(tok.vocab) and text.eos_token_id == tok.eos_id == 5
    assert text.max_position_embeddings == 12
    assert hf.check_tokenizer(tok, model) is tok
    again = stand_in.build_tiny_hf_clip(tok, image_size=16, patch_size=8, hidden_size=32, num_layers=1, num_heads=2,
                                  projection_dim=16, max_len=12, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        stand_in.tiny_clip_config(tok, image_size=30, patch_size=8)
    with pytest.raises(TypeError, match="Tokenizer"):
        stand_in.tiny_clip_config(object())


def test_check_tokenizer_catches_mismatches(tok):
    from transformers import CLIPConfig, CLIPModel

    wrong_eos = CLIPModel(CLIPConfig(**{**TINY, "text_config": {**TINY["text_config"], "vocab_size": 200,
                                                                "eos_token_id": 7}}))
    with pytest.raises(ValueError, match="eos_token_id=7"):
        hf.check_tokenizer(tok, wrong_eos)
    too_small = CLIPModel(CLIPConfig(**TINY))  # 50 rows, the tokenizer has more
    with pytest.raises(ValueError, match="only 50 rows"):
        hf.check_tokenizer(tok, too_small)


def test_text_is_pooled_at_eos(tok, model, processor):
    """Words after [EOS] (padding) must not change the text embedding; words before must."""
    inputs = processor(text=["red circle", "blue circle"])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    base = hf.text_embeddings(model, ids, mask)
    tail = ids.clone()
    eos_pos = int((ids[0] == tok.eos_id).nonzero()[0])
    tail[0, eos_pos + 1] = tok.token_to_id["square"]  # a word behind the end, masked out
    assert torch.allclose(hf.text_embeddings(model, tail, mask), base, atol=1e-6)
    assert not torch.allclose(base[0], base[1], atol=1e-3)


def test_processor(processor, tok):
    images = torch.rand(2, 3, 32, 32)
    out = processor(text=["a red circle", "a blue square"], images=images)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    assert out["input_ids"].shape == (2, 12) and out["pixel_values"].shape == (2, 3, 16, 16)
    assert out["pixel_values"].min() >= -1 - 1e-6 and out["pixel_values"].max() <= 1 + 1e-6
    as_uint8 = processor(images=(images * 255).round().to(torch.uint8))["pixel_values"]
    assert torch.allclose(as_uint8, out["pixel_values"], atol=0.02)
    from PIL import Image

    pil = Image.fromarray((images[0].permute(1, 2, 0) * 255).round().byte().numpy())
    assert torch.allclose(processor(images=pil)["pixel_values"], as_uint8[:1], atol=1e-5)
    with pytest.raises(ValueError, match="text, images or both"):
        processor()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        processor(images=torch.rand(2, 1, 16, 16))
    with pytest.raises(TypeError, match="PIL"):
        processor(images="cat.png")


def test_features_from_output():
    t = torch.randn(2, 4)
    assert hf.features_from_output(t) is t

    class Out:
        pooler_output = t

    assert hf.features_from_output(Out()) is t
    with pytest.raises(TypeError, match="pooler_output"):
        hf.features_from_output(object())


def test_adapters_give_tinyclip_interface(model, processor):
    encoder = hf.as_clip_encoder(model)
    assert isinstance(encoder, hf.HFCLIPEncoder) and encoder.model is model
    inputs = processor(text=["red circle"] * 3, images=torch.rand(3, 3, 16, 16))
    image = encoder.encode_image(inputs["pixel_values"])
    raw = encoder.encode_image(inputs["pixel_values"], normalize=False)
    assert image.shape == (3, 16) and torch.allclose(image.norm(dim=-1), torch.ones(3))
    assert torch.allclose(F.normalize(raw, dim=-1), image)
    hf_out = model(**inputs)
    assert torch.allclose(hf_out.image_embeds, image, atol=1e-5)  # CLIPModel normalises the same way

    class TinyLike(nn.Module):
        def encode_image(self, images, normalize=True):
            return images.flatten(1)

        def encode_text(self, ids, mask=None, normalize=True):
            return ids.float()

    tiny = TinyLike()
    assert hf.as_clip_encoder(tiny) is tiny
    with pytest.raises(TypeError, match="get_image_features"):
        hf.as_clip_encoder(nn.Linear(2, 2))


def test_batched_embeddings_equal_one_batch(model, processor):
    inputs = processor(text=[f"a {c} circle" for c in ("red", "blue", "green", "red", "blue")],
                       images=torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    whole = hf.image_embeddings(model, inputs["pixel_values"])
    parts = hf.image_embeddings(model, inputs["pixel_values"], batch_size=2)
    assert torch.allclose(whole, parts, atol=1e-5)
    t_whole = hf.text_embeddings(model, inputs["input_ids"], inputs["attention_mask"])
    t_parts = hf.text_embeddings(model, inputs["input_ids"], inputs["attention_mask"], batch_size=3)
    assert torch.allclose(t_whole, t_parts, atol=1e-5)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        hf.text_embeddings(model, inputs["input_ids"], inputs["attention_mask"][:, :3])


def test_retrieval_and_zero_shot_work_with_an_hf_model(model, processor, tok):
    from mmcourse.retrieval import retrieval_metrics, zero_shot_accuracy, zero_shot_classifier

    inputs = processor(text=["red circle", "blue square", "green triangle"], images=torch.rand(3, 3, 16, 16))
    image = hf.image_embeddings(model, inputs["pixel_values"])
    text = hf.text_embeddings(model, inputs["input_ids"], inputs["attention_mask"])
    metrics = retrieval_metrics(image, text, ks=(1, 3))
    assert metrics["i2t_R@3"] == 1.0 and 0 <= metrics["t2i_R@1"] <= 1
    classifier = zero_shot_classifier(hf.as_clip_encoder(model), tok, ["red circle", "blue square"],
                                      ("a photo of a {}", "{}"), max_len=12)
    assert classifier.shape == (2, 16) and torch.allclose(classifier.norm(dim=-1), torch.ones(2))
    accuracy = zero_shot_accuracy(image, classifier, torch.tensor([0, 1, 0]))
    assert 0 <= accuracy <= 1


# ------------------------------------------------------------------------------ chapter 8 helpers


def test_pretrained_in_cache_and_available_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hf.pretrained_in_cache("course-tests/never-published")
    assert not hf.pretrained_available("course-tests/never-published")
    with pytest.raises(TypeError, match="name"):
        hf.pretrained_in_cache("")


def test_pretrained_in_cache_finds_a_cached_snapshot(tmp_path, monkeypatch):
    """A hand-made cache entry (the Hub's folder layout) is recognised at the pinned revision, not at another."""
    import huggingface_hub.constants

    repo = tmp_path / "models--someone--clip"
    sha = "a" * 40
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert not hf.pretrained_in_cache("someone/clip", revision=sha)  # config but no weights
    (snapshot / "model.safetensors").write_bytes(b"0")
    assert hf.pretrained_in_cache("someone/clip", revision=sha)
    assert hf.pretrained_in_cache("someone/clip", revision="main")
    assert not hf.pretrained_in_cache("someone/clip", revision="b" * 40)


def test_load_clip_processor_offline_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot load the processor"):
        hf.load_clip_processor("course-tests/never-published")


def test_load_clip_processor_from_a_local_stand_in(tmp_path, monkeypatch):
    from mmcourse.dev import stand_in

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    monkeypatch.setitem(hf.KNOWN_CLIP_CONFIGS, "course-tests/clip-tiny", {
        "text_config": {**small, "max_position_embeddings": 16},
        "vision_config": {**small, "image_size": 32, "patch_size": 16}, "projection_dim": 16})
    target = stand_in.write_clip_stand_in(tmp_path, "course-tests/clip-tiny", words=["red", "circle"])
    processor = hf.load_clip_processor(str(target), revision="main")
    assert processor.tokenizer.eos_token_id == len(processor.tokenizer) - 1


def test_to_pil_images():
    images = torch.zeros(2, 3, 4, 5)
    images[1, 0] = 1.0  # red
    images[1, 1, 0, 0] = 0.5
    pil = hf.to_pil_images(images)
    assert len(pil) == 2 and pil[0].size == (5, 4) and pil[0].mode == "RGB"
    assert pil[1].getpixel((0, 0)) == (255, 128, 0) and pil[1].getpixel((1, 1)) == (255, 0, 0)
    assert len(hf.to_pil_images(images[0])) == 1  # one (3, H, W) image
    assert hf.to_pil_images(torch.full((1, 3, 2, 2), 2.0))[0].getpixel((0, 0)) == (255, 255, 255)  # clamped
    with pytest.raises(ValueError, match="images"):
        hf.to_pil_images(torch.zeros(2, 4, 4, 4))
    with pytest.raises(TypeError, match="images"):
        hf.to_pil_images(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_tokenizer_adapter_gives_the_course_interface(tok):
    from mmcourse.dev import stand_in
    from mmcourse.retrieval import zero_shot_classifier

    clip_tokenizer = stand_in.clip_stand_in_tokenizer(["a", "red", "blue", "circle", "photo", "of"])
    adapter = hf.TokenizerAdapter(clip_tokenizer)
    ids, mask = adapter.encode(["a red circle", "a photo of a blue circle"], max_len=8)
    assert ids.shape == mask.shape == (2, 8) and mask.sum(1).tolist() == [5, 8]
    assert int(ids[0, 4]) == adapter.eos_token_id and len(adapter) == len(clip_tokenizer)
    assert adapter.encode("a red circle", max_len=6)[0].shape == (1, 6)
    assert "TokenizerAdapter" in repr(adapter)
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(
        text_config={**small, "vocab_size": len(adapter), "max_position_embeddings": 8,
                     "eos_token_id": adapter.eos_token_id},
        vision_config={**small, "image_size": 16, "patch_size": 8}, projection_dim=8)).eval()
    weights = zero_shot_classifier(hf.as_clip_encoder(model), adapter, ["red circle", "blue circle"],
                                   ("a {}", "a photo of a {}"), max_len=8)
    assert weights.shape == (2, 8)
    with pytest.raises(TypeError, match="tokenizer"):
        hf.TokenizerAdapter(tok)  # the course tokenizer is not a Hugging Face tokenizer
    with pytest.raises(TypeError, match="texts"):
        adapter.encode([1, 2])
    with pytest.raises(ValueError, match="max_len"):
        adapter.encode(["a"], max_len=0)
