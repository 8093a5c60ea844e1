"""Chapter 6's applications (article §5): the retrieval system of Fig. 4, and VQA on ShapesWorld.

**Retrieval (§5.1).** The image–text retrieval system of Fig. 4 as one object, and what a user sees of it.

Fig. 4 reads, top to bottom: *user query → query type? → text encoder or image encoder → query feature vector →
similarity with the database vectors → rank → return the matches*. :class:`SearchEngine` is exactly that, built
on a dual encoder (``encode_image`` / ``encode_text``, e.g. :class:`mmcourse.models.clip.TinyCLIP`) and
:class:`mmcourse.retrieval.EmbeddingIndex`:

* at construction the gallery is **indexed** once: every image (and every distinct text, if given) is encoded;
* :meth:`SearchEngine.search` takes a text (→ images) or an image (→ texts), **encodes** it with the encoder of
  its modality, scores it against the index (cosine **similarity**) and returns the ``k`` best (**ranking**).

For ShapesWorld galleries, :func:`scene_matches` judges whether a scene answers a free-text query (every object the
query names is there, and the relation holds if it states one) — the ground truth of a search box — and
:func:`show_text_results` / :func:`show_image_results` draw ranked results (**display**, matplotlib imported
lazily).

**VQA (§5.3).** :func:`vqa_tensors` (a ShapesWorld's questions as tensors: one row per question, the scene
referenced by ``scene_ids``), :func:`train_vqa` ``(model, data, *, scenes, steps, …) -> History``,
:func:`predict_answers`, :func:`answer_probabilities`, :func:`accuracy_per_type` (accuracy for each question type
plus ``"all"``) and :class:`QuestionPrior`, the "language prior" baseline (the most frequent training answer of
each question string, never looking at an image). The model is :class:`mmcourse.models.vqa.VQAModel`.

**Text → image (§5.2).** :func:`object_sprites` cuts the one-object scenes of a ShapesWorld into the window around
their object (the *sprite*), :func:`train_sprite_decoder` trains :class:`mmcourse.models.generator.SpriteDecoder`
on them (caption embedding + size → sprite), :func:`scene_background` is the canvas colour the sprites are pasted
on. :func:`show_texts_under` and :func:`show_image_grid` draw images with texts (captions, answers, titles).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from itertools import permutations
from typing import NamedTuple

import torch
import torch.nn.functional as F

from mmcourse._checks import check_positive, check_tensor
from mmcourse.data.vocab import ANSWERS, QUESTION_TYPES
from mmcourse.models.vqa import VQAModel
from mmcourse.retrieval import EmbeddingIndex
from mmcourse.train import History, evaluating, fit, module_device

__all__ = [
    "SearchResults", "SearchEngine", "query_mentions", "scene_matches", "relevance_matrix", "show_text_results",
    "show_image_results", "vqa_tensors", "train_vqa", "answer_probabilities", "predict_answers", "accuracy_per_type",
    "QuestionPrior", "scene_background", "object_sprites", "train_sprite_decoder", "show_texts_under",
    "show_image_grid",
]


class SearchResults(NamedTuple):
    """``query_kind`` ("text" or "image"); ``scores`` and ``indices`` ``(Q, k)``, best first. Text queries return
    gallery image indices; image queries return indices into :attr:`SearchEngine.texts`."""

    query_kind: str
    scores: torch.Tensor
    indices: torch.Tensor


class SearchEngine:
    """A text↔image search engine over a fixed gallery (Fig. 4).

    Args:
        model: a dual encoder with ``encode_image(images (B, 3, H, W)) → (B, D)`` and
            ``encode_text(input_ids, attention_mask) → (B, D)`` (``TinyCLIP``).
        tokenizer: the course tokenizer the model was trained with.
        images: the image gallery ``(G, 3, H, W)``.
        texts: optional text gallery (for image → text search); duplicates are kept once, in first-seen order.
        max_len: token length of texts and text queries.
        batch_size: images or texts encoded at once while indexing.

    Attributes: ``image_embeddings (G, D)``, ``text_embeddings (T, D)`` or None, ``texts`` (distinct, or None),
    ``image_index`` / ``text_index`` (:class:`~mmcourse.retrieval.EmbeddingIndex`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        images: torch.Tensor,
        texts: Sequence[str] | None = None,
        max_len: int = 16,
        batch_size: int = 512,
    ):
        for name in ("encode_image", "encode_text"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"model must have an {name}(...) method (a dual encoder such as TinyCLIP)")
        check_tensor(images, "images", ndim=4, floating=True)
        if images.size(0) == 0:
            raise ValueError("images must hold at least one gallery image")
        check_positive(max_len, "max_len", integer=True)
        check_positive(batch_size, "batch_size", integer=True)
        self.model, self.tokenizer, self.max_len, self.batch_size = model, tokenizer, max_len, batch_size
        self.image_embeddings = self.encode_images(images)
        self.image_index = EmbeddingIndex(self.image_embeddings)
        self.texts = self.text_embeddings = self.text_index = None
        if texts is not None:
            if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
                raise ValueError("texts must be a non-empty sequence of str")
            self.texts = list(dict.fromkeys(texts))
            self.text_embeddings = self.encode_texts(self.texts)
            self.text_index = EmbeddingIndex(self.text_embeddings)

    def __repr__(self) -> str:
        texts = f", {len(self.texts)} texts" if self.texts is not None else ""
        return f"SearchEngine({len(self.image_index)} images{texts}, dim {self.image_index.dim})"

    def _device(self) -> torch.device:
        parameter = next(self.model.parameters(), None) if hasattr(self.model, "parameters") else None
        return parameter.device if parameter is not None else torch.device("cpu")

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image encoder branch: ``(N, 3, H, W) → (N, D)`` unit vectors (model in eval mode, mode restored)."""
        check_tensor(images, "images", ndim=4, floating=True)
        return self._eval(
            lambda: torch.cat(
                [
                    self.model.encode_image(images[i : i + self.batch_size].to(self._device()))
                    for i in range(0, len(images), self.batch_size)
                ]
            )
        )

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text encoder branch: ``N`` strings ``→ (N, D)`` unit vectors."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError(f"texts must be a non-empty list of str, got {texts!r}")

        def run():
            parts = []
            for i in range(0, len(texts), self.batch_size):
                ids, mask = self.tokenizer.encode(list(texts[i : i + self.batch_size]), max_len=self.max_len)
                parts.append(self.model.encode_text(ids.to(self._device()), mask.to(self._device())))
            return torch.cat(parts)

        return self._eval(run)

    def _eval(self, fn):
        was_training = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()
        try:
            return torch.nn.functional.normalize(fn().float(), dim=-1)
        finally:
            if hasattr(self.model, "train"):
                self.model.train(was_training)

    def encode_query(self, query) -> tuple[str, torch.Tensor]:
        """Fig. 4's "query type?" branch: ``(kind, embeddings (Q, D))`` for a str / list of str (kind "text") or an
        image ``(3, H, W)`` / images ``(Q, 3, H, W)`` (kind "image")."""
        if isinstance(query, str):
            return "text", self.encode_texts([query])
        if isinstance(query, torch.Tensor):
            check_tensor(query, "query", ndim=(3, 4), floating=True)
            return "image", self.encode_images(query[None] if query.dim() == 3 else query)
        if isinstance(query, Sequence) and query and all(isinstance(q, str) for q in query):
            return "text", self.encode_texts(list(query))
        raise TypeError(
            "query must be a str, a list of str or an image tensor (3, H, W) / (Q, 3, H, W), "
            f"got {type(query).__name__}"
        )

    def search(self, query, k: int = 8) -> SearchResults:
        """Encode ``query``, score it against the other modality's index, return the ``k`` best, best first."""
        kind, embeddings = self.encode_query(query)
        if kind == "text":
            scores, indices = self.image_index.search(embeddings, k)
        else:
            if self.text_index is None:
                raise ValueError("this engine indexed no texts: pass texts=... to search with an image query")
            scores, indices = self.text_index.search(embeddings, k)
        return SearchResults(kind, scores, indices)


