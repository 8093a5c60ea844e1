"""Masked language modelling (MLM) — article §4.2, chapter 5.

BERT's corruption rule, as one function: choose ~15 % of the *ordinary* tokens of a batch (special tokens
such as CLS, EOS and PAD are never chosen); of the chosen ones, 80 % become ``[MASK]``, 10 % become a
random ordinary token and 10 % stay unchanged. The model must then predict the original token at every
chosen position, and only there: ``labels`` holds the original id at chosen positions and ``-100``
(PyTorch's ``ignore_index``) elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mmcourse._checks import check_positive, check_probability, check_shape, check_tensor, check_token_ids
from mmcourse.data.tokenizer import MASK_ID

__all__ = ["IGNORE_INDEX", "DEFAULT_MASK_ID", "special_ids_of", "mask_tokens", "mlm_loss"]

IGNORE_INDEX = -100
"""Label value that ``F.cross_entropy`` skips: every position that was not chosen for prediction."""

DEFAULT_MASK_ID = MASK_ID
"""The ``[MASK]`` id of the course tokenizer (``mmcourse.data.Tokenizer.mask_id``)."""


def special_ids_of(tokenizer_or_special_ids, mask_id: int | None = None) -> tuple[list[int], int]:
    """The special ids (never chosen, never drawn as random replacements) and the ``[MASK]`` id.

    Accepts the course ``Tokenizer`` (``special_ids``, ``mask_id``), a Hugging Face tokenizer
    (``all_special_ids``, ``mask_token_id``) or an iterable of ints; for the last, ``mask_id`` defaults to
    the course tokenizer's ``[MASK]`` id. The mask id is always counted as special.
    """
    obj = tokenizer_or_special_ids
    if hasattr(obj, "special_ids"):
        ids = obj.special_ids
        ids = ids.values() if isinstance(ids, dict) else ids
        found_mask = getattr(obj, "mask_id", None)
    elif hasattr(obj, "all_special_ids"):
        ids = obj.all_special_ids
        found_mask = getattr(obj, "mask_token_id", None)
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, torch.Tensor)):
        ids = obj
        found_mask = None
    elif isinstance(obj, torch.Tensor) and obj.dim() == 1 and not obj.is_floating_point():
        ids = obj.tolist()
        found_mask = None
    else:
        raise TypeError(
            "tokenizer_or_special_ids must be a tokenizer (with special_ids / all_special_ids) or an "
            f"iterable of int token ids, got {type(obj).__name__}"
        )
    special = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"tokenizer_or_special_ids must contain ints, got {i!r} ({type(i).__name__})")
        special.append(i)
    if mask_id is None:
        mask_id = found_mask if found_mask is not None else DEFAULT_MASK_ID
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
        raise ValueError(f"mask_id must be a non-negative int, got {mask_id!r}")
    if mask_id not in special:
        special.append(mask_id)
    return sorted(set(special)), mask_id


def mask_tokens(
    input_ids: torch.Tensor,
    tokenizer_or_special_ids,
    vocab_size: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    *,
    mask_id: int | None = None,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch of token ids for MLM (the BERT 80/10/10 rule).

    Args:
        input_ids: ``(B, L)`` integer token ids (any leading shape works; ``B * L`` must be > 0).
        tokenizer_or_special_ids: the course ``Tokenizer``, a Hugging Face tokenizer, or the special ids
            (PAD, CLS, EOS, ...). Special tokens are never chosen and never used as random replacements.
        vocab_size: number of ids; every id in ``input_ids`` must be ``< vocab_size``.
        mlm_probability: chance that an ordinary token is chosen for prediction, in (0, 1).
        generator: optional ``torch.Generator`` for reproducible draws (draws happen on its device, so a CPU
            generator gives the same corruption for CPU and CUDA inputs).
        mask_id: the ``[MASK]`` id when ``tokenizer_or_special_ids`` is a list (default: the course
        tokenizer's).
        mask_replace_prob, random_replace_prob: of the chosen tokens, the share replaced by ``[MASK]``
            (0.8) and by a random ordinary token (0.1); the rest stays unchanged.
    Returns:
        ``(masked_ids, labels)``, both shaped like ``input_ids`` and on its device: ``masked_ids`` is the
        corrupted input, ``labels`` is the original id at chosen positions and ``-100`` everywhere else.

    Chosen positions are drawn independently per token (Bernoulli, as in BERT and Hugging Face's
    ``DataCollatorForLanguageModeling``), so the count per row varies; a random replacement may, by chance,
    draw the original token.
    """
    check_positive(vocab_size, "vocab_size", integer=True)
    check_token_ids(input_ids, "input_ids", vocab_size)
    _check_fate_probabilities(mlm_probability, mask_replace_prob, random_replace_prob)
    special, mask_id = special_ids_of(tokenizer_or_special_ids, mask_id)
    if mask_id >= vocab_size:
        raise ValueError(f"mask_id must be < vocab_size={vocab_size}, got {mask_id}")
    is_special = torch.zeros(vocab_size, dtype=torch.bool)
    is_special[[s for s in special if s < vocab_size]] = True
    ordinary_ids = (~is_special).nonzero().squeeze(1)
    if random_replace_prob > 0 and ordinary_ids.numel() == 0:
        raise ValueError(f"no ordinary (non-special) id exists below vocab_size={vocab_size} to draw from")

    # The random draws come from the generator's device (the CPU by default), so a seed gives the same masks on
    # every device; the rule itself runs where the ids are.
    device, shape = input_ids.device, input_ids.shape
    draw = generator.device if generator is not None else torch.device("cpu")
    candidate = ~is_special.to(device)[input_ids]
    chosen = (torch.rand(shape, generator=generator, device=draw).to(device) < mlm_probability) & candidate
    # One uniform number per token decides its fate: [0, 0.8) -> MASK, [0.8, 0.9) -> random, rest unchanged.
    fate = torch.rand(shape, generator=generator, device=draw).to(device)
    to_mask = chosen & (fate < mask_replace_prob)
    to_random = chosen & (fate >= mask_replace_prob) & (fate < mask_replace_prob + random_replace_prob)
    masked = torch.where(to_mask, mask_id, input_ids)
    if ordinary_ids.numel() > 0:
        pick = torch.randint(ordinary_ids.numel(), shape, generator=generator, device=draw)
        masked = torch.where(to_random, ordinary_ids[pick].to(device), masked)
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    return masked, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the chosen positions only.

    Args:
        logits: ``(B, L, V)`` token scores.
        labels: ``(B, L)`` from :func:`mask_tokens` (``-100`` = not chosen).
    Returns:
        scalar loss (0 with a gradient when no position was chosen, rather than NaN).
    """
    check_tensor(logits, "logits", ndim=3, floating=True)
    check_tensor(labels, "labels", floating=False)
    check_shape(labels, "labels", logits.shape[:2], "(B, L) of logits (B, L, V)")
    # The mean over the chosen positions, written so that it needs no read-back of how many there are (0 when none).
    chosen = labels != IGNORE_INDEX
    total = torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="sum")
    return total / chosen.sum().clamp_min(1)


def _check_fate_probabilities(mlm_probability: float, mask_replace_prob: float, random_replace_prob: float) -> None:
    check_probability(mlm_probability, "mlm_probability")
    check_probability(mask_replace_prob, "mask_replace_prob", low_open=False, high_open=False)
    check_probability(random_replace_prob, "random_replace_prob", low_open=False, high_open=False)
    if mask_replace_prob + random_replace_prob > 1 + 1e-12:
        raise ValueError(
            "mask_replace_prob + random_replace_prob must be <= 1, got "
            f"{mask_replace_prob} + {random_replace_prob} = {mask_replace_prob + random_replace_prob}"
        )
