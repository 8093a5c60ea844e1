"""Image–text retrieval: similarity, ranks, Recall@K and a chunked top-k index (article §5.1, Fig. 4; chapter 6).

Fig. 4's pipeline is *index → encode the query → similarity with the database → rank → return the matches*:

* :func:`cosine_similarity_matrix` — ``(Q, D) × (G, D) → (Q, G)`` cosine similarities;
* :func:`rank_of_positives` — the 1-based rank of the best-placed correct item for each query;
* :func:`recall_at_k`, :func:`retrieval_metrics` — Recall@K, mean and median rank, image→text and text→image,
  with several correct captions per image;
* :class:`EmbeddingIndex` — top-k search over millions of embeddings in fixed-size chunks, never building the
  full ``(Q, G)`` similarity matrix.

**Tie rule.** Ranks are *pessimistic*: a wrong item that scores exactly as high as the best correct item is
counted as ranked above it, ``rank = 1 + #{wrong j : s_j >= max_{correct p} s_p}``. A model that gives every item
the same score therefore gets the worst rank, never a perfect one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_same_size, check_tensor
from mmcourse.models.clip import TinyCLIP
from mmcourse.train import evaluating, module_device

__all__ = [
    "cosine_similarity_matrix", "positives_to_mask", "rank_of_positives", "recall_at_k", "recall_both_ways",
    "caption_recall", "retrieval_metrics", "EmbeddingIndex", "zero_shot_classifier", "zero_shot_predict",
    "zero_shot_accuracy", "encode_images", "encode_texts",
]


def _check_features(x, name: str) -> None:
    check_tensor(x, name, ndim=2, floating=True, finite=True)
    if x.size(0) == 0:
        raise ValueError(f"{name} must hold at least one row, got shape {tuple(x.shape)}")


def _check_ks(ks, gallery_size: int) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    if not ks:
        raise ValueError("ks must hold at least one k")
    for k in ks:
        check_positive(k, "k", integer=True)
        if k > gallery_size:
            raise ValueError(f"k must be <= the gallery size {gallery_size}, got k={k}")
    return ks


def cosine_similarity_matrix(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query with every gallery item.

    Args:
        queries: ``(Q, D)``; gallery: ``(G, D)`` (both L2-normalised here).
    Returns:
        ``(Q, G)`` on the device of ``queries``.
    """
    _check_features(queries, "queries")
    _check_features(gallery, "gallery")
    if queries.size(1) != gallery.size(1):
        raise ValueError(
            f"queries and gallery must have the same feature dim, got {tuple(queries.shape)} and {tuple(gallery.shape)}"
        )
    return F.normalize(queries, dim=-1) @ F.normalize(gallery.to(queries.device), dim=-1).t()


def positives_to_mask(positives, num_queries: int, gallery_size: int, device=None) -> torch.Tensor:
    """Turn a description of the correct items into a bool mask ``(Q, G)``.

    Args:
        positives: one of
            * LongTensor ``(Q,)`` — the index of the single correct item of each query;
            * bool tensor ``(Q, G)`` — ``True`` where the item is correct;
            * a list of ``Q`` lists of indices — several correct items per query.
    Every query needs at least one correct item.
    """
    if isinstance(positives, torch.Tensor) and positives.dtype == torch.bool:
        if positives.shape != (num_queries, gallery_size):
            raise ValueError(
                f"positives mask must have shape (Q, G) = {(num_queries, gallery_size)}, got {tuple(positives.shape)}"
            )
        mask = positives.to(device)
    elif isinstance(positives, torch.Tensor):
        check_tensor(positives, "positives", ndim=1, floating=False)
        if positives.size(0) != num_queries:
            raise ValueError(f"positives must have shape (Q,) = ({num_queries},), got {tuple(positives.shape)}")
        if positives.numel() and (int(positives.min()) < 0 or int(positives.max()) >= gallery_size):
            raise ValueError(
                f"positives must be indices in [0, {gallery_size}), got values in "
                f"[{int(positives.min())}, {int(positives.max())}]"
            )
        mask = torch.zeros(num_queries, gallery_size, dtype=torch.bool, device=device)
        mask[torch.arange(num_queries, device=device), positives.to(device)] = True
    elif isinstance(positives, Sequence) and not isinstance(positives, str):
        if len(positives) != num_queries:
            raise ValueError(f"positives must hold one list per query ({num_queries}), got {len(positives)}")
        mask = torch.zeros(num_queries, gallery_size, dtype=torch.bool)
        for q, items in enumerate(positives):
            for j in items:
                if not 0 <= int(j) < gallery_size:
                    raise ValueError(f"positives[{q}] holds index {j}, outside [0, {gallery_size})")
                mask[q, int(j)] = True
        mask = mask.to(device)
    else:
        raise TypeError(
            "positives must be a LongTensor (Q,), a bool tensor (Q, G) or a list of index lists, "
            f"got {type(positives).__name__}"
        )
    missing = ~mask.any(dim=1)
    if missing.any():
        raise ValueError(
            f"every query needs at least one positive; queries without one: {missing.nonzero().flatten()[:10].tolist()}"
        )
    return mask


