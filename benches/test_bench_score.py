"""Scoring benchmarks: gaussmle's scorer against the BLAS expansion and scikit-learn."""

from __future__ import annotations

from typing import Any

import gaussmle
import numpy as np
import pytest

Data = tuple[Any, Any, int]


@pytest.fixture(scope="session")
def model(data: Data) -> tuple[Any, Any, Any]:
    X, y, c = data
    s = gaussmle.class_stats(X, y, c)
    var = s.var + 1e-9 * s.global_var.max()
    return s.mean, var, np.log(s.weight / s.weight.sum())


@pytest.fixture(scope="session")
def scorer(model: tuple[Any, Any, Any]) -> Any:
    return gaussmle.make_scorer(*model)


@pytest.fixture(scope="session")
def sklearn_model(data: Data) -> Any:
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    X, y, _ = data
    return naive_bayes.GaussianNB().fit(X, y)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_jll(benchmark: Any, data: Data, scorer: Any, n_threads: int) -> None:
    benchmark(scorer.joint_log_likelihood, data[0], None, n_threads)


def test_predict(benchmark: Any, data: Data, scorer: Any) -> None:
    benchmark(scorer.predict, data[0], None, 1)


def test_proba(benchmark: Any, data: Data, scorer: Any) -> None:
    benchmark(scorer.proba, data[0], None, 1)


def test_blas_expansion_jll(benchmark: Any, data: Data, model: tuple[Any, Any, Any]) -> None:
    X = data[0]
    mean, var, log_prior = model
    a = (0.5 / var).T.astype(X.dtype)
    b = (mean / var).T.astype(X.dtype)
    const = log_prior - 0.5 * np.log(2 * np.pi * var).sum(1) - 0.5 * (mean * mean / var).sum(1)
    const = const.astype(X.dtype)
    benchmark(lambda: -(X * X) @ a + X @ b + const)


def test_sklearn_jll(benchmark: Any, data: Data, sklearn_model: Any) -> None:
    benchmark(sklearn_model.predict_joint_log_proba, data[0])


def test_sklearn_proba(benchmark: Any, data: Data, sklearn_model: Any) -> None:
    benchmark(sklearn_model.predict_proba, data[0])


@pytest.mark.parametrize("rows", [1, 100])
def test_predict_latency(benchmark: Any, data: Data, rows: int) -> None:
    estimator = pytest.importorskip("gaussmle.estimator")
    X, y, _ = data
    est = estimator.GaussianNB(n_jobs=1).fit(X[:20000], y[:20000])
    benchmark(est.predict, np.ascontiguousarray(X[:rows]))


@pytest.mark.parametrize("rows", [1, 100])
def test_sklearn_predict_latency(benchmark: Any, data: Data, sklearn_model: Any, rows: int) -> None:
    benchmark(sklearn_model.predict, np.ascontiguousarray(data[0][:rows]))
