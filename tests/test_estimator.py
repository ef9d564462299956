"""Tests of gaussmle.GaussianNB: equivalence with scikit-learn, validation, persistence, dtypes."""

from __future__ import annotations

import copy
import io
import itertools
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import gaussmle
import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from gaussmle import GaussianNB
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import datasets
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.naive_bayes import GaussianNB as SklearnGaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

FloatMatrix = npt.NDArray[np.float64]
FITTED_ARRAY_ATTRIBUTES = ("classes_", "class_count_", "class_prior_", "theta_", "var_")

# ---------------------------------------------------------------------------- helpers


def _array_fingerprint(values: Any) -> tuple[str, tuple[int, ...], bytes]:
    array = np.asarray(values)
    if array.dtype.kind == "O":
        return (str(array.dtype), array.shape, repr(array.tolist()).encode())
    return (str(array.dtype), array.shape, np.ascontiguousarray(array).tobytes())


def fingerprint(model: GaussianNB, probe: Any) -> dict[str, Any]:
    """Every fitted attribute and every prediction on ``probe``, bit for bit."""
    result: dict[str, Any] = {
        name: _array_fingerprint(getattr(model, name)) for name in FITTED_ARRAY_ATTRIBUTES
    }
    result["epsilon_"] = (type(model.epsilon_).__name__, _array_fingerprint(model.epsilon_))
    result["n_features_in_"] = model.n_features_in_
    result["feature_names_in_"] = (
        _array_fingerprint(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None
    )
    result["predict"] = _array_fingerprint(model.predict(probe))
    for method in ("predict_proba", "predict_log_proba", "predict_joint_log_proba"):
        result[method] = _array_fingerprint(getattr(model, method)(probe))
    return result


def make_data(
    n_rows: int = 120, n_features: int = 4, n_classes: int = 3, seed: int = 0
) -> tuple[FloatMatrix, npt.NDArray[np.int64]]:
    """Gaussian blobs with every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_rows) % n_classes
    rng.shuffle(y)
    centres = rng.normal(scale=3.0, size=(n_classes, n_features))
    spread = rng.uniform(0.5, 2.0, size=n_features)
    X = centres[y] + rng.normal(size=(n_rows, n_features)) * spread
    return X, y.astype(np.int64)


def assert_fitted_like_sklearn(
    ours: GaussianNB, theirs: SklearnGaussianNB, X: Any, rtol: float = 1e-9
) -> None:
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    assert ours.classes_.dtype == theirs.classes_.dtype
    for name in ("theta_", "var_", "class_prior_", "class_count_"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(theirs, name), rtol=rtol, err_msg=name
        )
        assert getattr(ours, name).dtype == getattr(theirs, name).dtype, name
    np.testing.assert_allclose(ours.epsilon_, theirs.epsilon_, rtol=rtol)
    jll = theirs.predict_joint_log_proba(X)
    np.testing.assert_allclose(ours.predict_joint_log_proba(X), jll, rtol=rtol)
    # Log-probabilities close to 0 are differences of two large joint log-likelihoods: compare
    # them relative to the magnitude they were computed from.
    scale = np.max(np.abs(jll), axis=1, keepdims=True)
    log_proba_error = np.abs(ours.predict_log_proba(X) - theirs.predict_log_proba(X))
    assert np.all(log_proba_error <= rtol * np.maximum(scale, 1.0))
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


# ---------------------------------------------------------------------------- sklearn numbers

DATASETS: dict[str, Callable[..., Any]] = {
    "iris": datasets.load_iris,
    "digits": datasets.load_digits,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_fit_matches_sklearn_on_bundled_datasets(name: str) -> None:
    X, y = DATASETS[name](return_X_y=True)
    assert_fitted_like_sklearn(GaussianNB().fit(X, y), SklearnGaussianNB().fit(X, y), X)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_weighted_fit_with_priors_matches_sklearn_on_bundled_datasets(name: str) -> None:
    X, y = DATASETS[name](return_X_y=True)
    n_classes = len(np.unique(y))
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.1, 3.0, size=len(y))
    priors = rng.dirichlet(np.ones(n_classes))
    ours = GaussianNB(priors=priors).fit(X, y, sample_weight=weights)
    theirs = SklearnGaussianNB(priors=priors).fit(X, y, sample_weight=weights)
    assert_fitted_like_sklearn(ours, theirs, X)


@pytest.mark.parametrize("seed", range(5))
def test_random_weighted_data_with_priors_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    X, y = make_data(
        n_rows=int(rng.integers(50, 400)), n_features=7, n_classes=n_classes, seed=seed
    )
    X = X * rng.uniform(1e-3, 1e3, size=X.shape[1]) + rng.normal(scale=100, size=X.shape[1])
    weights = rng.exponential(size=len(y))
    priors = rng.dirichlet(np.ones(n_classes))
    var_smoothing = float(10.0 ** rng.uniform(-12, -2))
    ours = GaussianNB(priors=priors, var_smoothing=var_smoothing).fit(X, y, sample_weight=weights)
    theirs = SklearnGaussianNB(priors=priors, var_smoothing=var_smoothing).fit(
        X, y, sample_weight=weights
    )
    assert_fitted_like_sklearn(ours, theirs, X)


def test_single_partial_fit_matches_sklearn() -> None:
    X, y = make_data()
    ours = GaussianNB().partial_fit(X, y, classes=[0, 1, 2])
    theirs = SklearnGaussianNB().partial_fit(X, y, classes=[0, 1, 2])
    assert_fitted_like_sklearn(ours, theirs, X)


def test_score_is_accuracy() -> None:
    X, y = datasets.load_iris(return_X_y=True)
    model = GaussianNB().fit(X, y)
    assert model.score(X, y) == pytest.approx(np.mean(model.predict(X) == y))
    assert model.score(X, y) == SklearnGaussianNB().fit(X, y).score(X, y)


# ---------------------------------------------------------------------------- partial_fit == fit


@st.composite
def _split_problems(draw: st.DrawFn) -> tuple[FloatMatrix, Any, Any, list[int]]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_rows = draw(st.integers(4, 200))
    n_features = draw(st.integers(1, 6))
    n_classes = draw(st.integers(1, 4))
    X, y = make_data(n_rows, n_features, n_classes, seed=seed % 1000)
    # Any scale; offsets up to 100 standard deviations (merging means of far-off data loses
    # about |mean| / std ulps of the variance, whichever way it is computed).
    scale = 10.0 ** rng.uniform(-3, 3)
    X = X * scale + scale * rng.uniform(-100, 100)
    weights = rng.uniform(0.5, 2.0, size=n_rows) if draw(st.booleans()) else None
    cuts = sorted(draw(st.lists(st.integers(1, n_rows - 1), max_size=6, unique=True)))
    return X, y, weights, cuts


@settings(max_examples=60, deadline=None)
@given(_split_problems())
def test_partial_fit_over_any_split_equals_fit(
    problem: tuple[FloatMatrix, Any, Any, list[int]],
) -> None:
    X, y, weights, cuts = problem
    classes = np.unique(y)
    whole = GaussianNB().fit(X, y, sample_weight=weights)
    streamed = GaussianNB()
    bounds = [0, *cuts, len(y)]
    for start, stop in itertools.pairwise(bounds):
        streamed.partial_fit(
            X[start:stop],
            y[start:stop],
            classes=classes,
            sample_weight=None if weights is None else weights[start:stop],
        )
    for name in ("theta_", "var_", "class_prior_", "class_count_"):
        np.testing.assert_allclose(
            getattr(streamed, name), getattr(whole, name), rtol=1e-11, atol=1e-300, err_msg=name
        )
    # epsilon_ comes from all rows seen, not from the last batch (scikit-learn issue 14054).
    np.testing.assert_allclose(streamed.epsilon_, whole.epsilon_, rtol=1e-11)
    np.testing.assert_array_equal(streamed.predict(X), whole.predict(X))


def test_partial_fit_epsilon_differs_from_sklearn_batch_epsilon() -> None:
    X, y = make_data(n_rows=100)
    X[50:] *= 100.0  # the second batch has a much larger variance than the first
    ours = GaussianNB().partial_fit(X[50:], y[50:], classes=[0, 1, 2]).partial_fit(X[:50], y[:50])
    theirs = SklearnGaussianNB().partial_fit(X[50:], y[50:], classes=[0, 1, 2])
    theirs.partial_fit(X[:50], y[:50])
    whole = GaussianNB().fit(X, y)
    assert ours.epsilon_ == pytest.approx(whole.epsilon_, rel=1e-12)
    assert theirs.epsilon_ == pytest.approx(1e-9 * np.var(X[:50], axis=0).max(), rel=1e-12)
    assert abs(theirs.epsilon_ - whole.epsilon_) > 1e-3 * whole.epsilon_


# ---------------------------------------------------------------------------- bad input


def _fitted_model(how: str) -> tuple[GaussianNB, FloatMatrix]:
    X, y = make_data()
    model = GaussianNB()
    if how == "fit":
        model.fit(X, y)
    else:
        model.partial_fit(X[:60], y[:60], classes=[0, 1, 2]).partial_fit(X[60:], y[60:])
    return model, X


X_GOOD, Y_GOOD = make_data()


def _with_value(value: float) -> FloatMatrix:
    X = X_GOOD.copy()
    X[7, 2] = value
    return X


# (id, method call on a fitted model, expected exception, message fragment)
BAD_CALLS: list[tuple[str, Callable[[GaussianNB], Any], type[Exception], str]] = [
    (
        "nan_in_X_fit",
        lambda m: m.fit(_with_value(np.nan), Y_GOOD),
        ValueError,
        "Input X contains NaN",
    ),
    (
        "nan_in_X_partial_fit",
        lambda m: m.partial_fit(_with_value(np.nan), Y_GOOD),
        ValueError,
        "NaN",
    ),
    ("inf_in_X_fit", lambda m: m.fit(_with_value(np.inf), Y_GOOD), ValueError, "infinity"),
    (
        "neg_inf_in_X_partial_fit",
        lambda m: m.partial_fit(_with_value(-np.inf), Y_GOOD),
        ValueError,
        "infinity",
    ),
    (
        "nan_in_X_predict",
        lambda m: m.predict(_with_value(np.nan)),
        ValueError,
        "Input X contains NaN",
    ),
    (
        "inf_in_X_predict_proba",
        lambda m: m.predict_proba(_with_value(np.inf)),
        ValueError,
        "infinity",
    ),
    (
        "float32_fortran_nan",
        lambda m: m.fit(np.asfortranarray(_with_value(np.nan), dtype=np.float32), Y_GOOD),
        ValueError,
        "NaN",
    ),
    ("X_1d_fit", lambda m: m.fit(X_GOOD[:, 0], Y_GOOD), ValueError, "Expected 2D array"),
    ("X_1d_predict", lambda m: m.predict(X_GOOD[0]), ValueError, "Expected 2D array"),
    ("X_3d_fit", lambda m: m.fit(X_GOOD[:, :, None], Y_GOOD), ValueError, "dim 3"),
    ("X_3d_partial_fit", lambda m: m.partial_fit(X_GOOD[:, :, None], Y_GOOD), ValueError, "dim 3"),
    ("X_no_rows_fit", lambda m: m.fit(X_GOOD[:0], Y_GOOD[:0]), ValueError, "0 sample(s)"),
    (
        "X_no_rows_partial_fit",
        lambda m: m.partial_fit(X_GOOD[:0], Y_GOOD[:0]),
        ValueError,
        "0 sample(s)",
    ),
    ("X_no_features_fit", lambda m: m.fit(X_GOOD[:, :0], Y_GOOD), ValueError, "0 feature(s)"),
    ("X_no_rows_predict", lambda m: m.predict(X_GOOD[:0]), ValueError, "0 sample(s)"),
    (
        "X_strings",
        lambda m: m.fit(np.full(X_GOOD.shape, "a"), Y_GOOD),
        ValueError,
        "dtype='numeric' is not compatible",
    ),
    ("X_complex", lambda m: m.fit(X_GOOD + 1j, Y_GOOD), ValueError, "Complex data not supported"),
    (
        "X_y_length_fit",
        lambda m: m.fit(X_GOOD, Y_GOOD[:-1]),
        ValueError,
        "inconsistent numbers of samples",
    ),
    (
        "X_y_length_partial_fit",
        lambda m: m.partial_fit(X_GOOD[:-3], Y_GOOD),
        ValueError,
        "inconsistent numbers of samples",
    ),
    (
        "X_weight_length_fit",
        lambda m: m.fit(X_GOOD, Y_GOOD, sample_weight=np.ones(5)),
        ValueError,
        "sample_weight.shape",
    ),
    (
        "X_weight_length_partial_fit",
        lambda m: m.partial_fit(X_GOOD, Y_GOOD, sample_weight=np.ones(500)),
        ValueError,
        "sample_weight.shape",
    ),
    (
        "weight_2d",
        lambda m: m.fit(X_GOOD, Y_GOOD, sample_weight=np.ones((len(Y_GOOD), 2))),
        ValueError,
        "1D array",
    ),
    (
        "weight_negative",
        lambda m: m.fit(X_GOOD, Y_GOOD, sample_weight=-np.ones(len(Y_GOOD))),
        ValueError,
        "Negative values",
    ),
    (
        "weight_nan",
        lambda m: m.fit(X_GOOD, Y_GOOD, sample_weight=np.full(len(Y_GOOD), np.nan)),
        ValueError,
        "NaN",
    ),
    (
        "weight_all_zero",
        lambda m: m.fit(X_GOOD, Y_GOOD, sample_weight=np.zeros(len(Y_GOOD))),
        ValueError,
        "non-zero",
    ),
    (
        "n_features_predict",
        lambda m: m.predict(X_GOOD[:, :3]),
        ValueError,
        "X has 3 features, but GaussianNB is expecting 4 features as input.",
    ),
    (
        "n_features_predict_proba",
        lambda m: m.predict_proba(np.ones((2, 5))),
        ValueError,
        "X has 5 features",
    ),
    (
        "n_features_partial_fit",
        lambda m: m.partial_fit(X_GOOD[:, :3], Y_GOOD),
        ValueError,
        "X has 3 features",
    ),
    (
        "priors_wrong_length",
        lambda m: m.set_params(priors=[0.5, 0.5]).fit(X_GOOD, Y_GOOD),
        ValueError,
        "Number of priors must match number of classes.",
    ),
    (
        "priors_wrong_length_partial_fit",
        lambda m: m.set_params(priors=[0.5, 0.5]).partial_fit(X_GOOD, Y_GOOD),
        ValueError,
        "Number of priors",
    ),
    (
        "priors_negative",
        lambda m: m.set_params(priors=[1.5, -0.25, -0.25]).fit(X_GOOD, Y_GOOD),
        ValueError,
        "Priors must be non-negative.",
    ),
    (
        "priors_not_summing_to_one",
        lambda m: m.set_params(priors=[0.5, 0.4, 0.3]).fit(X_GOOD, Y_GOOD),
        ValueError,
        "The sum of the priors should be 1.",
    ),
    (
        "var_smoothing_negative",
        lambda m: m.set_params(var_smoothing=-1.0).fit(X_GOOD, Y_GOOD),
        InvalidParameterError,
        "var_smoothing",
    ),
    (
        "var_smoothing_negative_partial_fit",
        lambda m: m.set_params(var_smoothing=-1e-9).partial_fit(X_GOOD, Y_GOOD),
        InvalidParameterError,
        "var_smoothing",
    ),
    (
        "n_jobs_zero",
        lambda m: m.set_params(n_jobs=0).fit(X_GOOD, Y_GOOD),
        InvalidParameterError,
        "n_jobs",
    ),
    (
        "n_jobs_bool",
        lambda m: m.set_params(n_jobs=True).fit(X_GOOD, Y_GOOD),
        InvalidParameterError,
        "The 'n_jobs' parameter of GaussianNB must be",
    ),
    (
        "label_not_in_classes",
        lambda m: m.partial_fit(X_GOOD, np.where(Y_GOOD == 2, 9, Y_GOOD)),
        ValueError,
        "do not exist in the initial classes",
    ),
    (
        "classes_changed",
        lambda m: m.partial_fit(X_GOOD, Y_GOOD, classes=[0, 1, 2, 3]),
        ValueError,
        "is not the same as on last call",
    ),
    ("y_continuous", lambda m: m.fit(X_GOOD, Y_GOOD + 0.5), ValueError, "Unknown label type"),
    (
        "y_nan",
        lambda m: m.fit(X_GOOD, np.where(Y_GOOD == 1, np.nan, Y_GOOD)),
        ValueError,
        "Input y contains NaN",
    ),
    ("y_none", lambda m: m.fit(X_GOOD, None), ValueError, "requires y to be passed"),
    (
        "y_2d",
        lambda m: m.fit(X_GOOD, np.stack([Y_GOOD, Y_GOOD], axis=1)),
        ValueError,
        "y should be a 1d array",
    ),
    (
        "y_mixed_types",
        lambda m: m.fit(X_GOOD, np.array(["a", 1] * 60, dtype=object)),
        TypeError,
        "not supported between",
    ),
    (
        "sparse_X",
        lambda m: m.fit(__import__("scipy.sparse").sparse.csr_matrix(X_GOOD), Y_GOOD),
        TypeError,
        "dense data is required",
    ),
    (
        "stats_shape_mismatch",
        lambda m: m.partial_fit_stats(gaussmle.ClassStats.empty(3, 2)),
        ValueError,
        "shape",
    ),
]


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [pytest.param(call, error, fragment, id=name) for name, call, error, fragment in BAD_CALLS],
)
def test_rejected_call_raises_and_leaves_model_unchanged(
    how: str, call: Callable[[GaussianNB], Any], error: type[Exception], fragment: str
) -> None:
    model, probe = _fitted_model(how)
    before = fingerprint(model, probe)
    with pytest.raises(error, match=None) as excinfo:
        call(model)
    assert fragment in str(excinfo.value)
    assert fingerprint(model, probe) == before


def test_nan_message_names_row_and_column() -> None:
    with pytest.raises(ValueError, match=r"Input X contains NaN.*row 7, column 2"):
        GaussianNB().fit(_with_value(np.nan), Y_GOOD)


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba", "score"]
)
def test_unfitted_model_raises_not_fitted(method: str) -> None:
    args = (X_GOOD, Y_GOOD) if method == "score" else (X_GOOD,)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(GaussianNB(), method)(*args)
    assert not hasattr(GaussianNB(), "classes_")


def test_first_partial_fit_without_classes_raises_and_stays_unfitted() -> None:
    model = GaussianNB()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        model.partial_fit(X_GOOD, Y_GOOD)
    assert not hasattr(model, "theta_")
    with pytest.raises(NotFittedError):
        model.predict(X_GOOD)


def test_rejected_first_fit_leaves_model_unfitted() -> None:
    model = GaussianNB()
    with pytest.raises(ValueError):
        model.fit(_with_value(np.nan), Y_GOOD)
    assert vars(model) == {"priors": None, "var_smoothing": 1e-9, "n_jobs": None}


def test_y_column_vector_warns_like_sklearn() -> None:
    with pytest.warns(DataConversionWarning):
        model = GaussianNB().fit(X_GOOD, Y_GOOD[:, None])
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])


# ---------------------------------------------------------------------------- persistence


def _fitted_for_persistence() -> tuple[GaussianNB, FloatMatrix]:
    X, y = make_data(n_rows=200, n_features=6, n_classes=4)
    labels = np.array(["ant", "bee", "cat", "dog"])[y]
    model = GaussianNB(priors=[0.1, 0.2, 0.3, 0.4], var_smoothing=1e-6, n_jobs=1)
    model.partial_fit(X[:80], labels[:80], classes=["ant", "bee", "cat", "dog"])
    model.partial_fit(X[80:], labels[80:])
    return model, X


def test_pickle_round_trip_is_bit_identical() -> None:
    model, X = _fitted_for_persistence()
    restored = pickle.loads(pickle.dumps(model))
    assert fingerprint(restored, X) == fingerprint(model, X)
    assert restored.get_params() == model.get_params()
    # The restored model keeps learning exactly like the original.
    model.partial_fit(X[:10], model.predict(X[:10]))
    restored.partial_fit(X[:10], restored.predict(X[:10]))
    assert fingerprint(restored, X) == fingerprint(model, X)


def test_joblib_round_trip_is_bit_identical() -> None:
    model, X = _fitted_for_persistence()
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    assert fingerprint(joblib.load(buffer), X) == fingerprint(model, X)


def test_deepcopy_is_bit_identical_and_independent() -> None:
    model, X = _fitted_for_persistence()
    before = fingerprint(model, X)
    duplicate = copy.deepcopy(model)
    assert fingerprint(duplicate, X) == before
    duplicate.partial_fit(X[:5], np.array(["ant"] * 5))
    assert fingerprint(model, X) == before
    assert fingerprint(duplicate, X) != before


def test_clone_is_unfitted_and_refits_identically() -> None:
    X, y = make_data()
    model = GaussianNB(var_smoothing=1e-5, n_jobs=2).fit(X, y)
    cloned = clone(model)
    assert cloned.get_params() == model.get_params()
    assert not hasattr(cloned, "classes_")
    assert fingerprint(cloned.fit(X, y), X) == fingerprint(model, X)


def test_fitted_attributes_are_read_only() -> None:
    model = GaussianNB().fit(X_GOOD, Y_GOOD)
    with pytest.raises(ValueError, match="read-only"):
        model.theta_[0, 0] = 1.0
    with pytest.raises(AttributeError):
        model.theta_ = np.zeros((3, 4))  # type: ignore[misc]


# ---------------------------------------------------------------------------- sklearn tooling


def test_pipeline_grid_search_and_cross_val_score() -> None:
    X, y = datasets.load_wine(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), GaussianNB())
    scores = cross_val_score(pipeline, X, y, cv=5)
    assert scores.shape == (5,)
    assert scores.mean() > 0.9
    reference = cross_val_score(make_pipeline(StandardScaler(), SklearnGaussianNB()), X, y, cv=5)
    np.testing.assert_allclose(scores, reference)

    search = GridSearchCV(GaussianNB(), {"var_smoothing": [1e-9, 1e-3, 10.0]}, cv=3).fit(X, y)
    assert search.best_params_["var_smoothing"] in (1e-9, 1e-3)
    assert isinstance(search.best_estimator_, GaussianNB)
    assert search.best_estimator_.score(X, y) > 0.9


def test_dataframe_feature_names() -> None:
    X, y = make_data()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = GaussianNB().fit(frame, y)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c", "d"])
    assert model.feature_names_in_.dtype == object
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        from_array = model.predict(X)
    np.testing.assert_array_equal(model.predict(frame), from_array)
    before = fingerprint(model, frame)
    with pytest.raises(ValueError, match="feature names should match"):
        model.partial_fit(frame.rename(columns={"a": "z"}), y)
    assert fingerprint(model, frame) == before
    # Refitting on an array drops the names, as in scikit-learn.
    assert not hasattr(model.fit(X, y), "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but GaussianNB was fitted without"):
        model.predict(frame)


# ---------------------------------------------------------------------------- dtypes


def test_float32_in_float32_out_and_exact_values_rounded() -> None:
    X, y = make_data()
    X32 = np.asfortranarray(X, dtype=np.float32)
    model32 = GaussianNB().fit(X32, y)
    exact = GaussianNB().fit(X32.astype(np.float64), y)
    for name in ("theta_", "var_", "class_prior_", "class_count_"):
        assert getattr(model32, name).dtype == np.float32, name
        np.testing.assert_array_equal(
            getattr(model32, name), getattr(exact, name).astype(np.float32)
        )
    assert type(model32.epsilon_) is np.float32
    assert model32.epsilon_ == np.float32(exact.epsilon_)
    for method in ("predict_proba", "predict_log_proba", "predict_joint_log_proba"):
        assert getattr(model32, method)(X32).dtype == np.float32
        np.testing.assert_allclose(
            getattr(model32, method)(X32), getattr(exact, method)(X32), rtol=1e-6, atol=1e-6
        )
    sklearn32 = SklearnGaussianNB().fit(X32, y)
    assert_fitted_like_sklearn(model32, sklearn32, X32, rtol=1e-4)


@pytest.mark.parametrize(
    ("model_dtype", "input_dtype"),
    [
        (np.float32, np.float64),
        (np.float64, np.float32),
        (np.float64, np.float64),
        (np.float32, np.float32),
    ],
)
def test_output_dtype_promotion_matches_sklearn(model_dtype: Any, input_dtype: Any) -> None:
    X, y = make_data()
    ours = GaussianNB().fit(X.astype(model_dtype), y)
    theirs = SklearnGaussianNB().fit(X.astype(model_dtype), y)
    probe = X.astype(input_dtype)
    for method in ("predict_proba", "predict_log_proba", "predict_joint_log_proba"):
        assert getattr(ours, method)(probe).dtype == getattr(theirs, method)(probe).dtype


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.float16, bool])
def test_other_real_dtypes_become_float64(dtype: Any) -> None:
    X, y = make_data()
    Xd = (X > 0).astype(dtype) if dtype is bool else (np.abs(X) * 3).astype(dtype)
    model = GaussianNB().fit(Xd, y)
    assert model.theta_.dtype == np.float64
    assert model.predict_proba(Xd).dtype == np.float64
    reference = GaussianNB().fit(Xd.astype(np.float64), y)
    assert fingerprint(model, Xd.astype(np.float64)) == fingerprint(
        reference, Xd.astype(np.float64)
    )


def test_float32_fortran_input_is_not_copied() -> None:
    X, _ = make_data()
    X32 = np.asfortranarray(X, dtype=np.float32)
    X32.flags.writeable = False
    model = GaussianNB()
    assert model._float_matrix(X32) is X32  # handed to Rust as it is
    fitted = GaussianNB().fit(X32, Y_GOOD)
    assert fitted._predict_matrix(X32, fitted._fitted_state) is X32


# ---------------------------------------------------------------------------- labels


LABEL_CASES: dict[str, Callable[[npt.NDArray[np.int64]], Any]] = {
    "strings": lambda y: np.array(["setosa", "versicolor", "virginica"])[y],
    "object_strings": lambda y: np.array(["b", "a", "c"], dtype=object)[y],
    "string_list": lambda y: [["x", "y", "z"][i] for i in y],
    "negative_ints": lambda y: np.array([-7, -1, 3])[y],
    "huge_ints": lambda y: np.array([-(2**63), 0, 2**63 - 1])[y],
    "huge_uint64": lambda y: np.array([0, 2**63 + 5, 2**64 - 1], dtype=np.uint64)[y],
    "int8": lambda y: (y - 1).astype(np.int8),
    "uint8": lambda y: y.astype(np.uint8),
    "bools": lambda y: y == 1,
    "integral_floats": lambda y: y.astype(np.float64) * 2.0 - 1.0,
    "float32_labels": lambda y: y.astype(np.float32),
    "python_ints": lambda y: [int(v) * 1000 for v in y],
    "pandas_series": lambda y: pd.Series(np.array(["p", "q", "r"])[y]),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_label_types_match_sklearn(case: str) -> None:
    X, y = make_data()
    labels = LABEL_CASES[case](y)
    ours = GaussianNB().fit(X, labels)
    theirs = SklearnGaussianNB().fit(X, labels)
    assert ours.classes_.dtype == theirs.classes_.dtype
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    predicted = ours.predict(X)
    assert predicted.dtype == theirs.predict(X).dtype
    np.testing.assert_array_equal(predicted, theirs.predict(X))
    np.testing.assert_allclose(ours.theta_, theirs.theta_, rtol=1e-12)
    streamed = GaussianNB().partial_fit(X[:40], np.asarray(labels)[:40], classes=theirs.classes_)
    streamed.partial_fit(X[40:], np.asarray(labels)[40:])
    np.testing.assert_array_equal(streamed.predict(X), predicted)


def test_unseen_class_is_never_predicted_and_follows_sklearn() -> None:
    X, y = make_data()
    classes = [0, 1, 2, 5]
    ours = GaussianNB().partial_fit(X, y, classes=classes)
    theirs = SklearnGaussianNB().partial_fit(X, y, classes=classes)
    np.testing.assert_array_equal(ours.class_count_[3], 0.0)
    assert ours.class_prior_[3] == 0.0
    np.testing.assert_array_equal(ours.theta_[3], theirs.theta_[3])
    np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-9)
    far_away = np.vstack([X, np.zeros((1, 4)), np.full((1, 4), 1e6)])
    proba = ours.predict_proba(far_away)
    assert not np.isnan(proba).any()
    np.testing.assert_array_equal(proba[:, 3], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.isneginf(ours.predict_log_proba(far_away)[:, 3]).all()
    assert 5 not in ours.predict(far_away)


def test_zero_weight_class_is_treated_as_unseen() -> None:
    X, y = make_data()
    weights = np.where(y == 1, 0.0, 1.0)
    ours = GaussianNB().fit(X, y, sample_weight=weights)
    theirs = SklearnGaussianNB().fit(X, y, sample_weight=weights)
    np.testing.assert_array_equal(ours.theta_[1], theirs.theta_[1])
    np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-9)
    assert 1 not in ours.predict(X)
    assert not np.isnan(ours.predict_proba(X)).any()


def test_zero_variance_without_smoothing_raises_at_predict_time() -> None:
    X, y = make_data()
    X[:, 1] = 3.0
    model = GaussianNB(var_smoothing=0.0).fit(X, y)  # fitting is fine, as in scikit-learn
    assert model.epsilon_ == 0.0
    np.testing.assert_array_equal(model.var_[:, 1], 0.0)
    for method in ("predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba"):
        with pytest.raises(ValueError, match="var_smoothing > 0"):
            getattr(model, method)(X)
    # The default smoothing lifts the constant feature's variance: finite probabilities.
    smoothed = GaussianNB().fit(X, y)
    np.testing.assert_allclose(smoothed.var_[:, 1], smoothed.epsilon_)
    proba = smoothed.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_all_constant_data_raises_at_predict_time_instead_of_nan() -> None:
    X = np.ones((6, 2))
    y = np.array([0, 1] * 3)
    model = GaussianNB().fit(X, y)  # epsilon_ = 1e-9 * 0: every variance is zero
    assert model.epsilon_ == 0.0
    with pytest.raises(ValueError, match="variance must be finite and > 0"):
        model.predict_proba(X)
    # The message names the real cause: the smoothing is on, but there is nothing to scale.
    with pytest.raises(ValueError, match="every feature of the training data is constant"):
        model.predict(X)


@pytest.mark.parametrize(
    ("scale", "var_smoothing", "cause"),
    [
        (1.0, 0.0, "var_smoothing=0 leaves its variance at zero"),
        (1e-150, 1e-9, "too small to lift it to a normal float64"),
    ],
)
def test_zero_variance_error_names_its_cause(
    scale: float, var_smoothing: float, cause: str
) -> None:
    # Each class is constant; the classes differ, so the largest feature variance is
    # 0.25·scale² (0 smoothing in the first case, a subnormal epsilon_ in the second).
    X = np.repeat([[0.0, 0.0], [scale, scale]], 3, axis=0)
    y = np.repeat([0, 1], 3)
    model = GaussianNB(var_smoothing=var_smoothing).fit(X, y)
    for method in (model.predict, model.predict_proba, model.predict_joint_log_proba):
        with pytest.raises(ValueError, match=cause):
            method(X)


# ---------------------------------------------------------------------------- n_jobs, stats hooks


@pytest.mark.parametrize("n_jobs", [1, 2, 3, -1, -2])
def test_n_jobs_gives_bit_identical_results(n_jobs: int) -> None:
    X, y = make_data(n_rows=20000, n_features=16, n_classes=5)
    reference = fingerprint(GaussianNB().fit(X, y), X)
    assert fingerprint(GaussianNB(n_jobs=n_jobs).fit(X, y), X) == reference


def test_from_class_stats_equals_fit() -> None:
    X, y = make_data()
    labels = np.array(["a", "b", "c"])[y]
    weights = np.linspace(0.5, 2.0, len(y))
    halves = [
        gaussmle.class_stats(X[s], y[s], 3, sample_weight=weights[s])
        for s in (slice(0, 50), slice(50, None))
    ]
    built = GaussianNB.from_class_stats(halves[0] + halves[1], ["a", "b", "c"], var_smoothing=1e-7)
    fitted = GaussianNB(var_smoothing=1e-7).fit(X, labels, sample_weight=weights)
    for name in ("theta_", "var_", "class_prior_", "class_count_"):
        np.testing.assert_allclose(getattr(built, name), getattr(fitted, name), rtol=1e-12)
    assert built.epsilon_ == pytest.approx(fitted.epsilon_, rel=1e-12)
    np.testing.assert_array_equal(built.predict(X), fitted.predict(X))
    # A built model keeps learning through the ordinary API and the stats hook.
    again = GaussianNB.from_class_stats(halves[0], ["a", "b", "c"], var_smoothing=1e-7)
    again.partial_fit_stats(halves[1])
    np.testing.assert_allclose(again.var_, built.var_, rtol=1e-12)
    np.testing.assert_allclose(again.get_class_stats().m2, built.get_class_stats().m2, rtol=1e-12)


def test_from_class_stats_rejects_inconsistent_input() -> None:
    stats = gaussmle.class_stats(X_GOOD, Y_GOOD, 3)
    with pytest.raises(ValueError, match="sorted and unique"):
        GaussianNB.from_class_stats(stats, ["b", "a", "c"])
    with pytest.raises(ValueError, match="2 classes given"):
        GaussianNB.from_class_stats(stats, ["a", "b"])
    with pytest.raises(InvalidParameterError):
        GaussianNB.from_class_stats(stats, [0, 1, 2], var_smoothing=-1.0)
    with pytest.raises(ValueError, match="Number of priors"):
        GaussianNB.from_class_stats(stats, [0, 1, 2], priors=[1.0])
    with pytest.raises(TypeError, match="ClassStats"):
        GaussianNB.from_class_stats("stats", [0, 1, 2])  # type: ignore[arg-type]
    named = GaussianNB.from_class_stats(
        stats, [0, 1, 2], feature_names=["a", "b", "c", "d"], dtype=np.float32
    )
    np.testing.assert_array_equal(named.feature_names_in_, ["a", "b", "c", "d"])
    assert named.theta_.dtype == np.float32


def test_params_are_keyword_only_and_stored_unchanged() -> None:
    priors = [0.2, 0.3, 0.5]
    model = GaussianNB(priors=priors, var_smoothing=0.5, n_jobs=3)
    assert model.priors is priors
    assert model.get_params() == {"priors": priors, "var_smoothing": 0.5, "n_jobs": 3}
    with pytest.raises(TypeError):
        GaussianNB(None)  # type: ignore[call-arg]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X_GOOD, Y_GOOD)
    np.testing.assert_allclose(model.class_prior_, priors)


def test_n_jobs_true_names_n_jobs_not_n_threads() -> None:
    with pytest.raises(InvalidParameterError, match=r"'n_jobs' parameter.*Got True instead"):
        GaussianNB(n_jobs=True).fit(X_GOOD, Y_GOOD)


def test_n_jobs_minus_one_is_all_cores_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gaussmle._threads import threads_for_n_jobs

    monkeypatch.setenv("GAUSSMLE_NUM_THREADS", "1")
    cores = gaussmle._core.available_cores()
    assert threads_for_n_jobs(-1) == cores
    assert threads_for_n_jobs(-2) == max(1, cores - 1)
    assert threads_for_n_jobs(3) == 3
    assert threads_for_n_jobs(None) is None
    with pytest.raises(TypeError, match="n_jobs must be an integer or None; got True"):
        threads_for_n_jobs(True)


def test_invalid_statistics_are_rejected_by_the_class_stats_constructor_as_by_merging() -> None:
    # from_class_stats and partial_fit_stats accept only a ClassStats, which is immutable and
    # validated when built: the constructor is the check, so an invalid table never reaches
    # them. It is the validator of merging (partial_fit_stats), with the same words.
    stats = gaussmle.class_stats(X_GOOD, Y_GOOD)
    n = stats.n_classes
    globals_ = (stats.global_count, stats.global_mean, stats.global_m2)
    bad_weight = np.r_[-5.0, stats.weight[1:]]
    bad_mean = stats.mean.copy()
    bad_mean[1, 0] = np.nan
    for weight, mean, message in [
        (bad_weight, stats.mean, "statistics weight must be finite and >= 0; got -5"),
        (stats.weight, bad_mean, "statistics mean must be finite; got NaN for group 1, feature 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            gaussmle.ClassStats(weight, mean, stats.m2, *globals_)
        lo = np.zeros_like(stats.mean)
        with pytest.raises(ValueError, match=message):
            gaussmle._core.merge_stats(
                (stats.weight, stats.mean, lo, stats.m2), (weight, mean, lo, stats.m2)
            )
    # The valid statistics give the model fit gives.
    model = GaussianNB.from_class_stats(stats, np.arange(n))
    np.testing.assert_array_equal(model.theta_, GaussianNB().fit(X_GOOD, Y_GOOD).theta_)
