"""``n_jobs`` (joblib's convention) to the ``n_threads`` of the Rust kernels, in one place.

The estimator, :mod:`gaussmle.streaming` and :mod:`gaussmle.dask` all resolve ``n_jobs`` here,
so ``-1`` means the same thing everywhere: every core this process may use, whatever
``GAUSSMLE_NUM_THREADS`` says (that variable only sets the default for ``None``).
"""

from __future__ import annotations

import numbers

import numpy as np

from gaussmle import _core


def threads_for_n_jobs(n_jobs: int | None) -> int | None:
    """Rust thread count for ``n_jobs``: None stays None, ``-1`` = all cores, ``-2`` all but one.

    Raises
    ------
    TypeError
        If ``n_jobs`` is a bool or not an integer.
    ValueError
        If ``n_jobs`` is 0.
    """
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool | np.bool_) or not isinstance(n_jobs, numbers.Integral):
        raise TypeError(f"n_jobs must be an integer or None; got {n_jobs!r}")
    n = int(n_jobs)
    if n > 0:
        return n
    if n == 0:
        raise ValueError("n_jobs must not be 0: use a positive count, -1 (all cores) or None")
    return max(1, _core.available_cores() + 1 + n)
