"""Hidden tests of exercise set 5 (instructor only: not in the package, not in the student release).

Properties, limiting cases and statistics rather than bit-exact draws: any correct order of random draws passes.
"""

import math

import torch
import torch.nn.functional as F

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number
from mmcourse.grading.public.ex05 import ToyDecoder, best_sequence, run_beam_search, run_itm
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex05")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
@HIDDEN.test("mask_tokens", points=1)
def mask_prob_zero_and_one_are_the_limits(fn):
    """mask_prob = 0 changes nothing; mask_prob = 1 selects every non-special token"""
    ids = torch.randint(0, 40, (6, 9), generator=_gen(9))
    masked, labels = fn(ids, 4, 40, (0, 1), mask_prob=0.0, generator=_gen(10))
    expect_equal(masked, ids, what="masked_ids at mask_prob 0")
    expect_equal(labels, torch.full_like(ids, -100), what="labels at mask_prob 0")
    _, labels = fn(ids, 4, 40, (0, 1), mask_prob=1.0, generator=_gen(11))
    ordinary = (ids != 0) & (ids != 1)
    expect_equal(labels != -100, ordinary, what="the selected positions at mask_prob 1")


@HIDDEN.test("mask_tokens", points=1)
def random_replacements_cover_the_vocabulary(fn):
    """random replacements are drawn uniformly from range(vocab_size), not from the batch's ids"""
    ids = torch.full((300, 100), 7)
    masked, labels = fn(ids, 3, 20, (), mask_prob=1.0, generator=_gen(12))
    replaced = masked[(masked != 3) & (masked != 7)]
    expect(replaced.numel() > 2000, "too few random replacements at mask_prob 1", got=str(replaced.numel()))
    counts = torch.bincount(replaced, minlength=20).float()
    expect(int(replaced.min()) >= 0 and int(replaced.max()) < 20, "random ids must lie in range(vocab_size)")
    others = counts[[i for i in range(20) if i not in (3, 7)]]
    expect_number(others.min() / others.max(), low=0.7, what="the rarest / commonest random id (uniform: about 1)")


@HIDDEN.test("mask_tokens", points=1)
def every_draw_uses_the_generator(fn):
    """the same seeded generator gives the same result whatever the global random state"""
    ids = torch.randint(5, 40, (8, 12), generator=_gen(13))
    torch.manual_seed(1)
    first = fn(ids, 4, 40, (), mask_prob=0.4, generator=_gen(14))
    torch.manual_seed(2)
    second = fn(ids, 4, 40, (), mask_prob=0.4, generator=_gen(14))
    for name, a, b in zip(("masked_ids", "labels"), first, second, strict=True):
        expect_equal(b, a, what=f"{name} of a second call with the same seed")


# ---------------------------------------------------------------------------------------------------------------
@HIDDEN.test("random_masking", points=1)
def visible_patches_come_in_shuffle_order_and_restore(fn):
    """visible[b, j] is patch ids_shuffle[b, j] (ids_shuffle = argsort(ids_restore)), and the mask agrees"""
    patches = torch.randn(3, 12, 4, generator=_gen(20))
    visible, mask, ids_restore = fn(patches, 0.5, generator=_gen(21))
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    keep = visible.shape[1]
    expect_close(visible, torch.gather(patches, 1, ids_shuffle[:, :keep, None].expand(3, keep, 4)), atol=0, rtol=0,
                 what="visible vs the patches at ids_shuffle[:, :K]")
    unshuffled = torch.cat([torch.zeros(3, keep), torch.ones(3, 12 - keep)], dim=1)
    expect_close(mask, torch.gather(unshuffled, 1, ids_restore), atol=0, rtol=0,
                 what="mask vs [0]*K + [1]*(N-K) put back in place by ids_restore")


@HIDDEN.test("random_masking", points=1)
def every_position_is_hidden_equally_often(fn):
    """over many draws every patch position is hidden with probability mask_ratio (no position favoured)"""
    _, mask, _ = fn(torch.zeros(4000, 8, 1), 0.75, generator=_gen(22))
    expect_number(mask.mean(dim=0).min(), low=0.72, what="the least-hidden position's rate (want 0.75)")
    expect_number(mask.mean(dim=0).max(), high=0.78, what="the most-hidden position's rate (want 0.75)")


