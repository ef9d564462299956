"""Ratio table for gaussmle against numpy and scikit-learn, all measured in the same run.

Usage::

    .venv/bin/python benches/report.py            # full run (a few minutes)
    .venv/bin/python benches/report.py --quick    # n / 20, a smoke run
    .venv/bin/python benches/report.py --markdown # the table as Markdown (docs/performance.md)

Every timing is the best of k runs (``time.perf_counter``). Unless a column says otherwise,
everything runs on one thread: gaussmle with ``n_threads=1``/``n_jobs=1`` and BLAS limited
to one thread through threadpoolctl (when installed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gaussmle
import numpy as np

try:
    from gaussmle import GaussianNB
except Exception:  # the estimator is optional here (it needs scikit-learn)
    GaussianNB = None

try:
    from sklearn.naive_bayes import GaussianNB as SkGaussianNB
except ImportError:
    SkGaussianNB = None

SHAPES = [(1_000_000, 32, 10), (100_000, 784, 10), (200_000, 64, 100), (2_000_000, 2, 2)]
DTYPES = [np.float64, np.float32]
NA = float("nan")


def best(fn: Callable[[], Any], k: int = 5, budget: float = 0.8) -> float:
    """Best-of-k wall time in seconds; stops early once ``budget`` seconds have been spent."""
    times: list[float] = []
    spent = 0.0
    while len(times) < k and (spent < budget or len(times) < 2):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if dt > budget:  # one slow run is enough for a baseline that takes seconds
            break
    return min(times)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def make_data(n: int, d: int, c: int, dtype: Any, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centers = rng.normal(scale=0.5, size=(c, d))
    X = rng.standard_normal((n, d))
    X += centers[y]
    return np.ascontiguousarray(X, dtype=dtype), y


def numpy_mask_fit(X: Any, y: Any, c: int) -> tuple[Any, Any]:
    means = np.empty((c, X.shape[1]))
    var = np.empty((c, X.shape[1]))
    for k in range(c):
        Xc = X[y == k]
        means[k] = Xc.mean(0)
        var[k] = Xc.var(0)
    return means, var


def blas_jll_factory(X: Any, mean: Any, var: Any, log_prior: Any) -> Callable[[], Any]:
    """The GEMM expansion -(X*X) @ (0.5/var).T + X @ (mu/var).T + const, in X's dtype."""
    dt = X.dtype
    a = (0.5 / var).T.astype(dt)
    b = (mean / var).T.astype(dt)
    const = (
        log_prior - 0.5 * np.log(2 * np.pi * var).sum(1) - 0.5 * (mean * mean / var).sum(1)
    ).astype(dt)

    def run() -> Any:
        return -(X * X) @ a + X @ b + const

    return run


def fmt(v: float, digits: int = 1) -> str:
    if v != v:  # NaN
        return "n/a"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


COLUMNS = [
    ("shape n,d,C", "shape"),
    ("dtype", "dtype"),
    ("X.sum ms", "sum_ms"),
    ("fit ms", "fit_ms"),
    ("fit/sum", "fit_sum"),
    ("GNB.fit/sum", "est_sum"),
    ("fit x mask", "fit_mask"),
    ("fit x skl", "fit_skl"),
    ("GNB.fit x skl", "est_skl"),
    ("jll ms", "jll_ms"),
    ("jll x BLAS", "jll_blas"),
    ("jll x skl", "jll_skl"),
    ("predict ms", "pred_ms"),
    ("predict x skl", "pred_skl"),
    ("proba ms", "proba_ms"),
    ("proba x skl", "proba_skl"),
    ("log-proba ms", "logp_ms"),
    ("log-proba x skl", "logp_skl"),
    ("f32/f64 jll", "f32_f64"),
    ("2T/1T sum", "sum_2t"),
    ("2T/1T fit", "fit_2t"),
    ("2T fit/sum", "fit2_sum"),
    ("2T/1T jll", "jll_2t"),
    ("1-row us (skl)", "lat1"),
    ("100-row us (skl)", "lat100"),
]


# Two worker threads for the two-thread X.sum(), shared by every shape and run.
SUM_POOL = ThreadPoolExecutor(2)


def two_thread_sum(X: Any) -> Callable[[], Any]:
    """X.sum() as two halves on two threads (numpy releases the GIL in the reduction): the
    machine's streaming-read limit for two threads, the floor of a two-thread fit."""
    half = X.shape[0] // 2

    def run() -> Any:
        parts = [SUM_POOL.submit(X[:half].sum), SUM_POOL.submit(X[half:].sum)]
        return sum(p.result() for p in parts)

    return run


