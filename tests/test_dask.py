"""gaussmle.dask on a real two-process LocalCluster.

The module is import-safe for spawned workers: the cluster is created only inside a fixture,
and everything shipped to the workers is defined in functions (pickled by value).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

import dask  # noqa: E402
import gaussmle  # noqa: E402
from gaussmle.dask import GaussianNB, class_stats_delayed  # noqa: E402
from gaussmle.stats import ClassStats  # noqa: E402

ATTRS = ("theta_", "var_", "class_count_", "class_prior_", "epsilon_")
UNEVEN = (1, 9_999, 37, 25_000, 3, 14_960, 10_000)  # 60_000 rows in 7 uneven chunks


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        silence_logs=40,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def assert_same_model(got: Any, want: Any, rtol: float = 1e-12) -> None:
    np.testing.assert_array_equal(got.classes_, want.classes_)
    for name in ATTRS:
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        assert a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0, err_msg=name)


def make_data(
    n: int = 60_000, d: int = 6, offset: float = 1e6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = offset + rng.normal(size=(n, d)) + 0.5 * y[:, None]
    return X, y, rng.random(n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_equals_in_memory_uneven_chunks_offset(client: Any, dtype: Any) -> None:
    X, y, _ = make_data()
    X = X.astype(dtype)
    Xd = da.from_array(X, chunks=(UNEVEN, 4))  # uneven rows, split columns
    yd = da.from_array(y, chunks=20_000)  # different chunks: rechunked to X's
    model = GaussianNB().fit(Xd, yd)
    want = gaussmle.GaussianNB().fit(Xd.compute(), yd.compute())
    assert_same_model(model, want)
    assert model.theta_.dtype == dtype


def test_fit_with_weights(client: Any) -> None:
    X, y, w = make_data(seed=1)
    Xd = da.from_array(X, chunks=(UNEVEN, -1))
    model = GaussianNB(var_smoothing=1e-6).fit(
        Xd, da.from_array(y, chunks=(UNEVEN,)), sample_weight=da.from_array(w, chunks=7_000)
    )
    want = gaussmle.GaussianNB(var_smoothing=1e-6).fit(X, y, sample_weight=w)
    assert_same_model(model, want)


def test_fit_dask_dataframe(client: Any) -> None:
    X, y, w = make_data(seed=2)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = np.array(["ant", "bee", "cat", "dog"])[y]
    frame["w"] = w
    ddf = dd.from_pandas(frame, npartitions=6)
    features = list(frame.columns[:-2])
    model = GaussianNB().fit(ddf[features], ddf["label"], sample_weight=ddf["w"])
    want = gaussmle.GaussianNB().fit(frame[features], frame["label"], sample_weight=frame["w"])
    assert_same_model(model, want)
    assert list(model.feature_names_in_) == features

    proba = model.predict_proba(ddf[features])
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), want.predict_proba(frame[features]), rtol=1e-10)
    assert model.score(ddf[features], ddf["label"]) == pytest.approx(
        want.score(frame[features], frame["label"])
    )
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(ddf[features[::-1]])


def test_declared_classes_include_an_unseen_one(client: Any) -> None:
    X, y, _ = make_data(n=20_000, seed=3)
    Xd, yd = da.from_array(X, chunks=3_000), da.from_array(y, chunks=3_000)
    model = GaussianNB().fit(Xd, yd, classes=[0, 1, 2, 3, 7])
    want = gaussmle.GaussianNB().partial_fit(X, y, classes=[0, 1, 2, 3, 7])
    assert model.class_count_[-1] == 0
    assert_same_model(model, want)


def test_fixed_merge_order_is_bit_identical(client: Any) -> None:
    X, y, _ = make_data(seed=4)
    Xd, yd = da.from_array(X, chunks=(UNEVEN, -1)), da.from_array(y, chunks=(UNEVEN,))
    on_cluster = [GaussianNB().fit(Xd, yd).get_class_stats() for _ in range(2)]
    with dask.config.set(scheduler="threads"):
        threaded = GaussianNB().fit(Xd, yd).get_class_stats()
    for other in (on_cluster[1], threaded):
        for name in ("weight", "mean", "mean_lo", "m2", "global_mean", "global_m2"):
            np.testing.assert_array_equal(getattr(on_cluster[0], name), getattr(other, name))


def test_lazy_predict_matches_local(client: Any) -> None:
    X, y, _ = make_data(seed=5)
    Xd = da.from_array(X, chunks=(UNEVEN, 3))
    model = GaussianNB().fit(Xd, da.from_array(y, chunks=(UNEVEN,)))
    local = model.to_local()
    assert type(local) is gaussmle.GaussianNB
    for method in ("predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba"):
        lazy = getattr(model, method)(Xd)
        assert isinstance(lazy, da.Array), method
        assert lazy.chunks[0] == Xd.chunks[0]
        want = getattr(local, method)(X)
        got = lazy.compute()
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=method)
        on_numpy = getattr(model, method)(X)
        assert type(on_numpy) is np.ndarray
        np.testing.assert_array_equal(on_numpy, want)


def test_to_local_is_independent(client: Any) -> None:
    X, y, _ = make_data(n=5_000, seed=6)
    model = GaussianNB().fit(da.from_array(X, chunks=1_000), da.from_array(y, chunks=1_000))
    local = model.to_local()
    local.partial_fit(X, y)
    assert model.class_count_.sum() == 5_000
    assert local.class_count_.sum() == 10_000


def test_bad_block_is_named(client: Any) -> None:
    X, y, _ = make_data(n=10_000, seed=7)
    X[4_321, 2] = np.inf
    with pytest.raises(ValueError, match=r"row block 4 \(rows from 4000\).*row 321, column 2"):
        GaussianNB().fit(da.from_array(X, chunks=1_000), da.from_array(y, chunks=1_000))
    with pytest.raises(ValueError, match=r"not in the classes"):
        GaussianNB().fit(da.from_array(X[:100], chunks=50), da.from_array(y[:100]), classes=[0])


def test_workers_reduce_and_only_statistics_travel(client: Any) -> None:
    """Generate X on the workers, fit, and inspect what each worker computed and sent.

    Evidence, all recorded on the workers themselves:

    * a worker plugin records the type of every task result: each per-block task and each
      merge produced a ``ClassStats``, and both workers ran per-block tasks;
    * every worker logs each ``get_data`` request it serves (``transfer_outgoing_log``:
      inter-worker transfers and results gathered for the client alike). The logged bytes
      (Dask's ``sizeof``; gaussmle registers the true size of a ClassStats). Requests from
      outside the cluster (the client's gather) fetched only the root merge, under 4 kB
      while X is 64 MB. (Between workers the scheduler may still move an input chunk, e.g.
      a label chunk generated on the other worker; that is printed, not asserted.)
    """
    n, d, chunk = 1_000_000, 8, 125_000  # 64 MB of float64 in 8 blocks
    rng = da.random.default_rng(11)
    X = 1e6 + rng.normal(size=(n, d), chunks=(chunk, d))
    y = rng.integers(0, 3, size=n, chunks=chunk)

    def install(dask_worker: Any) -> None:
        records: list[tuple[str, str]] = []

        class Recorder:
            name = "gaussmle-recorder"

            def setup(self, worker: Any) -> None:
                self.worker = worker

            def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
                if start == "executing" and finish == "memory" and key in self.worker.data:
                    value = self.worker.data[key]
                    records.append((str(key).rsplit("-", 1)[0], type(value).__name__))

        plugin = Recorder()
        plugin.setup(dask_worker)
        dask_worker.plugins[plugin.name] = plugin
        dask_worker.gaussmle_records = records
        dask_worker.transfer_outgoing_log.clear()

    client.run(install)
    root = class_stats_delayed(X, y, classes=[0, 1, 2], n_jobs=1)
    future = client.compute(root)
    stats = future.result()
    assert isinstance(stats, ClassStats)
    assert stats.global_count == n

    records = client.run(lambda dask_worker: list(dask_worker.gaussmle_records))
    logs = client.run(lambda dask_worker: list(dask_worker.transfer_outgoing_log))

    def uninstall(dask_worker: Any) -> None:
        dask_worker.plugins.pop("gaussmle-recorder", None)

    client.run(uninstall)

    block_workers = {w for w, recs in records.items() if any(k == "_block_stats" for k, _ in recs)}
    assert len(block_workers) == 2, records  # both workers reduced blocks
    produced = [
        t for recs in records.values() for k, t in recs if k in {"_block_stats", "_merge_in_order"}
    ]
    assert len(produced) == 8 + 1  # 8 blocks, one merge node (split_every=8)
    assert set(produced) == {"ClassStats"}

    sent = [entry for log in logs.values() for entry in log]
    workers = set(logs)
    to_client = [e for e in sent if e["who"] not in workers]  # gathers (who: client/None)
    between = [e for e in sent if e["who"] in workers]
    client_bytes = sum(e["total"] for e in to_client)
    client_keys = {str(k).rsplit("-", 1)[0] for e in to_client for k in e["keys"]}
    print(
        f"\nX: {X.nbytes / 1e6:.0f} MB; sent to the client: {client_bytes} B "
        f"({client_keys}); between workers: {sum(e['total'] for e in between)} B"
    )
    # The client received exactly one thing: the root merge, a ~1 kB ClassStats.
    assert client_keys == {"_merge_in_order"}
    assert client_bytes < 4096
    assert client_bytes * 10_000 < X.nbytes


def thread_counts_seen(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The n_threads of every block's class_stats call (a spy on gaussmle.dask.class_stats)."""
    import gaussmle.dask as gdask

    seen: list[int | None] = []
    original = gdask.class_stats

    def spy(*args: Any, n_threads: int | None = None, **kwargs: Any) -> Any:
        seen.append(n_threads)
        return original(*args, n_threads=n_threads, **kwargs)

    monkeypatch.setattr(gdask, "class_stats", spy)
    return seen


def test_n_jobs_minus_one_is_all_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # As for the estimator: -1 is every core, whatever GAUSSMLE_NUM_THREADS says.
    monkeypatch.setenv("GAUSSMLE_NUM_THREADS", "1")
    seen = thread_counts_seen(monkeypatch)
    X = da.from_array(np.arange(8.0).reshape(4, 2), chunks=2)
    y = da.from_array(np.array([0, 1, 0, 1]), chunks=2)
    with dask.config.set(scheduler="synchronous"):
        GaussianNB(n_jobs=-1).fit(X, y)
    assert seen == [gaussmle._core.available_cores()] * 2


def test_n_jobs_minus_one_is_resolved_on_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the client resolved -1 with its own core count and baked it into every task.
    import gaussmle._threads as threads

    class Cores:
        count = 64

        @staticmethod
        def available_cores() -> int:
            return Cores.count

    monkeypatch.setattr(threads, "_core", Cores)
    seen = thread_counts_seen(monkeypatch)
    X = da.from_array(np.arange(8.0).reshape(4, 2), chunks=2)
    y = da.from_array(np.array([0, 1, 0, 1]), chunks=2)
    root = class_stats_delayed(X, y, [0, 1], n_jobs=-1)  # built on a "64-core client"
    graph = dict(root.__dask_graph__())
    block_args = [task.args for key, task in graph.items() if "_block_stats" in str(key)]
    assert len(block_args) == 2
    assert all(args[-1] == -1 for args in block_args)  # n_jobs itself, not 64
    Cores.count = 3  # the "worker" has 3 cores
    with dask.config.set(scheduler="synchronous"):
        (stats,) = dask.compute(root)
    assert seen == [3, 3]
    assert stats.weight.tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="n_jobs must not be 0"):
        class_stats_delayed(X, y, [0, 1], n_jobs=0)  # still checked on the client


def test_scalar_sample_weight_is_the_weight_of_every_row() -> None:
    # As fit and fit_stream; before: TypeError.
    from reference import fraction_class_stats

    Xn = np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 4.0], [8.0, 1.0], [2.0, 2.0], [6.0, 3.0]])
    yn = np.array([0, 1, 0, 1, 0, 1])
    X, y = da.from_array(Xn, chunks=(4, 2)), da.from_array(yn, chunks=4)
    with dask.config.set(scheduler="synchronous"):
        model = GaussianNB().fit(X, y, 2.5)
    ref = fraction_class_stats(Xn, yn, 2, np.full(6, 2.5))
    assert model.class_count_.tolist() == [7.5, 7.5]
    np.testing.assert_array_equal(model.theta_, ref.mean)
    # Two chunks merged: m2 within a rounding of the exact value.
    np.testing.assert_allclose(model.get_class_stats().m2, ref.m2, rtol=4e-16, atol=0)
    assert_same_model(model, gaussmle.GaussianNB().fit(Xn, yn, 2.5), rtol=1e-15)
    with pytest.raises(ValueError, match=r"sample_weight must be finite and >= 0; got -1.0"):
        GaussianNB().fit(X, y, -1.0)
    with pytest.raises(TypeError, match="sample_weight must be a number"):
        GaussianNB().fit(X, y, "heavy")


