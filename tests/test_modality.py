"""Chapter 1's modality switches and corruptions."""

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch01_overview import (
    REGIMES,
    ModalityClassifier,
    accuracy,
    blank_text,
    build_classifier,
    corrupt_batch,
    corrupt_images,
    corrupt_test_inputs,
    corruption_sweep,
    draw_corruption,
    drop_words,
    plot_accuracy_bars,
    plot_corruption_curves,
    train_classifier,
)

WORLD = ShapesWorld(64, image_size=16, max_objects=1, seed=0)
TOK = Tokenizer.from_world(WORLD)
IDS, MASK = TOK.encode(WORLD.captions, max_len=8)
DATA = {"images": WORLD.images, "input_ids": IDS, "attention_mask": MASK, "labels": WORLD.labels}


def test_corrupt_images_noise_levels():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(corrupt_images(WORLD.images, 0.0, g), WORLD.images)
    noisy = corrupt_images(WORLD.images, 0.5, g)
    assert noisy.shape == WORLD.images.shape and noisy.min() >= 0 and noisy.max() <= 1
    assert (noisy - WORLD.images).abs().mean() > 0.1
    per_image = corrupt_images(WORLD.images, torch.tensor([0.0] * 32 + [1.0] * 32), g)
    assert torch.equal(per_image[:32], WORLD.images[:32]) and not torch.equal(per_image[32:], WORLD.images[32:])


def test_drop_words_keeps_special_tokens_and_padding():
    dropped = drop_words(IDS, MASK, 1.0, TOK.unk_id, TOK.special_ids)
    special = torch.isin(IDS, torch.tensor(TOK.special_ids))
    assert torch.equal(dropped[special], IDS[special])
    assert (dropped[~special] == TOK.unk_id).all()
    assert torch.equal(drop_words(IDS, MASK, 0.0, TOK.unk_id, TOK.special_ids), IDS)


def test_blank_text_is_the_empty_sentence():
    ids, mask = blank_text(IDS, MASK, TOK)
    assert TOK.decode(ids[0]) == "" and mask.sum(1).eq(2).all()


def test_modality_switch_really_ignores_the_other_input():
    torch.manual_seed(0)
    image_only = ModalityClassifier(TOK.vocab_size, 24, TOK, use="image", max_len=8).eval()
    text_only = ModalityClassifier(TOK.vocab_size, 24, TOK, use="text", max_len=8).eval()
    other_ids = IDS.roll(1, dims=0)
    other_mask = MASK.roll(1, dims=0)
    with torch.no_grad():
        assert torch.allclose(image_only(WORLD.images, IDS, MASK), image_only(WORLD.images, other_ids, other_mask))
        assert torch.allclose(text_only(WORLD.images, IDS, MASK), text_only(torch.rand_like(WORLD.images), IDS, MASK))


def test_corrupt_batch_touches_at_most_one_modality_per_example():
    out = corrupt_batch(DATA, 1.0, TOK, torch.Generator().manual_seed(1))
    image_changed = (out["images"] != DATA["images"]).flatten(1).any(1)
    text_changed = (out["input_ids"] != DATA["input_ids"]).any(1)
    assert not (image_changed & text_changed).any() and image_changed.any() and text_changed.any()
    untouched = corrupt_batch(DATA, 0.0, TOK, torch.Generator().manual_seed(1))
    assert torch.equal(untouched["images"], DATA["images"]) and torch.equal(untouched["input_ids"], IDS)


def test_training_learns_from_text_alone():
    model = build_classifier(TOK, 24, use="text", max_len=8)
    history = train_classifier(model, DATA, steps=60, batch_size=32, lr=1e-2)
    assert history.num_steps == 60 and not model.training
    assert accuracy(model, DATA) > 0.5  # chance is 1/24
    assert accuracy(model, DATA, use="image") < 0.3 and model.use == "text"  # override is temporary


def test_build_classifier_is_seeded():
    a, b = build_classifier(TOK, 24, max_len=8, seed=2), build_classifier(TOK, 24, max_len=8, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_modality_dropout_blanks_per_example():
    torch.manual_seed(0)
    model = ModalityClassifier(TOK.vocab_size, 24, TOK, max_len=8).eval()
    blank = torch.zeros(64, dtype=torch.bool)
    blank[:5] = True
    with torch.no_grad():
        full = model(WORLD.images, IDS, MASK)
        part = model(WORLD.images, IDS, MASK, drop_image=blank)
        model.use = "text"
        text_only = model(WORLD.images, IDS, MASK)
    assert torch.allclose(part[5:], full[5:]) and torch.allclose(part[:5], text_only[:5])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: corrupt_images(WORLD.images, -0.1), "noise"),
        (lambda: corrupt_images(WORLD.images[0], 0.1), "4-D"),
        (lambda: drop_words(IDS, MASK, 1.5, 6, TOK.special_ids), r"p must be a number in \[0, 1"),
        (lambda: drop_words(IDS, MASK[:, :3], 0.5, 6, TOK.special_ids), "same shape"),
        (lambda: ModalityClassifier(10, 2, TOK, use="audio"), "use must be one of"),
        (lambda: train_classifier(build_classifier(TOK, 24), {"images": WORLD.images}), "must contain 'input_ids'"),
        (lambda: train_classifier(torch.nn.Linear(2, 2), DATA), "ModalityClassifier"),
        (lambda: corrupt_batch(DATA, 2.0, TOK), "rate"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_corrupt_test_inputs_is_seeded_and_touches_only_what_it_is_told():
    same = corrupt_test_inputs(DATA, TOK)
    assert torch.equal(same["images"], DATA["images"]) and torch.equal(same["input_ids"], IDS)
    a, b = corrupt_test_inputs(DATA, TOK, 0.5, 0.5, seed=3), corrupt_test_inputs(DATA, TOK, 0.5, 0.5, seed=3)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["images"], DATA["images"]) and (a["input_ids"] == TOK.unk_id).any()
    assert torch.equal(corrupt_test_inputs(DATA, TOK, image_noise=1.0)["input_ids"], IDS)


def test_corruption_sweep_and_its_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = build_classifier(TOK, 24, max_len=8).eval()
    levels = [0.0, 1.0]
    sweep = corruption_sweep(model, DATA, levels, TOK)
    assert set(sweep) == {"image noise", "word dropout"}
    for kind in sweep:
        assert list(sweep[kind]) == list(REGIMES) and all(len(v) == 2 for v in sweep[kind].values())
    clean_text = accuracy(model, DATA, "text")
    assert sweep["image noise"]["text only"][0] == sweep["word dropout"]["text only"][0] == clean_text
    figs = [plot_corruption_curves(levels, [sweep, sweep], chance=1 / 24),
            plot_accuracy_bars({"image only": 0.4, "fused": 0.9}, {"image only": 0.5}, title="t"),
            draw_corruption(model, DATA, TOK, 0.5, 0.5)]
    assert [len(f.axes) for f in figs] == [2, 1, 2]
    plt.close("all")
