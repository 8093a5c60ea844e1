"""An image captioner trained with image-to-text generation (ITG) — article §4.2 and §5.2, chapters 5 and 6.

The model of BLIP's captioning branch, in miniature: an image encoder turns the image into tokens; a text
decoder reads the caption so far with *causal* self-attention and looks at the image tokens with
*cross-attention* (:class:`mmcourse.blocks.TransformerDecoder`); a linear head scores the next word. Training is
teacher-forced (:func:`mmcourse.pretraining.caption_loss`); generation is greedy or beam search
(:func:`mmcourse.pretraining.generate`).

Also here: :class:`ImageTokens` (position-aware image tokens: coordinate channels, position embedding, optional
transformer layers), :func:`train_captioner` (fixed-step training), :func:`caption_images` (batched decoding to
text) and the scoring of ShapesWorld captions — :func:`mentioned_objects`, :func:`object_match_rate` and
:func:`fact_key` (what a two-object caption asserts, whatever its word order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.blocks import TransformerDecoder, TransformerEncoder
from mmcourse.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mmcourse.encoders import tokens_of
from mmcourse.pretraining.itg import caption_loss, generate, shift_for_teacher_forcing
from mmcourse.train import evaluating, module_device

__all__ = [
    "Captioner",
    "ImageTokens",
    "mentioned_objects",
    "fact_key",
    "object_match_rate",
    "train_captioner",
    "caption_images",
]

# Special ids of the course tokenizer (mmcourse.data.Tokenizer): PAD=0, CLS=1, SEP=2, MASK=3, BOS=4, EOS=5.


class ImageTokens(nn.Module):
    """An image encoder's tokens, made position-aware: optional coordinate channels, a learned position
    embedding and ``layers`` transformer layers.

    Args:
        encoder: image encoder returning ``tokens (B, N, D)`` on a ``grid_size × grid_size`` grid; with
            ``coordinates`` it must take ``C + 2`` input channels.
        layers, num_heads, mlp_ratio: transformer layers over the tokens (0 = none).
        coordinates: append two channels holding each pixel's x and y in [-1, 1] (CoordConv), so convolutional
            features can say precisely *where* an object is — pooled CNN cells otherwise blur positions inside
            a cell, and "left of" versus "above" depends on them.

    ``forward(images (B, C, S, S)) → (B, N, D)``; ``dim`` and ``grid_size`` as the encoder's.
    """

    def __init__(
        self,
        encoder: nn.Module,
        layers: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        coordinates: bool = False,
    ):
        super().__init__()
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise ValueError(f"layers must be an int >= 0, got {layers!r}")
        self.encoder = encoder
        self.dim = encoder.dim
        self.grid_size = encoder.grid_size
        self.coordinates = bool(coordinates)
        self.pos = nn.Parameter(torch.randn(1, self.grid_size**2, self.dim) * 0.02)
        self.context = TransformerEncoder(self.dim, layers, num_heads, mlp_ratio) if layers else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.coordinates:
            b, _, h, w = images.shape
            ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
            xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, H, W): x then y
            images = torch.cat([images, grid.expand(b, -1, -1, -1)], dim=1)
        tokens = tokens_of(self.encoder(images)) + self.pos
        return self.context(tokens) if self.context is not None else tokens


class Captioner(nn.Module):
    """Image encoder + causal text decoder with cross-attention to the image tokens.

    Args:
        vocab_size: tokenizer vocabulary size ``V``.
        image_encoder: any module mapping images to ``(B, N, Dc)`` tokens (or an ``EncoderOutput``) with a ``dim``
            attribute giving ``Dc`` — e.g. :class:`mmcourse.encoders.SmallCNN` or ``TinyViT``. It may be shared
            with another model (BLIP shares it between its objectives).
        dim, depth, num_heads, mlp_ratio, dropout: decoder size.
        max_len: longest decoder input (``[BOS]`` + caption words), bounds ``generate(max_len=...)``.
        pad_id, bos_id, eos_id: special ids (the course tokenizer's by default).
        tie_embeddings: share the word embedding with the output head (fewer parameters, faster training).

    ``forward(images, decoder_input_ids (B, T)) → logits (B, T, V)``; ``loss(images, caption_ids)`` → scalar;
    ``generate(images, num_beams, max_len, length_penalty)`` → ``(B, T')`` token ids.
    """

    def __init__(
        self,
        vocab_size: int,
        image_encoder: nn.Module,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        max_len: int = 24,
        pad_id: int = PAD_ID,
        bos_id: int = BOS_ID,
        eos_id: int = EOS_ID,
        tie_embeddings: bool = True,
    ):
        super().__init__()
        check_positive(vocab_size, "vocab_size", integer=True)
        check_positive(max_len, "max_len", integer=True)
        if not isinstance(image_encoder, nn.Module):
            raise TypeError(f"image_encoder must be an nn.Module, got {type(image_encoder).__name__}")
        context_dim = getattr(image_encoder, "dim", None)
        if not isinstance(context_dim, int):
            raise ValueError("image_encoder must expose its token width as an int attribute `dim`")
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
                raise ValueError(f"{name} must be an int in [0, vocab_size={vocab_size}), got {value!r}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.image_encoder = image_encoder
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.decoder = TransformerDecoder(dim, depth, num_heads, mlp_ratio, dropout, context_dim=context_dim)
        self.head = nn.Linear(dim, vocab_size, bias=not tie_embeddings)
        if tie_embeddings:
            self.head.weight = self.token_embed.weight

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (whatever the image encoder takes, batch first) → image tokens ``(B, N, Dc)``."""
        check_tensor(images, "images", floating=True)
        if images.dim() == 0 or images.shape[0] == 0:
            raise ValueError(f"images must hold a non-empty batch, got shape {tuple(images.shape)}")
        return tokens_of(self.image_encoder(images))

    def decode(self, decoder_input_ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` for decoder inputs ``(B, T)`` given image tokens ``(B, N, Dc)``.

        No padding mask is needed: with causal attention a real token never sees the PAD positions after it,
        and outputs at PAD positions are ignored by the loss.
        """
        check_tensor(decoder_input_ids, "decoder_input_ids", ndim=2, floating=False)
        b, t = decoder_input_ids.shape
        if t > self.max_len:
            raise ValueError(f"decoder_input_ids has length {t}, longer than max_len={self.max_len}")
        if image_tokens.shape[0] != b:
            raise ValueError(
                f"decoder_input_ids (B={b}) and image_tokens (B={image_tokens.shape[0]}) must share the batch"
            )
        x = self.token_embed(decoder_input_ids) + self.pos_embed[:, :t]
        return self.head(self.decoder(x, image_tokens))

    def forward(self, images: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.decode(decoder_input_ids, self.encode_images(images))

    def loss(
        self,
        images: torch.Tensor,
        caption_ids: torch.Tensor,
        label_smoothing: float = 0.0,
        image_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced captioning loss.

        Args:
            images: a batch of images ``(B, ...)`` (ignored when ``image_tokens`` is given).
            caption_ids: ``(B, L)`` encoded captions ``[CLS] w1 ... wn [EOS] [PAD]...``; the decoder reads
                ``[BOS] w1 ... wn [EOS]`` (first token replaced by BOS, last column dropped) and predicts
                ``w1 ... wn [EOS] [PAD]``; PAD targets are ignored.
            label_smoothing: see :func:`mmcourse.pretraining.caption_loss`.
            image_tokens: precomputed ``(B, N, Dc)`` image tokens (e.g. shared with other objectives).
        """
        inputs, targets = shift_for_teacher_forcing(caption_ids, bos_id=self.bos_id)
        if image_tokens is None:
            image_tokens = self.encode_images(images)
        logits = self.decode(inputs, image_tokens)
        return caption_loss(logits, targets, self.pad_id, label_smoothing)

    def generate(
        self,
        images: torch.Tensor,
        num_beams: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        return_scores: bool = False,
    ):
        """Caption a batch of images (greedy with ``num_beams=1``, beam search otherwise).

        Returns token ids ``(B, T)`` on the images' device (no BOS; generation stops at EOS, PAD afterwards),
        plus the summed log-probabilities ``(B,)`` when ``return_scores``. Runs in eval mode and restores the
        previous mode afterwards.
        """
        max_len = self.max_len if max_len is None else max_len
        check_positive(max_len, "max_len", integer=True)
        if max_len > self.max_len:
            raise ValueError(f"max_len must be <= the model's max_len={self.max_len}, got {max_len}")
        with evaluating(self):
            memory = self.encode_images(images)

            def step(tokens: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
                return self.decode(tokens, memory[batch_index])[:, -1]

            return generate(
                step,
                memory.shape[0],
                self.bos_id,
                self.eos_id,
                max_len,
                num_beams,
                length_penalty,
                pad_id=self.pad_id,
                device=memory.device,
                return_scores=return_scores,
            )


# ---------------------------------------------------------------------------------------------- ShapesWorld
def mentioned_objects(text: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a ShapesWorld sentence names, in order ("a red circle left of a blue box" →
    ``[("red", "circle"), ("blue", "square")]``); shape synonyms and plurals are mapped back, sizes skipped."""
    from mmcourse.data.vocab import COLORS, PLURALS, SHAPES, SYNONYMS

    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    to_shape = {s: s for s in SHAPES} | {v: k for k, v in SYNONYMS.items() if k in SHAPES}
    to_shape |= {v: k for k, v in PLURALS.items()}
    found, color = [], None
    for word in text.lower().split():
        if word in COLORS:
            color = word
        elif word in to_shape and color is not None:
            found.append((color, to_shape[word]))
            color = None
    return found


_RELATION_PHRASES = {"left of": "left of", "right of": "right of", "above": "above", "below": "below",
                     "over": "above", "under": "below"}  # fmt: skip
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def fact_key(text: str) -> tuple:
    """What a two-object ShapesWorld caption asserts, independent of its word order.

    "a red circle left of a blue square" and "a blue square right of a red circle" get the same key, any other
    caption a different one; sentences that are not "<object> <relation> <object>" are keyed by their words.
    """
    objects = mentioned_objects(text)
    words = " ".join(text.lower().split())
    relations = [r for phrase, r in _RELATION_PHRASES.items() if f" {phrase} " in f" {words} "]
    if len(objects) != 2 or len(relations) != 1:
        return ("text", words)
    (a, b), rel = objects, relations[0]
    return min((a, rel, b), (b, _INVERSE[rel], a))


def object_match_rate(texts: Sequence[str], objects: Sequence[Sequence[dict]]) -> float:
    """Share of captions whose (colour, shape) mentions equal the scene's objects, as multisets.

    Args:
        texts: generated captions, one per scene.
        objects: per scene, the list of ``{"color", "shape", ...}`` dicts (``world.objects(i)``).
    """
    if isinstance(texts, str) or len(texts) != len(objects):
        raise ValueError(f"texts and objects must be sequences of the same length, got {len(texts)} and {len(objects)}")
    if not texts:
        raise ValueError("texts must not be empty")
    hits = 0
    for text, objs in zip(texts, objects, strict=True):
        hits += sorted(mentioned_objects(text)) == sorted((o["color"], o["shape"]) for o in objs)
    return hits / len(texts)


def train_captioner(
    model: Captioner,
    images: torch.Tensor,
    caption_ids: torch.Tensor,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 2e-3,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    **fit_kwargs,
):
    """Teacher-forced training for exactly ``steps`` steps (see :func:`mmcourse.train.fit`).

    Args:
        images: ``(N, 3, S, S)``; caption_ids: ``(N, L)`` encoded captions (``tokenizer.encode``).
    Returns:
        the training :class:`~mmcourse.train.History`.
    """
    from mmcourse.train import fit

    check_tensor(images, "images", floating=True)
    check_tensor(caption_ids, "caption_ids", ndim=2, floating=False)
    if images.shape[0] != caption_ids.shape[0]:
        raise ValueError(
            f"images and caption_ids must hold the same number of rows, got {images.shape[0]} and "
            f"{caption_ids.shape[0]}"
        )

    def step(m: Captioner, batch: dict):
        return m.loss(batch["images"], batch["caption_ids"], label_smoothing)

    fit_kwargs.setdefault("lr_schedule", "cosine")
    fit_kwargs.setdefault("warmup_steps", min(50, steps // 10))
    return fit(
        model,
        step,
        {"images": images, "caption_ids": caption_ids},
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        progress=progress,
        desc="captioner",
        **fit_kwargs,
    )


def caption_images(model: Captioner, images: torch.Tensor, tokenizer, batch_size: int = 256, **generate_kwargs):
    """Generated captions (list of str) for ``images (N, 3, S, S)``, in batches, decoded by ``tokenizer``."""
    device = module_device(model)
    texts: list[str] = []
    for start in range(0, images.shape[0], batch_size):
        ids = model.generate(images[start : start + batch_size].to(device), **generate_kwargs)
        texts += tokenizer.decode(ids.cpu())
    return texts
