"""class_stats / ClassStats against exact rational references, on adversarial data."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import re
from typing import Any

import gaussmle
import numpy as np
import pytest
from gaussmle import ClassStats, class_stats
from reference import (
    assert_stats_close,
    assert_within,
    fraction_class_stats,
    longdouble_class_stats,
    merge_rounding_bound,
)

RTOL = 1e-12  # float64 results vs the exact value
MERGE_RTOL = 1e-13  # merge of a split vs one pass over everything


# ---------------------------------------------------------------------------- basic exactness


def test_small_random_data_matches_fraction_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) * [1.0, 10.0, 0.1, 3.0] + [0.0, -5.0, 2.0, 100.0]
    y = rng.integers(0, 3, size=60)
    stats = class_stats(x, y)
    assert stats.n_classes == 3 and stats.n_features == 4
    assert all(a.dtype == np.float64 for a in (stats.weight, stats.mean, stats.m2))
    assert_stats_close(stats, fraction_class_stats(x, y, 3), RTOL)
    # var is the MLE (ddof=0) variance m2 / weight.
    np.testing.assert_array_equal(stats.var, stats.m2 / stats.weight[:, None])


def test_docstring_example_values() -> None:
    # Hand-computable: class 0 = {1, 3}: mean 2, var 1; class 1 = {10}: mean 10, var 0.
    stats = class_stats(np.array([[1.0], [3.0], [10.0]]), np.array([0, 0, 1]))
    assert stats.mean.ravel().tolist() == [2.0, 10.0]
    assert stats.var.ravel().tolist() == [1.0, 0.0]
    assert stats.weight.tolist() == [2.0, 1.0]
    assert stats.global_count == 3.0


# ----------------------------------------------------------------------------- adversarial


def test_large_common_offset_float64() -> None:
    # 1e9 + unit noise: a one-pass E[x^2] - E[x]^2 loses ~all 16 digits here (1e18 - 1e18).
    rng = np.random.default_rng(1)
    x = 1e9 + rng.normal(size=(1500, 3))
    y = rng.integers(0, 3, size=1500)
    stats = class_stats(x, y)
    assert_stats_close(stats, fraction_class_stats(x, y, 3), RTOL)


def float32_offset_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = (1e4 + 1e-2 * rng.normal(size=(3000, 3))).astype(np.float32)
    y = rng.integers(0, 2, size=3000)
    return x, y


def test_float32_offset_1e4_noise_1e_2() -> None:
    # float32 in, float64 statistics out: the core accumulates in float64, so the result
    # must be exact to ~1e-12 for the float32 values as given (converted exactly).
    x, y = float32_offset_data()
    stats = class_stats(x, y)
    assert stats.mean.dtype == np.float64 and stats.m2.dtype == np.float64
    assert_stats_close(stats, fraction_class_stats(x, y, 2), RTOL)


def test_numpy_var_is_measurably_worse_than_gaussmle_on_float32_offset() -> None:
    """Documented contrast: numpy's ``X[y == c].var(0)`` accumulates float32 data in float32,
    so on an offset of 1e4 with noise 1e-2 (var ~1e-4, i.e. 8 orders below mean**2) its
    variance is wrong in roughly the 3rd-6th digit, while gaussmle must be exact to 1e-12.
    If this ever stops holding, either numpy changed or the data stopped being adversarial."""
    x, y = float32_offset_data()
    exact = fraction_class_stats(x, y, 2)
    exact_var = exact.m2 / exact.weight[:, None]
    ours = class_stats(x, y).var
    numpy_var = np.stack([x[y == c].var(axis=0) for c in range(2)]).astype(np.float64)
    our_err = np.max(np.abs(ours - exact_var) / exact_var)
    numpy_err = np.max(np.abs(numpy_var - exact_var) / exact_var)
    assert our_err <= RTOL, f"gaussmle var relative error {our_err:.3g}"
    assert numpy_err > 1e-7, f"numpy float32 var unexpectedly accurate ({numpy_err:.3g})"
    assert numpy_err > 1e4 * max(our_err, 1e-16)


def test_features_spanning_1e_minus100_to_1e100() -> None:
    rng = np.random.default_rng(3)
    scales = 10.0 ** np.array([-100, -50, -1, 0, 30, 100])
    x = (1 + rng.random((80, 6))) * scales  # positive, one-signed per column
    x[:, 2] -= 1.5e-1  # one mixed-sign column
    y = rng.integers(0, 3, size=80)
    stats = class_stats(x, y)
    ref = fraction_class_stats(x, y, 3)
    assert_stats_close(stats, ref, RTOL)
    # m2 of the 1e-100 column is ~1e-200: still a normal float64, must not flush to 0.
    assert np.all(stats.m2[:, 0] > 0)


def test_sample_weights_spanning_12_orders_of_magnitude() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 3)) + np.array([0.0, 50.0, -3.0])
    y = rng.integers(0, 3, size=200)
    w = 10.0 ** rng.uniform(-6, 6, size=200)
    stats = class_stats(x, y, sample_weight=w)
    assert_stats_close(stats, fraction_class_stats(x, y, 3, w), RTOL)


def test_weights_and_offset_together() -> None:
    rng = np.random.default_rng(5)
    x = 1e6 + rng.normal(size=(300, 2))
    y = rng.integers(0, 2, size=300)
    w = 10.0 ** rng.uniform(-6, 6, size=300)
    assert_stats_close(class_stats(x, y, sample_weight=w), fraction_class_stats(x, y, 2, w), RTOL)


def test_classes_with_a_single_sample() -> None:
    x = np.array([[1e9 + 0.5, -3.25], [7.0, 1e-300], [2.0, 3.0], [4.0, 5.0]])
    y = np.array([0, 1, 2, 2])
    w = np.array([3.5, 1e-9, 1.0, 1.0])
    for weights in (None, w):
        stats = class_stats(x, y, sample_weight=weights)
        # One sample: its value is the mean, exactly, and the spread is exactly zero.
        np.testing.assert_array_equal(stats.mean[:2], x[:2])
        np.testing.assert_array_equal(stats.m2[:2], 0.0)
        np.testing.assert_array_equal(stats.var[:2], 0.0)
        expected_w = [1.0, 1.0] if weights is None else w[:2]
        np.testing.assert_array_equal(stats.weight[:2], expected_w)
        assert_stats_close(stats, fraction_class_stats(x, y, 3, weights), RTOL)


def test_zero_weight_rows_are_ignored_per_class_but_counted_globally() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(120, 3)) * 5 + 2
    y = rng.integers(0, 3, size=120)
    w = rng.uniform(0.5, 2.0, size=120)
    w[::3] = 0.0
    # Make the zero-weight rows wild: they must not leak into any class statistic.
    x[::3] = 1e12
    stats = class_stats(x, y, sample_weight=w)
    kept = w > 0
    subset = class_stats(x[kept], y[kept], 3, sample_weight=w[kept])
    for name in ("weight", "mean", "m2"):
        assert_within(
            getattr(stats, name),
            getattr(subset, name),
            RTOL * np.abs(getattr(subset, name)),
            name,
        )
    ref = fraction_class_stats(x, y, 3, w)
    assert_stats_close(stats, ref, RTOL)
    # Global statistics are unweighted over every row (they feed var_smoothing).
    assert stats.global_count == 120.0
    assert np.all(stats.global_mean > 1e10)


def test_class_whose_rows_all_have_zero_weight() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    y = np.array([0, 1, 1])
    stats = class_stats(x, y, sample_weight=np.array([0.0, 1.0, 1.0]))
    assert stats.weight[0] == 0.0
    assert np.all(np.isnan(stats.var[0])), "documented: var is NaN for a zero-weight class"
    np.testing.assert_array_equal(stats.mean[1], [4.0, 5.5])
    np.testing.assert_array_equal(stats.var[1], [1.0, 2.25])


def test_absent_classes() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 2)) + 10
    y = rng.choice([0, 2], size=50)
    stats = class_stats(x, y, n_classes=5)
    assert stats.n_classes == 5
    np.testing.assert_array_equal(stats.weight[[1, 3, 4]], 0.0)
    assert np.all(np.isnan(stats.var[[1, 3, 4]]))
    np.testing.assert_array_equal(stats.m2[[1, 3, 4]], 0.0)
    assert_stats_close(stats, fraction_class_stats(x, y, 5), RTOL)
    # Without n_classes the count is max(y) + 1, so class 1 is still present (and empty).
    assert class_stats(x, y).n_classes == 3


def test_huge_identical_values_do_not_overflow() -> None:
    # Sum of the values overflows float64, but mean (1.7e308) and m2 (0) are representable.
    big = 1.7e308
    x = np.full((4, 2), big)
    stats = class_stats(x, np.zeros(4, dtype=np.int64))
    np.testing.assert_array_equal(stats.mean, [[big, big]])
    np.testing.assert_array_equal(stats.m2, [[0.0, 0.0]])
    np.testing.assert_array_equal(stats.global_mean, [big, big])


def test_statistics_that_overflow_raise_value_error() -> None:
    # Finite input whose m2 is ~1e616: documented ValueError rather than inf.
    x = np.array([[1.7e308], [-1.7e308]])
    with pytest.raises(ValueError, match="overflow"):
        class_stats(x, np.array([0, 0]))


def test_zero_rows() -> None:
    x = np.empty((0, 3))
    stats = class_stats(x, np.empty(0, dtype=np.int64), n_classes=2)
    empty = ClassStats.empty(2, 3)
    np.testing.assert_array_equal(stats.weight, empty.weight)
    np.testing.assert_array_equal(stats.m2, empty.m2)
    assert stats.global_count == 0.0
    np.testing.assert_array_equal(stats.global_var, np.zeros(3))
    assert class_stats(x, np.empty(0, dtype=np.int64)).n_classes == 0


def test_label_dtypes_are_equivalent() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 2))
    y = rng.integers(0, 3, size=40)
    base = class_stats(x, y)
    for labels in (y.astype(np.int32), y.astype(np.uint8), y.astype(np.float64), y.tolist()):
        other = class_stats(x, labels)
        np.testing.assert_array_equal(other.mean, base.mean)
        np.testing.assert_array_equal(other.m2, base.m2)


def test_thread_count_does_not_change_a_single_bit() -> None:
    # Documented: "The result is bit-identical for every thread count".
    rng = np.random.default_rng(9)
    x = 1e5 + rng.normal(size=(20_001, 5))
    y = rng.integers(0, 4, size=20_001)
    w = rng.uniform(0, 3, size=20_001)
    base = class_stats(x, y, sample_weight=w, n_threads=1)
    for n_threads in (2, 3, 8, None):
        other = class_stats(x, y, sample_weight=w, n_threads=n_threads)
        for name in ("weight", "mean", "m2", "global_mean", "global_m2"):
            np.testing.assert_array_equal(
                getattr(other, name), getattr(base, name), err_msg=f"{name} n_threads={n_threads}"
            )


def test_many_rows_with_moderate_offset_match_longdouble() -> None:
    rng = np.random.default_rng(10)
    x = 1e5 + rng.normal(size=(20_001, 5))
    y = rng.integers(0, 4, size=20_001)
    w = rng.uniform(0, 3, size=20_001)
    stats = class_stats(x, y, sample_weight=w)
    assert_stats_close(stats, longdouble_class_stats(x, y, 4, w), RTOL)


# ---------------------------------------------------------------------------------- merge


def merged_parts(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None, cuts: np.ndarray
) -> ClassStats:
    n_classes = int(y.max()) + 1
    total = ClassStats.empty(n_classes, x.shape[1])
    for lo, hi in itertools.pairwise(cuts):
        part_w = None if w is None else w[lo:hi]
        total = total + class_stats(x[lo:hi], y[lo:hi], n_classes, sample_weight=part_w)
    return total


def random_cuts(rng: np.random.Generator, n: int) -> np.ndarray:
    # Random cut points, including empty parts and parts that miss some classes.
    return np.sort(np.concatenate([[0, n], rng.integers(0, n, size=rng.integers(1, 8))]))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_merge_of_random_splits_equals_one_pass(seed: int, weighted: bool) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 400
    x = rng.normal(size=(n, 3)) * [1.0, 1e-3, 1e3] + [5.0, -0.5, 2e3]
    y = rng.integers(0, 4, size=n)
    w = 10.0 ** rng.uniform(-4, 4, size=n) if weighted else None
    merged = merged_parts(x, y, w, random_cuts(rng, n))
    whole = class_stats(x, y, 4, sample_weight=w)
    assert_within(merged.weight, whole.weight, MERGE_RTOL * whole.weight, "weight")
    assert_within(merged.mean, whole.mean, MERGE_RTOL * np.abs(whole.mean), "mean")
    assert_within(merged.m2, whole.m2, MERGE_RTOL * whole.m2, "m2")
    assert merged.global_count == whole.global_count
    g_scale = np.abs(x).mean(axis=0)
    assert_within(merged.global_mean, whole.global_mean, MERGE_RTOL * g_scale, "global_mean")
    assert_within(merged.global_m2, whole.global_m2, MERGE_RTOL * whole.global_m2, "global_m2")
    assert_stats_close(merged, fraction_class_stats(x, y, 4, w), RTOL, "merged")


def exact_stats_as_classstats(x: np.ndarray, y: np.ndarray, n_classes: int) -> ClassStats:
    ref = fraction_class_stats(x, y, n_classes)
    mean = np.where(ref.weight[:, None] > 0, ref.mean, 0.0)
    g_mean = ref.global_mean if ref.global_count else np.zeros(x.shape[1])
    return ClassStats(ref.weight, mean, ref.m2, ref.global_count, g_mean, ref.global_m2)


@pytest.mark.parametrize("seed", range(3))
def test_merge_with_huge_offset_is_exact_up_to_the_rounding_of_the_stored_means(
    seed: int,
) -> None:
    """Merging is limited by ClassStats storing each part's mean as a float64: with an offset
    of 1e7 and noise 1e-3 the rounding of a part mean (~eps * 1e7) is not small against the
    difference of the part means, and enters m2 through the between-part term
    ``delta**2 * wa * wb / W``. So: feed the merge the correctly rounded exact statistics of
    each part, and require the result within 1e-12 of the exact whole plus exactly that
    propagated rounding (``reference.merge_rounding_bound``) accumulated over the merge steps.
    """
    rng = np.random.default_rng(200 + seed)
    n = 300
    x = 1e7 + rng.normal(size=(n, 2)) * [1e-3, 1.0]
    y = rng.integers(0, 3, size=n)
    cuts = random_cuts(rng, n)
    total = ClassStats.empty(3, 2)
    propagated = np.zeros((3, 2))
    for lo, hi in itertools.pairwise(cuts):
        part = exact_stats_as_classstats(x[lo:hi], y[lo:hi], 3)
        propagated += merge_rounding_bound(total.weight, total.mean, part.weight, part.mean)
        total = total + part
    ref = fraction_class_stats(x, y, 3)
    assert_within(total.m2, ref.m2, RTOL * ref.m2 + propagated, "merged m2")
    assert_within(total.mean, ref.mean, RTOL * ref.mean_scale, "merged mean")
    np.testing.assert_array_equal(total.weight, ref.weight)


def test_merge_is_symmetric_and_method_equals_operator() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(100, 2)) + 3
    y = rng.integers(0, 2, size=100)
    a = class_stats(x[:37], y[:37], 2)
    b = class_stats(x[37:], y[37:], 2)
    ab, ba, via_method = a + b, b + a, a.merge(b)
    for name in ("weight", "mean", "m2"):
        got, other = getattr(ab, name), getattr(ba, name)
        assert_within(got, other, MERGE_RTOL * np.abs(other), name)
        np.testing.assert_array_equal(getattr(via_method, name), got)


def test_merge_with_empty_is_identity() -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(size=(30, 3)) + 1e3
    y = rng.choice([0, 1, 3], size=30)  # class 2 absent, class 4 absent
    stats = class_stats(x, y, n_classes=5)
    empty = ClassStats.empty(5, 3)
    for merged in (stats + empty, empty + stats):
        for name in ("weight", "mean", "m2", "global_mean", "global_m2"):
            np.testing.assert_array_equal(getattr(merged, name), getattr(stats, name), err_msg=name)
        assert merged.global_count == stats.global_count
    both_empty = empty + empty
    np.testing.assert_array_equal(both_empty.weight, 0.0)
    np.testing.assert_array_equal(both_empty.m2, 0.0)
    assert both_empty.global_count == 0.0


def test_merge_rejects_mismatched_statistics() -> None:
    a = ClassStats.empty(2, 3)
    with pytest.raises(ValueError):
        a + ClassStats.empty(3, 3)
    with pytest.raises(ValueError):
        a + ClassStats.empty(2, 4)
    with pytest.raises(TypeError):
        a.merge("not stats")  # type: ignore[arg-type]


def test_pickle_round_trip() -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=(50, 3))
    y = rng.integers(0, 3, size=50)
    stats = class_stats(x, y, n_classes=4)
    restored = pickle.loads(pickle.dumps(stats))
    assert isinstance(restored, ClassStats)
    for name in ("weight", "mean", "m2", "global_mean", "global_m2", "var"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(stats, name))
        assert getattr(restored, name).dtype == np.float64
    assert restored.global_count == stats.global_count
    # The restored object is fully functional.
    again = restored + class_stats(x, y, n_classes=4)
    np.testing.assert_array_equal(again.weight, 2 * stats.weight)


# --------------------------------------------------------------------------------- errors


def nonfinite_cases() -> list[tuple[str, np.ndarray, int, int]]:
    """(description, X, row, column); (row, column) is the LOGICAL position of the bad value."""
    base = np.arange(24, dtype=np.float64).reshape(6, 4)
    cases = []
    for bad in (np.nan, np.inf, -np.inf):
        c_order = base.copy()
        c_order[3, 1] = bad
        cases.append((f"C {bad}", c_order, 3, 1))
        f_order = np.asfortranarray(c_order)
        cases.append((f"F {bad}", f_order, 3, 1))
        cases.append((f"rows reversed {bad}", c_order[::-1], 2, 1))
        cases.append((f"cols reversed {bad}", c_order[:, ::-1], 3, 2))
        cases.append((f"transposed view {bad}", np.ascontiguousarray(c_order.T).T, 3, 1))
        cases.append((f"float32 {bad}", c_order.astype(np.float32), 3, 1))
    return cases


@pytest.mark.parametrize(("desc", "x", "row", "col"), nonfinite_cases())
def test_nonfinite_x_names_row_and_column(desc: str, x: np.ndarray, row: int, col: int) -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError) as info:
        class_stats(x, y)
    message = str(info.value)
    assert re.search(rf"\brow {row}\b", message), f"{desc}: {message}"
    assert re.search(rf"\bcolumn {col}\b", message), f"{desc}: {message}"


@pytest.mark.parametrize(
    ("labels", "n_classes"),
    [([0, 1, 2], 2), ([0, -1, 1], 2), ([0, -1, 1], None), ([0, 5, 1], 3), ([-3, -2, -4], None)],
)
def test_labels_out_of_range(labels: list[int], n_classes: int | None) -> None:
    x = np.ones((3, 2))
    with pytest.raises(ValueError):
        class_stats(x, np.array(labels), n_classes)


@pytest.mark.parametrize("bad", [-1.0, -1e-300, np.nan, np.inf, -np.inf])
def test_bad_weights(bad: float) -> None:
    x = np.ones((3, 2))
    w = np.array([1.0, bad, 1.0])
    with pytest.raises(ValueError, match="row 1"):
        class_stats(x, np.array([0, 1, 0]), sample_weight=w)


def test_mismatched_lengths_and_dimensions() -> None:
    x = np.ones((4, 2))
    with pytest.raises(ValueError):
        class_stats(x, np.array([0, 1, 0]))
    with pytest.raises(ValueError):
        class_stats(x, np.array([0, 1, 0, 1]), sample_weight=np.ones(5))
    with pytest.raises(ValueError):
        class_stats(np.ones(4), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError):
        class_stats(x, np.array([0, 1, 0, 1]), n_classes=-1)


def test_non_numeric_input_is_type_error() -> None:
    y = np.array([0, 1])
    with pytest.raises(TypeError):
        class_stats(np.ones((2, 2), dtype=np.complex128), y)
    with pytest.raises(TypeError):
        class_stats(np.array([["a", "b"], ["c", "d"]]), y)
    with pytest.raises(TypeError):
        class_stats(np.ones((2, 2)), np.array(["a", "b"]))
    with pytest.raises(TypeError):
        class_stats(np.ones((2, 2)), y, sample_weight=np.array(["1", "2"]))


def test_core_module_exposes_documented_helpers() -> None:
    assert gaussmle.default_n_threads() >= 1
    assert gaussmle.simd_level() in ("scalar", "avx2", "avx512")


# ------------------------------------------------------------- immutability, validation


def small_stats() -> ClassStats:
    return class_stats(np.array([[1.0], [3.0], [10.0]]), np.array([0, 0, 1]))


@pytest.mark.parametrize(
    "field", ["weight", "mean", "m2", "global_mean", "global_m2", "mean_lo", "global_mean_lo"]
)
def test_class_stats_arrays_are_read_only(field: str) -> None:
    stats = small_stats()
    values = getattr(stats, field)
    before = values.copy()
    with pytest.raises(ValueError, match="read-only"):
        values[...] = 5.0
    np.testing.assert_array_equal(getattr(stats, field), before)
    merged = stats + stats
    with pytest.raises(ValueError, match="read-only"):
        getattr(merged, field)[...] = 5.0


def test_class_stats_copies_a_writeable_array_and_keeps_a_read_only_one() -> None:
    stats = small_stats()
    weight = np.array([2.0, 1.0])
    built = ClassStats(weight, stats.mean, stats.m2, 3.0, stats.global_mean, stats.global_m2)
    weight[0] = 99.0  # the caller's array: not the stored one
    np.testing.assert_array_equal(built.weight, [2.0, 1.0])
    assert built.mean is stats.mean  # read-only float64: stored without a copy
    again = pickle.loads(pickle.dumps(built))
    assert not again.weight.flags.writeable
    np.testing.assert_array_equal(again.m2, [[2.0], [0.0]])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weight": [-1.0, 1.0]}, "statistics weight must be finite and >= 0; got -1"),
        ({"weight": [np.inf, 1.0]}, "statistics weight must be finite and >= 0; got inf"),
        (
            {"mean": [[2.0], [np.nan]]},
            "statistics mean must be finite; got NaN for group 1, feature 0",
        ),
        (
            {"m2": [[-1.0], [0.0]]},
            "statistics m2 must be finite and >= 0; got -1 for group 0, feature 0",
        ),
        (
            {"mean_lo": [[0.0], [np.inf]]},
            "statistics mean_lo must be finite; got inf for group 1, feature 0",
        ),
        (
            {"weight": [0.0, 1.0], "m2": [[5.0], [0.0]]},
            "statistics m2 must be 0 where weight is 0; got 5 for group 0, feature 0",
        ),
        ({"global_count": -3.0}, "global_count must be finite and >= 0; got -3.0"),
        (
            {"global_m2": [np.nan]},
            r"ClassStats global statistics .*: invalid parameter: statistics m2 must be finite "
            "and >= 0; got NaN for group 0, feature 0",
        ),
        ({"global_mean": [0.0, 1.0]}, r"global_mean has shape \(2,\); expected \(1,\)"),
    ],
)
def test_invalid_class_stats_are_rejected_on_construction(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(small_stats(), **changes)


def test_nan_moments_of_a_class_without_weight_are_stored_as_zero() -> None:
    # Statistics aggregated elsewhere (SQL: SUM(x) / COUNT(*)): class 1 has no rows, so its
    # mean and m2 are 0 / 0 = NaN. Before: "statistics mean/m2 must be finite".
    weight = np.array([3.0, 0.0])
    with np.errstate(invalid="ignore"):
        mean = np.array([[3.0, 6.0], [0.0, 0.0]]) / weight[:, None]
        m2 = np.array([[2.0, 2.0], [0.0, 0.0]]) * (mean / mean)  # NaN for class 1
    stats = ClassStats(weight, mean, m2, 3.0, [1.0, 2.0], [2.0, 2.0], mean_lo=mean * 0)
    assert stats.mean.tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert stats.m2.tolist() == [[2.0, 2.0], [0.0, 0.0]]
    assert stats.mean_lo is not None and stats.mean_lo.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert not stats.mean.flags.writeable and not stats.m2.flags.writeable
    model = gaussmle.GaussianNB.from_class_stats(stats, [0, 1], var_smoothing=0.5)
    assert model.theta_.tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert model.class_prior_.tolist() == [1.0, 0.0]
    # epsilon_ = 0.5 * max(global m2 / count) = 0.5 * 2/3; var_ = m2 / w + epsilon_.
    eps = 0.5 * (2.0 / 3.0)
    assert model.var_.tolist() == [[2.0 / 3.0 + eps, 2.0 / 3.0 + eps], [eps, eps]]
    # Merging keeps them out: the empty class takes the other side's moments exactly.
    other = class_stats(np.array([[5.0, 7.0]]), np.array([1]), 2)
    merged = stats + other
    assert merged.mean[1].tolist() == [5.0, 7.0] and merged.m2[1].tolist() == [0.0, 0.0]


def test_nan_moments_are_rejected_where_the_weight_is_positive() -> None:
    with pytest.raises(ValueError, match=r"statistics mean must be finite; got NaN for group 0"):
        ClassStats([3.0, 0.0], [[np.nan], [np.nan]], [[0.0], [0.0]], 3.0, [1.0], [0.0])
    with pytest.raises(ValueError, match=r"m2 must be finite and >= 0; got NaN for group 1"):
        ClassStats([3.0, 1.0], [[1.0], [2.0]], [[0.0], [np.nan]], 4.0, [1.0], [0.0])
    # A number (not NaN) as m2 of an empty class is still inconsistent: it is not zeroed.
    with pytest.raises(ValueError, match="m2 must be 0 where weight is 0; got 5 for group 1"):
        ClassStats([3.0, 0.0], [[1.0], [np.nan]], [[0.0], [5.0]], 3.0, [1.0], [0.0])


def test_a_read_only_view_of_a_writeable_array_is_copied() -> None:
    # Before: the view was stored as it was, and writing to its base changed the statistics
    # past validation (here m2 -1, so var_ -0.5).
    m2_base = np.ones((2, 2))
    m2 = m2_base.view()
    m2.flags.writeable = False
    stats = ClassStats([2.0, 1.0], np.ones((2, 2)), m2, 3.0, np.ones(2), np.ones(2))
    assert stats.m2 is not m2
    m2_base[0, 0] = -1.0
    assert stats.m2.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    model = gaussmle.GaussianNB.from_class_stats(stats, [0, 1], var_smoothing=0.0)
    assert model.var_.tolist() == [[0.5, 0.5], [1.0, 1.0]]


def test_read_only_arrays_are_kept_only_when_nothing_can_change_them() -> None:
    stats = small_stats()
    owner = np.array([2.0, 1.0])
    owner.flags.writeable = False  # its owner can set the flag back: copied
    over_bytes = np.frombuffer(np.array([[1.0], [0.0]]).tobytes())  # bytes: immutable
    over_bytes = over_bytes.reshape(2, 1)
    view = stats.mean[:, :]  # a view of another ClassStats's array
    built = ClassStats(owner, view, over_bytes, 3.0, stats.global_mean, stats.global_m2)
    assert built.weight is not owner
    assert built.mean is view
    assert built.m2 is over_bytes
    assert built.global_mean is stats.global_mean
    owner.flags.writeable = True
    owner[0] = -7.0
    assert built.weight.tolist() == [2.0, 1.0]


class Tagged(ClassStats):
    """A user's subclass (module level, so that pickle can find it)."""


