"""Visual question answering (VQA) as answer classification with cross-attention fusion — article §5.3, chapter 6.

"VQA asks a model to answer a natural-language question about an image" (§5.3). The classic recipe, in
miniature::

    image ──► image encoder ──► image tokens (B, N, Dc) + positions ───────────────┐
                                                                                    ▼
    question ──► TextTransformer ──► question tokens (B, L, D) ──► fusion layers (self-attn + cross-attn)
                                                                    ──► [CLS] ──► answer head (B, A)

* :class:`VQAModel` — the model above, answers = ShapesWorld's ``ANSWERS``; ``use_image=False`` gives the
  *blind* (question-only) variant with the same text side, to measure what the image contributes. With a frozen
  image encoder, train it on cached tokens (:mod:`mmcourse.nn.frozen`).

ShapesWorld's questions as tensors, training, accuracy per question type and the question-only baseline are in
:mod:`mmcourse.labs.ch06_applications`.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.data.vocab import ANSWERS
from mmcourse.nn.blocks import MultimodalEncoder, TransformerEncoder
from mmcourse.nn.encoders import TextTransformer, tokens_of

__all__ = ["VQAModel"]



class VQAModel(nn.Module):
    """Question tokens attend to image tokens; the fused ``[CLS]`` token is classified into an answer.

    Args:
        vocab_size: tokenizer vocabulary size.
        image_encoder: a module ``scenes (B, ...) → tokens (B, N, Dc)`` (or an ``EncoderOutput``) exposing
            ``.dim`` = ``Dc`` and ``.grid_size`` (``N = grid_size²``): e.g. :class:`mmcourse.nn.encoders.SmallCNN` on
            images, or :class:`mmcourse.nn.frozen.PrecomputedTokens` on cached tokens of a frozen encoder. ``None``
            only with ``use_image=False``.
        num_answers: size ``A`` of the answer vocabulary (default: ``len(ANSWERS)``).
        dim: width of the question encoder and the fusion layers.
        text_depth, fusion_depth, num_heads, mlp_ratio, dropout: sizes of the question encoder and the fusion.
        max_len: longest question (in tokens, ``[CLS]`` and ``[EOS]`` included).
        use_image: ``False`` = the blind baseline: no image, and ``fusion_depth`` self-attention layers over the
            question in place of the fusion layers — the same text side, nothing to look at.

    ``forward(scenes (B, ...) | None, input_ids (B, L), attention_mask=None (B, L), need_weights=False)
    → logits (B, A)``; with ``need_weights`` also the list of cross-attention weights ``(B, H, L, N)`` of each
    fusion layer (empty for the blind model).
    """

    def __init__(
        self,
        vocab_size: int,
        image_encoder: nn.Module | None,
        num_answers: int = len(ANSWERS),
        dim: int = 64,
        text_depth: int = 1,
        fusion_depth: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        max_len: int = 16,
        use_image: bool = True,
    ):
        super().__init__()
        check_positive(vocab_size, "vocab_size", integer=True)
        check_positive(num_answers, "num_answers", integer=True)
        check_positive(dim, "dim", integer=True)
        check_positive(fusion_depth, "fusion_depth", integer=True)
        self.use_image = bool(use_image)
        self.num_answers = num_answers
        self.text_encoder = TextTransformer(vocab_size, dim, text_depth, num_heads, max_len, "cls", mlp_ratio, dropout)
        if self.use_image:
            if not isinstance(image_encoder, nn.Module):
                raise TypeError(
                    f"image_encoder must be an nn.Module when use_image=True, got {type(image_encoder).__name__}"
                )
            image_dim, grid = getattr(image_encoder, "dim", None), getattr(image_encoder, "grid_size", None)
            if not isinstance(image_dim, int) or not isinstance(grid, int):
                raise ValueError(
                    "image_encoder must expose its token width `dim` and token grid `grid_size` as ints, "
                    f"got dim={image_dim!r}, grid_size={grid!r}"
                )
            self.image_encoder = image_encoder
            self.num_image_tokens = grid * grid
            # cross-attention ignores the order of its keys: a learned position per image token says where it is
            self.image_pos = nn.Parameter(torch.randn(1, self.num_image_tokens, image_dim) * 0.02)
            self.fusion = MultimodalEncoder(dim, fusion_depth, num_heads, mlp_ratio, dropout, context_dim=image_dim)
        else:
            if image_encoder is not None:
                raise ValueError("image_encoder must be None when use_image=False (the blind model sees no image)")
            self.image_encoder = None
            self.fusion = TransformerEncoder(dim, fusion_depth, num_heads, mlp_ratio, dropout)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_answers))

    def encode_scenes(self, scenes: torch.Tensor) -> torch.Tensor:
        """``scenes (B, ...) → (B, N, Dc)`` image tokens with their position embedding added."""
        if not self.use_image:
            raise ValueError("this VQAModel was built with use_image=False: it has no image encoder")
        check_tensor(scenes, "scenes", floating=True)
        tokens = tokens_of(self.image_encoder(scenes))
        if tokens.shape[1:] != self.image_pos.shape[1:]:
            raise ValueError(
                f"the image encoder must give tokens of shape (B, {self.num_image_tokens}, {self.image_pos.size(-1)}), "
                f"got {tuple(tokens.shape)}"
            )
        return tokens + self.image_pos

    def forward(
        self,
        scenes: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        text = self.text_encoder(input_ids, attention_mask).tokens  # (B, L, D)
        mask = attention_mask.bool() if attention_mask is not None else None
        if not self.use_image:
            logits = self.head(self.fusion(text, mask)[:, 0])
            return (logits, []) if need_weights else logits
        if scenes is None:
            raise ValueError("scenes must be given: this VQAModel looks at the image (use_image=True)")
        context = self.encode_scenes(scenes)
        if context.size(0) != input_ids.size(0):
            raise ValueError(
                f"scenes and input_ids must share the batch size, got {context.size(0)} and {input_ids.size(0)}"
            )
        if need_weights:
            fused, weights = self.fusion(text, context, mask, need_weights=True)
            return self.head(fused[:, 0]), weights
        return self.head(self.fusion(text, context, mask)[:, 0])
