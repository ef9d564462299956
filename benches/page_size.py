"""How the page size of X moves the fit / ``X.sum()`` ratio, measured in one process.

Usage::

    .venv/bin/python benches/page_size.py                 # 1e6x32x10 and 1e5x784x10, float64
    .venv/bin/python benches/page_size.py 2e5x64x100 --rounds 6

numpy asks the kernel for transparent huge pages (``madvise``) for arrays of 4 MiB and up, so
``X.sum()`` in the report streams from 2 MiB pages. A prototype that allocates with a plain
``Vec`` or ``malloc`` gets 4 KiB pages when THP is in ``madvise`` mode (as here), where the
same streaming read is slower. This script copies the same data into both kinds of array and
times ``X.sum()`` and ``gaussmle.class_stats`` on each, so a "fit / sum" figure can be
compared with the right baseline. Best of 7 per cell, several rounds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import gaussmle
import numpy as np
import report  # benches/report.py: this script's directory is on sys.path

try:  # numpy >= 2
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _set_madvise_hugepage


def best(fn: Callable[[], Any]) -> float:
    """Best of 7 runs (the report's timer, without its time budget)."""
    return report.best(fn, k=7, budget=float("inf"))


def copy_with_pages(src: Any, huge: bool) -> Any:
    """A copy of ``src`` in a new array allocated with (or without) the huge-page advice."""
    previous = _set_madvise_hugepage(huge)
    try:
        out = np.empty_like(src)
    finally:
        _set_madvise_hugepage(previous)
    out[...] = src
    return out


def one_round(huge: Any, small: Any, y: Any, c: int) -> tuple[float, float, float, float]:
    """Best-of-7 seconds: X.sum() on 2 MiB and 4 KiB pages, then the fit on each."""
    return (
        best(lambda: huge.sum()),
        best(lambda: small.sum()),
        best(lambda: gaussmle.class_stats(huge, y, c, n_threads=1)),
        best(lambda: gaussmle.class_stats(small, y, c, n_threads=1)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("shapes", nargs="*", default=["1e6x32x10", "1e5x784x10"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            print("THP:", f.read().strip())
    except OSError:
        print("THP: unknown (no /sys/kernel/mm/transparent_hugepage)")
    for shape in args.shapes:
        n, d, c = (int(float(v)) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        y = rng.integers(0, c, n)
        data = (rng.standard_normal((n, d)) + rng.normal(scale=0.5, size=(c, d))[y]).astype(
            args.dtype
        )
        huge, small = copy_with_pages(data, True), copy_with_pages(data, False)
        del data
        print(f"{shape} {args.dtype}: ms, and fit/sum with both on the same kind of page")
        for _ in range(args.rounds):
            sum_huge, sum_small, fit_huge, fit_small = one_round(huge, small, y, c)
            print(
                f"  sum 2M {sum_huge * 1e3:6.2f}  4K {sum_small * 1e3:6.2f} | "
                f"fit 2M {fit_huge * 1e3:6.2f}  4K {fit_small * 1e3:6.2f} | "
                f"fit/sum 2M {fit_huge / sum_huge:.2f}  4K {fit_small / sum_small:.2f} | "
                f"sum 4K/2M {sum_small / sum_huge:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
