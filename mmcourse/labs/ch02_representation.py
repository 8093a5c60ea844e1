"""Three ways to align images and texts in one shared space: the article's §2.2, chapter 2.

The article lists three alignment strategies (模态间对齐技术):

1. **implicit alignment** (隐式对齐) — train the encoders jointly on a downstream task and let the correspondence
   emerge. Here the task is image–text matching: a small :class:`MatchingHead` reads a pair of embeddings and says
   whether the caption describes the image. No loss term mentions distances in the shared space.
2. **explicit alignment** (显式对齐) — use extra annotation to guide the mapping. Here both modalities' embeddings
   are classified by the *same* attribute classifier (:class:`AttributeHead`, colour and shape labels), so the
   labels are the bridge between the two modalities.
3. **contrastive alignment** (对比学习对齐) — pull matching pairs together and push the other pairs of the batch
   apart with the CLIP loss (:func:`mmcourse.objectives.contrastive.clip_loss`, learnable temperature).

All three train the same two-tower model, :class:`mmcourse.models.clip.TinyCLIP` (an image encoder and a text encoder,
each followed by a :class:`mmcourse.nn.encoders.ProjectionHead` into a ``D``-dimensional space), on the same scenes,
captions and minibatches, for the same number of steps: only the loss differs. :func:`build_aligner` builds the
towers and the strategy's head (an :class:`Aligner`), :func:`labelled_scene_text_pairs` the training tensors, and
:func:`train_alignment` trains one and returns an :class:`AlignmentHistory` (the History, plus optional snapshots
of probe embeddings taken during training, for the chapter's before/after explorer); :func:`alignment_metrics`
measures every trained model with one yardstick.

A further modality can be *bound* afterwards: :func:`bind_modality` trains a new encoder (e.g. for spectrograms,
wrapped by :func:`build_bound_encoder`, paired with the anchors by :func:`binding_pairs`)
against frozen image embeddings only; retrieval from the new modality to text then emerges without a single
audio–text pair (the ImageBind idea).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.data.vocab import COLORS, SHAPES
from mmcourse.labs.common import (
    SHAPES_TEMPLATES,
    check_scene_text_pairs,
    class_prompt_names,
    draw_text_choice,
    scene_text_pairs,
)
from mmcourse.models.clip import TinyCLIP, build_tiny_clip
from mmcourse.nn.encoders import ProjectionHead
from mmcourse.objectives.contrastive import LogitScale, clip_loss
from mmcourse.retrieval import caption_recall, encode_images, encode_texts, zero_shot_classifier, zero_shot_predict
from mmcourse.train import History, evaluating, fit, iterate_minibatches, module_device, seeded

__all__ = [
    "STRATEGIES", "MatchingHead", "AttributeHead", "implicit_matching_loss", "explicit_attribute_loss",
    "labelled_scene_text_pairs", "Aligner", "build_aligner", "Snapshot", "AlignmentHistory", "train_alignment",
    "embed_captions", "alignment_metrics", "BoundEncoder", "build_bound_encoder", "binding_pairs", "bind_modality",
    "implicit_negative_census", "cosine_spread", "plot_space", "plot_snapshot",
]

STRATEGIES: tuple[str, ...] = ("implicit", "explicit", "contrastive")
"""The article's three alignment strategies, in its order."""


# ---------------------------------------------------------------------------------------------------- heads


