"""A word-level tokenizer for ShapesWorld text, with BERT/GPT-style special tokens at fixed ids.

Serves chapters 2-6 (text encoders, MLM, captioning, VQA). Text is lower-cased and split into runs of letters and
digits, so punctuation such as "?" or "," disappears. Unknown words become ``[UNK]``; nothing ever crashes on text.

Encoding formats (``input_ids`` padded to ``max_len``; ``attention_mask`` 1 = real token, 0 = padding)::

    start="cls" (default, encoders):  [CLS] w1 ... wn [EOS] [PAD] ...
    start="bos" (generation / ITG):    [BOS] w1 ... wn [EOS] [PAD] ...
    start=None:                        w1 ... wn [EOS] [PAD] ...

Too-long texts are cut so that ``[EOS]`` is always the last real token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

from mmcourse._checks import check_choice
from mmcourse.data.vocab import BASE_WORDS

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]", "[UNK]")
"""Special tokens; their ids are their positions: PAD=0 CLS=1 SEP=2 MASK=3 BOS=4 EOS=5 UNK=6."""
PAD_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
SPECIAL_IDS: tuple[int, ...] = tuple(range(len(SPECIAL_TOKENS)))
"""The ids of :data:`SPECIAL_TOKENS`, the same in every course tokenizer (``Tokenizer.special_ids``)."""

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text`` ("What colour is the circle?" -> ["what", "colour", "is", "the", "circle"])."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


class Tokenizer:
    """Word-level tokenizer: fixed special ids, then ShapesWorld's words, then any extra words.

    Args:
        words: the ordinary words of the vocabulary, in id order (duplicates and special tokens are skipped).
    Attributes:
        vocab: list of tokens (id -> token); ``vocab_size`` = ``len(vocab)``.
        pad_id, cls_id, sep_id, mask_id, bos_id, eos_id, unk_id: 0..6.
        special_ids: tuple of the seven special ids; ``special_tokens``: dict token -> id.
    """

    pad_id, cls_id, sep_id, mask_id, bos_id, eos_id, unk_id = PAD_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, words: Iterable[str] = BASE_WORDS):
        if isinstance(words, str) or not isinstance(words, Iterable):
            raise TypeError(f"words must be an iterable of str, got {type(words).__name__}")
        vocab = list(SPECIAL_TOKENS)
        seen = set(vocab)
        for i, word in enumerate(words):
            if not isinstance(word, str):
                raise TypeError(f"words[{i}] must be a str, got {word!r} ({type(word).__name__})")
            if _WORD.fullmatch(word) is None and word not in seen:
                raise ValueError(f"words[{i}] must be one lower-case word of letters/digits, got {word!r}")
            if word not in seen:
                seen.add(word)
                vocab.append(word)
        self.vocab: list[str] = vocab
        self.token_to_id: dict[str, int] = {w: i for i, w in enumerate(vocab)}
        self.special_tokens: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        self.special_ids: tuple[int, ...] = SPECIAL_IDS

    @classmethod
    def from_world(cls, world=None, extra_texts: Iterable[str] | None = None) -> Tokenizer:
        """The ShapesWorld vocabulary (identical for every world), plus the words of ``world``'s captions and of
        ``extra_texts`` that it lacks (appended in sorted order, so existing ids never move).

        Args:
            world: a ShapesWorld (or anything with ``.captions``), or None.
            extra_texts: more texts (e.g. prompt templates) whose words should get their own ids.
        """
        texts: list[str] = []
        if world is not None:
            if not hasattr(world, "captions"):
                raise TypeError(f"world must be a ShapesWorld or None, got {type(world).__name__}")
            texts += list(world.captions)
        if extra_texts is not None:
            if isinstance(extra_texts, str) or not isinstance(extra_texts, Iterable):
                raise TypeError(f"extra_texts must be an iterable of str, got {type(extra_texts).__name__}")
            for i, text in enumerate(extra_texts):
                if not isinstance(text, str):
                    raise TypeError(f"extra_texts[{i}] must be a str, got {text!r} ({type(text).__name__})")
                texts.append(text)
        base = set(BASE_WORDS)
        extra = sorted({w for text in texts for w in tokenize(text)} - base)
        return cls(BASE_WORDS + tuple(extra))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    def token_ids(self, text: str) -> list[int]:
        """Ids of the words of one text, without special tokens (unknown words -> ``unk_id``)."""
        return [self.token_to_id.get(w, self.unk_id) for w in tokenize(text)]

    def encode(
        self, texts: str | Sequence[str], max_len: int = 16, *, start: str | None = "cls"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of texts (a single str is a batch of one).

        Args:
            texts: str or sequence of B str.
            max_len: L, the padded length (>= 2, room for the start token or the words, and ``[EOS]``).
            start: "cls" -> ``[CLS] ... [EOS]``, "bos" -> ``[BOS] ... [EOS]``, None -> ``... [EOS]``.
        Returns:
            input_ids: (B, L) LongTensor; attention_mask: (B, L) LongTensor, 1 = real token, 0 = padding.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        if isinstance(max_len, bool) or not isinstance(max_len, int):
            raise TypeError(f"max_len must be an int >= 2, got {max_len!r} ({type(max_len).__name__})")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (room for a start token and [EOS]), got {max_len}")
        check_choice(start, "start", ["cls", "bos", None])
        prefix = {"cls": [self.cls_id], "bos": [self.bos_id], None: []}[start]
        rows, lengths = [], []
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] must be a str, got {text!r} ({type(text).__name__})")
            tokens = (prefix + self.token_ids(text))[: max_len - 1] + [self.eos_id]
            lengths.append(len(tokens))
            rows.append(tokens + [self.pad_id] * (max_len - len(tokens)))
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(texts), max_len)
        mask = (torch.arange(max_len)[None, :] < torch.tensor(lengths, dtype=torch.long)[:, None]).long()
        return ids, mask

    __call__ = encode

    def decode(self, ids, *, skip_special: bool = True) -> str | list[str]:
        """Turn ids back into text, stopping at the first ``[EOS]``.

        Args:
            ids: (L,) or (B, L) tensor, or a list of ints / list of lists.
            skip_special: drop PAD/CLS/SEP/BOS/EOS/MASK (``[UNK]`` is always shown).
        Returns:
            a str for (L,) input, a list of B str for (B, L).
        """
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.dim() not in (1, 2):
                raise TypeError(
                    f"ids must be an integer tensor of shape (L,) or (B, L), got {ids.dtype} {tuple(ids.shape)}"
                )
            if ids.dim() == 2:
                return [self.decode(row, skip_special=skip_special) for row in ids.tolist()]
            ids = ids.tolist()
        if not isinstance(ids, (list, tuple)):
            raise TypeError(f"ids must be a tensor or a list of ints, got {type(ids).__name__}")
        if len(ids) > 0 and isinstance(ids[0], (list, tuple)):
            return [self.decode(row, skip_special=skip_special) for row in ids]
        words = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"ids must contain ints, got {i!r} ({type(i).__name__})")
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids must lie in [0, {self.vocab_size}), got {i}")
            if i == self.eos_id:
                if not skip_special:
                    words.append(self.vocab[i])
                break
            if skip_special and i in self.special_ids and i != self.unk_id:
                continue
            words.append(self.vocab[i])
        return " ".join(words)