# ------------------------------------------------------------------------------------------------ ground truth
def _shape_words() -> dict[str, str]:
    from mmcourse.data.vocab import PLURALS, SHAPES, SYNONYMS

    words = {s: s for s in SHAPES}
    words |= {v: k for k, v in SYNONYMS.items() if k in SHAPES}
    words |= {v: k for k, v in PLURALS.items()}
    return words


_RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "over": "above", "below": "below",
                   "under": "below"}  # fmt: skip


def query_mentions(query: str) -> tuple[list[tuple[str | None, str | None]], str | None]:
    """The objects a ShapesWorld query names and the relation it states.

    ``"a red circle left of a square"`` → ``([("red", "circle"), (None, "square")], "left of")``: a colour without a
    shape or a shape without a colour leaves the other ``None`` (any); synonyms and plurals count as their shape.
    The relation is the first relation word ("left", "right", "above", "below", "over", "under"), or ``None``.
    """
    from mmcourse.data import COLORS, tokenize

    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    shapes = _shape_words()
    mentions: list[tuple[str | None, str | None]] = []
    relation, color = None, None
    for word in tokenize(query):
        if word in COLORS:
            if color is not None:
                mentions.append((color, None))
            color = word
        elif word in shapes:
            mentions.append((color, shapes[word]))
            color = None
        elif word in _RELATION_WORDS and relation is None:
            relation = _RELATION_WORDS[word]
    if color is not None:
        mentions.append((color, None))
    return mentions, relation


