"""Scoring (jll, predict, log_proba, proba) against long double references, plus the
out= buffer and error contracts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import gaussmle
import numpy as np
import pytest
from gaussmle import (
    GaussianScorer,
    joint_log_likelihood,
    make_scorer,
    predict,
    predict_log_proba,
    predict_proba,
)
from reference import LD, assert_predict_is_argmax, assert_scores_close, reference_jll
from scipy.stats import norm

FLOAT_SCORERS: dict[str, Callable[..., np.ndarray]] = {
    "jll": joint_log_likelihood,
    "log_proba": predict_log_proba,
    "proba": predict_proba,
}
ALL_SCORERS: dict[str, Callable[..., np.ndarray]] = {**FLOAT_SCORERS, "predict": predict}


def random_model(
    rng: np.random.Generator, n_classes: int, n_features: int, spread: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = rng.normal(size=(n_classes, n_features)) * spread
    var = rng.uniform(0.2, 4.0, size=(n_classes, n_features))
    log_prior = np.log(rng.dirichlet(np.ones(n_classes)))
    return mean, var, log_prior


def check_all_scores(x: np.ndarray, mean: Any, var: Any, log_prior: Any, **kw: Any) -> None:
    """Every float scorer matches the reference; predict is an argmax of the reference."""
    ref = reference_jll(x, mean, var, log_prior)
    for kind, fn in FLOAT_SCORERS.items():
        assert_scores_close(fn(x, mean, var, log_prior, **kw), ref, kind)
    assert_predict_is_argmax(predict(x, mean, var, log_prior), ref)


# ------------------------------------------------------------------------------ exactness


def test_moderate_data_matches_reference_and_scipy() -> None:
    rng = np.random.default_rng(0)
    mean, var, log_prior = random_model(rng, 4, 6)
    x = rng.normal(size=(500, 6)) * 3
    check_all_scores(x, mean, var, log_prior)
    # Independent cross-check with scipy, which is accurate to a few ulps in this range
    # (|x - mean| / sigma < ~20; it is not far out in the tails, so only here).
    scipy_jll = log_prior + np.stack(
        [norm.logpdf(x, mean[c], np.sqrt(var[c])).sum(axis=1) for c in range(4)], axis=1
    )
    got = joint_log_likelihood(x, mean, var, log_prior)
    np.testing.assert_allclose(got, scipy_jll, rtol=1e-12, atol=1e-11)


def test_queries_1e4_sigma_from_every_mean_with_large_means() -> None:
    """x - mean = 1e4 sigma with mean ~1e6 and sigma ~1e-2: the expanded form
    x**2/2v - x*mean/v + mean**2/2v cancels terms of ~5e15 down to ~5e7 (1e-8 error); the
    documented subtract-first form must stay at ~1e-16 of the term magnitude."""
    rng = np.random.default_rng(1)
    n_classes, d = 3, 4
    mean = 1e6 + rng.normal(size=(n_classes, d))
    sigma = 1e-2 * rng.uniform(0.5, 2.0, size=(n_classes, d))
    var = sigma**2
    log_prior = np.log(np.full(n_classes, 1 / 3))
    # Every query is >= 1e4 sigma from every class mean in every feature.
    offsets = (
        1e4
        * sigma.max()
        * rng.choice([-1.0, 1.0], size=(50, d))
        * rng.uniform(1.0, 3.0, size=(50, d))
    )
    x = mean[rng.integers(0, n_classes, size=50)] + offsets
    assert np.all(np.abs(x[:, None, :] - mean[None]) >= 1e4 * sigma.max() - 2)
    check_all_scores(x, mean, var, log_prior)


def test_features_spanning_1e_minus100_to_1e100() -> None:
    rng = np.random.default_rng(2)
    scales = 10.0 ** np.array([-100, -40, 0, 40, 100])
    mean = rng.normal(size=(3, 5)) * scales
    var = rng.uniform(0.5, 2.0, size=(3, 5)) * scales**2
    x = rng.normal(size=(200, 5)) * scales * 2
    check_all_scores(x, mean, var, np.log([0.2, 0.3, 0.5]))


def test_float32_input_gives_float32_output_within_a_few_ulps() -> None:
    rng = np.random.default_rng(3)
    mean, var, log_prior = random_model(rng, 3, 5)
    x = (rng.normal(size=(300, 5)) * 4).astype(np.float32)
    ref = reference_jll(x, mean, var, log_prior)  # of the float32 values, converted exactly
    for kind, fn in FLOAT_SCORERS.items():
        got = fn(x, mean, var, log_prior)
        assert got.dtype == np.float32, kind
        assert_scores_close(got, ref, kind)
    assert_predict_is_argmax(predict(x, mean, var, log_prior), ref)


def test_float32_offset_data_scored_in_float64() -> None:
    # float32 input with offset 1e4 / noise 1e-2, float64 out=: accumulated in float64, so
    # float64-level accuracy (a float32 accumulation would be off by ~1e-3 relative).
    rng = np.random.default_rng(4)
    x = (1e4 + 1e-2 * rng.normal(size=(400, 3))).astype(np.float32)
    mean = 1e4 + 1e-2 * rng.normal(size=(2, 3))
    var = (1e-2 * rng.uniform(0.5, 2, size=(2, 3))) ** 2
    log_prior = np.log([0.4, 0.6])
    ref = reference_jll(x, mean, var, log_prior)
    for kind, fn in FLOAT_SCORERS.items():
        out = np.empty((400, 2), dtype=np.float64)
        got = fn(x, mean, var, log_prior, out=out)
        assert got is out
        assert_scores_close(got, ref, kind)


def test_float64_input_into_float32_out() -> None:
    rng = np.random.default_rng(5)
    mean, var, log_prior = random_model(rng, 3, 4)
    x = rng.normal(size=(100, 4)) * 3
    ref = reference_jll(x, mean, var, log_prior)
    for kind, fn in FLOAT_SCORERS.items():
        out = np.empty((100, 3), dtype=np.float32)
        assert fn(x, mean, var, log_prior, out=out) is out
        assert_scores_close(out, ref, kind)


def test_integer_input_scores_as_float64() -> None:
    mean = np.array([[0.0, 1.0], [3.0, -2.0]])
    var = np.array([[1.0, 2.0], [0.5, 1.0]])
    log_prior = np.log([0.5, 0.5])
    x = np.array([[0, 1], [3, -2], [7, 7]], dtype=np.int32)
    got = joint_log_likelihood(x, mean, var, log_prior)
    assert got.dtype == np.float64
    assert_scores_close(got, reference_jll(x, mean, var, log_prior), "jll")


def test_thread_count_does_not_change_scores() -> None:
    rng = np.random.default_rng(6)
    mean, var, log_prior = random_model(rng, 5, 7)
    x = rng.normal(size=(10_001, 7)) * 3
    for kind, fn in ALL_SCORERS.items():
        base = fn(x, mean, var, log_prior, n_threads=1)
        for n_threads in (2, 3, None):
            np.testing.assert_array_equal(
                fn(x, mean, var, log_prior, n_threads=n_threads), base, err_msg=kind
            )


def test_scorer_object_matches_functions() -> None:
    rng = np.random.default_rng(7)
    mean, var, log_prior = random_model(rng, 3, 2)
    x = rng.normal(size=(20, 2))
    scorer = make_scorer(mean, var, log_prior)
    assert isinstance(scorer, GaussianScorer)
    assert scorer.n_classes == 3 and scorer.n_features == 2
    np.testing.assert_array_equal(
        scorer.joint_log_likelihood(x), joint_log_likelihood(x, mean, var, log_prior)
    )
    np.testing.assert_array_equal(scorer.proba(x), predict_proba(x, mean, var, log_prior))
    np.testing.assert_array_equal(scorer.log_proba(x), predict_log_proba(x, mean, var, log_prior))
    np.testing.assert_array_equal(scorer.predict(x), predict(x, mean, var, log_prior))


# ---------------------------------------------------------------------- posterior contracts


def test_rows_normalise() -> None:
    rng = np.random.default_rng(8)
    mean, var, log_prior = random_model(rng, 6, 3, spread=10)
    x = rng.normal(size=(1000, 3)) * 15
    log_proba = predict_log_proba(x, mean, var, log_prior)
    proba = predict_proba(x, mean, var, log_prior)
    lse = np.log(np.exp(log_proba.astype(LD)).sum(axis=1))
    assert np.max(np.abs(lse)) <= 1e-12
    assert np.max(np.abs(proba.sum(axis=1) - 1)) <= 1e-12
    assert np.all((proba >= 0) & (proba <= 1))
    assert np.all(log_proba <= 0)


def test_posteriors_when_every_jll_is_around_minus_1e300() -> None:
    """Tiny variances make every jll -3e298 .. -6e300: exp(jll) underflows to 0 for every
    class, so only a max-shifted log-sum-exp gives finite, normalised posteriors. At this
    magnitude float64 cannot resolve O(1) differences, so the rows are built to have either
    a bit-exact tie (symmetric classes 0 and 1) or gaps of ~1e300 (probability exactly 0/1)."""
    mean = np.array([[-1.0], [1.0], [3.0]])
    var = np.array([[1e-300], [1e-300], [4e-300]])
    log_prior = np.log([0.25, 0.25, 0.5])
    x = np.array([[0.0], [2.5]])
    ref = reference_jll(x, mean, var, log_prior)
    assert np.all(ref.jll < -1e298)
    log_proba = predict_log_proba(x, mean, var, log_prior)
    proba = predict_proba(x, mean, var, log_prior)
    # Row 0: classes 0 and 1 tie exactly (jll -5e299), class 2 is 6e299 behind.
    # Row 1: class 2 (jll -3e298) beats the others by more than 1e300.
    np.testing.assert_array_equal(proba, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(log_proba[0, :2], -np.log(2), rtol=1e-15)
    assert log_proba[1, 2] == 0.0
    assert np.all(log_proba < -1e298, where=proba == 0)
    assert_scores_close(log_proba, ref, "log_proba")
    assert_scores_close(proba, ref, "proba")
    assert predict(x, mean, var, log_prior).tolist() == [0, 2]


def test_exact_tie_far_from_both_means_splits_probability_in_half() -> None:
    # jll of both classes ~ -5e299 and bit-identical by symmetry: p = 1/2 exactly.
    mean = np.array([[-1.0, 0.0], [1.0, 0.0]])
    var = np.full((2, 2), 1e-300)
    log_prior = np.log([0.5, 0.5])
    x = np.zeros((3, 2))
    assert np.all(reference_jll(x, mean, var, log_prior).jll < -1e299)
    np.testing.assert_array_equal(predict_proba(x, mean, var, log_prior), 0.5)
    np.testing.assert_allclose(
        predict_log_proba(x, mean, var, log_prior), -np.log(2), rtol=1e-15, atol=0
    )
    # First class on ties.
    np.testing.assert_array_equal(predict(x, mean, var, log_prior), 0)


def test_minus_inf_log_prior_class_has_probability_exactly_zero() -> None:
    mean = np.array([[0.0], [0.0], [5.0]])
    var = np.array([[1.0], [0.01], [1.0]])
    log_prior = np.array([np.log(0.5), -np.inf, np.log(0.5)])
    # x = 0 is the mode of the impossible class 1, which is also the highest density there.
    x = np.array([[0.0], [0.1], [4.0], [-3.0]])
    proba = predict_proba(x, mean, var, log_prior)
    log_proba = predict_log_proba(x, mean, var, log_prior)
    jll = joint_log_likelihood(x, mean, var, log_prior)
    np.testing.assert_array_equal(proba[:, 1], 0.0)
    np.testing.assert_array_equal(log_proba[:, 1], -np.inf)
    np.testing.assert_array_equal(jll[:, 1], -np.inf)
    assert not np.any(predict(x, mean, var, log_prior) == 1)
    ref = reference_jll(x, mean, var, log_prior)
    for kind, got in (("jll", jll), ("log_proba", log_proba), ("proba", proba)):
        assert_scores_close(got, ref, kind)


def test_predict_first_class_on_exact_ties() -> None:
    # Classes 0 and 2 are identical (bit-identical jll); class 1 is identical to class 3.
    mean = np.array([[0.0, 0.0], [4.0, 4.0], [0.0, 0.0], [4.0, 4.0]])
    var = np.ones((4, 2))
    log_prior = np.log(np.full(4, 0.25))
    x = np.array([[0.1, -0.2], [4.0, 3.5], [2.0, 2.0], [-50.0, 1.0], [60.0, 60.0]])
    # Row 2 is equidistant from all four: jll tie for all, so class 0.
    assert predict(x, mean, var, log_prior).tolist() == [0, 1, 0, 0, 1]
    jll = joint_log_likelihood(x, mean, var, log_prior)
    np.testing.assert_array_equal(jll[:, 0], jll[:, 2])
    np.testing.assert_array_equal(jll[:, 1], jll[:, 3])


def test_predict_agrees_with_argmax_of_jll_on_random_data() -> None:
    rng = np.random.default_rng(9)
    mean, var, log_prior = random_model(rng, 7, 5)
    x = rng.normal(size=(3000, 5)) * 4
    labels = predict(x, mean, var, log_prior)
    assert_predict_is_argmax(labels, reference_jll(x, mean, var, log_prior))
    np.testing.assert_array_equal(
        labels, np.argmax(joint_log_likelihood(x, mean, var, log_prior), axis=1)
    )


def test_zero_rows() -> None:
    mean, var, log_prior = np.zeros((3, 2)), np.ones((3, 2)), np.log(np.full(3, 1 / 3))
    x = np.empty((0, 2))
    for kind, fn in FLOAT_SCORERS.items():
        got = fn(x, mean, var, log_prior)
        assert got.shape == (0, 3), kind
    assert predict(x, mean, var, log_prior).shape == (0,)


# -------------------------------------------------------------------------------- out=


def out_buffers(shape: tuple[int, int], dtype: type) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (view to pass as out=, the whole allocation it lives in)."""
    n, c = shape
    c_buf = np.full(shape, np.nan, dtype=dtype)
    f_buf = np.full(shape, np.nan, dtype=dtype, order="F")
    big = np.full((2 * n + 1, 3 * c + 2), np.nan, dtype=dtype)
    rev = np.full(shape, np.nan, dtype=dtype)
    return {
        "C": (c_buf, c_buf),
        "F": (f_buf, f_buf),
        "strided": (big[1::2, 2::3], big),
        "negative strides": (rev[::-1, ::-1], rev),
    }


