"""Exercise set 7 (chapter 07_challenges, article §6.2): few, augmented and noisy pairs; weak supervision."""

import torch

from mmcourse.grading.expect import expect, expect_equal, expect_number, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex07", "Data sparsity: augmentation and noisy pairs", chapter="07_challenges", version=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_pairs(n: int, seed: int, noise: float = 0.05):
    """Paired features with a linear relation: x (n, 8), y = x @ W + noise (n, 6)."""
    g = _gen(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 6, generator=g)
    return x, x @ w + noise * torch.randn(n, 6, generator=g)


# ---------------------------------------------------------------------------------------------------------------
corrupt_q = SET.question(
    "corrupt_pairs",
    "Simulate noisy (weakly paired) data",
    forbidden=("mmcourse.labs.ch07_sparsity.corrupt_pairing",),
    points=4,
    printed_in="07_challenges: mismatch",
)


@corrupt_q.test(points=1, hint="Start from torch.arange(num_pairs) and permute some entries.")
def returns_a_permutation(fn):
    """returns a long permutation of 0..N-1"""
    out = expect_tensor(fn(12, 0.5, generator=_gen(0)), shape=(12,), dtype=torch.long)
    expect_equal(torch.sort(out).values, torch.arange(12), what="the sorted result")


@corrupt_q.test(points=1, hint="m = int(noise_rate * N) positions, rotated among themselves: none keeps its text.")
def corrupts_exactly_m_pairs(fn):
    """noise_rate 0.5 of 10 pairs: exactly 5 images get a wrong text"""
    out = fn(10, 0.5, generator=_gen(1))
    expect_number(int((out != torch.arange(10)).sum()), 5, atol=0, what="the number of corrupted pairs")


@corrupt_q.test(points=1, hint="Raise ValueError unless 0 <= noise_rate <= 1.")
def rejects_bad_rates(fn):
    """noise_rate outside [0, 1] raises ValueError"""
    expect_raises(ValueError, fn, 5, 1.5, what="corrupt_pairs(noise_rate=1.5)")


# ---------------------------------------------------------------------------------------------------------------
flip_q = SET.question("flip_pairs", "A caption-aware horizontal flip", points=5)


def _flip_inputs():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float).reshape(2, 1, 2, 3)
    tokens = torch.tensor([[5, 10, 7, 11], [10, 6, 11, 8]])  # 10 = "left", 11 = "right"
    return images, tokens


@flip_q.test(points=1, hint="Samples with flip False are returned unchanged.")
def unflipped_samples_are_unchanged(fn):
    """samples whose flip flag is False keep their image and caption"""
    images, tokens = _flip_inputs()
    new_images, new_tokens = fn(images, tokens, torch.tensor([False, False]), 10, 11)
    expect_equal(new_images, images, what="the images")
    expect_equal(new_tokens, tokens, what="the captions")


@flip_q.test(points=1, hint="A horizontal flip reverses the last dim (width): image.flip(-1).")
def flipped_images_are_mirrored(fn):
    """a flipped image is mirrored left-right"""
    images, tokens = _flip_inputs()
    new_images, _ = fn(images, tokens, torch.tensor([True, False]), 10, 11)
    expect_equal(new_images[0], images[0].flip(-1), what="the flipped image")
    expect_equal(new_images[1], images[1], what="the unflipped image")


@flip_q.test(points=1, hint="Swap left_id and right_id in the flipped captions only (use the original tokens).")
def left_and_right_swap_in_flipped_captions(fn):
    """'left' and 'right' swap in flipped captions, and only there"""
    images, tokens = _flip_inputs()
    _, new_tokens = fn(images, tokens, torch.tensor([False, True]), 10, 11)
    expect_equal(new_tokens, torch.tensor([[5, 10, 7, 11], [11, 6, 10, 8]]), what="the captions")


# ---------------------------------------------------------------------------------------------------------------
fit_q = SET.question("fit_linear_map", "Ridge regression from one modality to the other", points=5)


@fit_q.test(points=1, hint="W has one row per x feature and one column per y feature.")
def map_shape(fn):
    """x (N, Dx), y (N, Dy) give W (Dx, Dy)"""
    x, y = linear_pairs(30, 0)
    expect_tensor(fn(x, y), shape=(8, 6), floating=True)


@fit_q.test(points=1, hint="Solve (x.T @ x + ridge * I) W = x.T @ y with torch.linalg.solve.")
def recovers_an_exact_linear_map(fn):
    """noise-free pairs and a tiny ridge: x @ W reproduces y"""
    x, y = linear_pairs(40, 1, noise=0.0)
    w = fn(x, y, ridge=1e-8)
    expect_number(float((x @ w - y).abs().max()), low=0.0, high=1e-3, what="the largest error of x @ W")


@fit_q.test(points=1, hint="Raise ValueError when x and y have different numbers of rows.")
def rejects_unpaired_inputs(fn):
    """different numbers of rows raise ValueError"""
    expect_raises(ValueError, fn, torch.randn(5, 3), torch.randn(4, 2), what="fit_linear_map(5 rows, 4 rows)")


