"""Hidden tests of exercise set 7 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect_close, expect_equal, expect_number
from mmcourse.grading.public.ex07 import linear_pairs
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex07")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_corrupt(n, rate, generator):
    m = int(rate * n)
    chosen = torch.randperm(n, generator=generator)[:m]
    out = torch.arange(n)
    if m >= 2:
        out[chosen] = chosen[torch.arange(1, m + 1) % m]
    return out


@HIDDEN.test("corrupt_pairs", points=2)
def follows_the_specified_rotation(fn):
    """exactly: one randperm, the first m chosen, each gets the next one's text"""
    for seed, (n, rate) in enumerate([(10, 0.3), (25, 0.8), (6, 1.0), (9, 0.15)]):
        expect_equal(
            fn(n, rate, generator=_gen(seed)),
            _reference_corrupt(n, rate, _gen(seed)),
            what=f"corrupt_pairs({n}, {rate})",
        )


def _reference_flip(images, tokens, flip, left_id, right_id):
    new_images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    swapped = tokens.clone()
    swapped[tokens == left_id] = right_id
    swapped[tokens == right_id] = left_id
    return new_images, torch.where(flip[:, None], swapped, tokens)


@HIDDEN.test("flip_pairs", points=1)
def matches_the_reference_on_random_batches(fn):
    """random images, captions and flags agree with the reference"""
    g = _gen(7)
    images, tokens = torch.randn(6, 3, 4, 5, generator=g), torch.randint(0, 6, (6, 9), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    want = _reference_flip(images, tokens, flip, 1, 2)
    got = fn(images, tokens, flip, 1, 2)
    expect_equal(got[0], want[0], what="the images")
    expect_equal(got[1], want[1], what="the captions")


@HIDDEN.test("flip_pairs", points=1)
def inputs_untouched_and_double_flip_is_identity(fn):
    """the inputs are not modified, and flipping twice gives the original back"""
    g = _gen(8)
    images, tokens = torch.randn(3, 2, 3, 3, generator=g), torch.randint(0, 5, (3, 4), generator=g)
    before = images.clone(), tokens.clone()
    flip = torch.tensor([True, False, True])
    once = fn(images, tokens, flip, 3, 4)
    expect_equal(images, before[0], what="the input images after the call")
    expect_equal(tokens, before[1], what="the input captions after the call")
    twice = fn(once[0], once[1], flip, 3, 4)
    expect_equal(twice[0], images, what="images flipped twice")
    expect_equal(twice[1], tokens, what="captions flipped twice")


def _reference_fit(x, y, ridge):
    x, y = x.double(), y.double()
    return torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y).float()


@HIDDEN.test("fit_linear_map", points=1)
def map_matches_the_closed_form(fn):
    """random data and ridge values agree with the closed form"""
    for seed, ridge in enumerate([1e-3, 1.0, 10.0]):
        x, y = linear_pairs(25, seed + 10, noise=1.0)
        expect_close(fn(x, y, ridge=ridge), _reference_fit(x, y, ridge), atol=1e-3, rtol=1e-3)


@HIDDEN.test("fit_linear_map", points=1)
def default_ridge_is_1e_3(fn):
    """the default ridge is 1e-3"""
    x, y = linear_pairs(12, 20, noise=1.0)
    expect_close(fn(x, y), _reference_fit(x, y, 1e-3), atol=1e-3, rtol=1e-3)


def _reference_experiment(x_train, y_train, x_test, y_test, rates, generator):
    out = []
    for rate in rates:
        perm = _reference_corrupt(x_train.shape[0], rate, generator)
        w = _reference_fit(x_train, y_train[perm], 1e-3)
        pred = torch.nn.functional.normalize(x_test @ w, dim=-1)
        sim = pred @ torch.nn.functional.normalize(y_test, dim=-1).T
        out.append(float((sim.argmax(dim=1) == torch.arange(x_test.shape[0])).float().mean()))
    return out


@HIDDEN.test("noisy_pair_experiment", points=2)
def recalls_match_the_reference(fn):
    """three noise rates, one generator: the same recalls as the reference (within 2 of 40 test pairs)"""
    x, y = linear_pairs(180, 30, noise=0.8)
    args = (x[:140], y[:140], x[140:], y[140:], [0.0, 0.4, 0.9])
    want = _reference_experiment(*args, _gen(31))
    got = fn(*args, generator=_gen(31))
    for rate, w, g in zip(args[-1], want, got, strict=True):
        expect_number(g, w, atol=2 / 40 + 1e-6, what=f"Recall@1 at noise rate {rate}")
