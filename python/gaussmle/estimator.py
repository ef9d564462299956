"""A drop-in replacement for :class:`sklearn.naive_bayes.GaussianNB` backed by the Rust core.

Design
------
Everything a fitted model knows lives in one immutable :class:`_FittedState` object: the raw
:class:`~gaussmle.stats.ClassStats` of all rows seen so far, the classes, the public attribute
arrays derived from them and the compiled :class:`~gaussmle._core.GaussianScorer`. ``fit`` and
``partial_fit`` validate everything and compute a complete new state before publishing it with
one attribute assignment, so

* a rejected call leaves a fitted model exactly as it was, and
* a prediction running in another thread reads the state once and sees either the old or the
  new model, never a mix of the two.

A lock serialises writers so that concurrent ``partial_fit`` calls do not lose updates. The
public attributes (``theta_``, ``var_``, ...) are read-only properties of the current state.

Because the raw statistics are kept (not the smoothed variances), ``partial_fit`` over any split
of the rows gives the same model as ``fit`` on all of them, ``epsilon_`` included.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import (
    _check_feature_names,
    _check_sample_weight,
    _get_feature_names,
    assert_all_finite,
    check_array,
    check_consistent_length,
    column_or_1d,
)

from gaussmle import _core
from gaussmle._arrays import FloatArray, as_float_array
from gaussmle._threads import threads_for_n_jobs
from gaussmle.stats import ClassStats, class_stats

if TYPE_CHECKING:
    from typing import Self

__all__ = ["GaussianNB"]

F64 = npt.NDArray[np.float64]
AnyArray = npt.NDArray[Any]

# Below this many (rows x classes x features) the Rust scorer uses one chunk on the caller's
# thread whatever n_threads says (score.rs PARALLEL_MIN_WORK).
_SERIAL_WORK = 1 << 18

# scikit-learn >= 1.7 rejects all-zero sample weights unless told otherwise (older versions
# never reject them and lack the option).
_HAS_ALL_ZERO_OPTION = (
    "allow_all_zero_weights" in inspect.signature(_check_sample_weight).parameters
)

# Integer label dtypes that the Rust label encoder reads exactly as int64 (uint64 may not fit).
_RUST_ENCODABLE_KINDS = "biu"


def priors_undefined(stats: ClassStats, priors: Any) -> bool:
    """True if no model can be built from ``stats``: no positive weight and no ``priors``.

    The class priors would be 0/0. The rows still count toward ``epsilon_``, which is why
    :mod:`gaussmle.streaming` keeps such statistics (``BatchError.pending_stats``).
    """
    return priors is None and not float(stats.weight.sum()) > 0


@dataclass(frozen=True, eq=False)
class _FittedState:
    """One immutable snapshot of everything a fitted :class:`GaussianNB` knows.

    Built only by :meth:`build`, which derives every field from the raw statistics
    deterministically; pickling stores just those inputs and rebuilds, so a round trip is
    bit-identical (and the compiled scorer, which is not picklable, is rebuilt too).
    """

    stats: ClassStats
    classes: AnyArray
    dtype: np.dtype[Any]
    feature_names: AnyArray | None
    priors: F64 | None
    var_smoothing: float
    class_count: FloatArray
    class_prior: FloatArray
    theta: FloatArray
    var: FloatArray
    epsilon: np.floating[Any]
    scorer: _core.GaussianScorer | None
    scorer_error: str | None

    @property
    def n_features(self) -> int:
        return self.stats.n_features

    @classmethod
    def build(
        cls,
        stats: ClassStats,
        classes: AnyArray,
        dtype: np.dtype[Any],
        feature_names: AnyArray | None,
        priors: F64 | None,
        var_smoothing: float,
    ) -> _FittedState:
        """Derive the public attributes and the scorer from raw statistics.

        Raises
        ------
        ValueError
            If no sample weight was seen at all and no ``priors`` are given (the class
            priors would be 0/0).
        """
        weight = stats.weight
        seen = weight > 0
        total_weight = float(weight.sum())
        if priors_undefined(stats, priors):
            raise ValueError(
                "The total sample weight is zero, so the class priors are undefined; "
                "give some samples a positive weight or pass `priors`."
            )
        global_var = stats.global_var
        epsilon = float(var_smoothing) * float(global_var.max()) if global_var.size else 0.0
        # A class without weight has no estimate; like scikit-learn, report mean 0, variance
        # epsilon (ClassStats stores zeros for the moments of such a class).
        with np.errstate(invalid="ignore", divide="ignore"):
            var_mle = np.where(seen[:, None], stats.m2 / weight[:, None], 0.0)
        theta64 = np.where(seen[:, None], stats.mean, 0.0)
        var64 = var_mle + epsilon
        class_prior64 = weight / total_weight if priors is None else priors
        with np.errstate(divide="ignore"):
            log_prior = np.log(class_prior64)

        # The scorer needs a finite positive variance everywhere. A class that can never be
        # predicted (log prior -inf) does not influence any output, so any positive value will
        # do for it; everything else is scored with exactly the reported var_.
        scorer_var = var64.copy()
        impossible = np.isneginf(log_prior)
        scorer_var[impossible] = epsilon if epsilon > 0 else 1.0
        scorer: _core.GaussianScorer | None
        scorer_error: str | None = None
        try:
            scorer = _core.GaussianScorer(
                np.ascontiguousarray(theta64),
                np.ascontiguousarray(scorer_var),
                np.ascontiguousarray(log_prior),
            )
        except ValueError as exc:
            # Only a zero variance gets here (a feature constant within a class, and epsilon_
            # = var_smoothing times the largest feature variance is 0): fitting is fine, scoring is
            # not defined. Raised by every predict method.
            scorer = None
            if var_smoothing == 0:
                cause = "var_smoothing=0 leaves its variance at zero; refit with var_smoothing > 0"
            elif epsilon == 0:
                cause = (
                    "every feature of the training data is constant, so epsilon_ (var_smoothing "
                    "times the largest feature variance) is 0 and cannot lift it; fit on data "
                    "in which some feature varies"
                )
            else:
                cause = (
                    f"epsilon_ = {epsilon!r} (var_smoothing times the largest feature variance) "
                    "is too small to lift it to a normal float64; rescale the data or raise "
                    "var_smoothing"
                )
            scorer_error = (
                f"This GaussianNB model cannot compute probabilities: {exc}. A feature is "
                "constant within a class (or its variance times the class's total sample "
                "weight is below float64's normal range, about 2.2e-308, so that it rounds "
                f"to 0: rescale sample_weight) and {cause}."
            )

        def public(values: F64) -> FloatArray:
            out = np.asarray(values, dtype=dtype)
            if out is values:
                out = out.copy()
            out.flags.writeable = False
            return out

        return cls(
            stats=stats,
            classes=classes,
            dtype=dtype,
            feature_names=feature_names,
            priors=priors,
            var_smoothing=float(var_smoothing),
            class_count=public(weight),
            class_prior=public(class_prior64),
            theta=public(theta64),
            var=public(var64),
            epsilon=dtype.type(epsilon),
            scorer=scorer,
            scorer_error=scorer_error,
        )

    def require_scorer(self) -> _core.GaussianScorer:
        if self.scorer is None:
            raise ValueError(self.scorer_error)
        return self.scorer

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (
            _FittedState.build,
            (
                self.stats,
                self.classes,
                self.dtype,
                self.feature_names,
                self.priors,
                self.var_smoothing,
            ),
        )


def _is_ready_float_matrix(X: Any) -> bool:
    """True when X can go to Rust as it is: the O(1) check of the fast path."""
    return (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype.char in "fd"
        and X.dtype.isnative
        and X.flags.aligned
        and X.shape[0] > 0
        and X.shape[1] > 0
    )


def not_fitted_error(estimator: object) -> NotFittedError:
    """scikit-learn's NotFittedError, with its standard message, for ``estimator``."""
    return NotFittedError(
        f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
        "appropriate arguments before using this estimator."
    )