def test_mixed_column_names_are_a_type_error_as_in_fit() -> None:
    frame = pd.DataFrame(np.arange(8.0).reshape(4, 2), columns=["a", 1])
    labels = pd.Series([0, 1, 0, 1])
    with pytest.raises(TypeError, match="Feature names are only supported if all input"):
        gaussmle.GaussianNB().fit(frame, labels)
    computed: list[int] = []
    with dask.config.set(scheduler=lambda *a, **k: computed.append(1)):
        with pytest.raises(TypeError, match="Feature names are only supported if all input"):
            GaussianNB().fit(dd.from_pandas(frame, npartitions=2), dd.from_pandas(labels, 2))
    assert computed == []  # rejected before anything ran
    # All non-string names: no feature_names_in_, as in fit.
    ints = pd.DataFrame(np.arange(8.0).reshape(4, 2), columns=[0, 1])
    with dask.config.set(scheduler="synchronous"):
        model = GaussianNB().fit(
            dd.from_pandas(ints, npartitions=2), dd.from_pandas(labels, 2), classes=[0, 1]
        )
    assert not hasattr(model, "feature_names_in_")


# ---------------------------------------------------------------------------- labels and chunks


@pytest.fixture
def small(client: Any) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """40 rows in 4 chunks, labels 0..2 (on the cluster)."""
    rng = np.random.default_rng(0)
    Xn = rng.normal(size=(40, 3))
    yn = np.array([0, 1, 2, 1] * 10)
    return da.from_array(Xn, chunks=10), da.from_array(yn, chunks=10), Xn, yn


