"""Hidden tests of exercise set 1 (instructor only: not in the package, not in the student release)."""

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex01")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


@HIDDEN.test("modality_dropout", points=1)
def zeroes_whole_rows_and_draws_from_the_generator(fn):
    """dropped rows are all zero, the rest bit-for-bit intact; the same generator seed gives the same draw"""
    image, text = torch.randn(64, 5, generator=_gen(0)) + 10, torch.randn(64, 3, generator=_gen(1)) + 10
    state = torch.get_rng_state()
    first = fn(image, text, 0.6, generator=_gen(100))
    again = fn(image, text, 0.6, generator=_gen(100))
    expect(torch.equal(torch.get_rng_state(), state), "draw from `generator`, not from torch's global generator")
    for got, rerun, source, name in zip(first, again, (image, text), ("image", "text"), strict=True):
        expect_equal(got, rerun, what=f"the {name} features of a second call with the same generator seed")
        gone = (got == 0).all(dim=1)
        expect_equal(got[~gone], source[~gone], what=f"the kept {name} rows")
        expect(((got == 0) == gone[:, None]).all(), f"the {name} features: a row is dropped whole or not at all")
    other = fn(image, text, 0.6, generator=_gen(101))
    expect(not torch.equal(other[0], first[0]), "another generator seed should give another draw")


@HIDDEN.test("modality_dropout", points=1)
def drops_each_modality_with_probability_p_over_two(fn):
    """over many samples each modality is dropped about p/2 of the time"""
    image, text = torch.ones(4000, 2), torch.ones(4000, 2)
    new_image, new_text = fn(image, text, 0.4, generator=_gen(7))
    expect_number((new_image == 0).all(dim=1).float().mean(), low=0.17, high=0.23, what="image drop rate")
    expect_number((new_text == 0).all(dim=1).float().mean(), low=0.17, high=0.23, what="text drop rate")


