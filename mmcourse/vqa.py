"""Visual question answering (VQA) as answer classification with cross-attention fusion — article §5.3, chapter 6.

"VQA asks a model to answer a natural-language question about an image" (§5.3). The classic recipe, in
miniature::

    image ──► image encoder ──► image tokens (B, N, Dc) + positions ───────────────┐
                                                                                    ▼
    question ──► TextTransformer ──► question tokens (B, L, D) ──► fusion layers (self-attn + cross-attn)
                                                                    ──► [CLS] ──► answer head (B, A)

* :class:`VQAModel` — the model above, answers = ShapesWorld's ``ANSWERS``; ``use_image=False`` gives the
  *blind* (question-only) variant with the same text side, to measure what the image contributes. With a frozen
  image encoder, train it on cached tokens (:mod:`mmcourse.frozen`).
* :func:`vqa_tensors` — a ShapesWorld's questions as tensors: one row per question, the scene referenced by
  ``scene_ids`` (twenty questions about one image do not copy it twenty times).
* :func:`train_vqa` — cross-entropy over the answers for a fixed number of steps (:func:`mmcourse.train.fit`).
* :func:`predict_answers`, :func:`answer_probabilities`, :func:`accuracy_per_type` — predictions, and accuracy
  for each question type (colour, shape, size, count, existence, relation) plus ``"all"``.
* :class:`QuestionPrior` — the "language prior" baseline: the most frequent training answer of each question
  string (of its type for unseen questions), never looking at an image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.blocks import MultimodalEncoder, TransformerEncoder
from mmcourse.data.vocab import ANSWERS, QUESTION_TYPES
from mmcourse.encoders import TextTransformer, tokens_of
from mmcourse.train import History, evaluating, fit, module_device

__all__ = [
    "VQAModel",
    "vqa_tensors",
    "train_vqa",
    "predict_answers",
    "answer_probabilities",
    "accuracy_per_type",
    "QuestionPrior",
]

_DATA_KEYS = ("scene_ids", "input_ids", "attention_mask", "answer_ids", "type_ids")


class VQAModel(nn.Module):
    """Question tokens attend to image tokens; the fused ``[CLS]`` token is classified into an answer.

    Args:
        vocab_size: tokenizer vocabulary size.
        image_encoder: a module ``scenes (B, ...) → tokens (B, N, Dc)`` (or an ``EncoderOutput``) exposing
            ``.dim`` = ``Dc`` and ``.grid_size`` (``N = grid_size²``): e.g. :class:`mmcourse.encoders.SmallCNN` on
            images, or :class:`mmcourse.frozen.PrecomputedTokens` on cached tokens of a frozen encoder. ``None``
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
    scenes: torch.Tensor | None,
    data: dict,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> History:
    """Train ``model`` to answer the questions of ``data`` for exactly ``steps`` steps (cross-entropy, AdamW,
    warm-up + cosine schedule, gradient clipping at 1).

    Args:
        scenes: ``(S, ...)``, what the image encoder takes for each scene (images ``(S, 3, H, W)``, or cached
            tokens ``(S, N, Dc)``); ``data["scene_ids"]`` index it. Ignored (may be ``None``) for a blind model.
        data: :func:`vqa_tensors` output.
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
        desc="VQA",
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
