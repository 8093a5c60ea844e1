"""Data sparsity and quality (数据稀疏性与质量问题): the article's §6.2, measured in chapter 7.

"High-quality multimodal data sets are scarce and expensive to annotate." The article's cures — weak or
self-supervision, data augmentation, cross-data-set transfer — are each an experiment here, all on the same small
contrastive model (:class:`mmcourse.models.clip.TinyCLIP`) trained for a fixed number of steps on one-object ShapesWorld
scenes, and all measured with one yardstick, :func:`zero_shot_scores` (zero-shot colour × shape accuracy on
held-out scenes, from class prompts):

* :func:`train_on_pairs` — the one training function, and what it is given *are* the experiments: how many pairs
  and how many of them are mismatched (:func:`noisy_scene_text_pairs`: ``indices``, ``noise_rate``, see
  :func:`corrupt_pairing`), text augmentation (``use_paraphrases``: true rewordings of each caption), image
  augmentation (``augment``, see :func:`augment_images`), and the model: from scratch (:func:`build_small_clip`) or
  transferred (:func:`transfer_model`: a model pretrained on another data set, its encoders frozen, with new
  projection layers learnt from the few target pairs).
* :func:`score_pairs` — train (over one or several seeds) and score in one call; :func:`data_size_curve` and
  :func:`noise_curve` sweep the number of pairs and the noise rate.

Augmentations must keep the caption true: a horizontal flip or a small shift of a one-object scene does, while
swapping colour channels turns "a red circle" into a picture of a green or blue one — an augmentation that *creates*
wrong pairs (``"channel_swap"``, kept to show exactly that).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_probability, check_tensor
from mmcourse.data.render import BACKGROUND
from mmcourse.data.vocab import COLORS, SHAPES
from mmcourse.labs.common import (
    SHAPES_TEMPLATES,
    check_scene_text_pairs,
    class_prompt_names,
    draw_text_choice,
    tokenize_scene_texts,
)
from mmcourse.models.clip import TinyCLIP, build_tiny_clip
from mmcourse.nn.encoders import ProjectionHead, SmallCNN
from mmcourse.objectives.contrastive import LogitScale, clip_loss
from mmcourse.retrieval import encode_images, zero_shot_classifier, zero_shot_predict
from mmcourse.train import History, fit, module_device, seeded

__all__ = [
    "AUGMENTATIONS", "SAFE_AUGMENTATIONS", "SMALL_MODEL", "corrupt_pairing", "augment_images", "world_class_labels",
    "zero_shot_scores", "noisy_scene_text_pairs", "build_small_clip", "transfer_model", "train_on_pairs", "score_pairs",
    "data_size_curve", "noise_curve", "weak_pairs", "two_views", "ssl_loss", "SSLPretrainer",
    "pretrain_image_encoder", "seed_spread", "nearest_neighbour_probe", "plot_size_curves", "plot_seed_bars",
    "plot_weak_pairs",
]

AUGMENTATIONS: tuple[str, ...] = ("flip", "shift", "noise", "channel_swap")
"""Image augmentations of :func:`augment_images`; all but ``"channel_swap"`` keep a one-object caption true."""

SAFE_AUGMENTATIONS: tuple[str, ...] = ("flip", "shift", "noise")
"""The augmentations that keep the caption of a one-object scene true."""

SMALL_MODEL: dict = dict(cnn_width=8, vision_dim=32, text_dim=32, text_depth=1, embed_dim=32)
"""The TinyCLIP size chapter 7 trains many times (≈ 32 k parameters with the 60-word vocabulary): SmallCNN
width 8, a 1-layer text encoder of width 32, a 32-dimensional shared space."""


# ------------------------------------------------------------------------------------------------ the data


def corrupt_pairing(num_pairs: int, noise_rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which caption each image gets when a fraction ``noise_rate`` of the pairs is mismatched.

    ``int(noise_rate * num_pairs)`` images are chosen at random and their captions rotated among them, so each of
    them gets another chosen image's caption (the rest keep their own).

    Returns:
        LongTensor ``(num_pairs,)``: entry ``i`` is the index of the caption paired with image ``i``.
    """
    check_positive(num_pairs, "num_pairs", integer=True)
    check_probability(noise_rate, "noise_rate", low_open=False, high_open=False)
    pairing = torch.arange(num_pairs)
    chosen = torch.randperm(num_pairs, generator=generator)[: int(noise_rate * num_pairs)]
    if len(chosen) >= 2:
        pairing[chosen] = chosen.roll(-1)
    return pairing


