"""The Rust kernels release the GIL, and a shared scorer is safe to use from many threads.

How GIL release is proven without timing assertions
---------------------------------------------------
The switch interval is raised to 1000 s for the duration of a test, so CPython never
*forces* a thread to hand over the GIL: a thread that holds it keeps it until it blocks
voluntarily (a lock wait, a sleep, thread exit) or the running C code releases it.

A worker thread does ``state.started = True; call(); state.done = True``. The main thread
polls with ``time.sleep`` (which releases the GIL) until it observes ``started``. With no
forced switches, the only way the main thread can run while ``started and not done`` is that
``call()`` itself released the GIL; if the call held the GIL, the main thread could only run
again after the worker finished (``done`` already True). So the observation "started and
not done" is a proof, not a timing-dependent likelihood. (The Python wrappers do no
GIL-releasing numpy work for these inputs: float32 native X, int64 labels, n_classes given,
tiny parameter arrays, so the release observed is the Rust one.)

While the call is running, the main thread then runs a pure-Python counter; it pauses with
``time.sleep(0)`` every few hundred increments (releasing the GIL so the worker can take it
back when the call returns). With the GIL held by the call, that counter would be exactly 0.
The only timing assumption is that the call lasts longer than a few hundred Python loop
iterations (~tens of microseconds), which the array sizes below exceed ~1000-fold.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gaussmle
import numpy as np
import pytest

N_ROWS, N_FEATURES, N_CLASSES = 1_000_000, 16, 4


@pytest.fixture(scope="module")
def big_problem() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_ROWS, N_FEATURES), dtype=np.float32) * 3
    y = rng.integers(0, N_CLASSES, size=N_ROWS)
    mean = rng.normal(size=(N_CLASSES, N_FEATURES))
    var = rng.uniform(0.5, 2.0, size=(N_CLASSES, N_FEATURES))
    log_prior = np.log(np.full(N_CLASSES, 1 / N_CLASSES))
    return {"x": x, "y": y, "mean": mean, "var": var, "log_prior": log_prior}


@pytest.fixture
def no_forced_gil_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def calls(p: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    x, mean, var, lp = p["x"], p["mean"], p["var"], p["log_prior"]
    return {
        "class_stats": lambda: gaussmle.class_stats(x, p["y"], N_CLASSES, n_threads=1),
        "joint_log_likelihood": lambda: gaussmle.joint_log_likelihood(
            x, mean, var, lp, n_threads=1
        ),
        "predict": lambda: gaussmle.predict(x, mean, var, lp, n_threads=1),
        "predict_proba": lambda: gaussmle.predict_proba(x, mean, var, lp, n_threads=1),
        "predict_log_proba": lambda: gaussmle.predict_log_proba(x, mean, var, lp, n_threads=1),
    }


class CallState:
    def __init__(self) -> None:
        self.started = False
        self.done = False
        self.error: BaseException | None = None


def observe_during_call(call: Callable[[], Any]) -> tuple[bool, int]:
    """Run ``call`` in a worker; return (main thread ran while it was in progress,
    pure-Python increments the main thread made while it was in progress)."""
    state = CallState()

    def worker() -> None:
        try:
            state.started = True
            call()
        except BaseException as exc:  # reported by the test, not swallowed
            state.error = exc
        finally:
            state.done = True

    thread = threading.Thread(target=worker)
    thread.start()
    while not state.started:
        time.sleep(0.0005)  # releases the GIL: lets the worker run
    in_progress = not state.done
    count = 0
    while in_progress and not state.done:
        count += 1
        if count % 256 == 0:
            time.sleep(0)  # releases the GIL, so the worker can retake it once the call returns
    thread.join()
    if state.error is not None:
        raise state.error
    return in_progress, count


@pytest.mark.usefixtures("no_forced_gil_switches")
@pytest.mark.parametrize(
    "name",
    ["class_stats", "joint_log_likelihood", "predict", "predict_proba", "predict_log_proba"],
)
def test_call_releases_the_gil(big_problem: dict[str, Any], name: str) -> None:
    call = calls(big_problem)[name]
    in_progress, count = observe_during_call(call)
    assert in_progress, f"{name}: the main thread could not run while the call was in progress"
    # With the GIL held during the call this count is exactly 0.
    assert count >= 1000, f"{name}: only {count} Python increments ran during the call"


def test_control_a_gil_holding_call_is_detected(big_problem: dict[str, Any]) -> None:
    """Control for the method above: a pure-Python busy loop (which holds the GIL, as a
    non-releasing extension would) is never observed in progress."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:

        def holds_gil() -> None:
            total = 0
            for i in range(300_000):
                total += i

        in_progress, count = observe_during_call(holds_gil)
    finally:
        sys.setswitchinterval(previous)
    assert not in_progress and count == 0


def test_concurrent_threads_sharing_one_scorer_get_the_serial_results(
    big_problem: dict[str, Any],
) -> None:
    # GaussianScorer is documented immutable and thread-safe; hammer it from 4 threads with
    # different inputs and compare with the serial answers.
    p = big_problem
    scorer = gaussmle.make_scorer(p["mean"], p["var"], p["log_prior"])
    chunks = [p["x"][i * 50_000 : (i + 1) * 50_000] for i in range(8)]
    expected = [
        (scorer.joint_log_likelihood(c), scorer.predict(c), scorer.proba(c)) for c in chunks
    ]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(3):
                chunk = chunks[index]
                results[index] = (
                    scorer.joint_log_likelihood(chunk, None, 1),
                    scorer.predict(chunk, None, 1),
                    scorer.proba(chunk, None, 1),
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (jll, labels, proba) in enumerate(expected):
        np.testing.assert_array_equal(results[i][0], jll)
        np.testing.assert_array_equal(results[i][1], labels)
        np.testing.assert_array_equal(results[i][2], proba)


def test_concurrent_class_stats_match_serial(big_problem: dict[str, Any]) -> None:
    p = big_problem
    parts = [(p["x"][i::4], p["y"][i::4]) for i in range(4)]
    expected = [gaussmle.class_stats(x, y, N_CLASSES) for x, y in parts]
    results: dict[int, Any] = {}

    def work(index: int) -> None:
        x, y = parts[index]
        results[index] = gaussmle.class_stats(x, y, N_CLASSES, n_threads=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i].mean, expected[i].mean)
        np.testing.assert_array_equal(results[i].m2, expected[i].m2)
