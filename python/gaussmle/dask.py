"""Fit and score Gaussian naive Bayes on Dask collections, without moving the data.

Install with ``pip install gaussmle[dask]``; the rest of gaussmle never imports Dask.

How :meth:`GaussianNB.fit` works
--------------------------------
1. Unless ``classes=`` is given, the labels are found with one cheap distributed pass
   (:func:`dask.array.unique` or ``Series.drop_duplicates``); only the unique labels reach
   the client.
2. Every row block (array chunk or DataFrame partition) is reduced **on the worker that holds
   it** by the Rust kernel :func:`gaussmle.class_stats` to a :class:`~gaussmle.ClassStats`,
   whose size is ``O(n_classes * n_features)`` whatever the number of rows.
3. The per-block statistics are merged by a tree of tasks whose shape depends only on the
   number of blocks (``split_every`` children per node, merged left to right), so the result
   is bit-identical from run to run and from one cluster size to another.
4. The one merged ``ClassStats`` travels to the client and becomes a plain
   :class:`gaussmle.GaussianNB` through :meth:`~gaussmle.GaussianNB.from_class_stats`.

The merge is the exact double-double Chan/Schubert-Gertz update, so the model equals
``gaussmle.GaussianNB().fit(X.compute(), y.compute())`` to ~1e-15 relative, also for data
far from zero (offsets like 1e6) and for any chunking.

Prediction on a Dask collection is lazy: each row block is scored where it lives by the Rust
scorer (:func:`dask.array.map_blocks`), and the fitted model (a few kilobytes) is the only
thing shipped to the workers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

try:
    import dask as _dask
    import dask.array as _da
    import dask.sizeof as _dask_sizeof
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "gaussmle.dask needs Dask; install it with `pip install gaussmle[dask]`"
    ) from exc

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import _get_feature_names

from gaussmle._labels import encode, sorted_classes
from gaussmle._threads import threads_for_n_jobs
from gaussmle.stats import ClassStats, class_stats

if TYPE_CHECKING:
    from typing import Self

    from gaussmle.estimator import GaussianNB as LocalGaussianNB

__all__ = ["GaussianNB", "class_stats_delayed"]

AnyArray = npt.NDArray[Any]
#: Dask is only partly typed; its objects are handled as ``Any`` here.
DaskArray = Any
Delayed = Any
dask: Any = _dask
da: Any = _da


def _sizeof_class_stats(stats: ClassStats) -> int:
    """Let Dask account for the real size of a ClassStats (its arrays), not ~50 bytes."""
    arrays = (stats.weight, stats.mean, stats.m2, stats.global_mean, stats.global_m2)
    extra = (stats.mean_lo, stats.global_mean_lo)
    return 64 + sum(a.nbytes for a in arrays) + sum(a.nbytes for a in extra if a is not None)


_sizeof: Any = _dask_sizeof.sizeof
_sizeof.register(ClassStats)(_sizeof_class_stats)


# ---------------------------------------------------------------------------- input handling


def _dataframe_types() -> tuple[type, type]:
    """``(dask DataFrame, dask Series)``, or two never-matching types without dask.dataframe."""
    try:
        import dask.dataframe as dd
    except ImportError:  # pragma: no cover - pandas missing

        class _Never:
            pass

        return _Never, _Never
    return dd.DataFrame, dd.Series


def _is_frame(obj: Any) -> bool:
    frame, series = _dataframe_types()
    return isinstance(obj, frame | series)


def _is_dataframe(obj: Any) -> bool:
    """A dask DataFrame (a dask Series has a ``columns`` attribute too, so test the type)."""
    frame, _ = _dataframe_types()
    return isinstance(obj, frame)


def _frame_to_array(obj: Any) -> DaskArray:
    """A dask DataFrame/Series as a dask array with known chunk lengths (one cheap pass)."""
    return obj.to_dask_array(lengths=True)


def _frame_model_dtype(frame: Any) -> np.dtype[Any]:
    """float32 when every column is float32 (as scikit-learn's ``check_array``), else float64."""
    dtypes = list(frame.dtypes) if _is_dataframe(frame) else [frame.dtype]
    if dtypes and all(isinstance(d, np.dtype) and d == np.float32 for d in dtypes):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _array_model_dtype(x: DaskArray) -> np.dtype[Any]:
    return np.dtype(np.float32) if x.dtype == np.float32 else np.dtype(np.float64)


def _frame_feature_names(frame: Any) -> AnyArray | None:
    """scikit-learn's ``feature_names_in_`` of a dask DataFrame (None for anything else).

    scikit-learn's own ``_get_feature_names`` (as in ``fit`` and ``fit_stream``) on the
    frame's empty pandas ``_meta``: all-string column names, None for non-string ones, and a
    TypeError for a mix of both.
    """
    if not _is_dataframe(frame):
        return None
    names: AnyArray | None = _get_feature_names(frame._meta)
    return names


def _scalar_weight(sample_weight: Any) -> float | None:
    """A scalar ``sample_weight`` (the weight of every row, as in ``fit``) as a float.

    None if ``sample_weight`` is not a scalar.
    """
    if (
        sample_weight is None
        or isinstance(sample_weight, da.Array)
        or _is_frame(sample_weight)
        or np.ndim(sample_weight) != 0
    ):
        return None
    value = np.asarray(sample_weight)
    if value.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be a number or an array of numbers; got {value!r}")
    weight = float(value)
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"sample_weight must be finite and >= 0; got {weight}")
    return weight


