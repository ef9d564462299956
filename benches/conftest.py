"""Shared data for the pytest-benchmark files (run with ``pytest benches --benchmark-only``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

# Medium shapes so the whole suite takes seconds; benches/report.py runs the full sizes.
SHAPES = [(200_000, 32, 10), (20_000, 784, 10), (50_000, 64, 100), (500_000, 2, 2)]


def shape_id(shape: tuple[int, int, int]) -> str:
    n, d, c = shape
    return f"n{n}-d{d}-C{c}"


@pytest.fixture(scope="session", params=SHAPES, ids=shape_id)
def shape(request: pytest.FixtureRequest) -> tuple[int, int, int]:
    value: tuple[int, int, int] = request.param
    return value


@pytest.fixture(scope="session", params=["float64", "float32"])
def dtype(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def data(shape: tuple[int, int, int], dtype: str) -> tuple[Any, Any, int]:
    n, d, c = shape
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((n, d)) + rng.normal(scale=0.5, size=(c, d))[y]
    return np.ascontiguousarray(X, dtype=dtype), y, c
