"""Exercise set 1 (chapter 01_overview, article §1.1): fusing two modalities, and surviving the loss of one."""

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.grading.expect import (
    expect,
    expect_close,
    expect_equal,
    expect_number,
    expect_raises,
    expect_tensor,
)
from mmcourse.grading.spec import ExerciseSet
from mmcourse.train import seeded

SET = ExerciseSet("ex01", "Fusion: early, late, and a missing modality", chapter="01_overview", version=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
early_fusion = SET.question(
    "early_fusion",
    "Early fusion: one feature vector per sample",
    forbidden=("mmcourse.models.fusion.EarlyFusionClassifier",),
    points=4,
)


@early_fusion.test(points=1, hint="Concatenate along dim 1 (the feature dim), not dim 0 (the batch).")
def output_shape(fn):
    """(B, Di) and (B, Dt) give (B, Di + Dt)"""
    out = fn(torch.randn(4, 3, generator=_gen(0)), torch.randn(4, 5, generator=_gen(1)))
    expect_tensor(out, shape=(4, 8))


@early_fusion.test(points=1, hint="Image features first, then text features.")
def image_first_then_text(fn):
    """the image features come first, then the text features"""
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    text = torch.tensor([[10.0], [20.0]])
    expect_equal(fn(image, text), torch.tensor([[1.0, 2.0, 10.0], [3.0, 4.0, 20.0]]))


@early_fusion.test(points=1, hint="Compare image_features.shape[0] with text_features.shape[0] and raise ValueError.")
def rejects_different_batch_sizes(fn):
    """different batch sizes raise ValueError"""
    expect_raises(ValueError, fn, torch.randn(4, 3), torch.randn(5, 3), what="early_fusion(4 images, 5 texts)")


# ---------------------------------------------------------------------------------------------------------------
late_fusion = SET.question(
    "LateFusionClassifier",
    "Late fusion: each modality votes",
    kind="class",
    forbidden=("mmcourse.models.fusion.LateFusionClassifier",),
    points=6,
)


@late_fusion.test(points=1, hint="Subclass nn.Module, call super().__init__(), create two nn.Linear layers.")
def has_two_linear_heads(cls):
    """is an nn.Module with image_head (Di→C) and text_head (Dt→C) linear layers"""
    model = cls(6, 4, 3)
    expect(isinstance(model, nn.Module), "LateFusionClassifier must subclass nn.Module")
    for name, in_dim in (("image_head", 6), ("text_head", 4)):
        head = getattr(model, name, None)
        expect(isinstance(head, nn.Linear), f"model.{name} must be an nn.Linear", got=type(head).__name__)
        expect(
            (head.in_features, head.out_features) == (in_dim, 3),
            f"model.{name} has the wrong size",
            expected=f"nn.Linear({in_dim}, 3)",
            got=f"nn.Linear({head.in_features}, {head.out_features})",
        )


@late_fusion.test(points=1, hint="forward returns one row of class scores per sample.")
def logits_shape(cls):
    """forward(image (B, Di), text (B, Dt)) returns logits (B, C)"""
    with seeded(0):
        model = cls(6, 4, 3)
        out = model(torch.randn(5, 6), torch.randn(5, 4))
        expect_tensor(out, shape=(5, 3), floating=True)


@late_fusion.test(points=2, hint="(self.image_head(image) + self.text_head(text)) / 2")
def averages_the_two_heads(cls):
    """the logits are the mean of the image head's and the text head's logits"""
    with seeded(0):
        model = cls(6, 4, 3)
        image, text = torch.randn(5, 6, generator=_gen(2)), torch.randn(5, 4, generator=_gen(3))
        with torch.no_grad():
            expected = (model.image_head(image) + model.text_head(text)) / 2
            expect_close(model(image, text), expected, what="the fused logits")


# ---------------------------------------------------------------------------------------------------------------
modality_dropout = SET.question(
    "modality_dropout",
    "Modality dropout: train for a missing modality",
    points=6,
    printed_in="01_overview: modality_dropout",
)


@modality_dropout.test(points=1, hint="Work on copies (x.clone()) and return (image, text).")
def returns_copies_of_the_same_shapes(fn):
    """returns (image, text) of unchanged shapes and leaves the inputs untouched"""
    image, text = torch.randn(6, 3, generator=_gen(4)), torch.randn(6, 2, generator=_gen(5))
    image_before, text_before = image.clone(), text.clone()
    out = fn(image, text, 0.5, generator=_gen(6))
    expect(isinstance(out, tuple) and len(out) == 2, "must return a tuple (image, text)", got=type(out).__name__)
    expect_tensor(out[0], shape=(6, 3), what="the returned image features")
    expect_tensor(out[1], shape=(6, 2), what="the returned text features")
    expect_equal(image, image_before, what="the input image features (modified in place?)")
    expect_equal(text, text_before, what="the input text features (modified in place?)")


@modality_dropout.test(points=1, hint="With p = 0 nothing is dropped.")
def p_zero_keeps_everything(fn):
    """p = 0 returns the features unchanged"""
    image, text = torch.randn(6, 3, generator=_gen(7)), torch.randn(6, 2, generator=_gen(8))
    new_image, new_text = fn(image, text, 0.0, generator=_gen(9))
    expect_equal(new_image, image, what="the image features")
    expect_equal(new_text, text, what="the text features")


@modality_dropout.test(points=1, hint="Draw who is dropped (u < p), then which side (50/50): never both.")
def p_one_drops_exactly_one_modality(fn):
    """p = 1: every sample loses exactly one of its two modalities"""
    image, text = torch.rand(40, 3, generator=_gen(10)) + 1, torch.rand(40, 2, generator=_gen(11)) + 1
    new_image, new_text = fn(image, text, 1.0, generator=_gen(12))
    image_gone = (new_image == 0).all(dim=1)
    text_gone = (new_text == 0).all(dim=1)
    expect_equal(image_gone ^ text_gone, torch.ones(40, dtype=torch.bool), what="'exactly one modality dropped'")


@modality_dropout.test(points=1, hint="Raise ValueError unless 0 <= p <= 1.")
def rejects_bad_probabilities(fn):
    """p outside [0, 1] raises ValueError"""
    expect_raises(ValueError, fn, torch.randn(2, 3), torch.randn(2, 3), 1.5, what="modality_dropout(p=1.5)")


# ---------------------------------------------------------------------------------------------------------------
train_dropout = SET.question(
    "train_with_modality_dropout",
    "Training an early-fusion model with modality dropout",
    points=10,
)


class _Spy(nn.Module):
    """A model that records what it is shown: logits are a learnable bias, the same for every row."""

    def __init__(self, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-1.0, 1.0, num_classes))
        self.calls = []

    def forward(self, image, text):
        self.calls.append((image.detach().clone(), text.detach().clone(), self.bias.detach().clone(), self.training))
        return self.bias.expand(image.shape[0], -1) + 0 * image.sum(dim=1, keepdim=True)