def _as_dask_array(obj: Any, name: str) -> DaskArray:
    if isinstance(obj, da.Array):
        return obj
    if _is_frame(obj):
        return _frame_to_array(obj)
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        return da.asarray(np.asarray(obj))
    raise TypeError(f"{name} must be a dask array, a dask DataFrame/Series or an ndarray")


def _labels_1d(y: Any, name: str = "y") -> Any:
    """``y`` as a dask Series or a 1-D dask array, as scikit-learn's ``column_or_1d`` would.

    A one-column DataFrame or an ``(n, 1)`` array is flattened; any other 2-D shape (``(1, n)``
    included) is a ValueError.
    """
    if _is_dataframe(y):
        if len(y.columns) != 1:
            raise ValueError(
                f"{name} must be a dask Series, a 1-D dask array or a one-column DataFrame; "
                f"got a DataFrame with {len(y.columns)} columns"
            )
        return y[y.columns[0]]
    if _is_frame(y):
        return y
    arr = _as_dask_array(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} should be a 1d array, got an array of shape {arr.shape} instead.")
    return arr


def _with_known_chunks(arr: DaskArray) -> DaskArray:
    """``arr`` with known chunk lengths (one pass over its graph if they are unknown).

    Works on a new Array object: the caller's array is not modified.
    """
    if not any(math.isnan(c) for c in arr.chunks[0]):
        return arr
    known = da.Array(arr.dask, arr.name, arr.chunks, meta=arr._meta)
    known.compute_chunk_sizes()
    return known


def _numeric_frame(frame: Any) -> Any:
    """A dask DataFrame with nullable/extension columns cast to float64 (pd.NA -> NaN).

    ``to_dask_array`` would give object blocks holding pd.NA, which no float conversion
    accepts; NaN is then reported by the scorer with its row and column.
    """
    if all(isinstance(d, np.dtype) for d in frame.dtypes):
        return frame
    return frame.astype(np.float64)


def _to_numpy_block(block: Any, numeric: bool = True) -> AnyArray:
    """A pandas partition or numpy chunk as an ndarray, copying only when dtypes force it.

    Labels (``numeric=False``) keep their values (e.g. Arrow strings become objects).
    """
    if isinstance(block, np.ndarray):
        return block
    to_numpy = getattr(block, "to_numpy", None)
    if to_numpy is None or not numeric:
        return np.asarray(block)
    dtypes = list(block.dtypes) if hasattr(block, "columns") else [block.dtype]
    if all(isinstance(d, np.dtype) for d in dtypes):
        result: AnyArray = to_numpy()
        return result
    # Nullable/extension dtypes: missing values become NaN, which the Rust pass rejects.
    result = to_numpy(dtype=np.float64, na_value=np.nan)
    return result