def exact_accuracy(model: Any, Xn: Any, yn: np.ndarray) -> float:
    hits = int(np.sum(model.to_local().predict(Xn) == yn))
    return float(Fraction(hits, len(yn)))


def test_score_flattens_column_labels(small: Any) -> None:
    X, y, Xn, yn = small
    model = GaussianNB().fit(X, y[:, None])
    expected = exact_accuracy(model, Xn, yn)
    assert expected == 0.7  # 28 of 40: not the broadcast (n, n) comparison
    assert model.score(X, y[:, None]) == expected
    assert model.score(X, y) == expected


def test_row_shaped_labels_are_rejected(small: Any) -> None:
    X, y, _, _ = small
    model = GaussianNB().fit(X, y)
    message = r"y should be a 1d array, got an array of shape \(1, 40\) instead"
    with pytest.raises(ValueError, match=message):
        model.score(X, y[None, :])
    with pytest.raises(ValueError, match=message):
        GaussianNB().fit(X, y[None, :])


def test_score_and_fit_with_unknown_chunk_sizes(small: Any) -> None:
    X, y, Xn, yn = small
    model = GaussianNB().fit(X, y)
    mask = X[:, 0] > 0
    keep = Xn[:, 0] > 0
    masked_X = X[mask]
    assert any(np.isnan(c) for c in masked_X.chunks[0])
    assert model.score(masked_X, y[mask]) == exact_accuracy(model, Xn[keep], yn[keep])
    assert model.score(masked_X, y[mask][:, None]) == exact_accuracy(model, Xn[keep], yn[keep])
    assert any(np.isnan(c) for c in masked_X.chunks[0])  # the caller's array is not modified
    counts = [float(np.sum(yn[keep] == c)) for c in range(3)]
    np.testing.assert_array_equal(GaussianNB().fit(masked_X, y[mask]).class_count_, counts)
    np.testing.assert_array_equal(GaussianNB().fit(masked_X, y[mask][:, None]).class_count_, counts)