class MatchingHead(nn.Module):
    """Implicit alignment's task head: does this text describe this image? ``(B, D), (B, D) → (B,)`` logits.

    The pair is read as ``[i ; t ; i ⊙ t ; |i − t|]`` by a two-layer MLP, so the head may learn *any* comparison:
    nothing forces matching pairs to be close in cosine terms.

    Args:
        embed_dim: width ``D`` of the shared space; hidden_dim: width of the MLP.
    """

    def __init__(self, embed_dim: int, hidden_dim: int = 64):
        super().__init__()
        check_positive(embed_dim, "embed_dim", integer=True)
        check_positive(hidden_dim, "hidden_dim", integer=True)
        self.embed_dim = embed_dim
        self.net = nn.Sequential(nn.Linear(4 * embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))

    def forward(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Match logits ``(...,)`` for pairs of embeddings ``(..., D)`` (same leading shape)."""
        for name, x in (("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings)):
            check_tensor(x, name, floating=True)
            if x.size(-1) != self.embed_dim:
                raise ValueError(f"{name} must have last dim {self.embed_dim}, got shape {tuple(x.shape)}")
        if image_embeddings.shape != text_embeddings.shape:
            raise ValueError(
                "image_embeddings and text_embeddings must have the same shape, got "
                f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
            )
        i, t = image_embeddings, text_embeddings
        return self.net(torch.cat([i, t, i * t, (i - t).abs()], dim=-1)).squeeze(-1)

    def pairwise(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Scores of every image with every text: ``(Ni, D), (Nt, D) → (Ni, Nt)``, computed on the head's device and
        returned on the device of ``image_embeddings`` (CPU embeddings from :func:`embed_captions` give CPU scores)."""
        check_tensor(image_embeddings, "image_embeddings", ndim=2, floating=True)
        check_tensor(text_embeddings, "text_embeddings", ndim=2, floating=True)
        device = module_device(self)
        ni, nt = image_embeddings.size(0), text_embeddings.size(0)
        images = image_embeddings.to(device)[:, None, :].expand(ni, nt, -1)
        texts = text_embeddings.to(device)[None, :, :].expand(ni, nt, -1)
        return self(images, texts).to(image_embeddings.device)


class AttributeHead(nn.Module):
    """Explicit alignment's head: one cosine classifier per annotated attribute, shared by both modalities.

    ``logits[name] = scale · normalize(z) @ normalize(W_name)ᵀ``: an image embedding and a text embedding can
    only both be classified "red" by lying near the same class direction — the labels tie the modalities together.

    Args:
        embed_dim: width ``D`` of the shared space.
        num_classes: attribute name → number of classes, e.g. ``{"color": 6, "shape": 4}``.
        scale: inverse temperature of the cosine logits.

    ``forward(embeddings (B, D)) → {name: logits (B, C_name)}``.
    """

    def __init__(self, embed_dim: int, num_classes: Mapping[str, int], scale: float = 10.0):
        super().__init__()
        check_positive(embed_dim, "embed_dim", integer=True)
        check_positive(scale, "scale")
        if not isinstance(num_classes, Mapping) or not num_classes:
            raise ValueError(f"num_classes must be a non-empty mapping name -> int, got {num_classes!r}")
        for name, n in num_classes.items():
            check_positive(n, f"num_classes[{name!r}]", integer=True)
        self.embed_dim = embed_dim
        self.scale = float(scale)
        self.weights = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(n, embed_dim) / embed_dim**0.5) for name, n in num_classes.items()}
        )

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        check_tensor(embeddings, "embeddings", ndim=2, floating=True)
        if embeddings.size(1) != self.embed_dim:
            raise ValueError(f"embeddings must have shape (B, {self.embed_dim}), got {tuple(embeddings.shape)}")
        z = F.normalize(embeddings, dim=-1)
        return {name: self.scale * z @ F.normalize(w, dim=-1).t() for name, w in self.weights.items()}


# ---------------------------------------------------------------------------------------------------- losses


def _check_batch(images, input_ids, attention_mask) -> None:
    check_tensor(images, "images", ndim=4, floating=True)
    check_tensor(input_ids, "input_ids", ndim=2, floating=False)
    check_tensor(attention_mask, "attention_mask", ndim=2)
    if not (images.size(0) == input_ids.size(0) == attention_mask.size(0)):
        raise ValueError(
            "images, input_ids and attention_mask must hold the same number of pairs, got "
            f"{tuple(images.shape)}, {tuple(input_ids.shape)}, {tuple(attention_mask.shape)}"
        )