def measure(n: int, d: int, c: int, dtype: Any) -> dict[str, Any]:
    X, y = make_data(n, d, c, dtype)
    r: dict[str, Any] = {"shape": f"{n:.0e},{d},{c}".replace("e+0", "e"), "dtype": X.dtype.name}
    t_sum = best(lambda: X.sum())
    t_sum2 = best(two_thread_sum(X))
    t_fit = best(lambda: gaussmle.class_stats(X, y, c, n_threads=1))
    t_fit2 = best(lambda: gaussmle.class_stats(X, y, c, n_threads=2))
    t_mask = best(lambda: numpy_mask_fit(X, y, c), k=2)
    s = gaussmle.class_stats(X, y, c, n_threads=1)
    var = s.var + 1e-9 * s.global_var.max()
    log_prior = np.log(s.weight / s.weight.sum())
    scorer = gaussmle.make_scorer(s.mean, var, log_prior)
    t_jll = best(lambda: scorer.joint_log_likelihood(X, None, 1))
    t_jll2 = best(lambda: scorer.joint_log_likelihood(X, None, 2))
    t_pred = best(lambda: scorer.predict(X, None, 1))
    t_proba = best(lambda: scorer.proba(X, None, 1))
    t_logp = best(lambda: scorer.log_proba(X, None, 1))
    t_blas = best(blas_jll_factory(X, s.mean, var, log_prior), k=2)
    r.update(
        sum_ms=t_sum * 1e3,
        fit_ms=t_fit * 1e3,
        fit_sum=t_fit / t_sum,
        fit_mask=t_mask / t_fit,
        jll_ms=t_jll * 1e3,
        jll_blas=t_blas / t_jll,
        pred_ms=t_pred * 1e3,
        proba_ms=t_proba * 1e3,
        logp_ms=t_logp * 1e3,
        sum_2t=t_sum / t_sum2,
        fit_2t=t_fit / t_fit2,
        fit2_sum=t_fit2 / t_sum,
        jll_2t=t_jll / t_jll2,
        t_jll=t_jll,
    )
    t_est = NA
    if GaussianNB is not None:
        t_est = best(lambda: GaussianNB(n_jobs=1).fit(X, y))
    r["est_sum"] = t_est / t_sum
    if SkGaussianNB is not None:
        sk = SkGaussianNB()
        t_skfit = best(lambda: sk.fit(X, y), k=2)
        sk_jll = getattr(sk, "predict_joint_log_proba", None) or sk._joint_log_likelihood
        t_skjll = best(lambda: sk_jll(X), k=2)
        t_skpred = best(lambda: sk.predict(X), k=2)
        t_skproba = best(lambda: sk.predict_proba(X), k=2)
        t_sklogp = best(lambda: sk.predict_log_proba(X), k=2)
        r.update(
            fit_skl=t_skfit / t_fit,
            est_skl=t_skfit / t_est,
            jll_skl=t_skjll / t_jll,
            pred_skl=t_skpred / t_pred,
            proba_skl=t_skproba / t_proba,
            logp_skl=t_sklogp / t_logp,
        )
        for rows, key in ((1, "lat1"), (100, "lat100")):
            Xs = np.ascontiguousarray(X[:rows])
            t_sk = best(lambda Xs=Xs: sk.predict(Xs), k=200, budget=0.2)
            if GaussianNB is not None:
                est = GaussianNB(n_jobs=1).fit(X[:20000], y[:20000])
                t_ours = best(lambda Xs=Xs, est=est: est.predict(Xs), k=200, budget=0.2)
                r[key] = (t_ours * 1e6, t_sk * 1e6)
            else:
                r[key] = (NA, t_sk * 1e6)
    return r


def median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Cell by cell median of several runs of the whole table (strings from the first run)."""
    rows = []
    for cells in zip(*runs, strict=True):
        row: dict[str, Any] = {}
        for key, first in cells[0].items():
            values = [c.get(key, NA) for c in cells]
            if isinstance(first, str):
                row[key] = first
            elif isinstance(first, tuple):
                row[key] = tuple(float(np.median([v[i] for v in values])) for i in range(2))
            else:
                row[key] = float(np.median(values))
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], markdown: bool) -> str:
    header = [h for h, _ in COLUMNS]
    body = []
    for r in rows:
        cells = []
        for _, key in COLUMNS:
            v = r.get(key, NA)
            if isinstance(v, str):
                cells.append(v)
            elif isinstance(v, tuple):
                cells.append(f"{fmt(v[0], 0)} ({fmt(v[1], 0)})")
            elif key.endswith("_ms"):
                cells.append(fmt(v, 1))
            else:
                two_digits = key in ("fit_sum", "est_sum", "f32_f64", "fit2_sum")
                cells.append(fmt(v, 2 if two_digits else 1))
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for cells in body]
    return "\n".join(lines)


LEGEND = """\
x mask / x skl / x BLAS: speed-up (baseline time / gaussmle time); fit/sum: time / X.sum().
fit = gaussmle.class_stats; GNB = gaussmle.GaussianNB; skl = sklearn.naive_bayes.GaussianNB;
mask = numpy X[y==c].mean(0)/.var(0); BLAS = -(X*X) @ (0.5/var).T + X @ (mu/var).T + const.
jll/predict/proba = gaussmle GaussianScorer; f32/f64 jll = f32 jll time / f64 jll time.
2T/1T = speed-up of 2 threads over 1 (sum: X.sum() as two halves on two threads, the
two-thread streaming-read limit); 2T fit/sum = 2-thread fit time / (1-thread) X.sum();
n-row us = GaussianNB.predict latency (sklearn's)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n / 20: a smoke run")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--runs", type=int, default=1, help="repeat the whole table and print each cell's median"
    )
    args = p.parse_args(argv)
    scale = 20 if args.quick else 1
    runs = []
    t0 = time.perf_counter()
    with one_blas_thread():
        for run in range(args.runs):
            rows = []
            for n, d, c in SHAPES:
                f64_jll = None
                for dtype in DTYPES:
                    r = measure(max(n // scale, 1000), d, c, dtype)
                    if dtype == np.float64:
                        f64_jll = r["t_jll"]
                    elif f64_jll is not None:
                        r["f32_f64"] = r["t_jll"] / f64_jll
                    rows.append(r)
                    print(
                        f"  run {run + 1}: measured {r['shape']} {r['dtype']}",
                        file=sys.stderr,
                        flush=True,
                    )
            runs.append(rows)
    rows = median_rows(runs)
    print(
        f"gaussmle {gaussmle.__version__}, SIMD {gaussmle.simd_level()}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        f"{' (--quick: n/20)' if args.quick else ''}"
        f"{f'; each cell the median of {args.runs} runs' if args.runs > 1 else ''}"
    )
    print(render(rows, args.markdown))
    print()
    print(LEGEND)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