# ---------------------------------------------------------------------------- worker tasks


def _block_stats(
    x: Any,
    y: Any,
    w: Any,
    classes: AnyArray,
    n_features: int,
    block_index: int,
    row_offset: int | None,
    n_jobs: int | None,
) -> ClassStats:
    """Reduce one row block to its ClassStats (runs on a worker).

    ``n_jobs`` is resolved here, on the worker: ``-1`` means the worker's cores. ``w`` is None,
    a block of weights, or a float (the weight of every row).
    """
    try:
        xb = _to_numpy_block(x)
        yb = _to_numpy_block(y, numeric=False).reshape(-1)
        if w is None:
            wb = None
        elif isinstance(w, float):
            wb = np.full(xb.shape[0], w)
        else:
            wb = np.asarray(_to_numpy_block(w), dtype=np.float64).reshape(-1)
        if xb.ndim != 2 or xb.shape[1] != n_features:
            raise ValueError(f"X block has shape {xb.shape}; expected (n, {n_features})")
        if yb.shape[0] != xb.shape[0]:
            raise ValueError(f"X block has {xb.shape[0]} rows but y block has {yb.shape[0]}")
        if wb is not None and wb.shape[0] != xb.shape[0]:
            raise ValueError(
                f"X block has {xb.shape[0]} rows but sample_weight block has {wb.shape[0]}"
            )
        if xb.shape[0] == 0:
            return ClassStats.empty(len(classes), n_features)
        codes = encode(yb, classes)
        n_threads = threads_for_n_jobs(n_jobs)
        return class_stats(xb, codes, len(classes), sample_weight=wb, n_threads=n_threads)
    except ValueError as exc:
        where = f"row block {block_index}"
        if row_offset is not None:
            where += f" (rows from {row_offset})"
        raise ValueError(f"{where}: {exc}") from exc