@HIDDEN.test("random_masking", points=1)
def limits_and_the_generator(fn):
    """mask_ratio 0 keeps every patch; the same seeded generator gives the same result"""
    patches = torch.randn(2, 7, 3, generator=_gen(23))
    visible, mask, _ = fn(patches, 0.0, generator=_gen(24))
    expect_equal(mask, torch.zeros(2, 7), what="mask at mask_ratio 0")
    expect_equal(torch.sort(visible[..., 0], dim=1).values, torch.sort(patches[..., 0], dim=1).values,
                 what="the visible patches at mask_ratio 0 (as a set)")
    torch.manual_seed(3)
    first = fn(patches, 0.5, generator=_gen(25))
    torch.manual_seed(4)
    second = fn(patches, 0.5, generator=_gen(25))
    for name, a, b in zip(("visible", "mask", "ids_restore"), first, second, strict=True):
        expect_equal(b, a, what=f"{name} of a second call with the same seed")


# ---------------------------------------------------------------------------------------------------------------
@HIDDEN.test("sample_hard_negatives", points=1)
def negatives_follow_the_softmax(fn):
    """over many draws, row i picks j != i with probability softmax(similarity[i]) renormalised without i"""
    sim = torch.tensor([[0.0, 1.0, 2.0], [0.5, 3.0, -1.0], [1.0, 1.0, 9.0]])
    picks = torch.stack([fn(sim, generator=_gen(s)) for s in range(600)])  # (600, 3)
    weights = sim.softmax(dim=1).masked_fill(torch.eye(3, dtype=torch.bool), 0)
    want = weights / weights.sum(dim=1, keepdim=True)
    got = torch.stack([torch.bincount(picks[:, i], minlength=3).float() / 600 for i in range(3)])
    expect_close(got, want, atol=0.07, rtol=0, what="the frequency of each negative per row")


# ---------------------------------------------------------------------------------------------------------------
def _expected_pair_counts(similarity, positives):
    """Expected number of times each (image, text) pair is a mined negative in one call: rows + columns."""
    allowed = ~positives
    rows = similarity.masked_fill(~allowed, float("-inf")).softmax(dim=1).nan_to_num(0.0)
    cols = similarity.masked_fill(~allowed, float("-inf")).softmax(dim=0).nan_to_num(0.0)
    return rows + cols


@HIDDEN.test("itm_loss", points=2)
def negatives_follow_softmax_in_both_directions(fn):
    """over many calls, each negative pair appears as often as softmax over rows + softmax over columns predicts"""
    similarity = torch.tensor([[2.0, 1.5, -1.0, 0.0], [0.0, 1.0, 2.0, -2.0], [1.0, 0.5, 0.0, 1.5],
                               [-1.0, 2.0, 0.5, 3.0]])
    positives = torch.eye(4, dtype=torch.bool)
    positives[2, 3] = True
    counts = torch.zeros(4, 4)
    calls = 400
    for seed in range(calls):
        _, _, images, texts = run_itm(fn, similarity, torch.zeros(4, 4), positives=positives, seed=seed)
        negative = ~positives[images, texts]
        counts.index_put_((images[negative], texts[negative]), torch.ones(int(negative.sum())), accumulate=True)
    expect_close(counts / calls, _expected_pair_counts(similarity, positives), atol=0.1, rtol=0,
                 what="negative pairs per call (row softmax + column softmax)")


@HIDDEN.test("itm_loss", points=2)
def loss_accuracy_and_gradient_match_a_reference(fn):
    """random logits: loss, accuracy and d loss / d logits equal a BCE over the pairs it used"""
    for seed, b in enumerate([2, 5, 9]):
        table = torch.randn(b, b, generator=_gen(seed)).mul(2).requires_grad_()
        similarity = torch.randn(b, b, generator=_gen(seed + 10))
        positives = torch.rand(b, b, generator=_gen(seed + 20)) < 0.2
        loss, accuracy, images, texts = run_itm(fn, similarity, table, positives=positives, seed=seed)
        labels = (positives | torch.eye(b, dtype=torch.bool))[images, texts].double()
        logits = table.detach().double()[images, texts]
        diagonal = images[images == texts].unique()
        expect_equal(diagonal, torch.arange(b), what="the true pairs (i, i) that were used")
        want = F.binary_cross_entropy_with_logits(logits, labels)
        expect_number(loss, float(want), atol=1e-5, what=f"the loss (B = {b})")
        expect_number(accuracy, float(((logits > 0).double() == labels).double().mean()), atol=1e-6,
                      what=f"the accuracy (B = {b})")
        loss.backward()
        grad = torch.zeros(b, b, dtype=torch.float64)
        grad.index_put_((images, texts), (torch.sigmoid(logits) - labels) / len(labels), accumulate=True)
        expect_close(table.grad, grad.float(), atol=1e-5, what=f"the gradient wrt the logits (B = {b})")