def test_one_column_label_frame_is_accepted(small: Any) -> None:
    _, _, Xn, yn = small
    X = dd.from_pandas(pd.DataFrame(Xn, columns=["a", "b", "c"]), npartitions=2)
    y = dd.from_pandas(pd.DataFrame({"label": yn}), npartitions=2)
    model = GaussianNB().fit(X, y)
    np.testing.assert_array_equal(model.class_count_, [10.0, 20.0, 10.0])
    named = pd.DataFrame(Xn, columns=["a", "b", "c"])  # fitted with names: predict with them
    assert model.score(X, y) == exact_accuracy(model, named, yn)
    two = dd.from_pandas(pd.DataFrame({"p": yn, "q": yn}), npartitions=2)
    with pytest.raises(ValueError, match="one-column DataFrame; got a DataFrame with 2 columns"):
        GaussianNB().fit(X, two)


def test_series_as_x_is_rejected(small: Any) -> None:
    _, _, Xn, yn = small
    X = dd.from_pandas(pd.Series(Xn[:, 0]), npartitions=2)
    y = dd.from_pandas(pd.Series(yn), npartitions=2)
    with pytest.raises(ValueError, match="X must be 2-D: a dask DataFrame, not a Series"):
        GaussianNB().fit(X, y)


def test_predict_on_missing_nullable_values_is_a_clear_value_error(small: Any) -> None:
    _, _, Xn, yn = small
    frame = pd.DataFrame(Xn, columns=["a", "b", "c"]).astype("Float64")
    y = dd.from_pandas(pd.Series(yn), npartitions=2)
    model = GaussianNB().fit(dd.from_pandas(frame, npartitions=2), y)
    np.testing.assert_array_equal(model.class_count_, [10.0, 20.0, 10.0])
    frame.iloc[23, 1] = pd.NA  # row 3 of the second partition (20 rows each)
    with pytest.raises(ValueError, match=r"row block 1: Input X contains NaN.*row 3, column 1"):
        model.predict(dd.from_pandas(frame, npartitions=2)).compute()


