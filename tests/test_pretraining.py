"""Tests of mmcourse.objectives: MLM, MIM, ITM hard negatives, ITG loss and decoding."""

from __future__ import annotations

import itertools
import math
import os
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from mmcourse.objectives.itg import (
    beam_search,
    caption_loss,
    generate,
    greedy_decode,
    shift_for_teacher_forcing,
)
from mmcourse.objectives.itm import ITMHead, itm_accuracy, itm_loss, make_itm_pairs, sample_hard_negatives
from mmcourse.objectives.mim import mim_loss, num_kept, patchify, random_masking, restore_order, unpatchify
from mmcourse.objectives.mlm import IGNORE_INDEX, mask_tokens, mlm_loss

# ----------------------------------------------------------------------------------------------------------- MLM
PAD, CLS, SEP, MASK, BOS, EOS, UNK = range(7)
SPECIAL = [PAD, CLS, SEP, MASK, BOS, EOS, UNK]
VOCAB = 57  # 7 special + 50 ordinary words


def _sentences(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """``[CLS] w1 ... wn [EOS] [PAD]...`` rows with random lengths and random ordinary words."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, VOCAB, (batch, length), generator=g)
    lengths = torch.randint(2, length - 1, (batch,), generator=g)
    pos = torch.arange(length)
    ids[:, 0] = CLS
    ids[pos[None] == lengths[:, None] + 1] = EOS
    ids[pos[None] > lengths[:, None] + 1] = PAD
    return ids


def _mlm_stats(ids: torch.Tensor, masked: torch.Tensor, chosen: torch.Tensor, ordinary: torch.Tensor) -> dict:
    n_chosen = chosen.sum().item()
    return {
        "chosen_rate": n_chosen / ordinary.sum().item(),
        "mask_share": ((masked == MASK) & chosen).sum().item() / n_chosen,
        "unchanged_share": ((masked == ids) & chosen).sum().item() / n_chosen,
        "random_share": ((masked != ids) & (masked != MASK) & chosen).sum().item() / n_chosen,
    }


def test_mask_tokens_statistics_follow_the_bert_rule():
    ids = _sentences(4000, 32)
    masked, labels = mask_tokens(ids, SPECIAL, VOCAB, 0.15, torch.Generator().manual_seed(1))
    ordinary = ids >= 7
    chosen = labels != IGNORE_INDEX
    stats = _mlm_stats(ids, masked, chosen, ordinary)
    # ~90k ordinary tokens: std of the chosen rate ~0.0012, of the shares (~13k chosen) <= 0.0035.
    assert abs(stats["chosen_rate"] - 0.15) < 0.01
    assert abs(stats["mask_share"] - 0.80) < 0.02
    # a random replacement draws the original word with probability 1/50
    assert abs(stats["random_share"] - 0.10 * 49 / 50) < 0.015
    assert abs(stats["unchanged_share"] - (0.10 + 0.10 / 50)) < 0.015
    # never a special token, labels exactly -100 elsewhere and the original id where chosen
    assert not (chosen & ~ordinary).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert (labels[~chosen] == IGNORE_INDEX).all()
    assert torch.equal(masked[~chosen], ids[~chosen])
    # random replacements are ordinary words, never specials
    replaced = chosen & (masked != MASK)
    assert (masked[replaced] >= 7).all()


def test_mask_tokens_matches_huggingface_collator_statistics():
    os.environ["HF_HUB_OFFLINE"] = "1"
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel

    names = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(50)]
    core = HFTokenizer(WordLevel({n: i for i, n in enumerate(names)}, unk_token="[UNK]"))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
    assert sorted(tok.all_special_ids) == SPECIAL and tok.mask_token_id == MASK
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=0.15, return_tensors="pt")
    ids = _sentences(4000, 32, seed=3)
    special_mask = (ids < 7).long()
    torch.manual_seed(0)
    hf_masked, hf_labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special_mask)
    ours_masked, ours_labels = mask_tokens(ids, tok, len(tok), 0.15, torch.Generator().manual_seed(0))
    ordinary = ids >= 7
    hf = _mlm_stats(ids, hf_masked, hf_labels != -100, ordinary)
    ours = _mlm_stats(ids, ours_masked, ours_labels != IGNORE_INDEX, ordinary)
    # same rule: every statistic within sampling noise (std <= 0.005 for the difference of two shares)
    for key in hf:
        assert abs(hf[key] - ours[key]) < 0.025, (key, hf[key], ours[key])
    assert not ((hf_labels != -100) & ~ordinary).any()  # the reference never chooses specials either


def test_mask_tokens_is_deterministic_and_accepts_a_tokenizer_object():
    class Tok:
        special_ids = SPECIAL
        mask_id = MASK

    ids = _sentences(8, 12)
    a = mask_tokens(ids, Tok(), VOCAB, 0.5, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, SPECIAL, VOCAB, 0.5, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, SPECIAL, VOCAB, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].dtype == ids.dtype and a[0].shape == ids.shape


def test_mask_tokens_treats_an_unlisted_mask_id_as_special():
    ids = torch.tensor([[9, 3, 10, 11]] * 200)
    _, labels = mask_tokens(ids, [0], 12, 0.9, torch.Generator().manual_seed(0), mask_id=3)
    assert (labels[:, 1] == IGNORE_INDEX).all()


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_mask_tokens_rejects_probability_outside_open_interval(p):
    with pytest.raises(ValueError, match="mlm_probability"):
        mask_tokens(_sentences(2, 8), SPECIAL, VOCAB, p)


def test_mask_tokens_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        mask_tokens(torch.zeros(0, 5, dtype=torch.long), SPECIAL, VOCAB)
    with pytest.raises(TypeError, match="input_ids"):
        mask_tokens(torch.zeros(2, 5), SPECIAL, VOCAB)
    with pytest.raises(ValueError, match="vocab_size"):
        mask_tokens(torch.full((2, 5), VOCAB), SPECIAL, VOCAB)
    with pytest.raises(TypeError, match="tokenizer_or_special_ids"):
        mask_tokens(_sentences(2, 8), "PAD", VOCAB)
    with pytest.raises(ValueError, match="mask_replace_prob"):
        mask_tokens(_sentences(2, 8), SPECIAL, VOCAB, mask_replace_prob=0.95, random_replace_prob=0.1)


def test_mlm_loss_counts_only_chosen_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, VOCAB, generator=g, requires_grad=True)
    labels = torch.full((3, 5), IGNORE_INDEX)
    labels[0, 1], labels[2, 4] = 9, 20
    expected = F.cross_entropy(torch.stack([logits[0, 1], logits[2, 4]]), torch.tensor([9, 20]))
    assert torch.allclose(mlm_loss(logits, labels), expected)
    mlm_loss(logits, labels).backward()
    assert logits.grad[1].abs().sum() == 0
    assert mlm_loss(logits, torch.full((3, 5), IGNORE_INDEX)).item() == 0.0
    with pytest.raises(ValueError, match=r"labels must have shape \(B, L\)"):
        mlm_loss(logits, labels[:, :4])


# ----------------------------------------------------------------------------------------------------------- MIM
def test_num_kept_avoids_the_float_rounding_trap():
    assert int(10 * (1 - 0.9)) == 0  # the trap: 1 - 0.9 == 0.0999...98 in binary floating point
    assert num_kept(10, 0.9) == 1
    assert num_kept(64, 0.75) == 16
    assert num_kept(196, 0.75) == 49
    for length, ratio in itertools.product(range(1, 101), [0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.6, 0.7, 0.75, 0.9]):
        exact = math.floor(length * (1 - Fraction(str(ratio))))
        assert num_kept(length, ratio) == exact, (length, ratio)


def test_random_masking_invariants():
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(6, 16, 5, generator=g)
    kept, mask, ids_restore = random_masking(patches, 0.75, torch.Generator().manual_seed(1))
    len_keep = num_kept(16, 0.75)
    assert kept.shape == (6, len_keep, 5) and mask.shape == (6, 16) and ids_restore.shape == (6, 16)
    assert torch.equal(mask.sum(1), torch.full((6,), 16.0 - len_keep))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # the kept patches are exactly the visible ones
    for b in range(6):
        visible = patches[b][mask[b] == 0]
        assert torch.equal(torch.sort(visible.sum(-1)).values, torch.sort(kept[b].sum(-1)).values)
    # gathering [kept, hidden] (shuffled order) with ids_restore gives the original order back
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = torch.gather(patches, 1, ids_shuffle.unsqueeze(-1).expand(-1, -1, 5))
    assert torch.equal(shuffled[:, :len_keep], kept)
    assert torch.equal(restore_order(shuffled, ids_restore), patches)
    # a learned filler for the hidden ones, restored, lands exactly on the masked positions
    filler = torch.cat([kept, torch.full((6, 16 - len_keep, 5), 99.0)], dim=1)
    restored = restore_order(filler, ids_restore)
    assert torch.equal(restored[..., 0] == 99.0, mask.bool())
    # per-sample masks differ; same generator seed -> same masks
    assert len({tuple(m.tolist()) for m in mask}) > 1
    again = random_masking(patches, 0.75, torch.Generator().manual_seed(1))
    assert torch.equal(again[1], mask) and torch.equal(again[0], kept)


@pytest.mark.parametrize("length, ratio", [(10, 0.9), (7, 0.5), (49, 0.75), (3, 0.34)])
def test_random_masking_exact_count(length, ratio):
    _, mask, _ = random_masking(torch.randn(4, length, 2), ratio)
    assert (mask.sum(1) == length - num_kept(length, ratio)).all()


def test_random_masking_bad_inputs():
    for ratio in (0.0, 1.0, 1.2, -0.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            random_masking(torch.randn(2, 8, 3), ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.randn(2, 5, 3), 0.9)  # would keep 0 of 5
    with pytest.raises(ValueError, match="patches"):
        random_masking(torch.randn(0, 8, 3), 0.5)
    with pytest.raises(ValueError, match="patches"):
        random_masking(torch.randn(8, 3), 0.5)


def test_patchify_layout_and_roundtrip():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    # patch (row 1, column 2) = image block, flattened over rows, columns, then channels
    block = images[:, :, 4:8, 8:12].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(patches[:, 1 * 3 + 2], block)
    assert torch.equal(unpatchify(patches, 4, (8, 12)), images)
    with pytest.raises(ValueError, match="patch_size"):
        patchify(images, 5)
    with pytest.raises(ValueError, match="patches"):
        unpatchify(patches, 4, 8)


def test_mim_loss_ignores_visible_patches():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 8, 12, generator=g)
    target = torch.randn(3, 8, 12, generator=g)
    _, mask, _ = random_masking(pred, 0.5, g)
    loss = mim_loss(pred, target, mask)
    hidden = mask.bool()
    assert torch.allclose(loss, ((pred - target) ** 2)[hidden].mean())
    pred2, target2 = pred.clone(), target.clone()
    pred2[~hidden] = float("nan")
    target2[~hidden] = 1e6
    assert torch.equal(mim_loss(pred2, target2, mask), loss)
    # the gradient reaches hidden patches only
    p = pred2.clone().requires_grad_(True)
    mim_loss(p, target2, mask).backward()
    assert p.grad[~hidden].abs().sum() == 0 and p.grad[hidden].abs().sum() > 0
    # norm_pix: target normalised per patch
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(mim_loss(pred, target, mask, norm_pix=True), ((pred - normed) ** 2)[hidden].mean())


def test_mim_loss_bad_inputs():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="target_patches must have shape"):
        mim_loss(x, torch.randn(2, 4, 2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask"):
        mim_loss(x, x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="nothing is masked"):
        mim_loss(x, x, torch.zeros(2, 4))


# ----------------------------------------------------------------------------------------------------------- ITM
def test_hard_negatives_never_positive_nor_same_scene():
    g = torch.Generator().manual_seed(0)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    same = groups[:, None] == groups[None, :]
    for trial in range(50):
        sim = torch.randn(10, 10, generator=g) * (1 + trial)
        sim[same] += 5.0  # positives look most similar, as after ITC training
        neg = sample_hard_negatives(sim, groups, g)
        assert neg.shape == (10,) and neg.dtype == torch.long
        assert (neg != torch.arange(10)).all()
        assert (groups[neg] != groups).all()


def test_hard_negatives_survive_one_hot_similarities():
    g = torch.Generator().manual_seed(0)
    for scale in (1e3, 1e4, 1e30):
        sim = torch.eye(6) * scale
        neg = sample_hard_negatives(sim, generator=g)
        assert (neg != torch.arange(6)).all()
    sim = torch.full((4, 4), -1e30)
    sim.fill_diagonal_(1e30)
    assert (sample_hard_negatives(sim, generator=g) != torch.arange(4)).all()


def test_hard_negatives_follow_softmax_of_similarity():
    sim = torch.tensor([[10.0, 0.0, math.log(3.0)], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, generator=g)[0] for _ in range(3000)])
    share = (draws == 2).float().mean().item()
    assert abs(share - 0.75) < 0.04  # std ~0.008
    assert not (draws == 0).any()


def test_hard_negatives_errors():
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="no valid negative"):
        sample_hard_negatives(torch.zeros(3, 3), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        sample_hard_negatives(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="group_ids"):
        sample_hard_negatives(torch.zeros(3, 3), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="empty"):
        sample_hard_negatives(torch.zeros(0, 0))


def test_itm_pairs_head_and_loss():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(5, 5, generator=g)
    groups = torch.tensor([0, 1, 1, 2, 3])
    image_index, text_index, labels = make_itm_pairs(sim, groups, g)
    assert image_index.shape == text_index.shape == labels.shape == (15,)
    assert labels.tolist() == [1] * 5 + [0] * 10
    pos = labels == 1
    assert torch.equal(groups[image_index[pos]], groups[text_index[pos]])
    assert (groups[image_index[~pos]] != groups[text_index[~pos]]).all()
    head = ITMHead(8)
    logits = head(torch.randn(15, 8, generator=g))
    assert logits.shape == (15, 2)
    loss = itm_loss(logits, labels)
    assert torch.allclose(loss, F.cross_entropy(logits, labels))
    assert 0.0 <= itm_accuracy(logits, labels) <= 1.0
    assert head.match_score(torch.randn(4, 8)).shape == (4,)
    with pytest.raises(ValueError, match="agree on N"):
        itm_loss(logits, labels[:3])
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        head(torch.randn(3, 9))


# ----------------------------------------------------------------------------------------------------------- ITG
def test_shift_for_teacher_forcing():
    ids = torch.tensor([[CLS, 10, 11, EOS, PAD]])
    inputs, targets = shift_for_teacher_forcing(ids, bos_id=BOS)
    assert inputs.tolist() == [[BOS, 10, 11, EOS]]
    assert targets.tolist() == [[10, 11, EOS, PAD]]
    assert ids[0, 0] == CLS  # input untouched
    with pytest.raises(ValueError, match="L >= 2"):
        shift_for_teacher_forcing(torch.tensor([[CLS]]))


def test_caption_loss_ignores_pad():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 9, generator=g)
    targets = torch.tensor([[5, 6, 2, PAD], [7, PAD, PAD, PAD]])
    loss = caption_loss(logits, targets, pad_id=PAD)
    real = targets != PAD
    assert torch.allclose(loss, F.cross_entropy(logits[real], targets[real]))
    changed = logits.clone()
    changed[~real] = torch.randn(int((~real).sum()), 9, generator=g) * 100
    assert torch.equal(caption_loss(changed, targets, PAD), loss)
    smooth = caption_loss(logits, targets, PAD, label_smoothing=0.1)
    assert torch.allclose(smooth, F.cross_entropy(logits[real], targets[real], label_smoothing=0.1))
    assert not torch.allclose(smooth, loss)
    assert caption_loss(logits, torch.zeros(2, 4, dtype=torch.long), PAD).item() == 0.0


def test_caption_loss_bad_inputs():
    logits = torch.randn(2, 4, 9)
    with pytest.raises(ValueError, match="agree"):
        caption_loss(logits, torch.zeros(2, 5, dtype=torch.long), PAD)
    with pytest.raises(ValueError, match="targets"):
        caption_loss(logits, torch.full((2, 4), 9), PAD)
    with pytest.raises(ValueError, match="label_smoothing"):
        caption_loss(logits, torch.zeros(2, 4, dtype=torch.long), PAD, label_smoothing=1.0)
    with pytest.raises(ValueError, match="empty"):
        caption_loss(torch.randn(0, 4, 9), torch.zeros(0, 4, dtype=torch.long), PAD)


class _ToyLM:
    """A fixed random 'model': next-token logits depend on the last two tokens and the sample."""

    def __init__(self, vocab: int, batch: int, seed: int = 0, eos_bias: float = 0.0, eos: int = EOS):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(batch, vocab, vocab, vocab, generator=g) * 2
        self.table[..., eos] += eos_bias
        self.calls = 0

    def __call__(self, tokens: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        prev = tokens[:, -2] if tokens.shape[1] > 1 else tokens[:, -1]
        return self.table[batch_index, prev, tokens[:, -1]]


def _brute_force_best(lm: _ToyLM, sample: int, vocab: int, max_len: int, bos: int, eos: int) -> float:
    """Highest summed log-probability over all sequences that end at EOS or at max_len."""
    best = -math.inf
    frontier = [([bos], 0.0)]
    for _ in range(max_len):
        nxt = []
        for seq, score in frontier:
            logp = F.log_softmax(lm(torch.tensor([seq]), torch.tensor([sample]))[0].double(), -1)
            for v in range(vocab):
                s = score + logp[v].item()
                if v == eos:
                    best = max(best, s)
                else:
                    nxt.append((seq + [v], s))
        frontier = nxt
    return max([best] + [s for _, s in frontier])


def test_greedy_and_single_beam_agree():
    lm = _ToyLM(vocab=12, batch=5, seed=1, eos_bias=1.0)
    greedy, g_scores = generate(lm, 5, BOS, EOS, max_len=8, return_scores=True)
    beam, b_scores = beam_search(lm, 5, BOS, EOS, 8, num_beams=1)
    assert torch.equal(greedy, beam)
    assert torch.allclose(g_scores, b_scores)
    # greedy really takes the argmax each step, and stops at EOS (PAD afterwards)
    for b in range(5):
        seq = [BOS]
        for t in range(greedy.shape[1]):
            if seq[-1] == EOS:
                assert greedy[b, t] == PAD
                continue
            nxt = int(lm(torch.tensor([seq]), torch.tensor([b]))[0].argmax())
            assert greedy[b, t] == nxt
            seq.append(nxt)


def test_beam_search_with_enough_beams_is_exhaustive():
    vocab, max_len, bos, eos = 5, 3, 1, 2
    lm = _ToyLM(vocab=vocab, batch=3, seed=2, eos_bias=0.5, eos=eos)
    _, scores = beam_search(lm, 3, bos, eos, max_len, num_beams=vocab**max_len, length_penalty=0.0)
    for b in range(3):
        assert scores[b].item() == pytest.approx(_brute_force_best(lm, b, vocab, max_len, bos, eos), abs=1e-5)
    # with every prefix kept, the beam can only be as good as greedy or better
    _, greedy_scores = greedy_decode(lm, 3, bos, eos, max_len)
    assert (scores >= greedy_scores - 1e-9).all()


def test_generate_is_deterministic_and_stops_at_eos():
    lm = _ToyLM(vocab=10, batch=4, seed=3, eos_bias=2.0)
    a = generate(lm, 4, BOS, EOS, max_len=6, num_beams=3, length_penalty=0.6)
    b = generate(lm, 4, BOS, EOS, max_len=6, num_beams=3, length_penalty=0.6)
    assert torch.equal(a, b) and a.shape[0] == 4 and a.shape[1] <= 6
    for row in a.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])


def test_generate_bad_inputs():
    lm = _ToyLM(vocab=6, batch=2)
    with pytest.raises(ValueError, match="num_beams"):
        generate(lm, 2, BOS, EOS, 4, num_beams=0)
    with pytest.raises(ValueError, match="max_len"):
        generate(lm, 2, BOS, EOS, 0)
    with pytest.raises(TypeError, match="step_fn"):
        generate("model", 2, BOS, EOS, 4)
    with pytest.raises(ValueError, match="step_fn must return"):
        generate(lambda t, i: torch.zeros(3), 2, BOS, EOS, 4)
    with pytest.raises(ValueError, match="length_penalty"):
        generate(lm, 2, BOS, EOS, 4, num_beams=2, length_penalty=float("nan"))