@pytest.mark.parametrize("kind", list(FLOAT_SCORERS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_out_buffers_are_filled_and_returned(kind: str, dtype: type) -> None:
    rng = np.random.default_rng(10)
    mean, var, log_prior = random_model(rng, 3, 4)
    x = rng.normal(size=(25, 4))
    ref = reference_jll(x, mean, var, log_prior)
    for name, (view, whole) in out_buffers((25, 3), dtype).items():
        result = FLOAT_SCORERS[kind](x, mean, var, log_prior, out=view)
        assert result is view, name
        assert np.shares_memory(result, whole)
        assert_scores_close(view, ref, kind, what=f"out={name}: ")
        # Every output is finite, so the NaN sentinels show exactly what was written:
        # all of the view and nothing else of the allocation.
        assert not np.any(np.isnan(view)), name
        assert np.count_nonzero(~np.isnan(whole)) == view.size, name


def test_predict_out_buffers() -> None:
    rng = np.random.default_rng(11)
    mean, var, log_prior = random_model(rng, 3, 2)
    x = rng.normal(size=(30, 2)) * 3
    expected = predict(x, mean, var, log_prior)
    contiguous = np.full(30, -7, dtype=np.int64)
    big = np.full(90, -7, dtype=np.int64)
    for out in (contiguous, big[::3], big[::-3]):
        assert predict(x, mean, var, log_prior, out=out) is out
        np.testing.assert_array_equal(out, expected)
    assert np.count_nonzero(big == -7) == 30  # the skipped elements were not written


@pytest.mark.parametrize("kind", list(ALL_SCORERS))
def test_bad_out_buffers_raise(kind: str) -> None:
    mean, var, log_prior = np.zeros((3, 2)), np.ones((3, 2)), np.log(np.full(3, 1 / 3))
    x = np.zeros((5, 2))
    fn = ALL_SCORERS[kind]
    good_shape = (5,) if kind == "predict" else (5, 3)
    good_dtype = np.int64 if kind == "predict" else np.float64
    readonly = np.zeros(good_shape, dtype=good_dtype)
    readonly.flags.writeable = False
    if kind == "predict":
        bad_shapes = [(4,), (6,), (5, 1), (1, 5)]
        bad_dtypes = [np.float64, np.int32, np.uint64]
    else:
        bad_shapes = [(4, 3), (5, 2), (3, 5), (5, 3, 1), (15,)]
        bad_dtypes = [np.int64, np.float16, np.complex128]
    bad_outs: dict[str, Any] = {f"shape {s}": np.zeros(s, dtype=good_dtype) for s in bad_shapes}
    bad_outs |= {f"dtype {d.__name__}": np.zeros(good_shape, dtype=d) for d in bad_dtypes}
    bad_outs["read-only"] = readonly
    bad_outs["list"] = np.zeros(good_shape).tolist()
    for name, out in bad_outs.items():
        with pytest.raises((ValueError, TypeError)):
            fn(x, mean, var, log_prior, out=out)
            pytest.fail(f"{kind}: out={name} was accepted")


def test_out_aliasing_the_input_is_rejected_or_correct() -> None:
    # out overlapping X: either refused (ValueError/TypeError), or the result equals the
    # non-aliased computation (the input may not be read after being overwritten).
    rng = np.random.default_rng(12)
    mean, var, log_prior = random_model(rng, 3, 3)
    x = rng.normal(size=(40, 3))
    expected = joint_log_likelihood(x, mean, var, log_prior)
    try:
        got = joint_log_likelihood(x, mean, var, log_prior, out=x)
    except (ValueError, TypeError):
        return
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", list(ALL_SCORERS))
@pytest.mark.parametrize("bad", [0.0, -1.0, -0.0, np.nan, np.inf, -np.inf])
def test_bad_variance_raises_value_error(kind: str, bad: float) -> None:
    var = np.ones((2, 3))
    var[1, 2] = bad
    with pytest.raises(ValueError, match=r"class 1, feature 2|variance"):
        ALL_SCORERS[kind](np.zeros((4, 3)), np.zeros((2, 3)), var, np.log([0.5, 0.5]))
    with pytest.raises(ValueError):
        GaussianScorer(np.zeros((2, 3)), var, np.log([0.5, 0.5]))


@pytest.mark.parametrize("kind", list(ALL_SCORERS))
def test_bad_mean_or_prior_raises_value_error(kind: str) -> None:
    fn = ALL_SCORERS[kind]
    x, var, log_prior = np.zeros((4, 2)), np.ones((2, 2)), np.log([0.5, 0.5])
    for bad in (np.nan, np.inf):
        mean = np.zeros((2, 2))
        mean[0, 1] = bad
        with pytest.raises(ValueError):
            fn(x, mean, var, log_prior)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError):
            fn(x, np.zeros((2, 2)), var, np.array([0.0, bad]))
    # Another rank is a ValueError naming the parameter, as for X (it was a TypeError).
    mean = np.zeros((2, 2))
    for args, name in (
        ((x, mean[0], var, log_prior), "mean"),
        ((x, mean, var[None], log_prior), "var"),
        ((x, mean, var, log_prior[None]), "log_prior"),
    ):
        with pytest.raises(ValueError, match=f"^{name} must be a"):
            fn(*args)


def scoring_nonfinite_cases() -> list[tuple[str, np.ndarray, int, int]]:
    base = np.linspace(-1, 1, 20).reshape(5, 4)
    cases = []
    for bad in (np.nan, np.inf, -np.inf):
        x = base.copy()
        x[2, 3] = bad
        cases += [
            (f"C {bad}", x, 2, 3),
            (f"F {bad}", np.asfortranarray(x), 2, 3),
            (f"rows reversed {bad}", x[::-1], 2, 3),
            (f"cols reversed {bad}", x[:, ::-1], 2, 0),
            (f"float32 {bad}", x.astype(np.float32), 2, 3),
            (f"row slice {bad}", x[1:], 1, 3),
        ]
    return cases


@pytest.mark.parametrize("kind", list(ALL_SCORERS))
@pytest.mark.parametrize(("desc", "x", "row", "col"), scoring_nonfinite_cases())
def test_nonfinite_x_names_row_and_column(
    kind: str, desc: str, x: np.ndarray, row: int, col: int
) -> None:
    mean, var, log_prior = np.zeros((2, 4)), np.ones((2, 4)), np.log([0.5, 0.5])
    with pytest.raises(ValueError) as info:
        ALL_SCORERS[kind](x, mean, var, log_prior)
    message = str(info.value)
    assert re.search(rf"\brow {row}\b", message), f"{kind} {desc}: {message}"
    assert re.search(rf"\bcolumn {col}\b", message), f"{kind} {desc}: {message}"


@pytest.mark.parametrize("kind", list(ALL_SCORERS))
def test_shape_mismatches_raise_value_error(kind: str) -> None:
    fn = ALL_SCORERS[kind]
    mean, var, log_prior = np.zeros((3, 2)), np.ones((3, 2)), np.log(np.full(3, 1 / 3))
    with pytest.raises(ValueError):
        fn(np.zeros((4, 3)), mean, var, log_prior)  # wrong n_features
    with pytest.raises(ValueError):
        fn(np.zeros(4), mean, var, log_prior)  # 1-D X
    with pytest.raises(ValueError):
        fn(np.zeros((4, 2)), mean, np.ones((3, 3)), log_prior)
    with pytest.raises(ValueError):
        fn(np.zeros((4, 2)), mean, var, np.zeros(2))
    with pytest.raises(ValueError):
        fn(np.zeros((4, 2)), mean, np.ones((2, 2)), log_prior)


@pytest.mark.parametrize("kind", list(ALL_SCORERS))
def test_non_numeric_x_is_type_error(kind: str) -> None:
    mean, var, log_prior = np.zeros((2, 2)), np.ones((2, 2)), np.log([0.5, 0.5])
    with pytest.raises(TypeError):
        ALL_SCORERS[kind](np.zeros((3, 2), dtype=np.complex64), mean, var, log_prior)


@pytest.mark.parametrize("name", ["mean", "var", "log_prior"])
def test_complex_parameters_are_rejected(name: str) -> None:
    # A complex mean/var/log_prior must not be silently truncated to its real part
    # (X of complex dtype is a TypeError, so the parameters should be too).
    params = {"mean": np.zeros((2, 2)), "var": np.ones((2, 2)), "log_prior": np.log([0.5, 0.5])}
    params[name] = params[name] + 1j
    with pytest.raises((TypeError, ValueError)):
        joint_log_likelihood(np.zeros((3, 2)), **params)
    with pytest.raises((TypeError, ValueError)):
        make_scorer(**params)


@pytest.mark.parametrize("n_threads", [-1, -8])
def test_negative_n_threads_is_value_or_type_error(n_threads: int) -> None:
    # sklearn users write n_jobs=-1; the core must answer with a clean ValueError/TypeError
    # (not e.g. OverflowError from an unsigned conversion).
    mean, var, log_prior = np.zeros((2, 2)), np.ones((2, 2)), np.log([0.5, 0.5])
    x = np.zeros((3, 2))
    for fn in ALL_SCORERS.values():
        try:
            fn(x, mean, var, log_prior, n_threads=n_threads)
        except (ValueError, TypeError):
            continue
        except BaseException as exc:
            pytest.fail(f"{fn.__name__}(n_threads={n_threads}) raised {type(exc).__name__}: {exc}")
    try:
        gaussmle.class_stats(x, np.array([0, 1, 0]), n_threads=n_threads)
    except (ValueError, TypeError):
        pass
    except BaseException as exc:
        pytest.fail(f"class_stats(n_threads={n_threads}) raised {type(exc).__name__}: {exc}")


# ------------------------------------------- posteriors against exact decimal references

_PI = "3.14159265358979323846264338327950288419716939937510582097494459"


def decimal_log_proba(
    x: Any, mean: Any, var: Any, log_prior: Any, digits: int = 60
) -> list[list[Any]]:
    """Exact (`digits`-digit) log posteriors: every float is converted exactly to Decimal.
    (pi has 63 digits, enough for the differences of classes with equal variances.)"""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = digits
        two_pi = 2 * Decimal(_PI)
        out = []
        for row in np.asarray(x, dtype=np.float64):
            jll = []
            for mu, v, lp in zip(
                np.asarray(mean), np.asarray(var), np.asarray(log_prior), strict=True
            ):
                terms = (
                    (Decimal(float(xi)) - Decimal(float(m))) ** 2 / (2 * Decimal(float(vi)))
                    + (two_pi * Decimal(float(vi))).ln() / 2
                    for xi, m, vi in zip(row, mu, v, strict=True)
                )
                jll.append(Decimal(float(lp)) - sum(terms, Decimal(0)))
            top = max(jll)
            lse = top + sum(((j - top).exp() for j in jll), Decimal(0)).ln()
            out.append([j - lse for j in jll])
        return out


def assert_posteriors_relatively_exact(
    x: Any, mean: Any, var: Any, log_prior: Any, rtol: float = 1e-12, digits: int = 60
) -> None:
    """log p and p (where p is a normal float64) to rtol relative, at every SIMD level."""
    exact = decimal_log_proba(x, mean, var, log_prior, digits)
    exact_lp = np.array([[float(v) for v in row] for row in exact])
    exact_p = np.array([[float(v.exp()) for v in row] for row in exact])
    levels = gaussmle._core.available_simd_levels()
    try:
        for level in levels:
            gaussmle._core.set_simd_level(level)
            got_lp = predict_log_proba(x, mean, var, log_prior)
            got_p = predict_proba(x, mean, var, log_prior)
            with np.errstate(divide="ignore", invalid="ignore"):
                err_lp = np.where(exact_lp == 0, np.abs(got_lp), np.abs(got_lp / exact_lp - 1))
                normal = exact_p >= np.finfo(float).tiny
                err_p = np.where(normal, np.abs(got_p / np.where(normal, exact_p, 1) - 1), 0)
            assert err_lp.max() <= rtol, (level, got_lp, exact_lp, err_lp)
            assert err_p.max() <= rtol, (level, got_p, exact_p, err_p)
            assert np.all(got_p[~normal] <= 2 * np.finfo(float).tiny), level
    finally:
        gaussmle._core.set_simd_level(None)


def test_h2_far_point_1e4_sigma_posteriors_are_relatively_exact() -> None:
    # jll ~ -5e7 for both classes; log p = jll - LSE cancels ~7 digits in the fast path.
    mean, var, lp = np.array([[0.0], [2e-3]]), np.ones((2, 1)), np.zeros(2)
    x = np.array([[-1e4], [1e4], [-1e4 + 0.5], [3e4]])
    assert_posteriors_relatively_exact(x, mean, var, lp)


def test_h2_winner_log_proba_is_not_rounded_to_zero() -> None:
    # Exact winner log p = -log1p(e^-60) = -8.76e-27 (1 - p underflows, log p does not).
    mean, var, lp = np.array([[0.0], [10.0]]), np.ones((2, 1)), np.zeros(2)
    x = np.array([[-1.0], [0.0], [11.0], [5.0 - 1e-6]])
    got = predict_log_proba(x[:1], mean, var, lp)
    assert got[0, 0] == pytest.approx(-8.756510762696521e-27, rel=1e-12)
    assert_posteriors_relatively_exact(x, mean, var, lp)


def test_h2_huge_means_and_queries() -> None:
    # means 0 / 1e10, x ~ 1e20, var 1e30: jll ~ -5e9 each, D ~ O(1); x - mean is inexact
    # in float64 for the second class.
    mean = np.array([[0.0, 1e10], [1e10, 0.0], [3e10, -2e10]])
    var = np.full((3, 2), 1e30)
    lp = np.log([0.2, 0.3, 0.5])
    x = np.array([[1e20, 1e20], [-1e20, 3e19], [1.5e20, -7e19], [2e10, 1e10]])
    assert_posteriors_relatively_exact(x, mean, var, lp)


def test_h2_classes_with_the_same_huge_quadratic_keep_their_prior_ratio() -> None:
    # Every class 1e76 away (jll ~ -5e151), classes 0 and 1 with identical means and
    # variances: only the priors separate them, 1e-152 of |jll|. The exact tier subtracts the
    # quadratic sums before adding k, so p = 0.9 / 0.1 (it was 0.5 / 0.5). Class 2 is further.
    mean = np.array([[1e76, 0.0], [1e76, 0.0], [2e76, 0.0]])
    var = np.ones((3, 2))
    lp = np.log([0.6, 0.2 / 3, 1 - 0.6 - 0.2 / 3])
    x = np.array([[0.0, 0.0], [0.0, 5.0], [-1e70, 1e3]])
    assert_posteriors_relatively_exact(x, mean, var, lp, digits=200)
    got = predict_proba(x[:1], mean[:2], var[:2], np.log([0.9, 0.1]))
    np.testing.assert_allclose(got, [[0.9, 0.1]], rtol=1e-15)


def test_h2_rows_far_beyond_double_double_keep_their_o1_gaps_exact() -> None:
    # Reviewer-found: rows 1e10..1e15 from classes whose means differ by ~1/distance have
    # |jll| ~ 1e20..1e31 with O(1) gaps. Double-double quadratic sums carry ~u²·|jll| of
    # absolute error (p was off by 5e-8 at 1e12 and 1.5e-3 at 1e14); the exact tier forms the
    # gaps in integer arithmetic. Variances differ per feature but not per class, so the
    # reference's 63-digit pi cancels.
    rng = np.random.default_rng(31)
    for d in (1, 3, 8):
        var = np.tile(rng.uniform(0.1, 2.0, d), (3, 1))
        for far in (1e10, 1e12, 1e14, 1e15):
            mean = np.zeros((3, d))
            mean[1] = rng.uniform(0.5, 3.0, d) / far
            mean[2] = -rng.uniform(0.5, 3.0, d) / far
            lp = np.log([0.5, 0.3, 0.2])
            signs = np.where(rng.random((4, d)) < 0.5, -1.0, 1.0)
            x = far * signs * (1 + 1e-3 * rng.random((4, d)))
            assert_posteriors_relatively_exact(x, mean, var, lp, digits=90)
    # The reviewer's row, two classes, and the same row as float32 input.
    x1, mu, v = 998398686108.3845, 7e-13, 0.1
    mean, var, lp = np.array([[0.0], [mu]]), np.full((2, 1), v), np.log([0.5, 0.5])
    assert_posteriors_relatively_exact(np.array([[x1]]), mean, var, lp, digits=90)
    # float32 input gives float32 output: within one float32 ulp of exact.
    x32 = np.array([[x1]], dtype=np.float32)
    exact = decimal_log_proba(x32, mean, var, lp, digits=90)
    exact_lp = np.array([[float(v) for v in row] for row in exact])
    exact_p = np.array([[float(v.exp()) for v in row] for row in exact])
    for got, want in (
        (predict_log_proba(x32, mean, var, lp), exact_lp),
        (predict_proba(x32, mean, var, lp), exact_p),
    ):
        ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        assert got.dtype == np.float32 and np.all(np.abs(got - want) <= ulp), (got, want)


def test_predict_agrees_with_the_exact_argmax_far_from_every_class() -> None:
    # Reviewer-found: predict took a plain float64 argmax, so for rows far from every class
    # (|jll| ~ 1e24 with O(1) gaps) it could disagree with the exact posteriors (393 of 2400
    # random far rows). Rows whose two best jll are within their rounding bound now get their
    # winner from the exact jll; ordinary rows never are that close.
    rng = np.random.default_rng(32)
    for d in (1, 3, 8):
        var = np.tile(rng.uniform(0.1, 2.0, d), (4, 1))
        for far in (1e8, 1e12, 1e15):
            mean = rng.uniform(-3.0, 3.0, (4, d)) / far
            lp = np.log(rng.dirichlet(np.ones(4)))
            signs = np.where(rng.random((25, d)) < 0.5, -1.0, 1.0)
            x = far * signs * (1 + 1e-3 * rng.random((25, d)))
            exact = decimal_log_proba(x, mean, var, lp, digits=90)
            want = [max(range(4), key=lambda c, row=row: row[c]) for row in exact]
            for level in gaussmle._core.available_simd_levels():
                gaussmle._core.set_simd_level(level)
                try:
                    got = predict(x, mean, var, lp)
                    proba = predict_proba(x, mean, var, lp)
                finally:
                    gaussmle._core.set_simd_level(None)
                assert got.tolist() == want, (d, far, level)
                assert np.argmax(proba, axis=1).tolist() == want, (d, far, level)


def test_h2_near_ties_at_large_magnitude() -> None:
    # Two classes 2 apart, x within 1e-9 of the midpoint, 1e6 sigma from both means:
    # log p ~ -log 2 +- 1e-3 and the fast path's D has error ~1e-4 relative.
    mean = np.array([[1e6, -3.0], [1e6 + 2, -3.0], [-1e6, 0.0]])
    var = np.array([[1e-6, 1.0], [1e-6, 1.0], [1.0, 1.0]])
    lp = np.log([0.5, 0.3, 0.2])
    mid = 1e6 + 1
    x = np.array([[mid, 2e6], [mid + 1e-9, -2e6], [mid - 3e-10, 0.0], [mid, -3.0]])
    assert_posteriors_relatively_exact(x, mean, var, lp)


def test_h2_ordinary_rows_posteriors_and_simd_levels_agree() -> None:
    rng = np.random.default_rng(12)
    mean, var, lp = random_model(rng, 4, 5)
    x = rng.normal(size=(40, 5)) * 3
    assert_posteriors_relatively_exact(x, mean, var, lp)


def high_dimensional_rows(
    rng: np.random.Generator, n_classes: int, n_rows: int, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A unit-scale model of ``d`` features and ``n_rows`` rows drawn around its classes."""
    mean = rng.normal(size=(n_classes, d))
    var = rng.uniform(0.5, 2.0, size=(n_classes, d))
    lp = np.log(rng.dirichlet(np.ones(n_classes)))
    x = mean[rng.integers(0, n_classes, n_rows)] + rng.normal(size=(n_rows, d))
    return mean, var, lp, x


def test_high_dimensional_posteriors_are_relatively_exact() -> None:
    # d = 300: |jll| ~ 1e3, so the fast path's error estimate (~sqrt(d) u |jll|) misses the
    # tolerance for every ordinary row and the compensated (TwoSum) tier recomputes them
    # (checked by instrumenting the build: 14 of the 16 rows per call). Two far rows
    # (|jll| ~ 1e9, every loser's p underflows) ride along.
    d = 300
    mean, var, lp, x = high_dimensional_rows(np.random.default_rng(21), 5, 14, d)
    x = np.vstack([x, np.full((1, d), 3e3), np.full((1, d), -2e3)])
    assert_posteriors_relatively_exact(x, mean, var, lp)


def test_high_dimensional_float32_posteriors_within_one_float32_ulp() -> None:
    # float32 output: the posterior tolerance is 2**-30 relative (not 5e-13), so these rows
    # stay on the fast path, and the result must still be within one float32 ulp of exact.
    mean, var, lp, x64 = high_dimensional_rows(np.random.default_rng(22), 4, 12, 300)
    x = x64.astype(np.float32)
    exact = decimal_log_proba(x, mean, var, lp)
    exact_lp = np.array([[float(v) for v in row] for row in exact])
    exact_p = np.array([[float(v.exp()) for v in row] for row in exact])
    got_lp = predict_log_proba(x, mean, var, lp)
    got_p = predict_proba(x, mean, var, lp)
    assert got_lp.dtype == np.float32 and got_p.dtype == np.float32
    ulp_lp = np.spacing(np.abs(exact_lp).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got_lp - exact_lp) <= ulp_lp), np.abs(got_lp - exact_lp) / ulp_lp
    normal = exact_p >= np.finfo(np.float32).tiny
    ulp_p = np.spacing(exact_p.astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got_p - exact_p)[normal] <= ulp_p[normal])


def test_repeated_features_posteriors_are_relatively_exact() -> None:
    # Reviewer-found: with every feature equal, the per-term roundings add coherently
    # (~d·u·term), so an error estimate that grows like sqrt(d) was exceeded 13x at d = 16384
    # (p1 off by 6.4e-12). The accurate tier's bound is rigorous for any data.
    from decimal import Decimal, localcontext
    from fractions import Fraction

    d, v = 16384, 0.3
    mu0, mu1 = 0.1, 0.1 + 0.05 * 784 / d
    mean = np.array([[mu0] * d, [mu1] * d])
    var = np.full((2, d), v)
    lp = np.log([0.5, 0.5])
    xs = mu0 - np.linspace(0.76, 0.92, 25)
    got = predict_proba(np.repeat(xs[:, None], d, 1), mean, var, lp)
    with localcontext() as ctx:
        ctx.prec = 60
        for r, x in enumerate(xs):
            gap = (Fraction(x) - Fraction(mu1)) ** 2 - (Fraction(x) - Fraction(mu0)) ** 2
            exact_d = -d * gap / (2 * Fraction(v))
            e = (Decimal(exact_d.numerator) / Decimal(exact_d.denominator)).exp()
            p1 = e / (1 + e)
            assert abs(Decimal(float(got[r, 1])) - p1) / p1 <= Decimal("1e-12"), r


def test_log_proba_of_an_underflowing_loser_counts_the_winners_error() -> None:
    # Reviewer-found: for a loser with exp(D_c) = 0 the check left out the winner's jll error,
    # so a far winner (|jll| ~ 1e7) gave log p_loser 1.1e-12 off. D ~ -772 here.
    x = 3162.28 + np.linspace(-0.01, 0.01, 50)
    mean, var = np.array([[0.0], [3162.28]]), np.array([[0.5], [0.5]])
    lp = np.array([0.0, -1e7 - 850.0])
    assert_posteriors_relatively_exact(x[:, None], mean, var, lp)


def test_proba_of_an_underflowing_loser_does_not_hide_the_winner() -> None:
    # Reviewer-found: predict_proba exempted every loser whose exp(D) underflowed from the
    # tolerance check, so rows 1e10 from classes whose variances differ by a few ulps (jll
    # error ~1e6 against a gap of ~1e4) kept the fast path's wrong winner: p = [1, 0] where
    # the exact answer is [0, 1] (107 of 1500 random rows). An underflowing loser is now exempt
    # only if its D plus its error bound is still below log(MIN_POSITIVE).
    eps = 2.0**-52
    x = np.array([[1.25e10, 2.7e10]])
    mean, lp = np.zeros((2, 2)), np.zeros(2)
    var = np.array([[1 + 2 * eps, 1 + eps], [1 - 2 * eps, 1 + 2 * eps]])
    for level in gaussmle._core.available_simd_levels():
        gaussmle._core.set_simd_level(level)
        try:
            assert predict_proba(x, mean, var, lp).tolist() == [[0.0, 1.0]], level
            assert predict_proba(x, mean, var, lp, out=np.empty((1, 2), np.float32)).tolist() == [
                [0.0, 1.0]
            ], level
        finally:
            gaussmle._core.set_simd_level(None)
    assert_posteriors_relatively_exact(x, mean, var, lp, digits=90)
    rng = np.random.default_rng(33)
    for n_classes in (2, 3, 4):
        for d in (2, 5):
            for far in (1e8, 1e10, 1e13):
                mean = rng.uniform(-1.0, 1.0, (n_classes, d)) * 1e-10
                var = 1 + rng.integers(-8, 9, (n_classes, d)) * eps
                lp = np.log(np.full(n_classes, 1 / n_classes))
                x = far * rng.uniform(0.5, 2.0, (6, d))
                assert_posteriors_relatively_exact(x, mean, var, lp, digits=90)
                exact = decimal_log_proba(x, mean, var, lp, digits=90)
                want = [max(range(n_classes), key=lambda c, row=row: row[c]) for row in exact]
                assert np.argmax(predict_proba(x, mean, var, lp), axis=1).tolist() == want


@pytest.mark.parametrize("strides", [(0, 8), (8, 8), (8, 0)])
def test_out_with_overlapping_elements_is_rejected(strides: tuple[int, int]) -> None:
    # Reviewer-found: a writeable as_strided out whose elements alias each other was accepted,
    # and with n_threads=2 two threads wrote the same memory (a data race).
    from numpy.lib.stride_tricks import as_strided

    x = np.random.default_rng(5).normal(size=(64, 3))
    mean, var, lp = np.zeros((2, 3)), np.ones((2, 3)), np.log([0.5, 0.5])
    buf = np.full(256, 7.0)
    out = as_strided(buf, (64, 2), strides, writeable=True)
    for fn in (joint_log_likelihood, predict_proba, predict_log_proba):
        with pytest.raises(ValueError, match="overlapping elements"):
            fn(x, mean, var, lp, out=out, n_threads=2)
    labels = as_strided(np.zeros(4, dtype=np.int64), (64,), (0,), writeable=True)
    with pytest.raises(ValueError, match="overlapping elements"):
        predict(x, mean, var, lp, out=labels)
    assert np.all(buf == 7.0)
    # Distinct elements in any order are fine: reversed columns, every other row of a buffer,
    # and interleaved strides (2 x 2 items at byte offsets 0, 24, 16, 40; a reviewer found
    # these rejected by the first, nested-strides-only check).
    reversed_cols = np.empty((64, 2))[:, ::-1]
    spaced = as_strided(np.empty(256), (64, 2), (32, 8), writeable=True)
    for good in (reversed_cols, spaced):
        got = predict_proba(x, mean, var, lp, out=good)
        np.testing.assert_array_equal(got, predict_proba(x, mean, var, lp))
    interleaved = as_strided(np.empty(8), (2, 2), (16, 24), writeable=True)
    got = predict_proba(x[:2], mean, var, lp, out=interleaved)
    np.testing.assert_array_equal(got, predict_proba(x[:2], mean, var, lp))
    # 4 x 3 items with the same strides do collide: (3, 0) and (0, 2) are both at byte 48.
    mean3, var3, lp3 = np.zeros((3, 3)), np.ones((3, 3)), np.log(np.full(3, 1 / 3))
    collide = as_strided(np.empty(16), (4, 3), (16, 24), writeable=True)
    with pytest.raises(ValueError, match="overlapping elements"):
        predict_proba(x[:4], mean3, var3, lp3, out=collide)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_proba_exemption_uses_a_rigorous_error_bound(n_classes: int) -> None:
    # Reviewer-found: the exemption of an underflowing loser trusted the fast path's sqrt(d)
    # error estimate, but one dominant term per class lets the sum drop up to d half-ulps of
    # it. Here both classes have one 2**61 term and 63 terms of 242 (identical exact
    # quadratics); the fast jll differ by 15360 against an estimate of 5376, and p = 1 went
    # to class 0. Classes 2 and 3 (C = 4) are far away / impossible.
    d = 64
    x = np.full((1, d), 22.0)
    x[0, 0] = 2.0**31
    mean = np.zeros((4, d))
    mean[1, 0] = 2.0**31 - 22.0
    mean[1, -1] = 22.0 - 2.0**31
    var = np.ones((4, d))
    lp = np.array([np.log(0.4), np.log(0.6), -1e5, -np.inf])[:n_classes]
    mean, var = mean[:n_classes], var[:n_classes]
    want = [0.4, 0.6, 0.0, 0.0][:n_classes]
    for level in gaussmle._core.available_simd_levels():
        gaussmle._core.set_simd_level(level)
        try:
            np.testing.assert_allclose(predict_proba(x, mean, var, lp)[0], want, rtol=1e-12)
            got32 = predict_proba(x, mean, var, lp, out=np.empty((1, n_classes), np.float32))
            np.testing.assert_allclose(got32[0], want, rtol=1e-7)
            assert predict(x, mean, var, lp).tolist() == [1], level
        finally:
            gaussmle._core.set_simd_level(None)
    finite = 3 if n_classes == 4 else 2
    assert_posteriors_relatively_exact(x, mean[:finite], var[:finite], lp[:finite], digits=100)
