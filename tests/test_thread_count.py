"""The thread-count rule: None/env/all cores, -1 = all cores, capped at the cores, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import gaussmle
import numpy as np
import pytest

CORES = os.cpu_count() or 1


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(300_000, 4)), rng.integers(0, 3, 300_000)


def _live_threads() -> int:
    # OS threads of this process, Rust pool workers included (threading.active_count misses them).
    return len(os.listdir("/proc/self/task"))


def test_huge_thread_counts_are_capped_and_pools_do_not_accumulate() -> None:
    x, y = _data()
    reference = gaussmle.class_stats(x, y, 3, n_threads=1)
    before = _live_threads()
    for n_threads in (2**40, 2**64, 10**30, *range(2, 40)):
        stats = gaussmle.class_stats(x, y, 3, n_threads=n_threads)
        np.testing.assert_array_equal(stats.m2, reference.m2)
    # Without the cap, each distinct count would leave a pool of that many threads behind
    # (hundreds here); with it, at most one pool per count in 2..=cores can ever be added.
    assert _live_threads() - before <= CORES * CORES


@pytest.mark.parametrize("bad", [0, -2, -(2**70)])
def test_zero_and_negative_counts_are_value_errors(bad: int) -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="n_threads"):
        gaussmle.class_stats(x[:10], y[:10], 3, n_threads=bad)


@pytest.mark.parametrize("bad", [1.5, "2", True])
def test_non_integer_counts_are_type_errors(bad: object) -> None:
    x, y = _data()
    with pytest.raises(TypeError, match="n_threads"):
        gaussmle.class_stats(x[:10], y[:10], 3, n_threads=bad)  # type: ignore[arg-type]


def test_minus_one_and_numpy_integers_are_accepted() -> None:
    x, y = _data()
    a = gaussmle.class_stats(x, y, 3, n_threads=-1)
    b = gaussmle.class_stats(x, y, 3, n_threads=np.int64(2))
    np.testing.assert_array_equal(a.mean, b.mean)
    assert gaussmle.default_n_threads() <= CORES


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2.5"])
def test_a_bad_thread_count_in_the_environment_is_a_value_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    x, y = _data()
    monkeypatch.setenv("GAUSSMLE_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f'GAUSSMLE_NUM_THREADS .* got "{value}"'):
        gaussmle.class_stats(x[:10], y[:10], 3)
    with pytest.raises(ValueError, match="GAUSSMLE_NUM_THREADS"):
        gaussmle.default_n_threads()
    # An explicit count does not read the variable.
    assert gaussmle.class_stats(x[:10], y[:10], 3, n_threads=1).weight.sum() == 10


def test_an_empty_thread_count_in_the_environment_means_all_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GAUSSMLE_NUM_THREADS", raising=False)
    all_cores = gaussmle.default_n_threads()
    monkeypatch.setenv("GAUSSMLE_NUM_THREADS", "  ")
    assert gaussmle.default_n_threads() == all_cores
    monkeypatch.setenv("GAUSSMLE_NUM_THREADS", "1")
    assert gaussmle.default_n_threads() == 1


def test_an_unknown_simd_level_in_the_environment_warns_at_import() -> None:
    def run(value: str, code: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GAUSSMLE_SIMD": value}
        return subprocess.run(
            [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    bad = run("sse9", "import gaussmle")
    assert bad.returncode != 0 and 'GAUSSMLE_SIMD="sse9" is not a SIMD level' in bad.stderr
    # A value that is not UTF-8 is not a level name either.
    raw = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", "import gaussmle"],
        env={**os.environb, b"GAUSSMLE_SIMD": b"avx\xff"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert raw.returncode != 0 and "is not a SIMD level" in raw.stderr
    # A known name (any case) is accepted silently and caps the level.
    good = run(" Scalar ", "import gaussmle; print(gaussmle.simd_level())")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "scalar"


def test_negative_n_jobs_count_all_cores_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """joblib's convention: -1 is all cores, -2 all but one; GAUSSMLE_NUM_THREADS only sets
    the default for None (a reviewer found -1 resolving to the variable's 1 thread, and a bad
    value breaking n_jobs=-1)."""
    from gaussmle.estimator import GaussianNB

    cores = gaussmle._core.available_cores()
    for value in ("1", "abc"):
        monkeypatch.setenv("GAUSSMLE_NUM_THREADS", value)
        assert GaussianNB(n_jobs=-1)._n_threads() == cores
        assert GaussianNB(n_jobs=-2)._n_threads() == max(1, cores - 1)
        x, y = _data()
        GaussianNB(n_jobs=-1).fit(x[:1000], y[:1000])


def test_huge_negative_count_is_reported_as_given() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match=r"got -1180591620717411303424$"):
        gaussmle.class_stats(x[:10], y[:10], 3, n_threads=-(2**70))
