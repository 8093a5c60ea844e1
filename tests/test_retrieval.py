"""Ranks, Recall@K and the chunked index against brute force."""

import pytest
import torch

from mmcourse.retrieval import (
    EmbeddingIndex,
    caption_recall,
    cosine_similarity_matrix,
    positives_to_mask,
    rank_of_positives,
    recall_at_k,
    retrieval_metrics,
)


def _brute_force_rank(similarity, positive_sets):
    """Walk each query's list sorted by score, wrong items first among equals (the pessimistic rule)."""
    ranks = []
    for q, row in enumerate(similarity.tolist()):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j in positive_sets[q]))
        ranks.append(next(pos + 1 for pos, j in enumerate(order) if j in positive_sets[q]))
    return torch.tensor(ranks)


def test_identity_similarity_gives_perfect_recall():
    sim = torch.eye(20)
    assert recall_at_k(sim, torch.arange(20), ks=(1, 5)) == {1: 1.0, 5: 1.0}
    assert (rank_of_positives(sim, torch.arange(20)) == 1).all()


def test_random_similarity_recall_is_about_k_over_n():
    g = torch.Generator().manual_seed(0)
    n, queries = 50, 4000
    sim = torch.rand(queries, n, generator=g)
    positives = torch.randint(0, n, (queries,), generator=g)
    recalls = recall_at_k(sim, positives, ks=(1, 5, 10))
    for k, value in recalls.items():
        expected = k / n
        std = (expected * (1 - expected) / queries) ** 0.5
        assert abs(value - expected) < 5 * std, (k, value, expected)


def test_ranks_agree_with_brute_force_including_ties_and_multiple_positives():
    g = torch.Generator().manual_seed(1)
    sim = torch.randint(0, 4, (30, 12), generator=g).float()  # many ties
    positive_sets = [
        set(torch.randperm(12, generator=g)[: int(torch.randint(1, 4, (), generator=g))].tolist()) for _ in range(30)
    ]
    ranks = rank_of_positives(sim, [sorted(s) for s in positive_sets])
    assert ranks.tolist() == _brute_force_rank(sim, positive_sets).tolist()


def test_constant_similarity_is_worst_rank_not_perfect():
    sim = torch.zeros(5, 8)
    assert rank_of_positives(sim, torch.arange(5)).tolist() == [8] * 5
    assert recall_at_k(sim, torch.arange(5), ks=1)[1] == 0.0


def test_positive_formats_agree():
    idx = torch.tensor([2, 0, 1])
    mask = positives_to_mask(idx, 3, 4)
    assert mask.sum().item() == 3 and mask[0, 2] and mask[1, 0]
    torch.testing.assert_close(positives_to_mask([[2], [0], [1]], 3, 4), mask)
    torch.testing.assert_close(positives_to_mask(mask, 3, 4), mask)


def test_retrieval_metrics_with_several_captions_per_image():
    g = torch.Generator().manual_seed(2)
    images = torch.randn(6, 8, generator=g)
    text_to_image = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    texts = images[text_to_image] + 0.01 * torch.randn(10, 8, generator=g)
    metrics = retrieval_metrics(images, texts, text_to_image, ks=(1, 5))
    assert metrics["i2t_R@1"] == 1.0 and metrics["t2i_R@1"] == 1.0
    assert metrics["i2t_mean_rank"] == 1.0 and metrics["t2i_median_rank"] == 1.0
    # compare with the brute-force rank on a random pairing
    texts = torch.randn(10, 8, generator=g)
    metrics = retrieval_metrics(images, texts, text_to_image, ks=(1, 5))
    sim = cosine_similarity_matrix(images, texts)
    i2t = _brute_force_rank(sim, [set((text_to_image == i).nonzero().flatten().tolist()) for i in range(6)])
    t2i = _brute_force_rank(sim.t(), [{int(i)} for i in text_to_image])
    assert metrics["i2t_R@1"] == pytest.approx((i2t <= 1).float().mean().item())
    assert metrics["t2i_R@5"] == pytest.approx((t2i <= 5).float().mean().item())
    assert metrics["t2i_mean_rank"] == pytest.approx(t2i.float().mean().item())
    assert metrics["i2t_median_rank"] == pytest.approx(float(i2t.float().quantile(0.5)))


