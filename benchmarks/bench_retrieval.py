"""EmbeddingIndex: exact top-10 search for 100 queries over 10 k, 100 k and 1 M × 64 embeddings (chapter 6).

Compares the chunked index with the naive ``(Q, N)`` similarity matrix + ``topk`` and measures the peak extra
resident memory of a search by sampling the process RSS (psutil) in a background thread.
Target: 1 M × 64, 100 queries, top-10 in ≤ 1 s with ≤ 1 GB extra memory.
"""

from __future__ import annotations

import threading
import time

import torch
import torch.nn.functional as F

from mmcourse.dev.timing import measure
from mmcourse.retrieval import EmbeddingIndex


def _peak_extra_rss_mb(fn) -> float:
    """Run ``fn`` once while sampling RSS every ~0.5 ms; peak minus the RSS just before, in MiB."""
    import psutil

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak = max(peak, process.memory_info().rss)
    return (peak - baseline) / 2**20


def run(quick: bool = False) -> dict:
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    repeats = 2 if quick else 5
    dim, num_queries, k = 64, 100, 10
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(num_queries, dim, generator=g)
    rows = []
    for n in sizes:
        gallery = torch.randn(n, dim, generator=g)
        start = time.perf_counter()
        index = EmbeddingIndex(gallery)
        build_s = time.perf_counter() - start
        search = measure(lambda index=index: index.search(queries, k), warmup=1, repeats=repeats)
        index_mb = _peak_extra_rss_mb(lambda index=index: index.search(queries, k))
        stored = index._blocks[0]

        def naive(stored=stored):
            return (F.normalize(queries, dim=-1) @ stored.t()).topk(k, dim=1)

        naive_t = measure(naive, warmup=1, repeats=repeats)
        naive_mb = _peak_extra_rss_mb(naive)
        same = torch.equal(index.search(queries, k)[1], naive()[1])
        group = max(1, index.max_block_elements // min(index.chunk_size, n))
        block_mib = min(num_queries, group) * min(index.chunk_size, n) * 4 / 2**20
        rows.append(
            {
                "N": n,
                "build s": round(build_s, 3),
                "index search ms": round(search.median * 1e3, 1),
                "index score block MiB": round(block_mib, 1),
                "index RSS growth MiB": round(index_mb, 1),
                "naive ms": round(naive_t.median * 1e3, 1),
                "naive matrix MiB": round(num_queries * n * 4 / 2**20, 1),
                "naive RSS growth MiB": round(naive_mb, 1),
                "same top-10": same,
            }
        )
        del index, gallery, stored
    bound = 2 * 4 * EmbeddingIndex().max_block_elements / 2**20
    return {
        "title": f"EmbeddingIndex top-{k}, {num_queries} queries, D={dim}, CPU ({torch.get_num_threads()} threads)",
        "columns": list(rows[0]),
        "rows": rows,
        "notes": (
            "Extra memory of a search, by construction: one block of scores (Q_group x chunk floats, at most "
            f"{bound / 2:.0f} MiB) plus its top-k, versus the naive Q x N matrix. 'RSS growth' is the sampled "
            "peak resident memory during one search minus the RSS before it; it stays near 0 when the allocator "
            "reuses pages freed earlier, so it is a lower bound. Build includes L2-normalising the gallery (a "
            "copy). Timings on a shared CPU are noisy."
        ),
    }
