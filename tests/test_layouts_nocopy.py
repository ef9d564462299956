"""Every memory layout gives the exact results, and float32/float64 input is never copied."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gaussmle import (
    class_stats,
    joint_log_likelihood,
    predict,
    predict_log_proba,
    predict_proba,
)
from gaussmle._arrays import as_float_array
from reference import assert_scores_close, assert_stats_close, fraction_class_stats, reference_jll

RTOL = 1e-12
N_ROWS, N_FEATURES, N_CLASSES = 64, 5, 3


def base_data(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    # Offset data (mean >> spread), so an inaccurate path in any layout would show.
    x = 1e3 + rng.normal(size=(N_ROWS, N_FEATURES)) * [1.0, 0.1, 10.0, 1.0, 0.01]
    return x.astype(dtype)


LABELS = np.random.default_rng(1).integers(0, N_CLASSES, size=N_ROWS)


def unaligned(x: np.ndarray) -> np.ndarray:
    buf = np.zeros(x.nbytes + 1, dtype=np.uint8)
    view = buf[1:].view(x.dtype).reshape(x.shape)
    view[...] = x
    assert not view.flags.aligned
    return view


def readonly(x: np.ndarray) -> np.ndarray:
    view = x.view()
    view.flags.writeable = False
    return view


def memmap_of(x: np.ndarray, path: Path) -> np.ndarray:
    writer = np.memmap(path, dtype=x.dtype, mode="w+", shape=x.shape, order="F")
    writer[...] = x
    writer.flush()
    del writer
    return np.memmap(path, dtype=x.dtype, mode="r", shape=x.shape, order="F")


# name -> (make the layout from a C-contiguous base, is it read in place?)
LAYOUTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {
    "C": (lambda x: x, True),
    "Fortran": (np.asfortranarray, True),
    "row slice": (lambda x: np.repeat(x, 3, axis=0)[1::3], True),
    "column slice": (lambda x: np.repeat(x, 2, axis=1)[:, ::2], True),
    "both strided": (
        lambda x: np.asfortranarray(np.repeat(np.repeat(x, 2, 0), 3, 1))[::2, ::3],
        True,
    ),
    "rows reversed": (lambda x: np.ascontiguousarray(x[::-1])[::-1], True),
    "columns reversed": (lambda x: np.ascontiguousarray(x[:, ::-1])[:, ::-1], True),
    "both reversed, Fortran": (lambda x: np.asfortranarray(x[::-1, ::-1])[::-1, ::-1], True),
    "read-only": (readonly, True),
    "unaligned": (unaligned, False),
    "big-endian": (lambda x: x.astype(x.dtype.newbyteorder(">")), False),
}


def check_layout(x: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    """class_stats and every scorer on ``x`` match the exact reference of its values."""
    stats = class_stats(x, labels, n_classes)
    assert_stats_close(stats, fraction_class_stats(x, labels, n_classes), RTOL)
    mean = np.where(stats.weight[:, None] > 0, stats.mean, 0.0)
    var = stats.var + 1e-3
    var[stats.weight == 0] = 1.0
    log_prior = np.log(np.full(n_classes, 1 / n_classes))
    ref = reference_jll(x, mean, var, log_prior)
    assert_scores_close(joint_log_likelihood(x, mean, var, log_prior), ref, "jll")
    assert_scores_close(predict_log_proba(x, mean, var, log_prior), ref, "log_proba")
    assert_scores_close(predict_proba(x, mean, var, log_prior), ref, "proba")
    labels_pred = predict(x, mean, var, log_prior)
    np.testing.assert_array_equal(
        labels_pred,
        np.argmax(joint_log_likelihood(np.array(x, np.float64), mean, var, log_prior), 1),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_gives_exact_results(layout: str, dtype: type) -> None:
    make, in_place = LAYOUTS[layout]
    base = base_data(dtype)
    x = make(base)
    np.testing.assert_array_equal(x, base)  # same logical content, different memory
    check_layout(x, LABELS, N_CLASSES)
    coerced = as_float_array(x)
    if in_place:
        # Handed to Rust as-is: the very same array object, no copy.
        assert coerced is x, layout
    else:
        assert not np.shares_memory(coerced, x)
        assert coerced.dtype == np.dtype(dtype) and coerced.dtype.isnative
        assert coerced.flags.aligned


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_memmap_read_only_fortran(tmp_path: Path, dtype: type) -> None:
    x = memmap_of(base_data(dtype), tmp_path / "x.bin")
    assert not x.flags.writeable and x.flags.f_contiguous
    check_layout(x, LABELS, N_CLASSES)
    assert as_float_array(x) is x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stride_zero_broadcast_rows(dtype: type) -> None:
    # Every row is the same memory: each class has m2 exactly 0 and mean exactly the row.
    row = base_data(dtype)[0]
    x = np.broadcast_to(row, (N_ROWS, N_FEATURES))
    assert x.strides[0] == 0
    stats = class_stats(x, LABELS, N_CLASSES)
    np.testing.assert_array_equal(stats.mean, np.tile(row.astype(np.float64), (N_CLASSES, 1)))
    np.testing.assert_array_equal(stats.m2, 0.0)
    check_layout(x, LABELS, N_CLASSES)
    assert as_float_array(x) is x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stride_zero_broadcast_columns(dtype: type) -> None:
    column = base_data(dtype)[:, 0]
    x = np.broadcast_to(column[:, None], (N_ROWS, N_FEATURES))
    assert x.strides[1] == 0
    stats = class_stats(x, LABELS, N_CLASSES)
    # All features are the same column, so all their statistics are bit-identical.
    assert np.all(stats.mean == stats.mean[:, :1]) and np.all(stats.m2 == stats.m2[:, :1])
    check_layout(x, LABELS, N_CLASSES)
    assert as_float_array(x) is x


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64, np.float16, np.bool_]
)
def test_integer_bool_and_float16_input(dtype: type) -> None:
    rng = np.random.default_rng(2)
    values = rng.integers(0, 2 if dtype is np.bool_ else 100, size=(N_ROWS, N_FEATURES))
    if dtype is np.float16:
        values = values + rng.normal(size=values.shape)  # non-integer float16 values
    x = values.astype(dtype)
    coerced = as_float_array(x)
    assert coerced.dtype == np.float64  # converted once, never kept as int/float16
    labels = LABELS.copy()
    check_layout(x, labels, N_CLASSES)
    # Same as giving the exactly converted float64 array.
    a, b = class_stats(x, labels), class_stats(x.astype(np.float64), labels)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.m2, b.m2)


def test_out_buffer_is_written_in_place() -> None:
    x = base_data(np.float64)
    mean, var, log_prior = np.full((2, N_FEATURES), 1e3), np.ones((2, N_FEATURES)), np.zeros(2)
    backing = np.zeros((N_ROWS * 2, 6))
    out = backing[::2, 1:5:2]
    result = predict_proba(x, mean, var, log_prior, out=out)
    assert result is out and np.shares_memory(result, backing)


# ------------------------------------------------------------------------------ memory

MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import numpy as np
    import gaussmle

    op = sys.argv[1]
    n_rows, n_features, n_classes = 1_000_000, 20, 3

    def hwm_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    # Build X column by column so no temporary of X's size ever exists (the peak RSS before
    # the call is then X plus small change).
    x = np.empty((n_rows, n_features), dtype=np.float32, order="F")
    rng = np.random.default_rng(0)
    for j in range(n_features):
        x[:, j] = rng.standard_normal(n_rows, dtype=np.float32) + 1e3
    y = (np.arange(n_rows) % n_classes).astype(np.int64)
    mean = np.full((n_classes, n_features), 1e3) + np.arange(n_classes)[:, None]
    var = np.ones((n_classes, n_features))
    log_prior = np.log(np.full(n_classes, 1 / n_classes))
    pred_out = np.empty(n_rows, dtype=np.int64)
    proba_out = np.empty((n_rows, n_classes), dtype=np.float32, order="F")
    pred_out[:] = 0
    proba_out[:] = 0
    # Warm-up on a small slice: thread pools, SIMD dispatch and lazy imports exist before.
    small = x[:1000]
    gaussmle.class_stats(small, y[:1000], n_classes)
    gaussmle.predict(small, mean, var, log_prior)
    gaussmle.predict_proba(small, mean, var, log_prior)

    calls = {
        "class_stats": lambda: gaussmle.class_stats(x, y, n_classes),
        "predict": lambda: gaussmle.predict(x, mean, var, log_prior, out=pred_out),
        "proba": lambda: gaussmle.predict_proba(x, mean, var, log_prior, out=proba_out),
    }
    hwm_before = hwm_kib()
    tracemalloc.start()
    base_traced, _ = tracemalloc.get_traced_memory()
    calls[op]()
    _, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm_after = hwm_kib()
    print(json.dumps({
        "x_bytes": x.nbytes,
        "hwm_growth_bytes": (hwm_after - hwm_before) * 1024,
        "traced_peak_bytes": peak_traced - base_traced,
        "is_fortran": bool(x.flags.f_contiguous),
    }))
    """
)


@pytest.mark.parametrize("op", ["class_stats", "predict", "proba"])
def test_large_fortran_float32_input_is_not_copied(op: str) -> None:
    """Peak extra memory of one call on an 80 MB float32 Fortran-ordered X stays far below
    X's size, so X is neither copied nor converted (to C order or float64).

    Measured in a fresh subprocess (so the test process's own history does not matter):

    * ``VmHWM`` (peak resident set size, kernel-maintained) growth during the call: every
      allocation that gets touched, Rust's included. X is built column by column, so the
      high-water mark before the call is X plus small change, and any copy of X (even a
      transient one, freed before the call returns) would raise it by >= 80 MB.
    * ``tracemalloc`` peak: numpy reports its buffers to tracemalloc, so this catches any
      numpy-level copy or conversion (Python side or an array created by the extension).
    The outputs are preallocated before measuring (predict's int64 labels, proba's buffer).
    """
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, op],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["is_fortran"] and info["x_bytes"] == 80_000_000
    limit = info["x_bytes"] // 10  # "far below": 8 MB, 10% of X
    assert info["hwm_growth_bytes"] < limit, info
    assert info["traced_peak_bytes"] < limit, info