def test_parquet_frame_column_selections_fit_and_score(client: Any, tmp_path: Any) -> None:
    # Docs walkthrough: with dd.read_parquet, dask's optimiser fused the partitions of
    # frame[features] and frame["label"] differently (4 blocks against 2), so fit failed with
    # an IndexError and score with a ValueError. Blocks are now taken from unoptimised graphs
    # and score pairs partitions as fit does.
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(7)
    names = ["f0", "f1", "f2"]
    parts = []
    for i in range(4):
        Xp = rng.normal(size=(500, 3)) + i
        yp = rng.choice(["a", "b", "c"], 500)
        frame = pd.DataFrame(Xp, columns=names)
        frame["label"] = yp
        frame["w"] = rng.random(500)
        frame.to_parquet(tmp_path / f"part{i}.parquet")
        parts.append(frame)
    full = pd.concat(parts, ignore_index=True)
    frame = dd.read_parquet(str(tmp_path))
    model = GaussianNB().fit(frame[names], frame["label"], classes=["a", "b", "c"])
    local = gaussmle.GaussianNB().fit(full[names], full["label"])
    assert_same_model(model, local)
    predicted = local.predict(full[names])
    hits = int(np.sum(predicted == full["label"].to_numpy()))
    assert model.score(frame[names], frame["label"]) == float(Fraction(hits, len(full)))
    weighted = model.score(frame[names], frame["label"], frame["w"])
    w = full["w"].to_numpy()
    expected = math.fsum(w[predicted == full["label"].to_numpy()]) / math.fsum(w)
    assert weighted == pytest.approx(expected, rel=1e-15)
