"""Exact references for the core-API tests (never calls gaussmle).

Two kinds of reference:

* ``fraction_class_stats``: per-class statistics in exact rational arithmetic
  (``fractions.Fraction``; every float is a dyadic rational, so sums, means and sums of
  squared deviations are exact), rounded once to float64 at the end. Small data only.
* ``longdouble_class_stats`` and the scoring references: ``np.longdouble`` (80-bit on
  x86-64: 64-bit mantissa, eps ~ 1.1e-19), i.e. about 1000x more precise than the
  float64 results being checked against a 1e-12 tolerance. The statistics use a corrected
  two-pass algorithm (mean, then one refinement of the mean from the residuals, then the
  sum of squared deviations), so the reference error is ~1e-19 relative even for data
  with a huge common offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

LD = np.longdouble
#: log(2 pi) to long double precision (np.pi is only a float64).
LOG_2PI = np.log(2 * np.arccos(LD(-1)))

Array = npt.NDArray[Any]

#: Absolute slack for results in float64's subnormal range (~2000 subnormal ulps): there a
#: float64 has fewer digits, and an exact value below ~5e-324 correctly rounds to 0.
SUBNORMAL_SLACK = 1e-320


@dataclass
class RefStats:
    """Reference statistics; float arrays are float64 (Fraction) or longdouble."""

    weight: Array  # (C,)
    mean: Array  # (C, D); NaN for a class with zero weight
    m2: Array  # (C, D)
    mean_scale: Array  # (C, D): sum w|x| / W, the scale rounding errors of a mean live on
    global_count: float
    global_mean: Array  # (D,)
    global_m2: Array  # (D,)
    global_mean_scale: Array  # (D,)


def _labels_weights(x: Array, y: Array, sample_weight: Array | None) -> tuple[Array, Array, Array]:
    x64 = np.asarray(x).astype(np.float64)  # exact for f16/f32/int up to 2**53
    labels = np.asarray(y).astype(np.int64)
    w = np.ones(x64.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    return x64, labels, w


def fraction_class_stats(
    x: Array, y: Array, n_classes: int, sample_weight: Array | None = None
) -> RefStats:
    """Exact weighted per-class (and unweighted global) statistics, rounded once to float64."""
    x64, labels, w = _labels_weights(x, y, sample_weight)
    n, d = x64.shape

    def one_group(rows: Array, weights: list[Fraction]) -> tuple[Fraction, list[Any]]:
        total = sum(weights, Fraction(0))
        out = []
        for j in range(d):
            col = [Fraction(float(v)) for v in x64[rows, j]]
            if total == 0:
                out.append((np.nan, Fraction(0), np.nan))
                continue
            mean = sum((wi * v for wi, v in zip(weights, col, strict=True)), Fraction(0)) / total
            m2 = sum(
                (wi * (v - mean) ** 2 for wi, v in zip(weights, col, strict=True)), Fraction(0)
            )
            scale = sum((wi * abs(v) for wi, v in zip(weights, col, strict=True)), Fraction(0))
            out.append((mean, m2, scale / total))
        return total, out

    weight = np.zeros(n_classes)
    mean = np.full((n_classes, d), np.nan)
    m2 = np.zeros((n_classes, d))
    mean_scale = np.full((n_classes, d), np.nan)
    for c in range(n_classes):
        rows = np.flatnonzero(labels == c)
        total, cols = one_group(rows, [Fraction(float(v)) for v in w[rows]])
        weight[c] = float(total)
        for j, (mu, s2, sc) in enumerate(cols):
            mean[c, j], m2[c, j], mean_scale[c, j] = float(mu), float(s2), float(sc)
    all_rows = np.arange(n)
    g_total, g_cols = one_group(all_rows, [Fraction(1)] * n)
    g_mean = np.array([float(c[0]) for c in g_cols]) if d else np.zeros(0)
    g_m2 = np.array([float(c[1]) for c in g_cols]) if d else np.zeros(0)
    g_scale = np.array([float(c[2]) for c in g_cols]) if d else np.zeros(0)
    return RefStats(weight, mean, m2, mean_scale, float(g_total), g_mean, g_m2, g_scale)


def _ld_group(x: Array, w: Array) -> tuple[Any, Array, Array, Array]:
    xl = x.astype(LD)
    wl = w.astype(LD)[:, None]
    total = wl.sum()
    d = x.shape[1]
    if total == 0:
        nan = np.full(d, np.nan, dtype=LD)
        return total, nan, np.zeros(d, dtype=LD), nan
    mean = (wl * xl).sum(axis=0) / total
    mean = mean + (wl * (xl - mean)).sum(axis=0) / total  # one refinement step
    m2 = (wl * (xl - mean) ** 2).sum(axis=0)
    scale = (wl * np.abs(xl)).sum(axis=0) / total
    return total, mean, m2, scale


def longdouble_class_stats(
    x: Array, y: Array, n_classes: int, sample_weight: Array | None = None
) -> RefStats:
    """Corrected two-pass statistics in long double (any size)."""
    x64, labels, w = _labels_weights(x, y, sample_weight)
    d = x64.shape[1]
    weight = np.zeros(n_classes, dtype=LD)
    mean = np.full((n_classes, d), np.nan, dtype=LD)
    m2 = np.zeros((n_classes, d), dtype=LD)
    scale = np.full((n_classes, d), np.nan, dtype=LD)
    for c in range(n_classes):
        rows = labels == c
        weight[c], mean[c], m2[c], scale[c] = _ld_group(x64[rows], w[rows])
    g_total, g_mean, g_m2, g_scale = _ld_group(x64, np.ones(x64.shape[0]))
    if x64.shape[0] == 0:
        g_mean = np.zeros(d, dtype=LD)
    return RefStats(weight, mean, m2, scale, float(g_total), g_mean, g_m2, g_scale)


@dataclass
class RefScores:
    """Long double joint log-likelihood and the magnitude of the terms that make it up."""

    jll: Array  # (N, C) longdouble
    term_scale: Array  # (N, C): |log prior| + 1/2 sum_d |log(2 pi var)| + sum_d quad

    def log_proba(self) -> Array:
        top = self.jll.max(axis=1, keepdims=True)
        lse = top + np.log(np.exp(self.jll - top).sum(axis=1, keepdims=True))
        return self.jll - lse

    def proba(self) -> Array:
        return np.exp(self.log_proba())

    def row_scale(self) -> Array:
        """Per row: the largest finite term scale (log-proba errors come from any class)."""
        finite = np.where(np.isfinite(self.term_scale), self.term_scale, 0)
        return finite.max(axis=1, keepdims=True)


def reference_jll(x: Array, mean: Array, var: Array, log_prior: Array) -> RefScores:
    """``log prior + sum_d log N(x | mean, var)`` in long double, subtract-first.

    ``term_scale`` is what float64 rounding errors are proportional to: a float64 sum of
    terms has an error bounded by a few eps times the sum of the terms' magnitudes, while
    the jll itself may be much smaller than the terms (log-normaliser and quadratic term of
    opposite signs can cancel), so a tolerance relative to ``|jll|`` would be meaningless.
    """
    x64 = np.asarray(x).astype(np.float64)
    mu = np.asarray(mean, dtype=np.float64).astype(LD)
    v = np.asarray(var, dtype=np.float64).astype(LD)
    lp = np.asarray(log_prior, dtype=np.float64).astype(LD)
    log_terms = LOG_2PI + np.log(v)  # (C, D)
    log_norm = -0.5 * log_terms.sum(axis=1)
    log_scale = 0.5 * np.abs(log_terms).sum(axis=1)
    n, c = x64.shape[0], mu.shape[0]
    jll = np.empty((n, c), dtype=LD)
    scale = np.empty((n, c), dtype=LD)
    with np.errstate(invalid="ignore"):
        for start in range(0, n, 2048):  # chunks keep the (rows, C, D) long double temp small
            xl = x64[start : start + 2048].astype(LD)[:, None, :]
            quad = ((xl - mu[None]) ** 2 / (2 * v[None])).sum(axis=2)
            jll[start : start + 2048] = lp + log_norm - quad
            scale[start : start + 2048] = np.abs(lp) + log_scale + quad
    return RefScores(jll, scale)


def max_violation(got: Array, expected: Array, tol: Array) -> tuple[float, tuple[int, ...]]:
    """Largest |got - expected| / tol and where (for readable failure messages)."""
    got_l = np.asarray(got).astype(LD)
    exp_l = np.asarray(expected).astype(LD)
    err = np.abs(got_l - exp_l)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0, err / np.asarray(tol).astype(LD))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    if ratio.size == 0:
        return 0.0, ()
    idx = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return float(ratio[idx]), tuple(int(i) for i in idx)


def assert_within(got: Array, expected: Array, tol: Array, what: str) -> None:
    """Elementwise |got - expected| <= tol, with non-finite values required to match exactly."""
    got_a = np.asarray(got)
    exp_a = np.asarray(expected)
    assert got_a.shape == exp_a.shape, f"{what}: shape {got_a.shape} != {exp_a.shape}"
    finite = np.isfinite(exp_a)
    if not np.all(finite):
        # -inf must be -inf, NaN must be NaN (e.g. the variance of an empty class).
        bad = ~finite & ~((got_a == exp_a) | (np.isnan(got_a) & np.isnan(exp_a)))
        assert not np.any(bad), (
            f"{what}: non-finite mismatch at {np.argwhere(bad)[:5].tolist()}: "
            f"got {got_a[bad][:5]}, expected {exp_a[bad][:5]}"
        )
    tol_b = np.broadcast_to(np.asarray(tol), exp_a.shape)
    ratio, idx = max_violation(
        np.where(finite, got_a, 0), np.where(finite, exp_a, 0), np.where(finite, tol_b, 1)
    )
    if ratio > 1:
        assert ratio <= 1, (
            f"{what}: error {ratio:.3g}x the tolerance at {idx}: got {got_a[idx]!r}, "
            f"expected {exp_a[idx]!r} (tolerance {tol_b[idx]!r})"
        )


def assert_stats_close(stats: Any, ref: RefStats, rtol: float, what: str = "stats") -> None:
    """Compare a ClassStats to a reference.

    weight and m2 are sums of non-negative terms, so they are compared relative to
    themselves. A mean can cancel (mixed signs), so its error is measured against
    ``sum w|x| / W`` (equal to ``|mean|`` for one-signed data, as in the adversarial cases).
    """
    assert_within(stats.weight, ref.weight, rtol * np.abs(ref.weight), f"{what}.weight")
    present = ref.weight > 0
    mean_tol = rtol * ref.mean_scale[present] + SUBNORMAL_SLACK
    assert_within(stats.mean[present], ref.mean[present], mean_tol, f"{what}.mean")
    m2_tol = rtol * ref.m2[present] + SUBNORMAL_SLACK
    assert_within(stats.m2[present], ref.m2[present], m2_tol, f"{what}.m2")
    assert stats.global_count == ref.global_count, (
        f"{what}.global_count: got {stats.global_count}, expected {ref.global_count}"
    )
    if ref.global_count > 0:
        assert_within(
            stats.global_mean,
            ref.global_mean,
            rtol * ref.global_mean_scale + SUBNORMAL_SLACK,
            f"{what}.global_mean",
        )
        g_tol = rtol * ref.global_m2 + SUBNORMAL_SLACK
        assert_within(stats.global_m2, ref.global_m2, g_tol, f"{what}.global_m2")


def assert_scores_close(
    got: Array, ref: RefScores, kind: str, rtol: float = 1e-12, what: str = ""
) -> None:
    """Compare jll / log_proba / proba output to the long double reference.

    float64 output: error <= rtol * (term magnitude) (see ``reference_jll``).
    float32 output: additionally one rounding to float32, so up to 2 float32 ulps of the
    exact value on top of the float64-level error.
    """
    got = np.asarray(got)
    if kind == "jll":
        expected, scale = ref.jll, ref.term_scale
        tol = rtol * scale
    elif kind == "log_proba":
        # log_proba[c] = jll[c] - logsumexp(jll): errors of any class's jll enter.
        expected = ref.log_proba()
        tol = 2 * rtol * ref.row_scale() + np.zeros(expected.shape, dtype=LD)
    elif kind == "proba":
        expected = ref.proba()
        # Clamped so the tolerance stays finite (never NaN/inf, which would make the check
        # vacuous) when |jll| ~ 1e300; those far-point rows are checked exactly against
        # Decimal references in test_scoring_exact.py.
        log_tol = np.minimum(2 * rtol * ref.row_scale(), 1.0)
        tol = expected * np.expm1(log_tol) + 1e-15
    else:
        raise AssertionError(kind)
    if got.dtype == np.float32:
        expected_f = np.where(np.isfinite(expected), expected, 0)
        ulp32 = np.spacing(np.abs(expected_f.astype(np.float32))).astype(LD)
        tol = tol + 2 * ulp32
    assert_within(got, expected, tol, f"{what}{kind} ({got.dtype})")


def assert_predict_is_argmax(labels: Array, ref: RefScores) -> None:
    """``labels`` maximise the exact jll up to float64 rounding (a near-tie decided by the
    last bit either way is accepted); exact ties (e.g. identical classes) go to the first."""
    labels = np.asarray(labels)
    assert labels.dtype == np.int64, labels.dtype
    assert labels.shape == (ref.jll.shape[0],)
    rows = np.arange(labels.shape[0])
    best = ref.jll.max(axis=1)
    chosen = ref.jll[rows, labels]
    slack = 1e-12 * ref.row_scale()[:, 0]
    bad = np.flatnonzero(chosen < best - slack)
    assert bad.size == 0, (
        f"predict chose a non-maximal class at rows {bad[:5]}: "
        f"got {labels[bad[:5]]}, expected {np.argmax(ref.jll[bad[:5]], axis=1)}"
    )
    first_exact = np.argmax(ref.jll == best[:, None], axis=1)
    tie_rows = np.flatnonzero((ref.jll == best[:, None]).sum(axis=1) > 1)
    wrong = tie_rows[labels[tie_rows] > first_exact[tie_rows]]
    # An exact tie in long double between *identical* classes is also exact in float64.
    assert wrong.size == 0, f"exact ties not resolved to the first class at rows {wrong[:5]}"


def merge_rounding_bound(w_a: Array, mean_a: Array, w_b: Array, mean_b: Array) -> Array:
    """First- and second-order effect on the merged m2 of each stored part mean being off by
    up to one ulp: the between-part term ``delta**2 * wa * wb / W`` with ``delta`` uncertain
    by ``u = 2 ulp(max |mean|)`` changes by at most ``(2 |delta| u + u**2) * wa * wb / W``."""
    wa, wb = np.asarray(w_a)[:, None], np.asarray(w_b)[:, None]
    both = (wa > 0) & (wb > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        delta = np.abs(mean_b - mean_a)
        u = 2 * np.spacing(np.maximum(np.abs(mean_a), np.abs(mean_b)))
        bound = (2 * delta * u + u * u) * (wa * wb / (wa + wb))
    return np.where(both, bound, 0.0)
