"""Heterogeneity of modalities (模态间异质性): the article's §6.1, measured in chapter 7.

"Data of different modalities differ in essence (text is discrete, images are continuous), which makes fusing them
hard." An image is a grid of continuous intensities; a caption is a short sequence of integer token ids whose
numeric values mean nothing (id 30 + 1 is not "a bit more red"); and their encoders return vectors of different
widths. The article lists three cures; each is trained here on the same scenes, with the same image encoder
(:class:`mmcourse.nn.encoders.SmallCNN`), for the same number of steps, and measured with one yardstick — image ↔
caption retrieval (:func:`cure_recall`):

* ``"projection"`` — a projection layer maps images *into the text's space* (:class:`ImageToTextProjection`): the
  text side is the caption's :func:`bag_of_words` vector, and the image encoder + projection learn to land on it
  (a cosine regression, as DeViSE mapped images into word-vector space).
* ``"cross_attention"`` — a matcher in which text tokens attend to image tokens (:class:`CrossAttentionMatcher`,
  :class:`mmcourse.nn.blocks.MultimodalEncoder`) and a head says "match" or "no match"; trained on true captions,
  other captions of the batch and captions with the colour or the shape changed.
* ``"contrastive"`` — the CLIP loss on two towers (:func:`mmcourse.labs.ch07_sparsity.train_on_pairs`).

:func:`build_cure` builds a cure's model, :func:`cure_pairs` the training tensors, :func:`train_cure` trains it.

:func:`describe_tensor` summarises what a modality's tensor holds; :func:`zero_pad` is the naive "fix" for
different widths, which gives vectors that can be compared but mean nothing to each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.data.tokenizer import SPECIAL_IDS
from mmcourse.labs.ch07_sparsity import SMALL_MODEL, build_small_clip, train_on_pairs
from mmcourse.models.clip import TinyCLIP
from mmcourse.nn.blocks import MultimodalEncoder
from mmcourse.nn.encoders import ProjectionHead, SmallCNN, TextTransformer
from mmcourse.retrieval import caption_recall, encode_images, encode_texts
from mmcourse.train import History, fit, module_device, seeded

__all__ = [
    "CURES", "describe_tensor", "zero_pad", "bag_of_words", "ImageToTextProjection", "CrossAttentionMatcher",
    "cure_pairs", "build_cure", "train_cure", "distinct_captions", "caption_scores", "cure_recall", "plot_cures",
]

CURES: tuple[str, ...] = ("projection", "cross_attention", "contrastive")
"""The article's three cures for heterogeneity, in its order."""


def describe_tensor(x: torch.Tensor) -> dict:
    """What a modality's tensor holds: ``shape``, ``dtype``, ``kind`` ("continuous" for floating point, else
    "discrete"), the number of ``distinct`` values and the ``min`` / ``max`` (Python numbers)."""
    check_tensor(x, "x")
    if x.numel() == 0:
        raise ValueError("x must not be empty")
    return {
        "shape": tuple(x.shape),
        "dtype": str(x.dtype).replace("torch.", ""),
        "kind": "continuous" if x.is_floating_point() else "discrete",
        "distinct": int(x.unique().numel()),
        "min": x.min().item(),
        "max": x.max().item(),
    }


