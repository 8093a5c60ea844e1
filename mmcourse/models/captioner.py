"""An image captioner trained with image-to-text generation (ITG) — article §4.2 and §5.2, chapters 5 and 6.

The model of BLIP's captioning branch, in miniature: an image encoder turns the image into tokens; a text decoder
reads the caption so far with *causal* self-attention and looks at the image tokens with *cross-attention*
(:class:`mmcourse.nn.blocks.MultimodalEncoder` with ``causal=True``); a linear head scores the next word. Training
is teacher-forced (:func:`mmcourse.objectives.itg.caption_loss`); generation is greedy or beam search
(:func:`mmcourse.objectives.itg.generate`).

:class:`ImageTokens` makes position-aware image tokens (coordinate channels, position embedding, optional transformer
layers). Training and scoring captions on ShapesWorld: :mod:`mmcourse.labs.common`.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mmcourse.nn.blocks import MultimodalEncoder, TransformerEncoder
from mmcourse.nn.encoders import tokens_of
from mmcourse.objectives.itg import caption_loss, generate, shift_for_teacher_forcing
from mmcourse.train import evaluating

__all__ = ["ImageTokens", "Captioner"]

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

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, C, S, S)`` as the encoder reads them: with the two coordinate channels appended if any."""
        if not self.coordinates:
            return images
        b, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
        xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, H, W): x then y
        return torch.cat([images, grid.expand(b, -1, -1, -1)], dim=1)

    def finish(self, encoder_tokens: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens ``(B, N, D)`` + the position embedding, through the context layers."""
        tokens = encoder_tokens + self.pos
        return self.context(tokens) if self.context is not None else tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.finish(tokens_of(self.encoder(self.encoder_input(images))))


class Captioner(nn.Module):
    """Image encoder + causal text decoder with cross-attention to the image tokens.

    Args:
        vocab_size: tokenizer vocabulary size ``V``.
        image_encoder: any module mapping images to ``(B, N, Dc)`` tokens (or an ``EncoderOutput``) with a ``dim``
            attribute giving ``Dc`` — e.g. :class:`mmcourse.nn.encoders.SmallCNN` or ``TinyViT``. It may be shared
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
        self.decoder = MultimodalEncoder(dim, depth, num_heads, mlp_ratio, dropout, context_dim, causal=True)
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
            label_smoothing: see :func:`mmcourse.objectives.itg.caption_loss`.
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
