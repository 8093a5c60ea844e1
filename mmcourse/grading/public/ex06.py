"""Exercise set 6 (chapter 06_applications, §5.1, Fig.4): ranking and evaluating retrieval, several positives."""

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex06", "Retrieval: ranks, Recall@K and a ranker", chapter="06_applications", version=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
ranks_q = SET.question("match_ranks", "The rank of the true match", forbidden=("mmcourse.retrieval.rank_of_positives",))


@ranks_q.test(points=1, hint="rank = 1 + the number of entries of the row strictly greater than the diagonal one.")
def identity_similarity_ranks_everything_first(fn):
    """an identity similarity matrix ranks every match first (long tensor of ones)"""
    expect_equal(expect_tensor(fn(torch.eye(4)), shape=(4,), dtype=torch.long), torch.ones(4, dtype=torch.long))


@ranks_q.test(points=1, hint="Compare each row with its diagonal entry: (similarity > diagonal[:, None]).sum(1) + 1")
def small_example_by_hand(fn):
    """a hand-computed 3 x 3 example"""
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, 0.5], [0.1, 0.7, 0.2]])
    expect_equal(fn(sim), torch.tensor([1, 3, 2]))


@ranks_q.test(points=1, hint="Only strictly greater scores push the match down: ties do not.")
def ties_do_not_push_the_match_down(fn):
    """a gallery item tied with the match does not lower its rank"""
    sim = torch.tensor([[0.5, 0.5], [0.2, 0.2]])
    expect_equal(fn(sim), torch.tensor([1, 1]))


# ---------------------------------------------------------------------------------------------------------------
recall_q = SET.question(
    "recall_at_k",
    "Recall@K",
    forbidden=("mmcourse.retrieval.recall_at_k", "mmcourse.retrieval.retrieval_metrics"),
)


@recall_q.test(points=1, hint="Return a Python float: the fraction of queries whose match ranks <= k.")
def perfect_retrieval_is_one(fn):
    """identity similarity: Recall@1 = 1.0, as a Python float"""
    out = fn(torch.eye(5), 1)
    expect(isinstance(out, float), "recall_at_k must return a Python float", got=type(out).__name__)
    expect_number(out, 1.0)


@recall_q.test(points=1, hint="Ranks [1, 3, 2]: Recall@1 = 1/3, Recall@2 = 2/3.")
def recalls_of_the_small_example(fn):
    """the 3 x 3 example: Recall@1 = 1/3, Recall@2 = 2/3, Recall@3 = 1"""
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, 0.5], [0.1, 0.7, 0.2]])
    for k, want in ((1, 1 / 3), (2, 2 / 3), (3, 1.0)):
        expect_number(fn(sim, k), want, atol=1e-6, what=f"Recall@{k}")


@recall_q.test(points=1, hint="Every match ranks at most N.")
def k_at_least_n_is_one(fn):
    """k >= N always gives 1.0"""
    expect_number(fn(torch.randn(6, 6, generator=_gen(0)), 10), 1.0)


@recall_q.test(points=1, hint="Raise ValueError when k < 1.")
def rejects_k_below_one(fn):
    """k = 0 raises ValueError"""
    expect_raises(ValueError, fn, torch.eye(3), 0, what="recall_at_k(k=0)")


# ---------------------------------------------------------------------------------------------------------------
retrieve_q = SET.question(
    "retrieve",
    "A top-k ranker",
    forbidden=("mmcourse.retrieval.EmbeddingIndex", "mmcourse.retrieval.cosine_similarity_matrix"),
)


@retrieve_q.test(points=1, hint="Return (scores (Q, k) float, indices (Q, k) long).")
def output_shapes(fn):
    """returns scores (Q, k) and indices (Q, k) long"""
    out = fn(torch.randn(3, 4, generator=_gen(1)), torch.randn(7, 4, generator=_gen(2)), 2)
    expect(isinstance(out, tuple) and len(out) == 2, "must return (scores, indices)", got=type(out).__name__)
    expect_tensor(out[0], shape=(3, 2), floating=True, what="scores")
    expect_tensor(out[1], shape=(3, 2), dtype=torch.long, what="indices")


@retrieve_q.test(points=1, hint="Scores are cosine similarities: normalise queries and gallery.")
def a_duplicate_is_found_first(fn):
    """a query whose (rescaled) copy is in the gallery retrieves it first, with score 1"""
    gallery = torch.randn(8, 5, generator=_gen(3))
    queries = gallery[[6, 1]] * 4.0
    scores, indices = fn(queries, gallery, 3)
    expect_equal(indices[:, 0], torch.tensor([6, 1]), what="the top-1 indices")
    expect_close(scores[:, 0], torch.ones(2), atol=1e-5, what="the top-1 scores")


