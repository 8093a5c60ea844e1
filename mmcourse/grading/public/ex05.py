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
    "ex05", "Pre-training objectives: what to hide, what to contrast", chapter="05_pretraining", version=3
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
    points=8,
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
    points=7,
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
    points=5,
    printed_in="05_pretraining: draw_negatives",
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
itm_loss_q = SET.question("itm_loss", "ALBEF's ITM loss with mined hard negatives", forbidden=LIBRARY_ITM, points=11)


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
# Beam search. The step functions below are toy decoders: each maps a prefix (BOS + the tokens so far) to fixed
# next-token log-probabilities, records every call, and so lets a test watch the search.
class ToyDecoder:
    """``step_fn`` for the tests: ``tokens (N, t)`` long → ``(N, V)`` float32 log-probabilities of the next token.

    The distribution after a prefix is either given (``table``: prefix tuple → probabilities) or, for any other
    prefix, drawn once from a generator seeded by the prefix (so the same prefix always gets the same numbers);
    ``eos_boost`` raises the end token's logit with the prefix's length, so that random sequences end.
    """

    def __init__(self, vocab, eos_id, seed=0, table=None, default=None, eos_boost=0.6):
        self.vocab, self.eos_id, self.seed = vocab, eos_id, seed
        self.table = {tuple(k): torch.tensor(v, dtype=torch.float64) for k, v in (table or {}).items()}
        self.default = None if default is None else torch.tensor(default, dtype=torch.float64)
        self.eos_boost, self.calls = eos_boost, []

    def log_probs(self, prefix) -> torch.Tensor:
        """float64 (V,) log-probabilities after ``prefix`` (a tuple of ints, BOS first)."""
        prefix = tuple(int(t) for t in prefix)
        if prefix in self.table:
            return (self.table[prefix] / self.table[prefix].sum()).log().float().double()
        if self.default is not None:
            return (self.default / self.default.sum()).log().float().double()
        key = self.seed
        for token in prefix:
            key = (key * 1_000_003 + token + 1) % (2**61 - 1)
        logits = 2.0 * torch.randn(self.vocab, generator=torch.Generator().manual_seed(key), dtype=torch.float64)
        logits[self.eos_id] += self.eos_boost * (len(prefix) - 1)
        return logits.log_softmax(dim=0).float().double()  # float32 values, as a model would give

    def __call__(self, tokens):
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise TypeError(f"step_fn takes the beams as one (N, t) long tensor, got {got}")
        self.calls.append(tokens.clone())
        return torch.stack([self.log_probs(row.tolist()) for row in tokens]).float()

    def score(self, tokens, bos_id) -> float:
        """The summed log-probability of generating ``tokens`` (no BOS) after ``[bos_id]``."""
        prefix, total = [bos_id], 0.0
        for token in tokens:
            total += float(self.log_probs(prefix)[token])
            prefix.append(token)
        return total


def greedy_sequence(decoder, bos_id, eos_id, max_len):
    """The greedy sequence (most likely token at each step, until the end token or max_len) and its score."""
    prefix = [bos_id]
    for _ in range(max_len):
        prefix.append(int(decoder.log_probs(prefix).argmax()))
        if prefix[-1] == eos_id:
            break
    return prefix[1:], decoder.score(prefix[1:], bos_id)


def best_sequence(decoder, bos_id, eos_id, max_len, length_penalty=1.0):
    """Exhaustive search: the sequence with the best score / length ** length_penalty among ALL sequences that end
    at their first end token or run to max_len — every prefix of a tiny vocabulary, one after another."""
    best, best_value = None, -math.inf
    frontier = [([], 0.0)]
    for _ in range(max_len):
        grown = []
        for tokens, score in frontier:
            log_probs = decoder.log_probs([bos_id, *tokens])
            for token in range(decoder.vocab):
                grown.append(([*tokens, token], score + float(log_probs[token])))
        frontier = []
        for tokens, score in grown:
            done = tokens[-1] == eos_id or len(tokens) == max_len
            value = score / len(tokens) ** length_penalty
            if done and value > best_value:
                best, best_value = (tokens, score), value
            if not done:
                frontier.append((tokens, score))
    return best


def run_beam_search(fn, decoder, bos_id, eos_id, max_len, beam_width, length_penalty=None):
    """Call ``fn``; check that it returns (list of token ids, float score); return them."""
    kwargs = {} if length_penalty is None else {"length_penalty": length_penalty}
    out = fn(decoder, bos_id, eos_id, max_len, beam_width, **kwargs)
    expect(isinstance(out, tuple) and len(out) == 2, "must return (tokens, score)", got=type(out).__name__)
    tokens, score = out
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    expect(isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in tokens),
           "tokens must be a list of Python ints (the generated ids, without BOS)", got=repr(tokens)[:80])
    expect_number(score, what="score")
    expect(bos_id not in tokens[:1], "tokens must not start with BOS", got=repr(tokens))
    return tokens, float(score)


LIBRARY_DECODING = (
    "mmcourse.objectives.itg.beam_search",
    "mmcourse.objectives.itg.greedy_decode",
    "mmcourse.objectives.itg.generate",
    "mmcourse.grading.public.ex05.best_sequence",
    "mmcourse.grading.public.ex05.greedy_sequence",
)
beam_q = SET.question(
    "beam_search",
    "Beam search: one decoder call per step, top-k over every beam and token",
    forbidden=LIBRARY_DECODING,
    points=7,
    printed_in="05_pretraining: beam_search_one",
)
EOS, BOS = 0, 9


