"""Type stubs for the compiled Rust extension ``gaussmle._core``.

Every array argument is read in place (no copy): float32/float64 matrices in any
layout (C, Fortran, strided, negative or zero strides, read-only, memory-mapped).
Dtype coercion is done once, in Python, before these are called.
"""

from typing import final

import numpy as np
import numpy.typing as npt

__all__ = [
    "GaussianScorer",
    "__version__",
    "available_cores",
    "available_simd_levels",
    "check_stats",
    "class_stats",
    "default_n_threads",
    "encode_labels",
    "merge_stats",
    "set_simd_level",
    "simd_env_problem",
    "simd_level",
]

__version__: str

_FloatMatrix = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_IntCodes = npt.NDArray[np.int32] | npt.NDArray[np.int64]

#: ``(weight, mean, mean_lo, m2)``: weight per group, and (n_groups, n_features) arrays. The mean
#: is the double-double ``mean + mean_lo``; ``m2`` is the weighted sum of squared deviations.
_MomentsTuple = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]

def class_stats(
    x: _FloatMatrix,
    labels: _IntCodes,
    n_classes: int,
    sample_weight: npt.NDArray[np.float64] | None = None,
    n_threads: int | None = None,
) -> tuple[_MomentsTuple, _MomentsTuple]:
    """One pass over ``x``: per-class moments (weighted) and global moments (one group, unweighted).

    The global statistics are unweighted even when ``sample_weight`` is given (they feed
    ``var_smoothing``, as in scikit-learn). Raises ``ValueError`` naming the position of a
    NaN/inf, an out-of-range label or a negative/non-finite weight, and on float64 overflow.
    """

def check_stats(parts: _MomentsTuple) -> None:
    """Validate statistics as ``merge_stats`` does (shapes; weight finite and >= 0; mean and
    m2 finite, m2 >= 0, and m2 0 where the weight is 0): ``ValueError`` otherwise."""

def merge_stats(a: _MomentsTuple, b: _MomentsTuple) -> _MomentsTuple:
    """Exact weighted Chan/Schubert-Gertz merge of two sets of per-group statistics."""

def encode_labels(
    labels: npt.NDArray[np.int64] | npt.NDArray[np.int32],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """Sorted unique labels and the code (index into them) of every label, in Rust.

    The codes are ``None`` when they would equal the labels (the labels are exactly
    ``0, 1, ..., k-1``): the caller fits with the labels themselves.
    """

def simd_level() -> str:
    """The SIMD level the kernels use now: ``"scalar"``, ``"avx2"`` or ``"avx512"``."""

def set_simd_level(level: str | None) -> str:
    """Test hook: force a SIMD level (clamped to what the CPU supports); ``None`` restores
    automatic detection. Returns the level now in effect."""

def simd_env_problem() -> str | None:
    """Why ``GAUSSMLE_SIMD`` is ignored (set, not empty, and not a level name), else None."""

def available_simd_levels() -> list[str]:
    """The SIMD levels this CPU can run, lowest first."""

def available_cores() -> int:
    """All cores this process may use (what ``n_threads=-1`` means), whatever
    ``GAUSSMLE_NUM_THREADS`` says."""

def default_n_threads() -> int:
    """Threads used when ``n_threads`` is None: ``GAUSSMLE_NUM_THREADS`` or all cores.

    Raises ``ValueError`` if ``GAUSSMLE_NUM_THREADS`` is set to anything but a positive
    integer (empty counts as unset)."""

@final
class GaussianScorer:
    """Precomputed diagonal-Gaussian scoring parameters (immutable, thread-safe).

    ``log_prior`` may contain ``-inf`` (a class that can never be predicted); ``var`` must be
    finite and > 0 everywhere.
    """

    def __new__(
        cls,
        mean: npt.NDArray[np.float64],
        var: npt.NDArray[np.float64],
        log_prior: npt.NDArray[np.float64],
    ) -> GaussianScorer: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    def joint_log_likelihood(
        self,
        x: _FloatMatrix,
        out: _FloatMatrix | None = None,
        n_threads: int | None = None,
    ) -> _FloatMatrix:
        """(n, n_classes) joint log-likelihood; dtype of ``out`` or else of ``x``."""
    def log_proba(
        self,
        x: _FloatMatrix,
        out: _FloatMatrix | None = None,
        n_threads: int | None = None,
    ) -> _FloatMatrix:
        """Row-normalised log-probabilities (max-shifted log-sum-exp)."""
    def proba(
        self,
        x: _FloatMatrix,
        out: _FloatMatrix | None = None,
        n_threads: int | None = None,
    ) -> _FloatMatrix:
        """Row-normalised probabilities; each row sums to 1."""
    def predict(
        self,
        x: _FloatMatrix,
        out: npt.NDArray[np.int64] | None = None,
        n_threads: int | None = None,
    ) -> npt.NDArray[np.int64]:
        """Index of the most likely class per row (first on ties); never builds the n x C matrix."""
