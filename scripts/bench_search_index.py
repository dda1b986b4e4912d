"""p50 latency of one query on the embedded search backend (exact cosine, numpy, float32), per index size.

    OMP_NUM_THREADS=1 python scripts/bench_search_index.py [--sizes 10000,100000] [--dimension 512]

Random unit vectors stand in for CLIP embeddings (the cost of exact search does not depend on the values).
Each query runs `SearchIndex.search` as the endpoint does: top 10, once without and once with a filter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from runtime.search_index import ProductRow, SearchIndex, index_manifest

COLOURS = ("Green", "Red", "Blue", "Black", "Yellow", "Pink", "Purple", "Orange")


def make_index(size: int, dimension: int, seed: int = 0, fast_path: bool | None = None) -> SearchIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((size, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ProductRow(str(i), "", {"baseColour": COLOURS[i % len(COLOURS)]}, "") for i in range(size)]
    return SearchIndex(vectors, rows, index_manifest({"base_model": "bench", "checksum": "-"}, dimension, size),
                       fast_path=fast_path)


def p50_ms(index: SearchIndex, queries: np.ndarray, filters=None) -> float:
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, 10, filters)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dimension", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    print(f"{'products':>9} {'dim':>4} {'path':>16} {'p50 ms':>7} {'p50 ms, filtered':>17} {'recall@10':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        exact = make_index(size, args.dimension, fast_path=False)
        fast = SearchIndex(exact.embeddings, exact.products, exact.manifest, fast_path=True)
        queries = rng.standard_normal((args.queries, args.dimension), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        for name, index in (("exact float32", exact), ("float16 shortlist", fast)):
            p50_ms(index, queries[:10])  # warm caches
            recall = np.mean([len({r.id for r, _ in index.search(q, 10)} & {r.id for r, _ in exact.search(q, 10)}) / 10
                              for q in queries[:50]])
            print(f"{size:>9} {args.dimension:>4} {name:>16} {p50_ms(index, queries):>7.2f} "
                  f"{p50_ms(index, queries, {'baseColour': 'Green'}):>17.2f} {recall:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
