"""Hidden tests of exercise set 6 (instructor only: not in the package, not in the student release)."""

import torch

from mmcourse.grading.expect import expect_close, expect_equal, expect_number, expect_raises
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
