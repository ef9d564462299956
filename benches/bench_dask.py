"""Throughput of ``gaussmle.dask.GaussianNB.fit`` with 1 and 2 worker processes on the same data.

Run: ``.venv/bin/python benches/bench_dask.py [--rows N] [--features D] [--repeats R]``.

The data are generated on the workers (``dask.array.random``) and persisted first, so the
timing covers the distributed fit only: per-block Rust reductions, the merge tree and the
transfer of the statistics. Each worker has one thread and ``n_jobs=1`` (one Rust thread per
block task), so the worker count is the only parallelism that changes. Not run by pytest.
"""

from __future__ import annotations

import argparse
import time


def measure(n_workers: int, rows: int, features: int, chunk: int, repeats: int) -> float:
    """Best-of-``repeats`` fit throughput in rows/s on a fresh LocalCluster."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait
    from gaussmle.dask import GaussianNB

    with (
        LocalCluster(
            n_workers=n_workers,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        rng = da.random.default_rng(0)
        X = 1e6 + rng.normal(size=(rows, features), chunks=(chunk, features))
        # Labels derived from X's blocks, so that each label chunk lives with its X block.
        y = (da.floor(X[:, 0] * 1000.0) % 5).astype("int64")
        X, y = client.persist([X, y])
        wait([X, y])
        model = GaussianNB(n_jobs=1)
        model.fit(X, y, classes=range(5))  # warm-up: imports on the workers
        best = float("inf")
        for repeat in range(1, repeats + 1):
            # Task keys are deterministic: a repeated identical fit could be served from
            # results the scheduler still holds. An extra (empty) class changes every key.
            classes = range(5 + repeat)
            start = time.perf_counter()
            model.fit(X, y, classes=classes)
            best = min(best, time.perf_counter() - start)
    return rows / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gb = args.rows * args.features * 8 / 1e9
    print(
        f"{args.rows} rows x {args.features} features float64 ({gb:.2f} GB), chunks of {args.chunk}"
    )
    results = {}
    for n_workers in (1, 2):
        results[n_workers] = measure(n_workers, args.rows, args.features, args.chunk, args.repeats)
        print(f"{n_workers} worker(s): {results[n_workers] / 1e6:8.1f} M rows/s")
    print(f"speed-up 2 vs 1 workers: {results[2] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