@HIDDEN.test("itm_loss", points=1)
def extreme_similarities_stay_finite(fn):
    """similarities of 1000 (softmax all on the positives) still give valid negatives and a finite loss"""
    similarity = 1000.0 * torch.eye(5) + torch.randn(5, 5, generator=_gen(40))
    loss, _, images, texts = run_itm(fn, similarity, torch.zeros(5, 5))
    expect(bool(torch.isfinite(loss)), "the loss is not finite")
    expect(images.numel() == 15 and int((images == texts).sum()) == 5, "want 5 positive and 10 negative pairs",
           got=f"{images.numel()} pairs, {int((images == texts).sum())} on the diagonal")
    expect_number(loss, math.log(2), atol=1e-5, what="the loss of an all-zero matcher")


@HIDDEN.test("itm_loss", points=1)
def mining_is_reproducible_and_scale_aware(fn):
    """the same seed gives the same pairs; similarity 0 mines uniformly (every other pair about equally often)"""
    similarity = torch.randn(4, 4, generator=_gen(41))
    _, _, images_a, texts_a = run_itm(fn, similarity, torch.zeros(4, 4), seed=7)
    torch.manual_seed(5)
    _, _, images_b, texts_b = run_itm(fn, similarity, torch.zeros(4, 4), seed=7)
    expect_equal(images_b, images_a, what="the images of a second call with the same seed")
    expect_equal(texts_b, texts_a, what="the texts of a second call with the same seed")
    counts = torch.zeros(4, 4)
    for seed in range(300):
        _, _, images, texts = run_itm(fn, torch.zeros(4, 4), torch.zeros(4, 4), seed=seed)
        counts.index_put_((images, texts), torch.ones(len(images)), accumulate=True)
    off = counts[~torch.eye(4, dtype=torch.bool)] / 300  # each off-diagonal pair: 1/3 + 1/3 per call
    expect_close(off, torch.full_like(off, 2 / 3), atol=0.15, rtol=0, what="uniform mining at similarity 0")


# ---------------------------------------------------------------------------------------------------------------
@HIDDEN.test("beam_search", points=1)
def never_beats_and_at_full_width_equals_exhaustive_search(fn):
    """other vocabularies, lengths and penalties: no beam beats exhaustive search, a full-width beam matches it"""
    for seed, (vocab, max_len, penalty) in enumerate([(4, 3, 0.5), (2, 6, 2.0), (5, 1, 1.0), (3, 4, 0.0)]):
        decoder = ToyDecoder(vocab, 1, seed=100 + seed, eos_boost=0.3)  # end token 1, BOS 7
        want_tokens, want_score = best_sequence(decoder, 7, 1, max_len, penalty)
        best_value = want_score / len(want_tokens) ** penalty
        for width in (1, 2, 3):
            tokens, score = run_beam_search(fn, decoder, 7, 1, max_len, width, length_penalty=penalty)
            expect(0 < len(tokens) <= max_len and 1 not in tokens[:-1], "a sequence of 1..max_len tokens that stops "
                   "at its first end token", got=str(tokens))
            expect_number(score, decoder.score(tokens, 7), atol=1e-4, what="the score of the returned tokens")
            expect_number(score / len(tokens) ** penalty, high=best_value + 1e-6,
                          what=f"score / length ** {penalty:g} (it cannot beat exhaustive search)")
        tokens, score = run_beam_search(fn, decoder, 7, 1, max_len, vocab**max_len, length_penalty=penalty)
        expect(tokens == want_tokens, f"a full-width beam must find the best sequence (V {vocab}, max_len {max_len}, "
               f"length_penalty {penalty:g})", expected=str(want_tokens), got=str(tokens))


@HIDDEN.test("beam_search", points=1)
def agrees_with_a_batched_reference(fn):
    """random decoders, 2 to 5 beams, length_penalty 0, 1 and 2: the same sequence as the library's batched search"""
    from mmcourse.objectives.itg import beam_search as reference

    for seed, (width, penalty) in enumerate([(2, 0.0), (3, 1.0), (5, 1.0), (4, 2.0), (2, 1.0), (3, 0.0)]):
        decoder = ToyDecoder(6, 0, seed=200 + seed, eos_boost=0.5)
        tokens, score = run_beam_search(fn, decoder, 8, 0, 7, width, length_penalty=penalty)

        def step(prefixes, batch_index, decoder=decoder):
            return torch.stack([decoder.log_probs(row.tolist()) for row in prefixes]).float()

        want, want_score = reference(step, 1, 8, 0, 7, width, length_penalty=penalty, pad_id=5)
        want = want[0].tolist()  # PAD (5) after the end token: cut there
        want = want[: want.index(0) + 1] if 0 in want else want
        expect(tokens == want, f"not the beam-search result ({width} beams, length_penalty {penalty:g})",
               expected=str(want), got=str(tokens))
        expect_number(score, float(want_score[0]), atol=1e-4, what="its score")