def _merge_in_order(*parts: ClassStats) -> ClassStats:
    """Merge statistics left to right (a fixed order: the result does not depend on timing)."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _tree_merge(parts: Sequence[Delayed], split_every: int) -> Delayed:
    """Merge delayed ClassStats with a tree of fan-in ``split_every`` in block order."""
    merge = dask.delayed(_merge_in_order, pure=True)
    level = list(parts)
    while len(level) > 1:
        level = [merge(*level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def _block_hits(model: Any, X: Any, y: Any, w: Any) -> tuple[float, float]:
    """(weighted correct predictions, total weight) of one partition."""
    truth = np.asarray(y).ravel()
    hits = (np.asarray(model.predict(X)) == truth).astype(np.float64)
    if w is None:
        return float(hits.sum()), float(hits.size)
    weights = np.broadcast_to(np.asarray(w, dtype=np.float64).ravel(), hits.shape)
    return math.fsum(hits * weights), math.fsum(weights)


def _row_blocks(
    X: Any, y: Any, sample_weight: Any
) -> tuple[list[Any], list[Any], list[Any] | None, list[int | None], int]:
    """Aligned per-block delayed objects for X, y and weights, plus block row offsets."""
    y = _labels_1d(y)
    frames = _is_frame(X) and _is_frame(y)
    if (
        frames
        and X.npartitions == y.npartitions
        and (
            sample_weight is None
            or (_is_frame(sample_weight) and sample_weight.npartitions == X.npartitions)
        )
    ):
        if not _is_dataframe(X):
            raise ValueError("X must be 2-D: a dask DataFrame, not a Series")
        n_features = len(X.columns)
        # Unoptimised graphs: dask's optimiser may fuse the partitions of two column selections
        # of one frame differently (dd.read_parquet: 4 blocks of X against 2 of y), and the
        # blocks must pair up one to one.
        xs = list(X.to_delayed(optimize_graph=False))
        ys = list(y.to_delayed(optimize_graph=False))
        ws = None if sample_weight is None else list(sample_weight.to_delayed(optimize_graph=False))
        return xs, ys, ws, [None] * len(xs), n_features

    x = _as_dask_array(X, "X")
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D; got {x.ndim}-D with shape {x.shape}")
    yarr = _labels_1d(y)
    if _is_frame(yarr):
        yarr = _frame_to_array(yarr)
    if len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})
    row_chunks = x.chunks[0]
    known = not any(math.isnan(c) for c in row_chunks)

    def align(v: DaskArray, name: str) -> DaskArray:
        if v.chunks[0] == row_chunks:
            return v
        if not known or any(math.isnan(c) for c in v.chunks[0]):
            raise ValueError(
                f"{name} and X have different or unknown row chunks; call "
                "`.compute_chunk_sizes()` on both or give them the same chunks"
            )
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"{name} has {v.shape[0]} entries but X has {x.shape[0]} rows")
        return v.rechunk((row_chunks,))

    yarr = align(yarr, "y")
    warr = None
    if sample_weight is not None:
        warr = align(_as_dask_array(sample_weight, "sample_weight"), "sample_weight")
        if warr.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D; got shape {warr.shape}")
    xs = [row[0] for row in x.to_delayed()]
    ys = list(yarr.to_delayed())
    ws = None if warr is None else list(warr.to_delayed())
    offsets: list[int | None]
    if known:
        starts = np.concatenate([[0], np.cumsum(row_chunks)[:-1]]).astype(int).tolist()
        offsets = list(starts)
    else:
        offsets = [None] * len(xs)
    return xs, ys, ws, offsets, int(x.shape[1])


def class_stats_delayed(
    X: Any,
    y: Any,
    classes: Any,
    *,
    sample_weight: Any = None,
    split_every: int = 8,
    n_jobs: int | None = None,
) -> Delayed:
    """Lazy per-class statistics of a Dask collection: a Delayed :class:`~gaussmle.ClassStats`.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features) or dask.dataframe.DataFrame
    y : dask.array.Array of shape (n_samples,) or dask.dataframe.Series
        Labels; every label must be in ``classes``.
    classes : array_like
        All class labels. Row ``i`` of the statistics belongs to ``sorted(classes)[i]``.
    sample_weight : dask.array.Array, dask.dataframe.Series or float, optional
        Weights chunked like X, or one number: the weight of every row.
    split_every : int, default=8
        Fan-in of the merge tree.
    n_jobs : int, optional
        Rust threads per block task, resolved on the worker: ``None`` uses
        ``GAUSSMLE_NUM_THREADS`` or all cores of the worker, ``-1`` all cores of the worker.

    Returns
    -------
    dask.delayed.Delayed
        Computing it runs one ``class_stats`` task per row block on the workers and a fixed
        merge tree; only the final ``ClassStats`` is sent to the caller.
    """
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2; got {split_every}")
    cls_arr = sorted_classes(classes)
    threads_for_n_jobs(n_jobs)  # a bad n_jobs fails here, on the client; resolved per task
    scalar_weight = _scalar_weight(sample_weight)
    xs, ys, ws, offsets, n_features = _row_blocks(
        X, y, None if scalar_weight is not None else sample_weight
    )
    if scalar_weight is not None:
        ws = [scalar_weight] * len(xs)
    if n_features < 1:
        raise ValueError("X has no features")
    if not xs:
        raise ValueError("X has no row blocks")
    classes_d = dask.delayed(cls_arr, pure=True)
    block = dask.delayed(_block_stats, pure=True)
    parts = [
        block(
            xs[i],
            ys[i],
            None if ws is None else ws[i],
            classes_d,
            n_features,
            i,
            offsets[i],
            n_jobs,
        )
        for i in range(len(xs))
    ]
    return _tree_merge(parts, split_every)


def _discover_classes(y: Any) -> AnyArray:
    """The sorted unique labels of ``y``, found on the workers (only uniques travel)."""
    labels = _labels_1d(y)
    if _is_frame(labels):
        uniques = np.asarray(labels.drop_duplicates().compute())
    else:
        uniques = np.asarray(da.unique(labels).compute())
    if uniques.size == 0:
        raise ValueError("y is empty")
    return sorted_classes(uniques)


# ---------------------------------------------------------------------------- prediction


_FEATURE_NAME_WARNING = "X does not have valid feature names"


def _score_block(
    block: AnyArray, model: LocalGaussianNB, method: str, block_id: tuple[int, ...] | None = None
) -> AnyArray:
    """Score one row block with the local model (runs on a worker)."""
    try:
        with warnings.catch_warnings():
            # Feature names were checked once on the client against the DataFrame's columns.
            warnings.filterwarnings("ignore", message=_FEATURE_NAME_WARNING, category=UserWarning)
            result: AnyArray = getattr(model, method)(block)
    except ValueError as exc:
        if block_id is None:
            raise
        # Name the block, as fit does (the row and column in the message are within it).
        raise ValueError(f"row block {block_id[0]}: {exc}") from exc
    return result


# ---------------------------------------------------------------------------- estimator


class GaussianNB(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Gaussian naive Bayes fitted on Dask arrays or DataFrames, scored lazily.

    Same parameters and fitted attributes as :class:`gaussmle.GaussianNB`; the fit reduces
    every row block on the worker that holds it and only the per-class statistics travel.

    Parameters
    ----------
    priors : array-like of shape (n_classes,), default=None
        Prior probabilities of the classes; if given they are not adjusted to the data.
    var_smoothing : float, default=1e-9
        Portion of the largest unweighted feature variance added to every variance.
    n_jobs : int, default=None
        Rust threads per block task on the workers (and for local scoring), resolved on
        each worker: ``None`` uses ``GAUSSMLE_NUM_THREADS`` or all its cores, ``-1`` all its
        cores. With several Dask threads per worker, ``n_jobs=1`` avoids oversubscription.
        Results do not depend on it.
    split_every : int, default=8
        Fan-in of the merge tree over row blocks.

    Attributes
    ----------
    estimator_ : gaussmle.GaussianNB
        The fitted local estimator (see :meth:`to_local`).
    classes_, class_count_, class_prior_, theta_, var_, epsilon_, n_features_in_, feature_names_in_
        As in :class:`gaussmle.GaussianNB`.

    Examples
    --------
    >>> import dask.array as da
    >>> from gaussmle.dask import GaussianNB
    >>> X = da.random.default_rng(0).normal(size=(10_000, 4), chunks=(2_500, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> model = GaussianNB().fit(X, y)
    >>> model.predict(X)  # lazy  # doctest: +ELLIPSIS
    dask.array<...>
    """

    def __init__(
        self,
        *,
        priors: npt.ArrayLike | None = None,
        var_smoothing: float = 1e-9,
        n_jobs: int | None = None,
        split_every: int = 8,
    ) -> None:
        self.priors = priors
        self.var_smoothing = var_smoothing
        self.n_jobs = n_jobs
        self.split_every = split_every

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, classes: Any = None) -> Self:
        """Fit on a Dask collection, reducing each row block on its worker.

        Parameters
        ----------
        X : dask.array.Array of shape (n_samples, n_features) or dask.dataframe.DataFrame
            Training vectors (any row chunking; column chunks are joined). A numpy array is
            wrapped in one chunk.
        y : dask.array.Array of shape (n_samples,) or dask.dataframe.Series
            Target values, chunked like X (rechunked if the chunk sizes are known).
        sample_weight : dask.array.Array, dask.dataframe.Series or float, optional
            Non-negative weights, chunked like X, or one number: the weight of every row
            (as in :meth:`gaussmle.GaussianNB.fit`).
        classes : array-like, optional
            All class labels. If omitted they are found with one pass over ``y``. Classes
            without any sample get a prior of 0 (as with ``partial_fit``).

        Returns
        -------
        self : object

        Raises
        ------
        ValueError
            For NaN/inf in X (the message names the row block and the row and column within
            it), labels not in ``classes``, negative weights or mismatched shapes. The
            estimator is left unchanged.
        TypeError
            For DataFrame column names that mix strings and other types (as ``fit``).
        """
        from gaussmle.estimator import GaussianNB as LocalGaussianNB

        # Column names and weights are checked before anything runs on the cluster.
        if _is_frame(X):
            dtype = _frame_model_dtype(X)
            names = _frame_feature_names(X)
        else:
            dtype = _array_model_dtype(_as_dask_array(X, "X"))
            names = None
        _scalar_weight(sample_weight)
        cls_arr = _discover_classes(y) if classes is None else sorted_classes(classes)
        # Fail on a bad parameter before any block is reduced on the cluster.
        LocalGaussianNB(
            priors=self.priors, var_smoothing=self.var_smoothing, n_jobs=self.n_jobs
        ).check_parameters(len(cls_arr))
        root = class_stats_delayed(
            X,
            y,
            cls_arr,
            sample_weight=sample_weight,
            split_every=self.split_every,
            n_jobs=self.n_jobs,
        )
        (stats,) = dask.compute(root)
        local = LocalGaussianNB.from_class_stats(
            stats,
            cls_arr,
            priors=self.priors,
            var_smoothing=self.var_smoothing,
            n_jobs=self.n_jobs,
            dtype=dtype,
            feature_names=names,
        )
        self.estimator_ = local
        return self

    def to_local(self) -> LocalGaussianNB:
        """The fitted model as a plain, independent :class:`gaussmle.GaussianNB`.

        Returns
        -------
        gaussmle.GaussianNB
            A copy: fitting it further (``partial_fit``) does not change this estimator.
        """
        import copy

        return copy.deepcopy(self._local())

    def _local(self) -> LocalGaussianNB:
        local: LocalGaussianNB | None = self.__dict__.get("estimator_")
        if local is None:
            from gaussmle.estimator import not_fitted_error

            raise not_fitted_error(self)
        return local

    # ------------------------------------------------------------------ fitted attributes

    @property
    def classes_(self) -> AnyArray:
        return self._local().classes_

    @property
    def class_count_(self) -> AnyArray:
        return self._local().class_count_

    @property
    def class_prior_(self) -> AnyArray:
        return self._local().class_prior_

    @property
    def theta_(self) -> AnyArray:
        return self._local().theta_

    @property
    def var_(self) -> AnyArray:
        return self._local().var_

    @property
    def epsilon_(self) -> Any:
        return self._local().epsilon_

    @property
    def n_features_in_(self) -> int:
        return int(self._local().n_features_in_)

    @property
    def feature_names_in_(self) -> AnyArray:
        return self._local().feature_names_in_

    def get_class_stats(self) -> ClassStats:
        """The merged sufficient statistics of all training rows."""
        return self._local().get_class_stats()

    # ------------------------------------------------------------------ prediction

    def _lazy(self, X: Any, method: str) -> Any:
        """Score ``X`` with ``method`` of the local model; lazy for Dask input."""
        local = self._local()
        if not (isinstance(X, da.Array) or _is_frame(X)):
            return getattr(local, method)(X)
        if _is_frame(X):
            if not _is_dataframe(X):
                raise ValueError("X must be 2-D: a dask DataFrame, not a Series")
            self._check_columns(X, local)
            # Chunk lengths may be unknown: fine for map_blocks.
            x = _numeric_frame(X).to_dask_array()
        else:
            x = X
        if x.ndim != 2:
            raise ValueError(f"X must be 2-D; got {x.ndim}-D with shape {x.shape}")
        if x.shape[1] != local.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                f"{local.n_features_in_} features as input."
            )
        if len(x.chunks[1]) > 1:
            x = x.rechunk({1: -1})
        # Output dtype: whatever the local model returns for this input dtype.
        probe = _score_block(np.zeros((1, x.shape[1]), dtype=x.dtype), local, method)
        model = dask.delayed(local, pure=True)
        if method == "predict":
            return x.map_blocks(
                _score_block,
                model,
                method,
                drop_axis=1,
                chunks=(x.chunks[0],),
                dtype=probe.dtype,
                meta=np.empty((0,), dtype=probe.dtype),
            )
        n_classes = int(local.classes_.shape[0])
        return x.map_blocks(
            _score_block,
            model,
            method,
            chunks=(x.chunks[0], (n_classes,)),
            dtype=probe.dtype,
            meta=np.empty((0, 0), dtype=probe.dtype),
        )

    @staticmethod
    def _check_columns(X: Any, local: LocalGaussianNB) -> None:
        fitted = local.__dict__.get("_fitted_state")
        names = None if fitted is None else fitted.feature_names
        given = _frame_feature_names(X)
        if names is None or given is None:
            return
        if list(names) != list(given):
            raise ValueError(
                "The feature names should match those that were passed during fit: "
                f"fitted with {list(names)}, got {list(given)}"
            )

    def predict(self, X: Any) -> Any:
        """Predicted class of every row; a lazy dask array for Dask input.

        Parameters
        ----------
        X : dask.array.Array, dask.dataframe.DataFrame or array-like

        Returns
        -------
        dask.array.Array or ndarray of shape (n_samples,)
        """
        return self._lazy(X, "predict")

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities; a lazy dask array for Dask input.

        Returns
        -------
        dask.array.Array or ndarray of shape (n_samples, n_classes)
        """
        return self._lazy(X, "predict_proba")

    def predict_log_proba(self, X: Any) -> Any:
        """Log class probabilities; a lazy dask array for Dask input.

        Returns
        -------
        dask.array.Array or ndarray of shape (n_samples, n_classes)
        """
        return self._lazy(X, "predict_log_proba")

    def predict_joint_log_proba(self, X: Any) -> Any:
        """Joint log-likelihood ``log P(x, y)``; a lazy dask array for Dask input.

        Returns
        -------
        dask.array.Array or ndarray of shape (n_samples, n_classes)
        """
        return self._lazy(X, "predict_joint_log_proba")

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on ``X, y`` (computed on the workers for Dask input).

        Returns
        -------
        float
        """
        if not (isinstance(X, da.Array) or _is_frame(X)):
            from sklearn.metrics import accuracy_score

            return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))
        if _is_frame(X):
            if not _is_dataframe(X):
                raise ValueError("X must be 2-D: a dask DataFrame, not a Series")
            local = self._local()
            self._check_columns(X, local)
            labels = _labels_1d(y)
            if _is_frame(labels) and labels.npartitions == X.npartitions:
                # Partition by partition, as fit pairs them (their array forms can disagree
                # on the partition count after dask's optimiser; see _row_blocks).
                scalar = _scalar_weight(sample_weight)
                xs, ys, ws, _, _ = _row_blocks(
                    _numeric_frame(X), labels, None if scalar is not None else sample_weight
                )
                block = dask.delayed(_block_hits, pure=True)
                local_d = dask.delayed(local, pure=True)
                totals = dask.compute(
                    *(
                        block(local_d, xs[i], ys[i], scalar if ws is None else ws[i])
                        for i in range(len(xs))
                    )
                )
                hits_total = math.fsum(t[0] for t in totals)
                weight_total = math.fsum(t[1] for t in totals)
                if not weight_total > 0:
                    raise ValueError("score needs rows with a positive total sample weight")
                return hits_total / weight_total
            x = _numeric_frame(X).to_dask_array(lengths=True)  # one cheap pass: row counts
        else:
            x = _with_known_chunks(X)
        predicted = self.predict(x)
        truth = self._aligned(_labels_1d(y), predicted, "y")
        hits = (predicted == truth).astype(np.float64)
        if sample_weight is None:
            return float(hits.mean().compute())
        w = self._aligned(_labels_1d(sample_weight, "sample_weight"), predicted, "sample_weight")
        num, den = dask.compute((hits * w).sum(), w.sum())
        return float(num / den)

    @staticmethod
    def _aligned(values: Any, predicted: DaskArray, name: str) -> DaskArray:
        """``values`` (1-D, any chunks, known or not) chunked like ``predicted``."""
        arr = _with_known_chunks(_frame_to_array(values) if _is_frame(values) else values)
        if arr.shape[0] != predicted.shape[0]:
            raise ValueError(
                f"{name} has {arr.shape[0]} entries but X has {predicted.shape[0]} rows"
            )
        if arr.chunks[0] != predicted.chunks[0]:
            arr = arr.rechunk((predicted.chunks[0],))
        return arr
