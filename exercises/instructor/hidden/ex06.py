"""Hidden tests of exercise set 6 (instructor only: not in the package, not in the student release)."""

import math

import torch
import torch.nn.functional as F

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_raises
from mmcourse.grading.public.ex06 import build_vqa, run_vqa, vqa_inputs
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


# ---------------------------------------------------------------------------------------------------------------
def _reference_vqa(model, question, mask, image):
    """Per sample, per word, in float64 from the model's own weights: (logits (B, A), weights (B, L, N))."""
    wq, wk, wv = (getattr(model, n).weight.detach().double() for n in ("query", "key", "value"))
    first, last = model.head[0], model.head[2]
    batch, length, _ = question.shape
    all_logits, all_weights = [], []
    for b in range(batch):
        q, k, v = question[b].double() @ wq.T, image[b].double() @ wk.T, image[b].double() @ wv.T
        weights = torch.stack([(k @ q[t] / math.sqrt(wq.shape[0])).softmax(dim=0) for t in range(length)])
        fused = torch.cat([question[b].double(), weights @ v], dim=-1)
        real = [t for t in range(length) if mask[b, t]]
        pooled = sum(fused[t] for t in real) / len(real)
        hidden = F.gelu(pooled @ first.weight.detach().double().T + first.bias.detach().double())
        all_logits.append(hidden @ last.weight.detach().double().T + last.bias.detach().double())
        all_weights.append(weights)
    return torch.stack(all_logits).float(), torch.stack(all_weights).float()


@HIDDEN.test("VQAFusion", points=2)
def matches_a_reference_built_from_its_own_weights(cls):
    """other sizes and masks: weights = softmax(q k^T / sqrt(dim)), logits = head(mean of [word; what it read])"""
    for seed, (text_dim, image_dim, dim, answers, batch, length, tokens) in enumerate(
        [(6, 5, 8, 7, 3, 5, 4), (3, 9, 16, 4, 2, 7, 9), (10, 2, 4, 11, 4, 3, 1)]
    ):
        model = build_vqa(cls, seed=10 + seed, text_dim=text_dim, image_dim=image_dim, dim=dim, answers=answers)
        question, mask, image = vqa_inputs(20 + seed, batch=batch, length=length, tokens=tokens, text_dim=text_dim,
                                           image_dim=image_dim)
        with torch.no_grad():
            want_logits, want_weights = _reference_vqa(model, question, mask, image)
            expect_close(model.attend(question, image)[1], want_weights, atol=1e-5,
                         what=f"the weights (dim {dim}: scaled by 1/sqrt({dim}))")
            expect_close(run_vqa(model, question, mask, image), want_logits, atol=1e-4, what="the logits")


@HIDDEN.test("VQAFusion", points=1)
def each_question_is_answered_alone(cls):
    """a question's logits do not depend on the other questions and images of the batch"""
    model = build_vqa(cls, seed=30)
    question, mask, image = vqa_inputs(31, batch=4, lengths=[1, 5, 3, 2])
    with torch.no_grad():
        together = run_vqa(model, question, mask, image)
        alone = torch.cat([run_vqa(model, question[b:b + 1], mask[b:b + 1], image[b:b + 1]) for b in range(4)])
        expect_close(together, alone, atol=1e-5, what="the batch's logits vs each question alone")
        others = image.clone()
        others[1:] = torch.randn(others[1:].shape, generator=_gen(32))
        expect_close(run_vqa(model, question, mask, others)[0], together[0], atol=1e-5,
                     what="question 0's logits when the other images change")


@HIDDEN.test("VQAFusion", points=1)
def small_inputs_and_inputs_left_alone(cls):
    """one word, one image token, a batch of one: it works; inputs are not modified; train and eval modes agree"""
    model = build_vqa(cls, seed=40)
    question, mask, image = vqa_inputs(41, batch=1, length=1, tokens=1, lengths=[1])
    copies = [t.clone() for t in (question, mask, image)]
    with torch.no_grad():
        attended, weights = model.attend(question, image)
        expect_close(weights, torch.ones(1, 1, 1), atol=1e-6, what="the weights with one image token")
        expect_close(attended, model.value(image), atol=1e-5, what="attended with one image token")
        model.train()
        first = run_vqa(model, question, mask, image)
        model.eval()
        expect_close(run_vqa(model, question, mask, image), first, atol=1e-6, what="the logits in eval mode")
    for name, before, after in zip(("question", "question_mask", "image"), copies, (question, mask, image)):
        expect_equal(after, before, what=f"{name} after the call")