def _shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels each way, filling with the background grey."""
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=BACKGROUND)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    rows = (offsets[:, 0, None] + torch.arange(h)[None, :]).to(images.device)  # (B, H)
    cols = (offsets[:, 1, None] + torch.arange(w)[None, :]).to(images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _check_augmentation_names(kinds, name: str) -> None:
    """``kinds`` must be a list (not a string) of names from :data:`AUGMENTATIONS`."""
    if isinstance(kinds, str):
        raise TypeError(f"{name} must be a list of names from {list(AUGMENTATIONS)}, got the string {kinds!r}")
    for kind in kinds:
        if kind not in AUGMENTATIONS:
            raise ValueError(f"{name} must hold names from {list(AUGMENTATIONS)}, got {kind!r}")


def augment_images(
    images: torch.Tensor,
    kinds: Sequence[str],
    generator: torch.Generator | None = None,
    *,
    max_shift: int = 2,
    noise_std: float = 0.05,
) -> torch.Tensor:
    """Randomly augmented copies of ``images (B, 3, H, W)`` → ``(B, 3, H, W)`` (the input is not modified).

    Args:
        kinds: any of :data:`AUGMENTATIONS`, applied in that order:
            ``"flip"`` — mirror left–right, each image with probability ½;
            ``"shift"`` — move by up to ``max_shift`` pixels in x and y (background fills the border);
            ``"noise"`` — add Gaussian pixel noise of ``noise_std`` (clamped to [0, 1]);
            ``"channel_swap"`` — permute the RGB channels of each image at random: changes its *colour*, so the
            caption becomes false (a harmful augmentation, kept to show it).
        generator: for reproducible augmentation.
    """
    check_tensor(images, "images", ndim=4, floating=True)
    if images.size(1) != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    _check_augmentation_names(kinds, "kinds")
    check_positive(max_shift, "max_shift", integer=True)
    check_positive(noise_std, "noise_std")
    out = images.clone()
    b = out.size(0)
    if "flip" in kinds:
        flip = (torch.rand(b, generator=generator) < 0.5).to(out.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if "shift" in kinds:
        out = _shift(out, max_shift, generator)
    if "noise" in kinds:
        out = (out + noise_std * torch.randn(out.shape, generator=generator).to(out.device)).clamp(0, 1)
    if "channel_swap" in kinds:
        order = torch.stack([torch.randperm(3, generator=generator) for _ in range(b)]).to(out.device)  # (B, 3)
        out = out.gather(1, order[:, :, None, None].expand_as(out))
    return out


# ------------------------------------------------------------------------------------------------ measuring


def world_class_labels(world, indices: Sequence[int]) -> torch.Tensor:
    """Class of each scene among the world's own ``colors × shapes`` (colour-major): ``(N,)`` long.

    The order matches ``class_prompt_names(world.colors, world.shapes)``.
    """
    index = torch.tensor([int(i) for i in indices])
    if index.numel() == 0:
        raise ValueError("indices must select at least one scene")
    colors, shapes = world.attribute("color")[index], world.attribute("shape")[index]
    if bool((colors < 0).any()):
        raise ValueError("every selected scene needs an object (colour label -1 found)")
    color_position = torch.full((len(COLORS),), -1, dtype=torch.long)
    color_position[[COLORS.index(c) for c in world.colors]] = torch.arange(len(world.colors))
    shape_position = torch.full((len(SHAPES),), -1, dtype=torch.long)
    shape_position[[SHAPES.index(s) for s in world.shapes]] = torch.arange(len(world.shapes))
    return color_position[colors] * len(world.shapes) + shape_position[shapes]


@torch.no_grad()
def zero_shot_scores(
    model: TinyCLIP,
    world,
    tokenizer,
    indices: Sequence[int],
    *,
    templates: Sequence[str] = SHAPES_TEMPLATES,
    max_len: int = 12,
) -> dict[str, float]:
    """Zero-shot classification of the scenes ``indices`` among the world's ``colors × shapes`` classes.

    Each image is given the class whose prompt ("a red circle", "a photo of a red circle", … averaged) is nearest
    in the shared space.

    Returns:
        ``{"accuracy": …, "color": …, "shape": …}``: right class, right colour, right shape (fractions).
    """
    indices = [int(i) for i in indices]
    labels = world_class_labels(world, indices)
    names = class_prompt_names(world.colors, world.shapes)
    classifier = zero_shot_classifier(model, tokenizer, names, templates, max_len=max_len)
    features = encode_images(model, world.images[torch.tensor(indices)])
    predicted = zero_shot_predict(features, classifier).cpu()
    num_shapes = len(world.shapes)
    return {
        "accuracy": float((predicted == labels).float().mean()),
        "color": float((predicted // num_shapes == labels // num_shapes).float().mean()),
        "shape": float((predicted % num_shapes == labels % num_shapes).float().mean()),
    }


# ------------------------------------------------------------------------------------------------ training


class _Projections(nn.Module):
    """The trainable part of a TinyCLIP whose encoders are frozen: two projections and the temperature."""

    def __init__(self, model: TinyCLIP):
        super().__init__()
        self.image_projection = model.image_projection
        self.text_projection = model.text_projection
        self.logit_scale = model.logit_scale

    def loss(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_projection(image_features), dim=-1)
        text = F.normalize(self.text_projection(text_features), dim=-1)
        return clip_loss(self.logit_scale() * image @ text.t())


@torch.no_grad()
def _frozen_features(model: TinyCLIP, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """Pooled encoder outputs of frozen encoders: images ``(N, Dv)``, texts ``(N, P, Dt)`` for ``ids (N, P, L)``,
    computed on the model's device."""
    device = module_device(model)
    images, ids, mask = images.to(device), ids.to(device), mask.to(device)
    image_features = torch.cat([model.image_encoder(images[i : i + 512]).pooled for i in range(0, len(images), 512)])
    n, p, length = ids.shape
    text_features = model.text_encoder(ids.view(n * p, length), mask.view(n * p, length)).pooled
    return image_features, text_features.view(n, p, -1)


