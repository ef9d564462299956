"""scikit-learn's own estimator checks, with no expected failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gaussmle import GaussianNB
from sklearn.utils.estimator_checks import parametrize_with_checks


@parametrize_with_checks([GaussianNB()], expected_failed_checks=lambda est: {})
def test_sklearn_compatible(estimator: GaussianNB, check: Callable[[Any], None]) -> None:
    # Each check raises on failure; returning means it passed.
    check(estimator)