def zero_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x (B, D)`` padded with zeros (or cut) to ``(B, width)``: equal widths, no shared meaning."""
    check_tensor(x, "x", ndim=2, floating=True)
    check_positive(width, "width", integer=True)
    if x.size(1) >= width:
        return x[:, :width]
    return F.pad(x, (0, width - x.size(1)))


def bag_of_words(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int, skip_ids: Sequence[int] = SPECIAL_IDS
) -> torch.Tensor:
    """Word counts: discrete token ids → one continuous vector per text, ``(B, L) → (B, vocab_size)``.

    Args:
        input_ids, attention_mask: ``(B, L)`` as from :meth:`mmcourse.data.Tokenizer.encode` (1 = real token).
        vocab_size: width of the result.
        skip_ids: ids not counted (default: the tokenizer's seven special tokens, ``[PAD]`` … ``[UNK]``).
    """
    check_tensor(input_ids, "input_ids", ndim=2, floating=False)
    check_tensor(attention_mask, "attention_mask", ndim=2)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    check_positive(vocab_size, "vocab_size", integer=True)
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}), got values in "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")
    keep = attention_mask.bool()
    for special in skip_ids:
        keep &= input_ids != int(special)
    counts = torch.zeros(input_ids.size(0), vocab_size, device=input_ids.device)
    return counts.scatter_add_(1, input_ids.long(), keep.float())


# ------------------------------------------------------------------------------------------------ the cures


class ImageToTextProjection(nn.Module):
    """An image encoder and a projection layer into the text's bag-of-words space: ``(B, 3, H, W) → (B, V)``.

    Args:
        vocab_size: ``V``, the width of the text space; image_size: side of the images;
        cnn_width, vision_dim: the :class:`SmallCNN`.
    """

    def __init__(self, vocab_size: int, image_size: int, cnn_width: int = 8, vision_dim: int = 32):
        super().__init__()
        check_positive(vocab_size, "vocab_size", integer=True)
        self.vocab_size = vocab_size
        self.image_encoder = SmallCNN(3, cnn_width, vision_dim, image_size)
        self.projection = ProjectionHead(vision_dim, vocab_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.image_encoder(images).pooled)

    def loss(self, images: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
        """``1 − cos(projected image, text vector)``, averaged: ``images (B, 3, H, W)``, ``text_vectors (B, V)``."""
        return (1 - F.cosine_similarity(self(images), text_vectors, dim=-1)).mean()


class CrossAttentionMatcher(nn.Module):
    """Does this caption describe this image? Text tokens attend to image tokens; the ``[CLS]`` position decides.

    ``forward(images (B, 3, H, W), input_ids (B, L), attention_mask (B, L)) → (B,)`` match logits;
    :meth:`pairwise` scores every image with every caption, ``(N, C)``, with one fusion pass per pair.

    Args:
        vocab_size, image_size: data geometry; cnn_width, vision_dim: the :class:`SmallCNN`;
        text_dim, num_heads, max_len: the one-layer :class:`TextTransformer` and the one fusion layer.
    """

    def __init__(self, vocab_size: int, image_size: int, cnn_width: int = 8, vision_dim: int = 32,
                 text_dim: int = 32, num_heads: int = 4, max_len: int = 12):
        super().__init__()
        self.image_encoder = SmallCNN(3, cnn_width, vision_dim, image_size)
        self.text_encoder = TextTransformer(vocab_size, text_dim, 1, num_heads, max_len=max_len, pool="cls")
        self.fusion = MultimodalEncoder(text_dim, 1, num_heads, mlp_ratio=2.0, context_dim=vision_dim)
        self.head = nn.Linear(text_dim, 1)

    def fuse(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Match logits ``(B,)`` from image tokens ``(B, T, Dv)`` and text tokens ``(B, L, D)``."""
        return self.head(self.fusion(text_tokens, image_tokens, mask.bool())[:, 0]).squeeze(-1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.image_encoder(images).tokens, self.text_encoder(input_ids, attention_mask).tokens,
                         attention_mask)

    @torch.no_grad()
    def pairwise(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 chunk: int = 2048) -> torch.Tensor:
        """Scores ``(N, C)`` of ``N`` images with ``C`` captions (``input_ids``, ``attention_mask``: ``(C, L)``)."""
        check_tensor(images, "images", ndim=4, floating=True)
        image_tokens = self.image_encoder(images).tokens  # (N, T, Dv)
        text_tokens = self.text_encoder(input_ids, attention_mask).tokens  # (C, L, D)
        n, c = image_tokens.size(0), text_tokens.size(0)
        image_index = torch.arange(n, device=image_tokens.device).repeat_interleave(c)
        text_index = torch.arange(c, device=image_tokens.device).repeat(n)
        scores = [
            self.fuse(image_tokens[image_index[i : i + chunk]], text_tokens[text_index[i : i + chunk]],
                      attention_mask[text_index[i : i + chunk]])
            for i in range(0, n * c, chunk)
        ]
        return torch.cat(scores).view(n, c)


def _tokenize(world, tokenizer, indices: list[int], kind: str | None, max_len: int):
    """Captions of the scenes (``kind`` None) or their hard-negative edits of ``kind``, tokenized."""
    texts = [world.captions[i] if kind is None else world.negative(i, kind) for i in indices]
    if any(t is None for t in texts):
        raise ValueError(f"every training scene needs a {kind!r} negative (use one-object scenes)")
    return tokenizer.encode(texts, max_len=max_len)


_NEGATIVE_KINDS = {"color": "replace_color", "shape": "replace_shape"}


def cure_pairs(
    world, tokenizer, indices: Sequence[int], *, max_len: int = 12, negatives: bool = True
) -> dict[str, torch.Tensor]:
    """The image–caption pairs of the scenes ``indices``: the tensors :func:`train_cure` trains every cure on.

    Args:
        world, tokenizer: a ShapesWorld (one-object scenes for the negatives) and its tokenizer.
        indices: the training scenes, at least 2.
        max_len: token length.
        negatives: also the captions with the colour (``color_ids``, ``color_mask``) and with the shape
            (``shape_ids``, ``shape_mask``) changed, which only ``"cross_attention"`` reads.
    Returns:
        ``{"images" (N, 3, H, W), "input_ids" (N, L), "attention_mask" (N, L)}`` and with ``negatives``
        ``color_ids``, ``color_mask``, ``shape_ids``, ``shape_mask``, each ``(N, L)``.
    """
    indices = [int(i) for i in indices]
    if len(indices) < 2:
        raise ValueError(f"indices must select at least 2 scenes, got {len(indices)}")
    ids, mask = _tokenize(world, tokenizer, indices, None, max_len)
    data = {"images": world.images[torch.tensor(indices)], "input_ids": ids, "attention_mask": mask}
    if negatives:
        for name, kind in _NEGATIVE_KINDS.items():
            data[f"{name}_ids"], data[f"{name}_mask"] = _tokenize(world, tokenizer, indices, kind, max_len)
    return data


def build_cure(cure: str, vocab_size: int, *, image_size: int, max_len: int = 12, seed: int = 0) -> nn.Module:
    """A fresh model for one of :data:`CURES`, drawn under ``seeded(seed)``: an :class:`ImageToTextProjection`, a
    :class:`CrossAttentionMatcher` or a :class:`mmcourse.models.clip.TinyCLIP` of size
    :data:`mmcourse.labs.ch07_sparsity.SMALL_MODEL` (:func:`mmcourse.labs.ch07_sparsity.build_small_clip`); each
    sees images through a :class:`SmallCNN` of width 8."""
    check_choice(cure, "cure", CURES)
    if cure == "contrastive":
        return build_small_clip(vocab_size, image_size=image_size, max_len=max_len, seed=seed, **SMALL_MODEL)
    with seeded(seed):
        if cure == "projection":
            return ImageToTextProjection(vocab_size, image_size)
        return CrossAttentionMatcher(vocab_size, image_size, max_len=max_len)


def _matching_step(module: CrossAttentionMatcher, batch: dict) -> torch.Tensor:
    """Cross-entropy of picking the true caption among it, another scene's caption, and its colour and shape edits."""
    true_ids, true_mask = batch["input_ids"], batch["attention_mask"]
    other_ids, other_mask = true_ids.roll(1, 0), true_mask.roll(1, 0)  # another scene's caption
    image_tokens = module.image_encoder(batch["images"]).tokens  # encoded once, fused with 4 captions
    all_ids = torch.cat([true_ids, other_ids, batch["color_ids"], batch["shape_ids"]])
    all_mask = torch.cat([true_mask, other_mask, batch["color_mask"], batch["shape_mask"]])
    text_tokens = module.text_encoder(all_ids, all_mask).tokens
    logits = module.fuse(image_tokens.repeat(4, 1, 1), text_tokens, all_mask)
    logits = logits.view(4, -1).t()  # (B, 4): true caption, another caption, colour changed, shape changed
    # another scene's caption that is word for word the true one is no wrong candidate: leave it out
    same = (other_ids == true_ids).all(dim=1)
    logits[:, 1] = logits[:, 1].masked_fill(same, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def train_cure(
    model: nn.Module,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Train (in place) the model of one of :data:`CURES` on the image–caption pairs of ``data``.

    The cure is the model's kind (:func:`build_cure`): an :class:`ImageToTextProjection` learns the cosine
    regression onto the captions' :func:`bag_of_words`; a :class:`CrossAttentionMatcher` picks the true caption
    among four (``data`` needs the negatives); a TinyCLIP is trained by
    :func:`mmcourse.labs.ch07_sparsity.train_on_pairs`. All: AdamW (weight decay 0.05) with 10 warm-up steps and a
    cosine learning rate, gradient clipping at 1, ``steps`` steps of ``min(batch_size, N)`` scenes, seeded by
    ``seed``.

    Args:
        data: :func:`cure_pairs` output (``images (N, 3, H, W)``, ``input_ids`` / ``attention_mask (N, L)``, and
            the ``color_*`` / ``shape_*`` negatives ``(N, L)``).
        device: where to train (default: where the model is).
    Returns:
        the :class:`~mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    check_positive(steps, "steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    keys = ["images", "input_ids", "attention_mask"]
    if isinstance(model, CrossAttentionMatcher):
        keys += [f"{name}_{part}" for name in _NEGATIVE_KINDS for part in ("ids", "mask")]
    elif not isinstance(model, (ImageToTextProjection, TinyCLIP)):
        raise TypeError(f"model must be an ImageToTextProjection, a CrossAttentionMatcher or a TinyCLIP (see "
                        f"build_cure), got {type(model).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"data must hold {keys} (see cure_pairs), missing {missing}")
    n = data["images"].size(0)
    if n < 2:
        raise ValueError(f"data must hold at least 2 scenes, got {n}")
    if isinstance(model, TinyCLIP):
        ids, mask = data["input_ids"][:, None], data["attention_mask"][:, None]  # one text per scene: (N, 1, L)
        pairs = {"images": data["images"], "input_ids": ids, "attention_mask": mask, "counts": torch.ones(n).long()}
        return train_on_pairs(model, pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device)
    if isinstance(model, ImageToTextProjection):
        vocab_size = model.vocab_size
        bags = F.normalize(bag_of_words(data["input_ids"], data["attention_mask"], vocab_size), dim=-1)
        tensors, step = {"images": data["images"], "text_vectors": bags}, _projection_step
    else:
        tensors, step = {k: data[k] for k in keys}, _matching_step
    history = fit(model, step, tensors, steps=steps, batch_size=min(batch_size, n), lr=lr, weight_decay=0.05,
                  lr_schedule="cosine", warmup_steps=10, grad_clip=1.0, seed=seed, device=device)
    model.eval()
    return history


def _projection_step(module: ImageToTextProjection, batch: dict) -> torch.Tensor:
    return module.loss(batch["images"], batch["text_vectors"])


def distinct_captions(world, indices: Sequence[int]) -> tuple[list[str], torch.Tensor]:
    """The ``C`` distinct captions of the scenes ``indices`` (in order of first appearance) and, for each scene,
    the position of its caption among them: ``caption_index (N,)``."""
    captions = [world.captions[int(i)] for i in indices]
    if not captions:
        raise ValueError("indices must select at least one scene")
    distinct = list(dict.fromkeys(captions))
    position = {c: j for j, c in enumerate(distinct)}
    return distinct, torch.tensor([position[c] for c in captions])


@torch.no_grad()
def caption_scores(
    model: nn.Module, world, tokenizer, indices: Sequence[int], max_len: int = 12
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Scores of every scene's image against every distinct caption of the scenes, by the model's own rule.

    Cosine in the bag-of-words space (:class:`ImageToTextProjection`), match logits (:class:`CrossAttentionMatcher`)
    or cosine in the shared space (:class:`mmcourse.models.clip.TinyCLIP`).

    Returns:
        ``scores (N, C)`` on the CPU, ``caption_index (N,)`` (the caption of each image) and the ``C`` distinct
        captions.
    """
    indices = [int(i) for i in indices]
    distinct, caption_index = distinct_captions(world, indices)
    device = module_device(model)
    images = world.images[torch.tensor(indices)].to(device)
    ids, mask = (t.to(device) for t in tokenizer.encode(distinct, max_len=max_len))
    model.eval()
    if isinstance(model, ImageToTextProjection):
        scores = F.normalize(model(images), dim=-1) @ F.normalize(bag_of_words(ids, mask, model.vocab_size), dim=-1).t()
    elif isinstance(model, CrossAttentionMatcher):
        scores = model.pairwise(images, ids, mask)
    elif isinstance(model, TinyCLIP):
        scores = encode_images(model, images) @ encode_texts(model, tokenizer, distinct, max_len=max_len).t()
    else:
        raise TypeError(f"model must be an ImageToTextProjection, a CrossAttentionMatcher or a TinyCLIP, "
                        f"got {type(model).__name__}")
    return scores.float().cpu(), caption_index, distinct


def cure_recall(model: nn.Module, world, tokenizer, indices: Sequence[int], max_len: int = 12) -> dict[str, float]:
    """Image → caption and caption → image Recall@1 among the distinct captions of the scenes ``indices``.

    Returns ``{"i2t_R@1", "t2i_R@1", "scored_pairs"}``: ``scored_pairs`` counts the image–caption pairs the model
    had to run a fusion step on (0 for models that embed each image and caption once and compare vectors).
    """
    scores, caption_index, _ = caption_scores(model, world, tokenizer, indices, max_len)
    out: dict[str, float] = caption_recall(scores, caption_index)
    out["scored_pairs"] = scores.numel() if isinstance(model, CrossAttentionMatcher) else 0
    return out


def plot_cures(baseline: dict, runs: dict, passes: dict, num_captions: int, figsize=(11, 3.6)):
    """Left: Recall@1 both ways of the untrained baseline and of each cure (bars: mean over seeds, dots: seeds);
    right: the encodings + fusion passes each cure needs to rank the captions for the test images.

    Args:
        baseline: ``{"i2t_R@1", "t2i_R@1"}`` of the untrained, zero-padded encoders.
        runs: ``{cure: {seed: cure_recall(...)}}``; passes: ``{cure: number of passes}``.
        num_captions: the number of distinct captions (chance is its inverse).
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    names = {"projection": "projection\nlayer", "cross_attention": "cross-modal\nattention",
             "contrastive": "contrastive\nalignment"}
    labels = ["zero-padded\n(no cure)"] + [names.get(c, c) for c in runs]
    fig, (ax_r, ax_cost) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.6, 1]})
    for offset, key, label in ((-0.2, "i2t_R@1", "image -> text"), (0.2, "t2i_R@1", "text -> image")):
        seeds = [[baseline[key]]] + [[r[key] for r in by_seed.values()] for by_seed in runs.values()]
        ax_r.bar([i + offset for i in range(len(labels))], [sum(v) / len(v) for v in seeds], 0.4, label=label)
        for i, values in enumerate(seeds):
            ax_r.plot([i + offset] * len(values), values, "k.", ms=3)
    ax_r.axhline(1 / num_captions, color="gray", ls=":", label="chance")
    ax_r.set_xticks(range(len(labels)), labels, fontsize=8)
    ax_r.set_ylabel(f"Recall@1 ({num_captions} captions)")
    ax_r.set_ylim(0, 1)
    ax_r.legend(fontsize=8)
    ax_r.set_title("Retrieval after training (bars: mean, dots: seeds)")
    bars = ax_cost.bar(labels[1:], [passes[c] for c in runs], color="#94a3b8")
    ax_cost.bar_label(bars, [f"{int(passes[c]):,d}" for c in runs], fontsize=8)
    ax_cost.set_ylabel("encodings + fusion passes")
    ax_cost.tick_params(axis="x", labelsize=8)
    ax_cost.set_title(f"Work to rank {num_captions} captions for every test image")
    fig.tight_layout()
    return fig
