"""One vision-language model trained with several pretraining objectives (ALBEF/BLIP in miniature) —
article §4.2, chapter 5 (and reused by chapter 6).

::

    image ──► image encoder ──► image tokens ──────────────┬──► ITC (image embedding)
                                                            │
    text ───► text encoder ───► text tokens ──► fusion encoder (text self-attn + cross-attn to image tokens)
                                     │                      ├──► ITM head  (match / no match, fused [CLS])
                                     └──► ITC (text emb.)    └──► MLM head  (masked words, fused tokens)
    image tokens ──► MIM decoder (pixels of hidden patches)    image tokens ──► captioner (ITG)

Objectives (any subset, see :meth:`ALBEF.compute_losses`):

* ``"itc"`` — contrastive loss between image and text embeddings; with hard-negative captions in the batch
  (``neg_ids``) they are added as extra text columns (NegCLIP): the image must prefer its own caption to
  "a red circle *right* of a blue square".
* ``"itm"`` — image-text matching on the fused [CLS]: B positives, B negative images and B negative texts
  mined from ITC similarity (:func:`mmcourse.objectives.itm.make_itm_pairs`), or the dataset's hard-negative
  captions as the negative texts (``itm_caption_negatives=True``).
* ``"mlm"`` — masked language modelling conditioned on the image (:func:`mmcourse.objectives.mlm.mask_tokens`).
* ``"mim"`` — masked image modelling as in SimMIM (Xie et al., 2022): with the ViT image encoder the hidden
  patches' embeddings are replaced by one learned ``[MASK]`` token, every patch is encoded, and a light head
  predicts the pixels; the loss counts the hidden patches only (:func:`mmcourse.objectives.mim.random_masking`,
  :func:`mmcourse.objectives.mim.mim_loss`). A CNN has no per-patch embedding to replace: with it the hidden cells
  are blanked in pixel space instead. (ALBEF and BLIP themselves have no MIM head; MAE, BEiT, SimMIM and FLAVA do.)
* ``"itg"`` — captioning with a decoder that shares the image encoder (:class:`mmcourse.models.captioner.Captioner`).

Preparing ShapesWorld data, training, evaluation and chapter 5's experiments are in
:mod:`mmcourse.labs.ch05_pretraining`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_probability, check_tensor
from mmcourse.data.tokenizer import SPECIAL_IDS
from mmcourse.models.captioner import Captioner, ImageTokens
from mmcourse.nn.blocks import MultimodalEncoder
from mmcourse.nn.encoders import SmallCNN, TextTransformer, TinyViT
from mmcourse.objectives.contrastive import LogitScale, clip_loss
from mmcourse.objectives.itm import ITMHead, itm_loss, make_itm_pairs
from mmcourse.objectives.mim import mim_loss, patchify, random_masking, unpatchify
from mmcourse.objectives.mlm import mask_tokens, mlm_loss
from mmcourse.train import module_device

__all__ = [
    "OBJECTIVES",
    "ALBEF",
]

OBJECTIVES: tuple[str, ...] = ("itc", "itm", "mlm", "mim", "itg")


class ALBEF(nn.Module):
    """Image encoder, text encoder, fusion encoder and the heads of every objective.

    Args:
        vocab_size: tokenizer vocabulary size.
        image_size: side of the (square) input images.
        image_encoder: ``"cnn"`` (:class:`~mmcourse.nn.encoders.SmallCNN`, 8×8-pixel cells) or ``"vit"``
            (:class:`~mmcourse.nn.encoders.TinyViT` with ``patch_size``).
        cnn_width, patch_size, image_depth: image encoder size (``image_depth`` for the ViT).
        cnn_convs: convolutions in each of the CNN's three blocks (see :class:`~mmcourse.nn.encoders.SmallCNN`); one
            at full resolution makes a step cheaper and, on ShapesWorld, loses nothing per step.
        image_layers: transformer layers over the image tokens (after the encoder and a learned position
            embedding), so that each token can see where the other objects are — relations need that.
        coordinates: give the image encoder two extra input channels with pixel coordinates (CoordConv, see
            :class:`~mmcourse.models.captioner.ImageTokens`).
        dim: width of the text and fusion encoders and of the image tokens.
        embed_dim: width of the shared ITC embedding space.
        text_depth, fusion_depth, num_heads, mlp_ratio: transformer sizes. One text layer is enough for ShapesWorld's
            captions (each word sees its neighbours once, so "red circle" is bound) and reaches compositional
            retrieval in fewer steps than two (``benchmarks/README.md``).
        max_len: longest text.
        init_temperature: initial ITC temperature (learnable, :class:`~mmcourse.objectives.contrastive.LogitScale`).
        image_pool: ``"flatten"`` — the image embedding is a linear map of *all* image tokens in grid order, so
            it keeps where things are (relations need that); ``"pooled"`` — the encoder's pooled vector.
        text_pool: the text embedding is the mean of the real text tokens (``"mean"``: each word, having
            attended to its neighbours, contributes a bound "red circle") or the [CLS] token (``"cls"``).
        mim: build the MIM decoder (and, with the ViT, SimMIM's learned mask token); captioner: build the captioning
            decoder (``caption_depth`` layers; one is enough for ShapesWorld's captions and makes a step cheaper).
        special_ids: ids never masked by MLM.
    """

    def __init__(
        self,
        vocab_size: int,
        image_size: int = 32,
        image_encoder: str = "cnn",
        cnn_width: int = 16,
        cnn_convs: int | Sequence[int] = (1, 2, 2),
        patch_size: int = 4,
        image_depth: int = 2,
        image_layers: int = 1,
        coordinates: bool = True,
        dim: int = 64,
        embed_dim: int = 64,
        text_depth: int = 1,
        fusion_depth: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        max_len: int = 16,
        init_temperature: float = 0.07,
        image_pool: str = "flatten",
        text_pool: str = "mean",
        mim: bool = False,
        captioner: bool = False,
        caption_depth: int = 1,
        special_ids: Sequence[int] = SPECIAL_IDS,
    ):
        super().__init__()
        check_positive(vocab_size, "vocab_size", integer=True)
        check_positive(image_size, "image_size", integer=True)
        check_choice(image_encoder, "image_encoder", ("cnn", "vit"))
        check_choice(image_pool, "image_pool", ("flatten", "pooled"))
        check_choice(text_pool, "text_pool", ("mean", "cls"))
        self.text_pool = text_pool
        self.vocab_size, self.image_size, self.max_len = vocab_size, image_size, max_len
        self.image_pool = image_pool
        self.special_ids = tuple(special_ids)
        channels = 5 if coordinates else 3
        if image_encoder == "cnn":
            self.image_encoder = SmallCNN(channels, cnn_width, dim, image_size=image_size, convs=cnn_convs)
        else:
            self.image_encoder = TinyViT(image_size, patch_size, channels, dim, image_depth, num_heads, mlp_ratio)
        grid = self.image_encoder.grid_size
        self.num_image_tokens = grid * grid
        self.cell_size = image_size // grid  # pixels per image token side
        self.visual = ImageTokens(self.image_encoder, image_layers, num_heads, mlp_ratio, coordinates)
        self.text_encoder = TextTransformer(vocab_size, dim, text_depth, num_heads, max_len, "cls", mlp_ratio)
        in_dim = dim * self.num_image_tokens if image_pool == "flatten" else dim
        self.image_proj = nn.Linear(in_dim, embed_dim)
        self.text_proj = nn.Linear(dim, embed_dim)
        self.logit_scale = LogitScale(init_temperature)
        self.fusion = MultimodalEncoder(dim, fusion_depth, num_heads, mlp_ratio)
        self.itm_head = ITMHead(dim)
        self.mlm_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, vocab_size))
        self.mim_decoder = self.mask_token = None
        if mim:
            if image_encoder == "vit":
                self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            pixels = self.cell_size * self.cell_size * 3
            self.mim_decoder = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, pixels))
        self.captioner = None
        if captioner:
            self.captioner = Captioner(vocab_size, self.visual, dim, caption_depth, num_heads, mlp_ratio)

    # ------------------------------------------------------------------------------------------ encoders
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, 3, S, S)`` → image tokens ``(B, N, dim)`` (row-major grid, with positions)."""
        return self.visual(images)

    def image_embedding(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Image tokens ``(B, N, dim)`` → L2-normalised ITC embedding ``(B, embed_dim)``."""
        if self.image_pool == "flatten":
            features = image_tokens.flatten(1)
        else:
            features = image_tokens.mean(dim=1)
        return F.normalize(self.image_proj(features), dim=-1)

    def text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids, attention_mask (B, L)`` → text tokens ``(B, L, dim)`` (position 0 is [CLS])."""
        return self.text_encoder(input_ids, attention_mask).tokens

    def text_embedding(self, text_tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text tokens ``(B, L, dim)`` → L2-normalised ITC embedding ``(B, embed_dim)``: the mean of the real
        tokens (``text_pool="mean"``) or the [CLS] token."""
        if self.text_pool == "mean":
            weights = attention_mask.to(text_tokens.dtype).unsqueeze(-1)
            pooled = (text_tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        else:
            pooled = text_tokens[:, 0]
        return F.normalize(self.text_proj(pooled), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, embed_dim)`` unit vectors."""
        return self.image_embedding(self.image_tokens(images))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids and mask → ``(B, embed_dim)`` unit vectors."""
        return self.text_embedding(self.text_tokens(input_ids, attention_mask), attention_mask)

    def fuse(self, text_tokens: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor):
        """Fusion encoder: text tokens ``(B, L, dim)`` attend to image tokens ``(B, N, dim)`` → ``(B, L, dim)``."""
        return self.fusion(text_tokens, image_tokens, attention_mask.bool())

    def itm_logits(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, attention_mask: torch.Tensor):
        """``(B, 2)`` match logits (column 1 = match) of aligned image/text pairs."""
        return self.itm_head(self.fuse(text_tokens, attention_mask, image_tokens)[:, 0])

    @torch.no_grad()
    def match_probability(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """``(B,)`` ITM probability that image ``i`` matches text ``i``."""
        logits = self.itm_logits(self.image_tokens(images), self.text_tokens(input_ids, attention_mask), attention_mask)
        return logits.softmax(dim=-1)[:, 1]

    # ------------------------------------------------------------------------------------------ objectives
    def compute_losses(
        self,
        batch: dict,
        objectives: Sequence[str] = ("itc",),
        weights: dict[str, float] | None = None,
        generator: torch.Generator | None = None,
        mlm_probability: float = 0.15,
        mask_ratio: float = 0.5,
        itm_caption_negatives: bool = False,
    ) -> dict[str, torch.Tensor]:
        """All requested losses on one batch, and their weighted sum under ``"loss"``.

        Args:
            batch: ``images (B, 3, S, S)``, ``input_ids``/``attention_mask (B, L)``; optional
                ``image_tokens (B, N, dim)`` (precomputed by a frozen image encoder: used instead of encoding
                ``images``, except by MIM, which must see the blanked pixels); optional
                ``group_ids (B,)`` (pairs with equal ids state the same fact: never each other's negatives, in ITC
                or ITM), ``neg_ids``/``neg_mask (B, K, L)``, ``neg_valid (B, K)`` bool — K hard-negative captions
                per image (invalid ones are ignored) — and ``neg_group_ids (B, K)``.
            objectives: subset of ``("itc", "itm", "mlm", "mim", "itg")``.
            weights: per-objective loss weights (default 1).
            generator: for MLM masking, MIM masking and ITM negative sampling.
            mlm_probability, mask_ratio: MLM and MIM masking rates.
            itm_caption_negatives: each image's negative text for ITM is one of its hard-negative captions (where
                it has one) instead of a caption mined from ITC similarity; either way ITM sees B positives and
                2B negatives (ALBEF's ratio).
        Returns:
            dict with ``"loss"`` and one entry per objective (plus ``"itm_acc"`` when ITM runs).
        """
        objectives = tuple(objectives)
        if not objectives:
            raise ValueError("objectives must name at least one of " + ", ".join(OBJECTIVES))
        for name in objectives:
            check_choice(name, "objectives", OBJECTIVES)
        if "mim" in objectives and self.mim_decoder is None:
            raise ValueError("objective 'mim' needs a model built with mim=True")
        if "itg" in objectives and self.captioner is None:
            raise ValueError("objective 'itg' needs a model built with captioner=True")
        images, ids, mask = batch["images"], batch["input_ids"], batch["attention_mask"]
        check_tensor(images, "images", ndim=4, floating=True)
        check_tensor(ids, "input_ids", ndim=2, floating=False)
        if ids.shape[0] != images.shape[0] or mask.shape != ids.shape:
            raise ValueError(
                f"images (B, ...), input_ids (B, L) and attention_mask (B, L) must agree, got "
                f"{tuple(images.shape)}, {tuple(ids.shape)}, {tuple(mask.shape)}"
            )
        weights = weights or {}
        losses: dict[str, torch.Tensor] = {}
        b = images.shape[0]
        img_tokens = self._batch_image_tokens(batch)
        needs_text = any(o in objectives for o in ("itc", "itm"))
        txt_tokens = self.text_tokens(ids, mask) if needs_text else None

        neg_tokens = neg_mask = None
        if needs_text and "neg_ids" in batch:
            # all K hard-negative captions of every image, (B*K, L): the invalid ones are encoded too and masked out
            # of the losses, so the batch keeps its shape and nothing is read back from the device
            neg_mask = batch["neg_mask"].flatten(0, 1)
            neg_tokens = self.text_tokens(batch["neg_ids"].flatten(0, 1), neg_mask)

        if "itc" in objectives or "itm" in objectives:
            img_emb = self.image_embedding(img_tokens)
            txt_emb = self.text_embedding(txt_tokens, mask)
            scale = self.logit_scale()
            logits_i2t = scale * img_emb @ txt_emb.t()  # (B, B)
            if "itc" in objectives:
                losses["itc"] = self._itc_loss(logits_i2t, img_emb, scale, batch, neg_tokens, neg_mask)
            if "itm" in objectives:
                image_index, text_index, labels = make_itm_pairs(logits_i2t.detach(), batch.get("group_ids"), generator)
                all_text, all_mask = txt_tokens, mask
                if neg_tokens is not None and itm_caption_negatives:
                    # each image's negative text becomes one of its own valid hard-negative captions, drawn at random
                    all_text, all_mask = torch.cat([txt_tokens, neg_tokens]), torch.cat([mask, neg_mask])
                    valid = batch["neg_valid"].bool()  # (B, K)
                    draw_device = generator.device if generator is not None else torch.device("cpu")
                    noise = torch.rand(valid.shape, generator=generator, device=draw_device).to(images.device)
                    pick = noise.masked_fill(~valid, -1.0).argmax(dim=1)  # (B,) a random valid caption per image
                    rows = b + torch.arange(b, device=images.device) * valid.size(1) + pick
                    text_index[2 * b :] = torch.where(valid.any(dim=1), rows, text_index[2 * b :])
                logits = self.itm_logits(img_tokens[image_index], all_text[text_index], all_mask[text_index])
                losses["itm"] = itm_loss(logits, labels)
                # on the model's device, so that a GPU step does not wait for the accuracy
                losses["itm_acc"] = (logits.detach().argmax(dim=-1) == labels).float().mean()

        if "mlm" in objectives:
            masked_ids, labels = mask_tokens(ids, self.special_ids, self.vocab_size, mlm_probability, generator)
            losses["mlm"] = mlm_loss(self.mlm_logits(img_tokens, masked_ids, mask), labels)

        if "mim" in objectives:
            losses["mim"] = self._mim_loss(images, mask_ratio, generator)

        if "itg" in objectives:
            losses["itg"] = self.captioner.loss(images, ids, image_tokens=img_tokens)

        total = sum(weights.get(name, 1.0) * losses[name] for name in objectives)
        losses["loss"] = total
        return losses

    def _batch_image_tokens(self, batch: dict) -> torch.Tensor:
        """The batch's cached ``image_tokens (B, N, dim)`` if it has them, else the image encoder's output."""
        cached = batch.get("image_tokens")
        if cached is None:
            return self.image_tokens(batch["images"])
        expected = (batch["images"].shape[0], self.num_image_tokens, self.text_proj.in_features)
        check_tensor(cached, "image_tokens", ndim=3, floating=True)
        if tuple(cached.shape) != expected:
            raise ValueError(f"image_tokens must have shape (B, N, dim) = {expected}, got {tuple(cached.shape)}")
        return cached

    def mlm_logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """MLM head on the fused text: ``(B, L, vocab_size)`` scores for every position of (masked) ``input_ids``
        ``(B, L)`` given image tokens ``(B, N, dim)`` — the word the model would write under each ``[MASK]``."""
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        check_tensor(image_tokens, "image_tokens", ndim=3, floating=True)
        if image_tokens.shape[0] != input_ids.shape[0] or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"image_tokens (B, N, D), input_ids (B, L) and attention_mask (B, L) must agree, got "
                f"{tuple(image_tokens.shape)}, {tuple(input_ids.shape)}, {tuple(attention_mask.shape)}"
            )
        fused = self.fuse(self.text_tokens(input_ids, attention_mask), attention_mask, image_tokens)
        return self.mlm_head(fused)

    def _itc_loss(self, logits_i2t, img_emb, scale, batch: dict, neg_tokens, neg_mask) -> torch.Tensor:
        """ITC: the symmetric contrastive loss, where pairs of one group (captions stating the same fact) are not
        each other's negatives and valid hard-negative captions are extra image→text columns (NegCLIP)."""
        groups = batch.get("group_ids")
        if neg_tokens is None and groups is None:
            return clip_loss(logits_i2t)
        b = logits_i2t.size(0)
        keep = torch.ones_like(logits_i2t, dtype=torch.bool) if groups is None else groups[:, None] != groups[None, :]
        extra = None
        if neg_tokens is not None:
            extra = scale * img_emb @ self.text_embedding(neg_tokens, neg_mask).t()  # (B, B*K)
            keep_extra = batch["neg_valid"].bool().flatten()[None, :].expand(b, -1)  # invalid captions: never
            if groups is not None and "neg_group_ids" in batch:
                keep_extra = keep_extra & (groups[:, None] != batch["neg_group_ids"].flatten()[None, :])
            keep = torch.cat([keep, keep_extra], dim=1)
        return clip_loss(logits_i2t, extra, negative_mask=keep)

    def masked_image_tokens(self, images: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Image tokens ``(B, N, dim)`` of ``images (B, 3, S, S)`` with the patches where ``hidden (B, N)`` is 1
        hidden: SimMIM — with the ViT, their patch embeddings become the learned ``mask_token`` before the
        transformer reads them; with the CNN (no per-patch embedding) their pixels are blanked."""
        if self.mask_token is None:
            patches = patchify(images, self.cell_size)
            blanked = unpatchify(patches * (1 - hidden).unsqueeze(-1), self.cell_size, self.image_size)
            return self.image_tokens(blanked)
        vit = self.image_encoder
        x = vit.patch_embed(self.visual.encoder_input(images))  # (B, N, dim)
        x = torch.where(hidden.bool().unsqueeze(-1), self.mask_token.to(x.dtype).expand_as(x), x)
        x = torch.cat([vit.cls_token.expand(x.size(0), -1, -1), x], dim=1) + vit.pos_embed
        return self.visual.finish(vit.encoder(x)[:, 1:])

    def _mim_loss(self, images: torch.Tensor, mask_ratio: float, generator) -> torch.Tensor:
        """SimMIM: hide random patches, reconstruct their pixels from the image tokens; loss on hidden ones only."""
        check_probability(mask_ratio, "mask_ratio")
        patches = patchify(images, self.cell_size)  # (B, N, c*c*3), one patch per image token
        _, hidden, _ = random_masking(patches, mask_ratio, generator)
        pred = self.mim_decoder(self.masked_image_tokens(images, hidden))
        return mim_loss(pred, patches, hidden)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask_ratio: float = 0.5, generator=None, hidden=None):
        """For figures: ``(blanked, reconstruction, hidden)`` — the masked input, the MIM output pasted into the
        hidden cells, and the ``(B, N)`` mask (drawn with ``mask_ratio`` and ``generator``, or the given ``hidden``
        ``(B, N)``, 1 = hidden, ``N = num_image_tokens``). The mask is drawn where ``images`` are (so it depends
        on ``generator`` only), the model runs on its own device, and the outputs come back to the images' device."""
        if self.mim_decoder is None:
            raise ValueError("reconstruct needs a model built with mim=True")
        patches = patchify(images, self.cell_size)
        if hidden is None:
            _, hidden, _ = random_masking(patches, mask_ratio, generator)
        else:
            check_tensor(hidden, "hidden", ndim=2)
            if hidden.shape != patches.shape[:2]:
                raise ValueError(
                    f"hidden must have shape (B, N) = {tuple(patches.shape[:2])}, got {tuple(hidden.shape)}"
                )
            hidden = hidden.to(patches)
        blanked_patches = patches * (1 - hidden).unsqueeze(-1)
        device = module_device(self)
        pred = self.mim_decoder(self.masked_image_tokens(images.to(device), hidden.to(device))).to(patches.device)
        mixed = torch.where(hidden.bool().unsqueeze(-1), pred, patches)
        unp = lambda p: unpatchify(p, self.cell_size, self.image_size)  # noqa: E731
        return unp(blanked_patches), unp(mixed).clamp(0, 1), hidden