def test_a_subclass_of_class_stats_pickles_as_itself() -> None:
    stats = small_stats()
    tagged = Tagged(stats.weight, stats.mean, stats.m2, 3.0, stats.global_mean, stats.global_m2)
    again = pickle.loads(pickle.dumps(tagged))
    assert type(again) is Tagged
    np.testing.assert_array_equal(again.mean, stats.mean)


def test_zero_weight_m2_is_not_dropped_silently_by_a_merge() -> None:
    # Before: ClassStats(weight=[0, ...], m2=[[5], ...]) merged and the 5 vanished.
    stats = small_stats()
    with pytest.raises(ValueError, match="m2 must be 0 where weight is 0"):
        ClassStats([0.0, 1.0], stats.mean, [[5.0], [0.0]], 3.0, stats.global_mean, stats.global_m2)


# ---------------------------------------------------------------------------- label messages


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([-5, -3], "y must hold non-negative class codes 0..n_classes-1; got -5 at row 0"),
        ([0, -5], "y must hold non-negative class codes 0..n_classes-1; got -5 at row 1"),
        (
            np.array([0, 2**63 - 1]),
            "y holds the class code 9223372036854775807 at row 1; n_classes (max(y) + 1 when "
            "not given) must be below 2**63",
        ),
        ([0, 1.5], "y must hold integral class codes 0..n_classes-1; got 1.5 at row 1"),
        ([0.0, np.nan], "y must hold integral class codes 0..n_classes-1; got nan at row 1"),
        ([np.inf, 0.0], "y must hold integral class codes 0..n_classes-1; got inf at row 0"),
    ],
)
def test_bad_labels_without_n_classes_name_the_label(labels: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        class_stats(np.zeros((2, 1)), labels)


def test_integral_float_labels_are_class_codes() -> None:
    stats = class_stats(np.array([[1.0], [3.0], [10.0]]), np.array([0.0, 2.0, 2.0]))
    np.testing.assert_array_equal(stats.weight, [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(stats.mean, [[1.0], [0.0], [6.5]])


def test_constructor_copies_cannot_be_made_writeable_again() -> None:
    # Final review: the constructor's copies owned their data, so `flags.writeable = True`
    # succeeded and a changed m2 (var -0.5) reached from_class_stats unchecked. The copies now
    # sit on immutable bytes, like the core's own outputs.
    built = ClassStats(
        np.array([2.0, 2.0]),
        np.array([[2.0], [11.0]]),
        np.array([[2.0], [2.0]]),
        4,
        np.array([6.5]),
        np.array([100.0]),
    )
    fitted = class_stats(np.array([[1.0], [3.0], [10.0], [12.0]]), np.array([0, 0, 1, 1]))
    for stats in (built, fitted, ClassStats.empty(2, 1)):
        for field in ("weight", "mean", "m2", "global_mean", "global_m2"):
            with pytest.raises(ValueError):
                getattr(stats, field).flags.writeable = True
    np.testing.assert_array_equal(built.var, [[1.0], [1.0]])