# ---------------------------------------------------------------------------------------------------------------
exp_q = SET.question("noisy_pair_experiment", "How much do noisy pairs hurt?", points=5)


def _experiment_inputs():
    x, y = linear_pairs(260, 3, noise=0.5)
    return x[:200], y[:200], x[200:], y[200:]


@exp_q.test(points=1, hint="One Python float per noise rate, in the same order.")
def one_recall_per_rate(fn):
    """returns a list with one float in [0, 1] per noise rate"""
    out = fn(*_experiment_inputs(), [0.0, 0.5], generator=_gen(4))
    expect(isinstance(out, list) and len(out) == 2, "must return a list of 2 floats", got=repr(type(out).__name__))
    for value in out:
        expect(
            isinstance(value, float) and 0.0 <= value <= 1.0, "each entry must be a float in [0, 1]", got=repr(value)
        )


@exp_q.test(points=1, hint="With clean pairs the ridge map retrieves almost every test text.")
def clean_pairs_retrieve_well(fn):
    """noise rate 0: Recall@1 on the test pairs is high (>= 0.8)"""
    (recall,) = fn(*_experiment_inputs(), [0.0], generator=_gen(5))
    expect_number(recall, low=0.8, what="Recall@1 without noise")


@exp_q.test(points=1, hint="Train on texts permuted by corrupt_pairs; evaluate on the clean test pairs.")
def fully_shuffled_pairs_retrieve_poorly(fn):
    """noise rate 1 (every pair wrong): Recall@1 drops far below the clean one"""
    clean, shuffled = fn(*_experiment_inputs(), [0.0, 1.0], generator=_gen(6))
    expect(
        shuffled < clean - 0.3,
        "Recall@1 with all pairs corrupted should be much lower",
        expected=f"< {clean - 0.3:.3f}",
        got=f"{shuffled:.3f}",
    )


# ---------------------------------------------------------------------------------------------------------------
weak_q = SET.question(
    "weak_pair_experiment",
    "Weak supervision: clean pairs plus cheap, noisy ones",
    forbidden=(
        "mmcourse.labs.ch07_sparsity.corrupt_pairing",
        "mmcourse.labs.ch07_sparsity.weak_pairs",
        "mmcourse.labs.ch07_sparsity.score_pairs",
        "mmcourse.labs.ch07_sparsity.train_on_pairs",
    ),
    points=12,
)


def weak_inputs(seed: int, clean: int = 16, weak: int = 112, test: int = 60, noise: float = 0.5):
    """(x, y) tuples of clean, weak and test pairs drawn from one linear relation."""
    x, y = linear_pairs(clean + weak + test, seed, noise=noise)
    return (
        (x[:clean], y[:clean]),
        (x[clean : clean + weak], y[clean : clean + weak]),
        (x[clean + weak :], y[clean + weak :]),
    )


@weak_q.test(points=1, hint='Return {"clean only": R@1, rate: R@1, ...}: one Python float in [0, 1] per run.')
def one_recall_per_run(fn):
    """returns {"clean only": float, rate: float, ...} with every recall in [0, 1]"""
    out = fn(*weak_inputs(0), [0.0, 1.0], steps=20)
    expect(isinstance(out, dict), "must return a dict", got=type(out).__name__)
    expect(
        sorted(map(str, out)) == ["0.0", "1.0", "clean only"],
        'keys must be "clean only" and each rate',
        expected="['clean only', 0.0, 1.0]",
        got=repr(list(out)),
    )
    for key, value in out.items():
        expect(
            isinstance(value, float) and 0.0 <= value <= 1.0, f"out[{key!r}] must be a float in [0, 1]", got=repr(value)
        )


@weak_q.test(points=2, hint="Train on the clean pairs concatenated with the weak ones; rate 0 means all of them right.")
def correct_added_pairs_help(fn):
    """16 clean pairs + 112 added correct ones retrieve far better than the 16 alone"""
    out = fn(*weak_inputs(0), [0.0], steps=100)
    expect(
        out[0.0] >= out["clean only"] + 0.15,
        "adding 112 correct pairs should raise test Recall@1 by >= 0.15",
        expected=f">= {out['clean only'] + 0.15:.3f}",
        got=f"{out[0.0]:.3f} (clean only: {out['clean only']:.3f})",
    )


@weak_q.test(points=2, hint="Corrupt the weak pairs with corrupt_pairs(len(weak), rate, generator) before training.")
def wrong_added_pairs_hurt(fn):
    """112 added pairs that are all wrong make the model worse than the 16 clean pairs alone"""
    out = fn(*weak_inputs(1), [1.0], steps=100)
    expect(
        out[1.0] < out["clean only"] - 0.1,
        "added pairs that are all mismatched should lower test Recall@1 below the clean pairs alone",
        expected=f"< {out['clean only'] - 0.1:.3f}",
        got=f"{out[1.0]:.3f}",
    )


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("weak_pairs_noise", "Experiment: when do cheap, noisy pairs stop paying?", points=3)
