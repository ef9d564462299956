"""Fit benchmarks: gaussmle against the streaming floor X.sum(), numpy and scikit-learn."""

from __future__ import annotations

from typing import Any

import gaussmle
import numpy as np
import pytest

Data = tuple[Any, Any, int]


def test_x_sum(benchmark: Any, data: Data) -> None:
    X, _, _ = data
    benchmark(X.sum)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_class_stats(benchmark: Any, data: Data, n_threads: int) -> None:
    X, y, c = data
    benchmark(gaussmle.class_stats, X, y, c, n_threads=n_threads)


def test_estimator_fit(benchmark: Any, data: Data) -> None:
    estimator = pytest.importorskip("gaussmle.estimator")
    X, y, _ = data
    benchmark(lambda: estimator.GaussianNB(n_jobs=1).fit(X, y))


def test_numpy_mask_loop(benchmark: Any, data: Data) -> None:
    X, y, c = data

    def fit() -> None:
        for k in range(c):
            Xc = X[y == k]
            Xc.mean(0)
            Xc.var(0)

    benchmark(fit)


def test_sklearn_fit(benchmark: Any, data: Data) -> None:
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    X, y, _ = data
    benchmark(lambda: naive_bayes.GaussianNB().fit(X, y))


def test_fit_matches_numpy(data: Data) -> None:
    # Not a timing: a guard that the benchmarked call computes the right thing.
    X, y, c = data
    s = gaussmle.class_stats(X[:2000], y[:2000], c)
    for k in range(c):
        rows = X[:2000][y[:2000] == k].astype(np.float64)
        if len(rows):
            np.testing.assert_allclose(s.mean[k], rows.mean(0), rtol=1e-9, atol=1e-12)
