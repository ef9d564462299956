"""Thread safety of GaussianNB: many threads predict while one thread streams partial_fit."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
from gaussmle import GaussianNB
from test_estimator import fingerprint, make_data

N_READERS = 8
N_BATCHES = 40


def test_predicting_threads_see_whole_models_while_one_thread_partial_fits() -> None:
    X, y = make_data(n_rows=4000, n_features=8, n_classes=4, seed=3)
    classes = np.unique(y)
    batches = np.array_split(np.arange(len(y)), N_BATCHES)
    probe = X[:64]

    # The serial run: the probabilities of every model version the writer will publish.
    serial = GaussianNB()
    versions: list[npt.NDArray[np.floating[Any]]] = []
    for rows in batches:
        serial.partial_fit(X[rows], y[rows], classes=classes)
        versions.append(serial.predict_proba(probe))
    known = {v.tobytes(): i for i, v in enumerate(versions)}

    shared = GaussianNB().partial_fit(X[batches[0]], y[batches[0]], classes=classes)
    done = threading.Event()
    start = threading.Barrier(N_READERS + 1)
    errors: list[BaseException] = []
    seen_versions: list[set[int]] = [set() for _ in range(N_READERS)]
    row_sum_errors = [0.0] * N_READERS

    def reader(slot: int) -> None:
        start.wait()
        try:
            # At least one read per reader, even when the writer finishes before this thread is
            # first scheduled (8 readers and a writer share 2 cores; a faster fit made that
            # happen in a CI run); reads go on until the writer is done.
            while True:
                finished = done.is_set()
                proba = shared.predict_proba(probe)
                row_sum_errors[slot] = max(
                    row_sum_errors[slot], float(np.abs(proba.sum(axis=1) - 1.0).max())
                )
                # A torn read (half old, half new model) would match no published version.
                seen_versions[slot].add(known[proba.tobytes()])
                labels = shared.predict(probe)
                assert set(labels.tolist()) <= set(classes.tolist())
                if finished:
                    break
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        start.wait()
        try:
            for rows in batches[1:]:
                shared.partial_fit(X[rows], y[rows])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(N_READERS)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert max(row_sum_errors) < 1e-12
    assert all(seen for seen in seen_versions)
    assert fingerprint(shared, probe) == fingerprint(serial, probe)


def test_concurrent_partial_fits_lose_no_update() -> None:
    X, y = make_data(n_rows=1600, n_features=5, n_classes=3, seed=4)
    classes = np.unique(y)
    model = GaussianNB().partial_fit(X[:100], y[:100], classes=classes)
    chunks = np.array_split(np.arange(100, len(y)), 15)

    def work(rows: npt.NDArray[np.int64]) -> None:
        model.partial_fit(X[rows], y[rows])

    threads = [threading.Thread(target=work, args=(rows,)) for rows in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    whole = GaussianNB().fit(X, y)
    np.testing.assert_allclose(model.class_count_, whole.class_count_)
    np.testing.assert_allclose(model.theta_, whole.theta_, rtol=1e-12)
    np.testing.assert_allclose(model.var_, whole.var_, rtol=1e-10)
