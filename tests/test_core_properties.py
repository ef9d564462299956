"""Property-based tests of the core API: random shapes, dtypes, layouts, labels and weights
match the long double reference; bad input only ever raises ValueError or TypeError."""

from __future__ import annotations

import itertools
from typing import Any

import gaussmle
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from gaussmle import ClassStats, class_stats
from hypothesis import HealthCheck, given, settings
from reference import (
    SUBNORMAL_SLACK,
    assert_predict_is_argmax,
    assert_scores_close,
    assert_stats_close,
    assert_within,
    fraction_class_stats,
    merge_rounding_bound,
    reference_jll,
)

RTOL = 1e-12
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LAYOUTS = ["C", "F", "strided", "reversed rows", "reversed cols", "read-only"]


def with_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Same logical values in a different memory layout (never a different dtype)."""
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        big = np.zeros((2 * x.shape[0] + 1, 3 * x.shape[1]), dtype=x.dtype)
        view = big[1::2, ::3]
        view[...] = x
        return view
    if layout == "reversed rows":
        return np.ascontiguousarray(x[::-1])[::-1]
    if layout == "reversed cols":
        return np.asfortranarray(x[:, ::-1])[:, ::-1]
    if layout == "read-only":
        view = x.copy()
        view.flags.writeable = False
        return view
    return np.ascontiguousarray(x)


@st.composite
def datasets(draw: st.DrawFn, min_rows: int = 0) -> dict[str, Any]:
    n = draw(st.integers(min_rows, 30))
    d = draw(st.integers(1, 5))
    n_classes = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e3, 1e6]))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e2]))
    noise = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-10, 10, allow_subnormal=False)))
    x = (offset + scale * noise).astype(dtype)
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_classes - 1)))
    weight_kind = draw(st.sampled_from(["none", "uniform", "wide", "with zeros"]))
    weights: np.ndarray | None
    if weight_kind == "none":
        weights = None
    else:
        exponents = draw(hnp.arrays(np.float64, n, elements=st.floats(-6, 6)))
        weights = 10.0**exponents if weight_kind == "wide" else np.abs(exponents) + 0.5
        if weight_kind == "with zeros":
            weights[::2] = 0.0
    layout = draw(st.sampled_from(LAYOUTS))
    return {
        "x": with_layout(x, layout),
        "y": labels,
        "n_classes": n_classes,
        "w": weights,
        "layout": layout,
    }


@SETTINGS
@given(data=datasets())
def test_class_stats_match_exact_reference(data: dict[str, Any]) -> None:
    # Exact rational reference: with spreads of a few ulps at 1e6 (kappa ~ 1e14) even an
    # 80-bit long-double two-pass is off by ~1e-10 in m2, while gaussmle is not.
    x, y, n_classes, w = data["x"], data["y"], data["n_classes"], data["w"]
    stats = class_stats(x, y, n_classes, sample_weight=w)
    assert stats.n_classes == n_classes and stats.n_features == x.shape[1]
    assert_stats_close(stats, fraction_class_stats(x, y, n_classes, w), RTOL)
    absent = stats.weight == 0
    assert np.all(np.isnan(stats.var[absent]))
    assert np.all(stats.var[~absent] >= 0)


@st.composite
def models(draw: st.DrawFn, n_classes: int, d: int, center: float) -> tuple[Any, Any, Any]:
    mean = center + draw(
        hnp.arrays(np.float64, (n_classes, d), elements=st.floats(-20, 20, allow_subnormal=False))
    )
    var = draw(hnp.arrays(np.float64, (n_classes, d), elements=st.floats(1e-3, 1e3)))
    log_prior = draw(hnp.arrays(np.float64, n_classes, elements=st.floats(-30, 0)))
    if n_classes > 1 and draw(st.booleans()):
        # An exact duplicate of class 0: ties must go to the first index.
        mean[-1], var[-1], log_prior[-1] = mean[0], var[0], log_prior[0]
    if n_classes > 2 and draw(st.booleans()):
        # An impossible class (never class 0, so some class always stays possible).
        log_prior[draw(st.integers(1, n_classes - 1))] = -np.inf
    return mean, var, log_prior


@SETTINGS
@given(data=datasets(), choice=st.data())
def test_scoring_matches_longdouble_reference(data: dict[str, Any], choice: st.DataObject) -> None:
    x, n_classes = data["x"], data["n_classes"]
    center = float(np.median(x)) if x.size else 0.0
    mean, var, log_prior = choice.draw(models(n_classes, x.shape[1], center))
    ref = reference_jll(x, mean, var, log_prior)
    out_dtype = x.dtype  # float32 in, float32 out by default
    for kind, fn in (
        ("jll", gaussmle.joint_log_likelihood),
        ("log_proba", gaussmle.predict_log_proba),
        ("proba", gaussmle.predict_proba),
    ):
        got = fn(x, mean, var, log_prior)
        assert got.dtype == out_dtype and got.shape == (x.shape[0], n_classes), kind
        assert_scores_close(got, ref, kind, what=f"[{data['layout']}] ")
    proba = gaussmle.predict_proba(x, mean, var, log_prior)
    if x.dtype == np.float64 and x.shape[0]:
        assert np.max(np.abs(proba.sum(axis=1) - 1)) <= 1e-12
    labels = gaussmle.predict(x, mean, var, log_prior)
    assert_predict_is_argmax(labels, ref)
    assert not np.any(np.isneginf(log_prior[labels]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(min_rows=1), cuts=st.lists(st.integers(0, 30), max_size=4))
def test_merge_of_any_split_matches_reference(data: dict[str, Any], cuts: list[int]) -> None:
    """Merging the statistics of any split gives the statistics of all rows, up to 1e-12 and
    the unavoidable effect of each part storing its mean as a float64
    (``reference.merge_rounding_bound``; ~0 unless the offset dwarfs the spread)."""
    x, y, n_classes, w = data["x"], data["y"], data["n_classes"], data["w"]
    n = x.shape[0]
    bounds = sorted({0, n, *(min(c, n) for c in cuts)})
    total = ClassStats.empty(n_classes, x.shape[1])
    propagated = np.zeros((n_classes, x.shape[1]))
    for lo, hi in itertools.pairwise(bounds):
        part = class_stats(
            x[lo:hi], y[lo:hi], n_classes, sample_weight=None if w is None else w[lo:hi]
        )
        propagated += merge_rounding_bound(total.weight, total.mean, part.weight, part.mean)
        total = total + part
    ref = fraction_class_stats(x, y, n_classes, w)  # exact: see above
    present = ref.weight > 0
    assert_within(total.weight, ref.weight, RTOL * ref.weight, "weight")
    assert_within(
        total.m2[present],
        ref.m2[present],
        RTOL * ref.m2[present] + propagated[present] + SUBNORMAL_SLACK,
        "merged m2",
    )
    assert_within(
        total.mean[present],
        ref.mean[present],
        RTOL * ref.mean_scale[present] + SUBNORMAL_SLACK,
        "merged mean",
    )
    assert total.global_count == n


# ------------------------------------------------------------------------- robustness


def junk_arrays() -> st.SearchStrategy[Any]:
    odd_values = st.sampled_from(
        [
            np.ones((6, 3), dtype=np.complex128),
            np.full((6, 3), "a"),
            np.ones((6, 3), dtype=object),
            np.zeros((6, 3), dtype="datetime64[s]"),
            np.zeros((6, 3), dtype=np.float64)[:, :, None],
            np.float64(1.0),
            [[1.0, float("nan"), 2.0]] * 6,
            [0, 1, 2, 0, 1, 2],
            "abc",
            2**70,
            -1,
            0,
            1.5,
        ]
    )
    numeric = hnp.arrays(
        st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
    )
    return st.one_of(odd_values, numeric, st.none())


ARGUMENTS_OF = {
    "class_stats": ("x", "y", "n_classes", "sample_weight"),
    "scorer": ("mean", "var", "log_prior"),
    "jll": ("x", "mean", "var", "log_prior", "out"),
    "predict": ("x", "mean", "var", "log_prior", "out"),
    "log_proba": ("x", "mean", "var", "log_prior", "out"),
    "proba": ("x", "mean", "var", "log_prior", "out"),
}


def valid_arguments() -> dict[str, Any]:
    n, d, c = 6, 3, 3
    return {
        "x": np.linspace(-1, 1, n * d).reshape(n, d),
        "y": np.array([0, 1, 2, 0, 1, 2]),
        "n_classes": c,
        "sample_weight": np.ones(n),
        "mean": np.zeros((c, d)),
        "var": np.ones((c, d)),
        "log_prior": np.log(np.full(c, 1 / c)),
        "out": None,
    }


@st.composite
def bad_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool]:
    """(function, arguments, must it raise?): a valid call with 1-3 arguments broken.

    "junk" replaces an argument by an arbitrary value (which may happen to be valid, so it
    never sets must_raise); the other ways of breaking are certainly invalid."""
    fn = draw(st.sampled_from(sorted(ARGUMENTS_OF)))
    args = valid_arguments()
    must_raise = False
    junk: set[str] = set()
    names = st.sampled_from(ARGUMENTS_OF[fn])
    for name in draw(st.sets(names, min_size=1, max_size=3)):
        value = args[name]
        how = draw(st.sampled_from(["junk", "nonfinite", "shape", "sign"]))
        if how == "junk" or name in ("n_classes", "out"):
            args[name] = draw(junk_arrays())
            junk.add(name)
            continue
        value = value.copy()
        if how == "nonfinite":
            if name == "y":
                value = value.astype(np.float64)
            flat = value.reshape(-1)
            bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            flat[draw(st.integers(0, flat.size - 1))] = bad
            # -inf is a valid log prior (an impossible class); everything else is invalid.
            must_raise |= not (name == "log_prior" and bad == -np.inf)
        elif how == "shape":
            # Drop the last column (2-D) or entry (1-D); whether that makes the call invalid
            # depends on the other arguments, so it is decided below.
            value = value[..., :-1]
        else:  # sign
            value = -value - 1
            must_raise |= name in ("y", "sample_weight", "var")
        args[name] = value
    return fn, args, must_raise or (not junk and not shapes_consistent(fn, args))


def shapes_consistent(fn: str, a: dict[str, Any]) -> bool:
    """Whether the (non-junk) array arguments have mutually consistent shapes."""
    if fn == "class_stats":
        x, y, w = a["x"], a["y"], a["sample_weight"]
        return x.ndim == 2 and y.shape == (x.shape[0],) and w.shape == (x.shape[0],)
    mean, var, prior = a["mean"], a["var"], a["log_prior"]
    params_ok = mean.shape == var.shape and prior.shape == (mean.shape[0],)
    if fn == "scorer":
        return params_ok
    return params_ok and a["x"].shape[1] == mean.shape[1]


def call(fn: str, a: dict[str, Any]) -> Any:
    if fn == "class_stats":
        return class_stats(a["x"], a["y"], a["n_classes"], sample_weight=a["sample_weight"])
    if fn == "scorer":
        return gaussmle.make_scorer(a["mean"], a["var"], a["log_prior"])
    function = {
        "jll": gaussmle.joint_log_likelihood,
        "predict": gaussmle.predict,
        "log_proba": gaussmle.predict_log_proba,
        "proba": gaussmle.predict_proba,
    }[fn]
    return function(a["x"], a["mean"], a["var"], a["log_prior"], out=a["out"])


# Complex parameters are truncated with a ComplexWarning: test_scoring_exact checks that
# explicitly (test_complex_parameters_are_rejected); here only the exception type matters.
@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bad_calls())
def test_bad_input_raises_only_value_or_type_error(case: tuple[str, dict[str, Any], bool]) -> None:
    fn, args, must_raise = case
    try:
        result = call(fn, args)
    except (ValueError, TypeError):
        return
    except BaseException as exc:  # e.g. pyo3's PanicException derives from BaseException
        pytest.fail(f"{fn} raised {type(exc).__module__}.{type(exc).__name__}: {exc!r}")
    assert not must_raise, f"{fn} accepted invalid input and returned {result!r}"
    # Accepted: then the output must be sane (no NaN smuggled through).
    if fn in ("proba", "log_proba", "jll"):
        assert not np.any(np.isnan(result)), f"{fn} returned NaN for accepted input"
    if fn == "proba" and np.size(result):
        np.testing.assert_allclose(np.sum(result, axis=1), 1.0, rtol=1e-6)