def _tagged_data(n, num_classes=3):
    """Rows that name their sample: image row i is (i + 1) * [1, 1, 1], text row i is -(i + 1) * [1, 1]."""
    ids = torch.arange(1, n + 1, dtype=torch.float32)
    labels = torch.arange(n) % num_classes
    return ids[:, None].repeat(1, 3), -ids[:, None].repeat(1, 2), labels


def _which_rows(image, text):
    """Sample index of each row the model saw (from whichever modality survived), and which side was zeroed."""
    image_gone, text_gone = (image == 0).all(dim=1), (text == 0).all(dim=1)
    from_image, from_text = image[:, 0] - 1, -text[:, 0] - 1
    index = torch.where(image_gone, from_text, from_image).round().long()
    return index, image_gone, text_gone


@train_dropout.test(points=1, hint="Return a list with one Python float (loss.item()) per step.")
def returns_one_float_per_step_and_trains(fn):
    """returns `steps` Python floats, updates the parameters, leaves the data untouched"""
    image, text, labels = _tagged_data(20)
    before = [t.clone() for t in (image, text, labels)]
    model = _Spy(3)
    start = model.bias.detach().clone()
    losses = fn(model, image, text, labels, p=0.5, steps=5, batch_size=4, lr=0.1, generator=_gen(0))
    expect(isinstance(losses, list) and len(losses) == 5, "must return a list of 5 losses", got=repr(type(losses)))
    expect(all(isinstance(x, float) for x in losses), "each loss must be a Python float (use loss.item())")
    expect(not torch.equal(model.bias.detach(), start), "the model's parameters did not change (optimizer.step()?)")
    for got, want, name in zip((image, text, labels), before, ("image", "text", "labels"), strict=True):
        expect_equal(got, want, what=f"the input {name} (modified in place?)")


@train_dropout.test(
    points=2,
    hint="Index the image rows, the text rows AND the labels with the same random indices; "
    "record the loss before optimizer.step().",
)
def p_zero_shows_real_minibatches_with_their_labels(fn):
    """p = 0: each step shows `batch_size` distinct samples, intact, and reports their cross-entropy"""
    image, text, labels = _tagged_data(24)
    model = _Spy(3)
    losses = fn(model, image, text, labels, p=0.0, steps=4, batch_size=6, lr=0.1, generator=_gen(1))
    expect(
        len(model.calls) == 4,
        "the model must be called once per step",
        expected="4 calls",
        got=f"{len(model.calls)} calls",
    )
    for step, (seen_image, seen_text, bias, _) in enumerate(model.calls):
        expect(
            seen_image.shape == (6, 3),
            f"step {step}: the model must see a batch of 6 rows",
            got=str(tuple(seen_image.shape)),
        )
        index, image_gone, text_gone = _which_rows(seen_image, seen_text)
        expect(not (image_gone | text_gone).any(), f"step {step}: with p = 0 nothing may be dropped")
        expect(len(set(index.tolist())) == 6, f"step {step}: the batch must hold 6 distinct samples")
        expect_equal(seen_text, text[index], what=f"step {step}: the text rows (not those of the image rows?)")
        want = F.cross_entropy(bias.expand(6, -1), labels[index]).item()
        expect_number(
            losses[step],
            want,
            atol=1e-5,
            what=f"step {step}: the reported loss (cross-entropy of this batch, before the update)",
        )


