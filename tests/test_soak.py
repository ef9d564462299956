"""Soak and leak tests: many small calls with flat memory, and concurrent readers/writers.

Marked ``slow`` (``make test`` runs them; ``-m 'not slow'`` skips). Figures from one run are
in docs/hardening.md. ``GAUSSMLE_SOAK_CALLS`` scales the number of mixed calls (default 100k).
"""

from __future__ import annotations

import gc
import os
import pickle
import threading

import gaussmle
import numpy as np
import psutil
import pytest
from gaussmle import ClassStats, class_stats

pytestmark = pytest.mark.slow

CALLS = int(os.environ.get("GAUSSMLE_SOAK_CALLS", "100000"))
RSS_SLACK_MB = 8.0


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def mixed_calls(rng: np.random.Generator, count: int) -> None:
    """``count`` small core calls of every kind, including failing ones."""
    d, c = 3, 4
    base = class_stats(rng.normal(size=(50, d)), rng.integers(0, c, 50), c)
    scorer = gaussmle.make_scorer(base.mean, base.var + 1e-3, np.log(np.full(c, 1 / c)))
    for k in range(count):
        kind = k % 8
        n = int(rng.integers(1, 1000)) if kind == 5 else int(rng.integers(1, 40))
        x = rng.normal(size=(n, d))
        if kind == 0:
            class_stats(x, rng.integers(0, c, n), c)
        elif kind == 1:
            class_stats(x.astype(np.float32).T.copy().T, rng.integers(0, c, n).astype(np.int32), c)
        elif kind == 2:
            base = base + class_stats(x, rng.integers(0, c, n), c)
        elif kind == 3:
            restored = pickle.loads(pickle.dumps(base))
            assert isinstance(restored, ClassStats)
        elif kind == 4:
            p = scorer.proba(x)
            assert p.shape == (n, c)
        elif kind == 5:
            scorer.predict(x)
        elif kind == 6:
            scorer.joint_log_likelihood(x[::-1])
        else:
            x[-1, 0] = np.nan  # error path: must not leak either
            with pytest.raises(ValueError):
                scorer.predict(x)
            with pytest.raises(ValueError):
                class_stats(x, np.zeros(n, dtype=np.int64), 1)


def test_core_calls_do_not_leak() -> None:
    rng = np.random.default_rng(0)
    mixed_calls(rng, 5000)  # warm-up: pools, caches, allocator arenas
    before = rss_mb()
    mixed_calls(rng, CALLS)
    after = rss_mb()
    print(f"core soak: {CALLS} calls, RSS {before:.1f} MB -> {after:.1f} MB")
    assert after - before < RSS_SLACK_MB, f"RSS grew {after - before:.1f} MB over {CALLS} calls"


def test_estimator_calls_do_not_leak() -> None:
    gnb = pytest.importorskip("gaussmle.estimator").GaussianNB
    rng = np.random.default_rng(1)

    def run(count: int) -> None:
        model = None
        for k in range(count):
            x = rng.normal(size=(int(rng.integers(3, 60)), 3))
            y = rng.permutation(np.arange(len(x)) % 3)  # every class in every batch
            if model is None or k % 4 == 0:
                model = gnb().fit(x, y)
            elif k % 4 == 1:
                model.partial_fit(x, y)
            elif k % 4 == 2:
                model.predict_proba(x)
            else:
                pickle.loads(pickle.dumps(model)).predict(x)

    run(500)
    before = rss_mb()
    run(max(CALLS // 20, 1))
    after = rss_mb()
    print(f"estimator soak: {max(CALLS // 20, 1)} calls, RSS {before:.1f} MB -> {after:.1f} MB")
    assert after - before < RSS_SLACK_MB


def test_concurrent_predictions_while_streaming_merges() -> None:
    """8 threads score with immutable scorers built from a snapshot while one thread streams
    merges; nothing crashes, every probability row sums to 1, the final statistics equal the
    serial run bit for bit."""
    rng = np.random.default_rng(2)
    d, c, batches = 4, 3, 2000
    data = [(rng.normal(size=(64, d)) + 1e6, rng.integers(0, c, 64)) for _ in range(batches)]
    x_eval = rng.normal(size=(2000, d)) + 1e6

    serial = ClassStats.empty(c, d)
    for x, y in data:
        serial = serial + class_stats(x, y, c)

    lock = threading.Lock()
    state = {"stats": class_stats(data[0][0], data[0][1], c)}
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            acc = state["stats"]
            for x, y in data[1:]:
                acc = acc + class_stats(x, y, c, n_threads=2)
                with lock:
                    state["stats"] = acc
        except BaseException as e:
            failures.append(e)
        finally:
            done.set()

    def reader() -> None:
        try:
            checked = 0
            while not done.is_set() or checked < 3:
                with lock:
                    snap = state["stats"]
                var = np.where(snap.weight[:, None] > 0, snap.var, 1.0) + 1e-6
                prior = np.log(np.maximum(snap.weight, 1e-300) / snap.weight.sum())
                proba = gaussmle.predict_proba(x_eval, snap.mean, var, prior, n_threads=2)
                assert np.all(np.isfinite(proba))
                np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-12)
                checked += 1
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures[:3]
    final = state["stats"]
    for name in ("weight", "mean", "m2", "global_mean", "global_m2"):
        np.testing.assert_array_equal(getattr(final, name), getattr(serial, name), err_msg=name)


def test_estimator_concurrent_predict_and_partial_fit_matches_serial() -> None:
    gnb = pytest.importorskip("gaussmle.estimator").GaussianNB
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(50, 3)), rng.integers(0, 3, 50)) for _ in range(1000)]
    x_eval = rng.normal(size=(500, 3))

    serial = gnb()
    for x, y in batches:
        serial.partial_fit(x, y, classes=[0, 1, 2])

    model = gnb().partial_fit(*batches[0], classes=[0, 1, 2])
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for x, y in batches[1:]:
                model.partial_fit(x, y)
        except BaseException as e:
            failures.append(e)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                proba = model.predict_proba(x_eval)
                np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-12)
                assert set(model.predict(x_eval).tolist()) <= {0, 1, 2}
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures[:3]
    for name in ("class_count_", "theta_", "var_", "epsilon_"):
        np.testing.assert_array_equal(getattr(model, name), getattr(serial, name), err_msg=name)
