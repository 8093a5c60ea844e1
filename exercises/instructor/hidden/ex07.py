"""Hidden tests of exercise set 7 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number
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


@HIDDEN.test("corrupt_pairs", points=1)
def follows_the_chapters_rotation(fn):
    """exactly the chapter's draw: one randperm, the first m chosen, each gets the next one's text"""
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


def _reference_recall(x_train, y_train, x_test, y_test):
    w = _reference_fit(x_train, y_train, 1e-3)
    sim = torch.nn.functional.normalize(x_test @ w, dim=-1) @ torch.nn.functional.normalize(y_test, dim=-1).T
    return float((sim.argmax(dim=1) == torch.arange(x_test.shape[0])).float().mean())


@HIDDEN.test("noisy_pair_experiment", points=2)
def clean_recall_matches_a_reference_and_noise_lowers_it(fn):
    """noise rate 0 gives the clean ridge map's Recall@1 (no draw involved); 75 % and 100 % wrong pairs much less"""
    x, y = linear_pairs(180, 30, noise=0.8)
    args = (x[:140], y[:140], x[140:], y[140:])
    clean, most, every = fn(*args, [0.0, 0.75, 1.0], generator=_gen(31))
    expect_number(clean, _reference_recall(*args), atol=1 / 40 + 1e-6, what="Recall@1 at noise rate 0")
    expect_number(most, low=0.0, high=clean - 0.3, what="Recall@1 at noise rate 0.75")
    expect_number(every, low=0.0, high=0.25, what="Recall@1 at noise rate 1 (chance: 1/40)")


def _weak_inputs(seed, clean=16, weak=112, test=60, noise=0.5):
    x, y = linear_pairs(clean + weak + test, seed, noise=noise)
    return (
        (x[:clean], y[:clean]),
        (x[clean : clean + weak], y[clean : clean + weak]),
        (x[clean + weak :], y[clean + weak :]),
    )


@HIDDEN.test("weak_pair_experiment", points=2)
def only_the_data_differ_between_runs(fn):
    """every run starts from the same initial model: no weak pairs, or no training, gives one recall for all"""
    clean, _, test = _weak_inputs(40)
    empty = (clean[0][:0], clean[1][:0])
    out = fn(clean, empty, test, [0.0, 0.5, 1.0], steps=30)
    for rate in (0.0, 0.5, 1.0):
        expect_number(out[rate], out["clean only"], atol=1e-6, what=f"Recall@1 at rate {rate} with no weak pairs")
    clean, weak, test = _weak_inputs(41)
    out = fn(clean, weak, test, [0.0, 1.0], steps=0)
    for rate in (0.0, 1.0):
        expect_number(out[rate], out["clean only"], atol=1e-6, what=f"Recall@1 at rate {rate} after 0 steps")


@HIDDEN.test("weak_pair_experiment", points=2)
def only_the_weak_pairs_are_corrupted(fn):
    """100 clean pairs + 12 weak ones all wrong: the clean majority keeps retrieval high"""
    clean, weak, test = _weak_inputs(42, clean=100, weak=12, noise=0.3)
    out = fn(clean, weak, test, [1.0], steps=100)
    expect_number(out[1.0], low=0.6, what="Recall@1 with 12 of 112 pairs wrong (all 112 corrupted: ~0.02)")


@HIDDEN.test("weak_pair_experiment", points=2)
def more_noise_lower_recall(fn):
    """other data and seed: Recall@1 falls from 0 to 50 to 100 % wrong added pairs"""
    out = fn(*_weak_inputs(43, clean=12, weak=96, noise=0.3), [0.0, 0.5, 1.0], steps=100, seed=3)
    expect(
        out[0.0] > out[0.5] + 0.1 > out[1.0] + 0.2,
        "Recall@1 should fall clearly as the added pairs get noisier",
        expected="R@1(0) > R@1(0.5) + 0.1 > R@1(1) + 0.2",
        got=f"{out[0.0]:.3f}, {out[0.5]:.3f}, {out[1.0]:.3f}",
    )


@HIDDEN.test("weak_pair_experiment", points=1)
def inputs_are_not_modified(fn):
    """the clean, weak and test tensors are unchanged by the call"""
    inputs = _weak_inputs(44)
    before = [t.clone() for pair in inputs for t in pair]
    fn(*inputs, [0.5], steps=5)
    for name, old, new in zip(
        ["x_clean", "y_clean", "x_weak", "y_weak", "x_test", "y_test"],
        before,
        [t for pair in inputs for t in pair],
        strict=True,
    ):
        expect_equal(new, old, what=name)
