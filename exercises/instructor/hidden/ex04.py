"""Hidden tests of exercise set 4 (instructor only: not in the package, not in the student release)."""

import copy
import math

import torch

from mmcourse.grading.expect import expect, expect_close, expect_number
from mmcourse.grading.public.ex04 import _tied_setup, _toy_setup
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


@HIDDEN.test("clip_loss", points=1)
def matches_the_reference_on_random_batches(fn):
    """random batches and temperatures agree with the reference"""
    for seed, (n, d, t) in enumerate([(2, 3, 0.07), (8, 16, 1.0), (5, 4, 0.2)]):
        image, text = torch.randn(n, d, generator=_gen(seed)), torch.randn(n, d, generator=_gen(seed + 3))
        expect_number(fn(image, text, temperature=t), _reference_clip_loss(image, text, t), atol=1e-4)


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


def _reference_sgd_step(image_encoder, text_encoder, t, images, texts, lr, max_scale=100.0):
    """An independent step on copies: autograd.grad of the symmetric loss, p - lr * grad, then clamp t."""
    image_encoder, text_encoder = copy.deepcopy(image_encoder), copy.deepcopy(text_encoder)
    t = t.detach().clone().requires_grad_(True)
    params = [*image_encoder.parameters(), *text_encoder.parameters(), t]
    image, text = _unit(image_encoder(images)), _unit(text_encoder(texts))
    logits = t.exp() * image @ text.T
    log_rows, log_cols = logits.log_softmax(dim=1).diagonal(), logits.log_softmax(dim=0).diagonal()
    loss = -(log_rows.mean() + log_cols.mean()) / 2
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        new = [p - lr * g for p, g in zip(params, grads)]
        new[-1] = new[-1].clamp(0.0, math.log(max_scale))
    return new


def _params(image_encoder, text_encoder, t):
    return [*image_encoder.parameters(), *text_encoder.parameters(), t]


@HIDDEN.test("clip_train_step", points=2)
def the_update_matches_a_reference_sgd_step(fn):
    """after one SGD step every parameter (towers and t) equals an independent reference step"""
    for seed, log_scale in ((20, math.log(1 / 0.07)), (21, math.log(99.0))):
        image_encoder, text_encoder, t, optimizer, images, texts = _toy_setup(seed, log_scale=log_scale, lr=0.5)
        want = _reference_sgd_step(image_encoder, text_encoder, t, images, texts, lr=0.5)
        fn(image_encoder, text_encoder, t, optimizer, images, texts)
        for k, (got, expected) in enumerate(zip(_params(image_encoder, text_encoder, t), want)):
            expect_close(got.detach(), expected, atol=1e-5, what=f"parameter {k} after the step (seed {seed})")


@HIDDEN.test("clip_train_step", points=1)
def old_gradients_are_cleared_first(fn):
    """gradients left over from earlier (in .grad) do not leak into the update"""
    image_encoder, text_encoder, t, optimizer, images, texts = _toy_setup(22, lr=0.5)
    want = _reference_sgd_step(image_encoder, text_encoder, t, images, texts, lr=0.5)
    for p in _params(image_encoder, text_encoder, t):
        p.grad = torch.full_like(p, 3.0)
    fn(image_encoder, text_encoder, t, optimizer, images, texts)
    for k, (got, expected) in enumerate(zip(_params(image_encoder, text_encoder, t), want)):
        expect_close(got.detach(), expected, atol=1e-5, what=f"parameter {k} (stale gradients in .grad)")


@HIDDEN.test("clip_train_step", points=1)
def the_temperature_moves_the_right_way(fn):
    """perfectly matched pairs raise t (sharper softmax); anti-matched pairs lower it"""
    start = math.log(1 / 0.07)
    for sign, direction in ((1.0, "up"), (-1.0, "down")):
        image_encoder, text_encoder, t, optimizer, images, texts = _tied_setup(23, sign, start, lr=0.1)
        fn(image_encoder, text_encoder, t, optimizer, images, texts)
        moved = t.item() - start
        expect(moved > 0 if sign > 0 else moved < 0, f"t must go {direction} when cos(image i, text i) = {sign:+.0f}",
               expected=f"t {'>' if sign > 0 else '<'} {start:.4f}", got=f"t = {t.item():.4f}")


@HIDDEN.test("clip_train_step", points=1)
def one_pair_has_nothing_to_learn(fn):
    """a batch of one pair has no negatives: loss 0 and no parameter moves"""
    image_encoder, text_encoder, t, optimizer, images, texts = _toy_setup(24, n=1, lr=0.5)
    before = [p.detach().clone() for p in _params(image_encoder, text_encoder, t)]
    expect_number(fn(image_encoder, text_encoder, t, optimizer, images, texts), 0.0, atol=1e-6, what="the loss")
    for k, (got, expected) in enumerate(zip(_params(image_encoder, text_encoder, t), before)):
        expect_close(got.detach(), expected, atol=1e-7, what=f"parameter {k}")


@HIDDEN.test("clip_train_step", points=1)
def max_scale_sets_the_cap(fn):
    """max_scale=20: a step that pushes t past ln 20 leaves it exactly at ln 20"""
    image_encoder, text_encoder, t, optimizer, images, texts = _tied_setup(25, 1.0, math.log(19.0))
    fn(image_encoder, text_encoder, t, optimizer, images, texts, max_scale=20.0)
    expect_number(t.item(), math.log(20.0), atol=1e-5, what="t")
