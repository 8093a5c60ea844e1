"""Tests of the "now on a real model" code path (mmcourse.labs.real_models, mmcourse.hf.load_pretrained and the tiny
stand-ins of mmcourse.dev.stand_in), offline: forward, zero-shot, retrieval, captioning, VQA, INT8, and what happens
when the Hub is unreachable or a download is cut off. Runs on transformers 4.40+ and 5.x."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported anywhere

import re
import socket

import pytest
import torch
import torch.nn.functional as F
import transformers

from mmcourse import hf
from mmcourse.data import real_photos
from mmcourse.dev import stand_in
from mmcourse.labs import real_models as R
from mmcourse.labs.ch08_quantization import evaluate_zero_shot, feature_cosine
from mmcourse.quantization import silence_quantization_warnings
from mmcourse.retrieval import cosine_similarity_matrix, recall_at_k, zero_shot_classifier


@pytest.fixture(scope="module")
def photos():
    return real_photos()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every test runs offline, and any attempt to open a connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", no_network)


@pytest.fixture(scope="module")
def loaded():
    """The three stand-ins, loaded once (offline) for the tests that only use them."""
    return {kind: R.load_real(kind) for kind in R.REAL_MODELS}


# ------------------------------------------------------------------------------------ offline: the stand-ins


@pytest.mark.parametrize("kind", sorted(R.REAL_MODELS))
def test_offline_load_real_gives_an_announced_stand_in_without_touching_the_network(kind, capsys, monkeypatch):
    spec = R.REAL_MODELS[kind]

    def never(*args, **kwargs):
        raise AssertionError("from_pretrained called offline")

    monkeypatch.setattr(getattr(transformers, spec.model_class), "from_pretrained", never)
    real = R.load_real(kind)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("offline (HF_HUB_OFFLINE is set):") and spec.name in lines[0]
    assert "random weights" in lines[0] and spec.noise in lines[0] and "Colab" in lines[0]
    assert not real.pretrained and stand_in.is_stand_in(real.model) and not real.model.training
    assert type(real.model).__name__ == spec.model_class
    assert "stand-in" in repr(real)


def test_every_real_model_states_its_download_size():
    assert set(hf.DOWNLOAD_MB) >= {spec.name for spec in R.REAL_MODELS.values()}
    assert all(100 < mb < 2000 for mb in hf.DOWNLOAD_MB.values())
    assert hf.PINNED_REVISIONS[R.REAL_MODELS["clip"].name] == hf.PINNED_REVISIONS[hf.CLIP_VIT_B32]
    with pytest.raises(ValueError, match="kind"):
        R.load_real("diffusion")


def test_stand_ins_are_seeded(photos):
    first, again = R.load_real("captioner", seed=3), R.load_real("captioner", seed=3)
    assert R.caption_photos(first, photos[:2]) == R.caption_photos(again, photos[:2])
    other = R.load_real("captioner", seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(first.model.parameters(), other.model.parameters()))


def test_clip_forward_and_zero_shot(loaded, photos):
    clip = loaded["clip"]
    prompts = [f"a photo of a {name}." for name in R.PHOTO_CLASSES]
    inputs = clip.processor(text=prompts, images=[p.image for p in photos], return_tensors="pt", padding=True)
    with torch.no_grad():
        probabilities = clip.model(**inputs).logits_per_image.softmax(dim=-1)
    assert probabilities.shape == (len(photos), len(R.PHOTO_CLASSES))
    assert torch.allclose(probabilities.sum(-1), torch.ones(len(photos)))
    encoder, tokenizer = hf.HFCLIPEncoder(clip.model), hf.TokenizerAdapter(clip.processor.tokenizer)
    classifier = zero_shot_classifier(encoder, tokenizer, list(R.PHOTO_CLASSES), R.PHOTO_TEMPLATES)
    assert classifier.shape == (len(R.PHOTO_CLASSES), clip.model.config.projection_dim)
    labels = torch.tensor([R.PHOTO_CLASSES.index(p.label) for p in photos])
    accuracy = evaluate_zero_shot(clip.model, tokenizer, inputs["pixel_values"], labels, list(R.PHOTO_CLASSES),
                                  R.PHOTO_TEMPLATES)
    assert 0 <= accuracy <= 1


def test_every_word_of_the_section_is_one_token_of_the_stand_ins(loaded, photos):
    clip_tokenizer = loaded["clip"].processor.tokenizer
    bert_tokenizer = loaded["vqa"].processor.tokenizer
    for text in [*R.PHOTO_CLASSES, photos[0].captions[0], R.PHOTO_QUESTIONS["cat"][0]]:
        for word in text.replace("?", "").replace(".", "").split():
            assert len(clip_tokenizer.tokenize(word)) == 1, word
            assert bert_tokenizer.tokenize(word) == [word], word
    assert bert_tokenizer.tokenize("zebra") == ["[UNK]"]


def test_retrieval_both_ways(loaded, photos):
    clip = loaded["clip"]
    captions = [c for p in photos for c in p.captions]
    owner = torch.tensor([i for i, p in enumerate(photos) for _ in p.captions])
    inputs = clip.processor(text=captions, images=[p.image for p in photos], return_tensors="pt", padding=True)
    images = hf.image_embeddings(clip.model, inputs["pixel_values"])
    texts = hf.text_embeddings(clip.model, inputs["input_ids"], inputs["attention_mask"])
    assert images.shape[0] == len(photos) and texts.shape[0] == len(captions)
    assert torch.allclose(images.norm(dim=-1), torch.ones(len(photos)), atol=1e-5)
    similarity = cosine_similarity_matrix(images, texts)
    i2t = recall_at_k(similarity, owner[None, :] == torch.arange(len(photos))[:, None], (1, 3))
    t2i = recall_at_k(similarity.t(), owner, (1, 3))
    assert all(0 <= r <= 1 for r in (*i2t.values(), *t2i.values()))
    assert i2t[3] >= i2t[1] and t2i[3] >= t2i[1]


def test_captioning(loaded, photos):
    captions = R.caption_photos(loaded["captioner"], photos, max_new_tokens=8, num_beams=2)
    assert len(captions) == len(photos) and all(isinstance(c, str) for c in captions)
    vocab = set(loaded["captioner"].processor.tokenizer.get_vocab())
    assert all(word in vocab for c in captions for word in re.findall(r"[a-z]+", c))
    assert len(set(captions)) > 1  # the stand-in's image tower is not a constant


def test_vqa(loaded, photos):
    vqa = loaded["vqa"]
    questions = [R.PHOTO_QUESTIONS[p.name][0] for p in photos]
    answers = R.answer_questions(vqa, photos, questions)
    labels = set(vqa.model.config.id2label.values())
    assert len(answers) == len(photos)
    assert all(answer in labels and 0 < p < 1 for answer, p in answers)
    accepted = {a for _, ok in R.PHOTO_QUESTIONS.values() for a in ok}
    assert accepted <= labels  # every right answer can be given
    with pytest.raises(ValueError, match="one question per photo"):
        R.answer_questions(vqa, photos, questions[:-1])
    assert R.answer_matches(" Orange ", ("orange",)) and not R.answer_matches("red", ("orange",))


def test_every_photo_has_a_question(photos):
    assert {p.name for p in photos} == set(R.PHOTO_QUESTIONS)
    assert {p.label for p in photos} <= set(R.PHOTO_CLASSES)


def test_int8_of_the_clip_stand_in(loaded, photos):
    clip = loaded["clip"]
    with silence_quantization_warnings():
        int8 = torch.quantization.quantize_dynamic(clip.model, {torch.nn.Linear}, dtype=torch.qint8)
    pixels = clip.processor(images=[p.image for p in photos], return_tensors="pt")["pixel_values"]
    reference, quantized = hf.image_embeddings(clip.model, pixels), hf.image_embeddings(int8, pixels)
    assert feature_cosine(reference, quantized)["min"] > 0.99
    assert not torch.equal(reference, quantized)  # the INT8 model really computed differently
    tokenizer = hf.TokenizerAdapter(clip.processor.tokenizer)
    labels = torch.tensor([R.PHOTO_CLASSES.index(p.label) for p in photos])
    assert 0 <= evaluate_zero_shot(int8, tokenizer, pixels, labels, list(R.PHOTO_CLASSES), R.PHOTO_TEMPLATES) <= 1


def test_show_photos(photos):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = R.show_photos(photos, [("caption", [p.captions[0] for p in photos])], title="t")
    assert len([ax for ax in fig.axes if ax.images]) == len(photos)
    plt.close(fig)


# ---------------------------------------------------------------------------- online, and when it goes wrong


def _pretend_online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(R, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(R, "pretrained_in_cache", lambda name, revision=None: False)


def _download_errors():
    import requests

    errors = [OSError("Connection reset by peer"), requests.ConnectionError("Max retries exceeded"),
              ValueError("Connection error, and we cannot find the requested files in the cached path.")]
    try:
        import httpx

        errors.append(httpx.ReadError("peer closed connection without sending complete message body"))
    except ImportError:
        pass
    return errors


@pytest.mark.parametrize("error", _download_errors(), ids=lambda e: type(e).__name__)
def test_an_unreachable_hub_or_a_cut_download_gives_one_line_and_the_stand_in(error, capsys, monkeypatch):
    _pretend_online(monkeypatch)
    spec = R.REAL_MODELS["captioner"]

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(getattr(transformers, spec.model_class), "from_pretrained", fail)
    real = R.load_real("captioner")
    lines = capsys.readouterr().out.strip().splitlines()
    assert not real.pretrained and stand_in.is_stand_in(real.model)
    assert len(lines) == 2, lines  # the announced download, then the one-line fallback
    assert f"about {hf.DOWNLOAD_MB[spec.name]} MB" in lines[0] and spec.name in lines[0]
    assert lines[1].startswith(f"cannot load the weights of {spec.name!r} here:") and "random weights" in lines[1]
    assert str(error).splitlines()[0][:40] in lines[1]


def test_the_pretrained_path_shows_progress_bars_and_restores_them(capsys, monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    _pretend_online(monkeypatch)
    seen = []
    tiny, processor = stand_in.tiny_vilt_vqa(["what"], ["yes", "no"])

    def fake_load(class_name, name, *, revision=None):
        seen.append((class_name, name, are_progress_bars_disabled()))
        return processor if class_name == "AutoProcessor" else tiny

    monkeypatch.setattr(R, "load_pretrained", fake_load)
    disable_progress_bars()
    try:
        real = R.load_real("vqa")
        assert are_progress_bars_disabled()  # as the chapter had it
    finally:
        enable_progress_bars()
    assert real.pretrained and real.model is tiny and real.processor is processor
    assert seen == [("ViltForQuestionAnswering", hf.VILT_VQA, False), ("AutoProcessor", hf.VILT_VQA, False)]
    out = capsys.readouterr().out
    assert "about 470 MB" in out and "the pretrained dandelin/vilt-b32-finetuned-vqa" in out


# ------------------------------------------------------------------------------------- mmcourse.hf pieces


def test_load_pretrained_offline_raises_one_clear_line():
    with pytest.raises(hf.PretrainedUnavailable, match="cannot load the weights of 'course-tests/never") as info:
        hf.load_pretrained("BlipForConditionalGeneration", "course-tests/never-published")
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(hf.PretrainedUnavailable, match="cannot load the processor"):
        hf.load_pretrained("AutoProcessor", "course-tests/never-published")
    with pytest.raises(ValueError, match="class_name"):
        hf.load_pretrained("NoSuchModel", hf.BLIP_CAPTIONING)


def test_load_pretrained_reads_a_local_checkpoint_in_float32_eval_mode(tmp_path):
    model, processor = stand_in.tiny_blip_captioner(["a", "cat"])
    model.half().train().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = hf.load_pretrained("BlipForConditionalGeneration", str(tmp_path))
    assert not loaded.training and next(loaded.parameters()).dtype == torch.float32
    assert type(hf.load_pretrained("AutoProcessor", str(tmp_path))).__name__ == "BlipProcessor"


def test_bert_stand_in_tokenizer():
    tokenizer = stand_in.bert_stand_in_tokenizer(["what", "color", "is", "the", "cat"])
    ids = tokenizer("What color is the cat?")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "what", "color", "is", "the", "cat", "?", "[SEP]"]
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 40
    with pytest.raises(ValueError, match="words"):
        stand_in.bert_stand_in_tokenizer(["Cat"])


def test_tiny_stand_ins_are_small_and_marked():
    for model, _ in (stand_in.tiny_clip_stand_in(["cat"]), stand_in.tiny_blip_captioner(["cat"]),
                     stand_in.tiny_vilt_vqa(["cat"], ["yes"])):
        assert stand_in.is_stand_in(model) and sum(p.numel() for p in model.parameters()) < 500_000
    with pytest.raises(ValueError, match="answers"):
        stand_in.tiny_vilt_vqa(["cat"], [])


def test_clip_stand_in_pools_at_its_end_of_text_token(loaded):
    clip = loaded["clip"]
    inputs = clip.processor(text=["a cat", "a cat on a red saucer"], return_tensors="pt", padding=True)
    with torch.no_grad():
        padded = hf.text_embeddings(clip.model, inputs["input_ids"], inputs["attention_mask"])
        alone = hf.text_embeddings(clip.model, *clip.processor(text=["a cat"], return_tensors="pt").values())
    assert F.cosine_similarity(padded[:1], alone).item() > 0.9999  # padding does not change a text's embedding
