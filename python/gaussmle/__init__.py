"""gaussmle: exact, zero-copy per-class Gaussian maximum likelihood with a Rust core.

The core API (numpy only): :func:`class_stats` and :class:`ClassStats` for fitting,
:func:`joint_log_likelihood`, :func:`predict`, :func:`predict_log_proba` and
:func:`predict_proba` for scoring. :class:`GaussianNB` is a drop-in for scikit-learn's
estimator and is imported lazily, so scikit-learn is needed only when it is used.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from gaussmle._core import (
    GaussianScorer,
    __version__,
    default_n_threads,
    simd_env_problem,
    simd_level,
)
from gaussmle.scoring import (
    joint_log_likelihood,
    make_scorer,
    predict,
    predict_log_proba,
    predict_proba,
)
from gaussmle.stats import ClassStats, class_stats

if TYPE_CHECKING:
    from gaussmle.estimator import GaussianNB

# A mistyped GAUSSMLE_SIMD only caps nothing (the kernels stay correct), so it is a warning,
# once, at import; a bad GAUSSMLE_NUM_THREADS is a ValueError at the first call that uses it.
if (_problem := simd_env_problem()) is not None:
    warnings.warn(_problem, RuntimeWarning, stacklevel=2)

__all__ = [
    "ClassStats",
    "GaussianNB",
    "GaussianScorer",
    "__version__",
    "class_stats",
    "default_n_threads",
    "joint_log_likelihood",
    "make_scorer",
    "predict",
    "predict_log_proba",
    "predict_proba",
    "simd_level",
]


def __getattr__(name: str) -> Any:
    # GaussianNB subclasses sklearn's base classes; import it (and sklearn) only on first use.
    if name == "GaussianNB":
        from gaussmle.estimator import GaussianNB

        return GaussianNB
    raise AttributeError(f"module 'gaussmle' has no attribute {name!r}")