@beam_q.test(points=1, hint="With beam_width 1 only the best candidate survives each step: that is greedy decoding.")
def one_beam_is_greedy(fn):
    """returns (list of ids, float); beam_width 1 gives the greedy sequence and its summed log-probability"""
    for seed in range(3):
        decoder = ToyDecoder(6, EOS, seed=seed)
        tokens, score = run_beam_search(fn, decoder, BOS, EOS, 6, 1, length_penalty=0.0)
        want_tokens, want_score = greedy_sequence(decoder, BOS, EOS, 6)
        expect(tokens == want_tokens, f"beam_width 1 is not greedy decoding (seed {seed})",
               expected=str(want_tokens), got=str(tokens))
        expect_number(score, want_score, atol=1e-4, what="the score (summed log-probability)")


# EOS = 0, a = 1, b = 2, BOS = 9: "a" is the likelier first word, but only "b" is followed by a likely end
GREEDY_TRAP = {(9,): [1e-4, 0.6, 0.3999], (9, 1): [0.3, 0.36, 0.34], (9, 2): [0.95, 0.025, 0.025]}


@beam_q.test(points=1, hint="Keep the beam_width best partial sequences at every step, not just the best one: a "
             "start that looks worse can lead to the better sequence.")
def two_beams_find_what_greedy_misses(fn):
    """greedy says 'a a <end>' (p 0.108); two beams find 'b <end>' (p 0.38)"""
    decoder = ToyDecoder(3, EOS, table=GREEDY_TRAP, default=[0.5, 0.25, 0.25])
    tokens, score = run_beam_search(fn, decoder, BOS, EOS, 3, 2, length_penalty=0.0)
    expect(tokens == [2, EOS], "two beams must find 'b <end>'", expected=str([2, EOS]), got=str(tokens))
    expect_number(score, decoder.score([2, EOS], BOS), atol=1e-4, what="its score, log p('b <end>')")


@beam_q.test(points=1, hint="A beam that wrote end_id is finished: keep it (with its score) among the candidates, "
             "but never pass it to step_fn again. Call step_fn once per step, with all unfinished beams stacked.")
def finished_beams_stop_growing(fn):
    """one step_fn call per step, with the unfinished beams only; the result ends at its end token"""
    for seed, width in ((0, 2), (1, 3), (2, 4)):
        decoder = ToyDecoder(5, EOS, seed=seed, eos_boost=1.0)
        tokens, score = run_beam_search(fn, decoder, BOS, EOS, 7, width)
        expect(len(decoder.calls) <= 7, "step_fn must be called once per step (at most max_len times)",
               got=f"{len(decoder.calls)} calls for max_len 7")
        for call in decoder.calls:
            expect(call.shape[0] <= width, f"step_fn was given more than beam_width = {width} beams",
                   got=f"{call.shape[0]} rows")
            expect(bool((call[:, 0] == BOS).all()), "every row passed to step_fn must start with BOS")
            finished = call[(call == EOS).any(dim=1)]
            expect(len(finished) == 0, "a finished beam (it contains end_id) was passed to step_fn",
                   got=str(finished[0].tolist()) if len(finished) else "")
        expect(EOS not in tokens[:-1] and len(tokens) <= 7, "the sequence must stop at its first end token",
               got=str(tokens))
        expect_number(score, decoder.score(tokens, BOS), atol=1e-4,
                      what="the score: the summed log-probability of the returned tokens")


# EOS = 0, BOS = 4: the two best 2-token prefixes both extend "1"; the best sentence needs the second of them
SAME_BEAM = {
    (4,): [1e-4, 0.5, 0.45, 0.05],
    (4, 1): [0.01, 0.5, 0.47, 0.02],
    (4, 2): [0.12, 0.4, 0.28, 0.2],
    (4, 1, 1): [0.2, 0.31, 0.29, 0.2],
    (4, 1, 2): [0.9, 0.05, 0.03, 0.02],
    (4, 2, 1): [0.5, 0.2, 0.17, 0.13],
}


@beam_q.test(points=1, hint="Rank all beam x token candidates together (beam score + log p, flattened, then topk): "
             "the best beam_width candidates may all extend the same beam, and another beam may die out.")
def top_k_over_all_beams_and_tokens(fn):
    """the kept candidates are the best over every beam x every token, not the best of each beam"""
    decoder = ToyDecoder(4, EOS, table=SAME_BEAM, default=[0.5, 0.2, 0.17, 0.13])
    tokens, score = run_beam_search(fn, decoder, 4, EOS, 3, 2, length_penalty=0.0)
    expect(tokens == [1, 2, EOS], "after step 2 both beams must extend '1' ('1 1' p 0.25, '1 2' p 0.235 beat "
           "'2 1' p 0.18)", expected=str([1, 2, EOS]), got=str(tokens))
    expect_number(score, decoder.score([1, 2, EOS], 4), atol=1e-4, what="its score")


@beam_q.test(points=1, hint="At the end pick the kept beam with the best score / length ** length_penalty, length = "
             "the generated tokens, end token included.")
def wide_beams_are_exhaustive(fn):
    """a beam as wide as the number of sequences finds what an exhaustive search finds (length_penalty 0 and 1)"""
    for seed, penalty in ((13, 0.0), (13, 1.0), (23, 1.0)):  # seed 13: the two penalties disagree
        decoder = ToyDecoder(3, EOS, seed=seed, eos_boost=0.0)
        tokens, score = run_beam_search(fn, decoder, BOS, EOS, 4, 3**4, length_penalty=penalty)
        want_tokens, want_score = best_sequence(decoder, BOS, EOS, 4, penalty)
        expect(tokens == want_tokens, f"not the best sequence (length_penalty {penalty:g}, seed {seed})",
               expected=str(want_tokens), got=str(tokens))
        expect_number(score, want_score, atol=1e-4, what="its score")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("mined_negatives", "Experiment: what do mined negatives teach?", points=3)