def _fits(mention: tuple[str | None, str | None], obj: dict) -> bool:
    color, shape = mention
    return (color is None or obj["color"] == color) and (shape is None or obj["shape"] == shape)


def scene_matches(query: str, objects: Sequence[dict]) -> bool:
    """Whether a scene answers a query: each object the query names is a *different* object of the scene and, when
    the query names two objects and a relation, the first stands in that relation to the second.

    Args:
        query: free text, e.g. "red circle", "a blue square above a triangle".
        objects: the scene's objects, ``world.objects(i)`` (dicts with color, shape, x, y).
    A query that names no colour or shape matches nothing; number words are not checked ("two circles" matches any
    scene with a circle).
    """
    from mmcourse.data import relation as relation_of

    mentions, relation = query_mentions(query)
    if isinstance(objects, (str, dict)) or not isinstance(objects, Sequence):
        raise TypeError(f"objects must be a list of object dicts (world.objects(i)), got {type(objects).__name__}")
    if not mentions or len(mentions) > len(objects):
        return False
    check_relation = relation is not None and len(mentions) == 2
    for chosen in permutations(objects, len(mentions)):
        if all(_fits(m, o) for m, o in zip(mentions, chosen, strict=True)):
            if not check_relation or relation_of(chosen[0], chosen[1]) == relation:
                return True
    return False


def relevance_matrix(queries: Sequence[str], scene_objects: Sequence[Sequence[dict]]) -> torch.Tensor:
    """``(Q, G)`` bool: ``[q, g]`` = :func:`scene_matches` ``(queries[q], scene_objects[g])``."""
    if isinstance(queries, str) or len(queries) == 0:
        raise ValueError(f"queries must be a non-empty list of str, got {queries!r}")
    if len(scene_objects) == 0:
        raise ValueError("scene_objects must hold at least one scene")
    return torch.tensor([[scene_matches(q, objs) for objs in scene_objects] for q in queries], dtype=torch.bool)