def _check_indices(indices, name: str = "indices") -> list[int]:
    if isinstance(indices, (str, torch.Tensor)) or not isinstance(indices, Sequence):
        raise TypeError(f"{name} must be a list of scene indices, got {type(indices).__name__}")
    indices = [int(i) for i in indices]
    if len(indices) < 2:
        raise ValueError(f"{name} must select at least 2 scenes (a contrastive batch needs negatives), got "
                         f"{len(indices)}")
    return indices


def noisy_scene_text_pairs(
    world,
    tokenizer,
    indices: Sequence[int],
    *,
    noise_rate: float = 0.0,
    use_paraphrases: bool = False,
    max_len: int = 12,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The image–caption pairs of the scenes ``indices``, a fraction ``noise_rate`` of them mismatched: the tensors
    :func:`train_on_pairs` trains on.

    Args:
        world, tokenizer: a one-object ``ShapesWorld`` and its :class:`mmcourse.data.Tokenizer`.
        indices: the scenes (their number is the data-set size), at least 2.
        noise_rate: fraction of images paired with another chosen scene's caption (:func:`corrupt_pairing`, drawn
            from a generator seeded with ``seed``): weak supervision.
        use_paraphrases: each image's texts are its (paired) caption and that caption's true rewordings (text
            augmentation); else the caption alone.
        max_len: token length.
    Returns:
        the dict of :func:`mmcourse.labs.common.scene_text_pairs`: ``images (N, 3, H, W)``, ``input_ids`` /
        ``attention_mask (N, P, L)`` (the texts paired with each image), ``counts (N,)``.
    """
    indices = _check_indices(indices)
    check_probability(noise_rate, "noise_rate", low_open=False, high_open=False)
    if not isinstance(use_paraphrases, bool):
        raise TypeError(f"use_paraphrases must be True or False, got {use_paraphrases!r}")
    pairing = corrupt_pairing(len(indices), noise_rate, torch.Generator().manual_seed(seed))
    caption_scenes = [indices[j] for j in pairing.tolist()]
    ids, mask, counts = tokenize_scene_texts(world, tokenizer, caption_scenes, use_paraphrases, max_len)
    return {"images": world.images[torch.tensor(indices)], "input_ids": ids, "attention_mask": mask, "counts": counts}


def build_small_clip(
    vocab_size: int, *, image_size: int, max_len: int = 12, seed: int = 0, **model_kwargs
) -> TinyCLIP:
    """A fresh TinyCLIP drawn under ``seeded(seed)``: :func:`mmcourse.models.clip.build_tiny_clip` with
    ``model_kwargs`` (default :data:`SMALL_MODEL`)."""
    with seeded(seed):
        return build_tiny_clip(vocab_size, image_size=image_size, max_len=max_len, **(model_kwargs or SMALL_MODEL))


def transfer_model(pretrained: TinyCLIP, *, freeze_encoders: bool = True, seed: int = 0) -> TinyCLIP:
    """A copy of ``pretrained`` to train on a new data set (``pretrained`` is not modified).

    With ``freeze_encoders`` its encoders are frozen (``requires_grad`` off, BatchNorm statistics kept: ``eval()``)
    and it gets new projection layers and a new temperature, drawn under ``seeded(seed)``:
    :func:`train_on_pairs` then learns only those — transfer from a pretrained model. Without, it is a plain copy
    to fine-tune whole.
    """
    if not isinstance(pretrained, TinyCLIP):
        raise TypeError(f"pretrained must be a TinyCLIP, got {type(pretrained).__name__}")
    model = copy.deepcopy(pretrained)
    if freeze_encoders:
        with seeded(seed):
            model.image_projection = ProjectionHead(model.image_encoder.dim, model.embed_dim)
            model.text_projection = ProjectionHead(model.text_encoder.dim, model.embed_dim)
            model.logit_scale = LogitScale()
        for encoder in (model.image_encoder, model.text_encoder):
            encoder.eval()
            encoder.requires_grad_(False)
        model.to(module_device(pretrained))  # the new heads join the encoders on their device
    return model


def _encoders_frozen(model: TinyCLIP) -> bool:
    """Whether no encoder parameter of ``model`` is trained (see :func:`transfer_model`)."""
    encoders = (model.image_encoder, model.text_encoder)
    return not any(p.requires_grad for encoder in encoders for p in encoder.parameters())


def train_on_pairs(
    model: TinyCLIP,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 10,
    augment: Sequence[str] = (),
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Train a TinyCLIP (in place) contrastively on image–caption pairs, a fixed number of steps.

    A model whose encoders are frozen (:func:`transfer_model`) learns only its projection layers and temperature,
    on the frozen encoders' outputs (computed once when there is no image augmentation).

    Args:
        model: e.g. :func:`build_small_clip` (from scratch) or :func:`transfer_model` (from a pretrained model).
        data: :func:`noisy_scene_text_pairs` output: ``images (N, 3, H, W)``, ``input_ids`` / ``attention_mask
            (N, P, L)``, ``counts (N,)``; each step reads one of each image's ``counts`` texts at random.
        steps, batch_size, lr, weight_decay, warmup_steps: optimisation (AdamW, warm-up + cosine, clip at 1);
            the batch is ``min(batch_size, N)``.
        augment: image augmentations of :data:`AUGMENTATIONS`, drawn afresh at every step.
        seed: seeds the batches, the text choice and the augmentation.
        device: where to train (default: where the model is); the random draws stay on the CPU, so the result
            depends on ``seed`` only (up to the device's arithmetic).
    Returns:
        the :class:`~mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    if not isinstance(model, TinyCLIP):
        raise TypeError(f"model must be a TinyCLIP, got {type(model).__name__}")
    n = check_scene_text_pairs(data, minimum=2)
    check_positive(steps, "steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    _check_augmentation_names(augment, "augment")
    if device is not None:
        model.to(device)
    frozen, augment = _encoders_frozen(model), tuple(augment)
    choice_generator = torch.Generator().manual_seed(seed + 1)
    augment_generator = torch.Generator().manual_seed(seed + 2)
    images, ids, mask, counts = (data[k] for k in ("images", "input_ids", "attention_mask", "counts"))

    if frozen and not augment:
        # frozen encoders see every input once: train the projections on their cached outputs
        image_features, text_features = _frozen_features(model, images, ids, mask)
        trainable: nn.Module = _Projections(model)
        tensors = (image_features, text_features, counts)

        def step(module: _Projections, batch):
            batch_images, batch_texts, batch_counts = batch
            rows, pick = draw_text_choice(batch_counts, choice_generator)
            return module.loss(batch_images, batch_texts[rows, pick])
    else:
        trainable = _Projections(model) if frozen else model
        tensors = (images, ids, mask, counts)

        def step(module: nn.Module, batch):
            batch_images, batch_ids, batch_mask, batch_counts = batch
            if augment:
                batch_images = augment_images(batch_images, augment, augment_generator)
            rows, pick = draw_text_choice(batch_counts, choice_generator)
            text_ids, text_mask = batch_ids[rows, pick], batch_mask[rows, pick]
            if frozen:
                with torch.no_grad():
                    image_features = model.image_encoder(batch_images).pooled
                    text_features = model.text_encoder(text_ids, text_mask).pooled
                return module.loss(image_features, text_features)
            return module.loss(batch_images, text_ids, text_mask)

    history = fit(trainable, step, tensors, steps=steps, batch_size=min(batch_size, n), lr=lr,
                  weight_decay=weight_decay, lr_schedule="cosine", warmup_steps=warmup_steps, grad_clip=1.0, seed=seed,
                  device=device)
    model.eval()
    return history


def score_pairs(
    world,
    tokenizer,
    train_indices: Sequence[int],
    test_indices: Sequence[int],
    *,
    seeds: Sequence[int] = (0,),
    noise_rate: float = 0.0,
    use_paraphrases: bool = False,
    max_len: int = 12,
    init: TinyCLIP | None = None,
    freeze_encoders: bool = False,
    model_kwargs: dict | None = None,
    weak_indices: Sequence[int] = (),
    weak_noise_rate: float = 0.0,
    image_encoder: nn.Module | None = None,
    **train_kwargs,
) -> dict[str, float]:
    """Train once per seed and return the mean :func:`zero_shot_scores` on the test scenes.

    For each seed: the pairs of ``train_indices`` (:func:`noisy_scene_text_pairs` with ``noise_rate``,
    ``use_paraphrases``, ``max_len``), a model — :func:`build_small_clip` (``model_kwargs``) when ``init`` is None,
    else :func:`transfer_model` of ``init`` (``freeze_encoders``) — and :func:`train_on_pairs` with
    ``train_kwargs`` (``steps``, ``batch_size``, ``augment``, ``device``, …), all seeded by the seed.
    With ``weak_indices`` the pairs are :func:`weak_pairs` instead: the (clean) ``train_indices`` plus those
    scenes, a fraction ``weak_noise_rate`` of them mismatched. ``image_encoder`` (e.g. from
    :func:`pretrain_image_encoder`) gives a from-scratch model its weights as a starting point.

    Returns:
        ``{"accuracy", "color", "shape"}`` averaged over the seeds.
    """
    test_indices = _check_indices(test_indices, "test_indices")
    if isinstance(seeds, int) or len(seeds) == 0:
        raise ValueError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    if init is not None and not isinstance(init, TinyCLIP):
        raise TypeError(f"init must be a TinyCLIP or None, got {type(init).__name__}")
    if freeze_encoders and init is None:
        raise ValueError("freeze_encoders=True needs a pretrained model in init (random frozen encoders learn nothing)")
    if image_encoder is not None and init is not None:
        raise ValueError("image_encoder only applies to a model trained from scratch (init None)")
    if init is not None and model_kwargs:
        raise ValueError(f"model_kwargs {sorted(model_kwargs)} only apply when init is None")
    runs = []
    for seed in (int(s) for s in seeds):
        if len(weak_indices):
            data = weak_pairs(world, tokenizer, train_indices, weak_indices, noise_rate=weak_noise_rate,
                              max_len=max_len, seed=seed)
        else:
            data = noisy_scene_text_pairs(world, tokenizer, train_indices, noise_rate=noise_rate,
                                          use_paraphrases=use_paraphrases, max_len=max_len, seed=seed)
        if init is None:
            model = build_small_clip(tokenizer.vocab_size, image_size=world.images.shape[-1], max_len=max_len,
                                     seed=seed, **(model_kwargs or {}))
            if image_encoder is not None:
                model.image_encoder.load_state_dict(image_encoder.state_dict())
        else:
            model = transfer_model(init, freeze_encoders=freeze_encoders, seed=seed)
        train_on_pairs(model, data, seed=seed, **train_kwargs)
        runs.append(zero_shot_scores(model, world, tokenizer, test_indices, max_len=max_len))
    return {name: sum(run[name] for run in runs) / len(runs) for name in runs[0]}


def data_size_curve(
    world,
    tokenizer,
    pool: Sequence[int],
    test_indices: Sequence[int],
    sizes: Sequence[int],
    **score_kwargs,
) -> dict[int, dict[str, float]]:
    """Scores after training on the first ``n`` scenes of ``pool``, for each ``n`` in ``sizes`` (nested subsets).

    ``score_kwargs`` go to :func:`score_pairs` (``seeds``, ``steps``, ``init``, ``freeze_encoders``, …).
    Returns ``{n: {"accuracy", "color", "shape"}}``.
    """
    pool = list(pool)
    if isinstance(sizes, int) or len(sizes) == 0:
        raise ValueError(f"sizes must be a non-empty list of ints, got {sizes!r}")
    for n in sizes:
        check_positive(n, "sizes[i]", integer=True)
        if n > len(pool):
            raise ValueError(f"sizes must not exceed the pool of {len(pool)} scenes, got {n}")
    return {int(n): score_pairs(world, tokenizer, pool[:n], test_indices, **score_kwargs) for n in sizes}


def noise_curve(
    world,
    tokenizer,
    train_indices: Sequence[int],
    test_indices: Sequence[int],
    noise_rates: Sequence[float],
    **score_kwargs,
) -> dict[float, dict[str, float]]:
    """Scores after training on ``train_indices`` with each fraction of mismatched pairs in ``noise_rates``.

    Returns ``{rate: {"accuracy", "color", "shape"}}``.
    """
    if isinstance(noise_rates, (int, float)) or len(noise_rates) == 0:
        raise ValueError(f"noise_rates must be a non-empty list of numbers in [0, 1], got {noise_rates!r}")
    for rate in noise_rates:
        check_probability(rate, "noise_rates[i]", low_open=False, high_open=False)
    return {
        float(rate): score_pairs(world, tokenizer, train_indices, test_indices, noise_rate=float(rate), **score_kwargs)
        for rate in noise_rates
    }


# ------------------------------------------------------------------------------------------------ weak supervision


def weak_pairs(
    world,
    tokenizer,
    clean_indices: Sequence[int],
    weak_indices: Sequence[int],
    *,
    noise_rate: float,
    max_len: int = 12,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A few checked pairs plus many cheap, unchecked ones: the data of weak supervision (弱监督).

    The scenes ``clean_indices`` keep their own captions; among the scenes ``weak_indices`` a fraction
    ``noise_rate`` is mismatched (:func:`corrupt_pairing`, seeded by ``seed``), as in web-scraped pairs.

    Returns:
        the dict of :func:`noisy_scene_text_pairs` for the clean scenes followed by the weak ones.
    """
    clean = noisy_scene_text_pairs(world, tokenizer, clean_indices, max_len=max_len, seed=seed)
    weak = noisy_scene_text_pairs(world, tokenizer, weak_indices, noise_rate=noise_rate, max_len=max_len, seed=seed)
    return {key: torch.cat([clean[key], weak[key]]) for key in clean}