_Codes = npt.NDArray[np.int64] | npt.NDArray[np.int32]


def _sorted_unique_with_codes(y: AnyArray) -> tuple[AnyArray, _Codes]:
    """Sorted unique labels and the index of each label into them.

    Integer and bool labels are encoded in Rust; when they are already ``0, 1, ..., k-1`` the
    labels themselves (int32 or int64) are the codes, with no pass to write them. Only other
    labels (strings, floats, objects) go through :func:`numpy.unique`.
    """
    kind = y.dtype.kind
    if kind in _RUST_ENCODABLE_KINDS and not (kind == "u" and y.dtype.itemsize == 8):
        native = y if y.dtype in (np.dtype(np.int32), np.dtype(np.int64)) else y.astype(np.int64)
        if not (native.dtype.isnative and native.flags.aligned):
            native = native.astype(np.int64)
        uniques, codes = _core.encode_labels(native)
        return uniques.astype(y.dtype), native if codes is None else codes
    # Mixed label types (say str and int) raise numpy's TypeError, as in scikit-learn.
    uniques, codes = np.unique(y, return_inverse=True)
    return uniques, np.asarray(codes, dtype=np.int64).reshape(-1)


def _positions_in_classes(uniques: AnyArray, classes: AnyArray) -> npt.NDArray[np.int64]:
    """Index in ``classes`` of every label in ``uniques``; ValueError for unknown labels."""
    index_of = {label: i for i, label in enumerate(classes.tolist())}
    positions = [index_of.get(label, -1) for label in uniques.tolist()]
    result = np.asarray(positions, dtype=np.int64)
    missing = result < 0
    if missing.any():
        raise ValueError(
            f"The target label(s) {uniques[missing]} in y do not exist in the initial "
            f"classes {classes}"
        )
    return result