# ----------------------------------------------------------------------------------------------------- display
def _check_results(scores, indices, name="indices") -> tuple[list[float], list[int]]:
    check_tensor(scores, "scores", ndim=1, floating=True)
    check_tensor(indices, name, ndim=1, floating=False)
    if scores.shape != indices.shape:
        raise ValueError(f"scores and {name} must have the same shape (k,), got {tuple(scores.shape)} and "
                         f"{tuple(indices.shape)}")  # fmt: skip
    return scores.tolist(), indices.tolist()


def _check_relevant(relevant, k: int) -> list[bool] | None:
    if relevant is None:
        return None
    relevant = [bool(r) for r in relevant]
    if len(relevant) != k:
        raise ValueError(f"relevant must hold one flag per result ({k}), got {len(relevant)}")
    return relevant


def _frame(ax, ok: bool | None) -> None:
    """A green (relevant) or red (not relevant) frame around an image axis; none when unknown."""
    if ok is None:
        return
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#2ca02c" if ok else "#d62728")
        spine.set_linewidth(3)


def show_text_results(
    query: str,
    images: torch.Tensor,
    scores: torch.Tensor,
    indices: torch.Tensor,
    relevant: Sequence[bool] | None = None,
    *,
    title: str | None = None,
    cell_size: float = 1.35,
):
    """A text query and its ranked images: ``#rank`` and cosine score above each, a green frame for a relevant
    result and a red one for a wrong result (when ``relevant`` is given).

    Args:
        query: the query text; images: the gallery ``(G, 3, H, W)``;
        scores, indices: ``(k,)`` one query's results (:meth:`SearchEngine.search` rows).
        relevant: ``k`` flags (e.g. from :func:`scene_matches`).
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from mmcourse.viz import image_to_numpy

    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    check_tensor(images, "images", ndim=4, floating=True)
    score_list, index_list = _check_results(scores, indices)
    flags = _check_relevant(relevant, len(index_list))
    k = len(index_list)
    fig, axes = plt.subplots(1, k + 1, figsize=(cell_size * (k + 1.6), cell_size + 0.7), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6] + [1] * k})  # fmt: skip
    axes = axes[0]
    axes[0].axis("off")
    box = {"boxstyle": "round", "facecolor": "#eef3fb", "edgecolor": "#4a6fa5"}
    axes[0].text(0.5, 0.5, textwrap.fill(f'"{query}"', 18), ha="center", va="center", fontsize=9,
                 transform=axes[0].transAxes, bbox=box)  # fmt: skip
    for rank, (ax, score, index) in enumerate(zip(axes[1:], score_list, index_list, strict=True), start=1):
        ax.imshow(image_to_numpy(images[index]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        _frame(ax, flags[rank - 1] if flags else None)
        ax.set_title(f"#{rank}  {score:.2f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_image_results(
    image: torch.Tensor,
    texts: Sequence[str],
    scores: torch.Tensor,
    indices: torch.Tensor,
    relevant: Sequence[bool] | None = None,
    *,
    title: str | None = None,
):
    """An image query and its ranked texts (``#rank  score  text``; green = relevant, red = wrong when given).

    Args:
        image: the query ``(3, H, W)``; texts: the text gallery (:attr:`SearchEngine.texts`);
        scores, indices: ``(k,)`` one query's results.
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from mmcourse.viz import image_to_numpy

    check_tensor(image, "image", ndim=3, floating=True)
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be the non-empty text gallery")
    score_list, index_list = _check_results(scores, indices)
    if max(index_list) >= len(texts) or min(index_list) < 0:
        raise ValueError(f"indices must index texts (T={len(texts)}), got {index_list}")
    flags = _check_relevant(relevant, len(index_list))
    k = len(index_list)
    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(8.5, max(1.8, 0.28 * k + 0.5)),
                                         gridspec_kw={"width_ratios": [1, 4.5]})  # fmt: skip
    ax_img.imshow(image_to_numpy(image), interpolation="nearest")
    ax_img.axis("off")
    ax_img.set_title("query", fontsize=9)
    ax_txt.axis("off")
    for rank, (score, index) in enumerate(zip(score_list, index_list, strict=True), start=1):
        color = "black" if flags is None else ("#2ca02c" if flags[rank - 1] else "#d62728")
        y = 1.0 - (rank - 0.5) / max(k, 1)
        ax_txt.text(0.0, y, f"#{rank}  {score:.2f}  {texts[index]}", va="center", ha="left", fontsize=9,
                    family="monospace", color=color, transform=ax_txt.transAxes)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def vqa_tensors(
    world, tokenizer, indices: Sequence[int] | None = None, types: Sequence[str] | None = None, max_len: int = 16
) -> dict:
    """The questions about the scenes ``indices`` of a ShapesWorld, one row per question.

    Args:
        world: a ShapesWorld; tokenizer: a course ``Tokenizer``; indices: the scenes (default: all);
        types: question types to keep (default: all of ``QUESTION_TYPES``); max_len: question length in tokens.
    Returns:
        ``{"scene_ids" (Q,), "input_ids" (Q, L), "attention_mask" (Q, L), "answer_ids" (Q,), "type_ids" (Q,)}``
        (``scene_ids`` index ``world.images``, ``answer_ids`` index ``ANSWERS``, ``type_ids`` index
        ``QUESTION_TYPES``) plus ``"questions"`` and ``"answers"`` (lists of str).
    """
    from mmcourse.data import VQADataset

    check_positive(max_len, "max_len", integer=True)
    dataset = VQADataset(world, indices, types)
    if len(dataset) == 0:
        raise ValueError("the selected scenes and types hold no question")
    items = dataset.items  # [(scene, {"question", "answer", "type"})]
    questions = [qa["question"] for _, qa in items]
    answers = [qa["answer"] for _, qa in items]
    ids, mask = tokenizer.encode(questions, max_len=max_len)
    return {
        "scene_ids": torch.tensor([scene for scene, _ in items]),
        "input_ids": ids,
        "attention_mask": mask,
        "answer_ids": torch.tensor([ANSWERS.index(a) for a in answers]),
        "type_ids": torch.tensor([QUESTION_TYPES.index(qa["type"]) for _, qa in items]),
        "questions": questions,
        "answers": answers,
    }


