"""Chapter 1 shows its code (cells tagged ``lesson``); these tests check that it agrees with the lab and the library.

The notebook trains its first model with the loop it shows (``train_fused``) and then switches to
:func:`mmcourse.labs.ch01_overview.train_classifier`; both must give the same bits for the same seed.
"""

import pytest
import torch
from lesson_code import lesson_namespace

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch01_overview import REGIMES, accuracy, blank_text, build_classifier, corrupt_batch, train_classifier
from mmcourse.nn.encoders import SmallCNN, TextTransformer
from mmcourse.train import seeded

NS = lesson_namespace("01_overview.ipynb")
WORLD = ShapesWorld(64, image_size=16, max_objects=1, seed=0)
TOK = Tokenizer.from_world(WORLD)
IDS, MASK = TOK.encode(WORLD.captions, max_len=8)
DATA = {"images": WORLD.images, "input_ids": IDS, "attention_mask": MASK, "labels": WORLD.labels}
CLASSES = int(WORLD.labels.max()) + 1


def shown_model(seed: int):
    """The notebook's ``EarlyFusion``, built the way the notebook builds it (same encoders, same seed)."""
    with seeded(seed):
        image_encoder = SmallCNN(width=8, dim=64)
        text_encoder = TextTransformer(TOK.vocab_size, dim=64, depth=1, num_heads=4, max_len=8)
        return NS["EarlyFusion"](image_encoder, text_encoder, num_classes=CLASSES)


def test_early_fusion_is_the_library_model():
    lab = build_classifier(TOK, CLASSES, max_len=8, seed=3)
    shown = shown_model(3)
    lab_params, shown_params = list(lab.parameters()), list(shown.parameters())
    assert len(lab_params) == len(shown_params)
    assert all(torch.equal(a, b) for a, b in zip(lab_params, shown_params, strict=True))  # same init, same order
    with torch.no_grad():
        assert torch.equal(shown.eval()(WORLD.images, IDS, MASK), lab.model.eval()(WORLD.images, IDS, MASK))


def test_switch_off_is_the_lab_blanking():
    g = torch.Generator().manual_seed(0)
    no_image, no_text = torch.rand(64, generator=g) < 0.5, torch.rand(64, generator=g) < 0.5
    images, ids, mask = NS["switch_off"](WORLD.images, IDS, MASK, no_image, no_text)
    empty_ids, empty_mask = blank_text(IDS, MASK, TOK)
    assert torch.equal(ids[no_text], empty_ids[no_text]) and torch.equal(mask[no_text], empty_mask[no_text])
    assert torch.equal(ids[~no_text], IDS[~no_text]) and torch.equal(mask[~no_text], MASK[~no_text])
    assert (images[no_image] == 0).all() and torch.equal(images[~no_image], WORLD.images[~no_image])
    lab = build_classifier(TOK, CLASSES, max_len=8, seed=1).eval()
    with torch.no_grad():
        expected = lab(WORLD.images, IDS, MASK, drop_image=no_image, drop_text=no_text)
        assert torch.equal(lab.model(images, ids, mask), expected)


def test_modality_dropout_draws_like_the_lab():
    """The lab's step draws ``dropped`` then ``image_side`` from its generator, exactly as the shown rule."""
    no_image, no_text = NS["modality_dropout"](1000, 0.5, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    dropped, image_side = torch.rand(1000, generator=g) < 0.5, torch.rand(1000, generator=g) < 0.5
    assert torch.equal(no_image, dropped & image_side) and torch.equal(no_text, dropped & ~image_side)
    assert not (no_image & no_text).any() and 0.4 < (no_image | no_text).float().mean() < 0.6


def test_corrupt_one_modality_is_corrupt_batch():
    for rate in (0.0, 0.7, 1.0):
        lab = corrupt_batch(DATA, rate, TOK, torch.Generator().manual_seed(1))
        shown = NS["corrupt_one_modality"](DATA, rate, torch.Generator().manual_seed(1))
        assert all(torch.equal(lab[k], shown[k]) for k in DATA)


@pytest.mark.parametrize("corruption", [0.0, 0.5])
def test_shown_loop_is_train_classifier(corruption):
    """Same seed, same data: the notebook's loop and the lab's give the same loss at every step and the same
    weights after the last one."""
    lab = build_classifier(TOK, CLASSES, max_len=8, seed=3)
    history = train_classifier(lab, DATA, modality_dropout=0.5, corruption=corruption, steps=8, batch_size=16,
                               seed=5)
    shown = shown_model(3)
    augment = (lambda batch, g: NS["corrupt_one_modality"](batch, corruption, g)) if corruption else None
    losses = NS["train_fused"](shown, DATA, steps=8, dropout_p=0.5, augment=augment, batch_size=16, seed=5)
    assert losses == history.losses
    assert all(torch.equal(a, b) for a, b in zip(lab.parameters(), shown.parameters(), strict=True))
    assert not shown.training
    for use in REGIMES.values():
        assert NS["accuracy_using"](shown, DATA, use) == pytest.approx(accuracy(lab, DATA, use=use))


def test_ceiling_is_the_best_constant_answer_per_input():
    inputs = torch.tensor([[0], [0], [0], [1], [1], [2]])
    labels = torch.tensor([3, 3, 1, 0, 2, 2])
    assert NS["ceiling"](inputs, labels) == pytest.approx((2 + 1 + 1) / 6)
    images = WORLD.images.repeat(2, 1, 1, 1)  # every image twice, once with its label and once with another
    labels = torch.cat([WORLD.labels, (WORLD.labels + 1) % CLASSES])
    assert NS["ceiling"](images, labels) == pytest.approx(0.5, abs=0.05)