class _Recorder(nn.Module):
    """Constant logits (a learnable bias); records what it was shown, in which mode, with autograd on or off."""

    def __init__(self, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.calls = []

    def forward(self, image, text):
        self.calls.append((image.detach().clone(), text.detach().clone(), self.training, torch.is_grad_enabled()))
        return self.bias.expand(image.shape[0], -1) + 0 * image.sum(dim=1, keepdim=True)


class _EarlyFusionMLP(nn.Module):
    def __init__(self, image_dim, text_dim, num_classes, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(image_dim + text_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, image, text):
        return self.net(torch.cat([image, text], dim=1))


def _redundant_task(n, seed):
    """Both modalities name the class (4 classes), each through its own random class means plus noise."""
    g = _gen(seed)
    image_means, text_means = 2 * torch.randn(4, 6, generator=g), 2 * torch.randn(4, 5, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    image = image_means[labels] + 0.5 * torch.randn(n, 6, generator=g)
    text = text_means[labels] + 0.5 * torch.randn(n, 5, generator=g)
    return image, text, labels


def _accuracy(model, image, text, labels):
    with torch.no_grad():
        return (model(image, text).argmax(-1) == labels).float().mean().item()


@HIDDEN.test("train_with_modality_dropout", points=2)
def dropout_training_survives_a_missing_modality(fn):
    """trained with p = 0.5, the model answers from either modality alone (the other zeroed)"""
    image, text, labels = _redundant_task(600, 11)
    torch.manual_seed(12)
    model = _EarlyFusionMLP(6, 5, 4)
    fn(model, image[:400], text[:400], labels[:400], p=0.5, steps=150, batch_size=32, lr=0.01, generator=_gen(13))
    test = image[400:], text[400:], labels[400:]
    expect_number(_accuracy(model, *test), low=0.95, what="clean test accuracy")
    expect_number(_accuracy(model, torch.zeros_like(test[0]), test[1], test[2]), low=0.9, what="accuracy, no image")
    expect_number(_accuracy(model, test[0], torch.zeros_like(test[1]), test[2]), low=0.9, what="accuracy, no text")


@HIDDEN.test("train_with_modality_dropout", points=1)
def drops_each_modality_about_p_over_two_of_the_time(fn):
    """over many steps at p = 0.4: image dropped ~0.2, text ~0.2, never both, drawn afresh each step"""
    n = 50
    ids = torch.arange(1, n + 1, dtype=torch.float32)
    image, text, labels = ids[:, None].repeat(1, 2), -ids[:, None].repeat(1, 2), torch.arange(n) % 3
    model = _Recorder(3)
    fn(model, image, text, labels, p=0.4, steps=100, batch_size=40, lr=0.01, generator=_gen(14))
    seen_image = torch.cat([c[0] for c in model.calls])
    seen_text = torch.cat([c[1] for c in model.calls])
    image_gone, text_gone = (seen_image == 0).all(dim=1), (seen_text == 0).all(dim=1)
    expect(not (image_gone & text_gone).any(), "a sample lost both modalities")
    sample = torch.where(image_gone, -seen_text[:, 0], seen_image[:, 0]).round().long()
    fates = {(int(i), bool(a), bool(b)) for i, a, b in zip(sample, image_gone, text_gone, strict=True)}
    varied = sum(len({(a, b) for i, a, b in fates if i == k}) > 1 for k in range(1, n + 1))
    expect(varied >= 0.9 * n, "draw the dropout afresh in every step, not once for the whole data set")
    expect_number(image_gone.float().mean(), low=0.17, high=0.23, what="image drop rate")
    expect_number(text_gone.float().mean(), low=0.17, high=0.23, what="text drop rate")
    expect(all(c[2] for c in model.calls), "the model must be in training mode (model.train()) while it trains")


@HIDDEN.test("train_with_modality_dropout", points=1)
def reproducible_with_its_generator(fn):
    """the same generator seed gives the same losses; torch's global generator is left alone"""
    image, text, labels = _redundant_task(80, 15)
    runs = []
    state = torch.get_rng_state()
    for seed in (16, 16, 17):
        torch.set_rng_state(state)
        model = _EarlyFusionMLP(6, 5, 4)
        after_init = torch.get_rng_state()
        runs.append(fn(model, image, text, labels, p=0.5, steps=6, batch_size=8, lr=0.01, generator=_gen(seed)))
        expect(torch.equal(torch.get_rng_state(), after_init), "draw from `generator`, not from torch's global one")
    expect(runs[0] == runs[1], "two runs with the same generator seed gave different losses")
    expect(runs[0] != runs[2], "runs with different generator seeds gave identical losses")


@HIDDEN.test("accuracy_under_corruption", points=1)
def evaluates_in_eval_mode_without_autograd(fn):
    """the model runs in eval mode, under torch.no_grad, and the inputs stay untouched"""
    model = _Recorder(2).train()
    image, text, labels = torch.ones(8, 3), torch.ones(8, 2), torch.zeros(8, dtype=torch.long)
    before = image.clone(), text.clone()
    fn(model, image, text, labels, "text", 0.7, generator=_gen(18))
    _, _, training, grad_enabled = model.calls[-1]
    expect(not training, "call model.eval() before evaluating")
    expect(not grad_enabled, "evaluate under torch.no_grad()")
    expect_equal(image, before[0], what="the input image features")
    expect_equal(text, before[1], what="the input text features")


@HIDDEN.test("accuracy_under_corruption", points=1)
def mixes_signal_and_noise_in_proportion(fn):
    """at level 0.25 the features are 0.75 x + 0.25 noise: mean and spread as predicted"""
    image, text, labels = torch.full((2000, 2), 4.0), torch.ones(2000, 2), torch.zeros(2000, dtype=torch.long)
    model = _Recorder(2)
    fn(model, image, text, labels, "image", 0.25, generator=_gen(19))
    noisy = model.calls[-1][0]
    expect_number(noisy.mean(), low=2.95, high=3.05, what="mean of the corrupted image features (0.75 * 4)")
    expect_number(noisy.std(), low=0.23, high=0.27, what="std of the corrupted image features (0.25)")