_DATA_KEYS = ("scene_ids", "input_ids", "attention_mask", "answer_ids", "type_ids")


def _check_data(data) -> int:
    """Validate a :func:`vqa_tensors` dict; return its number of questions."""
    if not isinstance(data, dict):
        raise TypeError(f"data must be the dict of vqa_tensors(...), got {type(data).__name__}")
    missing = [k for k in _DATA_KEYS if k not in data]
    if missing:
        raise ValueError(f"data must hold the keys {list(_DATA_KEYS)} (see vqa_tensors), missing {missing}")
    n = data["input_ids"].size(0) if isinstance(data["input_ids"], torch.Tensor) else -1
    for key in _DATA_KEYS:
        check_tensor(data[key], f"data[{key!r}]", floating=False)
        if data[key].size(0) != n:
            raise ValueError(f"data[{key!r}] must have {n} rows like data['input_ids'], got {data[key].size(0)}")
    if n == 0:
        raise ValueError("data holds no question")
    return n


def _check_scenes(model: VQAModel, scenes, data: dict) -> None:
    if not model.use_image:
        return
    check_tensor(scenes, "scenes", floating=True)
    if scenes.dim() < 2:
        raise ValueError(f"scenes must be (S, ...) with one entry per scene, got shape {tuple(scenes.shape)}")
    top = int(data["scene_ids"].max())
    if int(data["scene_ids"].min()) < 0 or top >= scenes.size(0):
        raise ValueError(f"data['scene_ids'] must index scenes (S={scenes.size(0)}), got values up to {top}")


def _check_model(model) -> None:
    if not isinstance(model, VQAModel):
        raise TypeError(f"model must be a VQAModel, got {type(model).__name__}")