def rank_of_positives(similarity: torch.Tensor, positives) -> torch.Tensor:
    """1-based rank of the best-scored correct item of each query (pessimistic ties, see the module doc).

    Args:
        similarity: ``(Q, G)``, higher = more similar.
        positives: see :func:`positives_to_mask`.
    Returns:
        LongTensor ``(Q,)`` with values in ``[1, G - #positives + 1]``.
    """
    check_tensor(similarity, "similarity", ndim=2, floating=True, finite=True)
    mask = positives_to_mask(positives, similarity.size(0), similarity.size(1), similarity.device)
    best_positive = similarity.masked_fill(~mask, float("-inf")).max(dim=1, keepdim=True).values
    return 1 + ((similarity >= best_positive) & ~mask).sum(dim=1)


def recall_at_k(similarity: torch.Tensor, positives, ks: int | Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@K: the fraction of queries with a correct item among their top ``k`` results.

    Args:
        similarity: ``(Q, G)``; positives: see :func:`positives_to_mask`; ks: one ``k`` or several.
    Returns:
        ``{k: recall}`` with recalls in ``[0, 1]``.
    """
    check_tensor(similarity, "similarity", ndim=2, floating=True, finite=True)
    ks = _check_ks(ks, similarity.size(1))
    ranks = rank_of_positives(similarity, positives)
    return {k: float((ranks <= k).float().mean()) for k in ks}


def recall_both_ways(similarity: torch.Tensor, positives: torch.Tensor, ks: int | Sequence[int] = (1, 5, 10)
                     ) -> dict[str, float]:
    """Recall@K image→text and text→image from one score matrix.

    Args:
        similarity: ``(Ni, Nt)``, the score of every image with every text (higher = better match).
        positives: bool ``(Ni, Nt)``, True where text ``j`` describes image ``i`` (several per row or column allowed).
        ks: one ``k`` or several (a ``k`` beyond the gallery simply gives 1.0).
    Returns:
        ``{"i2t_R@k": …, "t2i_R@k": …}`` for each ``k`` in turn (ties counted pessimistically).
    """
    check_tensor(similarity, "similarity", ndim=2, floating=True)
    ks = _check_ks(ks, float("inf"))
    i2t = rank_of_positives(similarity, positives)
    t2i = rank_of_positives(similarity.t(), positives.t())
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float((i2t <= k).float().mean())
        out[f"t2i_R@{k}"] = float((t2i <= k).float().mean())
    return out


def caption_recall(similarity: torch.Tensor, caption_index: torch.Tensor, k: int = 1) -> dict[str, float]:
    """Recall@k in both directions from a score matrix of images × distinct captions.

    Args:
        similarity: ``(N, C)`` scores (higher = better match), e.g. cosine similarities or matching logits.
        caption_index: LongTensor ``(N,)``, the caption of each image.
        k: the ``k`` of Recall@k.
    Returns:
        ``{"i2t_R@k": …, "t2i_R@k": …}``: an image is answered correctly by its caption; a caption by any image it
        describes (ties are counted pessimistically, see the module doc).
    """
    check_tensor(similarity, "similarity", ndim=2, floating=True)
    check_tensor(caption_index, "caption_index", ndim=1, floating=False)
    check_positive(k, "k", integer=True)
    n, c = similarity.shape
    if caption_index.size(0) != n:
        raise ValueError(f"caption_index must have shape ({n},), got {tuple(caption_index.shape)}")
    if n and (int(caption_index.min()) < 0 or int(caption_index.max()) >= c):
        raise ValueError(f"caption_index must lie in [0, {c}), got values in [{int(caption_index.min())}, "
                         f"{int(caption_index.max())}]")
    return recall_both_ways(similarity, caption_index[:, None] == torch.arange(c)[None, :], k)


def _rank_summary(prefix: str, ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    out = {f"{prefix}_R@{k}": float((ranks <= k).float().mean()) for k in ks}
    out[f"{prefix}_mean_rank"] = float(ranks.float().mean())
    out[f"{prefix}_median_rank"] = float(torch.quantile(ranks.float(), 0.5))
    return out


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor | None = None,
    ks: int | Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K, mean and median rank in both directions (image→text and text→image).

    Args:
        image_features: ``(Ni, D)``; text_features: ``(Nt, D)`` (cosine similarity is used).
        text_to_image: LongTensor ``(Nt,)``, the image each text describes (several texts may share an image);
            default ``arange(N)`` with ``Ni == Nt`` (one caption per image).
        ks: the ``k`` of Recall@K (each ``<=`` both gallery sizes).
    Returns:
        ``{"i2t_R@1": …, "i2t_mean_rank": …, "i2t_median_rank": …, "t2i_R@1": …, …}``. For image→text a query
        is answered correctly by any of its image's captions. The median of an even count is the mean of the two
        middle ranks.
    """
    similarity = cosine_similarity_matrix(image_features, text_features)  # (Ni, Nt)
    num_images, num_texts = similarity.shape
    if text_to_image is None:
        if num_images != num_texts:
            raise ValueError(
                f"without text_to_image, image_features and text_features must have the same number of rows, "
                f"got {num_images} and {num_texts}"
            )
        text_to_image = torch.arange(num_texts)
    check_tensor(text_to_image, "text_to_image", ndim=1, floating=False)
    if text_to_image.size(0) != num_texts:
        raise ValueError(f"text_to_image must have shape ({num_texts},), got {tuple(text_to_image.shape)}")
    ks = _check_ks(ks, min(num_images, num_texts))
    text_to_image = text_to_image.to(similarity.device)
    t2i_ranks = rank_of_positives(similarity.t(), text_to_image)
    image_has_text = text_to_image[None, :] == torch.arange(num_images, device=similarity.device)[:, None]
    i2t_ranks = rank_of_positives(similarity, image_has_text)
    return {**_rank_summary("i2t", i2t_ranks, ks), **_rank_summary("t2i", t2i_ranks, ks)}


class EmbeddingIndex:
    """A flat (exact) cosine / inner-product index with chunked top-k search.

    The gallery is scanned in chunks of ``chunk_size`` rows, and queries in groups sized so that one block of
    scores holds at most ``max_block_elements`` numbers; after each chunk only the running top-k survives. Extra
    memory is therefore bounded by about ``2 × 4 B × max_block_elements`` (64 MiB × 2 by default), whatever the
    gallery size — 1 M × 64 embeddings never produce a 1 M-column score matrix.

    Args:
        embeddings: optional first ``(N, D)`` rows (more with :meth:`add`).
        normalize: L2-normalise stored rows and queries (cosine similarity); ``False`` = raw inner product,
            stored without a copy.
        chunk_size: gallery rows scored at once.
        max_block_elements: bound on ``query_group × chunk_size``.
        device: where the gallery lives (default: the device of the first embeddings).

    ``search(queries (Q, D) or (D,), k) → (scores (Q, k), indices (Q, k))`` sorted by decreasing score,
    indices into the order rows were added; returned on the queries' device. Equal scores come back in the
    order ``torch.topk`` gives (unspecified).
    """

    def __init__(
        self,
        embeddings: torch.Tensor | None = None,
        *,
        normalize: bool = True,
        chunk_size: int = 65_536,
        max_block_elements: int = 2**24,
        device: torch.device | str | None = None,
    ):
        check_positive(chunk_size, "chunk_size", integer=True)
        check_positive(max_block_elements, "max_block_elements", integer=True)
        self.normalize = normalize
        self.chunk_size = chunk_size
        self.max_block_elements = max_block_elements
        self.device = torch.device(device) if device is not None else None
        self.dim: int | None = None
        self._blocks: list[torch.Tensor] = []
        self._size = 0
        if embeddings is not None:
            self.add(embeddings)

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"EmbeddingIndex({self._size} x {self.dim}, normalize={self.normalize}, device={self.device})"

    def add(self, embeddings: torch.Tensor) -> None:
        """Append ``(N, D)`` rows; their indices continue from :func:`len`."""
        _check_features(embeddings, "embeddings")
        if self.dim is not None and embeddings.size(1) != self.dim:
            raise ValueError(f"embeddings must have dim {self.dim} like the index, got {tuple(embeddings.shape)}")
        if self.device is None:
            self.device = embeddings.device
        rows = embeddings.to(self.device)
        rows = F.normalize(rows, dim=-1) if self.normalize else rows.contiguous()
        self.dim = rows.size(1)
        self._blocks.append(rows)
        self._size += rows.size(0)

    def _chunks(self):
        """Yield ``(offset, rows)`` gallery chunks of at most ``chunk_size`` rows."""
        offset = 0
        for block in self._blocks:
            for start in range(0, block.size(0), self.chunk_size):
                yield offset + start, block[start : start + self.chunk_size]
            offset += block.size(0)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most similar stored rows for each query (exact search)."""
        if self._size == 0:
            raise ValueError("the index is empty: add embeddings before searching")
        check_tensor(queries, "queries", ndim=(1, 2), floating=True, finite=True)
        single = queries.dim() == 1
        queries_2d = queries.unsqueeze(0) if single else queries
        if queries_2d.size(1) != self.dim:
            raise ValueError(f"queries must have dim {self.dim} like the index, got shape {tuple(queries.shape)}")
        check_positive(k, "k", integer=True)
        if k > self._size:
            raise ValueError(f"k must be <= the number of indexed rows {self._size}, got k={k}")
        q = queries_2d.to(self.device, self._blocks[0].dtype)
        if self.normalize:
            q = F.normalize(q, dim=-1)
        group = max(1, self.max_block_elements // min(self.chunk_size, self._size))
        scores, indices = [], []
        for start in range(0, q.size(0), group):
            s, i = self._search_group(q[start : start + group], k)
            scores.append(s)
            indices.append(i)
        scores, indices = torch.cat(scores), torch.cat(indices)
        if single:
            scores, indices = scores[0], indices[0]
        return scores.to(queries.device), indices.to(queries.device)

    def _search_group(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        best_scores = best_indices = None
        for offset, rows in self._chunks():
            chunk_scores, chunk_idx = (q @ rows.t()).topk(min(k, rows.size(0)), dim=1)
            chunk_idx += offset
            if best_scores is None:
                best_scores, best_indices = chunk_scores, chunk_idx
            else:
                merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
                merged_idx = torch.cat([best_indices, chunk_idx], dim=1)
                best_scores, pos = merged_scores.topk(min(k, merged_scores.size(1)), dim=1)
                best_indices = merged_idx.gather(1, pos)
        return best_scores, best_indices


def _encode_text_fn(model_or_encode_text_fn) -> Callable:
    if hasattr(model_or_encode_text_fn, "encode_text"):
        return model_or_encode_text_fn.encode_text
    if callable(model_or_encode_text_fn):
        return model_or_encode_text_fn
    raise TypeError(
        "model_or_encode_text_fn must have an encode_text method or be callable(input_ids, attention_mask), "
        f"got {type(model_or_encode_text_fn).__name__}"
    )


def _device_of(obj, default) -> torch.device:
    if default is not None:
        return torch.device(default)
    owner = obj if isinstance(obj, nn.Module) else getattr(obj, "__self__", None)  # a bound method: model.encode_text
    return module_device(owner) if isinstance(owner, nn.Module) else torch.device("cpu")


@torch.no_grad()
def zero_shot_classifier(
    model_or_encode_text_fn,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = ("a photo of a {}",),
    *,
    max_len: int = 16,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build zero-shot class weights ``(C, D)`` from prompts, CLIP style, with template ensembling.

    For each class ``c``, every template (e.g. ``"a photo of a {}"``, ``"{}"``) is filled with ``c``, encoded,
    L2-normalised; the template embeddings are averaged and the mean is L2-normalised again.

    Args:
        model_or_encode_text_fn: a model with ``encode_text(input_ids, attention_mask) → (B, D)`` (e.g.
            :class:`mmcourse.models.clip.TinyCLIP`) or such a function.
        tokenizer: has ``encode(texts, max_len=...) → (input_ids (B, L), attention_mask (B, L))``.
        classnames: ``C`` class names, e.g. ``["red circle", "blue square"]``.
        templates: prompt templates, each with one ``{}``.
        max_len: token length passed to the tokenizer.
        device: where to run the text encoder (default: the model's device, else CPU).
    Returns:
        ``(C, D)`` unit-norm rows; ``image_features @ weights.T`` gives class scores.
    """
    encode_text = _encode_text_fn(model_or_encode_text_fn)
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError(f"classnames must be a non-empty list of strings, got {classnames!r}")
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError(f"templates must be a non-empty list of strings with '{{}}', got {templates!r}")
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise ValueError(f"every template must be a string containing '{{}}', got {t!r}")
    device = _device_of(model_or_encode_text_fn, device)
    texts = [t.format(c) for c in classnames for t in templates]  # class-major: C blocks of T prompts
    input_ids, attention_mask = tokenizer.encode(texts, max_len=max_len)
    embeddings = encode_text(input_ids.to(device), attention_mask.to(device))  # (C*T, D)
    check_tensor(embeddings, "encode_text output", ndim=2, floating=True, finite=True)
    embeddings = F.normalize(embeddings.float(), dim=-1).view(len(classnames), len(templates), -1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def zero_shot_predict(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Predicted class per image: ``argmax_c cos(image, class_c)``.

    Args:
        image_features: ``(B, D)`` (normalised here).
        classifier: ``(C, D)`` from :func:`zero_shot_classifier`.
    Returns:
        LongTensor ``(B,)`` on the device of ``image_features``.
    """
    check_tensor(image_features, "image_features", ndim=2, floating=True, finite=True)
    check_tensor(classifier, "classifier", ndim=2, floating=True, finite=True)
    check_same_size(image_features, classifier, "image_features", "classifier", dim=1)
    scores = F.normalize(image_features.float(), dim=-1) @ classifier.to(image_features.device).float().t()
    return scores.argmax(dim=-1)


def zero_shot_accuracy(image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose :func:`zero_shot_predict` equals ``labels`` ``(B,)``."""
    predictions = zero_shot_predict(image_features, classifier)
    check_tensor(labels, "labels", ndim=1, floating=False)
    check_same_size(image_features, labels, "image_features", "labels", dim=0)
    return float((predictions == labels.to(predictions.device)).float().mean())


def encode_images(model: TinyCLIP, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Embed many images in eval mode, ``batch_size`` at a time: ``(N, 3, H, W) → (N, D)`` on the model's device."""
    check_tensor(images, "images", ndim=4, floating=True)
    device = module_device(model)
    with evaluating(model):
        return torch.cat(
            [model.encode_image(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
        )


def encode_texts(
    model: TinyCLIP, tokenizer, texts: Sequence[str], max_len: int = 16, batch_size: int = 1024
) -> torch.Tensor:
    """Embed many texts in eval mode: ``N`` strings ``→ (N, D)`` on the model's device."""
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError(f"texts must be a non-empty list of strings, got {texts!r}")
    device = module_device(model)
    parts = []
    with evaluating(model):
        for i in range(0, len(texts), batch_size):
            ids, mask = tokenizer.encode(list(texts[i : i + batch_size]), max_len=max_len)
            parts.append(model.encode_text(ids.to(device), mask.to(device)))
    return torch.cat(parts)
