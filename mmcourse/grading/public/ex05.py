"""Exercise set 5 (chapter 05_pretraining, article §4.2): the random parts of MLM, MIM and ITM."""

import torch

from mmcourse.grading.expect import expect, expect_equal, expect_number, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet(
    "ex05", "Pre-training objectives: what to hide, what to contrast", chapter="05_pretraining", version=1
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


@itm_q.test(points=1, hint="A batch of one pair has no negative: raise ValueError.")
def a_single_pair_has_no_negative(fn):
    """a 1 x 1 similarity matrix raises ValueError"""
    expect_raises(ValueError, fn, torch.ones(1, 1), what="sample_hard_negatives(1 x 1)")


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
