"""Modalities as sources of information: complementary, redundant, and corrupted (chapter 1, article §1.1).

The article's table contrasts unimodal and multimodal AI by *information source* (one channel vs complementary
channels) and *fault tolerance* (low vs higher: sources check each other). Chapter 1 measures both with one
network, :class:`~mmcourse.models.fusion.EarlyFusionClassifier`, fed three ways:

* ``use="image"`` — the text input is blanked (only ``[CLS] [EOS]``), so the model sees the image alone;
* ``use="text"`` — the image is blanked (all zeros), so the model reads the text alone;
* ``use="both"`` — the fused model, optionally trained with *modality corruption* (each training example gets one
  of its modalities corrupted with probability ``corruption``) so it learns to cross-check its sources.

Corruptions for the fault-tolerance experiment: :func:`corrupt_images` (Gaussian pixel noise) and
:func:`drop_words` (words replaced by ``[UNK]``).

The chapter *shows* the ideas as code in its cells — the early-fusion forward, how a modality is switched off,
the modality-dropout rule (模态丢弃), the corruption augmentation and the training loop — and then switches to
:func:`build_classifier` / :func:`train_classifier` here for its repeated runs; ``tests/test_ch01_lesson.py``
checks that both give the same bits. :func:`corruption_sweep` and the ``plot_*`` / ``draw_*`` functions are the
chapter's bookkeeping and figures (matplotlib is imported inside them only).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmcourse._checks import check_choice, check_positive, check_same_size, check_tensor
from mmcourse.labs.common import classifier_accuracy
from mmcourse.models.fusion import EarlyFusionClassifier
from mmcourse.nn.encoders import SmallCNN, TextTransformer
from mmcourse.train import History, fit, seeded

__all__ = [
    "USES", "corrupt_images", "drop_words", "blank_text", "ModalityClassifier", "corrupt_batch", "build_classifier",
    "train_classifier", "accuracy", "corrupt_test_inputs", "corruption_sweep", "plot_accuracy_bars",
    "plot_corruption_curves", "draw_corruption", "REGIMES",
]

REGIMES = {"image only": "image", "text only": "text", "fused": "both"}
"""The three ways chapter 1 asks one model: display name → ``use``."""
_REGIME_COLORS = ("#60a5fa", "#f59e0b", "#10b981")

USES = ("image", "text", "both")


def _check_level(value, name: str, high: float, batch: int | None = None) -> torch.Tensor | float:
    """A level in [0, high]: a number, or (with ``batch``) a ``(B,)`` tensor of per-example levels."""
    if isinstance(value, torch.Tensor) and batch is not None:
        if value.shape != (batch,) or not value.is_floating_point():
            raise ValueError(f"{name} as a tensor must be float of shape ({batch},), got {tuple(value.shape)}")
        if not ((value >= 0) & (value <= high)).all():
            raise ValueError(f"{name} values must lie in [0, {high}]")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ValueError(f"{name} must be a number in [0, {high}], got {value!r}")
    return float(value)


def corrupt_images(images: torch.Tensor, noise, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian pixel noise of standard deviation ``noise`` (a number, or one per image ``(B,)``) and clamp
    to [0, 1]: ``(B, 3, H, W)`` → same."""
    check_tensor(images, "images", ndim=4, floating=True)
    noise = _check_level(noise, "noise", 10.0, images.size(0))
    if isinstance(noise, torch.Tensor):
        noise = noise.to(images)[:, None, None, None]
    eps = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + noise * eps).clamp(0, 1)


