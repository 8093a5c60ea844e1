"""Chapter 5's experiments (article §4.2): the ALBEF-style model on ShapesWorld, objective by objective.

* Data — :func:`prepare_data` turns a ShapesWorld into tensors (with hard-negative captions and, optionally,
  :func:`~mmcourse.data.twins.counterfactual_twins` — re-rendered scenes that make those captions true);
  :class:`HardNegativeBatches` draws batches whose members share their words but not their facts;
  :func:`relational_split`.
* Training — :func:`train_albef` ``(model, data, *, objectives, steps, …) -> History``; with the image encoder
  locked (LiT, BLIP-2): :func:`freeze_image_encoder`, then :func:`cache_image_tokens`.
* Evaluation — :func:`embed`, :func:`evaluate_retrieval` (text→image / image→text Recall@K, optionally re-ranked
  by ITM: :func:`itm_rerank`), :func:`twin_scores` (Winoground-style text, image and group scores on
  counterfactual twins), :func:`predict_masked_words` (the MLM head fills in a hidden word).
* The chapter's comparisons — :func:`compositionality_experiment` and :func:`captioning_experiment`.

The model itself is :class:`mmcourse.models.albef.ALBEF`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from mmcourse._checks import check_choice, check_positive, check_probability, check_tensor
from mmcourse.data import language
from mmcourse.data.tokenizer import MASK_ID
from mmcourse.data.twins import TWIN_KINDS, counterfactual_twins
from mmcourse.data.vocab import INVERSE_RELATION
from mmcourse.labs.common import fact_key
from mmcourse.models.albef import ALBEF
from mmcourse.retrieval import recall_at_k, recall_both_ways
from mmcourse.train import History, evaluating, fit, module_device, seeded

__all__ = [
    "BASE_CHECKPOINT",
    "BASE_CONFIG",
    "BASE_STEPS",
    "chapter_world",
    "pretrain_base",
    "load_base",
    "itm_heldout_accuracy",
    "plot_compositionality",
    "prepare_data",
    "HardNegativeBatches",
    "train_albef",
    "embed",
    "itm_rerank",
    "relation_keys",
    "evaluate_retrieval",
    "freeze_image_encoder",
    "cache_image_tokens",
    "relational_split",
    "predict_masked_words",
    "TWIN_SCORES",
    "twin_scores",
    "COMPOSITIONALITY_SETTINGS",
    "DEFAULT_SETTINGS",
    "compositionality_experiment",
    "captioning_experiment",
]


# ---------------------------------------------------------------------------------------------- data
def prepare_data(
    world,
    tokenizer,
    indices: Sequence[int] | torch.Tensor | None = None,
    negative_kinds: Sequence[str] = (),
    max_len: int = 16,
    twins: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """ShapesWorld scenes as the tensor dict :meth:`ALBEF.compute_losses` and :func:`train_albef` take.

    Args:
        world: a ShapesWorld; indices: which scenes (default all).
        tokenizer: the course tokenizer.
        negative_kinds: hard-negative caption kinds to include (e.g. ``("swap_relation", "swap_colors")``).
        max_len: padded text length.
        twins: also add the :func:`counterfactual_twins` of these kinds as extra rows (``scene_ids`` −1, the
            bag of their source, their own hard-negative captions).
    Returns:
        ``images (N, 3, S, S)``, ``input_ids``/``attention_mask (N, L)``, ``scene_ids (N,)``,
        ``group_ids (N,)`` (equal when two captions state the same fact, see :func:`fact_key`), ``bag_ids (N,)``
        (equal when two scenes hold the same colours and the same shapes: each other's hardest negatives) and,
        with negatives, ``neg_ids``/``neg_mask (N, K, L)``, ``neg_valid (N, K)`` (False where the kind is
        impossible for the scene, e.g. relations of a one-object scene) and ``neg_group_ids (N, K)``.
    """
    if indices is None:
        indices = list(range(len(world)))
    indices = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if not indices:
        raise ValueError("indices must select at least one scene")
    captions = [world.captions[i] for i in indices]
    images = world.images[indices]
    scene_ids = torch.tensor(indices)
    bag_ids = _bag_ids(world, indices)
    negatives = [[world.negatives(kind)[i] for kind in negative_kinds] for i in indices]
    if twins:
        extra = counterfactual_twins(world, indices, twins)
        images = torch.cat([images, extra["images"]])
        captions = captions + extra["captions"]
        scene_ids = torch.cat([scene_ids, torch.full((len(extra["captions"]),), -1)])
        position = {i: row for row, i in enumerate(indices)}
        bag_ids = torch.cat([bag_ids, bag_ids[[position[int(i)] for i in extra["source"]]]])
        pool = set(world.combinations)
        for j, objects in enumerate(extra["objects"]):
            rng = random.Random(j)
            negatives.append(
                [language.negative(objects, kind, pool, world.colors, world.shapes, rng) for kind in negative_kinds]
            )
    ids, mask = tokenizer.encode(captions, max_len=max_len)
    codes: dict = {}  # fact key -> group id, shared by captions and negatives
    data = {
        "images": images,
        "input_ids": ids,
        "attention_mask": mask,
        "scene_ids": scene_ids,
        "group_ids": torch.tensor([codes.setdefault(fact_key(c), len(codes)) for c in captions]),
        "bag_ids": bag_ids,
    }
    if negative_kinds:
        n, k = len(captions), len(negative_kinds)
        flat = [text or "" for row in negatives for text in row]
        neg_ids, neg_mask = tokenizer.encode(flat, max_len=max_len)
        data["neg_ids"] = neg_ids.view(n, k, max_len)
        data["neg_mask"] = neg_mask.view(n, k, max_len)
        data["neg_valid"] = torch.tensor([[text is not None for text in row] for row in negatives])
        data["neg_group_ids"] = torch.tensor([codes.setdefault(fact_key(t), len(codes)) for t in flat]).view(n, k)
    return data


class HardNegativeBatches:
    """Minibatches in which scenes meet their hardest negatives (NegCLIP's hard negative images).

    Of each batch, ``round(batch_size * partner_fraction)`` slots hold *partners*: for an anchor of the batch, a
    scene with the same bag of words (``bag_ids``) that states a different fact (``group_ids``) — same colours
    and shapes, other binding or relation — or else a random scene of another fact. The other slots are anchors,
    drawn without replacement (an epoch visits every scene once as an anchor). In-batch contrastive learning
    then has to tell "a red circle left of a blue square" from "a blue square left of a red circle" in both
    directions.

    Iterating gives one epoch of batch dicts (``data``'s tensors indexed by the batch); deterministic given
    ``generator``.
    """

    def __init__(
        self,
        data: dict[str, torch.Tensor],
        batch_size: int,
        generator: torch.Generator,
        partner_fraction: float = 0.5,
    ):
        check_positive(batch_size, "batch_size", integer=True)
        check_probability(partner_fraction, "partner_fraction", high_open=False)
        self.num_partners = min(batch_size // 2, round(batch_size * partner_fraction))
        if self.num_partners < 1:
            raise ValueError(
                f"batch_size * partner_fraction must give at least one partner, got {batch_size} * {partner_fraction}"
            )
        for key in ("bag_ids", "group_ids"):
            if key not in data:
                raise ValueError(f"data must hold {key!r} (see prepare_data), got keys {sorted(data)}")
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.num_anchors = batch_size - self.num_partners
        self.size = data["bag_ids"].shape[0]
        bags, groups = data["bag_ids"].tolist(), data["group_ids"].tolist()
        members: dict[int, list[int]] = {}
        for i, bag in enumerate(bags):
            members.setdefault(bag, []).append(i)
        self.groups = groups
        self.partners = [[j for j in members[bags[i]] if groups[j] != groups[i]] for i in range(self.size)]

    def __len__(self) -> int:
        return max(1, self.size // self.num_anchors)

    def _other(self, anchor: int, pick: int) -> int:
        """A random scene that does not state the anchor's fact (the anchor itself if every scene does)."""
        for step in range(self.size):
            j = (pick + step) % self.size
            if self.groups[j] != self.groups[anchor]:
                return j
        return anchor

    def __iter__(self):
        n = self.num_anchors
        order = torch.randperm(self.size, generator=self.generator).tolist()
        order += order[: max(0, n - len(order))]  # tiny datasets: one batch, anchors repeat
        for start in range(0, len(self) * n, n):
            anchors = order[start : start + n]
            picks = torch.randint(2**62, (self.num_partners,), generator=self.generator).tolist()
            partners = [
                self.partners[a][p % len(self.partners[a])] if self.partners[a] else self._other(a, p)
                for a, p in zip(anchors, picks, strict=False)
            ]
            index = torch.tensor(anchors + partners)
            yield {key: value[index] for key, value in self.data.items()}


def train_albef(
    model: ALBEF,
    data: dict[str, torch.Tensor],
    *,
    objectives: Sequence[str] = ("itc",),
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    weights: dict[str, float] | None = None,
    use_negatives: bool = True,
    hard_fraction: float = 0.0,
    loss_kwargs: dict | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> History:
    """Train ``model`` (in place) on ``data`` for exactly ``steps`` optimizer steps.

    Args:
        model: an :class:`~mmcourse.models.albef.ALBEF`.
        data: :func:`prepare_data` output (``images (N, 3, S, S)`` or cached ``image_tokens``, ``input_ids`` /
            ``attention_mask (N, L)``, ``scene_ids``, ``group_ids``, ``bag_ids (N,)``, optional ``neg_*``).
        objectives: which losses to optimise (see :meth:`ALBEF.compute_losses`).
        use_negatives: feed the hard-negative captions in ``data`` to ITC (NegCLIP) and ITM; False ignores them.
        hard_fraction: share of each minibatch filled with hard negative partners of the other scenes
            (:class:`HardNegativeBatches`); 0 = uniformly shuffled minibatches.
        loss_kwargs: more arguments of :meth:`ALBEF.compute_losses` (``mlm_probability``, ``mask_ratio``,
            ``itm_caption_negatives``).
        seed: fixes the minibatch order and every random draw (masks, ITM negatives).
        fit_kwargs: passed on to :func:`mmcourse.train.fit` (e.g. ``lr_schedule="cosine"``, ``eval_fn``); the
            default optimizer is :func:`mmcourse.train.fused_adamw`.
    Returns:
        the :class:`~mmcourse.train.History` (per-objective losses in ``history.metrics``).
    """
    if not isinstance(model, ALBEF):
        raise TypeError(f"model must be an ALBEF, got {type(model).__name__}")
    for key in ("images", "input_ids", "attention_mask"):
        if key not in data:
            raise ValueError(f"data must hold {key!r} (see prepare_data), got keys {sorted(data)}")
    if not use_negatives:
        data = {k: v for k, v in data.items() if not k.startswith("neg_")}
    generator = torch.Generator().manual_seed(seed)

    def step(m: ALBEF, batch: dict):
        out = m.compute_losses(batch, objectives, weights, generator, **(loss_kwargs or {}))
        return out["loss"], {k: v.detach() for k, v in out.items() if k != "loss"}

    source = data
    if hard_fraction:
        source = HardNegativeBatches(data, batch_size, torch.Generator().manual_seed(seed + 1), hard_fraction)
    fit_kwargs.setdefault("lr_schedule", "cosine")
    fit_kwargs.setdefault("warmup_steps", min(50, steps // 10))
    fit_kwargs.setdefault("grad_clip", 1.0)
    return fit(
        model,
        step,
        source,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        progress=progress,
        **fit_kwargs,
    )


# ---------------------------------------------------------------------------------------------- the base model
BASE_CHECKPOINT = Path(__file__).with_name("ch05_base.pt")
"""Chapter 5's pretrained base model (``state_dict``, ≈ 0.4 MB), written by ``python -m
mmcourse.labs.ch05_pretraining`` (:func:`pretrain_base`, fixed seed)."""

BASE_CONFIG: dict = dict(image_size=24, cnn_width=8, cnn_convs=2, dim=32, embed_dim=32, text_depth=1, num_heads=2,
                         max_len=12, captioner=True, caption_depth=2, coordinates=False, image_layers=0)
"""The base :class:`ALBEF` of chapter 5: a plain SmallCNN (no coordinate channels, no context layer — the image
tower that learns shapes fastest, ``benchmarks/bench_attribute_probe.py``), one text layer, a caption decoder."""

BASE_STEPS = 1200
"""ITC steps (batches of 64, random) that pretrain the base."""


def chapter_world():
    """Chapter 5's data: 3,000 two-object ShapesWorld scenes at 24 px (seed 0), and its tokenizer."""
    from mmcourse.data import ShapesWorld, Tokenizer

    world = ShapesWorld(3000, image_size=24, min_objects=2, max_objects=2, seed=0)
    return world, Tokenizer.from_world(world)


def pretrain_base(steps: int = BASE_STEPS, seed: int = 0, device=None) -> tuple[ALBEF, History]:
    """Chapter 4's recipe, longer: :data:`BASE_CONFIG` trained with ITC alone (random batches of 64, no hard
    negatives) for ``steps`` steps on the training scenes of :func:`chapter_world` (:func:`relational_split`)."""
    world, tokenizer = chapter_world()
    train_idx, _ = relational_split(world, gallery_size=200, seed=0)
    data = prepare_data(world, tokenizer, train_idx, max_len=12)
    with seeded(seed):
        model = ALBEF(tokenizer.vocab_size, **BASE_CONFIG)
    history = train_albef(model, data, objectives=("itc",), steps=steps, batch_size=64, use_negatives=False,
                          seed=seed, device=device)
    return model.cpu(), history


def load_base(vocab_size: int, path: str | Path = BASE_CHECKPOINT, device=None) -> ALBEF:
    """The pretrained base (:data:`BASE_CONFIG`) from ``path``; retrained with :func:`pretrain_base` (a few minutes
    on a CPU) when the file is missing."""
    if Path(path).exists():
        with seeded(0):
            model = ALBEF(vocab_size, **BASE_CONFIG)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        print(f"{Path(path).name} not found: pretraining the base model ({BASE_STEPS} steps)")
        model, _ = pretrain_base()
    return model.to(device or "cpu").eval()


# ---------------------------------------------------------------------------------------------- evaluation
def embed(model: ALBEF, data: dict[str, torch.Tensor], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """ITC embeddings of every image and caption in ``data``: ``(N, E)`` and ``(N, E)`` on the model's device
    (from ``data["image_tokens"]`` when present, see :func:`cache_image_tokens`)."""
    device = module_device(model)
    images, texts = [], []
    n = data["images"].shape[0]
    cached = data.get("image_tokens")
    with evaluating(model):
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            if cached is not None:
                images.append(model.image_embedding(cached[part].to(device)))
            else:
                images.append(model.encode_image(data["images"][part].to(device)))
            ids, mask = data["input_ids"][part].to(device), data["attention_mask"][part].to(device)
            texts.append(model.encode_text(ids, mask))
    return torch.cat(images), torch.cat(texts)


def itm_rerank(
    model: ALBEF,
    data: dict[str, torch.Tensor],
    similarity_t2i: torch.Tensor,
    k: int = 8,
    batch_size: int = 512,
    score: str = "itm",
) -> torch.Tensor:
    """Re-rank each text query's top-``k`` images (by ITC) with the ITM head.

    Args:
        data: the gallery images and the query texts (``images``, ``input_ids``, ``attention_mask``; cached
            ``image_tokens`` are used when present).
        similarity_t2i: ``(Q, G)`` ITC scores of queries against gallery images.
        k: how many candidates per query the (slower) fusion encoder looks at.
        score: how the top-``k`` are ordered: ``"itm"`` — by ITM match probability; ``"itm+itc"`` — by the ITM
            log-probability of a match plus the ITC logit (``similarity_t2i`` times the model's learned inverse
            temperature): both judges vote, as in ALBEF and BLIP, which add the ITM score to the ITC similarity,
            and an ITM that has not learned yet (the same probability for every pair) leaves the ITC order alone.
    Returns:
        ``(Q, G)`` scores where each query's top-``k`` images are ordered by ``score`` and placed above all other
        images (whose ITC order is kept).
    """
    check_tensor(similarity_t2i, "similarity_t2i", ndim=2, floating=True)
    check_choice(score, "score", ("itm", "itm+itc"))
    q, g = similarity_t2i.shape
    check_positive(k, "k", integer=True)
    k = min(k, g)
    device = module_device(model)
    top = similarity_t2i.topk(k, dim=1).indices  # (Q, k)
    query = torch.arange(q).repeat_interleave(k)
    candidate = top.flatten().cpu()
    probs = []
    with evaluating(model):
        if data.get("image_tokens") is not None:
            image_tokens = data["image_tokens"].to(device)
        else:
            image_tokens = torch.cat([model.image_tokens(data["images"][s : s + 256].to(device))
                                      for s in range(0, g, 256)])
        for start in range(0, query.numel(), batch_size):
            qi, ci = query[start : start + batch_size], candidate[start : start + batch_size]
            ids, mask = data["input_ids"][qi].to(device), data["attention_mask"][qi].to(device)
            logits = model.itm_logits(image_tokens[ci.to(device)], model.text_tokens(ids, mask), mask)
            probs.append(logits.softmax(dim=-1)[:, 1] if score == "itm" else logits.log_softmax(dim=-1)[:, 1])
    new = torch.cat(probs).view(q, k).to(similarity_t2i)
    scores = similarity_t2i.clone()
    if score == "itm":
        offset = similarity_t2i.max() - similarity_t2i.min() + 1.0
        scores.scatter_(1, top.to(scores.device), similarity_t2i.max() + offset + new)
        return scores
    with torch.no_grad():
        scale = model.logit_scale().to(similarity_t2i)
    new = new + scale * similarity_t2i.gather(1, top.to(similarity_t2i.device))
    # lift the re-ranked candidates above every other image, keeping their new order
    scores.scatter_(1, top.to(scores.device), new + (similarity_t2i.max() - new.min() + 1.0))
    return scores


def relation_keys(world, indices: Sequence[int] | None = None) -> list[tuple]:
    """A key per scene that two scenes share exactly when their canonical captions state the same fact.

    For two objects, "a red circle left of a blue square" and "a blue square right of a red circle" get the
    same key (the order-independent form of (object, relation, object), relation decided by the dominant axis
    as in ShapesWorld's captions); sizes are ignored, as in the captions. Other scenes are keyed by their caption.
    """
    indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
    idx = torch.tensor(indices, dtype=torch.long)
    colors, shapes = world.object_colors[idx], world.object_shapes[idx]
    obj = (colors * 100 + shapes).tolist()  # an id per (colour, shape)
    delta = (world.positions[idx, 0] - world.positions[idx, 1]).tolist()  # object 0 minus object 1, (x, y)
    counts = world.num_objects[idx].tolist()
    keys = []
    for row, i in enumerate(indices):
        if counts[row] != 2:
            keys.append(("caption", world.captions[i]))
            continue
        rel = language.relation_of_offset(*delta[row])
        a, b = obj[row][0], obj[row][1]
        keys.append(min((a, rel, b), (b, INVERSE_RELATION[rel], a)))
    return keys


def evaluate_retrieval(
    model: ALBEF,
    data: dict[str, torch.Tensor],
    keys: Sequence | None = None,
    ks: Sequence[int] = (1, 5),
    rerank_k: int | None = None,
    rerank_score: str = "itm",
) -> dict[str, float]:
    """Text→image and image→text Recall@K over the scenes of ``data`` (each caption queries all images).

    Args:
        keys: one hashable per scene; an image is a correct answer to a caption when their keys are equal
            (default: the scene itself). Use :func:`relation_keys` so that every image showing the stated
            fact counts.
        rerank_k: also report text→image Recall@K after ITM re-ranking of the top ``rerank_k``.
        rerank_score: how :func:`itm_rerank` orders them (``"itm"`` or ``"itm+itc"``).
    Returns:
        ``{"t2i_R@1": ..., "i2t_R@1": ..., ["t2i_R@1_itm": ...]}``.
    """
    image_emb, text_emb = embed(model, data)
    sim_t2i = (text_emb @ image_emb.t()).cpu()
    n = sim_t2i.shape[0]
    if keys is None:
        positives = torch.eye(n, dtype=torch.bool)
    else:
        if len(keys) != n:
            raise ValueError(f"keys must have one entry per scene ({n}), got {len(keys)}")
        codes = {key: c for c, key in enumerate(dict.fromkeys(keys))}
        ids = torch.tensor([codes[key] for key in keys])
        positives = ids[:, None] == ids[None, :]
    both = recall_both_ways(sim_t2i.t(), positives.t(), ks)
    out = {key: both[key] for key in sorted(both, key=lambda key: not key.startswith("t2i"))}  # text→image first
    if rerank_k is not None:
        reranked = itm_rerank(model, data, sim_t2i, rerank_k, score=rerank_score)
        out.update({f"t2i_R@{k}_itm": v for k, v in recall_at_k(reranked, positives, ks).items()})
    return out


def freeze_image_encoder(model: ALBEF) -> ALBEF:
    """Lock the image side of ``model`` (its encoder, position embedding and image layers): no gradients, eval mode.

    Training the other parts on top of a frozen, already trained image encoder is what LiT ("locked-image tuning")
    and BLIP-2 do; on a CPU it also makes every step cheap once the image tokens are cached
    (:func:`cache_image_tokens`). Returns ``model`` (changed in place).
    """
    if not isinstance(model, ALBEF):
        raise TypeError(f"model must be an ALBEF, got {type(model).__name__}")
    model.visual.requires_grad_(False)
    model.visual.eval()
    return model


def cache_image_tokens(model: ALBEF, data: dict[str, torch.Tensor], batch_size: int = 256) -> dict[str, torch.Tensor]:
    """A copy of ``data`` with ``image_tokens (N, num_image_tokens, dim)``: the image tokens of ``data["images"]``
    (eval mode, on the model's device), computed once.

    :meth:`ALBEF.compute_losses`, :func:`embed` and :func:`itm_rerank` use them instead of running the image
    encoder — valid only while that encoder does not change (see :func:`freeze_image_encoder`).
    """
    if not isinstance(model, ALBEF):
        raise TypeError(f"model must be an ALBEF, got {type(model).__name__}")
    if "images" not in data:
        raise ValueError(f"data must hold 'images', got keys {sorted(data)}")
    check_tensor(data["images"], "data['images']", ndim=4, floating=True)
    check_positive(batch_size, "batch_size", integer=True)
    device = module_device(model)
    images = data["images"]
    with evaluating(model.visual):
        tokens = [model.image_tokens(images[s : s + batch_size].to(device))
                  for s in range(0, images.shape[0], batch_size)]
    return {**data, "image_tokens": torch.cat(tokens)}


def relational_split(world, gallery_size: int = 500, seed: int = 0) -> tuple[list[int], list[int]]:
    """The scenes :func:`compositionality_experiment` trains on and the held-out scenes it tests on (at most
    ``gallery_size``): ``world.split((0.9, 0.0, 0.1), seed=seed)``. Train a base model on the first list only."""
    check_positive(gallery_size, "gallery_size", integer=True)
    split = world.split((0.9, 0.0, 0.1), seed=seed)
    return list(split["train"]), list(split["test"][:gallery_size])


def predict_masked_words(
    model: ALBEF,
    image_tokens: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    mask_id: int = MASK_ID,
) -> torch.Tensor:
    """Hide one word per caption and let the MLM head fill it in, looking at the image.

    Args:
        image_tokens: ``(B, N, dim)`` (e.g. ``model.image_tokens(images)`` or cached ones).
        input_ids, attention_mask: ``(B, L)`` encoded captions.
        positions: ``(B,)`` which position of each caption becomes ``[MASK]``.
        mask_id: the ``[MASK]`` id (the course tokenizer's by default).
    Returns:
        ``(B,)`` the predicted token id at each masked position.
    """
    check_tensor(positions, "positions", ndim=1, floating=False)
    check_tensor(input_ids, "input_ids", ndim=2, floating=False)
    if positions.shape[0] != input_ids.shape[0]:
        raise ValueError(f"positions must have one entry per caption ({input_ids.shape[0]}), got {positions.shape[0]}")
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= input_ids.shape[1]):
        raise ValueError(f"positions must lie in [0, {input_ids.shape[1]}), got {positions.tolist()}")
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    masked = input_ids.clone()
    masked[rows, positions] = mask_id
    device = module_device(model)  # inputs go to the model; the answer comes back to the caller's device
    with evaluating(model):
        logits = model.mlm_logits(image_tokens.to(device), masked.to(device), attention_mask.to(device))
    return logits[rows.to(device), positions.to(device)].argmax(dim=-1).to(input_ids.device)


def itm_heldout_accuracy(model: ALBEF, data: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
    """ITM accuracy on a *balanced* held-out set built from ``data`` (N scenes with cached ``image_tokens``):
    the N true pairs, and N non-matching pairs mined from the model's ITC similarity as in training (for the first
    half of the captions a negative image, for the second half of the images a negative caption; never a pair
    stating the same fact, ``group_ids``). Always answering "no" (or "yes") scores 0.5.

    Returns ``{"accuracy", "positives" (share of true pairs called a match), "negatives" (share of non-matching
    pairs called no match)}``.
    """
    from mmcourse.objectives.itm import sample_hard_negatives

    for key in ("image_tokens", "input_ids", "attention_mask", "group_ids"):
        if key not in data:
            raise ValueError(f"data must hold {key!r} (see prepare_data, cache_image_tokens), got keys {sorted(data)}")
    device = module_device(model)
    image_tokens = data["image_tokens"].to(device)
    ids, mask, groups = (data[k].to(device) for k in ("input_ids", "attention_mask", "group_ids"))
    with evaluating(model):
        text_tokens = model.text_tokens(ids, mask)
        text_emb = model.text_embedding(text_tokens, mask)
        similarity = model.logit_scale() * model.image_embedding(image_tokens) @ text_emb.t()
        generator = torch.Generator().manual_seed(seed)
        negative_image = sample_hard_negatives(similarity.t().cpu(), groups.cpu(), generator).to(device)
        negative_text = sample_hard_negatives(similarity.cpu(), groups.cpu(), generator).to(device)
        n, half = ids.shape[0], ids.shape[0] // 2
        every = torch.arange(n, device=device)
        image_index = torch.cat([every, negative_image[:half], every[half:]])
        text_index = torch.cat([every, every[:half], negative_text[half:]])
        says_match = model.itm_logits(image_tokens[image_index], text_tokens[text_index], mask[text_index]).argmax(1)
    positives, negatives = float(says_match[:n].float().mean()), float((says_match[n:] == 0).float().mean())
    return {"accuracy": (positives + negatives) / 2, "positives": positives, "negatives": negatives}


TWIN_SCORES: tuple[str, ...] = ("itc", "itm", "itm+itc")


def twin_scores(
    model: ALBEF,
    world,
    tokenizer,
    indices: Sequence[int],
    kinds: Sequence[str] = TWIN_KINDS,
    score: str = "itc",
    max_len: int = 12,
) -> dict:
    """Winoground-style scores on (scene, counterfactual twin) pairs — the bag-of-words test.

    Each held-out scene ``i0`` with caption ``c0`` is paired with its twin ``i1`` (:func:`counterfactual_twins`),
    whose caption ``c1`` has the same words in another order ("a red circle left of a blue square" / "a red circle
    right of a blue square"). With ``s(image, caption)`` the model's score:

    * ``text`` — both images prefer their own caption: ``s(i0, c0) > s(i0, c1)`` and ``s(i1, c1) > s(i1, c0)``;
    * ``image`` — both captions prefer their own image: ``s(i0, c0) > s(i1, c0)`` and ``s(i1, c1) > s(i0, c1)``;
    * ``group`` — all four at once.

    A bag of words scores both captions of a pair alike: chance is 1/4 for ``text`` and ``image`` and 1/6 for
    ``group`` (Thrush et al., *Winoground*, 2022).

    Args:
        score: ``"itc"`` (cosine of the ITC embeddings), ``"itm"`` (ITM log-probability of a match) or
            ``"itm+itc"`` (ITC logit plus ITM log-probability, as :func:`itm_rerank` ranks).
    Returns:
        ``{"text", "image", "group", "pairs", "per_kind": {kind: {"text", "image", "group", "pairs"}}}``.
    """
    if not isinstance(model, ALBEF):
        raise TypeError(f"model must be an ALBEF, got {type(model).__name__}")
    check_choice(score, "score", TWIN_SCORES)
    twins = counterfactual_twins(world, indices, kinds)
    if not twins["captions"]:
        raise ValueError("indices hold no two-object scene with a counterfactual twin of the requested kinds")
    device = module_device(model)
    source = twins["source"].tolist()
    with evaluating(model):
        images0 = world.images[source].to(device)
        images1 = twins["images"].to(device)
        ids0, mask0 = (t.to(device) for t in tokenizer.encode([world.captions[i] for i in source], max_len=max_len))
        ids1, mask1 = (t.to(device) for t in tokenizer.encode(twins["captions"], max_len=max_len))
        tokens0, tokens1 = model.image_tokens(images0), model.image_tokens(images1)
        text0, text1 = model.text_tokens(ids0, mask0), model.text_tokens(ids1, mask1)

        scale = model.logit_scale() if score == "itm+itc" else 1.0

        def s(image_tokens, text_tokens, mask):
            value = torch.zeros(image_tokens.shape[0], device=device)
            if score in ("itc", "itm+itc"):
                cosine = (model.image_embedding(image_tokens) * model.text_embedding(text_tokens, mask)).sum(-1)
                value = value + scale * cosine
            if score in ("itm", "itm+itc"):
                value = value + model.itm_logits(image_tokens, text_tokens, mask).log_softmax(dim=-1)[:, 1]
            return value

        s00, s01 = s(tokens0, text0, mask0), s(tokens0, text1, mask1)
        s10, s11 = s(tokens1, text0, mask0), s(tokens1, text1, mask1)
    text_ok = (s00 > s01) & (s11 > s10)
    image_ok = (s00 > s10) & (s11 > s01)
    group_ok = text_ok & image_ok

    def summary(select: torch.Tensor) -> dict:
        n = int(select.sum())
        return {
            "text": float(text_ok[select].float().mean()) if n else float("nan"),
            "image": float(image_ok[select].float().mean()) if n else float("nan"),
            "group": float(group_ok[select].float().mean()) if n else float("nan"),
            "pairs": n,
        }

    kind_of = twins["kind"]
    out = summary(torch.ones(len(kind_of), dtype=torch.bool, device=device))
    out["per_kind"] = {
        kind: summary(torch.tensor([k == kind for k in kind_of], device=device)) for kind in dict.fromkeys(kind_of)
    }
    return out


# ---------------------------------------------------------------------------------------------- the lesson
COMPOSITIONALITY_SETTINGS: dict[str, dict] = {
    "ITC": {"objectives": ("itc",), "use_negatives": False},
    "ITC + hard-negative captions": {"objectives": ("itc",), "use_negatives": True},
    "ITC + hard-negative captions, no coordinate channels": {
        "objectives": ("itc",),
        "use_negatives": True,
        "model_kwargs": {"coordinates": False},
    },
    "ITC + ITM, top-k re-ranked by ITM": {
        "objectives": ("itc", "itm"),
        "use_negatives": True,
        "loss_kwargs": {"itm_caption_negatives": True},
        "rerank": True,
    },
    "ITC + hard negatives (captions and twin images)": {
        "objectives": ("itc",),
        "use_negatives": True,
        "train_twins": True,
        "hard_fraction": 0.5,
    },
    "ITC + ITM, negatives mined from ITC similarity, top-k re-ranked by ITM + ITC": {
        "objectives": ("itc", "itm"),
        "use_negatives": False,
        "rerank": True,
        "rerank_score": "itm+itc",
    },
    "ITC + rule-made twins of colour swaps only": {
        "objectives": ("itc",),
        "use_negatives": True,
        "negative_kinds": ("swap_colors",),
        "train_twins": True,
        "twin_kinds": ("swap_colors",),
        "hard_fraction": 0.5,
    },
    "ITC + ITM with hard negatives, top-k re-ranked by ITM + ITC": {
        "objectives": ("itc", "itm"),
        "use_negatives": True,
        "train_twins": True,
        "hard_fraction": 0.5,
        "loss_kwargs": {"itm_caption_negatives": True},
        "rerank": True,
        "rerank_score": "itm+itc",
    },
}
"""The ways of training chapter 5 compares (see :func:`compositionality_experiment`): objectives, whether the
hard-negative captions are used, extra model arguments, whether ITM re-ranks the ITC top-k (and with which score,
see :func:`itm_rerank`), whether the :func:`counterfactual_twins` of the training scenes join the training data
(``train_twins``: hard negative *images*; ``twin_kinds``, default all of :data:`TWIN_KINDS`), which hard-negative
caption kinds it trains with (``negative_kinds``, default the experiment's), and the share of each minibatch filled
with hard-negative partners (``hard_fraction``, see :class:`HardNegativeBatches`). Without ``use_negatives`` and
``train_twins``, ITM's negatives are mined from the ITC similarity of the batch (ALBEF's rule)."""

DEFAULT_SETTINGS: tuple[str, ...] = (
    "ITC",
    "ITC + hard-negative captions",
    "ITC + hard-negative captions, no coordinate channels",
    "ITC + ITM, top-k re-ranked by ITM",
)
"""The settings :func:`compositionality_experiment` runs by default (the from-scratch comparison of the
benchmark)."""


def compositionality_experiment(
    settings: Sequence[str] = DEFAULT_SETTINGS,
    steps: int = 400,
    batch_size: int = 128,
    num_scenes: int = 6000,
    gallery_size: int = 500,
    image_size: int = 32,
    negative_kinds: Sequence[str] = ("swap_relation", "swap_colors", "swap_shapes"),
    rerank_k: int = 8,
    lr: float = 2e-3,
    model_kwargs: dict | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    world_kwargs: dict | None = None,
    test_twins: Sequence[str] = (),
    world=None,
    base_model: ALBEF | None = None,
    split_seed: int | None = None,
) -> dict:
    """Chapter 5's compositionality lesson, measured: two-object relational retrieval under several trainings.

    A world of two-object scenes ("a red circle left of a blue square") is split by scene
    (:func:`relational_split`); each setting of :data:`COMPOSITIONALITY_SETTINGS` trains a fresh :class:`ALBEF` for
    ``steps`` steps (same seed, same data order) and is scored on ``gallery_size`` held-out scenes: every caption
    queries every image, and an image counts as correct when it shows the stated fact (:func:`relation_keys`:
    other pictures of "a blue square right of a red circle" are correct too; the same objects in another relation
    or with swapped colours are not).

    With ``test_twins`` (kinds of :data:`TWIN_KINDS`), the gallery also holds the :func:`counterfactual_twins` of
    the held-out scenes: every caption then meets exactly the images a bag of words cannot tell from its own ("a
    red circle *right* of a blue square", "a *blue* circle left of a *red* square"), and the twins' captions query
    too. Correct answers are then decided by :func:`~mmcourse.labs.common.fact_key` of the captions, and each row also
    gets the Winoground-style :func:`twin_scores` (``twin_text``, ``twin_image``, ``twin_group``) computed with the
    score the setting ranks by.

    ``world`` replaces the generated world (two-object scenes; ``num_scenes``, ``image_size`` and ``world_kwargs``
    are then ignored), ``world_kwargs`` go to the generated :class:`~mmcourse.data.ShapesWorld` (e.g. ``colors``,
    ``shapes``), ``model_kwargs`` to every fresh :class:`ALBEF`.

    ``base_model``: instead of a fresh model, every setting starts from a copy of this (trained) model with its
    image encoder frozen (:func:`freeze_image_encoder`; image tokens are computed once, :func:`cache_image_tokens`),
    so the settings differ only in how the text side, the projections and the fusion are trained. Train it on the
    first list of :func:`relational_split` only.

    ``split_seed`` (default ``seed``) fixes the train/test split alone, so that other ``seed`` values change only
    the initialisation, the batches and the random draws (keep it where ``base_model`` was trained).

    With ``eval_every``, text→image R@1 is also measured during training (``histories[s].eval_metrics``) and each
    row tells the first measured step with R@1 >= 0.9 and the training time up to it (evaluation time excluded).

    Returns:
        ``{"rows": [{"setting", "objectives", "steps", "train_s", "t2i_R@1", "t2i_R@5", "i2t_R@1",
        ["t2i_R@1_before_rerank"], ["twin_text", "twin_image", "twin_group" (and ``_before_rerank``)],
        ["step_R@1>=0.9", "s_R@1>=0.9"]},
        ...], "models": {setting: model}, "histories": {setting: History}, "test": test data, "keys": relation keys,
        "world", "tokenizer", "test_indices": the held-out scenes (the first rows of ``test``; twins follow)}``.
        ``train_s`` is wall-clock training time (it varies with the machine and its load; the models do not).
    """
    import copy

    from mmcourse.data import ShapesWorld, Tokenizer

    for name in settings:
        check_choice(name, "settings", tuple(COMPOSITIONALITY_SETTINGS))
    for kind in test_twins:
        check_choice(kind, "test_twins", TWIN_KINDS)
    check_positive(steps, "steps", integer=True)
    if base_model is not None:
        if not isinstance(base_model, ALBEF):
            raise TypeError(f"base_model must be an ALBEF, got {type(base_model).__name__}")
        for name in settings:
            if COMPOSITIONALITY_SETTINGS[name].get("model_kwargs"):
                raise ValueError(f"setting {name!r} changes the architecture, so it cannot start from base_model")
    if world is None:
        world = ShapesWorld(
            num_scenes, image_size=image_size, max_objects=2, min_objects=2, seed=seed, **(world_kwargs or {})
        )
    elif not bool((world.num_objects == 2).all()):
        raise ValueError("world must hold two-object scenes only (min_objects=max_objects=2)")
    image_size = world.image_size
    tokenizer = Tokenizer.from_world(world)
    train_idx, test_idx = relational_split(world, gallery_size, seed if split_seed is None else split_seed)

    def variant_key(spec: dict) -> tuple:  # (negative caption kinds, twin kinds) of a setting's training data
        twins = tuple(spec.get("twin_kinds", TWIN_KINDS)) if spec.get("train_twins") else ()
        return tuple(spec.get("negative_kinds", negative_kinds)), twins

    train_variants = {}
    for name in settings:
        key = variant_key(COMPOSITIONALITY_SETTINGS[name])
        if key not in train_variants:
            train_variants[key] = prepare_data(world, tokenizer, train_idx, key[0], max_len=12, twins=key[1])
            if key[1] and set(key[1]) == {"swap_colors"}:  # batch partners: colour swaps only, never relations
                train_variants[key] = _colour_swap_partners(train_variants[key], world, tokenizer)
    test = prepare_data(world, tokenizer, test_idx, (), max_len=12, twins=tuple(test_twins))
    if base_model is not None:  # the frozen image encoder gives every setting the same tokens: compute them once
        train_variants = {key: cache_image_tokens(base_model, value) for key, value in train_variants.items()}
        test = cache_image_tokens(base_model, test)
    if test_twins:
        twin_captions = counterfactual_twins(world, test_idx, tuple(test_twins))["captions"]
        keys = [fact_key(world.captions[i]) for i in test_idx] + [fact_key(c) for c in twin_captions]
    else:
        keys = relation_keys(world, test_idx)
    rows, models, histories = [], {}, {}
    for name in settings:
        spec = COMPOSITIONALITY_SETTINGS[name]
        with seeded(seed):
            if base_model is None:
                model = ALBEF(
                    tokenizer.vocab_size,
                    image_size,
                    max_len=12,
                    **((model_kwargs or {}) | spec.get("model_kwargs", {})),
                )
            else:
                model = freeze_image_encoder(copy.deepcopy(base_model))
            eval_seconds = [0.0]

            def curve(m: ALBEF, spent: list = eval_seconds) -> dict:
                start = time.perf_counter()
                r1 = evaluate_retrieval(m, test, keys, ks=(1,))["t2i_R@1"]
                spent[0] += time.perf_counter() - start
                return {"t2i_R@1": r1}

            history = train_albef(
                model,
                train_variants[variant_key(spec)],
                objectives=spec["objectives"],
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                use_negatives=spec["use_negatives"],
                hard_fraction=spec.get("hard_fraction", 0.0),
                loss_kwargs=spec.get("loss_kwargs"),
                seed=seed,
                device=device,
                progress=progress,
                eval_fn=curve if eval_every else None,
                eval_every=eval_every,
            )
            if base_model is not None:
                model.visual.eval()  # fit() switched the whole model to train mode; the locked encoder stays in eval
            k = rerank_k if spec.get("rerank") else None
            rerank_score = spec.get("rerank_score", "itm")
            metrics = evaluate_retrieval(model, test, keys, ks=(1, 5), rerank_k=k, rerank_score=rerank_score)
            row = {
                "setting": name if k is None else name.replace("top-k", f"top-{k}"),
                "objectives": "+".join(spec["objectives"]),
                "steps": steps,
                "train_s": round(history.seconds, 1),
                "t2i_R@1": metrics["t2i_R@1_itm"] if k else metrics["t2i_R@1"],
                "t2i_R@5": metrics["t2i_R@5_itm"] if k else metrics["t2i_R@5"],
                "i2t_R@1": metrics["i2t_R@1"],
            }
            if k:
                row["t2i_R@1_before_rerank"] = metrics["t2i_R@1"]
            if test_twins:
                twin = twin_scores(model, world, tokenizer, test_idx, tuple(test_twins), rerank_score if k else "itc")
                row.update({"twin_text": twin["text"], "twin_image": twin["image"], "twin_group": twin["group"]})
                if k:
                    twin = twin_scores(model, world, tokenizer, test_idx, tuple(test_twins), "itc")
                    row.update({f"twin_{m}_before_rerank": twin[m] for m in ("text", "image", "group")})
            if eval_every:
                train_seconds = history.seconds - eval_seconds[0]
                curve_points = zip(history.eval_steps, history.eval_metrics["t2i_R@1"], strict=True)
                reached = [step for step, r1 in curve_points if r1 >= 0.9]
                row["step_R@1>=0.9"] = reached[0] if reached else None
                row["s_R@1>=0.9"] = round(train_seconds * reached[0] / steps, 1) if reached else None
                row["train_s"] = round(train_seconds, 1)
            rows.append(row)
            models[name], histories[name] = model, history
    return {
        "rows": rows,
        "models": models,
        "histories": histories,
        "test": test,
        "keys": keys,
        "world": world,
        "tokenizer": tokenizer,
        "test_indices": list(test_idx),
    }


def captioning_experiment(
    objectives: Sequence[Sequence[str]] = (("itg",), ("itc", "itg")),
    steps: int = 300,
    batch_size: int = 128,
    num_scenes: int = 4000,
    test_size: int = 500,
    image_size: int = 32,
    num_beams: Sequence[int] = (1, 3),
    lr: float = 2e-3,
    model_kwargs: dict | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict:
    """Train captioners (ITG) on ShapesWorld for a fixed number of steps and score their captions of held-out
    scenes — alone, and jointly with ITC on a shared image encoder (as BLIP does).

    The world holds one or two objects per scene; the test scenes are its ``test`` split. Scores per objective
    set and decoding: ``objects_match`` — the caption names exactly the scene's (colour, shape) pairs
    (:func:`~mmcourse.labs.common.object_match_rate`); ``fact_match`` — it states the scene's fact, relation
    included (:func:`~mmcourse.labs.common.fact_key`).

    Returns:
        ``{"rows": [{"objectives", "decoding", "steps", "train_s", "objects_match", "fact_match", "example"}],
        "models": {objectives: ALBEF}, "tokenizer", "world", "test": test indices}``.
    """
    from mmcourse.data import ShapesWorld, Tokenizer
    from mmcourse.labs.common import caption_images, object_match_rate

    check_positive(steps, "steps", integer=True)
    for objs in objectives:
        if "itg" not in objs:
            raise ValueError(f"every objective set must contain 'itg', got {tuple(objs)}")
    world = ShapesWorld(num_scenes, image_size=image_size, max_objects=2, seed=seed)
    tokenizer = Tokenizer.from_world(world)
    split = world.split((0.85, 0.0, 0.15), seed=seed)
    test_idx = split["test"][:test_size]
    train = prepare_data(world, tokenizer, split["train"], (), max_len=14)
    objects = [world.objects(i) for i in test_idx]
    truth = [fact_key(world.captions[i]) for i in test_idx]
    rows, models = [], {}
    for objs in objectives:
        with seeded(seed):
            model = ALBEF(tokenizer.vocab_size, image_size, max_len=14, captioner=True, **(model_kwargs or {}))
            history = train_albef(
                model,
                train,
                objectives=tuple(objs),
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                device=device,
                progress=progress,
            )
            name = "+".join(objs)
            models[name] = model
            for beams in num_beams:
                texts = caption_images(model.captioner, world.images[test_idx], tokenizer, num_beams=beams, max_len=13)
                rows.append(
                    {
                        "objectives": name,
                        "decoding": "greedy" if beams == 1 else f"beam {beams}",
                        "steps": steps,
                        "train_s": round(history.seconds, 1),
                        "objects_match": object_match_rate(texts, objects),
                        "fact_match": sum(fact_key(t) == k for t, k in zip(texts, truth, strict=True)) / len(texts),
                        "example": f"{texts[0]!r} (truth: {world.captions[test_idx[0]]!r})",
                    }
                )
    return {"rows": rows, "models": models, "tokenizer": tokenizer, "world": world, "test": test_idx}


def plot_compositionality(table: dict[str, Sequence[float]], columns: Sequence[str], chance: Sequence[float],
                          title: str = "Twin group scores after 220 more steps"):
    """Grouped bars: one group per column (e.g. relation twins, colour twins), one bar per setting (``table``: name
    → one value per column), a dashed line at each column's chance level. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.4))
    colors = ["#bdbdbd", "#fd8d3c", "#2171b5", "#6baed6", "#74c476", "#9e9ac8"]
    width = 0.8 / len(table)
    for r, (name, values) in enumerate(table.items()):
        ax.bar([k + r * width for k in range(len(columns))], values, width, color=colors[r % len(colors)], label=name)
    for k, level in enumerate(chance):
        ax.hlines(level, k - width / 2, k + 0.8 - width / 2, colors="k", linestyles="--", lw=1,
                  label="chance" if k == 0 else None)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(columns))], columns)
    ax.set_ylim(0, 1)
    ax.set_ylabel("group score (share of twin pairs)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _colour_swap_partners(data: dict[str, torch.Tensor], world, tokenizer) -> dict[str, torch.Tensor]:
    """``data`` with ``bag_ids`` narrowed so that :class:`HardNegativeBatches` pairs a scene only with scenes of the
    same colours, shapes *and* caption without its colour words ("a circle left of a square"): partners then differ
    by the colours' binding alone, never by the relation."""
    colours = set(world.colors)
    layouts = [" ".join(w for w in text.split() if w not in colours) for text in tokenizer.decode(data["input_ids"])]
    codes: dict = {}
    bags = [codes.setdefault((b, layout), len(codes)) for b, layout in zip(data["bag_ids"].tolist(), layouts)]
    return {**data, "bag_ids": torch.tensor(bags)}


def _bag_ids(world, indices: list[int]) -> torch.Tensor:
    """Id of each scene's bag of words: its sorted colours and sorted shapes (binding and positions ignored)."""
    idx = torch.tensor(indices, dtype=torch.long)
    colors = world.object_colors[idx].sort(dim=1).values
    shapes = world.object_shapes[idx].sort(dim=1).values
    codes: dict = {}
    return torch.tensor([codes.setdefault(tuple(b), len(codes)) for b in torch.cat([colors, shapes], 1).tolist()])


if __name__ == "__main__":  # python -m mmcourse.labs.ch05_pretraining: (re)make chapter 5's base checkpoint
    import mmcourse

    mmcourse.setup(0)
    torch.set_num_threads(1)
    base, base_history = pretrain_base()
    torch.save(base.state_dict(), BASE_CHECKPOINT)
    print(f"wrote {BASE_CHECKPOINT} ({BASE_CHECKPOINT.stat().st_size / 1e6:.2f} MB) after {len(base_history.losses)} "
          f"steps, final ITC loss {sum(base_history.losses[-20:]) / 20:.3f}")
