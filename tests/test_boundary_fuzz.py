"""Property fuzzing of the Python boundary: any dtype, layout, shape and label type.

Every call must either return the same answer as a pure-numpy ``longdouble`` reference or
raise ``ValueError``/``TypeError``. Anything else (``PanicException``, ``SystemError``, a
segfault, a wrong number) fails. Clearly valid input (real dtype, 2-D, finite, labels in range)
must succeed.

Values are kept moderate here (``|x| <= 1e6``, variances in ``[1e-3, 1e3]``): the extreme-value
domain (subnormals, 1e308, overflow) is fuzzed by ``fuzz/`` (``make fuzz``) and pinned down by
``tests/test_extremes.py``. This file is about the boundary: dtypes, byte order, strides,
alignment, read-only and memory-mapped buffers, 0-d to 3-d shapes and label types.

Scale the number of examples with ``GAUSSMLE_FUZZ_EXAMPLES`` (per test; default 800), e.g.
``GAUSSMLE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_boundary_fuzz.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import gaussmle
import numpy as np
import pytest
from gaussmle import ClassStats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

EXAMPLES = int(os.environ.get("GAUSSMLE_FUZZ_EXAMPLES", "800"))
LD = np.longdouble
LOG_2PI = np.log(2 * np.arccos(LD(-1)))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

REAL_DTYPES = [
    "<f2", "<f4", "<f8", ">f4", ">f8", "<i1", "<i4", ">i8", "<u1", "<u8", "?",
]  # fmt: skip
OTHER_DTYPES = ["<c16", "O", "<U3", "<M8[s]"]
LAYOUTS = ["C", "F", "strided", "negative", "broadcast", "unaligned", "readonly", "memmap"]


class Outcome:
    """What a call did: returned ``value`` or raised ``error`` (ValueError/TypeError only)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


TRACE = os.environ.get("GAUSSMLE_FUZZ_TRACE")