# ------------------------------------------------------------------------------------------------ self-supervision


def two_views(images: torch.Tensor, generator: torch.Generator, kinds: Sequence[str] = SAFE_AUGMENTATIONS):
    """Two independently augmented copies of ``images (B, 3, H, W)`` (:func:`augment_images`): the two views a
    self-supervised model must recognise as the same picture."""
    return augment_images(images, kinds, generator), augment_images(images, kinds, generator)


def ssl_loss(encoder: nn.Module, head: nn.Module, images: torch.Tensor, generator: torch.Generator, *,
             temperature: float = 0.1, kinds: Sequence[str] = SAFE_AUGMENTATIONS) -> torch.Tensor:
    """SimCLR-style contrast between two views, no captions needed: each view of image ``i`` must pick the other
    view of image ``i`` among the other views of the batch (InfoNCE both ways, as CLIP's loss between a view and a
    view instead of an image and a caption).

    ``encoder(images).pooled (B, D)`` → ``head`` → normalised ``(B, E)``; returns the scalar loss.
    """
    first, second = two_views(images, generator, kinds)
    z1 = F.normalize(head(encoder(first).pooled), dim=-1)
    z2 = F.normalize(head(encoder(second).pooled), dim=-1)
    logits = z1 @ z2.t() / temperature  # (B, B): view 1 of image i vs view 2 of image j
    targets = torch.arange(len(images), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class SSLPretrainer(nn.Module):
    """An image encoder (a :class:`SmallCNN` the size of :data:`SMALL_MODEL`'s) and the small MLP head its
    self-supervised loss is computed through (thrown away afterwards, as in SimCLR)."""

    def __init__(self, image_size: int, cnn_width: int = SMALL_MODEL["cnn_width"],
                 vision_dim: int = SMALL_MODEL["vision_dim"]):
        super().__init__()
        self.encoder = SmallCNN(3, cnn_width, vision_dim, image_size)
        self.head = ProjectionHead(vision_dim, vision_dim, hidden_dim=vision_dim)


def pretrain_image_encoder(
    images: torch.Tensor,
    *,
    steps: int = 100,
    batch_size: int = 64,
    lr: float = 3e-3,
    temperature: float = 0.1,
    kinds: Sequence[str] = SAFE_AUGMENTATIONS,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[SmallCNN, History]:
    """Self-supervised pretraining (自监督学习) of an image encoder on unpaired images ``(N, 3, H, W)`` with
    :func:`ssl_loss`, a fixed number of steps (AdamW, warm-up + cosine, clip at 1, as :func:`train_on_pairs`).

    Returns:
        the trained encoder (in ``eval()`` mode; its ``pooled`` width is ``SMALL_MODEL["vision_dim"]``, ready for
        ``model.image_encoder.load_state_dict``) and the :class:`~mmcourse.train.History`.
    """
    check_tensor(images, "images", ndim=4, floating=True)
    check_positive(steps, "steps", integer=True)
    _check_augmentation_names(kinds, "kinds")
    with seeded(seed):
        model = SSLPretrainer(images.size(-1))
    generator = torch.Generator().manual_seed(seed + 2)

    def step(module: SSLPretrainer, batch):
        return ssl_loss(module.encoder, module.head, batch[0], generator, temperature=temperature, kinds=kinds)

    history = fit(model, step, (images,), steps=steps, batch_size=min(batch_size, len(images)), lr=lr,
                  weight_decay=0.05, lr_schedule="cosine", warmup_steps=10, grad_clip=1.0, seed=seed, device=device)
    model.eval()
    return model.encoder, history


# ------------------------------------------------------------------------------------------------ reporting


def seed_spread(runs: dict, key: str = "accuracy") -> tuple[float, float, float]:
    """``(mean, min, max)`` of ``runs[seed][key]`` over the seeds of ``runs`` (``{seed: scores}``)."""
    values = [float(run[key]) for run in runs.values()]
    if not values:
        raise ValueError("runs must hold at least one seed")
    return sum(values) / len(values), min(values), max(values)


@torch.no_grad()
def nearest_neighbour_probe(encoder: nn.Module, world, train_indices: Sequence[int],
                            test_indices: Sequence[int]) -> dict[str, float]:
    """What an image encoder's features already separate, without any training: each test image takes the colour
    and the shape of its nearest training image (cosine of the ``pooled`` features).

    Returns ``{"color": …, "shape": …}``, fractions right (chance 1/6 and 1/3 on chapter 7's world).
    """
    encoder.eval()
    device = module_device(encoder)
    train, test = torch.tensor([int(i) for i in train_indices]), torch.tensor([int(i) for i in test_indices])
    features = [F.normalize(encoder(world.images[i].to(device)).pooled, dim=-1).cpu() for i in (train, test)]
    nearest = train[(features[1] @ features[0].t()).argmax(dim=1)]
    return {name: float((world.attribute(name)[nearest] == world.attribute(name)[test]).float().mean())
            for name in ("color", "shape")}


def plot_size_curves(curves: dict, sizes: Sequence[int], baseline: dict | None = None, figsize=(13, 3.6)):
    """Zero-shot accuracy against the number of pairs, one panel each for colour+shape, colour, shape.

    Args:
        curves: ``{label: {seed: {n: scores}}}``: each seed's run as a faint marker, the mean as a line.
        baseline: scores drawn as a dashed line ("pretrained, no target pairs").
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=figsize, sharey=True)
    styles = [("o", "tab:blue"), ("s", "tab:green"), ("^", "tab:red")]
    for ax, key, title in zip(axes, ["accuracy", "color", "shape"], ["colour and shape", "colour only", "shape only"]):
        for (label, runs), (marker, color) in zip(curves.items(), styles):
            for run in runs.values():
                ax.plot(sizes, [run[n][key] for n in sizes], marker, color=color, alpha=0.35, ms=4)
            mean = [sum(run[n][key] for run in runs.values()) / len(runs) for n in sizes]
            ax.plot(sizes, mean, marker + "-", color=color, label=f"{label} (mean of {len(runs)} seeds)")
        if baseline is not None:
            ax.axhline(baseline[key], color="tab:orange", ls="--", lw=1, label="pretrained, no target pairs")
        ax.axhline({"accuracy": 1 / 18, "color": 1 / 6, "shape": 1 / 3}[key], color="gray", ls=":", lw=1,
                   label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes), [str(n) for n in sizes])
        ax.set_xlabel("training pairs")
        ax.set_title(f"zero-shot accuracy: {title}", fontsize=10)
    axes[0].set_ylabel("accuracy on 300 test scenes")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_seed_bars(results: dict, title: str, figsize=(8, 3.2)):
    """Bars of the mean accuracy, colour and shape of each variant, with each seed's value as a dot.

    ``results``: ``{variant: {seed: scores}}``. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    x = torch.arange(len(results)).float()
    for offset, key in zip((-0.27, 0.0, 0.27), ("accuracy", "color", "shape")):
        means = [seed_spread(runs, key)[0] for runs in results.values()]
        bars = ax.bar(x + offset, means, 0.27, label=key)
        for i, runs in enumerate(results.values()):
            ax.plot([float(x[i]) + offset] * len(runs), [run[key] for run in runs.values()], "k.", ms=3)
        del bars
    ax.set_xticks(x.tolist(), list(results), fontsize=9)
    ax.set_ylabel("zero-shot accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=3)
    ax.set_title(title + " (bars: mean, dots: seeds)")
    fig.tight_layout()
    return fig


def plot_weak_pairs(results: dict, clean_only: dict, num_clean: int, num_weak: int, figsize=(6.5, 3.6)):
    """Accuracy against the fraction of wrong pairs among the added weak pairs, one line per seed and the mean,
    with the clean pairs alone as a band (their seed range).

    ``results``: ``{noise_rate: {seed: scores}}``; ``clean_only``: ``{seed: scores}``. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    rates = sorted(results)
    seeds = list(next(iter(results.values())))
    for seed in seeds:
        ax.plot(rates, [results[r][seed]["accuracy"] for r in rates], "o", color="tab:red", alpha=0.35, ms=4)
    ax.plot(rates, [seed_spread(results[r])[0] for r in rates], "o-", color="tab:red",
            label=f"{num_clean} clean + {num_weak} weak pairs (mean)")
    mean, low, high = seed_spread(clean_only)
    ax.axhspan(low, high, color="tab:blue", alpha=0.15)
    ax.axhline(mean, color="tab:blue", label=f"{num_clean} clean pairs only (mean, band: seed range)")
    ax.axhline(1 / 18, color="gray", ls=":", lw=1, label="chance")
    ax.set_xticks(rates, [f"{r:.0%}" for r in rates])
    ax.set_xlabel("wrong pairs among the added weak pairs")
    ax.set_ylabel("zero-shot accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Weak supervision: adding cheap, unchecked pairs")
    fig.tight_layout()
    return fig