@retrieve_q.test(points=1, hint="Sort by score, highest first; scores[q, j] is the score of indices[q, j].")
def scores_are_sorted_and_consistent(fn):
    """scores are sorted in decreasing order and belong to the returned indices"""
    queries, gallery = torch.randn(4, 6, generator=_gen(4)), torch.randn(9, 6, generator=_gen(5))
    scores, indices = fn(queries, gallery, 5)
    expect(bool((scores[:, :-1] >= scores[:, 1:]).all()), "scores must be in decreasing order")
    unit = torch.nn.functional.normalize
    full = unit(queries, dim=-1) @ unit(gallery, dim=-1).T
    expect_close(scores, torch.gather(full, 1, indices), atol=1e-5, what="scores vs the cosine of the indices")


# ---------------------------------------------------------------------------------------------------------------
multi_q = SET.question(
    "recall_with_positives",
    "Ranks and Recall@K with several correct items per query",
    forbidden=(
        "mmcourse.retrieval.recall_at_k",
        "mmcourse.retrieval.rank_of_positives",
        "mmcourse.retrieval.positives_to_mask",
        "mmcourse.retrieval.recall_both_ways",
        "mmcourse.retrieval.retrieval_metrics",
    ),
)

#: 2 queries, 4 gallery items; query 0's correct items are 1 and 2, query 1's are 0 and 3.
MULTI_SIM = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.5, 0.9, 0.95, 0.1]])
MULTI_POS = torch.tensor([[False, True, True, False], [True, False, False, True]])


def call_multi(fn, similarity, positives, ks):
    out = fn(similarity, positives, ks)
    expect(isinstance(out, tuple) and len(out) == 2, "must return (ranks, recalls)", got=type(out).__name__)
    ranks, recalls = out
    expect_tensor(ranks, shape=(similarity.shape[0],), dtype=torch.long, what="ranks")
    expect(isinstance(recalls, dict) and sorted(recalls) == sorted(ks), "recalls must be a dict {k: recall}",
           expected=f"keys {sorted(ks)}", got=str(recalls))
    for k, value in recalls.items():
        expect(isinstance(value, float), f"recalls[{k}] must be a Python float", got=type(value).__name__)
    return ranks, recalls


@multi_q.test(points=1, hint="Return (ranks (Q,) long, {k: float}); the gallery need not be as large as the queries.")
def ranks_and_recalls_of_a_non_square_matrix(fn):
    """a (3, 7) matrix: ranks (3,) long and {k: float}; index positives give the same as a one-hot mask"""
    sim = torch.randn(3, 7, generator=_gen(20))
    index = torch.tensor([6, 0, 2])
    ranks, recalls = call_multi(fn, sim, index, (1, 3))
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[torch.arange(3), index] = True
    mask_ranks, mask_recalls = call_multi(fn, sim, mask, (1, 3))
    expect_equal(mask_ranks, ranks, what="ranks from a one-hot mask vs from indices")
    want = torch.tensor([1 + int((sim[q] > sim[q, index[q]]).sum()) for q in range(3)])
    expect_equal(ranks, want, what="ranks (one correct item per query)")


@multi_q.test(points=2, hint="A query's rank is that of its BEST-scored correct item; other correct items don't count.")
def the_best_positive_counts(fn):
    """query 0: wrong item first, correct ones 2nd and 3rd -> rank 2; query 1: two wrong items ahead -> rank 3"""
    ranks, recalls = call_multi(fn, MULTI_SIM, MULTI_POS, (1, 2, 3))
    expect_equal(ranks, torch.tensor([2, 3]), what="ranks")
    for k, want in ((1, 0.0), (2, 0.5), (3, 1.0)):
        expect_number(recalls[k], want, atol=1e-6, what=f"Recall@{k}")


@multi_q.test(points=1, hint="Correct items never push each other down: count only wrong items above the best one.")
def correct_items_do_not_compete(fn):
    """every gallery item correct except the lowest-scored: every rank is 1"""
    sim = torch.randn(4, 6, generator=_gen(21))
    positives = sim > sim.min(dim=1, keepdim=True).values
    ranks, _ = call_multi(fn, sim, positives, (1,))
    expect_equal(ranks, torch.ones(4, dtype=torch.long), what="ranks")


@multi_q.test(points=1, hint="Raise ValueError for a query with no correct item and for k < 1.")
def rejects_queries_without_positives_and_bad_k(fn):
    """a query with no correct item, or k = 0, raises ValueError"""
    positives = MULTI_POS.clone()
    positives[1] = False
    expect_raises(ValueError, fn, MULTI_SIM, positives, (1,), what="a query with no correct item")
    expect_raises(ValueError, fn, MULTI_SIM, MULTI_POS, (0, 1), what="ks = (0, 1)")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("two_directions", "Experiment: why do the two directions differ?", points=3)