class _IntegerInterval(Interval):  # type: ignore[misc]
    """An integer interval that, unlike scikit-learn's ``Interval(Integral, ...)``, rejects bools.

    ``n_jobs=True`` would otherwise pass validation and only fail in Rust, under the name
    ``n_threads``.
    """

    def is_satisfied_by(self, val: Any) -> bool:
        if isinstance(val, bool | np.bool_):
            return False
        satisfied: bool = super().is_satisfied_by(val)
        return satisfied


class GaussianNB(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Gaussian Naive Bayes, computed exactly and in parallel by the gaussmle Rust core.

    A drop-in replacement for :class:`sklearn.naive_bayes.GaussianNB`: same parameters (plus
    ``n_jobs``), methods, fitted attributes, exceptions and, up to rounding, the same numbers.
    The deliberate differences are listed in ``docs/estimator.md``; in short, ``partial_fit``
    over any split of the data equals ``fit`` on all of it, a rejected call leaves a fitted
    model unchanged, predicting from many threads while another thread calls ``partial_fit``
    is safe, and float32/Fortran-ordered input is never copied.

    Parameters
    ----------
    priors : array-like of shape (n_classes,), default=None
        Prior probabilities of the classes. If given, the priors are not adjusted according to
        the data.
    var_smoothing : float, default=1e-9
        Portion of the largest (unweighted) feature variance of all rows seen so far that is
        added to every variance, for numerical stability.
    n_jobs : int, default=None
        Threads used by the Rust kernels. ``None`` uses ``GAUSSMLE_NUM_THREADS`` or all cores;
        negative values count back from the number of cores as in joblib (``-1`` = all).
        Results are bit-identical for every value.

    Attributes
    ----------
    class_count_ : ndarray of shape (n_classes,)
        Total sample weight seen in each class.
    class_prior_ : ndarray of shape (n_classes,)
        Probability of each class.
    classes_ : ndarray of shape (n_classes,)
        Class labels known to the classifier, sorted.
    epsilon_ : float
        Absolute additive value to the variances.
    n_features_in_ : int
        Number of features seen during :term:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :term:`fit`; defined only when ``X`` has feature names
        that are all strings.
    var_ : ndarray of shape (n_classes, n_features)
        Variance of each feature per class.
    theta_ : ndarray of shape (n_classes, n_features)
        Mean of each feature per class.

    Notes
    -----
    The fitted attributes are read-only views of one immutable snapshot of the model; they are
    float32 when the model was first fitted on float32 data and float64 otherwise. The
    underlying sufficient statistics are available through :meth:`get_class_stats`, and
    :meth:`from_class_stats` builds a fitted estimator from statistics computed elsewhere (for
    example, merged from the partitions of a Dask array).

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmle import GaussianNB
    >>> X = np.array([[-1, -1], [-2, -1], [-3, -2], [1, 1], [2, 1], [3, 2]])
    >>> Y = np.array([1, 1, 1, 2, 2, 2])
    >>> clf = GaussianNB().fit(X, Y)
    >>> print(clf.predict([[-0.8, -1]]))
    [1]
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "priors": ["array-like", None],
        "var_smoothing": [Interval(Real, 0, None, closed="left")],
        "n_jobs": [
            _IntegerInterval(Integral, 1, None, closed="left"),
            _IntegerInterval(Integral, None, -1, closed="right"),
            None,
        ],
    }

    _fitted_state: _FittedState

    def __init__(
        self,
        *,
        priors: npt.ArrayLike | None = None,
        var_smoothing: float = 1e-9,
        n_jobs: int | None = None,
    ) -> None:
        self.priors = priors
        self.var_smoothing = var_smoothing
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ fitted attributes

    def _state(self) -> _FittedState:
        """The current snapshot; AttributeError when unfitted (so ``hasattr`` works)."""
        state: _FittedState | None = self.__dict__.get("_fitted_state")
        if state is None:
            raise AttributeError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' first."
            )
        return state

    def _state_for_predict(self) -> _FittedState:
        state: _FittedState | None = self.__dict__.get("_fitted_state")
        if state is None:
            raise not_fitted_error(self)
        return state

    def __sklearn_is_fitted__(self) -> bool:
        return self.__dict__.get("_fitted_state") is not None

    @property
    def classes_(self) -> AnyArray:
        """Class labels known to the classifier, sorted."""
        return self._state().classes

    @property
    def class_count_(self) -> FloatArray:
        """Total sample weight seen in each class."""
        return self._state().class_count

    @property
    def class_prior_(self) -> FloatArray:
        """Probability of each class."""
        return self._state().class_prior

    @property
    def theta_(self) -> FloatArray:
        """Mean of each feature per class."""
        return self._state().theta

    @property
    def var_(self) -> FloatArray:
        """Variance of each feature per class (``epsilon_`` included)."""
        return self._state().var

    @property
    def epsilon_(self) -> np.floating[Any]:
        """Absolute additive value to the variances."""
        return self._state().epsilon

    @property
    def n_features_in_(self) -> int:
        """Number of features seen during fit."""
        return self._state().n_features

    @property
    def feature_names_in_(self) -> AnyArray:
        """Names of the features seen during fit (only when they were all strings)."""
        names = self._state().feature_names
        if names is None:
            raise AttributeError(
                f"{type(self).__name__} was fitted on data without string feature names, "
                "so it has no 'feature_names_in_'."
            )
        return names

    def get_class_stats(self) -> ClassStats:
        """The raw sufficient statistics of every row seen so far (a copy-free snapshot).

        Row ``i`` of the statistics belongs to ``classes_[i]``. Together with ``classes_``,
        the result can rebuild this model with :meth:`from_class_stats`.
        """
        return self._state().stats

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        # A lock is not picklable; a restored estimator creates its own on its first write.
        state = dict(super().__getstate__())
        state.pop("_write_lock", None)
        return state

    def _writer_lock(self) -> threading.Lock:
        lock: threading.Lock | None = self.__dict__.get("_write_lock")
        if lock is None:
            # setdefault is atomic, so two racing first writers end up with the same lock.
            lock = self.__dict__.setdefault("_write_lock", threading.Lock())
        return lock

    # ------------------------------------------------------------------ validation helpers

    def _validate_params_unless_skipped(self) -> None:
        if not get_config().get("skip_parameter_validation", False):
            self._validate_params()

    def check_parameters(self, n_classes: int) -> None:
        """Validate every parameter for a model of ``n_classes`` classes, without fitting.

        Out-of-core and distributed fits (:mod:`gaussmle.streaming`, :mod:`gaussmle.dask`) call
        this before reading any data, so a bad parameter fails at once rather than after the
        whole pass.

        Raises
        ------
        ValueError, TypeError
            As ``fit`` would for the same parameters.
        """
        self._validate_params_unless_skipped()
        self._validated_priors(n_classes)

    def _n_threads(self, work: int | None = None) -> int | None:
        """Threads for a Rust call doing about ``work`` multiply-adds (None: unknown)."""
        if work is not None and work < _SERIAL_WORK:
            # The kernels would run serially anyway; saying so skips the per-call thread
            # resolution, which costs more than scoring a few rows. Results do not depend on
            # the thread count.
            return 1
        return threads_for_n_jobs(self.n_jobs)

    def _float_matrix(self, X: Any, *, allow_empty: bool = False) -> FloatArray:
        """Any X sklearn accepts -> float32/float64 matrix, without a pass over the data.

        Non-finite values are not searched for here: the Rust pass over X reports them.
        ``allow_empty`` accepts 0 rows (an empty batch of a stream adds nothing).
        """
        if _is_ready_float_matrix(X):
            matrix: FloatArray = X
            return matrix
        checked = check_array(
            X,
            input_name="X",
            estimator=self,
            dtype="numeric",
            ensure_all_finite=False,
            ensure_min_samples=0 if allow_empty else 1,
        )
        return as_float_array(checked)

    def _check_n_features(self, X: FloatArray, state: _FittedState) -> None:
        if X.shape[1] != state.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} "
                f"is expecting {state.n_features} features as input."
            )

    def _predict_matrix(self, X: Any, state: _FittedState) -> FloatArray:
        """Validate X for scoring against ``state`` (feature names, n_features, dtype)."""
        if _is_ready_float_matrix(X):
            if state.feature_names is not None:
                _check_feature_names(self, X, reset=False)  # sklearn's warning wording
            self._check_n_features(X, state)
            matrix: FloatArray = X
            return matrix
        _check_feature_names(self, X, reset=False)
        matrix = self._float_matrix(X)
        self._check_n_features(matrix, state)
        return matrix

    def _validated_y(self, y: Any, n_rows: int) -> AnyArray:
        if y is None:
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, "
                "but the target y is None."
            )
        y_arr: AnyArray = column_or_1d(y, warn=True)
        if y_arr.dtype.kind == "c":
            raise ValueError(f"Complex data not supported\n{y_arr[:5]}\n")
        if y_arr.dtype.kind == "f":
            assert_all_finite(y_arr, input_name="y")
        check_consistent_length(np.empty((n_rows, 0)), y_arr)
        return y_arr

    def _validated_weights(
        self, sample_weight: Any, X: FloatArray, *, allow_all_zero: bool = False
    ) -> F64 | None:
        """scikit-learn's sample_weight checks (a scalar means that weight for every row).

        ``allow_all_zero``: a batch of a stream may have only zero weights (its rows still
        count toward ``epsilon_``); a whole ``fit`` may not, as in scikit-learn.
        """
        if sample_weight is None:
            return None
        if X.shape[0] == 0:
            return self._validated_weights_of_no_rows(sample_weight, X)
        extra = {"allow_all_zero_weights": True} if allow_all_zero and _HAS_ALL_ZERO_OPTION else {}
        weights: F64 = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True, **extra
        )
        return weights

    @staticmethod
    def _validated_weights_of_no_rows(sample_weight: Any, X: FloatArray) -> F64:
        """The weights of an empty batch of a stream (scikit-learn's check needs one row)."""
        if np.ndim(sample_weight) == 0:
            # A scalar: checked as the weight of one row would be.
            _check_sample_weight(
                sample_weight, np.empty((1, X.shape[1])), dtype=np.float64, ensure_non_negative=True
            )
            return np.zeros(0)
        weights: F64 = check_array(
            sample_weight,
            input_name="sample_weight",
            ensure_2d=False,
            dtype=np.float64,
            ensure_min_samples=0,
        )
        if weights.shape != (0,):
            raise ValueError(f"sample_weight.shape == {weights.shape}, expected (0,)!")
        return weights

    def _validated_priors(self, n_classes: int) -> F64 | None:
        if self.priors is None:
            return None
        priors = np.asarray(self.priors, dtype=np.float64)
        if priors.ndim != 1 or priors.shape[0] != n_classes:
            raise ValueError("Number of priors must match number of classes.")
        if not np.isclose(priors.sum(), 1.0):
            raise ValueError("The sum of the priors should be 1.")
        if np.any(priors < 0):
            raise ValueError("Priors must be non-negative.")
        return priors

    @staticmethod
    def _model_dtype(X: FloatArray) -> np.dtype[Any]:
        return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)

    def _batch_stats(
        self, X: FloatArray, codes: _Codes, n_classes: int, weights: F64 | None
    ) -> ClassStats:
        return class_stats(X, codes, n_classes, sample_weight=weights, n_threads=self._n_threads())

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Self:
        """Fit Gaussian Naive Bayes according to X, y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors. float32 and float64 arrays of any memory layout are read in
            place; other real dtypes are converted to float64 once.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights applied to individual samples (1. for unweighted).

        Returns
        -------
        self : object
            Returns the instance itself.

        Raises
        ------
        ValueError
            For invalid input (NaN/inf in X, whose position the message names, bad shapes,
            mismatched lengths, negative weights, invalid priors); the model is unchanged.
        """
        self._validate_params_unless_skipped()
        feature_names = _get_feature_names(X)
        matrix = self._float_matrix(X)
        y_arr = self._validated_y(y, matrix.shape[0])
        uniques, codes = _sorted_unique_with_codes(y_arr)
        classes = unique_labels(uniques)  # sklearn's label-type checks and classes_ dtype
        if not np.array_equal(classes, uniques):
            codes = _positions_in_classes(uniques, classes)[codes]
        weights = self._validated_weights(sample_weight, matrix)
        priors = self._validated_priors(len(classes))
        stats = self._batch_stats(matrix, codes, len(classes), weights)
        state = _FittedState.build(
            stats,
            classes,
            self._model_dtype(matrix),
            feature_names,
            priors,
            self.var_smoothing,
        )
        with self._writer_lock():
            self._fitted_state = state
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> Self:
        """Incremental fit on a batch of samples.

        Calling this on consecutive batches gives the same model as one :meth:`fit` on all of
        them (``epsilon_`` included: it is derived from every row seen so far, not from the
        last batch as in scikit-learn). Safe to call while other threads predict; concurrent
        calls are serialised.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors.
        y : array-like of shape (n_samples,)
            Target values.
        classes : array-like of shape (n_classes,), default=None
            List of all the classes that can possibly appear in the y vector. Must be provided
            at the first call to partial_fit, can be omitted in subsequent calls.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights applied to individual samples (1. for unweighted).

        Returns
        -------
        self : object
            Returns the instance itself.
        """
        self._validate_params_unless_skipped()
        with self._writer_lock():
            previous: _FittedState | None = self.__dict__.get("_fitted_state")
            if classes is not None:
                declared = unique_labels(classes)
                if previous is not None and not np.array_equal(previous.classes, declared):
                    raise ValueError(
                        f"`classes={classes!r}` is not the same as on last call "
                        f"to partial_fit, was: {previous.classes!r}"
                    )
            elif previous is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            else:
                declared = previous.classes

            if previous is None:
                feature_names = _get_feature_names(X)
                matrix = self._float_matrix(X)
                dtype = self._model_dtype(matrix)
            else:
                matrix = self._predict_matrix(X, previous)
                feature_names = previous.feature_names
                dtype = previous.dtype
            y_arr = self._validated_y(y, matrix.shape[0])
            uniques, codes = _sorted_unique_with_codes(y_arr)
            codes = _positions_in_classes(uniques, declared)[codes]
            weights = self._validated_weights(sample_weight, matrix)
            priors = self._validated_priors(len(declared))
            stats = self._batch_stats(matrix, codes, len(declared), weights)
            if previous is not None:
                stats = previous.stats.merge(stats)
            state = _FittedState.build(
                stats, declared, dtype, feature_names, priors, self.var_smoothing
            )
            self._fitted_state = state
        return self

    def partial_fit_stats(self, stats: ClassStats) -> Self:
        """Merge statistics computed elsewhere into this fitted model.

        The hook for streaming and distributed fitting: ``stats`` must describe rows of the
        same classes (row ``i`` is ``classes_[i]``) and features. The result is the model
        ``partial_fit`` would give on those rows.

        Parameters
        ----------
        stats : ClassStats
            Statistics of new rows, for example from :func:`gaussmle.class_stats` with labels
            encoded as indices into ``classes_``.

        Returns
        -------
        self : object
        """
        self._validate_params_unless_skipped()
        if not isinstance(stats, ClassStats):
            raise TypeError(f"stats must be a ClassStats, not {type(stats).__name__}")
        with self._writer_lock():
            previous = self._state_for_predict()
            merged = self._stats_merged_with(stats)
            priors = self._validated_priors(len(previous.classes))
            self._fitted_state = _FittedState.build(
                merged,
                previous.classes,
                previous.dtype,
                previous.feature_names,
                priors,
                self.var_smoothing,
            )
        return self

    def _stats_merged_with(self, stats: ClassStats) -> ClassStats:
        """This model's statistics merged with ``stats``, as :meth:`partial_fit_stats` merges.

        Changes nothing: :mod:`gaussmle.streaming` calls it on each batch to learn whether the
        final ``partial_fit_stats`` would overflow (a ValueError here).
        """
        previous = self._state_for_predict().stats
        if stats.mean.shape != previous.mean.shape:
            raise ValueError(
                f"stats have shape {stats.mean.shape} (classes, features) but the model "
                f"has {previous.mean.shape}"
            )
        return previous.merge(stats)

    @classmethod
    def from_class_stats(
        cls,
        stats: ClassStats,
        classes: npt.ArrayLike,
        *,
        priors: npt.ArrayLike | None = None,
        var_smoothing: float = 1e-9,
        n_jobs: int | None = None,
        dtype: npt.DTypeLike = np.float64,
        feature_names: npt.ArrayLike | None = None,
    ) -> GaussianNB:
        """Build a fitted estimator from precomputed sufficient statistics.

        Used by the Dask and streaming front ends: compute :class:`~gaussmle.ClassStats` per
        partition, merge them with ``+`` and turn the total into a model here. The result is
        the model ``fit`` gives on the same rows.

        Parameters
        ----------
        stats : ClassStats
            Statistics of all rows; row ``i`` belongs to ``classes[i]``.
        classes : array-like of shape (n_classes,)
            The class labels, sorted and unique (the order of ``classes_``).
        priors, var_smoothing, n_jobs
            As in the constructor.
        dtype : {numpy.float64, numpy.float32}, default=numpy.float64
            dtype of the fitted attributes (float32 as if fitted on float32 data).
        feature_names : array-like of str, optional
            Becomes ``feature_names_in_``.

        Returns
        -------
        GaussianNB
            A fitted estimator; ``partial_fit`` can continue from it.

        Raises
        ------
        ValueError
            If ``classes`` is not sorted and unique, its length or ``feature_names`` do not
            match the statistics, the statistics hold no rows, or a parameter is invalid.
        """
        estimator = cls(priors=priors, var_smoothing=var_smoothing, n_jobs=n_jobs)
        estimator._validate_params_unless_skipped()
        if not isinstance(stats, ClassStats):
            raise TypeError(f"stats must be a ClassStats, not {type(stats).__name__}")
        given = np.asarray(classes)
        sorted_classes = unique_labels(given)
        if given.ndim != 1 or not np.array_equal(sorted_classes, given):
            raise ValueError(
                "classes must be sorted and unique (the order of classes_), because row i "
                f"of the statistics belongs to classes[i]; got {given!r}"
            )
        if len(sorted_classes) != stats.n_classes:
            raise ValueError(
                f"{len(sorted_classes)} classes given but the statistics have {stats.n_classes}"
            )
        if stats.n_features < 1 or not stats.global_count > 0:
            raise ValueError("the statistics describe no rows or no features")
        names = None
        if feature_names is not None:
            names = np.asarray(feature_names, dtype=object)
            if names.shape != (stats.n_features,):
                raise ValueError(
                    f"feature_names has shape {names.shape}; expected ({stats.n_features},)"
                )
        model_dtype = np.dtype(dtype)
        if model_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64; got {model_dtype}")
        estimator._fitted_state = _FittedState.build(
            stats,
            sorted_classes,
            model_dtype,
            names,
            estimator._validated_priors(len(sorted_classes)),
            var_smoothing,
        )
        return estimator

    # ------------------------------------------------------------------ prediction

    def _scores(self, X: Any, kind: str) -> FloatArray:
        state = self._state_for_predict()
        matrix = self._predict_matrix(X, state)
        scorer = state.require_scorer()
        n_threads = self._n_threads(matrix.size * scorer.n_classes)
        # sklearn's output dtype is the promotion of X's and the model's dtype.
        out: FloatArray | None = None
        if matrix.dtype != state.dtype and state.dtype == np.float64:
            out = np.empty((matrix.shape[0], state.classes.shape[0]), dtype=np.float64)
        if kind == "proba":
            return scorer.proba(matrix, out, n_threads)
        if kind == "log_proba":
            return scorer.log_proba(matrix, out, n_threads)
        return scorer.joint_log_likelihood(matrix, out, n_threads)

    def predict(self, X: Any) -> AnyArray:
        """Perform classification on an array of test vectors X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input samples.

        Returns
        -------
        C : ndarray of shape (n_samples,)
            Predicted target values for X (the first class on ties, as ``argmax``).
        """
        state = self._state_for_predict()
        matrix = self._predict_matrix(X, state)
        scorer = state.require_scorer()
        indices = scorer.predict(matrix, None, self._n_threads(matrix.size * scorer.n_classes))
        labels: AnyArray = state.classes[indices]
        return labels

    def predict_proba(self, X: Any) -> FloatArray:
        """Return probability estimates for the test vector X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input samples.

        Returns
        -------
        C : ndarray of shape (n_samples, n_classes)
            Probability of each class, in the order of ``classes_``; every row sums to 1.
        """
        return self._scores(X, "proba")

    def predict_log_proba(self, X: Any) -> FloatArray:
        """Return log-probability estimates for the test vector X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input samples.

        Returns
        -------
        C : ndarray of shape (n_samples, n_classes)
            Log-probability of each class, in the order of ``classes_``.
        """
        return self._scores(X, "log_proba")

    def predict_joint_log_proba(self, X: Any) -> FloatArray:
        """Return joint log probability estimates ``log P(x, y)`` for the test vector X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input samples.

        Returns
        -------
        C : ndarray of shape (n_samples, n_classes)
            ``log P(y) + log P(x | y)`` for each class, in the order of ``classes_``.
        """
        return self._scores(X, "joint")