def implicit_matching_loss(
    model: TinyCLIP,
    head: MatchingHead,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Binary cross-entropy of image–text matching on the true pairs and on mismatched ones.

    The mismatched pairs pair image ``i`` with text ``i − 1`` of the batch (texts rolled by one); when that text is
    word for word the true caption, the pair is labelled a match.

    Args:
        images ``(B, 3, H, W)``, input_ids ``(B, L)``, attention_mask ``(B, L)``: ``B >= 2`` matching pairs.
    Returns:
        scalar loss (mean over the ``2B`` pairs).
    """
    _check_batch(images, input_ids, attention_mask)
    if images.size(0) < 2:
        raise ValueError(f"implicit_matching_loss needs at least 2 pairs to form a mismatch, got {images.size(0)}")
    image_embeddings = model.encode_image(images)
    text_embeddings = model.encode_text(input_ids, attention_mask)
    rolled_ids, rolled_mask = input_ids.roll(1, dims=0), attention_mask.roll(1, dims=0)
    same_text = ((rolled_ids == input_ids) | (rolled_mask == 0) & (attention_mask == 0)).all(dim=1)
    logits = torch.cat([head(image_embeddings, text_embeddings), head(image_embeddings, text_embeddings.roll(1, 0))])
    targets = torch.cat([torch.ones_like(same_text, dtype=logits.dtype), same_text.to(logits.dtype)])
    return F.binary_cross_entropy_with_logits(logits, targets)


def explicit_attribute_loss(
    model: TinyCLIP,
    head: AttributeHead,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """Cross-entropy of the shared attribute classifier on the image *and* on the text embedding of each pair.

    Args:
        labels: attribute name → LongTensor ``(B,)`` of class ids (the annotation), one entry per head attribute.
    Returns:
        scalar loss: mean over attributes and over the two modalities.
    """
    _check_batch(images, input_ids, attention_mask)
    missing = [name for name in head.weights if name not in labels]
    if missing:
        raise ValueError(f"labels must hold every attribute of the head {list(head.weights)}, missing {missing}")
    embeddings = (model.encode_image(images), model.encode_text(input_ids, attention_mask))
    losses = []
    for z in embeddings:
        for name, logits in head(z).items():
            target = labels[name]
            check_tensor(target, f"labels[{name!r}]", ndim=1, floating=False)
            if target.size(0) != z.size(0):
                raise ValueError(f"labels[{name!r}] must have shape ({z.size(0)},), got {tuple(target.shape)}")
            losses.append(F.cross_entropy(logits, target))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------------- training


def labelled_scene_text_pairs(
    world,
    tokenizer,
    indices: Sequence[int] | None = None,
    *,
    use_paraphrases: bool = True,
    max_len: int = 16,
) -> dict[str, torch.Tensor]:
    """ShapesWorld scenes, their texts and their attribute labels: the tensors :func:`train_alignment` trains on.

    :func:`mmcourse.labs.common.scene_text_pairs` (``images (N, 3, H, W)``, ``input_ids`` / ``attention_mask
    (N, P, L)``, ``counts (N,)``) plus ``color (N,)`` and ``shape (N,)``: the attribute ids (positions in
    ``mmcourse.data.COLORS`` / ``SHAPES``) of the scene's object, ``-1`` for a scene that does not hold exactly one
    object (only ``"explicit"`` alignment reads them, and it needs one-object scenes).
    """
    data = scene_text_pairs(world, tokenizer, indices, use_paraphrases=use_paraphrases, max_len=max_len)
    index = torch.tensor(list(range(len(world))) if indices is None else [int(i) for i in indices])
    one_object = world.num_objects[index] == 1
    for name in ("color", "shape"):
        data[name] = torch.where(one_object, world.attribute(name)[index], torch.full_like(index, -1))
    return data


class Aligner(nn.Module):
    """A two-tower :class:`~mmcourse.models.clip.TinyCLIP` and the head of its alignment ``strategy``, in one
    module so that one optimizer trains both: ``model``, ``head`` (a :class:`MatchingHead` for ``"implicit"``,
    an :class:`AttributeHead` over ``COLORS`` and ``SHAPES`` for ``"explicit"``, ``None`` for ``"contrastive"``)."""

    def __init__(self, strategy: str, model: TinyCLIP, head: nn.Module | None):
        super().__init__()
        check_choice(strategy, "strategy", STRATEGIES)
        if (head is None) != (strategy == "contrastive"):
            raise ValueError(f"strategy {strategy!r} needs {'no' if strategy == 'contrastive' else 'a'} head")
        self.strategy = strategy
        self.model = model
        self.head = head


def build_aligner(
    strategy: str, vocab_size: int, *, image_size: int = 32, max_len: int = 16, seed: int = 0, **model_kwargs
) -> Aligner:
    """A fresh :class:`Aligner` for ``strategy``, drawn under ``seeded(seed)``: the same seed gives every strategy
    the same initial towers (:func:`mmcourse.models.clip.build_tiny_clip` with ``model_kwargs``: ``cnn_width``,
    ``embed_dim``, ...), then the strategy's head."""
    check_choice(strategy, "strategy", STRATEGIES)
    with seeded(seed):
        model = build_tiny_clip(vocab_size, image_size=image_size, max_len=max_len, **model_kwargs)
        head: nn.Module | None = None
        if strategy == "implicit":
            head = MatchingHead(model.embed_dim)
        elif strategy == "explicit":
            head = AttributeHead(model.embed_dim, {"color": len(COLORS), "shape": len(SHAPES)})
        return Aligner(strategy, model, head)


@dataclass
class Snapshot:
    """Embeddings of the probe images ``(P, D)`` and probe texts ``(Q, D)`` after ``step`` training steps."""

    step: int
    image_embeddings: torch.Tensor
    text_embeddings: torch.Tensor


@dataclass
class AlignmentHistory(History):
    """What :func:`train_alignment` returns: the :class:`~mmcourse.train.History` of the run plus the
    ``snapshots`` of the probe embeddings (empty without probes)."""

    snapshots: list[Snapshot] = field(default_factory=list)


def _check_probes(probe_images, probe_texts, snapshot_every) -> bool:
    """Whether snapshots are wanted (and their arguments valid)."""
    if snapshot_every is None:
        return False
    check_positive(snapshot_every, "snapshot_every", integer=True)
    if probe_images is None or probe_texts is None:
        raise ValueError("snapshot_every needs probe_images and probe_texts")
    check_tensor(probe_images, "probe_images", ndim=4, floating=True)
    if not isinstance(probe_texts, (tuple, list)) or len(probe_texts) != 2:
        raise ValueError("probe_texts must be (input_ids (Q, L), attention_mask (Q, L)), e.g. tokenizer.encode(texts)")
    for name, t in zip(("input_ids", "attention_mask"), probe_texts, strict=True):
        check_tensor(t, f"probe_texts {name}", ndim=2, floating=False)
    return True


def _encode_probe(model: TinyCLIP, images: torch.Tensor, texts: tuple[torch.Tensor, torch.Tensor]) -> Snapshot:
    """Probe embeddings on the CPU (step 0; the caller sets it): images ``(P, D)``, texts ``(Q, D)``."""
    device = module_device(model)
    ids, mask = texts
    with evaluating(model):
        text_embeddings = torch.cat([model.encode_text(ids[i : i + 1024].to(device), mask[i : i + 1024].to(device))
                                     for i in range(0, len(ids), 1024)])
    return Snapshot(0, encode_images(model, images).cpu(), text_embeddings.cpu())


def train_alignment(
    aligner: Aligner,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 20,
    seed: int = 0,
    device: torch.device | str | None = None,
    probe_images: torch.Tensor | None = None,
    probe_texts: tuple[torch.Tensor, torch.Tensor] | None = None,
    snapshot_every: int | None = None,
) -> AlignmentHistory:
    """Train an :class:`Aligner` (in place, e.g. from :func:`build_aligner`) with its alignment strategy.

    Every strategy sees the same minibatches for a given ``seed`` (the same scenes, and the same caption or
    paraphrase of each); only the loss differs: ``"implicit"`` → :func:`implicit_matching_loss`, ``"explicit"`` →
    :func:`explicit_attribute_loss` with the colour and shape labels of the scenes, ``"contrastive"`` → the CLIP
    loss with a learnable temperature. AdamW, warm-up + cosine learning rate, gradient clipping at 1.

    Args:
        aligner: the two towers and the strategy's head.
        data: :func:`labelled_scene_text_pairs` output (``N >= 2`` scenes; ``"explicit"`` needs one-object scenes).
        steps, batch_size, lr, weight_decay, warmup_steps: optimisation (the batch is ``min(batch_size, N)``).
        seed: seeds the batches and the text choice of each step.
        device: where to train (default: where the aligner is).
        probe_images ``(P, 3, H, W)``, probe_texts ``(ids (Q, L), mask (Q, L))`` (``tokenizer.encode(texts)``),
            snapshot_every: record a :class:`Snapshot` of the probe embeddings before training and every
            ``snapshot_every`` steps (and after the last step).
    Returns:
        an :class:`AlignmentHistory` (the run's History and its ``snapshots``); the aligner is left in ``eval()``
        mode.
    """
    if not isinstance(aligner, Aligner):
        raise TypeError(f"aligner must be an Aligner (see build_aligner), got {type(aligner).__name__}")
    n = check_scene_text_pairs(data, minimum=2)
    missing = [k for k in ("color", "shape") if k not in data]
    if missing:
        raise ValueError(f"data must hold the labels {missing} (see labelled_scene_text_pairs)")
    check_positive(steps, "steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    strategy = aligner.strategy
    if strategy == "explicit" and bool((data["color"] < 0).any() or (data["shape"] < 0).any()):
        raise ValueError("strategy='explicit' needs one-object scenes (one colour and one shape label per scene)")
    snapshots_wanted = _check_probes(probe_images, probe_texts, snapshot_every)
    if device is not None:
        aligner.to(device)
    choice_generator = torch.Generator().manual_seed(seed + 1)

    def step(aligner: Aligner, batch):
        rows, pick = draw_text_choice(batch["counts"], choice_generator)
        images = batch["images"]
        text_ids, text_mask = batch["input_ids"][rows, pick], batch["attention_mask"][rows, pick]
        if strategy == "implicit":
            return implicit_matching_loss(aligner.model, aligner.head, images, text_ids, text_mask)
        if strategy == "explicit":
            labels = {"color": batch["color"], "shape": batch["shape"]}
            return explicit_attribute_loss(aligner.model, aligner.head, images, text_ids, text_mask, labels)
        return aligner.model.loss(images, text_ids, text_mask)

    snapshots: list[Snapshot] = []

    def take_snapshot(step_number: int) -> None:
        snapshots.append(_encode_probe(aligner.model, probe_images, probe_texts))
        snapshots[-1].step = step_number

    def eval_fn(_aligner: Aligner):  # fit calls it every snapshot_every steps and once more after the last step
        next_step = min(snapshots[-1].step + snapshot_every, steps)
        if snapshots[-1].step != next_step:
            take_snapshot(next_step)

    if snapshots_wanted:
        take_snapshot(0)
    history = fit(
        aligner,
        step,
        {k: data[k] for k in ("images", "input_ids", "attention_mask", "counts", "color", "shape")},
        steps=steps,
        batch_size=min(batch_size, n),
        lr=lr,
        weight_decay=weight_decay,
        lr_schedule="cosine",
        warmup_steps=warmup_steps,
        grad_clip=1.0,
        device=device,
        seed=seed,
        eval_fn=eval_fn if snapshots_wanted else None,
        eval_every=snapshot_every,
    )
    if snapshots_wanted and snapshots[-1].step != steps:
        take_snapshot(steps)
    aligner.eval()
    return AlignmentHistory(**{f.name: getattr(history, f.name) for f in fields(History)}, snapshots=snapshots)


# ---------------------------------------------------------------------------------------------------- measuring


@torch.no_grad()
def embed_captions(
    model: TinyCLIP, world, tokenizer, indices: Sequence[int], max_len: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Embeddings of the scenes ``indices`` and of their *distinct* canonical captions.

    Returns:
        ``image_embeddings (N, D)``, ``caption_embeddings (C, D)`` (unit norm), ``caption_index (N,)`` (which
        distinct caption describes each image) and the ``C`` distinct captions, in order of first appearance.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("indices must select at least one scene")
    captions = [world.captions[i] for i in indices]
    distinct = list(dict.fromkeys(captions))
    position = {c: j for j, c in enumerate(distinct)}
    caption_index = torch.tensor([position[c] for c in captions])
    image_embeddings = encode_images(model, world.images[torch.tensor(indices)]).cpu()
    caption_embeddings = encode_texts(model, tokenizer, distinct, max_len=max_len).cpu()
    return image_embeddings, caption_embeddings, caption_index, distinct


def _cosine_gap(similarity: torch.Tensor, caption_index: torch.Tensor) -> float:
    positives = caption_index[:, None] == torch.arange(similarity.size(1))[None, :]
    if positives.all():
        return 0.0
    return float(similarity[positives].mean() - similarity[~positives].mean())


@torch.no_grad()
def alignment_metrics(
    model: TinyCLIP,
    world,
    tokenizer,
    indices: Sequence[int],
    *,
    templates: Sequence[str] = SHAPES_TEMPLATES,
    max_len: int = 16,
) -> dict[str, float]:
    """One yardstick for every strategy, all read from cosine similarities in the shared space.

    Args:
        model: a two-tower model with ``encode_image`` / ``encode_text`` (e.g. ``Aligner.model``).
        world, tokenizer: the ShapesWorld (one-object scenes for the zero-shot numbers) and its tokenizer.
        indices: the scenes to evaluate on (held out from training).
        templates: prompt templates for zero-shot classification, ``{}`` = "a red circle", ...
    Returns:
        ``i2t_R@1`` / ``t2i_R@1`` — image ↔ caption retrieval among the distinct captions of ``indices``;
        ``zero_shot`` — colour × shape accuracy from prompts (templates averaged), and the share of images whose
        predicted class has the right colour (``zero_shot_color``) or the right shape (``zero_shot_shape``);
        ``cosine_gap`` — mean cosine of an image with its own caption minus with the other captions (0 when the
        space does not separate pairs, at most 2).
    """
    indices = [int(i) for i in indices]
    image_embeddings, caption_embeddings, caption_index, _ = embed_captions(model, world, tokenizer, indices, max_len)
    similarity = image_embeddings @ caption_embeddings.t()
    out = caption_recall(similarity, caption_index)
    classifier = zero_shot_classifier(model, tokenizer, class_prompt_names(COLORS, SHAPES), templates, max_len=max_len)
    predicted = zero_shot_predict(image_embeddings, classifier.cpu())
    index = torch.tensor(indices)
    colors, shapes = world.attribute("color")[index], world.attribute("shape")[index]
    if bool((colors < 0).any()):
        raise ValueError("alignment_metrics needs scenes with at least one object (zero-shot labels)")
    right_color = predicted // len(SHAPES) == colors
    right_shape = predicted % len(SHAPES) == shapes
    out["zero_shot"] = float((right_color & right_shape).float().mean())
    out["zero_shot_color"] = float(right_color.float().mean())
    out["zero_shot_shape"] = float(right_shape.float().mean())
    out["cosine_gap"] = _cosine_gap(similarity, caption_index)
    return out


# ---------------------------------------------------------------------------------------------------- binding


class BoundEncoder(nn.Module):
    """A new modality's encoder followed by a projection into an existing shared space.

    ``encode(inputs) → (B, D)`` unit-norm embeddings; ``encoder`` returns ``(tokens, pooled)`` and has ``.dim``.
    """

    def __init__(self, encoder: nn.Module, embed_dim: int, init_temperature: float = 0.07):
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(getattr(encoder, "dim", None), int):
            raise TypeError(f"encoder must be an nn.Module with an int attribute .dim, got {type(encoder).__name__}")
        self.encoder = encoder
        self.projection = ProjectionHead(encoder.dim, embed_dim)
        self.logit_scale = LogitScale(init_temperature)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.encoder(inputs).pooled), dim=-1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.encode(inputs)

    def encode_all(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Embed many inputs in eval mode: ``(N, ...) → (N, D)``."""
        device = module_device(self)
        with evaluating(self):
            return torch.cat([self.encode(inputs[i : i + batch_size].to(device))
                              for i in range(0, len(inputs), batch_size)])


def build_bound_encoder(encoder: nn.Module, embed_dim: int, *, seed: int = 0) -> BoundEncoder:
    """``BoundEncoder(encoder, embed_dim)`` with its new projection and temperature drawn under ``seeded(seed)``
    (``encoder`` itself is taken as it is)."""
    with seeded(seed):
        return BoundEncoder(encoder, embed_dim)


def binding_pairs(inputs: torch.Tensor, anchor_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """A new modality's inputs paired with frozen anchor embeddings: the tensors :func:`bind_modality` trains on.

    Args:
        inputs: ``(N, ...)`` the new modality's inputs (e.g. spectrograms ``(N, 1, F, T)``).
        anchor_embeddings: ``(N, D)`` frozen embeddings of the paired anchor (e.g. the images of the same scenes);
            row ``i`` pairs with ``inputs[i]``.
    Returns:
        ``{"inputs": (N, ...), "anchors": (N, D)}``, the anchors detached and normalised to unit length.
    """
    check_tensor(inputs, "inputs", floating=True)
    check_tensor(anchor_embeddings, "anchor_embeddings", ndim=2, floating=True, finite=True)
    if inputs.size(0) != anchor_embeddings.size(0):
        raise ValueError(
            f"inputs and anchor_embeddings must pair row by row, got {tuple(inputs.shape)} and "
            f"{tuple(anchor_embeddings.shape)}"
        )
    return {"inputs": inputs, "anchors": F.normalize(anchor_embeddings.detach(), dim=-1)}


def bind_modality(
    model: BoundEncoder,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 150,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 20,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Bind a new modality to a frozen shared space: train ``model`` (in place) with the contrastive loss of its
    embeddings against the anchor embeddings.

    Args:
        model: a :class:`BoundEncoder` (e.g. :func:`build_bound_encoder` around a
            :class:`mmcourse.nn.encoders.SmallCNN` with ``in_channels=1`` for spectrograms) whose ``embed_dim`` is
            the anchors' width ``D``.
        data: :func:`binding_pairs` output: ``inputs (N, ...)``, unit-norm ``anchors (N, D)``, ``N >= 2``.
        steps, batch_size, lr, weight_decay, warmup_steps, seed, device: as in :func:`mmcourse.train.fit` (AdamW,
            warm-up + cosine learning rate, gradient clipping at 1; the batch is ``min(batch_size, N)``).
    Returns:
        the :class:`~mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    if not isinstance(model, BoundEncoder):
        raise TypeError(f"model must be a BoundEncoder (see build_bound_encoder), got {type(model).__name__}")
    if not isinstance(data, dict) or not {"inputs", "anchors"} <= set(data):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"data must be the dict of binding_pairs(...) with 'inputs' and 'anchors', got {got}")
    inputs, anchors = data["inputs"], data["anchors"]
    if inputs.size(0) != anchors.size(0):
        raise ValueError(f"inputs and anchors must pair row by row, got {tuple(inputs.shape)} and "
                         f"{tuple(anchors.shape)}")
    if inputs.size(0) < 2:
        raise ValueError(f"bind_modality needs at least 2 pairs, got {inputs.size(0)}")

    def step(module: BoundEncoder, batch):
        logits = module.logit_scale() * module.encode(batch["inputs"]) @ batch["anchors"].t()
        return clip_loss(logits)

    history = fit(
        model,
        step,
        {"inputs": inputs, "anchors": anchors},
        steps=steps,
        batch_size=min(batch_size, inputs.size(0)),
        lr=lr,
        weight_decay=weight_decay,
        lr_schedule="cosine",
        warmup_steps=warmup_steps,
        grad_clip=1.0,
        device=device,
        seed=seed,
    )
    model.eval()
    return history


# ---------------------------------------------------------------------------------------------------- bookkeeping


def implicit_negative_census(data: dict[str, torch.Tensor], *, steps: int = 200, batch_size: int = 64,
                             seed: int = 0) -> dict[str, float]:
    """What the mismatched pairs of implicit training were: replays the minibatches and text choices that
    :func:`train_alignment` draws for ``seed`` (the shuffling of :func:`~mmcourse.train.fit`, the same text draws)
    and sorts each rolled-by-one pair (image ``i``, text of scene ``i − 1``) of every step.

    Returns:
        shares of all mismatched pairs: ``other_color`` (the colour alone tells it is no match), ``same_color_other
        _shape`` (only the shape tells), ``same_class_other_words`` (a true description in other words, labelled no
        match), ``same_text`` (word for word the true caption, labelled a match); they sum to 1.
    """
    n = check_scene_text_pairs(data, minimum=2)
    check_positive(steps, "steps", integer=True)
    counts = dict.fromkeys(("other_color", "same_color_other_shape", "same_class_other_words", "same_text"), 0)
    choice_generator = torch.Generator().manual_seed(seed + 1)
    batch_generator = torch.Generator().manual_seed(seed)  # fit's minibatch order for this seed
    labels = {k: data[k] for k in ("input_ids", "attention_mask", "counts", "color", "shape")}
    done = 0
    while done < steps:
        for batch in iterate_minibatches(labels, min(batch_size, n), batch_generator):
            rows, pick = draw_text_choice(batch["counts"], choice_generator)
            ids, mask = batch["input_ids"][rows, pick], batch["attention_mask"][rows, pick]
            same_text = ((ids.roll(1, 0) == ids) | (mask.roll(1, 0) == 0) & (mask == 0)).all(dim=1)
            same_color = batch["color"].roll(1, 0) == batch["color"]
            same_shape = batch["shape"].roll(1, 0) == batch["shape"]
            counts["other_color"] += int((~same_color).sum())
            counts["same_color_other_shape"] += int((same_color & ~same_shape).sum())
            counts["same_class_other_words"] += int((same_color & same_shape & ~same_text).sum())
            counts["same_text"] += int((same_color & same_shape & same_text).sum())
            done += 1
            if done == steps:
                break
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


@torch.no_grad()
def cosine_spread(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> dict[str, float]:
    """Mean cosine similarity of two images, of two texts, and of an image with a text (distinct pairs only):
    ``image_embeddings (N, D)``, ``text_embeddings (M, D)`` (normalised here)."""
    check_tensor(image_embeddings, "image_embeddings", ndim=2, floating=True)
    check_tensor(text_embeddings, "text_embeddings", ndim=2, floating=True)

    def mean_off_diagonal(x: torch.Tensor) -> float:
        sim = x @ x.t()
        return float((sim.sum() - sim.diagonal().sum()) / (x.size(0) * (x.size(0) - 1)))

    i, t = F.normalize(image_embeddings, dim=-1), F.normalize(text_embeddings, dim=-1)
    return {"image_image": mean_off_diagonal(i), "text_text": mean_off_diagonal(t),
            "image_text": float((i @ t.t()).mean())}


_MARKERS = {"circle": "o", "square": "s", "triangle": "^", "cross": "P"}


def plot_space(ax, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor | None, image_labels: torch.Tensor,
               title: str) -> None:
    """Draw a shared space flattened by PCA (:func:`mmcourse.viz.pca.pca_project`): images as small markers,
    the 24 class prompts (row ``c`` = class ``c`` = colour-major colour × shape) as large ones, colour = colour,
    marker = shape. ``text_embeddings=None`` draws the images alone, with a PCA of their own."""
    from mmcourse.data import COLOR_RGB
    from mmcourse.viz.pca import pca_project

    texts = text_embeddings if text_embeddings is not None else image_embeddings[:0]
    points, pca = pca_project(torch.cat([image_embeddings, texts]).float(), k=2)
    image_points, text_points = points[: len(image_embeddings)], points[len(image_embeddings):]
    for shape_id, shape in enumerate(SHAPES):
        for color_id, color in enumerate(COLORS):
            label = color_id * len(SHAPES) + shape_id
            pick = image_labels == label
            ax.scatter(image_points[pick, 0], image_points[pick, 1], s=14, alpha=0.55, color=COLOR_RGB[color],
                       marker=_MARKERS.get(shape, "o"), linewidths=0)
            if text_embeddings is not None:
                ax.scatter(text_points[label, 0], text_points[label, 1], s=110, color=COLOR_RGB[color],
                           marker=_MARKERS.get(shape, "o"), edgecolors="black", linewidths=1.2)
    share = float(pca.explained_variance_ratio.sum())
    ax.set_title(f"{title}\n(2 PCs keep {share:.0%} of the variance)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_snapshot(snapshot: Snapshot, image_labels: torch.Tensor, title: str, temperature: float = 0.05):
    """A :class:`Snapshot` drawn twice: its space (:func:`plot_space`) and, for each probe image (rows, sorted by
    class), a softmax over its cosine similarities with the class prompts divided by ``temperature`` (columns):
    which prompt each image would pick. Returns the figure."""
    import matplotlib.pyplot as plt

    order = torch.argsort(image_labels, stable=True)
    fig, (ax_space, ax_sim) = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [1, 1.1]})
    plot_space(ax_space, snapshot.image_embeddings, snapshot.text_embeddings, image_labels, title)
    similarity = snapshot.image_embeddings[order] @ snapshot.text_embeddings.t()
    probabilities = (similarity / temperature).softmax(dim=1)
    im = ax_sim.imshow(probabilities.cpu().numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
    ax_sim.set_xlabel("class prompt (colour-major: red circle, red square, ...)")
    ax_sim.set_ylabel("probe image (sorted by class)")
    ax_sim.set_title(f"softmax over prompts of cosine / {temperature}", fontsize=9)
    fig.colorbar(im, ax=ax_sim, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig
