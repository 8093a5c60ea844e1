"""Hidden tests of exercise set 6 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_raises
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex06")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_ranks(sim):
    return torch.tensor([1 + sum(int(sim[i, j] > sim[i, i]) for j in range(sim.shape[1])) for i in range(sim.shape[0])])


@HIDDEN.test("match_ranks", points=1)
def matches_a_loop_on_random_matrices(fn):
    """random similarity matrices agree with a loop"""
    for seed, n in enumerate([1, 6, 13]):
        sim = torch.randn(n, n, generator=_gen(seed))
        expect_equal(fn(sim), _reference_ranks(sim))


@HIDDEN.test("match_ranks", points=1)
def rejects_non_square_matrices(fn):
    """a non-square matrix raises ValueError"""
    expect_raises(ValueError, fn, torch.randn(3, 4), what="match_ranks((3, 4))")


@HIDDEN.test("recall_at_k", points=2)
def matches_the_reference_for_several_k(fn):
    """random matrices, k = 1, 5, 10, agree with the reference"""
    for seed, n in enumerate([4, 20, 50]):
        sim = torch.randn(n, n, generator=_gen(seed + 10))
        ranks = _reference_ranks(sim)
        for k in (1, 5, 10):
            expect_number(fn(sim, k), float((ranks <= k).float().mean()), atol=1e-6, what=f"Recall@{k}, N={n}")


def _reference_retrieve(queries, gallery, k):
    q = queries.double() / queries.double().norm(dim=-1, keepdim=True)
    g = gallery.double() / gallery.double().norm(dim=-1, keepdim=True)
    sim = q @ g.T
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(sim, 1, order).float(), order


@HIDDEN.test("retrieve", points=2)
def matches_the_reference(fn):
    """random queries and galleries agree with the reference"""
    for seed, (nq, ng, d, k) in enumerate([(1, 1, 3, 1), (5, 30, 8, 10), (7, 12, 2, 12)]):
        queries, gallery = torch.randn(nq, d, generator=_gen(seed)), torch.randn(ng, d, generator=_gen(seed + 40))
        want_scores, want_indices = _reference_retrieve(queries, gallery, k)
        scores, indices = fn(queries, gallery, k)
        expect_close(scores, want_scores, atol=1e-5, what="scores")
        expect_equal(indices, want_indices, what="indices")


@HIDDEN.test("retrieve", points=1)
def ties_keep_the_lower_index_first(fn):
    """gallery items with equal scores come in increasing index order; k > G raises ValueError"""
    gallery = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    _, indices = fn(torch.tensor([[1.0, 0.0]]), gallery, 4)
    expect_equal(indices, torch.tensor([[1, 2, 4, 0]]), what="the order of tied items")
    expect_raises(ValueError, fn, torch.randn(1, 2), gallery, 6, what="retrieve(k=6) from 5 items")


# ---------------------------------------------------------------------------------------------------------------
def _loop_ranks(sim, mask):
    """Sort each row, best first; the rank is 1 + the number of wrong items strictly above the best correct one."""
    ranks = []
    for q in range(sim.shape[0]):
        best = max(float(sim[q, j]) for j in range(sim.shape[1]) if mask[q, j])
        ranks.append(1 + sum(1 for j in range(sim.shape[1]) if not mask[q, j] and float(sim[q, j]) > best))
    return torch.tensor(ranks)


def _random_positives(q, g, seed):
    mask = torch.rand(q, g, generator=_gen(seed)) < 0.15
    mask[torch.arange(q), torch.randint(g, (q,), generator=_gen(seed + 1))] = True  # at least one each
    return mask


@HIDDEN.test("recall_with_positives", points=2)
def several_positives_match_a_loop(fn):
    """random (Q, G) matrices with random sets of correct items agree with a loop, for several k"""
    for seed, (q, g) in enumerate([(1, 3), (7, 20), (30, 11)]):
        sim, mask = torch.randn(q, g, generator=_gen(seed + 60)), _random_positives(q, g, seed + 70)
        ranks, recalls = fn(sim, mask, (1, 2, 5))
        want = _loop_ranks(sim, mask)
        expect_equal(ranks, want, what=f"ranks ({q} x {g})")
        for k in (1, 2, 5):
            expect_number(recalls[k], float((want <= k).float().mean()), atol=1e-6, what=f"Recall@{k} ({q} x {g})")


@HIDDEN.test("recall_with_positives", points=1)
def invariant_to_gallery_order_and_monotone_rescaling(fn):
    """shuffling the gallery (with its mask) or applying exp(3 x) to the scores changes no rank"""
    sim, mask = torch.randn(8, 15, generator=_gen(80)), _random_positives(8, 15, 81)
    ranks, _ = fn(sim, mask, (1,))
    perm = torch.randperm(15, generator=_gen(82))
    expect_equal(fn(sim[:, perm], mask[:, perm], (1,))[0], ranks, what="ranks after shuffling the gallery")
    expect_equal(fn(torch.exp(3 * sim), mask, (1,))[0], ranks, what="ranks after exp(3 x)")


@HIDDEN.test("recall_with_positives", points=1)
def more_positives_never_hurt_and_recall_grows_with_k(fn):
    """adding correct items never raises a rank; Recall@k grows with k and is 1 for k >= G"""
    sim, mask = torch.randn(10, 9, generator=_gen(83)), _random_positives(10, 9, 84)
    ranks, recalls = fn(sim, mask, (1, 2, 4, 9, 12))
    more = mask | (torch.rand(10, 9, generator=_gen(85)) < 0.3)
    expect(bool((fn(sim, more, (1,))[0] <= ranks).all()), "adding correct items made a rank worse")
    values = [recalls[k] for k in (1, 2, 4, 9, 12)]
    expect(values == sorted(values), "Recall@k must not decrease with k", got=str(values))
    expect_number(recalls[9], 1.0, what="Recall@G")
    expect_number(recalls[12], 1.0, what="Recall@k for k > G")


@HIDDEN.test("recall_with_positives", points=1)
def both_directions_of_a_multi_caption_gallery(fn):
    """images with 3 captions each: image->text (mask) and text->image (indices) agree with the loop"""
    sim = torch.randn(5, 15, generator=_gen(86))
    text_to_image = torch.arange(5).repeat_interleave(3)
    image_has_text = text_to_image[None, :] == torch.arange(5)[:, None]
    expect_equal(fn(sim, image_has_text, (1,))[0], _loop_ranks(sim, image_has_text), what="image->text ranks")
    expect_equal(fn(sim.T, text_to_image, (1,))[0], _loop_ranks(sim.T, image_has_text.T), what="text->image ranks")


@HIDDEN.test("recall_with_positives", points=1)
def rejects_malformed_positives(fn):
    """indices out of range, a mask of the wrong shape, or a 1-d similarity raise ValueError"""
    sim = torch.randn(3, 4, generator=_gen(87))
    expect_raises(ValueError, fn, sim, torch.tensor([0, 4, 1]), (1,), what="an index equal to G")
    expect_raises(ValueError, fn, sim, torch.tensor([0, 1]), (1,), what="2 indices for 3 queries")
    expect_raises(ValueError, fn, sim, torch.ones(4, 3, dtype=torch.bool), (1,), what="a (4, 3) mask for (3, 4)")
    expect_raises(ValueError, fn, torch.randn(4, generator=_gen(88)), torch.tensor([0]), (1,), what="a 1-d similarity")
