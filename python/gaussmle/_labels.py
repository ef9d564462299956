"""Label handling shared by the out-of-core front ends (`gaussmle.dask`, `gaussmle.streaming`).

When the set of classes is known up front, every batch of labels is encoded on its own, with
no state: a label's code is its index in the sorted ``classes``. Batches can then be reduced
independently (on different machines, or one after another) and their statistics merged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

AnyArray = npt.NDArray[Any]


def sorted_classes(classes: Any) -> AnyArray:
    """``classes`` as scikit-learn's ``classes_`` would be: sorted, unique, validated.

    Raises
    ------
    ValueError
        If ``classes`` is empty, not 1-D, or mixes label types.
    """
    from sklearn.utils.multiclass import unique_labels

    arr = np.asarray(classes)
    if arr.ndim != 1:
        raise ValueError(f"classes must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("classes must not be empty")
    result: AnyArray = unique_labels(arr)
    return result


def encode(y: Any, classes: AnyArray, name: str = "y") -> npt.NDArray[np.int64]:
    """Code of every label of ``y``: its index in the sorted array ``classes``.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or holds a label that is not in ``classes`` (the message lists
        the unknown labels).
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {labels.shape}")
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        codes = np.searchsorted(classes, labels)
    except TypeError as exc:
        raise ValueError(
            f"labels of {name} cannot be compared with classes {classes!r}: {exc}"
        ) from exc
    codes = np.minimum(codes, classes.shape[0] - 1)
    known = np.asarray(classes[codes] == labels, dtype=bool)
    if not known.all():
        bad = labels[~known]
        try:
            unknown = np.unique(bad).tolist()
        except TypeError:
            unknown = sorted({repr(v) for v in bad.tolist()})
        raise ValueError(
            f"{name} contains label(s) {unknown} that are not in the classes {classes.tolist()}"
        )
    return np.asarray(codes, dtype=np.int64)