@train_dropout.test(points=2, hint="Call modality_dropout on every minibatch, before the model sees it.")
def p_one_drops_one_modality_of_every_sample(fn):
    """p = 1: every sample the model sees has exactly one of its two modalities zeroed"""
    image, text, labels = _tagged_data(30)
    model = _Spy(3)
    fn(model, image, text, labels, p=1.0, steps=5, batch_size=10, lr=0.1, generator=_gen(2))
    for step, (seen_image, seen_text, _, _) in enumerate(model.calls):
        _, image_gone, text_gone = _which_rows(seen_image, seen_text)
        expect_equal(
            image_gone ^ text_gone,
            torch.ones(10, dtype=torch.bool),
            what=f"step {step}: 'exactly one modality dropped' per sample",
        )


@train_dropout.test(points=1, hint="Cross-entropy of model(image, text) against labels, then backward() and step().")
def the_loss_goes_down(fn):
    """on an easy task the loss of the last steps is far below the first"""
    with seeded(0):
        image, labels = torch.randn(64, 4), torch.randint(0, 3, (64,))
        image = image + 3 * F.one_hot(labels, 4).float()
        text = torch.randn(64, 2)
        model = _TwoInputLinear(4, 2, 3)
        losses = fn(model, image, text, labels, p=0.0, steps=40, batch_size=16, lr=0.05, generator=_gen(3))
    expect_number(sum(losses[-5:]) / 5, high=0.5 * losses[0], what="the mean loss of the last 5 steps")


class _TwoInputLinear(nn.Module):
    def __init__(self, image_dim, text_dim, num_classes):
        super().__init__()
        self.linear = nn.Linear(image_dim + text_dim, num_classes)

    def forward(self, image, text):
        return self.linear(torch.cat([image, text], dim=1))


# ---------------------------------------------------------------------------------------------------------------
corruption = SET.question("accuracy_under_corruption", "Robustness: accuracy with one modality corrupted", points=6)


@corruption.test(points=1, hint="Return (logits.argmax(-1) == labels).float().mean().item().")
def level_zero_is_the_clean_accuracy(fn):
    """level 0 gives the clean accuracy, as a Python float"""
    with seeded(4):
        model = _TwoInputLinear(3, 2, 4)
        image, text, labels = torch.randn(50, 3), torch.randn(50, 2), torch.randint(0, 4, (50,))
        with torch.no_grad():
            want = (model(image, text).argmax(-1) == labels).float().mean().item()
    got = fn(model, image, text, labels, "image", 0.0, generator=_gen(5))
    expect(isinstance(got, float), "must return a Python float", got=type(got).__name__)
    expect_number(got, want, atol=1e-6, what="the accuracy at level 0")


@corruption.test(
    points=2, hint="(1 - level) * x + level * torch.randn(x.shape, generator=generator), on the named modality only."
)
def corrupts_only_the_named_modality(fn):
    """only the named modality changes; at level 1 it is pure N(0, 1) noise"""
    image, text, labels = torch.full((400, 3), 5.0), torch.full((400, 2), 7.0), torch.zeros(400, dtype=torch.long)
    for modality in ("image", "text"):
        model = _Spy(2)
        fn(model, image, text, labels, modality, 1.0, generator=_gen(6))
        seen_image, seen_text, _, _ = model.calls[-1]
        kept, noisy, clean = (seen_text, seen_image, text) if modality == "image" else (seen_image, seen_text, image)
        expect_equal(kept, clean, what=f"modality={modality!r}: the other modality")
        expect_number(noisy.mean(), low=-0.1, high=0.1, what=f"modality={modality!r}: mean of the corrupted features")
        expect_number(noisy.std(), low=0.9, high=1.1, what=f"modality={modality!r}: std of the corrupted features")


@corruption.test(points=1, hint="Raise ValueError unless modality is 'image' or 'text'.")
def rejects_unknown_modalities(fn):
    """an unknown modality raises ValueError"""
    expect_raises(
        ValueError,
        fn,
        _Spy(2),
        torch.ones(2, 3),
        torch.ones(2, 2),
        torch.zeros(2, dtype=torch.long),
        "audio",
        0.5,
        what="modality='audio'",
    )


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("dropout_experiment", "What modality dropout buys, and what it does not", points=3)