def train_vqa(
    model: VQAModel,
    data: dict,
    *,
    scenes: torch.Tensor | None = None,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> History:
    """Train ``model`` (in place) to answer the questions of ``data`` for exactly ``steps`` steps (cross-entropy,
    AdamW, warm-up + cosine schedule, gradient clipping at 1).

    Args:
        data: :func:`vqa_tensors` output: ``scene_ids``, ``answer_ids``, ``type_ids (Q,)``, ``input_ids`` /
            ``attention_mask (Q, L)``.
        scenes: ``(S, ...)``, what the image encoder takes for each scene (images ``(S, 3, H, W)``, or cached
            tokens ``(S, N, Dc)``); ``data["scene_ids"]`` index it (a lookup table, not one row per question, so
            it is not part of ``data``). Required unless the model is blind (``use_image=False``).
        seed: seeds the minibatch order (same seed and model, same result).
        fit_kwargs: more :func:`mmcourse.train.fit` arguments (``eval_fn``, ``eval_every``, ...).
    Returns:
        the :class:`~mmcourse.train.History` (training ``accuracy`` per step among its metrics); the model is left
        in ``eval()`` mode.
    """
    _check_model(model)
    n = _check_data(data)
    check_positive(steps, "steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    _check_scenes(model, scenes, data)
    if device is not None:
        model.to(device)
    device = module_device(model)
    tensors = {k: data[k] for k in _DATA_KEYS}
    scenes_on_device = scenes.to(device) if model.use_image else None  # once: a step indexes them on the device

    def step(m: VQAModel, batch: dict):
        batch_scenes = scenes_on_device[batch["scene_ids"]] if m.use_image else None
        logits = m(batch_scenes, batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits, batch["answer_ids"])
        return loss, {"accuracy": (logits.argmax(-1) == batch["answer_ids"]).float().mean()}

    fit_kwargs.setdefault("lr_schedule", "cosine")
    fit_kwargs.setdefault("warmup_steps", min(30, steps // 10))
    fit_kwargs.setdefault("grad_clip", 1.0)
    history = fit(
        model,
        step,
        tensors,
        steps=steps,
        batch_size=min(batch_size, n),
        lr=lr,
        weight_decay=weight_decay,
        device=device,
        seed=seed,
        progress=progress,
        **fit_kwargs,
    )
    model.eval()
    return history


def answer_probabilities(
    model: VQAModel, scenes: torch.Tensor | None, data: dict, batch_size: int = 512
) -> torch.Tensor:
    """Softmax over the answers ``(Q, A)`` for every question of ``data`` (eval mode, mode restored)."""
    _check_model(model)
    n = _check_data(data)
    check_positive(batch_size, "batch_size", integer=True)
    _check_scenes(model, scenes, data)
    device = module_device(model)
    out = []
    with evaluating(model):
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            ids, mask = data["input_ids"][rows].to(device), data["attention_mask"][rows].to(device)
            batch_scenes = scenes[data["scene_ids"][rows]].to(device) if model.use_image else None
            out.append(model(batch_scenes, ids, mask).softmax(-1).cpu())
    return torch.cat(out)


def predict_answers(model: VQAModel, scenes: torch.Tensor | None, data: dict, batch_size: int = 512) -> torch.Tensor:
    """Predicted answer ids ``(Q,)`` (positions in ``ANSWERS``) for the questions of ``data``."""
    return answer_probabilities(model, scenes, data, batch_size).argmax(-1)


def accuracy_per_type(predictions: torch.Tensor, data: dict) -> dict[str, float]:
    """Accuracy of ``predictions (Q,)`` (answer ids) for each question type present, and overall.

    Returns:
        ``{type: accuracy, ..., "all": accuracy}``, types in the order of ``QUESTION_TYPES``.
    """
    n = _check_data(data)
    check_tensor(predictions, "predictions", ndim=1, floating=False)
    if predictions.size(0) != n:
        raise ValueError(
            f"predictions must hold one answer id per question ({n}), got shape {tuple(predictions.shape)}"
        )
    correct = predictions.cpu() == data["answer_ids"].cpu()
    types = data["type_ids"].cpu()
    out = {}
    for t, name in enumerate(QUESTION_TYPES):
        chosen = types == t
        if chosen.any():
            out[name] = float(correct[chosen].float().mean())
    out["all"] = float(correct.float().mean())
    return out


class QuestionPrior:
    """The language-prior baseline: answer each question with its most frequent training answer.

    A question never seen in training gets the most frequent answer of its type (or of all training questions if
    the type is new too). Ties go to the answer that comes first in ``ANSWERS``, so the baseline is
    deterministic. It never looks at an image: whatever it gets right, a VQA model can get right without seeing.

    ``QuestionPrior().fit(train_data)``; ``predict(data) → answer ids (Q,)``; ``data`` as from :func:`vqa_tensors`.
    """

    def __init__(self):
        self.by_question: dict[str, int] = {}
        self.by_type: dict[int, int] = {}
        self.overall: int | None = None

    @staticmethod
    def _most_common(counter: Counter) -> int:
        return min(counter, key=lambda answer: (-counter[answer], answer))

    @staticmethod
    def _questions(data: dict, n: int) -> list[str]:
        questions = data.get("questions")
        if isinstance(questions, str) or not isinstance(questions, Sequence) or len(questions) != n:
            raise ValueError(f"data['questions'] must hold the {n} question strings (see vqa_tensors)")
        return list(questions)

    def fit(self, data: dict) -> QuestionPrior:
        n = _check_data(data)
        questions = self._questions(data, n)
        per_question: dict[str, Counter] = {}
        per_type: dict[int, Counter] = {}
        for q, a, t in zip(questions, data["answer_ids"].tolist(), data["type_ids"].tolist(), strict=True):
            per_question.setdefault(q, Counter())[a] += 1
            per_type.setdefault(t, Counter())[a] += 1
        self.by_question = {q: self._most_common(c) for q, c in per_question.items()}
        self.by_type = {t: self._most_common(c) for t, c in per_type.items()}
        self.overall = self._most_common(Counter(data["answer_ids"].tolist()))
        return self

    def predict(self, data: dict) -> torch.Tensor:
        if self.overall is None:
            raise ValueError("call fit(train_data) before predict(data)")
        n = _check_data(data)
        questions = self._questions(data, n)
        out = [
            self.by_question.get(q, self.by_type.get(t, self.overall))
            for q, t in zip(questions, data["type_ids"].tolist(), strict=True)
        ]
        return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------------------------------- text → image (§5.2)
def scene_background(world) -> torch.Tensor:
    """The colour ``(3,)`` of a ShapesWorld's empty canvas (the top-left pixel of scene 0)."""
    return world.images[0, :, 0, 0].clone()


def object_sprites(world, indices: Sequence[int], patch: int = 16) -> dict:
    """The one-object scenes among ``indices``, cut into the window around their object.

    Args:
        world: a ShapesWorld; indices: candidate scenes (scenes with two objects or more are skipped);
        patch: side ``P`` of the window (even), in pixels.
    Returns:
        ``{"scenes" (N,), "sprites" (N, 3, P, P), "centres" (N, 2) pixel (column, row), "sizes" (N,)}``; the
        canvas around the image is filled with its background, so that
        ``SpriteDecoder.paste(sprites, centres, world.image_size, scene_background(world))`` gives the scenes back.
    """
    check_positive(patch, "patch", integer=True)
    if patch % 2:
        raise ValueError(f"patch must be even, got {patch}")
    scenes = torch.tensor([int(i) for i in indices if int(world.num_objects[int(i)]) == 1], dtype=torch.long)
    if len(scenes) == 0:
        raise ValueError("indices hold no one-object scene")
    size = world.image_size
    centres = (world.positions[scenes, 0] * size).floor().long().clamp(0, size - 1)  # (N, 2) column, row
    background = scene_background(world)[:, None, None]
    padded = F.pad(world.images[scenes] - background, (patch, patch, patch, patch)) + background
    half = patch // 2
    sprites = torch.stack([padded[n, :, y + half : y + half + patch, x + half : x + half + patch]
                           for n, (x, y) in enumerate(centres.tolist())])  # fmt: skip
    return {"scenes": scenes, "sprites": sprites, "centres": centres, "sizes": world.object_sizes[scenes, 0].clone()}


def train_sprite_decoder(
    model,
    data: dict,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> History:
    """Train a :class:`~mmcourse.models.generator.SpriteDecoder` (in place) by pixel regression for exactly
    ``steps`` steps: mean squared error between ``model(text, sizes)`` and the real sprites (AdamW, constant
    learning rate, no weight decay). The notebook writes the same loop out; both give the same bits.

    Args:
        data: ``{"text" (N, E), "sizes" (N,), "sprites" (N, 3, P, P)}`` (caption embeddings, e.g. from the frozen
            TinyCLIP's ``encode_text``; sizes and sprites from :func:`object_sprites`).
    Returns:
        the :class:`~mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    from mmcourse.models.generator import SpriteDecoder

    if not isinstance(model, SpriteDecoder):
        raise TypeError(f"model must be a SpriteDecoder, got {type(model).__name__}")
    if not isinstance(data, dict) or not {"text", "sizes", "sprites"} <= set(data):
        raise ValueError("data must be a dict with 'text', 'sizes' and 'sprites'")
    tensors = {k: data[k] for k in ("text", "sizes", "sprites")}
    if len({v.size(0) for v in tensors.values()}) != 1:
        raise ValueError(f"data's tensors must share dim 0, got {[tuple(v.shape) for v in tensors.values()]}")

    def step(m, batch: dict):
        return F.mse_loss(m(batch["text"], batch["sizes"]), batch["sprites"])

    history = fit(model, step, tensors, steps=steps, batch_size=min(batch_size, len(data["text"])), lr=lr,
                  weight_decay=0.0, lr_schedule=None, seed=seed, device=device, progress=progress)  # fmt: skip
    model.eval()
    return history


def show_texts_under(images: torch.Tensor, rows: Sequence[tuple[str, Sequence[str]]], width: int = 26):
    """One column per image ``(K, 3, H, W)``; under each, one wrapped line ``label: text`` per ``(label, texts)``
    row (``texts`` has one entry per image). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    from mmcourse.viz import image_to_numpy

    check_tensor(images, "images", ndim=4, floating=True)
    for label, texts in rows:
        if len(texts) != len(images):
            raise ValueError(f"row {label!r} must hold one text per image ({len(images)}), got {len(texts)}")
    fig, axes = plt.subplots(1, len(images), figsize=(2.3 * len(images), 3.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(image_to_numpy(images[k]), interpolation="nearest")
        ax.axis("off")
        lines = [textwrap.fill(f"{label}: {texts[k]}", width) for label, texts in rows]
        ax.text(0.0, -0.04, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=7.5)
    fig.tight_layout()
    return fig


def show_image_grid(images: torch.Tensor, titles: Sequence[str], columns: int = 12, title: str | None = None):
    """Images ``(K, 3, H, W)`` in a grid of ``columns``, each with a small title. Returns the Figure."""
    import matplotlib.pyplot as plt

    from mmcourse.viz import image_to_numpy

    check_tensor(images, "images", ndim=4, floating=True)
    if len(titles) != len(images):
        raise ValueError(f"titles must hold one title per image ({len(images)}), got {len(titles)}")
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.15 * columns, 1.35 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(image_to_numpy(images[k]), interpolation="nearest")
            ax.set_title(titles[k], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
