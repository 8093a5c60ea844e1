"""Exercise set 5 (chapter 05_pretraining, article §4.2): the random parts of MLM, MIM and ITM, and ALBEF's ITM loss."""

import math

import torch
import torch.nn.functional as F

from mmcourse.grading.expect import (
    expect,
    expect_close,
    expect_equal,
    expect_number,
    expect_raises,
    expect_tensor,
)
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet(
    "ex05", "Pre-training objectives: what to hide, what to contrast", chapter="05_pretraining", version=2
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MASK_ID, VOCAB, SPECIAL = 3, 50, (0, 1, 2, 3)


def _token_batch(seed: int, shape=(4, 12)):
    ids = torch.randint(4, VOCAB, shape, generator=_gen(seed))
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    return ids


# ---------------------------------------------------------------------------------------------------------------
mlm_q = SET.question(
    "mask_tokens",
    "BERT masking: 15 %, then 80/10/10",
    forbidden=("mmcourse.objectives.mlm.mask_tokens",),
)


@mlm_q.test(points=1, hint="Work on input_ids.clone(); labels have the same shape and dtype.")
def shapes_and_untouched_input(fn):
    """returns (masked_ids, labels) shaped like input_ids; the input is not modified"""
    ids = _token_batch(0)
    before = ids.clone()
    out = fn(ids, MASK_ID, VOCAB, SPECIAL, generator=_gen(1))
    expect(isinstance(out, tuple) and len(out) == 2, "must return (masked_ids, labels)", got=type(out).__name__)
    expect_tensor(out[0], shape=ids.shape, dtype=torch.long, what="masked_ids")
    expect_tensor(out[1], shape=ids.shape, dtype=torch.long, what="labels")
    expect_equal(ids, before, what="input_ids after the call (modified in place?)")


@mlm_q.test(points=1, hint="labels = original id where selected, -100 elsewhere; unselected ids stay as they were.")
def labels_mark_exactly_the_selected_positions(fn):
    """labels hold the original id at selected positions and -100 elsewhere"""
    ids = _token_batch(2, (8, 16))
    masked, labels = fn(ids, MASK_ID, VOCAB, SPECIAL, mask_prob=0.3, generator=_gen(3))
    selected = labels != -100
    expect(bool(selected.any()), "no position was selected at mask_prob=0.3")
    expect_equal(labels[selected], ids[selected], what="labels at the selected positions")
    expect_equal(masked[~selected], ids[~selected], what="masked_ids at unselected positions")


@mlm_q.test(points=1, hint="Exclude positions whose id is in special_ids from the selection.")
def special_tokens_are_never_selected(fn):
    """special tokens ([CLS], [SEP], ...) are never selected"""
    ids = _token_batch(4, (16, 10))
    masked, labels = fn(ids, MASK_ID, VOCAB, SPECIAL, mask_prob=0.9, generator=_gen(5))
    special = torch.isin(ids, torch.tensor(SPECIAL))
    expect_equal(labels[special], torch.full((int(special.sum()),), -100), what="labels at special tokens")
    expect_equal(masked[special], ids[special], what="masked_ids at special tokens")


@mlm_q.test(points=1, hint="Select with probability mask_prob; of those, 80 % become mask_id.")
def the_15_percent_and_80_percent_rules(fn):
    """on a large batch about 15 % are selected, and about 80 % of those become [MASK]"""
    ids = torch.randint(4, VOCAB, (200, 100), generator=_gen(6))
    masked, labels = fn(ids, MASK_ID, VOCAB, SPECIAL, generator=_gen(7))
    selected = labels != -100
    expect_number(selected.float().mean(), low=0.14, high=0.16, what="the selected fraction")
    expect_number(
        (masked[selected] == MASK_ID).float().mean(), low=0.77, high=0.83, what="the [MASK] fraction among selected"
    )


@mlm_q.test(points=1, hint="Of the selected: 10 % become a random id in range(vocab_size), 10 % stay as they were.")
def ten_percent_random_and_ten_percent_unchanged(fn):
    """about 10 % of the selected tokens become another token, about 10 % stay unchanged"""
    ids = torch.randint(4, VOCAB, (200, 100), generator=_gen(17))
    masked, labels = fn(ids, MASK_ID, VOCAB, SPECIAL, mask_prob=0.5, generator=_gen(18))
    selected = labels != -100
    replaced = (masked[selected] != MASK_ID) & (masked[selected] != ids[selected])
    unchanged = masked[selected] == ids[selected]
    # a random token is the original 1 time in VOCAB: about 9.8 % replaced, 10.2 % unchanged
    expect_number(replaced.float().mean(), low=0.085, high=0.115, what="the share of selected tokens replaced")
    expect_number(unchanged.float().mean(), low=0.085, high=0.12, what="the share of selected tokens left unchanged")


# ---------------------------------------------------------------------------------------------------------------
mae_q = SET.question(
    "random_masking",
    "MAE random masking",
    forbidden=("mmcourse.objectives.mim.random_masking",),
)


@mae_q.test(points=1, hint="K = int(N * (1 - mask_ratio)); mask is float, ids_restore long.")
def shapes_and_dtypes(fn):
    """returns visible (B, K, D), mask (B, N) float and ids_restore (B, N) long"""
    out = fn(torch.randn(2, 10, 3, generator=_gen(8)), 0.6, generator=_gen(9))
    expect(isinstance(out, tuple) and len(out) == 3, "must return (visible, mask, ids_restore)")
    visible, mask, ids_restore = out
    expect_tensor(visible, shape=(2, 4, 3), floating=True, what="visible")
    expect_tensor(mask, shape=(2, 10), floating=True, what="mask")
    expect_tensor(ids_restore, shape=(2, 10), dtype=torch.long, what="ids_restore")


@mae_q.test(points=1, hint="mask is 1 for the N - K removed patches and 0 for the K kept ones.")
def mask_counts_removed_patches(fn):
    """each mask row has N - K ones (removed) and K zeros (kept)"""
    _, mask, _ = fn(torch.randn(3, 16, 2, generator=_gen(10)), 0.75, generator=_gen(11))
    expect(bool(((mask == 0) | (mask == 1)).all()), "mask must contain only 0 and 1")
    expect_equal(mask.sum(dim=1), torch.full((3,), 12.0), what="removed patches per sample")


@mae_q.test(points=1, hint="visible = the patches where mask == 0 (gathered with the kept ids).")
def visible_patches_are_the_kept_ones(fn):
    """the visible patches are exactly the patches where mask == 0"""
    patches = torch.arange(2 * 8 * 2, dtype=torch.float).reshape(2, 8, 2)
    visible, mask, _ = fn(patches, 0.5, generator=_gen(12))
    for b in range(2):
        kept = patches[b][mask[b] == 0]
        got = visible[b][torch.argsort(visible[b][:, 0])]
        expect_equal(got, kept, what=f"sample {b}'s visible patches (as a set)")


@mae_q.test(points=1, hint="ids_restore = argsort(ids_shuffle): it undoes the shuffle.")
def ids_restore_is_a_permutation(fn):
    """every ids_restore row is a permutation of 0..N-1"""
    _, _, ids_restore = fn(torch.randn(3, 9, 2, generator=_gen(13)), 0.3, generator=_gen(14))
    expect_equal(torch.sort(ids_restore, dim=1).values, torch.arange(9).expand(3, 9), what="sorted ids_restore")


# ---------------------------------------------------------------------------------------------------------------
itm_q = SET.question(
    "sample_hard_negatives",
    "Hard negatives for image-text matching",
    forbidden=("mmcourse.objectives.itm.sample_hard_negatives",),
)


@itm_q.test(points=1, hint="Set the diagonal weight to 0 so that i never picks itself.")
def never_picks_the_positive(fn):
    """returns (B,) long indices, never the matching index i"""
    sim = torch.randn(6, 6, generator=_gen(15))
    for seed in range(5):
        picks = expect_tensor(fn(sim, generator=_gen(seed)), shape=(6,), dtype=torch.long)
        expect(
            bool((picks != torch.arange(6)).all()), "a sample picked itself as its negative", got=str(picks.tolist())
        )


@itm_q.test(points=1, hint="Raise ValueError for a non-square matrix, and for B < 2 (one pair has no negative).")
def rejects_non_square_and_single_pairs(fn):
    """a non-square or a 1 x 1 similarity matrix raises ValueError"""
    expect_raises(ValueError, fn, torch.ones(1, 1), what="sample_hard_negatives(1 x 1)")
    expect_raises(ValueError, fn, torch.randn(3, 4, generator=_gen(19)), what="sample_hard_negatives(3 x 4)")
    expect_raises(ValueError, fn, torch.randn(4, generator=_gen(20)), what="sample_hard_negatives(a 1-d tensor)")


@itm_q.test(points=1, hint="Sample with probability softmax(similarity) over the other samples.")
def prefers_the_most_similar_negative(fn):
    """with one clearly hardest negative per row, it is (almost always) the one picked"""
    sim = torch.zeros(4, 4)
    hardest = torch.tensor([2, 3, 0, 1])
    sim[torch.arange(4), hardest] = 12.0
    picks = torch.stack([fn(sim, generator=_gen(s)) for s in range(10)])
    expect_number((picks == hardest).float().mean(), low=0.95, what="how often the hardest negative is picked")


@itm_q.test(points=1, hint="Add the small epsilon (1e-6) BEFORE zeroing the diagonal.")
def a_dominant_diagonal_does_not_crash(fn):
    """a huge diagonal (all off-diagonal softmax weights round to 0) still gives valid negatives"""
    sim = torch.eye(3) * 1000.0
    picks = expect_tensor(fn(sim, generator=_gen(16)), shape=(3,), dtype=torch.long)
    expect(bool((picks != torch.arange(3)).all()), "a sample picked itself", got=str(picks.tolist()))


# ---------------------------------------------------------------------------------------------------------------
LIBRARY_ITM = (
    "mmcourse.objectives.itm.sample_hard_negatives",
    "mmcourse.objectives.itm.make_itm_pairs",
    "mmcourse.objectives.itm.itm_loss",
)
itm_loss_q = SET.question("itm_loss", "ALBEF's ITM loss with mined hard negatives", forbidden=LIBRARY_ITM)


class PairRecorder:
    """A ``match_logits`` for the tests: the logit of pair (i, t) is ``table[i, t]``; it records every pair asked."""

    def __init__(self, table):
        self.table, self.images, self.texts = table, [], []

    def __call__(self, image_index, text_index):
        self.images.append(torch.as_tensor(image_index).reshape(-1).long())
        self.texts.append(torch.as_tensor(text_index).reshape(-1).long())
        return self.table[self.images[-1], self.texts[-1]]

    def pairs(self):
        if not self.images:
            raise AssertionError("itm_loss never called match_logits")
        return torch.cat(self.images), torch.cat(self.texts)


def run_itm(fn, similarity, table, positives=None, seed=0):
    """Call ``fn`` with a recorder; check the result's form; return (loss, accuracy, images, texts)."""
    recorder = PairRecorder(table)
    kwargs = {} if positives is None else {"positives": positives}
    out = fn(similarity, recorder, generator=_gen(seed), **kwargs)
    expect(isinstance(out, tuple) and len(out) == 2, "must return (loss, accuracy)", got=type(out).__name__)
    loss, accuracy = out
    expect_tensor(loss, shape=(), floating=True, what="loss")
    expect_number(accuracy, low=0.0, high=1.0, what="accuracy")
    return (loss, float(accuracy), *recorder.pairs())


@itm_loss_q.test(points=1, hint="Return (loss, accuracy); a matcher that always outputs 0 has loss log 2.")
def an_undecided_matcher_costs_log_2(fn):
    """returns (0-d loss, accuracy); a matcher whose logits are all 0 has loss log 2"""
    similarity = torch.randn(5, 5, generator=_gen(30))
    loss, _, _, _ = run_itm(fn, similarity, torch.zeros(5, 5))
    expect_number(loss, math.log(2), atol=1e-5, what="the loss of an all-zero matcher")


@itm_loss_q.test(points=1, hint="B positive pairs (label 1) and 2B negative pairs (label 0), one BCE over all 3B.")
def one_positive_for_two_negatives(fn):
    """a constant logit c costs (softplus(-c) + 2 softplus(c)) / 3: B positives, 2B negatives"""
    c = 1.5
    loss, accuracy, images, _ = run_itm(fn, torch.randn(6, 6, generator=_gen(31)), torch.full((6, 6), c))
    expect(images.numel() == 18, "6 scenes must give 6 positive + 12 negative pairs", got=f"{images.numel()} pairs")
    want = (F.softplus(torch.tensor(-c)) + 2 * F.softplus(torch.tensor(c))) / 3
    expect_number(loss, float(want), atol=1e-5, what="the loss of a constant logit 1.5")
    expect_number(accuracy, 1 / 3, atol=1e-5, what="the accuracy of a matcher that always says match")


@itm_loss_q.test(points=1, hint="Image i's negative caption: softmax(similarity[i]); caption j's image: column j.")
def the_hardest_negatives_are_mined(fn):
    """one dominant score per row and per column: exactly those pairs become the negatives"""
    hardest = torch.tensor([2, 0, 3, 1])  # image i is confused with caption hardest[i] (and vice versa)
    similarity = torch.zeros(4, 4)
    similarity[torch.arange(4), hardest] = 30.0
    similarity += 30.0 * torch.eye(4)  # the true pairs score high too: they must be skipped
    _, _, images, texts = run_itm(fn, similarity, torch.zeros(4, 4))
    negatives = sorted(zip(images.tolist(), texts.tolist(), strict=True))
    want = sorted([(i, i) for i in range(4)] + 2 * [(i, int(hardest[i])) for i in range(4)])
    expect(negatives == want, "the pairs passed to match_logits are not the positives + the hardest negatives",
           expected=str(want), got=str(negatives))


@itm_loss_q.test(points=1, hint="positives[i, t] = True means caption t also describes image i: never a negative.")
def duplicates_are_never_negatives(fn):
    """pairs marked in positives are never used as negatives, whatever their score"""
    positives = torch.eye(4, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True  # scenes 0 and 1 state the same fact
    similarity = torch.eye(4) + 20.0 * positives.float()  # ... and the similarity loves them
    for seed in range(5):
        _, _, images, texts = run_itm(fn, similarity, torch.zeros(4, 4), positives=positives, seed=seed)
        off_diagonal = images != texts
        expect(not bool(positives[images[off_diagonal], texts[off_diagonal]].any()),
               "a pair marked in positives was used as a negative")


@itm_loss_q.test(points=1, hint="An image whose every caption is a positive gets no negative caption (and vice versa).")
def no_negative_when_every_pair_matches(fn):
    """a batch in which every pair matches has only positive pairs: loss = mean softplus(-logit)"""
    table = torch.randn(3, 3, generator=_gen(32))
    loss, _, images, texts = run_itm(fn, torch.randn(3, 3, generator=_gen(33)), table,
                                     positives=torch.ones(3, 3, dtype=torch.bool))
    expect(images.numel() == 3, "only the 3 diagonal pairs can be used", got=f"{images.numel()} pairs")
    expect_close(loss, F.softplus(-table.diagonal()).mean(), atol=1e-5, what="the loss")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("mined_negatives", "Experiment: what do mined negatives teach?", points=3)
