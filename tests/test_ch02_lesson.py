"""Chapter 2's shown code (the cells tagged ``lesson``) agrees with the lab: the three alignment objectives and one
training step of :func:`mmcourse.labs.ch02_representation.train_alignment`."""

import pytest
import torch
from lesson_code import lesson_namespace

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch02_representation import (
    STRATEGIES,
    build_aligner,
    explicit_attribute_loss,
    implicit_matching_loss,
    labelled_scene_text_pairs,
    train_alignment,
)
from mmcourse.train import fused_adamw, iterate_minibatches, seeded

SMALL = dict(cnn_width=4, vision_dim=16, text_dim=16, text_depth=1, embed_dim=8, num_heads=2)


@pytest.fixture(scope="module")
def ns():
    return lesson_namespace("02_representation.ipynb")


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(24, image_size=16, max_objects=1, seed=3)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def _batch(world, tokenizer, n=6):
    captions = [world.captions[i] for i in range(n)]
    captions[3] = captions[2]  # a rolled text that is word for word the true caption: labelled a match
    ids, mask = tokenizer.encode(captions, max_len=16)
    labels = {"color": world.attribute("color")[:n], "shape": world.attribute("shape")[:n]}
    return dict(images=world.images[:n], input_ids=ids, attention_mask=mask, labels=labels)


def test_lesson_cells_define_the_shown_code(ns):
    for name in ("implicit_matching_loss", "explicit_attribute_loss", "contrastive_loss", "alignment_loss",
                 "training_step", "match_logits"):
        assert callable(ns[name]), name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shown_losses_equal_the_lab(ns, world, tokenizer, strategy):
    aligner = build_aligner(strategy, tokenizer.vocab_size, image_size=16, seed=0, **SMALL)
    batch = _batch(world, tokenizer)
    args = (batch["images"], batch["input_ids"], batch["attention_mask"])
    shown = ns["alignment_loss"](aligner, *args, batch["labels"])
    if strategy == "implicit":
        torch.testing.assert_close(ns["implicit_matching_loss"](aligner.model, aligner.head, *args), shown)
        torch.testing.assert_close(shown, implicit_matching_loss(aligner.model, aligner.head, *args), rtol=0, atol=0)
    elif strategy == "explicit":
        lab = explicit_attribute_loss(aligner.model, aligner.head, *args, batch["labels"])
        torch.testing.assert_close(shown, lab, rtol=0, atol=0)
    else:  # the lab's contrastive step is TinyCLIP.loss
        torch.testing.assert_close(shown, aligner.model.loss(*args), rtol=1e-6, atol=1e-6)


def test_match_logits_is_the_matching_head(ns):
    from mmcourse.labs.ch02_representation import MatchingHead

    with seeded(0):
        head = MatchingHead(8, hidden_dim=16)
        i, t = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(ns["match_logits"](head, i, t), head(i, t), rtol=0, atol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_training_step_equals_train_alignment_step_one(ns, world, tokenizer, strategy):
    data = labelled_scene_text_pairs(world, tokenizer, range(16), use_paraphrases=False)  # one text per scene
    lab = build_aligner(strategy, tokenizer.vocab_size, image_size=16, seed=1, **SMALL)
    history = train_alignment(lab, data, steps=1, batch_size=8, lr=3e-3, weight_decay=0.05, warmup_steps=0, seed=1)
    shown = build_aligner(strategy, tokenizer.vocab_size, image_size=16, seed=1, **SMALL)
    keys = ("images", "input_ids", "attention_mask", "counts", "color", "shape")
    batch = next(iterate_minibatches({k: data[k] for k in keys}, 8, torch.Generator().manual_seed(1)))  # fit's
    optimizer = fused_adamw(shown.parameters(), lr=3e-3, weight_decay=0.05)
    shown.train()
    with seeded(1):
        loss = ns["training_step"](shown, optimizer, batch["images"], batch["input_ids"][:, 0],
                                   batch["attention_mask"][:, 0], {"color": batch["color"], "shape": batch["shape"]})
    assert float(loss) == pytest.approx(history.losses[0], abs=1e-6)
    for (name, a), b in zip(lab.named_parameters(), shown.parameters(), strict=True):
        if name.endswith("k_proj.bias"):  # its true gradient is 0 (softmax ignores it); Adam scales rounding noise
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
