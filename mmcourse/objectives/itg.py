"""Image-to-text generation (ITG): captioning loss and decoding — article §4.2 and §5.2, chapters 5 and 6.

Training uses *teacher forcing*: the decoder reads the true caption shifted right (``[BOS] w1 ... wn``) and
must predict it shifted left (``w1 ... wn [EOS]``); padding positions are ignored. Generation feeds the
model its own output one token at a time, either greedily (the most likely token each step) or with beam
search (keep the ``num_beams`` most likely partial captions, finish at ``[EOS]``, rank finished captions by
``sum log p / length ** length_penalty``).

``generate`` is model-agnostic: it only needs a ``step_fn(tokens, batch_index) -> next-token logits``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmcourse._checks import check_positive, check_probability, check_tensor, has_values
from mmcourse.data.tokenizer import PAD_ID

__all__ = ["StepFn", "shift_for_teacher_forcing", "caption_loss", "greedy_decode", "beam_search", "generate"]

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_id(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int token id, got {value!r}")
    return value


def shift_for_teacher_forcing(
    token_ids: torch.Tensor, bos_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split encoded captions into decoder inputs and next-token targets.

    Args:
        token_ids: ``(B, L)`` e.g. ``[CLS] w1 ... wn [EOS] [PAD]...`` from the course tokenizer, ``L >= 2``.
        bos_id: if given, the first input token is replaced by it (``[CLS]`` → ``[BOS]``).
    Returns:
        ``inputs (B, L-1) = token_ids[:, :-1]`` and ``targets (B, L-1) = token_ids[:, 1:]``.
    """
    check_tensor(token_ids, "token_ids", ndim=2, floating=False)
    if token_ids.shape[0] == 0 or token_ids.shape[1] < 2:
        raise ValueError(f"token_ids must be (B, L) with B >= 1 and L >= 2, got {tuple(token_ids.shape)}")
    inputs = token_ids[:, :-1].clone()
    if bos_id is not None:
        inputs[:, 0] = _check_id(bos_id, "bos_id")
    return inputs, token_ids[:, 1:].clone()


def caption_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Teacher-forced cross-entropy of a caption decoder, padding ignored.

    Args:
        logits: ``(B, T, V)`` scores for the next token at every input position.
        targets: ``(B, T)`` next tokens, already shifted (see :func:`shift_for_teacher_forcing`).
        pad_id: target id that is ignored (no loss, no gradient).
        label_smoothing: in [0, 1): spread this much probability mass uniformly over the vocabulary.
    Returns:
        scalar mean over non-PAD targets (0, with a gradient, when every target is PAD).
    """
    check_tensor(logits, "logits", ndim=3, floating=True)
    check_tensor(targets, "targets", ndim=2, floating=False)
    if logits.shape[:2] != targets.shape:
        raise ValueError(
            "logits (B, T, V) and targets (B, T) must agree on B and T (shift the targets first), got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if targets.numel() == 0:
        raise ValueError(f"targets must not be empty, got shape {tuple(targets.shape)}")
    _check_id(pad_id, "pad_id")
    if label_smoothing != 0.0:
        check_probability(label_smoothing, "label_smoothing")
    vocab = logits.shape[-1]
    if has_values(targets):
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"targets must lie in [0, V={vocab}), got values in [{lo}, {hi}]")
    # mean over the non-PAD positions, written as sum / count so that an all-PAD batch gives 0 (not NaN)
    # without a data-dependent branch (no device sync on a GPU)
    total = F.cross_entropy(
        logits.reshape(-1, vocab),
        targets.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return total / (targets != pad_id).sum().clamp(min=1)


def _next_log_probs(step_fn: StepFn, tokens: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
    logits = step_fn(tokens, batch_index)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != tokens.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"step_fn must return next-token logits of shape ({tokens.shape[0]}, V), got {got}")
    # float64 running scores keep beam search with one beam tied to greedy decoding bit for bit
    return F.log_softmax(logits.float(), dim=-1).double()


def _validate(step_fn, batch_size, bos_id, eos_id, pad_id, max_len) -> None:
    if not callable(step_fn):
        raise TypeError(
            f"step_fn must be callable (tokens, batch_index) -> logits, got {type(step_fn).__name__}"
        )
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(max_len, "max_len", integer=True)
    for value, name in ((bos_id, "bos_id"), (eos_id, "eos_id"), (pad_id, "pad_id")):
        _check_id(value, name)


@torch.no_grad()
def greedy_decode(
    step_fn: StepFn,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    *,
    pad_id: int = PAD_ID,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding.

    Returns ``tokens (B, T)`` (no BOS; PAD after EOS; ``T <= max_len``) and ``scores (B,)`` (sum of the
    log-probabilities of the generated tokens up to EOS).
    """
    _validate(step_fn, batch_size, bos_id, eos_id, pad_id, max_len)
    device = torch.device(device) if device is not None else torch.device("cpu")
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    batch_index = torch.arange(batch_size, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, dtype=torch.float64, device=device)
    for _ in range(max_len):
        log_probs = _next_log_probs(step_fn, tokens, batch_index).to(device)
        best_score, best = log_probs.max(dim=-1)  # first index on ties, like argmax
        scores += torch.where(finished, torch.zeros_like(best_score), best_score)
        best = torch.where(finished, torch.full_like(best, pad_id), best)
        tokens = torch.cat([tokens, best.unsqueeze(1)], dim=1)
        finished |= best == eos_id
        if bool(finished.all()):
            break
    return tokens[:, 1:], scores


