"""Out-of-core fitting: stream batches through the Rust kernel, holding one batch at a time.

:func:`fit_stream` accepts either

* an iterable of ``(X_batch, y_batch)`` or ``(X_batch, y_batch, w_batch)`` tuples (a
  generator reading a database, Parquet row groups, ...), or
* a ``.npy`` file path (or an array, e.g. an existing ``np.memmap``) plus the labels as a
  second ``.npy`` path or an array. The file is opened with ``np.load(mmap_mode="r")`` and
  read in row batches; the pages of a batch are released from the process as soon as it is
  reduced, so the resident memory stays about one batch even for files larger than RAM.

Each batch is reduced by :func:`gaussmle.class_stats` to a :class:`~gaussmle.ClassStats` and
merged exactly into a running total, so the streamed model equals an in-memory ``fit`` on all
rows (to ~1e-15 relative). A rejected batch raises :class:`BatchError` naming its index; the
model of all earlier batches is kept (``error.estimator``) and the stream can continue.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gaussmle._labels import encode, sorted_classes
from gaussmle._threads import threads_for_n_jobs
from gaussmle.stats import ClassStats, class_stats

if TYPE_CHECKING:
    from gaussmle.estimator import GaussianNB

__all__ = ["BatchError", "fit_stream", "iter_npy_batches"]

AnyArray = npt.NDArray[Any]
PathLike = str | os.PathLike[str]

#: Default batch size for arrays and ``.npy`` files: about this many bytes of X per batch.
DEFAULT_BATCH_BYTES = 64 * 1024 * 1024


class BatchError(ValueError):
    """A batch of a stream was rejected (NaN/inf, unknown label, wrong shape, bad weights, or
    statistics whose merge with everything before overflows float64).

    Nothing accepted before the rejected batch is lost: it is all in :attr:`estimator` or
    :attr:`pending_stats`, and ``fit_stream(rest, classes=..., estimator=err.estimator,
    initial_stats=err.pending_stats)`` continues with the parameters of the estimator given.

    Attributes
    ----------
    batch_index : int
        0-based index of the rejected batch in this call's stream.
    rows_fitted : int
        Rows of this call's batches before the rejected one (``batch_index`` batches). Rows
        that were in the estimator or in ``initial_stats`` before the call are not counted;
        they are kept all the same.
    estimator : gaussmle.GaussianNB
        The estimator to continue with. If a model exists, it is the model of everything
        before the rejected batch: the estimator passed to :func:`fit_stream`, updated in
        place, if it was fitted, else a new model. If none exists yet (no earlier row, or no
        earlier row with a positive sample weight and no ``priors``), it is an unfitted clone
        of the estimator given (``GaussianNB()`` by default), so that its parameters
        (``priors``, ``var_smoothing``, ``n_jobs``) are kept.
    pending_stats : ClassStats or None
        The statistics of the earlier rows when no model could hold them (every weight was 0
        and there are no ``priors``; the rows still count toward ``epsilon_``). Pass them as
        ``initial_stats=`` to continue. None otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        batch_index: int,
        rows_fitted: int,
        estimator: GaussianNB,
        pending_stats: ClassStats | None = None,
    ) -> None:
        super().__init__(message)
        self.batch_index = batch_index
        self.rows_fitted = rows_fitted
        self.estimator = estimator
        self.pending_stats = pending_stats


# ---------------------------------------------------------------------------- .npy batches


def _open_npy(source: PathLike | AnyArray, name: str) -> AnyArray:
    if isinstance(source, str | os.PathLike):
        arr: AnyArray = np.load(os.fspath(source), mmap_mode="r", allow_pickle=False)
        return arr
    return np.asarray(source) if not isinstance(source, np.ndarray) else source


#: np.memmap modes whose mapping is shared with the file (MAP_SHARED): dropping a page from
#: the process loses nothing, because the page cache (or the file) holds its current content.
#: "c" (copy-on-write, MAP_PRIVATE) is missing on purpose: its edited pages exist only in this
#: process, and dropping them would silently revert the caller's array to the file.
_SHARED_MEMMAP_MODES = frozenset({"r", "r+", "w+"})


