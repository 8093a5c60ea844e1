"""Hidden tests of exercise set 5 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect_close, expect_equal
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex05")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_mask_tokens(ids, mask_id, vocab_size, special_ids, mask_prob, generator):
    selected = torch.rand(ids.shape, generator=generator) < mask_prob
    for s in special_ids:
        selected &= ids != s
    action = torch.rand(ids.shape, generator=generator)
    random_tokens = torch.randint(vocab_size, ids.shape, generator=generator)
    masked = ids.clone()
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    masked[to_mask] = mask_id
    masked[to_random] = random_tokens[to_random]
    labels = torch.full_like(ids, -100)
    labels[selected] = ids[selected]
    return masked, labels


@HIDDEN.test("mask_tokens", points=2)
def follows_the_specified_random_draws(fn):
    """exactly the specified three draws: selection, action, random tokens"""
    for seed, (shape, prob) in enumerate([((3, 9), 0.15), ((5, 20), 0.5), ((1, 7), 0.9)]):
        ids = torch.randint(0, 30, shape, generator=_gen(seed))
        want = _reference_mask_tokens(ids, 4, 30, (0, 1), prob, _gen(seed + 50))
        got = fn(ids, 4, 30, (0, 1), mask_prob=prob, generator=_gen(seed + 50))
        expect_equal(got[0], want[0], what=f"masked_ids (mask_prob={prob})")
        expect_equal(got[1], want[1], what=f"labels (mask_prob={prob})")


@HIDDEN.test("mask_tokens", points=1)
def mask_prob_zero_selects_nothing(fn):
    """mask_prob = 0 leaves everything unchanged and every label -100"""
    ids = torch.randint(5, 40, (4, 6), generator=_gen(9))
    masked, labels = fn(ids, 4, 40, (), mask_prob=0.0, generator=_gen(10))
    expect_equal(masked, ids, what="masked_ids")
    expect_equal(labels, torch.full_like(ids, -100), what="labels")


def _reference_random_masking(patches, mask_ratio, generator):
    b, n, d = patches.shape
    keep = int(n * (1 - mask_ratio))
    noise = torch.rand(b, n, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = torch.gather(patches, 1, ids_keep[:, :, None].expand(b, keep, d))
    mask = torch.ones(b, n)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


@HIDDEN.test("random_masking", points=2)
def follows_the_specified_shuffle(fn):
    """exactly the specified noise -> argsort -> keep-first-K procedure"""
    for seed, (shape, ratio) in enumerate([((2, 16, 3), 0.75), ((3, 10, 1), 0.5), ((1, 5, 4), 0.0)]):
        patches = torch.randn(*shape, generator=_gen(seed))
        want = _reference_random_masking(patches, ratio, _gen(seed + 20))
        got = fn(patches, ratio, generator=_gen(seed + 20))
        for name, w, g in zip(("visible", "mask", "ids_restore"), want, got, strict=True):
            expect_close(g, w, atol=0, rtol=0, what=f"{name} (mask_ratio={ratio})")


def _reference_hard_negatives(similarity, generator):
    weights = torch.softmax(similarity.float(), dim=1) + 1e-6
    weights.fill_diagonal_(0)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


@HIDDEN.test("sample_hard_negatives", points=2)
def follows_the_specified_sampling(fn):
    """exactly softmax + 1e-6, zeroed diagonal, one torch.multinomial draw"""
    for seed, b in enumerate([2, 5, 9]):
        sim = torch.randn(b, b, generator=_gen(seed)) * 2
        expect_equal(
            fn(sim, generator=_gen(seed + 30)),
            _reference_hard_negatives(sim, _gen(seed + 30)),
            what=f"the negatives of a {b} x {b} batch",
        )
