"""Hidden tests of exercise set 4 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect, expect_close, expect_number
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex04")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _reference_clip_loss(image, text, temperature):
    logits = _unit(image.double()) @ _unit(text.double()).T / temperature
    n = logits.shape[0]
    log_p_i2t = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_p_t2i = logits - torch.logsumexp(logits, dim=0, keepdim=True)
    idx = torch.arange(n)
    return float(-(log_p_i2t[idx, idx].mean() + log_p_t2i[idx, idx].mean()) / 2)


@HIDDEN.test("clip_loss", points=2)
def matches_the_reference_on_random_batches(fn):
    """random batches and temperatures agree with the reference"""
    for seed, (n, d, t) in enumerate([(2, 3, 0.07), (8, 16, 1.0), (5, 4, 0.2)]):
        image, text = torch.randn(n, d, generator=_gen(seed)), torch.randn(n, d, generator=_gen(seed + 3))
        expect_number(fn(image, text, temperature=t), _reference_clip_loss(image, text, t), atol=1e-4)


@HIDDEN.test("clip_loss", points=1)
def default_temperature_is_0_07(fn):
    """the default temperature is 0.07"""
    image, text = torch.randn(6, 4, generator=_gen(10)), torch.randn(6, 4, generator=_gen(11))
    expect_number(fn(image, text), _reference_clip_loss(image, text, 0.07), atol=1e-4)


@HIDDEN.test("clip_loss", points=1)
def gradients_flow_to_both_inputs(fn):
    """the loss is differentiable with respect to both feature sets"""
    image = torch.randn(4, 5, generator=_gen(12)).requires_grad_()
    text = torch.randn(4, 5, generator=_gen(13)).requires_grad_()
    fn(image, text).backward()
    for name, x in (("image_features", image), ("text_features", text)):
        expect(x.grad is not None and x.grad.abs().sum() > 0, f"no gradient reaches {name}")


def _reference_classifier(prompts):
    return _unit(_unit(prompts.double()).mean(dim=1)).float()


@HIDDEN.test("zero_shot_classifier", points=1)
def classifier_matches_the_reference(fn):
    """random prompt embeddings agree with the reference"""
    for seed, shape in enumerate([(1, 1, 3), (4, 5, 8), (7, 2, 2)]):
        prompts = torch.randn(*shape, generator=_gen(seed))
        expect_close(fn(prompts), _reference_classifier(prompts), atol=1e-5)


@HIDDEN.test("zero_shot_classifier", points=1)
def each_template_counts_equally(fn):
    """a prompt embedding scaled up does not outweigh the others"""
    prompts = torch.randn(3, 4, 6, generator=_gen(20))
    scaled = prompts.clone()
    scaled[:, 0] *= 50
    expect_close(fn(scaled), fn(prompts), atol=1e-5, what="the classifier with one prompt scaled by 50")


def _reference_predict(images, classifier, temperature):
    logits = _unit(images.double()) @ _unit(classifier.double()).T / temperature
    probs = torch.softmax(logits, dim=-1)
    return probs.float(), probs.argmax(dim=-1)


@HIDDEN.test("zero_shot_predict", points=2)
def predictions_match_the_reference(fn):
    """random images and classes, several temperatures, agree with the reference"""
    for seed, t in enumerate([0.01, 0.1, 1.0]):
        images, classifier = torch.randn(6, 5, generator=_gen(seed)), torch.randn(4, 5, generator=_gen(seed + 4))
        want_probs, want_preds = _reference_predict(images, classifier, t)
        probs, preds = fn(images, classifier, temperature=t)
        expect_close(probs, want_probs, atol=1e-5, what=f"probs (temperature {t})")
        expect_close(preds, want_preds, atol=0, rtol=0, what=f"preds (temperature {t})")


@HIDDEN.test("zero_shot_predict", points=1)
def default_temperature_is_0_01(fn):
    """the default temperature is 0.01"""
    images, classifier = torch.randn(3, 4, generator=_gen(30)), torch.randn(5, 4, generator=_gen(31))
    probs, _ = fn(images, classifier)
    expect_close(probs, _reference_predict(images, classifier, 0.01)[0], atol=1e-5)