def describe(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        values = a.tolist() if a.dtype.kind != "O" and a.size <= 200 else "..."
        return {
            "type": type(a).__name__,
            "dtype": a.dtype.str,
            "shape": a.shape,
            "strides": a.strides,
            "aligned": a.flags.aligned,
            "writeable": a.flags.writeable,
            "values": values,
        }
    return repr(a)[:300]


def trace(**inputs: Any) -> None:
    """With GAUSSMLE_FUZZ_TRACE=path, write each input before the call (to triage a crash)."""
    if TRACE:
        with open(TRACE, "w") as f:
            f.write(repr({k: describe(v) for k, v in inputs.items()}))


def call(fn: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(value=fn())
    except (ValueError, TypeError) as e:
        return Outcome(error=e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # PanicException derives from BaseException
        pytest.fail(f"{type(e).__module__}.{type(e).__name__} escaped: {e!r}")


# -------------------------------------------------------------------------------- layouts


def relayout(arr: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``arr`` in another memory layout."""
    arr = np.array(arr, copy=False) if isinstance(arr, np.ndarray) else np.array(arr)
    if layout == "C":
        return np.ascontiguousarray(arr)
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "strided" and arr.ndim >= 1:
        big = np.zeros(tuple(2 * s + 1 for s in arr.shape), dtype=arr.dtype)
        view = big[tuple(slice(1, None, 2) for _ in arr.shape)]
        view[...] = arr
        return view
    if layout == "negative" and arr.ndim >= 1:
        rev = tuple(slice(None, None, -1) for _ in arr.shape)
        return np.ascontiguousarray(arr[rev])[rev]
    if layout == "broadcast" and arr.ndim >= 1 and arr.shape[0] > 0:
        # Stride 0 along axis 0: every row is the first row.
        return np.broadcast_to(arr[:1], arr.shape)
    if layout == "unaligned" and arr.dtype.itemsize > 1 and arr.dtype.kind != "O":
        buf = np.zeros(arr.nbytes + 1, dtype=np.uint8)[1:]
        out = buf.view(arr.dtype).reshape(arr.shape)
        out[...] = arr
        return out
    if layout == "readonly":
        out = np.array(arr, copy=True)
        out.flags.writeable = False
        return out
    if layout == "memmap" and arr.dtype.kind != "O" and arr.size > 0:
        fd, path = tempfile.mkstemp(suffix=".npy", prefix="gaussmle-fuzz-")
        os.close(fd)
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=arr.dtype, shape=arr.shape)
        mm[...] = arr
        mm.flush()
        os.unlink(path)  # the mapping stays valid until mm is dropped (POSIX)
        return mm
    return arr


@st.composite
def matrices(draw: st.DrawFn, n_rows: int | None = None, n_cols: int | None = None) -> np.ndarray:
    """An array of any dtype/layout; usually 2-D (n_rows x n_cols), sometimes 0-d, 1-d or 3-d."""
    dtype = draw(st.sampled_from(REAL_DTYPES + OTHER_DTYPES))
    if n_rows is None:
        n_rows = draw(st.integers(0, 12))
    if n_cols is None:
        n_cols = draw(st.integers(0, 4))
    shape: tuple[int, ...] = (n_rows, n_cols)
    if draw(st.integers(0, 19)) == 0:
        shape = draw(st.sampled_from([(), (n_rows,), (n_rows, n_cols, 2), (1, n_rows, n_cols)]))
    base_dtype = np.dtype(dtype)
    if base_dtype.kind == "f":
        non_finite = draw(st.integers(0, 9)) == 0
        elements = st.floats(
            -1e4 if base_dtype.itemsize == 2 else -1e6,
            1e4 if base_dtype.itemsize == 2 else 1e6,
            allow_nan=False,
            allow_infinity=False,
            width=8 * min(base_dtype.itemsize, 8),
        )
        if non_finite:
            elements = elements | st.sampled_from([np.nan, np.inf, -np.inf])
        arr = draw(hnp.arrays(base_dtype.newbyteorder("="), shape, elements=elements))
        arr = arr.astype(base_dtype)
    elif base_dtype.kind in "biu":
        arr = draw(hnp.arrays(base_dtype, shape))
        if base_dtype.kind in "iu" and base_dtype.itemsize == 8:
            arr = arr % 1000  # keep integers exact in float64 and the statistics moderate
    elif base_dtype.kind == "c":
        arr = draw(hnp.arrays(base_dtype, shape, elements=st.complex_numbers(max_magnitude=1e3)))
    elif base_dtype.kind == "O":
        arr = np.empty(shape, dtype=object)
        arr[...] = draw(st.sampled_from([1.5, "x", None]))
    else:
        arr = draw(hnp.arrays(base_dtype, shape))
    return relayout(arr, draw(st.sampled_from(LAYOUTS)))


@st.composite
def label_arrays(draw: st.DrawFn, n: int, n_classes: int, huge: bool = True) -> Any:
    """Labels of any type: int dtypes, bool, integral floats, lists, strings, out of range."""
    kind = draw(st.sampled_from(["int64", "int32", "uint8", "int16>", "float", "bool", "list",
                                 "str", "bad", "short", "2d"]))  # fmt: skip
    codes = np.array(draw(st.lists(st.integers(0, max(n_classes - 1, 0)), min_size=n, max_size=n)),
                     dtype=np.int64)  # fmt: skip
    if kind == "int64":
        out: Any = codes
    elif kind == "int32":
        out = codes.astype(np.int32)
    elif kind == "uint8":
        out = codes.astype(np.uint8)
    elif kind == "int16>":
        out = codes.astype(">i2")
    elif kind == "float":
        out = codes.astype(np.float64)
    elif kind == "bool":
        out = (codes % 2).astype(bool)
    elif kind == "list":
        return codes.tolist()
    elif kind == "str":
        return codes.astype(str)
    elif kind == "bad":
        out = codes.copy()
        if n:
            # Without n_classes, 2**40 becomes the class count: a ValueError (it used to abort
            # the process, docs/hardening.md KB8). `huge=False` leaves it out.
            bad = [-1, n_classes, 2**40] if huge else [-1, n_classes, 1000]
            out[draw(st.integers(0, n - 1))] = draw(st.sampled_from(bad))
    elif kind == "short":
        out = codes[: max(n - 1, 0)]
    else:
        out = codes[:, None]
    return relayout(np.asarray(out), draw(st.sampled_from(LAYOUTS)))


# ------------------------------------------------------------------------------- references


def clearly_valid_matrix(x: Any) -> bool:
    arr = np.asarray(x)
    return (
        arr.ndim == 2
        and arr.dtype.kind in "biuf"
        and bool(np.all(np.isfinite(arr.astype(np.float64))))
    )


def label_codes(y: Any, n_rows: int, n_classes: int | None) -> np.ndarray | None:
    """The int64 codes of ``y`` if it is a valid label vector, else None."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        return None
    if arr.dtype.kind == "f":
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            return None
    elif arr.dtype.kind not in "biu":
        return None
    codes = arr.astype(np.int64)
    limit = n_classes if n_classes is not None else (int(codes.max()) + 1 if codes.size else 0)
    if codes.size and (codes.min() < 0 or codes.max() >= limit):
        return None
    return codes


def ref_class_stats(
    x: np.ndarray, codes: np.ndarray, n_classes: int, w: np.ndarray | None
) -> dict[str, np.ndarray]:
    xl = np.asarray(x).astype(np.float64).astype(LD)
    d = xl.shape[1]
    wl = np.ones(len(codes), dtype=LD) if w is None else np.asarray(w, dtype=np.float64).astype(LD)
    weight = np.zeros(n_classes, dtype=LD)
    mean = np.zeros((n_classes, d), dtype=LD)
    m2 = np.zeros((n_classes, d), dtype=LD)
    scale = np.zeros((n_classes, d), dtype=LD)
    for c in range(n_classes):
        rows = codes == c
        wc = wl[rows]
        weight[c] = wc.sum()
        if weight[c] > 0:
            xc = xl[rows]
            mean[c] = (wc[:, None] * xc).sum(0) / weight[c]
            m2[c] = (wc[:, None] * (xc - mean[c]) ** 2).sum(0)
            scale[c] = (wc[:, None] * np.abs(xc)).sum(0) / weight[c]
    return {"weight": weight, "mean": mean, "m2": m2, "scale": scale}


def assert_stats_match(got: ClassStats, ref: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(got.weight, ref["weight"].astype(float), rtol=1e-12)
    floor = 1e-12 * ref["scale"].astype(float)
    # Against the long-double mean itself, with half an ulp of float64 allowed: a subnormal
    # mean can lie exactly halfway between two float64 values (5e-324 and 0 for a mean of
    # 2.5e-324), and either rounding is as close as float64 allows.
    half_ulp = np.spacing(np.abs(got.mean)).astype(LD) / 2
    mean_err = np.abs(got.mean.astype(LD) - ref["mean"])
    assert np.all(mean_err <= (1e-9 * floor + floor).astype(LD) + half_ulp)
    m2_floor = ref["weight"].astype(float)[:, None] * (1e-12 * ref["scale"].astype(float)) ** 2
    err = np.abs(got.m2 - ref["m2"].astype(float))
    assert np.all(err <= 1e-9 * ref["m2"].astype(float) + m2_floor + 1e-300), (got.m2, ref["m2"])


def ref_jll(x: np.ndarray, mean: np.ndarray, var: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    xl = np.asarray(x).astype(np.float64).astype(LD)
    ml, vl = mean.astype(LD), var.astype(LD)
    k = log_prior.astype(LD) - 0.5 * (np.log(vl).sum(1) + ml.shape[1] * LOG_2PI)
    q = (0.5 * (xl[:, None, :] - ml[None]) ** 2 / vl[None]).sum(2)
    return np.asarray(k[None, :] - q)


def assert_close_ld(got: np.ndarray, want: np.ndarray, scale: np.ndarray, rtol: float) -> None:
    err = np.abs(got.astype(LD) - want)
    assert np.all(err <= rtol * (np.abs(want) + scale) + 1e-300), (got, want)


# ---------------------------------------------------------------------------------- tests


@FUZZ
@given(data=st.data())
def test_class_stats_any_input(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 12), label="n")
    d = data.draw(st.integers(0, 4), label="d")
    n_classes = data.draw(st.integers(1, 4), label="n_classes")
    x = data.draw(matrices(n, d), label="X")
    give_n = data.draw(st.booleans(), label="pass n_classes")
    y = data.draw(label_arrays(n, n_classes), label="y")
    weighted = data.draw(st.booleans(), label="weighted")
    w = None
    if weighted:
        w = data.draw(matrices(n, 1), label="w")
        if clearly_valid_matrix(w):
            # Moderate weights (0 or >= 1e-3): extreme weight ratios are fuzz_core's domain (KB3).
            w = np.round(np.abs(np.asarray(w).astype(np.float64))[:, 0], 3)
    trace(x=x, y=y, n_classes=n_classes if give_n else None, w=w)
    out = call(lambda: gaussmle.class_stats(x, y, n_classes if give_n else None, sample_weight=w))
    codes = label_codes(
        y, np.asarray(x).shape[0] if np.ndim(x) else -1, n_classes if give_n else None
    )
    w_ref = w
    if isinstance(w, np.ndarray) and w.ndim == 0 and w.dtype.kind in "biuf":
        w_ref = np.full(n, float(w))  # a scalar weight applies to every row
    elif isinstance(w, np.ndarray) and w.dtype.kind in "biuf":
        w_ref = w.astype(np.float64)  # integer and bool weights are converted
    w_ok = w_ref is None or (
        isinstance(w_ref, np.ndarray)
        and w_ref.shape == (n,)
        and w_ref.dtype.kind == "f"
        and bool(np.all(np.isfinite(w_ref) & (w_ref >= 0)))
    )
    k = n_classes if give_n else (int(codes.max()) + 1 if codes is not None and codes.size else 0)
    # The core refuses class tables beyond 2**28 cells with a ValueError (a resource limit).
    fits = k * max(d, 1) <= 2**28
    valid = (
        clearly_valid_matrix(x)
        and codes is not None
        and np.asarray(x).shape[0] == n
        and w_ok
        and fits
    )
    if out.error is not None:
        assert not valid, f"valid input raised {out.error!r}"
        return
    assert valid, "invalid input was accepted"
    assert isinstance(out.value, ClassStats)
    assert out.value.weight.shape == (k,) and out.value.mean.shape == (k, d)
    assert_stats_match(out.value, ref_class_stats(x, codes, k, w_ref))


@st.composite
def model(draw: st.DrawFn, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = draw(st.integers(1, 4))
    mean = draw(hnp.arrays(np.float64, (c, d), elements=st.floats(-100, 100)))
    var = draw(hnp.arrays(np.float64, (c, d), elements=st.floats(1e-3, 1e3)))
    prior = draw(hnp.arrays(np.float64, (c,), elements=st.floats(1e-3, 1.0)))
    return mean, var, np.log(prior / prior.sum())


@FUZZ
@given(data=st.data())
def test_scoring_any_input(data: st.DataObject) -> None:
    d = data.draw(st.integers(0, 4), label="d")
    mean, var, log_prior = data.draw(model(d), label="model")
    n = data.draw(st.integers(0, 12), label="n")
    x = data.draw(matrices(n, d), label="X")
    which = data.draw(st.sampled_from(["jll", "predict", "proba", "log_proba"]), label="fn")
    fn = {
        "jll": gaussmle.joint_log_likelihood,
        "predict": gaussmle.predict,
        "proba": gaussmle.predict_proba,
        "log_proba": gaussmle.predict_log_proba,
    }[which]
    trace(fn=which, x=x, mean=mean, var=var, log_prior=log_prior)
    out = call(lambda: fn(x, mean, var, log_prior))
    valid = clearly_valid_matrix(x) and np.asarray(x).shape[1] == d
    if out.error is not None:
        assert not valid, f"valid input raised {out.error!r}"
        return
    assert valid, "invalid input was accepted"
    want = ref_jll(np.asarray(x), mean, var, log_prior)
    got = np.asarray(out.value)
    is_f32 = np.asarray(x).dtype.kind == "f" and np.asarray(x).dtype.itemsize == 4
    rtol = 2e-6 if is_f32 else 1e-12
    scale = np.abs(log_prior).max() + 0.5 * (np.abs(np.log(var)).sum(1) + d * 2)
    if which == "jll":
        assert got.shape == (n, len(log_prior))
        assert_close_ld(got, want, scale, rtol)
    elif which == "predict":
        assert got.shape == (n,) and got.dtype == np.int64
        if n:
            best = want.max(1)
            chosen = want[np.arange(n), got]
            assert np.all(chosen >= best - 1e-9 * (np.abs(best) + scale.max())), (got, want)
    else:
        top = want.max(1, keepdims=True)
        log_p = (want - top) - np.log(np.exp(want - top).sum(1, keepdims=True))
        # Probabilities are only as exact as the jll differences: error ~ eps * |jll|.
        row_scale = (np.abs(want).max(1, keepdims=True) + scale.max()).astype(float)
        tol = (2e-6 if is_f32 else 1e-12) + 8 * rtol * row_scale
        if which == "proba":
            assert np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1))
            if n:
                np.testing.assert_allclose(got.sum(1), 1.0, rtol=0, atol=1e-6 if is_f32 else 1e-12)
            assert np.all(np.abs(got - np.exp(log_p).astype(float)) <= tol), (got, log_p)
        else:
            assert np.all(np.abs(got - log_p.astype(float)) <= tol * (1 + np.abs(log_p))), (
                got,
                log_p,
            )


@FUZZ
@given(data=st.data())
def test_merge_any_split(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 20), label="n")
    d = data.draw(st.integers(0, 3), label="d")
    n_classes = data.draw(st.integers(1, 3), label="n_classes")
    x = data.draw(
        hnp.arrays(np.float64, (n, d), elements=st.floats(-1e6, 1e6) | st.integers(-5, 5)),
        label="X",
    )
    y = np.array(data.draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    cut = data.draw(st.integers(0, n), label="cut")
    a = gaussmle.class_stats(x[:cut], y[:cut].astype(np.int64), n_classes)
    b = gaussmle.class_stats(x[cut:], y[cut:].astype(np.int64), n_classes)
    other = data.draw(st.sampled_from(["stats", "wrong shape", "not stats", "empty"]))
    if other == "wrong shape":
        out = call(lambda: a.merge(ClassStats.empty(n_classes + 1, d)))
        assert out.error is not None
        return
    if other == "not stats":
        out = call(lambda: a.merge((1, 2, 3)))  # type: ignore[arg-type]
        assert isinstance(out.error, TypeError)
        return
    if other == "empty":
        b = ClassStats.empty(n_classes, d)
        x, y = x[:cut], y[:cut]
    out = call(lambda: a + b)
    assert out.error is None, out.error
    merged = out.value
    assert_stats_match(merged, ref_class_stats(x, y.astype(np.int64), n_classes, None))
    assert merged.global_count == len(y)


def test_examples_budget_is_documented() -> None:
    # The budget is per test; the default keeps this file well under a minute on 2 cores.
    assert EXAMPLES >= 1


try:  # GaussianNB needs scikit-learn and python/gaussmle/estimator.py
    from gaussmle.estimator import GaussianNB
except ImportError:  # pragma: no cover
    GaussianNB = None  # type: ignore[assignment,misc]


@pytest.mark.skipif(GaussianNB is None, reason="GaussianNB (scikit-learn) not available")
@FUZZ
@given(data=st.data())
def test_gaussian_nb_any_input(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12), label="n")
    d = data.draw(st.integers(1, 3), label="d")
    x = data.draw(matrices(n, d), label="X")
    labels = data.draw(
        st.sampled_from(
            [np.arange(n) % 2, np.array(["a", "b"] * n)[:n], (np.arange(n) % 3).astype(float)]
        )
    )
    model_ = GaussianNB(var_smoothing=1e-9)
    trace(x=x, labels=labels)
    fitted = call(lambda: model_.fit(x, labels))
    valid = clearly_valid_matrix(x) and np.asarray(x).shape == (n, d)
    if fitted.error is not None:
        assert not valid, f"valid input raised {fitted.error!r}"
        return
    # Like scikit-learn's check_array, GaussianNB converts object arrays of numbers.
    assert valid or np.asarray(x).dtype == object, "invalid input was accepted"
    x2 = data.draw(matrices(data.draw(st.integers(0, 5)), d), label="X2")
    trace(x=x, labels=labels, x2=x2)
    pred = call(lambda: model_.predict(x2))
    proba = call(lambda: model_.predict_proba(x2))
    # Like scikit-learn, GaussianNB rejects zero rows.
    valid2 = clearly_valid_matrix(x2) and np.asarray(x2).shape[1] == d and len(x2) > 0
    # Documented: a feature constant in every class with an all-constant X leaves epsilon = 0,
    # so scoring raises a clear ValueError instead of returning NaN (docs/hardening.md).
    zero_var = bool(np.any(model_.var_ <= 0))
    for out in (pred, proba):
        if out.error is not None:
            assert not valid2 or (zero_var and "variance" in str(out.error)), out.error
        else:
            assert valid2 or np.asarray(x2).dtype == object, "invalid input was accepted"
    if proba.value is not None and len(proba.value):
        p = np.asarray(proba.value)
        assert np.all(np.isfinite(p))
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
        assert set(np.asarray(pred.value).tolist()) <= set(model_.classes_.tolist())