def _whole_pages_inside(begin: int, end: int, page: int) -> tuple[int, int] | None:
    """``(offset, length)`` of the whole pages inside bytes ``begin:end``, or None if none.

    The start is rounded up and the end down, so a page shared with a neighbouring batch (or
    with the bytes before or after the array) is never released.
    """
    first = -(-begin // page) * page
    last = end - end % page
    return (first, last - first) if last > first else None


def _release(arr: AnyArray, start: int, stop: int) -> None:
    """Drop the pages of rows ``start:stop`` of a C-ordered, file-shared memmap from this process.

    The pages stay in the OS page cache (the mapping is shared with the file, so nothing is
    lost) but no longer count as resident memory of the process; without this, the resident set
    of a sequential pass over a memmap grows to the whole file. Anything else (a copy-on-write
    memmap, a plain array, even one whose base is an mmap) is left alone: there the process's
    pages may be the only copy of the data.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not isinstance(arr, np.memmap):
        return
    mm = getattr(arr, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or arr.mode not in _SHARED_MEMMAP_MODES:
        return
    if stop <= start or arr.ndim == 0 or not arr.flags.c_contiguous:
        return
    row_bytes = arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
    # Offsets inside the mapping, from the data pointers: a slice of a memmap keeps its
    # parent's `offset` attribute, so that attribute does not locate the slice.
    mapping_start = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    data_start = int(arr.ctypes.data) - mapping_start
    begin = data_start + start * row_bytes
    end = min(data_start + stop * row_bytes, len(mm))
    pages = _whole_pages_inside(begin, end, mmap.PAGESIZE)
    if pages is None:
        return
    try:
        mm.madvise(advice, *pages)
    except (OSError, ValueError):  # pragma: no cover - best effort only
        return


def iter_npy_batches(
    X: PathLike | AnyArray,
    y: PathLike | AnyArray,
    *,
    sample_weight: PathLike | AnyArray | None = None,
    batch_rows: int | None = None,
) -> Iterator[tuple[AnyArray, AnyArray, AnyArray | None]]:
    """Row batches of an array or a ``.npy`` file, releasing each batch's pages after use.

    Parameters
    ----------
    X : str, path or ndarray of shape (n_samples, n_features)
        A ``.npy`` file (opened with ``np.load(mmap_mode="r")``) or an array / memmap.
    y : str, path or ndarray of shape (n_samples,)
        Labels: a second ``.npy`` file (memory-mapped too) or an array.
    sample_weight : str, path or ndarray of shape (n_samples,), optional
    batch_rows : int, optional
        Rows per batch; by default about 64 MiB of X per batch.

    Yields
    ------
    tuple
        ``(X_batch, y_batch, w_batch)``: read-only views into the file (``w_batch`` is None
        without weights). A batch is valid until the next one is requested.
    """
    x = _open_npy(X, "X")
    labels = _open_npy(y, "y")
    weights = None if sample_weight is None else _open_npy(sample_weight, "sample_weight")
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {x.shape}")
    n = x.shape[0]
    for name, v in (("y", labels), ("sample_weight", weights)):
        if v is not None and (v.ndim != 1 or v.shape[0] != n):
            raise ValueError(f"{name} must be 1-D with {n} entries; got shape {v.shape}")
    if batch_rows is None:
        row_bytes = max(1, x.itemsize * x.shape[1])
        batch_rows = max(1, DEFAULT_BATCH_BYTES // row_bytes)
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1; got {batch_rows}")
    for start in range(0, n, batch_rows):
        stop = min(n, start + batch_rows)
        try:
            yield (
                x[start:stop],
                labels[start:stop],
                None if weights is None else weights[start:stop],
            )
        finally:
            for v in (x, labels, weights):
                if v is not None:
                    _release(v, start, stop)


# ---------------------------------------------------------------------------- the fit loop


def _unpack(item: Any) -> tuple[Any, Any, Any]:
    if not isinstance(item, tuple | list) or len(item) not in (2, 3):
        raise ValueError(
            "each batch must be a tuple (X_batch, y_batch) or (X_batch, y_batch, w_batch); "
            f"got {type(item).__name__}"
        )
    if len(item) == 2:
        return item[0], item[1], None
    return item[0], item[1], item[2]


def _progress_bar(enabled: bool, total: int | None) -> Any:
    """A tqdm bar counting rows, or None (progress off, or tqdm not installed)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: tqdm itself stays silent when stderr is not a terminal (CI, logs, pipes).
    return tqdm(
        total=total,
        unit="rows",
        unit_scale=True,
        desc="gaussmle fit",
        disable=None,
        dynamic_ncols=True,
    )


def fit_stream(
    batches: Iterable[Any] | PathLike | AnyArray,
    y: PathLike | AnyArray | None = None,
    *,
    classes: Any = None,
    sample_weight: PathLike | AnyArray | None = None,
    estimator: GaussianNB | None = None,
    initial_stats: ClassStats | None = None,
    batch_rows: int | None = None,
    total_rows: int | None = None,
    progress: bool = False,
) -> GaussianNB:
    """Fit a :class:`gaussmle.GaussianNB` on a stream of batches, out of core.

    Parameters
    ----------
    batches : iterable of tuples, str, path or ndarray
        Either an iterable of ``(X_batch, y_batch)`` / ``(X_batch, y_batch, w_batch)``
        (consumed once, one batch in memory at a time), or the training matrix itself: a
        ``.npy`` path (memory-mapped) or an array, read in batches of ``batch_rows`` rows.
    y : str, path or ndarray, optional
        Labels when ``batches`` is a path or an array: a ``.npy`` path or an array.
    classes : array-like, optional
        All class labels. Required for an iterable of batches unless ``estimator`` is fitted
        (then its ``classes_`` are used); for a path/array it defaults to the unique labels
        of ``y`` (one pass over the labels only).
    sample_weight : str, path or ndarray, optional
        Weights when ``batches`` is a path or an array (with an iterable, give ``w_batch``
        in the tuples instead).
    estimator : gaussmle.GaussianNB, optional
        A fitted estimator to continue (updated in place and returned) or an unfitted one
        whose parameters (``priors``, ``var_smoothing``, ``n_jobs``) are used for the new
        model. Default: ``GaussianNB()``.
    initial_stats : ClassStats, optional
        Statistics of rows already streamed that are not in ``estimator``, merged before the
        first batch: ``BatchError.pending_stats`` when the batches before a rejected one had
        only zero sample weights (they count toward ``epsilon_``).
    batch_rows : int, optional
        Rows per batch for a path/array; default about 64 MiB of X.
    total_rows : int, optional
        Total rows, for the progress bar of an iterable (known for a path/array).
    progress : bool, default=False
        Show a tqdm progress bar (rows, rows/s, elapsed) if tqdm is installed. tqdm stays
        silent when stderr is not a terminal.

    Returns
    -------
    gaussmle.GaussianNB
        The model of all rows: equal (to ~1e-15 relative) to ``fit`` on the concatenation.

    Raises
    ------
    BatchError
        If a batch is rejected (a batch whose statistics would overflow float64 when merged
        with the earlier batches and the fitted ``estimator``'s own statistics included);
        ``error.batch_index`` names it and ``error.estimator`` holds the model of every
        earlier batch (``error.pending_stats`` their statistics, if they had only zero
        weights; ``error.estimator`` is then an unfitted clone of ``estimator``). With a
        generator or iterator, continue after the bad batch with ``fit_stream(it,
        classes=..., estimator=error.estimator, initial_stats=error.pending_stats)``.
    ValueError
        If the stream holds no rows, ``classes`` is missing or conflicts with ``estimator``,
        a parameter of ``estimator`` is invalid, or ``initial_stats`` does not fit
        ``estimator`` (checked before the first batch is read).
    BaseException
        Anything else raised meanwhile (``KeyboardInterrupt``, an error of the source or of
        the progress bar) propagates and leaves ``estimator`` exactly as it was before the
        call: batches are published only at the end, or up to a rejected batch.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmle.streaming import fit_stream
    >>> rng = np.random.default_rng(0)
    >>> batches = ((rng.normal(size=(100, 3)), rng.integers(0, 2, 100)) for _ in range(5))
    >>> model = fit_stream(batches, classes=[0, 1])
    >>> int(model.class_count_.sum())
    500
    """
    from sklearn.base import clone
    from sklearn.utils.validation import _get_feature_names

    from gaussmle.estimator import GaussianNB, priors_undefined

    template = GaussianNB() if estimator is None else estimator
    fitted = "_fitted_state" in template.__dict__
    items: Iterable[Any]
    if isinstance(batches, str | os.PathLike | np.ndarray):
        if y is None:
            raise ValueError("y (labels: a .npy path or an array) is required with a matrix")
        labels = _open_npy(y, "y")
        if classes is None and not fitted:
            classes = np.unique(labels)
        x_arr = _open_npy(batches, "X")
        if total_rows is None:
            total_rows = int(x_arr.shape[0])
        items = iter_npy_batches(x_arr, labels, sample_weight=sample_weight, batch_rows=batch_rows)
    else:
        if y is not None or sample_weight is not None:
            given = "y" if y is not None else "sample_weight"
            raise ValueError(
                f"{given} was given, so the first argument must be the training matrix as a "
                "numpy array (np.memmap included) or a .npy path; got "
                f"{type(batches).__name__}. Convert it with np.asarray, or pass an iterable of "
                "(X_batch, y_batch[, w_batch]) tuples (a DataFrame keeps its column names "
                "as one batch: [(frame, y)]) and no y or sample_weight"
            )
        items = batches

    if fitted:
        model_classes = np.asarray(template.classes_)
        if classes is not None and not np.array_equal(sorted_classes(classes), model_classes):
            raise ValueError(
                f"classes {np.asarray(classes)!r} differ from the estimator's classes_ "
                f"{model_classes!r}"
            )
        cls_arr = model_classes
        n_features: int | None = int(template.n_features_in_)
        dtype: np.dtype[Any] | None = np.dtype(template.theta_.dtype)
        names = list(template.feature_names_in_) if hasattr(template, "feature_names_in_") else None
        names_origin = "the estimator's feature_names_in_"
    else:
        if classes is None:
            raise ValueError("classes must be given to stream batches into an unfitted model")
        cls_arr = sorted_classes(classes)
        n_features = None
        dtype = None
        names = None
        names_origin = "those of the first batch"

    # Fail on a bad parameter before reading the first batch.
    template.check_parameters(len(cls_arr))
    threads = threads_for_n_jobs(template.n_jobs)
    total: ClassStats | None = None
    if initial_stats is not None:
        if not isinstance(initial_stats, ClassStats):
            raise TypeError(
                f"initial_stats must be a ClassStats, not {type(initial_stats).__name__}"
            )
        if initial_stats.n_classes != len(cls_arr) or (
            n_features is not None and initial_stats.n_features != n_features
        ):
            raise ValueError(
                f"initial_stats has shape {initial_stats.mean.shape} (classes, features); "
                f"expected ({len(cls_arr)}, {'n_features' if n_features is None else n_features})"
            )
        if fitted:
            # Would overflow at the end otherwise, after the whole stream was read.
            template._stats_merged_with(initial_stats)
        total = initial_stats
        n_features = initial_stats.n_features
    rows = 0  # of this call's batches (BatchError.rows_fitted)
    bar = _progress_bar(progress, total_rows)

    def model_of(stats: ClassStats) -> GaussianNB:
        """The model of everything so far, from the statistics of this call (with rows).

        Cannot overflow for a fitted estimator: the merge was checked with every batch.
        """
        if fitted:
            return template.partial_fit_stats(stats)
        return GaussianNB.from_class_stats(
            stats,
            cls_arr,
            priors=template.priors,
            var_smoothing=template.var_smoothing,
            n_jobs=template.n_jobs,
            dtype=dtype if dtype is not None else np.float64,
            feature_names=names,
        )

    def rejected(index: int, exc: Exception) -> BatchError:
        """The BatchError for batch ``index``, publishing every earlier batch."""
        pending = None
        published: GaussianNB
        if total is None or not total.global_count > 0:
            published = template if fitted else clone(template)
            kept = "no earlier batch was fitted; err.estimator is " + (
                "the estimator as it was" if fitted else "an unfitted clone of the estimator"
            )
        elif not fitted and priors_undefined(total, template.priors):
            # Rows, but none with a positive weight and no priors: no model exists (its class
            # priors would be 0/0), yet the rows count toward epsilon_. They travel in the error.
            pending = total
            published = clone(template)
            kept = (
                "every earlier row has sample weight 0, so there is no model yet; their "
                "statistics are in err.pending_stats and err.estimator is an unfitted clone "
                "of the estimator: continue with estimator=err.estimator, "
                "initial_stats=err.pending_stats"
            )
        else:
            published = model_of(total)
            if index == 0:
                from_call = "none of them from this call's batches"
            elif index == 1:
                from_call = f"{rows} of them from this call's batch 0"
            else:
                from_call = f"{rows} of them from this call's batches 0 to {index - 1}"
            kept = f"err.estimator holds every earlier row, {from_call}"
        return BatchError(
            f"batch {index} was rejected ({kept}): {exc}",
            batch_index=index,
            rows_fitted=rows,
            estimator=published,
            pending_stats=pending,
        )

    index = -1
    try:
        for index, item in enumerate(items):
            try:
                xb, yb, wb = _unpack(item)
                batch_names = _get_feature_names(xb)
                x = template._float_matrix(xb, allow_empty=True)
                if x.shape[1] == 0:
                    raise ValueError(f"X has 0 features (shape {x.shape})")
                if n_features is not None and x.shape[1] != n_features:
                    raise ValueError(f"X has {x.shape[1]} features; expected {n_features}")
                if dtype is None:
                    dtype = template._model_dtype(x)
                    names = None if batch_names is None else list(batch_names)
                elif batch_names is not None and names is not None and list(batch_names) != names:
                    raise ValueError(
                        f"feature names {list(batch_names)} differ from {names_origin} {names}"
                    )
                n_features = int(x.shape[1])
                codes = encode(template._validated_y(yb, x.shape[0]), cls_arr)
                w = template._validated_weights(wb, x, allow_all_zero=True)
                stats = class_stats(x, codes, len(cls_arr), sample_weight=w, n_threads=threads)
                # Inside the try: a merge that overflows float64 rejects this batch too, and
                # the running total keeps every earlier batch. For a fitted estimator, the
                # merge into its own statistics (done once, at the end) is checked here too.
                merged = stats if total is None else total + stats
                if fitted:
                    template._stats_merged_with(merged)
            except (ValueError, TypeError) as exc:
                raise rejected(index, exc) from exc
            total = merged
            rows += int(x.shape[0])
            if bar is not None:
                bar.update(int(x.shape[0]))
    except BatchError:
        raise
    # Any other exception (Ctrl-C, a failing source or progress callback) propagates with the
    # estimator exactly as it was before the call: nothing has been published yet. Only a
    # rejected batch (BatchError, above) publishes the batches before it.
    finally:
        if bar is not None:
            bar.close()

    if total is not None and total.global_count > 0:
        return model_of(total)
    if fitted:
        return template
    raise ValueError(f"the stream held no rows ({index + 1} batches)")