def test_index_matches_full_search_across_chunks_and_query_groups():
    g = torch.Generator().manual_seed(3)
    gallery = torch.randn(1000, 16, generator=g)
    queries = torch.randn(37, 16, generator=g)
    index = EmbeddingIndex(gallery[:600], chunk_size=128, max_block_elements=128 * 10)
    index.add(gallery[600:])
    assert len(index) == 1000
    scores, indices = index.search(queries, k=7)
    full = cosine_similarity_matrix(queries, gallery)
    expected_scores, expected_indices = full.topk(7, dim=1)
    torch.testing.assert_close(scores, expected_scores)
    assert torch.equal(indices, expected_indices)
    s1, i1 = index.search(queries[0], k=3)
    assert s1.shape == (3,) and torch.equal(i1, expected_indices[0, :3])


def test_index_inner_product_mode_and_k_equal_to_size():
    gallery = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    index = EmbeddingIndex(gallery, normalize=False, chunk_size=2)
    scores, indices = index.search(torch.tensor([[1.0, 0.1]]), k=3)
    assert indices.tolist() == [[1, 0, 2]]
    torch.testing.assert_close(scores, torch.tensor([[3.0, 1.0, 0.2]]))


def test_bad_inputs():
    sim = torch.rand(4, 6)
    with pytest.raises(ValueError, match="k must be <= the gallery size 6"):
        recall_at_k(sim, torch.arange(4), ks=(1, 10))
    with pytest.raises(ValueError, match="k must be > 0"):
        recall_at_k(sim, torch.arange(4), ks=0)
    with pytest.raises(ValueError, match=r"positives must have shape \(Q,\) = \(4,\)"):
        recall_at_k(sim, torch.arange(3), ks=1)
    with pytest.raises(ValueError, match=r"positives must be indices in \[0, 6\)"):
        rank_of_positives(sim, torch.tensor([0, 1, 2, 6]))
    with pytest.raises(ValueError, match="at least one positive"):
        rank_of_positives(sim, torch.zeros(4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="similarity must be 2-D"):
        recall_at_k(torch.rand(4), torch.arange(4), ks=1)
    with pytest.raises(ValueError, match="same feature dim"):
        cosine_similarity_matrix(torch.randn(3, 4), torch.randn(5, 3))
    nan = torch.randn(3, 4)
    nan[1, 1] = float("nan")
    with pytest.raises(ValueError, match="queries contains NaN"):
        cosine_similarity_matrix(nan, torch.randn(5, 4))
    with pytest.raises(ValueError, match="same number of rows"):
        retrieval_metrics(torch.randn(3, 4), torch.randn(5, 4))
    index = EmbeddingIndex(torch.randn(10, 4))
    with pytest.raises(ValueError, match="k must be <= the number of indexed rows 10"):
        index.search(torch.randn(2, 4), k=11)
    with pytest.raises(ValueError, match="queries must have dim 4"):
        index.search(torch.randn(2, 5), k=1)
    with pytest.raises(ValueError, match="embeddings must have dim 4"):
        index.add(torch.randn(2, 3))
    with pytest.raises(ValueError, match="index is empty"):
        EmbeddingIndex().search(torch.randn(1, 4), k=1)


def test_recall_both_ways_is_recall_at_k_in_each_direction():
    from mmcourse.retrieval import recall_both_ways

    g = torch.Generator().manual_seed(0)
    similarity = torch.randn(12, 5, generator=g)
    positives = torch.arange(12)[:, None] % 5 == torch.arange(5)[None, :]  # each text describes 2-3 images
    both = recall_both_ways(similarity, positives, (1, 3))
    assert list(both) == ["i2t_R@1", "t2i_R@1", "i2t_R@3", "t2i_R@3"]
    for k in (1, 3):
        assert both[f"i2t_R@{k}"] == recall_at_k(similarity, positives, k)[k]
        assert both[f"t2i_R@{k}"] == recall_at_k(similarity.t(), positives.t(), k)[k]
    assert recall_both_ways(similarity, positives, 50) == {"i2t_R@50": 1.0, "t2i_R@50": 1.0}
    with pytest.raises(ValueError, match="k"):
        recall_both_ways(similarity, positives, 0)


def test_caption_recall_counts_ranks_both_ways():
    similarity = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    caption_index = torch.tensor([0, 1, 1])  # image 2 is ranked wrongly
    out = caption_recall(similarity, caption_index)
    assert out["i2t_R@1"] == pytest.approx(2 / 3)
    assert out["t2i_R@1"] == pytest.approx(1.0)  # caption 1's best image (1) is one of its images
    with pytest.raises(ValueError, match="caption_index"):
        caption_recall(similarity, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        caption_recall(similarity, torch.tensor([0, 1, 2]))
