"""Extreme values: each test pins down one documented behaviour (docs/hardening.md).

The ``test_kbN_*`` tests pin the core bugs the fuzzers found (``KBn`` in docs/hardening.md);
a bug still open is marked ``xfail(strict=True)``, so its fix shows up as an XPASS failure.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from fractions import Fraction

import gaussmle
import numpy as np
import pytest
from gaussmle import ClassStats, class_stats, predict_proba
from reference import fraction_class_stats

GaussianNB = pytest.importorskip("gaussmle.estimator").GaussianNB

# ------------------------------------------------------------------------- zero variance


def constant_class_data() -> tuple[np.ndarray, np.ndarray]:
    # Class 0 varies, class 1 is constant in feature 0 (its variance is exactly 0).
    x = np.array([[0.0, 1.0], [2.0, 3.0], [5.0, 1.0], [5.0, 2.0]])
    return x, np.array([0, 0, 1, 1])


def test_zero_variance_class_statistics_are_exact_zero() -> None:
    x, y = constant_class_data()
    s = class_stats(x, y)
    assert s.var[1, 0] == 0.0 and s.m2[1, 0] == 0.0
    assert s.var[0, 0] == 1.0


def test_zero_variance_scorer_raises_value_error() -> None:
    """The core never scores with var <= 0: ValueError, never NaN or inf probabilities."""
    x, y = constant_class_data()
    s = class_stats(x, y)
    prior = np.log(s.weight / s.weight.sum())
    for fn in (
        gaussmle.joint_log_likelihood,
        gaussmle.predict,
        gaussmle.predict_proba,
        gaussmle.predict_log_proba,
    ):
        with pytest.raises(
            ValueError, match=r"variance must be finite and > 0.*class 1, feature 0"
        ):
            fn(x, s.mean, s.var, prior)
    with pytest.raises(ValueError, match="variance must be finite and > 0"):
        gaussmle.make_scorer(s.mean, np.array([[1.0, -1.0], [1.0, 1.0]]), prior)


def test_zero_variance_estimator_var_smoothing_zero_never_gives_nan() -> None:
    x, y = constant_class_data()
    model = GaussianNB(var_smoothing=0.0).fit(x, y)
    with pytest.raises(ValueError, match="var_smoothing"):
        model.predict_proba(x)
    with pytest.raises(ValueError, match="var_smoothing"):
        model.predict(x)
    # With the default smoothing the same data scores, and probabilities are a distribution.
    proba = GaussianNB().fit(x, y).predict_proba(x)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-12)


def test_all_constant_data_has_zero_epsilon_and_a_clear_error() -> None:
    # var_smoothing scales the largest feature variance; with X constant that is 0 too.
    x = np.ones((5, 2))
    model = GaussianNB().fit(x, np.array([0, 1, 0, 1, 0]))
    assert model.epsilon_ == 0.0
    with pytest.raises(ValueError, match="variance"):
        model.predict_proba(x)


# --------------------------------------------------------------------- float64 overflow


@pytest.mark.parametrize(
    "column",
    [
        [1e308, -1e308],
        [1e154, -1e154],
        [np.finfo(float).max, np.finfo(float).max / 2, 0.0],
        [0.99 * np.finfo(float).max, -0.99 * np.finfo(float).max] * 2,
    ],
)
def test_statistics_that_overflow_raise_value_error(column: list[float]) -> None:
    # The mean of finite values never overflows; the message names what does.
    x = np.array(column)[:, None]
    with pytest.raises(ValueError, match="sum of squared deviations overflows float64"):
        class_stats(x, np.zeros(len(column), dtype=np.int64))


def test_statistics_just_below_overflow_are_finite() -> None:
    # m2 = 2 * (1e153)**2 = 2e306 is representable.
    s = class_stats(np.array([[1e153], [-1e153]]), np.array([0, 0]))
    assert s.m2[0, 0] == pytest.approx(2e306, rel=1e-15)
    assert np.isfinite(s.var).all()


def test_overflow_in_the_global_statistics_alone_raises() -> None:
    # Each class is a single point (m2 = 0), but all rows together overflow.
    x = np.array([[1e308], [-1e308]])
    with pytest.raises(ValueError, match="overflows float64"):
        class_stats(x, np.array([0, 1]))


def test_scoring_overflowing_distance_gives_minus_inf_jll() -> None:
    mean = np.array([[-1e308], [0.0]])
    var = np.ones((2, 1))
    prior = np.log([0.5, 0.5])
    jll = gaussmle.joint_log_likelihood(np.array([[1e308], [1.0]]), mean, var, prior)
    assert jll[0].tolist() == [-np.inf, -np.inf]  # (x - mu)**2 overflows for both classes
    assert jll[1, 0] == -np.inf and np.isfinite(jll[1, 1])
    assert not np.isnan(jll).any()


def test_scoring_one_class_overflowing_still_gives_a_distribution() -> None:
    mean = np.array([[-1e308], [0.0]])
    var = np.ones((2, 1))
    proba = gaussmle.predict_proba(np.array([[1.0]]), mean, var, np.log([0.5, 0.5]))
    assert proba.tolist() == [[0.0, 1.0]]
    assert gaussmle.predict(np.array([[1.0]]), mean, var, np.log([0.5, 0.5])).tolist() == [1]


@pytest.mark.parametrize(
    "fn", [gaussmle.predict, gaussmle.predict_proba, gaussmle.predict_log_proba]
)
def test_zero_likelihood_under_every_class_is_a_clear_value_error(fn: object) -> None:
    mean = np.array([[-1e308], [-1e308]])
    x = np.array([[-1e308], [1e308]])  # row 0 sits on both means; row 1 is 2e308 away
    with pytest.raises(ValueError, match="row 1 has zero likelihood under every class"):
        fn(x, mean, np.ones((2, 1)), np.log([0.5, 0.5]))  # type: ignore[operator]


@pytest.mark.parametrize("level", gaussmle._core.available_simd_levels())
def test_first_bad_row_is_reported_on_every_simd_level(level: str) -> None:
    # Row 0 overflows every class (zero likelihood); row 5, in the same SIMD tile, is NaN.
    # The error names row 0 whatever the tile size of the level.
    x = np.zeros((7, 1))
    x[0, 0], x[5, 0] = 1e200, np.nan
    model = GaussianNB().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    try:
        gaussmle._core.set_simd_level(level)
        for method in (model.predict, model.predict_proba, model.predict_log_proba):
            with pytest.raises(ValueError, match="row 0 has zero likelihood"):
                method(x)
        with pytest.raises(ValueError, match="row 5"):
            model.predict_joint_log_proba(x)
    finally:
        gaussmle._core.set_simd_level(None)


@pytest.mark.parametrize("level", gaussmle._core.available_simd_levels())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_first_bad_row_leaves_out_untouched(level: str, dtype: type, order: str) -> None:
    # The failing tile is the first one: nothing of `out` may be written, in any layout.
    x = np.zeros((40, 3), dtype=dtype, order=order)  # type: ignore[call-overload]
    x[2, 1], x[6, 2] = 1e30 if dtype == np.float32 else 1e200, np.nan
    # var 1e-300: (x - mean)^2 / (2 var) overflows float64 for the float32 value 1e30 too.
    mean, var, log_prior = np.zeros((2, 3)), np.full((2, 3), 1e-300), np.log([0.5, 0.5])
    out = np.full((40, 2), 7.0)
    try:
        gaussmle._core.set_simd_level(level)
        with pytest.raises(ValueError, match="row 2 has zero likelihood"):
            predict_proba(x, mean, var, log_prior, out=out)
    finally:
        gaussmle._core.set_simd_level(None)
    assert (out == 7.0).all()


# ---------------------------------------------------------------- a class never seen


def test_declared_class_never_seen_has_zero_weight_and_nan_variance() -> None:
    x = np.array([[1.0], [2.0], [4.0]])
    s = class_stats(x, np.array([0, 0, 1]), n_classes=3)
    assert s.weight.tolist() == [2.0, 1.0, 0.0]
    assert s.mean[2].tolist() == [0.0] and s.m2[2].tolist() == [0.0]
    assert np.isnan(s.var[2]).all()
    # Merging it with data of that class gives exactly that data's statistics.
    later = class_stats(np.array([[7.0], [9.0]]), np.array([2, 2]), n_classes=3)
    merged = s + later
    assert merged.weight.tolist() == [2.0, 1.0, 2.0]
    assert merged.mean[2].tolist() == [8.0] and merged.var[2].tolist() == [1.0]


def test_estimator_class_declared_but_never_seen_is_never_predicted() -> None:
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    model = GaussianNB().partial_fit(x, np.array([0, 0, 1, 1]), classes=[0, 1, 2])
    assert model.class_count_.tolist() == [2.0, 2.0, 0.0]
    proba = model.predict_proba(np.array([[0.5], [10.5], [100.0]]))
    assert np.all(np.isfinite(proba))
    assert proba[:, 2].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-12)
    assert 2 not in model.predict(np.linspace(-100, 100, 41)[:, None]).tolist()


# --------------------------------------------------------------------- > 2**32 rows


@pytest.mark.slow
def test_more_than_2_to_the_32_rows_via_broadcast_counts_exactly() -> None:
    """4 294 967 301 rows, one 8-byte value read through stride 0 (no 32 GiB array).

    Measured on 2 cores: ~20-45 s (about 10 ns per row), hence ``slow``; ``make test`` runs it.
    """
    n = 2**32 + 5
    x = np.broadcast_to(np.array([[3.0]]), (n, 1))
    y = np.broadcast_to(np.zeros(1, dtype=np.int64), (n,))
    assert x.strides[0] == 0 and y.strides == (0,)
    start = time.perf_counter()
    s = class_stats(x, y, 1)
    elapsed = time.perf_counter() - start
    assert s.weight.tolist() == [float(n)]  # exact: n < 2**53
    assert s.global_count == float(n)
    assert s.mean.tolist() == [[3.0]] and s.m2.tolist() == [[0.0]]
    assert elapsed < 300, f"{elapsed:.0f} s for 2**32 + 5 rows"


def test_broadcast_rows_count_exactly_quick() -> None:
    # The same path at 2**20 + 3 rows, fast enough for every run.
    n = 2**20 + 3
    x = np.broadcast_to(np.array([[3.0, -1.0]]), (n, 2))
    y = np.broadcast_to(np.ones(1, dtype=np.int32), (n,))
    s = class_stats(x, y, 2)
    assert s.weight.tolist() == [0.0, float(n)]
    assert s.mean[1].tolist() == [3.0, -1.0] and s.m2[1].tolist() == [0.0, 0.0]


# ----------------------------- core bugs found by the fuzzers (KBn), kept as regression tests


def test_kb6_overflowing_deviations_raise_not_zero() -> None:
    x = np.array([[2.2250738585072014e-308], [-1e154], [-1e308]])
    # exact m2 = sum (x - mean)**2 ~ 1.1e616: must be "overflows float64".
    with pytest.raises(ValueError, match="overflows float64"):
        class_stats(x, np.zeros(3, dtype=np.int64))


def test_kb2_subnormal_variance_is_rejected_with_the_smallest_supported_variance() -> None:
    """KB2 (fixed by rejection): a variance below 2.2250738585072014e-308 (the smallest normal
    float64) used to make 1/(2 var) infinite (NaN/wrong class); it is now a ValueError that
    states the smallest supported variance, for every scorer and make_scorer."""
    mean, var, prior = [[0.0], [1.0]], [[5e-324], [1.0]], [0.0, 0.0]
    x = np.array([[0.0], [1e-300]])
    for fn in (
        gaussmle.joint_log_likelihood,
        gaussmle.predict,
        gaussmle.predict_proba,
        gaussmle.predict_log_proba,
    ):
        with pytest.raises(ValueError, match=r"variance must be >= 2\.2250738585072014e-308"):
            fn(x, mean, var, prior)  # type: ignore[operator]
    with pytest.raises(ValueError, match="smallest supported variance"):
        gaussmle.make_scorer(mean, var, prior)
    # The smallest normal variance itself is supported and scores correctly.
    tiny = np.finfo(float).tiny
    proba = gaussmle.predict_proba(x, mean, [[tiny], [1.0]], prior)
    np.testing.assert_allclose(proba, [[1.0, 0.0], [1.0, 0.0]], atol=1e-12)


def test_kb1_merge_that_overflows_raises() -> None:
    a = class_stats(np.array([[0.7e154], [-0.7e154]]), np.array([0, 0]))  # m2 ~ 0.98e308
    with pytest.raises(ValueError, match="overflow"):
        merged = a.merge(a)
        assert np.isfinite(merged.m2).all(), merged.m2  # never reached once fixed


def test_kb4_subnormal_weights_do_not_overflow() -> None:
    s = class_stats(np.array([[1.0], [2.0]]), np.array([0, 1]), sample_weight=[5e-324, 1.0])
    assert s.mean.ravel().tolist() == [1.0, 2.0]


def test_kb7_huge_weights_do_not_overflow() -> None:
    x = np.array([[1342352256.0], [-570573504.0]])
    s = class_stats(x, np.array([0, 0]), sample_weight=[0.25, 1e300])
    assert s.mean[0, 0] == pytest.approx(-570573504.0, rel=1e-15, abs=0)


def test_kb3_extreme_weight_ratio_mean_is_accurate() -> None:
    s = class_stats(np.array([[1.0], [0.0]]), np.array([0, 0]), sample_weight=[1e-46, 1e-9])
    assert s.mean[0, 0] == pytest.approx(1e-37, rel=1e-12, abs=0)


def test_kb8_huge_n_classes_is_a_value_error() -> None:
    """KB8 (fixed): this used to panic with 'capacity overflow' (PanicException)."""
    try:
        class_stats(np.zeros((2, 1)), np.array([0, 1]), n_classes=2**62)
    except ValueError:
        return
    except BaseException as e:  # PanicException
        pytest.fail(f"{type(e).__name__}: {e}")


def test_kb8_huge_label_does_not_abort_the_process() -> None:
    """KB8 (fixed): a label of 2**40 without n_classes used to abort the interpreter."""
    code = (
        "import numpy as np, gaussmle\n"
        "try:\n"
        "    gaussmle.class_stats(np.zeros((2, 1)), np.array([0, 2**40]))\n"
        "except (ValueError, MemoryError):\n"
        "    print('clean error')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "clean error" in proc.stdout, proc.stderr[-500:]


def test_stats_empty_is_the_merge_identity_at_extremes() -> None:
    s = class_stats(np.array([[1e153], [-1e153], [1e-300]]), np.array([0, 0, 1]))
    merged = s + ClassStats.empty(2, 1)
    np.testing.assert_array_equal(merged.m2, s.m2)
    np.testing.assert_array_equal(merged.mean, s.mean)


# --------------------------------------------------- weights near float64's range (reviewer)


def _exact_weighted(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    from fractions import Fraction

    ws = [Fraction(float(v)) for v in w]
    xs = [Fraction(float(v)) for v in x]
    total = sum(ws, Fraction(0))
    mean = sum((a * b for a, b in zip(ws, xs, strict=True)), Fraction(0)) / total
    m2 = sum((a * (b - mean) ** 2 for a, b in zip(ws, xs, strict=True)), Fraction(0))
    return float(mean), float(m2 / total)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_subnormal_and_huge_weights_give_exact_statistics(layout: str) -> None:
    """The statistics do not depend on the weights' scale: a class whose weights are subnormal
    (5e-324 made the mean 14% wrong before per-class scaling) or near 1e280 is fitted as
    exactly as one with unit weights. 70 000 rows of 64 features: several chunks."""
    rng = np.random.default_rng(41)
    n, d = 70_000, 64
    x = 1e10 + rng.integers(-1000, 1001, size=(n, d)).astype(np.float64) * 1e6
    y = rng.integers(0, 3, n)
    k = rng.integers(1, 9, n).astype(np.float64)
    w = np.where(y == 0, k * 5e-324, np.where(y == 1, k * 1e280, k * 0.5))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    s = class_stats(x, y, 3, sample_weight=w)
    for c in range(3):
        rows = y == c
        assert s.weight[c] == pytest.approx(float(w[rows].sum()), rel=1e-15)
        for j in (0, d - 1):
            mean, var = _exact_weighted(x[rows, j], w[rows])
            assert abs(s.mean[c, j] - mean) <= 2 * np.spacing(mean), (layout, c, j)
            assert s.var[c, j] == pytest.approx(var, rel=1e-13), (layout, c, j)


@pytest.mark.parametrize(
    ("x", "w", "exact_var"),
    [
        # One class's weights spanning 2^1060: one scale cannot keep them all normal, so the
        # class is not rescaled (the reviewer's case: rescaling by its largest weight gave var
        # 1e-4 off, and m2 = 0 for the second).
        ([0.0, 1e100, 2e100, 4e100], [1e300, 1e-20, 1e-20, 1e-20], True),
        ([0.0, 1.0], [1e300, 1e-300], True),
        # m2 = total weight * variance below 2.2e-308: a float64 that small has fewer digits.
        # The documented limit; the mean stays exact and the variance is never NaN or negative.
        ([1e-15, 2e-15, 4e-15], [1e-300] * 3, False),
        ([1e-100, 2e-100, 4e-100], [1e-200] * 3, False),
    ],
)
def test_weights_spanning_the_range_or_an_m2_below_it(
    x: list[float], w: list[float], exact_var: bool
) -> None:
    xs = np.array(x)[:, None]
    s = class_stats(xs, [0] * len(x), 1, sample_weight=w)
    mean, var = _exact_weighted(np.array(x), np.asarray(w))
    assert abs(s.mean[0, 0] - mean) <= 2 * np.spacing(mean)
    if exact_var:
        assert s.var[0, 0] == pytest.approx(var, rel=1e-14)
    else:
        assert 0.0 <= s.var[0, 0] <= 2 * var and s.m2[0, 0] < 2.3e-308
    # Split invariance: the same rows in two parts, merged, give the same statistics.
    half = len(x) // 2
    parts = class_stats(xs[:half], [0] * half, 1, sample_weight=w[:half]) + class_stats(
        xs[half:], [0] * (len(x) - half), 1, sample_weight=w[half:]
    )
    np.testing.assert_allclose(parts.mean, s.mean, rtol=1e-15)
    if exact_var:
        np.testing.assert_allclose(parts.var, s.var, rtol=1e-14)


def test_kb4_merge_with_a_subnormal_weight_next_to_a_huge_one_is_finite_and_exact() -> None:
    """Fuzz seed 0x623d5fd9b90ce98a, reduced: two classes, each with a weight of 1e300 next to
    5e-324 or 1e-300, on data ~1e10. The chunk's block sums overflow (1e300 * 1e10), the
    row-by-row fallback merges, and its term ((d*W)*(w/W'))*d was inf * 0 = NaN: a spurious
    "overflows float64" error although every m2 is below 1e-280. Now exact."""
    x = np.array(
        [
            [22454214590.51972, 7064297635.066017, -477724144.046659],
            [-1994829739.5442917, 9265798525.617533, -860074332.3253667],
            [-1615412172.1545072, 2188042854.0701704, 12484805574.271608],
            [7460813160.932193, -313002793.98707294, -276962012.4935984],
        ]
    )
    y = np.array([1, 1, 0, 0])
    w = np.array([1e300, 5e-324, 1e-300, 1e300])
    ref = fraction_class_stats(x, y, 2, w)
    for order in "CF":
        s = class_stats(np.asarray(x, order=order), y, 2, sample_weight=w)
        for c in range(2):
            for j in range(3):
                mean = ref.mean[c, j]
                assert abs(s.mean[c, j] - mean) <= 2 * np.spacing(abs(mean))
                # m2 ~ 1e-303 .. 1e-281: normal floats, exact to the merge's few roundings.
                assert s.m2[c, j] == pytest.approx(ref.m2[c, j], rel=1e-12), (order, c, j)


@pytest.mark.parametrize(
    ("x", "w"),
    [
        # Huge weights keep tiny data's products normal: scaling them down (a first version
        # of the per-class scaling) made w * t**2 underflow and m2 come out 0.
        ([1.6e-300, -4.3e-301, -1.1e-301, -8.8e-301], [1e300] * 4),
        # Tiny (not subnormal) weights with huge data stay as given.
        ([1e150, -2e150, 3e150], [1e-300] * 3),
        # Subnormal weights are scaled up to 2^-64 only: data ~1e150 stays in range.
        ([1e150, -2e150, 4e150], [5e-324, 1e-320, 2e-323]),
    ],
)
def test_weight_scaling_keeps_the_products_of_extreme_data_in_range(
    x: list[float], w: list[float]
) -> None:
    xs = np.array(x)[:, None]
    s = class_stats(xs, [0] * len(x), 1, sample_weight=w)
    ref = fraction_class_stats(xs, np.zeros(len(x), dtype=int), 1, np.array(w))
    mean = ref.mean[0, 0]
    assert abs(s.mean[0, 0] - mean) <= 2 * np.spacing(abs(mean))
    assert s.m2[0, 0] == pytest.approx(ref.m2[0, 0], rel=1e-13)


@pytest.mark.parametrize("weight", [1e-160, 1e-170, 1e-200, 1e-250, 1e-300])
def test_tiny_weights_on_tiny_data_keep_the_mean_exact(weight: float) -> None:
    # Reviewer-found: w * (x - K) ~ 1e-350 underflowed for weights 1e-200 on data ~1e-150, so
    # the mean came out 1e-150 where it is 2e-150 (classes were rescaled only below 2^-960).
    x = np.array([[1e-150, 5e-151], [3e-150, -7e-151], [2.5e-150, 3e-151]])
    for order in "CF":
        xs = np.asarray(x, order=order)
        s = class_stats(xs, [0, 0, 0], 1, sample_weight=[weight, weight, 2 * weight])
        ref = fraction_class_stats(
            xs, np.zeros(3, dtype=int), 1, np.array([weight, weight, 2 * weight])
        )
        for j in range(2):
            mean = ref.mean[0, j]
            assert abs(s.mean[0, j] - mean) <= 2 * np.spacing(abs(mean)), (order, j)
        assert s.weight[0] == pytest.approx(4 * weight, rel=1e-15)


@pytest.mark.parametrize("order", ["C", "F"])
def test_class_weights_are_summed_with_compensation(order: str) -> None:
    # Reviewer-found: class weights were plain sums, so 1e5 unit weights next to one of 1e16
    # were all lost (1e16 + 1 rounds back to 1e16) and the mean and variance came out 1.6e-12
    # off; ordinary uniform(0, 10) weights were up to 20 ulps off math.fsum.
    n = 100_000
    x = np.asarray(np.vstack([[[0.0]], np.ones((n, 1))]), order=order)
    w = np.r_[1e16, np.ones(n)]
    y = np.zeros(n + 1, dtype=int)
    s = class_stats(x, y, 1, sample_weight=w)
    ref = fraction_class_stats(x, y, 1, w)
    assert s.weight[0] == ref.weight[0] == 1e16 + n
    assert s.mean[0, 0] == pytest.approx(ref.mean[0, 0], rel=4e-16)
    ref_var = ref.m2[0, 0] / ref.weight[0]
    assert s.var[0, 0] == pytest.approx(ref_var, rel=4e-15)
    # A second reviewer: with a class whose block sums overflow (weights 1e299/1e300 on 2e4),
    # Fortran order takes the block-wise two-pass, and each block's rounded weight lost up to
    # half an ulp: W came out 1 ulp off. The blocks' rests are now carried to the chunk total.
    x2 = np.concatenate([[0.0, 2e4, 0.0], np.full(n, 2e4)])[:, None] * np.ones((1, 2))
    w2 = np.concatenate([[1e300, 1e299, 1e300], np.full(n, 1e284)])
    y2 = np.array([0, 1, 1] + [0] * n)
    s2 = class_stats(np.asarray(x2, order=order), y2, 2, sample_weight=w2)
    assert s2.weight[0] == float(sum((Fraction(v) for v in w2[y2 == 0]), Fraction(0)))
    rng = np.random.default_rng(41)
    x = np.asarray(rng.normal(size=(200_000, 3)), order=order)
    w = rng.uniform(0.0, 10.0, 200_000)
    y = rng.integers(0, 3, 200_000)
    s = class_stats(x, y, 3, sample_weight=w)
    for c in range(3):
        exact = math.fsum(w[y == c])
        assert abs(s.weight[c] - exact) <= np.spacing(exact), c


@pytest.mark.parametrize("layout", ["F", "strided"])
def test_block_path_two_pass_with_an_outlier_shift(layout: str) -> None:
    # Found by the Hypothesis boundary test: the block-wise path (Fortran order and other
    # strides) shifts a class by its first row. An outlier there (32770 against eight rows of
    # 1.2 with weight 2396) made x - K round by u*32770 the same way in every row, and the
    # two-pass mean came out 1e-12 off. The second pass now subtracts the first pass's mean.
    x = np.array([[32770.0, 1.2]] + [[1.2, 1.2]] * 8)
    if layout == "F":
        x = np.asfortranarray(x)
    else:
        big = np.zeros((9, 4))
        big[:, ::2] = x
        x = big[:, ::2]
    w = np.array([1.0] + [2396.0] * 8)
    y = np.zeros(9, dtype=int)
    s = class_stats(x, y, 1, sample_weight=w)
    ref = fraction_class_stats(x, y, 1, w)
    for j in range(2):
        assert abs(s.mean[0, j] - ref.mean[0, j]) <= np.spacing(ref.mean[0, j]), j
        assert s.m2[0, j] == pytest.approx(ref.m2[0, j], rel=1e-14), j
