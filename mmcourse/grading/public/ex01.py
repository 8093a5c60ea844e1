"""Exercise set 1 (chapter 01_overview, article §1.1): fusing two modalities, and surviving the loss of one."""

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet
from mmcourse.train import seeded

SET = ExerciseSet("ex01", "Fusion: early, late, and a missing modality", chapter="01_overview", version=1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
early_fusion = SET.question(
    "early_fusion",
    "Early fusion: one feature vector per sample",
    forbidden=("mmcourse.models.fusion.EarlyFusionClassifier",),
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
modality_dropout = SET.question("modality_dropout", "Modality dropout: train for a missing modality")


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


@modality_dropout.test(points=1, hint="u < p/2 drops the image, p/2 <= u < p drops the text: never both.")
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