def drop_words(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    p: float,
    unk_id: int,
    special_ids: set[int] | list[int],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replace each real, non-special token by ``unk_id`` with probability ``p`` (a number, or one per row
    ``(B,)``): ``(B, L)`` → ``(B, L)``."""
    check_tensor(input_ids, "input_ids", ndim=2, floating=False)
    check_tensor(attention_mask, "attention_mask", ndim=2)
    if input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids and attention_mask must have the same shape, got {tuple(input_ids.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    p = _check_level(p, "p", 1.0, input_ids.size(0))
    if isinstance(p, torch.Tensor):
        p = p.to(input_ids.device)[:, None]
    words = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(sorted(special_ids), device=input_ids.device))
    drop = torch.rand(input_ids.shape, generator=generator).to(input_ids.device) < p
    return input_ids.masked_fill(words & drop, unk_id)


def blank_text(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer):
    """The empty sentence ``[CLS] [EOS] [PAD] ...`` for every row: ``(B, L)`` → ``(ids, mask)`` of the same shape."""
    ids = torch.full_like(input_ids, tokenizer.pad_id)
    ids[:, 0], ids[:, 1] = tokenizer.cls_id, tokenizer.eos_id
    mask = torch.zeros_like(attention_mask)
    mask[:, :2] = 1
    return ids, mask


class ModalityClassifier(nn.Module):
    """An :class:`EarlyFusionClassifier` (SmallCNN + TextTransformer) that can be told which modality to use.

    ``forward(images (B,3,H,W), input_ids (B,L), attention_mask (B,L), drop_image=None (B,) bool,
    drop_text=None (B,) bool)`` → logits ``(B, num_classes)``. A modality not in ``self.use`` is blanked for every
    example; ``drop_image`` / ``drop_text`` blank it for chosen examples only (modality dropout in training).
    Set ``model.use`` to ``"image"``, ``"text"`` or ``"both"`` to evaluate one trained model in each regime.
    """

    def __init__(self, vocab_size: int, num_classes: int, tokenizer, use: str = "both", dim: int = 64,
                 width: int = 8, max_len: int = 16):
        super().__init__()
        check_choice(use, "use", USES)
        self.use, self.tokenizer = use, tokenizer
        self.model = EarlyFusionClassifier(
            SmallCNN(width=width, dim=dim), TextTransformer(vocab_size, dim=dim, depth=1, num_heads=4, max_len=max_len),
            num_classes,
        )

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                drop_image: torch.Tensor | None = None, drop_text: torch.Tensor | None = None) -> torch.Tensor:
        check_same_size(images, input_ids, "images", "input_ids")
        check_choice(self.use, "use", USES)
        batch, device = images.size(0), images.device
        no_image = torch.full((batch,), self.use == "text", device=device)
        no_text = torch.full((batch,), self.use == "image", device=device)
        if drop_image is not None:
            no_image = no_image | drop_image.to(device)
        if drop_text is not None:
            no_text = no_text | drop_text.to(device)
        empty_ids, empty_mask = blank_text(input_ids, attention_mask, self.tokenizer)
        images = torch.where(no_image[:, None, None, None], torch.zeros_like(images), images)
        input_ids = torch.where(no_text[:, None], empty_ids, input_ids)
        attention_mask = torch.where(no_text[:, None], empty_mask, attention_mask)
        return self.model(images, input_ids, attention_mask)


def corrupt_batch(batch: dict[str, torch.Tensor], rate: float, tokenizer, generator: torch.Generator | None = None):
    """Training augmentation: each example, with probability ``rate``, gets ONE modality corrupted — its image
    with noise of a random level in [0, 1], or its words dropped with a random probability in [0, 1]."""
    _check_level(rate, "rate", 1.0)
    images, ids, mask = batch["images"], batch["input_ids"], batch["attention_mask"]
    n, device = images.size(0), images.device
    hit = torch.rand(n, generator=generator).to(device) < rate
    on_image = torch.rand(n, generator=generator).to(device) < 0.5
    level = torch.rand(n, generator=generator)
    noisy = corrupt_images(images, level, generator)
    dropped = drop_words(ids, mask, level, tokenizer.unk_id, tokenizer.special_ids, generator)
    return {**batch,
            "images": torch.where((hit & on_image)[:, None, None, None], noisy, images),
            "input_ids": torch.where((hit & ~on_image)[:, None], dropped, ids)}


def build_classifier(
    tokenizer,
    num_classes: int,
    *,
    use: str = "both",
    width: int = 8,
    max_len: int = 16,
    seed: int = 0,
) -> ModalityClassifier:
    """A fresh :class:`ModalityClassifier` for ``num_classes`` classes, its weights drawn under ``seeded(seed)``
    (so it does not depend on the random state left by earlier code); ``max_len`` is the token length of the data
    it will read (``data["input_ids"].size(1)``)."""
    check_positive(num_classes, "num_classes", integer=True)
    with seeded(seed):
        return ModalityClassifier(tokenizer.vocab_size, num_classes, tokenizer, use=use, width=width, max_len=max_len)


def train_classifier(
    model: ModalityClassifier,
    data: dict[str, torch.Tensor],
    *,
    modality_dropout: float = 0.0,
    corruption: float = 0.0,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Train a :class:`ModalityClassifier` (in place, e.g. from :func:`build_classifier`) for ``steps`` steps.

    Args:
        data: ``{"images" (N, 3, H, W), "input_ids" (N, L), "attention_mask" (N, L), "labels" (N,)}``.
        modality_dropout: probability that a training example loses one modality (image or text, 50/50), so one
            model learns to answer from the image alone, the text alone, and both.
        corruption: probability that a training example gets one modality corrupted (:func:`corrupt_batch`, with
            the model's tokenizer), so it learns to cross-check sources.
        steps, batch_size, lr, device: see :func:`mmcourse.train.fit` (AdamW, constant learning rate).
        seed: seeds the minibatches, the dropout and the corruption draws.
    Returns:
        the :class:`~mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    if not isinstance(model, ModalityClassifier):
        raise TypeError(f"model must be a ModalityClassifier (see build_classifier), got {type(model).__name__}")
    _check_level(modality_dropout, "modality_dropout", 1.0)
    for key in ("images", "input_ids", "attention_mask", "labels"):
        if key not in data:
            raise ValueError(f"data must contain {key!r}, got keys {sorted(data)}")
    check_positive(steps, "steps", integer=True)
    tokenizer = model.tokenizer
    generator = torch.Generator().manual_seed(seed)

    def step(m, batch):
        if corruption > 0:
            batch = corrupt_batch(batch, corruption, tokenizer, generator)
        n = batch["labels"].size(0)
        dropped = torch.rand(n, generator=generator) < modality_dropout
        image_side = torch.rand(n, generator=generator) < 0.5
        logits = m(batch["images"], batch["input_ids"], batch["attention_mask"],
                   drop_image=dropped & image_side, drop_text=dropped & ~image_side)
        return F.cross_entropy(logits, batch["labels"])

    history = fit(model, step, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device)
    model.eval()
    return history


def accuracy(model: nn.Module, data: dict[str, torch.Tensor], use: str | None = None, batch_size: int = 512) -> float:
    """Fraction of ``data["labels"]`` that ``model`` predicts correctly (in chunks, eval mode); ``use`` evaluates a
    :class:`ModalityClassifier` on the image alone, the text alone or both (its own setting is restored)."""
    if use is not None:
        check_choice(use, "use", USES)
        saved, model.use = model.use, use
        try:
            return accuracy(model, data, None, batch_size)
        finally:
            model.use = saved
    return classifier_accuracy(model, data, batch_size)


def corrupt_test_inputs(data: dict[str, torch.Tensor], tokenizer, image_noise: float = 0.0, word_drop: float = 0.0,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """``data`` with every image noised (:func:`corrupt_images`, std ``image_noise``) and every word dropped with
    probability ``word_drop`` (:func:`drop_words`); the draws come from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    images = corrupt_images(data["images"], image_noise, generator)
    ids = drop_words(data["input_ids"], data["attention_mask"], word_drop, tokenizer.unk_id, tokenizer.special_ids,
                     generator)
    return data | {"images": images, "input_ids": ids}


def corruption_sweep(model: ModalityClassifier, data: dict[str, torch.Tensor], levels, tokenizer,
                     seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Test accuracy of ``model`` asked three ways (:data:`REGIMES`) at each corruption level of one modality:
    ``{"image noise": {"image only": [acc per level], ...}, "word dropout": {...}}``."""
    sweep: dict[str, dict[str, list[float]]] = {"image noise": {}, "word dropout": {}}
    for name, use in REGIMES.items():
        sweep["image noise"][name] = [
            accuracy(model, corrupt_test_inputs(data, tokenizer, image_noise=x, seed=seed), use) for x in levels]
        sweep["word dropout"][name] = [
            accuracy(model, corrupt_test_inputs(data, tokenizer, word_drop=x, seed=seed), use) for x in levels]
    return sweep


def plot_accuracy_bars(accuracies: dict[str, float], ceilings: dict[str, float] | None = None,
                       title: str = "", figsize=(5.5, 3.2)):
    """One bar per regime (``{"image only": acc, ...}``); ``ceilings`` (same keys, optional) are drawn as dashed
    lines over their bars: the best any model could do with that input. Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    names = list(accuracies)
    bars = ax.bar(names, [accuracies[n] for n in names], color=_REGIME_COLORS[: len(names)])
    ax.bar_label(bars, fmt="%.2f", label_type="center", color="white", fontweight="bold")
    for k, name in enumerate(names):
        if ceilings and name in ceilings:
            ax.hlines(ceilings[name], k - 0.4, k + 0.4, colors="black", linestyles="--", lw=1)
            ax.annotate(f"ceiling {ceilings[name]:.2f}", (k, ceilings[name]), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_corruption_curves(levels, sweeps: list[dict[str, dict[str, list[float]]]], chance: float | None = None,
                           figsize=(10, 3.5)):
    """The :func:`corruption_sweep` of several seeds: per regime the mean over seeds (line) and the min–max range
    (band), one panel per kind of corruption. Returns the Figure."""
    import matplotlib.pyplot as plt

    kinds = list(sweeps[0])
    fig, axes = plt.subplots(1, len(kinds), figsize=figsize, sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, color in zip(sweeps[0][kind], _REGIME_COLORS, strict=False):
            runs = torch.tensor([sweep[kind][name] for sweep in sweeps], dtype=torch.float64)  # (seeds, levels)
            ax.plot(levels, runs.mean(0), marker="o", color=color, label=name)
            ax.fill_between(levels, runs.min(0).values, runs.max(0).values, color=color, alpha=0.2, lw=0)
        if chance is not None:
            ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
        ax.set_xlabel(f"{kind} level")
        ax.set_title(f"Corrupting the test inputs: {kind}")
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, -1].legend(fontsize=8, title=f"mean of {len(sweeps)} seeds\n(band: min to max)", title_fontsize=8)
    fig.tight_layout()
    return fig


def draw_corruption(model: ModalityClassifier, data: dict[str, torch.Tensor], tokenizer, image_noise: float,
                    word_drop: float):
    """The first corrupted test example (image and caption) beside the accuracy of the three regimes at these
    corruption levels. Returns the Figure."""
    import matplotlib.pyplot as plt

    from mmcourse.viz import image_to_numpy

    corrupted = corrupt_test_inputs(data, tokenizer, image_noise, word_drop)
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [1, 2]})
    ax_img.imshow(image_to_numpy(corrupted["images"][0]))
    ax_img.set_title(tokenizer.decode(corrupted["input_ids"][0]), fontsize=9)
    ax_img.axis("off")
    accs = [accuracy(model, corrupted, use) for use in REGIMES.values()]
    bars = ax_bar.barh(list(REGIMES), accs, color=_REGIME_COLORS)
    ax_bar.bar_label(bars, fmt="%.2f", padding=2)
    ax_bar.set_xlim(0, 1.15)
    ax_bar.set_xlabel("test accuracy")
    ax_bar.set_title(f"image noise {image_noise:.1f}, word drop {word_drop:.1f}", fontsize=9)
    fig.tight_layout()
    return fig