@torch.no_grad()
def beam_search(
    step_fn: StepFn,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    num_beams: int,
    *,
    length_penalty: float = 1.0,
    pad_id: int = PAD_ID,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search. Returns the best caption per sample, ``tokens (B, T)`` and its raw ``scores (B,)``.

    Each step expands every unfinished beam by every token and keeps the ``num_beams`` best candidates by
    summed log-probability (ties: lowest beam, then lowest token id — a stable sort). A beam that produced
    EOS is frozen (it competes with its final score and grows only PAD). Search stops when all beams are
    finished or after ``max_len`` tokens; the returned caption is the beam with the highest
    ``score / length ** length_penalty`` (length counts generated tokens up to and including EOS). With
    ``num_beams=1`` this is greedy decoding.
    """
    _validate(step_fn, batch_size, bos_id, eos_id, pad_id, max_len)
    check_positive(num_beams, "num_beams", integer=True)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise TypeError(f"length_penalty must be a number, got {length_penalty!r}")
    if not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be finite, got {length_penalty!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    b, k = batch_size, num_beams
    tokens = torch.full((b * k, 1), bos_id, dtype=torch.long, device=device)
    batch_index = torch.arange(b, device=device).repeat_interleave(k)
    beam_scores = torch.zeros(b, k, dtype=torch.float64, device=device)
    beam_scores[:, 1:] = -math.inf  # all beams start identical: expand only the first one at step 1
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, k, dtype=torch.long, device=device)
    for _ in range(max_len):
        log_probs = _next_log_probs(step_fn, tokens, batch_index).to(device)
        vocab = log_probs.shape[-1]
        candidates = beam_scores.unsqueeze(-1) + log_probs.view(b, k, vocab)
        frozen = torch.full_like(candidates, -math.inf)
        frozen[..., pad_id] = beam_scores
        candidates = torch.where(finished.unsqueeze(-1), frozen, candidates)
        flat = candidates.view(b, k * vocab)
        sorted_scores, order = torch.sort(flat, dim=1, descending=True, stable=True)
        top_scores, top = sorted_scores[:, :k], order[:, :k]
        source_beam, next_token = top // vocab, top % vocab
        was_finished = finished.gather(1, source_beam)
        lengths = lengths.gather(1, source_beam) + (~was_finished).long()
        finished = was_finished | (next_token == eos_id)
        rows = (source_beam + torch.arange(b, device=device).unsqueeze(1) * k).view(-1)
        tokens = torch.cat([tokens[rows], next_token.view(-1, 1)], dim=1)
        beam_scores = top_scores
        if bool(finished.all()):
            break
    normalised = beam_scores / lengths.clamp(min=1).double() ** length_penalty
    normalised = torch.where(torch.isnan(normalised), torch.full_like(normalised, -math.inf), normalised)
    best = normalised.argmax(dim=1)
    rows = best + torch.arange(b, device=device) * k
    return tokens[rows, 1:], beam_scores.gather(1, best.unsqueeze(1)).squeeze(1)


def generate(
    step_fn: StepFn,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    *,
    pad_id: int = PAD_ID,
    device: torch.device | str | None = None,
    return_scores: bool = False,
):
    """Decode ``batch_size`` sequences with any autoregressive model.

    Args:
        step_fn: ``step_fn(tokens, batch_index) -> logits``; ``tokens (N, t)`` long (``[BOS]`` then the
            tokens so far), ``batch_index (N,)`` says which sample each row belongs to (rows are
            ``B * num_beams`` in beam search, so the model can pick that sample's image tokens); returns
            ``(N, V)`` next-token logits.
        batch_size: ``B``.
        bos_id, eos_id: start and end tokens; decoding of a sequence stops at EOS.
        max_len: most tokens generated per sequence (EOS included, BOS not).
        num_beams: 1 = greedy, > 1 = beam search.
        length_penalty: beam search ranks finished captions by ``score / length ** length_penalty`` (> 1
            favours longer captions, 0 = raw sum of log-probabilities).
        pad_id: filler after EOS.
        device: where the token tensors live (the model's device).
        return_scores: also return the summed log-probability of each sequence.
    Returns:
        ``tokens (B, T)`` long with ``T <= max_len`` (no BOS; PAD after EOS), and ``scores (B,)`` when
        ``return_scores``. Deterministic: no sampling.
    """
    check_positive(num_beams, "num_beams", integer=True)
    if num_beams == 1:
        _validate(step_fn, batch_size, bos_id, eos_id, pad_id, max_len)
        tokens, scores = greedy_decode(
            step_fn, batch_size, bos_id, eos_id, max_len, pad_id=pad_id, device=device
        )
    else:
        tokens, scores = beam_search(
            step_fn,
            batch_size,
            bos_id,
            eos_id,
            max_len,
            num_beams,
            length_penalty=length_penalty,
            pad_id=pad_id,
            device=device,
        )
    return (tokens, scores) if return_scores else tokens
