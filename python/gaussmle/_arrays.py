"""Input coercion: the one place that decides which arrays reach Rust as-is and which are converted.

Rust reads float32 and float64 matrices in place, whatever their strides. Anything else is
converted exactly once here:

* integer, bool, float16 and long-double data -> float64 (float16 is never kept as float16;
  long double is rounded to float64, which is what the kernels compute in);
* big-endian (non-native byte order) float32/float64 -> the same dtype in native order;
* unaligned float32/float64 -> one aligned copy (a typed read of an unaligned pointer would be
  undefined behaviour in Rust).

Everything else (complex, object, strings, datetimes) is a ``TypeError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

#: dtypes that the Rust kernels read in place.
NATIVE_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _convertible_kind(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "biuf"


def as_float_array(x: Any, name: str = "X", ndim: int = 2) -> FloatArray:
    """Return ``x`` as a float32/float64 ndarray of ``ndim`` dimensions, copying only if needed."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    dtype = arr.dtype
    if dtype in NATIVE_FLOAT_DTYPES and dtype.isnative:
        if not arr.flags.aligned:
            arr = np.array(arr, dtype=dtype, order="K", copy=True)
    elif _convertible_kind(dtype):
        # Byte-swapped float32/float64 keep their width; everything else (ints, bool, float16,
        # long double) becomes float64.
        swapped_native = dtype.kind == "f" and dtype.itemsize in (4, 8)
        target = dtype.newbyteorder("=") if swapped_native else np.float64
        arr = np.asarray(arr, dtype=target)
        if not arr.flags.aligned:
            arr = np.array(arr, copy=True)
    else:
        raise TypeError(
            f"{name} must hold real numbers (float32, float64, integers or bool); got dtype {dtype}"
        )
    if arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array; got {arr.ndim}-D with shape {arr.shape}"
        )
    return arr


_INT64_MAX = np.iinfo(np.int64).max


def as_labels(
    y: Any, n_rows: int, name: str = "y"
) -> npt.NDArray[np.int64] | npt.NDArray[np.int32]:
    """Integer class codes as int32/int64 (native, aligned), one per row."""
    arr = y if isinstance(y, np.ndarray) else np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} entries but X has {n_rows} rows")
    if arr.dtype.kind == "f":
        # Float labels are fine when they are whole numbers (1.0 is class 1); anything else
        # is a bad value, not a bad type.
        with np.errstate(invalid="ignore"):
            not_integral = ~np.isfinite(arr) | (arr != np.round(arr))
        if not_integral.any():
            row = int(np.argmax(not_integral))
            raise ValueError(
                f"{name} must hold integral class codes 0..n_classes-1; got {float(arr[row])} "
                f"at row {row}"
            )
        if arr.size and np.abs(arr).max() >= 2.0**63:
            raise ValueError(f"{name} holds a class code outside the int64 range")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "biu":
        raise TypeError(
            f"{name} must hold integer class codes 0..n_classes-1; got dtype {arr.dtype}"
        )
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > _INT64_MAX:
        # astype(int64) would wrap these to negative codes.
        raise ValueError(f"{name} holds a class code above {_INT64_MAX}; codes are 0..n_classes-1")
    if not (
        arr.dtype in (np.dtype(np.int32), np.dtype(np.int64))
        and arr.dtype.isnative
        and arr.flags.aligned
    ):
        arr = arr.astype(np.int64)
    return arr


def as_weights(sample_weight: Any, n_rows: int) -> npt.NDArray[np.float64] | None:
    """Sample weights as a native float64 vector of length ``n_rows`` (or None)."""
    if sample_weight is None:
        return None
    w = sample_weight if isinstance(sample_weight, np.ndarray) else np.asarray(sample_weight)
    if w.ndim == 0:
        w = np.full(n_rows, float(w), dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D; got shape {w.shape}")
    if w.shape[0] != n_rows:
        raise ValueError(f"sample_weight has {w.shape[0]} entries but X has {n_rows} rows")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric; got dtype {w.dtype}")
    if not (w.dtype == np.dtype(np.float64) and w.dtype.isnative and w.flags.aligned):
        w = w.astype(np.float64)
    return w
