"""Exercise set 6 (chapter 06_applications, §5.1, §5.3, Fig.4): ranking and evaluating retrieval, several positives,
and the fusion at the heart of a VQA model."""

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet
from mmcourse.train import seeded

SET = ExerciseSet(
    "ex06", "Retrieval and VQA: ranks, Recall@K, a ranker and a fusion", chapter="06_applications", version=3
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
ranks_q = SET.question(
    "match_ranks",
    "The rank of the true match",
    forbidden=("mmcourse.retrieval.rank_of_positives",),
    points=5,
)


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
    points=6,
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
    points=6,
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
    points=11,
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
vqa_q = SET.question(
    "VQAFusion",
    "VQA fusion: question tokens attend to image tokens, the pooled result picks an answer",
    kind="class",
    forbidden=("mmcourse.models.vqa.VQAModel",),
    points=10,
)
TEXT_DIM, IMAGE_DIM, DIM, ANSWERS, HIDDEN = 6, 5, 8, 7, 16


def build_vqa(cls, seed=0, text_dim=TEXT_DIM, image_dim=IMAGE_DIM, dim=DIM, answers=ANSWERS, hidden=HIDDEN):
    """``cls(text_dim, image_dim, dim, num_answers, hidden)`` with seeded weights; checks it is an nn.Module."""
    with seeded(seed):
        model = cls(text_dim, image_dim, dim, answers, hidden)
    expect(isinstance(model, nn.Module), "VQAFusion must subclass nn.Module", got=type(model).__name__)
    return model


def vqa_inputs(seed, batch=3, length=5, tokens=4, text_dim=TEXT_DIM, image_dim=IMAGE_DIM, lengths=None):
    """Questions (B, L, text_dim) whose position 0 is one shared [CLS] vector, a padding mask, image tokens."""
    g = _gen(seed)
    question = torch.randn(batch, length, text_dim, generator=g)
    question[:, 0] = torch.randn(text_dim, generator=_gen(999))  # every question starts with the same [CLS]
    lengths = torch.tensor(lengths) if lengths is not None else torch.randint(2, length + 1, (batch,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    image = torch.randn(batch, tokens, image_dim, generator=g)
    return question, mask, image


def run_vqa(model, question, mask, image):
    logits = model(question, mask, image)
    return expect_tensor(logits, shape=(question.shape[0], model.head[-1].out_features), floating=True,
                         what="the logits")


@vqa_q.test(points=1, hint="query, key, value: nn.Linear without bias (text_dim -> dim, image_dim -> dim twice); head: "
            "nn.Sequential(nn.Linear(text_dim + dim, hidden), nn.GELU(), nn.Linear(hidden, num_answers)).")
def layers_and_shapes(cls):
    """the four named layers; attend gives (B, L, dim) and (B, L, N), forward (B, num_answers)"""
    model = build_vqa(cls)
    for name, (n_in, n_out) in {"query": (TEXT_DIM, DIM), "key": (IMAGE_DIM, DIM), "value": (IMAGE_DIM, DIM)}.items():
        layer = getattr(model, name, None)
        expect(isinstance(layer, nn.Linear) and layer.bias is None, f"self.{name} must be an nn.Linear without bias",
               got=repr(layer)[:80])
        expect((layer.in_features, layer.out_features) == (n_in, n_out), f"self.{name}'s sizes",
               expected=str((n_in, n_out)), got=str((layer.in_features, layer.out_features)))
    head = getattr(model, "head", None)
    expect(isinstance(head, nn.Sequential) and len(head) == 3 and isinstance(head[0], nn.Linear)
           and isinstance(head[1], nn.GELU) and isinstance(head[2], nn.Linear),
           "self.head must be nn.Sequential(Linear, GELU, Linear)", got=repr(head)[:120])
    expect((head[0].in_features, head[0].out_features, head[2].out_features) == (TEXT_DIM + DIM, HIDDEN, ANSWERS),
           "self.head's sizes: Linear(text_dim + dim, hidden), Linear(hidden, num_answers)",
           got=str((head[0].in_features, head[0].out_features, head[2].out_features)))
    question, mask, image = vqa_inputs(0)
    out = model.attend(question, image)
    expect(isinstance(out, tuple) and len(out) == 2, "attend must return (attended, weights)")
    expect_tensor(out[0], shape=(3, 5, DIM), floating=True, what="attended")
    expect_tensor(out[1], shape=(3, 5, 4), floating=True, what="weights")
    run_vqa(model, question, mask, image)


@vqa_q.test(points=1, hint="weights = softmax over the image tokens (the last dim) of query @ key^T / sqrt(dim); "
            "attended = weights @ value(image).")
def each_word_takes_a_weighted_average_of_the_values(cls):
    """each word's weights over the image tokens are >= 0 and sum to 1; attended = weights @ value(image)"""
    model = build_vqa(cls, seed=1)
    question, _, image = vqa_inputs(1)
    with torch.no_grad():
        attended, weights = model.attend(question, image)
        expect(bool((weights >= 0).all()), "attention weights must not be negative")
        expect_close(weights.sum(dim=-1), torch.ones(3, 5), atol=1e-5, what="each word's weights summed over the "
                     "image tokens")
        expect_close(attended, weights @ model.value(image), atol=1e-5, what="attended vs weights @ value(image)")


@vqa_q.test(points=1, hint="Pool with the mask: sum the real tokens' vectors, divide by their number. A plain mean "
            "over L lets padding change the answer.")
def padding_changes_nothing(cls):
    """changing the padded question tokens, or adding more padding, leaves the logits unchanged"""
    model = build_vqa(cls, seed=2)
    question, mask, image = vqa_inputs(2, lengths=[2, 5, 3])
    with torch.no_grad():
        logits = run_vqa(model, question, mask, image)
        noisy = torch.where(mask[..., None], question, 50 * torch.randn(question.shape, generator=_gen(3)))
        expect_close(run_vqa(model, noisy, mask, image), logits, atol=1e-5, what="the logits with other padding")
        longer = torch.cat([question, torch.randn(3, 4, TEXT_DIM, generator=_gen(4))], dim=1)
        longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
        expect_close(run_vqa(model, longer, longer_mask, image), logits, atol=1e-5,
                     what="the logits with 4 more padded positions")


@vqa_q.test(points=1, hint="Every question starts with the same [CLS] vector: without self-attention it knows nothing "
            "of the question. Pool over all real tokens, each joined with what it found in the image.")
def the_answer_depends_on_question_and_image_together(cls):
    """two questions on one image get different answers, one question on two images too; each word reads the image
    its own way"""
    model = build_vqa(cls, seed=3)
    question, mask, image = vqa_inputs(5, batch=2, lengths=[4, 4])
    with torch.no_grad():
        pairs = {(q, i): run_vqa(model, question[q:q + 1], mask[q:q + 1], image[i:i + 1])[0]
                 for q in (0, 1) for i in (0, 1)}
        weights = model.attend(question[:1], image[:1])[1][0]  # (L, N): one row per word of question 0
    expect_number((pairs[0, 0] - pairs[1, 0]).abs().max(), low=1e-3,
                  what="how much the logits change with the question (same image, same [CLS] first)")
    expect_number((pairs[0, 0] - pairs[0, 1]).abs().max(), low=1e-3,
                  what="how much the logits change with the image (same question)")
    expect_number((weights[1:] - weights[:1]).abs().max(), low=1e-3,
                  what="how much the attention weights differ between the words of one question (the query comes "
                  "from each word)")


@vqa_q.test(points=1, hint="Attention is a weighted sum over the keys: their order cannot matter (which is why "
            "chapter 6's VQAModel adds a learned position to every image token).")
def image_token_order_does_not_matter(cls):
    """shuffling the image tokens leaves the logits unchanged and shuffles the weights the same way"""
    model = build_vqa(cls, seed=4)
    question, mask, image = vqa_inputs(6, tokens=6)
    order = torch.randperm(6, generator=_gen(7))
    with torch.no_grad():
        logits = run_vqa(model, question, mask, image)
        expect_close(run_vqa(model, question, mask, image[:, order]), logits, atol=1e-5,
                     what="the logits with the image tokens shuffled")
        expect_close(model.attend(question, image[:, order])[1], model.attend(question, image)[1][..., order],
                     atol=1e-5, what="the weights with the image tokens shuffled")


@vqa_q.test(points=1, hint="Keep everything in the autograd graph (no .detach(), no torch.no_grad() in forward).")
def gradients_reach_both_modalities(cls):
    """the loss reaches the question's real tokens (not its padding), the image and every layer"""
    model = build_vqa(cls, seed=5)
    question, mask, image = vqa_inputs(8, lengths=[3, 5, 2])
    question.requires_grad_(True)
    image.requires_grad_(True)
    run_vqa(model, question, mask, image).logsumexp(dim=-1).sum().backward()
    expect(question.grad is not None and bool((question.grad[mask].abs().sum(-1) > 0).all()),
           "every real question token must receive a gradient")
    expect(bool((question.grad[~mask] == 0).all()), "padded question tokens must receive no gradient")
    expect(image.grad is not None and float(image.grad.abs().sum()) > 0, "no gradient reaches the image tokens")
    for name, parameter in model.named_parameters():
        expect(parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, f"no gradient reaches {name}")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("two_directions", "Experiment: why do the two directions differ?", points=3)
