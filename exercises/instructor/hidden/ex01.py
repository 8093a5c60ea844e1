"""Hidden tests of exercise set 1 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex01")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_modality_dropout(image, text, p, generator):
    u = torch.rand(image.shape[0], generator=generator)
    keep_image = ~(u < p / 2)
    keep_text = ~((u >= p / 2) & (u < p))
    return image * keep_image[:, None], text * keep_text[:, None]


@HIDDEN.test("early_fusion", points=1)
def matches_torch_cat_on_random_sizes(fn):
    """random batch and feature sizes; inputs not modified"""
    for seed, (b, di, dt) in enumerate([(1, 1, 7), (9, 16, 3), (3, 2, 2)]):
        image, text = torch.randn(b, di, generator=_gen(seed)), torch.randn(b, dt, generator=_gen(seed + 10))
        before = image.clone()
        expect_close(fn(image, text), torch.cat([before, text], dim=1), atol=0, rtol=0)
        expect_equal(image, before, what="the input image features")


@HIDDEN.test("LateFusionClassifier", points=1)
def gradients_reach_both_heads(cls):
    """a loss on the fused logits trains both heads"""
    torch.manual_seed(1)
    model = cls(5, 7, 4)
    logits = model(torch.randn(3, 5), torch.randn(3, 7))
    logits.sum().backward()
    for name in ("image_head", "text_head"):
        grad = getattr(model, name).weight.grad
        expect(grad is not None and grad.abs().sum() > 0, f"model.{name} receives no gradient")


@HIDDEN.test("LateFusionClassifier", points=1)
def a_silent_modality_leaves_the_other_in_charge(cls):
    """zeroing the text head's parameters halves the image head's logits"""
    torch.manual_seed(2)
    model = cls(4, 4, 2)
    with torch.no_grad():
        model.text_head.weight.zero_()
        model.text_head.bias.zero_()
        image, text = torch.randn(6, 4, generator=_gen(3)), torch.randn(6, 4, generator=_gen(4))
        expect_close(model(image, text), model.image_head(image) / 2)


@HIDDEN.test("modality_dropout", points=2)
def follows_the_specified_random_rule(fn):
    """exactly the specified rule: one torch.rand(B) draw, u < p/2 image, p/2 <= u < p text"""
    for seed, p in [(0, 0.3), (1, 0.8), (2, 0.5)]:
        image, text = torch.randn(32, 5, generator=_gen(seed)), torch.randn(32, 3, generator=_gen(seed + 1))
        want_image, want_text = _reference_modality_dropout(image, text, p, _gen(seed + 100))
        got_image, got_text = fn(image, text, p, generator=_gen(seed + 100))
        expect_close(got_image, want_image, atol=0, rtol=0, what=f"the image features (p={p})")
        expect_close(got_text, want_text, atol=0, rtol=0, what=f"the text features (p={p})")


@HIDDEN.test("modality_dropout", points=1)
def drops_each_modality_with_probability_p_over_two(fn):
    """over many samples each modality is dropped about p/2 of the time"""
    image, text = torch.ones(4000, 2), torch.ones(4000, 2)
    new_image, new_text = fn(image, text, 0.4, generator=_gen(7))
    expect_number((new_image == 0).all(dim=1).float().mean(), low=0.17, high=0.23, what="image drop rate")
    expect_number((new_text == 0).all(dim=1).float().mean(), low=0.17, high=0.23, what="text drop rate")
