"""Tests of mmcourse.dev.stand_in: a local checkpoint that from_pretrained loads offline, and the scratch directory."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported anywhere

import json
from pathlib import Path

import pytest
import torch

from mmcourse.dev import stand_in as S
from mmcourse.hf import CLIP_VIT_B32

WORDS = ["a", "red", "green", "circle", "circles", "square", "photo", "of", "triangle"]


# ------------------------------------------------------------------------------------------------ tokenizer


def test_byte_level_alphabet_is_256_distinct_printable_symbols():
    alphabet = S.byte_level_alphabet()
    assert len(alphabet) == len(set(alphabet)) == 256
    assert alphabet[ord("a")] == "a" and alphabet[ord(" ")] == "Ġ"  # the space byte, as in GPT-2 / CLIP
    assert all(len(symbol) == 1 and not symbol.isspace() for symbol in alphabet)


def test_learned_merges_make_every_word_one_symbol():
    merges = S.learn_bpe_merges(WORDS + ["red"])  # duplicates ignored
    assert merges == S.learn_bpe_merges(list(reversed(WORDS)))  # order of the input does not matter
    assert len(merges) == len(set(merges))
    made = {a + b for a, b in merges}
    for word in WORDS:
        if len(word) > 1:
            assert word + "</w>" in made
    # the most frequent pair over the words comes first, ties alphabetically
    assert S.learn_bpe_merges(["red", "bed", "bee"])[:2] == [("b", "e"), ("be", "d</w>")]
    assert S.learn_bpe_merges(["abc", "ab"]) == [("a", "b"), ("a", "b</w>"), ("ab", "c</w>")]
    assert S.learn_bpe_merges(["a"]) == []
    for bad in (["Red"], ["two words"], [""], ["naïve"]):
        with pytest.raises(ValueError, match="words"):
            S.learn_bpe_merges(bad)
    with pytest.raises(TypeError, match="words"):
        S.learn_bpe_merges("red")


@pytest.fixture(scope="module")
def tokenizer():
    return S.clip_stand_in_tokenizer(WORDS)


def test_stand_in_tokenizer_speaks_clips_format(tokenizer):
    encoded = tokenizer("A photo of a RED circle!")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(encoded)
    assert tokens == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "red</w>", "circle</w>", "!</w>",
                      "<|endoftext|>"]
    assert tokenizer.eos_token_id == len(tokenizer) - 1 == tokenizer.pad_token_id
    assert tokenizer.bos_token_id == len(tokenizer) - 2
    assert tokenizer.model_max_length == 77
    # unknown words fall apart into pieces instead of becoming <unk>
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("blue", add_special_tokens=False)["input_ids"])
    assert "".join(pieces).replace("</w>", "") == "blue" and len(pieces) > 1
    assert tokenizer.decode(tokenizer("a red circle", add_special_tokens=False)["input_ids"]) == "a red circle"


def test_default_words_are_the_shapesworld_vocabulary():
    from mmcourse.data import Tokenizer

    tokenizer = S.clip_stand_in_tokenizer()
    for word in ("orange", "triangles", "left", "below", "photo"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    assert len(tokenizer) < 1000 < 49408
    assert all(w.isalpha() for w in S._default_words()) and "circle" in Tokenizer.from_world(None).vocab


def test_stand_in_processor_needs_no_torchvision(tokenizer):
    from mmcourse.hf import to_pil_images

    processor = S.clip_stand_in_processor(tokenizer, image_size=32)
    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    out = processor(text=["a red circle", "a photo"], images=to_pil_images(images), return_tensors="pt",
                    padding=True)
    assert out["pixel_values"].shape == (2, 3, 32, 32)
    assert out["input_ids"].shape[0] == 2 and out["attention_mask"].sum(1).tolist() == [5, 4]
    mean = torch.tensor(S.CLIP_IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(S.CLIP_IMAGE_STD).view(1, 3, 1, 1)
    pixels = out["pixel_values"] * std + mean  # undo the normalisation: back in [0, 1]
    assert float(pixels.min()) > -0.01 and float(pixels.max()) < 1.01
    with pytest.raises(TypeError, match="tokenizer"):
        S.clip_stand_in_processor(object())
    with pytest.raises(ValueError, match="image_size"):
        S.clip_stand_in_processor(tokenizer, image_size=0)


# ------------------------------------------------------------------------------------------------ checkpoint


@pytest.fixture(scope="module")
def small_name(monkeypatch_module):
    """Register a tiny CLIP architecture under a made-up Hub name, so stand-ins are written in milliseconds."""
    from mmcourse import hf

    name = "course-tests/clip-tiny"
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    monkeypatch_module.setitem(hf.KNOWN_CLIP_CONFIGS, name, {
        "text_config": {**small, "max_position_embeddings": 16},
        "vision_config": {**small, "image_size": 32, "patch_size": 16},
        "projection_dim": 16,
    })
    return name


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_written_stand_in_loads_with_auto_classes(tmp_path, small_name):
    from transformers import AutoModel, AutoProcessor

    from mmcourse.hf import to_pil_images

    target = S.write_clip_stand_in(tmp_path, small_name, seed=3, words=WORDS)
    assert target == tmp_path / small_name and S.is_stand_in(target)
    written = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= written
    assert written & {"processor_config.json", "preprocessor_config.json"}  # transformers 5 / 4.x
    model = AutoModel.from_pretrained(str(target))
    processor = AutoProcessor.from_pretrained(str(target))
    assert type(model).__name__ == "CLIPModel" and S.is_stand_in(model)
    assert type(processor.image_processor).__name__ in ("CLIPImageProcessorPil", "CLIPImageProcessor")
    text = model.config.text_config
    assert (text.bos_token_id, text.eos_token_id) == (processor.tokenizer.bos_token_id,
                                                       processor.tokenizer.eos_token_id)
    assert model.config.vision_config.hidden_size == 32
    # random weights, seeded: N(0, 0.02) matrices, unit LayerNorms, CLIP's logit scale
    weight = model.vision_model.encoder.layers[0].mlp.fc1.weight.detach()
    assert 0.015 < float(weight.std()) < 0.025
    assert torch.equal(model.vision_model.post_layernorm.weight, torch.ones(32))
    assert float(model.logit_scale.detach()) == pytest.approx(2.6592)
    again = S.write_clip_stand_in(tmp_path / "again", small_name, seed=3, words=WORDS)
    other = AutoModel.from_pretrained(str(again))
    assert torch.equal(other.text_model.embeddings.token_embedding.weight,
                       model.text_model.embeddings.token_embedding.weight)
    inputs = processor(text=["a red circle"], images=to_pil_images(torch.zeros(1, 3, 40, 40)), return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (1, 1) and torch.isfinite(out.logits_per_image).all()


def test_write_replaces_a_stand_in_but_never_a_real_checkpoint(tmp_path, small_name):
    S.write_clip_stand_in(tmp_path, small_name, words=WORDS)
    S.write_clip_stand_in(tmp_path, small_name, words=WORDS, seed=1)  # a stand-in may be replaced
    real = tmp_path / "real" / small_name
    real.mkdir(parents=True)
    (real / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match="not a stand-in"):
        S.write_clip_stand_in(tmp_path / "real", small_name, words=WORDS)
    assert not S.is_stand_in(real) and not S.is_stand_in(tmp_path / "nothing here")


def test_write_refuses_unknown_names_and_bad_seeds(tmp_path):
    with pytest.raises(ValueError, match="name"):
        S.write_clip_stand_in(tmp_path, "someone/unknown-model")
    with pytest.raises(TypeError, match="name"):
        S.write_clip_stand_in(tmp_path, 42)
    with pytest.raises(TypeError, match="seed"):
        S.write_clip_stand_in(tmp_path, CLIP_VIT_B32, seed=1.5)
    with pytest.raises(TypeError, match="model_or_path"):
        S.is_stand_in(3)


def test_random_clip_weights_refuses_persistent_buffers():
    module = torch.nn.BatchNorm1d(4)  # running statistics are persistent buffers
    with pytest.raises(ValueError, match="persistent buffers"):
        S.random_clip_weights(module)
    tensors = S.random_clip_weights(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)), seed=0)
    assert set(tensors) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert torch.equal(tensors["0.bias"], torch.zeros(2)) and torch.equal(tensors["1.weight"], torch.ones(2))


def test_checkpoint_source_and_prepare_offline(tmp_path, small_name, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and a made-up name is in no cache
    assert S.checkpoint_source(small_name, tmp_path) == "none"
    assert S.prepare_from_pretrained(small_name, tmp_path) == "stand-in"
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "stand-in" in line and str(tmp_path) not in line
    assert S.checkpoint_source(small_name, tmp_path) == "local"
    assert S.prepare_from_pretrained(small_name, tmp_path, verbose=False) == "local"
    assert capsys.readouterr().out == ""


def test_prepare_does_nothing_when_the_hub_is_reachable(tmp_path, small_name, monkeypatch, capsys):
    from mmcourse import hf

    monkeypatch.setattr(hf, "hub_reachable", lambda timeout=2.0: True)
    assert S.prepare_from_pretrained(small_name, tmp_path) == "hub"
    assert not (tmp_path / small_name).exists()
    assert "Hugging Face Hub" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ scratch directory


def test_scratch_directory_changes_and_restores_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scratch = S.ScratchDirectory()
    try:
        assert Path.cwd().resolve() == scratch.path.resolve() != tmp_path.resolve()
        Path("sub").mkdir()
        Path("sub/file.pth").write_bytes(b"123")
        Path("top.txt").write_text("x")
        assert scratch.files() == ["sub/file.pth", "top.txt"]
        assert repr(scratch) == "ScratchDirectory(open, 2 files)" and str(scratch.path) not in repr(scratch)
    finally:
        scratch.close()
    assert Path.cwd().resolve() == tmp_path.resolve() and not scratch.path.exists()
    assert scratch.files() == [] and repr(scratch) == "ScratchDirectory(closed, 0 files)"
    scratch.close()  # idempotent
    with S.ScratchDirectory() as inner:
        assert Path.cwd().resolve() == inner.path.resolve()
    assert Path.cwd().resolve() == tmp_path.resolve() and not inner.path.exists()
    with pytest.raises(TypeError, match="prefix"):
        S.ScratchDirectory(prefix=3)
    forgotten = S.ScratchDirectory()
    path = forgotten.path
    os.chdir(tmp_path)
    del forgotten  # never closed: deleted when collected
    import gc

    gc.collect()
    assert not path.exists()


def test_snippet_runs_offline_against_a_stand_in(tmp_path, small_name, monkeypatch):
    """The article's §8.2 code, verbatim but for the model name, inside a scratch directory."""
    from mmcourse.quantization import silence_quantization_warnings

    monkeypatch.chdir(tmp_path)
    with S.ScratchDirectory() as scratch:
        S.write_clip_stand_in(".", small_name, words=WORDS)
        with silence_quantization_warnings():
            from transformers import AutoModel, AutoProcessor

            model = AutoModel.from_pretrained(small_name)
            processor = AutoProcessor.from_pretrained(small_name)
            quantized_model = torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            torch.save(quantized_model.state_dict(), "quantized_clip_model.pth")
        assert "quantized_clip_model.pth" in scratch.files()
        assert os.path.getsize("quantized_clip_model.pth") > 0 and processor.tokenizer is not None
    assert not (tmp_path / "quantized_clip_model.pth").exists()
