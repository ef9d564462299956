"""Out-of-core fitting: streamed == in-memory, bounded memory on a large memmap, bad batches."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gaussmle
import numpy as np
import pytest
from gaussmle.streaming import BatchError, fit_stream, iter_npy_batches
from reference import fraction_class_stats

psutil = pytest.importorskip("psutil")

ATTRS = ("theta_", "var_", "class_count_", "class_prior_", "epsilon_")


def assert_same_model(got: Any, want: Any, rtol: float = 1e-12) -> None:
    np.testing.assert_array_equal(got.classes_, want.classes_)
    for name in ATTRS:
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        assert a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0, err_msg=name)


def make_data(
    n: int = 30_000, d: int = 7, k: int = 4, offset: float = 1e6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = offset + rng.normal(size=(n, d)) + y[:, None]
    w = rng.random(n)
    return X, y, w


def batches_of(*arrays: np.ndarray, sizes: list[int]) -> Iterator[tuple[np.ndarray, ...]]:
    start = 0
    for size in sizes:
        yield tuple(a[start : start + size] for a in arrays)
        start += size


UNEVEN = [1, 4999, 37, 12_000, 3, 7_960, 5_000]  # sums to 30_000


def test_streamed_equals_in_memory_fit_at_large_offset() -> None:
    X, y, _ = make_data()
    model = fit_stream(batches_of(X, y, sizes=UNEVEN), classes=[0, 1, 2, 3])
    assert_same_model(model, gaussmle.GaussianNB().fit(X, y))


def test_streamed_weights_and_string_labels() -> None:
    X, y, w = make_data(seed=1)
    labels = np.array(["ant", "bee", "cat", "dog"])[y]
    model = fit_stream(batches_of(X, labels, w, sizes=UNEVEN), classes=["dog", "cat", "bee", "ant"])
    assert_same_model(model, gaussmle.GaussianNB().fit(X, labels, sample_weight=w))


def test_stream_continues_a_fitted_estimator_in_place() -> None:
    X, y, _ = make_data(seed=2)
    first = gaussmle.GaussianNB(var_smoothing=1e-6).fit(X[:10_000], y[:10_000])
    rest = batches_of(X[10_000:], y[10_000:], sizes=[5_000] * 4)
    result = fit_stream(rest, estimator=first)
    assert result is first
    assert_same_model(first, gaussmle.GaussianNB(var_smoothing=1e-6).fit(X, y))


def test_npy_paths_float32(tmp_path: Path) -> None:
    X, y, w = make_data(n=50_001, seed=3)
    X32 = X.astype(np.float32)
    np.save(tmp_path / "X.npy", X32)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "w.npy", w)
    model = fit_stream(
        tmp_path / "X.npy", tmp_path / "y.npy", sample_weight=tmp_path / "w.npy", batch_rows=4_096
    )
    want = gaussmle.GaussianNB().fit(X32, y, sample_weight=w)
    assert model.theta_.dtype == np.float32
    assert_same_model(model, want)


def test_iter_npy_batches_covers_every_row_once(tmp_path: Path) -> None:
    X, y, _ = make_data(n=1_000, seed=4)
    np.save(tmp_path / "X.npy", X)
    seen = [xb.shape[0] for xb, _, _ in iter_npy_batches(tmp_path / "X.npy", y, batch_rows=300)]
    assert seen == [300, 300, 300, 100]


def test_bad_batch_names_index_and_keeps_earlier_batches() -> None:
    X, y, _ = make_data(n=10_000, seed=5)
    bad = X.copy()
    bad[3_000 + 17, 2] = np.nan  # in batch 3 (1000 rows per batch)
    stream = batches_of(bad, y, sizes=[1_000] * 10)
    with pytest.raises(BatchError, match=r"batch 3 .*NaN.*row 17, column 2") as info:
        fit_stream(stream, classes=[0, 1, 2, 3])
    err = info.value
    assert isinstance(err, ValueError)
    assert err.batch_index == 3
    assert err.rows_fitted == 3_000
    assert err.estimator is not None
    assert_same_model(err.estimator, gaussmle.GaussianNB().fit(X[:3_000], y[:3_000]))

    # The generator is positioned after the bad batch: skip it and continue.
    model = fit_stream(stream, estimator=err.estimator)
    keep = np.ones(10_000, dtype=bool)
    keep[3_000:4_000] = False
    assert_same_model(model, gaussmle.GaussianNB().fit(X[keep], y[keep]))


def test_unseen_label_is_a_batch_error_and_fitted_model_is_untouched() -> None:
    X, y, _ = make_data(n=4_000, seed=6)
    model = gaussmle.GaussianNB().fit(X[:1_000], y[:1_000])
    before = model.var_.copy()
    labels = y.copy()
    labels[1_500] = 9
    with pytest.raises(BatchError, match=r"batch 0 .*\[9\]") as info:
        fit_stream(batches_of(X[1_000:], labels[1_000:], sizes=[1_000] * 3), estimator=model)
    assert info.value.batch_index == 0
    assert info.value.estimator is model
    np.testing.assert_array_equal(model.var_, before)


def test_interrupt_leaves_a_fitted_estimator_unchanged() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(300, 3)), rng.integers(0, 2, 300)
    base = gaussmle.GaussianNB().fit(x[:100], y[:100])
    before = (base.theta_.copy(), base.var_.copy(), base.class_count_.copy(), base.epsilon_)

    def interrupted() -> Iterator[tuple[Any, Any]]:
        yield x[100:200], y[100:200]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_stream(interrupted(), estimator=base)
    after = (base.theta_, base.var_, base.class_count_, base.epsilon_)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_bad_parameters_fail_before_the_first_batch_is_read() -> None:
    read: list[int] = []

    def batches() -> Iterator[tuple[Any, Any]]:
        read.append(1)
        yield np.zeros((2, 1)), np.array([0, 1])

    with pytest.raises(ValueError, match="priors"):
        fit_stream(batches(), classes=[0, 1], estimator=gaussmle.GaussianNB(priors=[1.0]))
    assert read == []


def test_first_batch_bad_gives_an_unfitted_clone_with_the_parameters() -> None:
    # Before: err.estimator was None and the documented continuation used GaussianNB()
    # defaults (epsilon_ 1e-9 * var instead of 0.25 * var).
    X, y = small_integer_rows(14, 2)
    template = gaussmle.GaussianNB(var_smoothing=0.25, priors=[0.5, 0.5])

    def batches() -> Iterator[tuple[Any, ...]]:
        yield X[:, :0], y  # zero features: rejected, nothing was fitted before
        yield X, y

    stream = batches()
    message = r"batch 0 was rejected \(no earlier batch was fitted; err.estimator is an unfitted"
    with pytest.raises(BatchError, match=message) as info:
        fit_stream(stream, classes=[0, 1], estimator=template)
    err = info.value
    assert (err.batch_index, err.rows_fitted, err.pending_stats) == (0, 0, None)
    assert err.estimator is not template
    assert not hasattr(err.estimator, "classes_")
    assert err.estimator.get_params() == template.get_params()
    model = fit_stream(
        stream, classes=[0, 1], estimator=err.estimator, initial_stats=err.pending_stats
    )
    assert_exact_stats(model, X, y, 2)
    # Column 1 holds 1..7 equally often: variance 4 (column 0, 0..6, too).
    assert model.epsilon_ == 0.25 * 4.0
    assert model.class_prior_.tolist() == [0.5, 0.5]


def test_progress_bar_counts_rows(capsys: pytest.CaptureFixture[str]) -> None:
    tqdm = pytest.importorskip("tqdm")
    X, y, _ = make_data(n=2_000, seed=8)
    updates: list[int] = []
    original = tqdm.std.tqdm.update

    def spy(self: Any, n: int = 1) -> Any:
        updates.append(n)
        return original(self, n)

    mp = pytest.MonkeyPatch()
    mp.setattr(tqdm.std.tqdm, "update", spy)
    try:
        fit_stream(batches_of(X, y, sizes=[500] * 4), classes=[0, 1, 2, 3], progress=True)
        assert updates == [500] * 4
        updates.clear()
        fit_stream(batches_of(X, y, sizes=[500] * 4), classes=[0, 1, 2, 3])
        assert updates == []  # silent by default
    finally:
        mp.undo()
    # stderr is not a terminal under pytest: tqdm itself stays silent
    assert "rows" not in capsys.readouterr().err


class PeakRSS:
    """Sample this process's resident set size in a thread (every 2 ms)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.002)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def increase(self) -> int:
        return self.peak - self.baseline


def write_npy_in_chunks(path: Path, n_rows: int, n_features: int, chunk_rows: int) -> np.ndarray:
    """Write a float32 .npy of shape (n_rows, n_features) chunk by chunk; return the labels."""
    rng = np.random.default_rng(42)
    labels = np.empty(n_rows, dtype=np.int32)
    header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, n_features)}
    with path.open("wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        for start in range(0, n_rows, chunk_rows):
            stop = min(n_rows, start + chunk_rows)
            yb = rng.integers(0, 5, stop - start).astype(np.int32)
            xb = (1000.0 + rng.standard_normal((stop - start, n_features), np.float32)) + yb[
                :, None
            ].astype(np.float32)
            fh.write(np.ascontiguousarray(xb, dtype="<f4").tobytes())
            labels[start:stop] = yb
    return labels


def test_large_memmap_fit_with_bounded_memory(tmp_path: Path) -> None:
    n_features = 32
    row_bytes = 4 * n_features
    target = 1_500_000_000  # ~1.5 GB
    free = shutil.disk_usage(tmp_path).free
    size = min(target, free // 4)  # leave plenty of disk for others
    assert size >= 200_000_000, f"only {free / 1e9:.1f} GB free in {tmp_path}: too little to test"
    n_rows = size // row_bytes
    X_path = tmp_path / "X.npy"
    labels = write_npy_in_chunks(X_path, n_rows, n_features, chunk_rows=200_000)
    file_bytes = X_path.stat().st_size
    assert file_bytes >= n_rows * row_bytes
    batch_rows = 65_536  # 8 MiB batches
    print(f"\nX.npy: {file_bytes / 1e9:.2f} GB, {n_rows} rows")

    with PeakRSS() as rss:
        model = fit_stream(X_path, labels, classes=np.arange(5), batch_rows=batch_rows)
    print(
        f"peak RSS increase while streaming: {rss.increase / 1e6:.1f} MB "
        f"({100 * rss.increase / file_bytes:.2f}% of the file)"
    )
    # One batch is 8 MiB; allow generous slack for allocator noise, never the file.
    assert rss.increase < max(64 * 2**20, file_bytes // 20)
    assert model.class_count_.sum() == n_rows

    # The same rows in one in-place call (Rust reads the memmap directly): same model.
    whole = np.load(X_path, mmap_mode="r")
    assert_same_model(model, gaussmle.GaussianNB().fit(whole, labels))


# ---------------------------------------------------------------------------- memmap pages


def assert_exact_stats(
    model: Any, X: np.ndarray, y: np.ndarray, n_classes: int, m2_rtol: float = 0.0
) -> None:
    """The model's raw statistics equal the exact (Fraction) statistics of X, y.

    ``m2_rtol``: m2 merged from several parts may be a rounding off.
    """
    ref = fraction_class_stats(X, y, n_classes)
    stats = model.get_class_stats()
    np.testing.assert_array_equal(stats.weight, ref.weight)
    np.testing.assert_array_equal(stats.mean, ref.mean)
    np.testing.assert_allclose(stats.m2, ref.m2, rtol=m2_rtol, atol=0)
    np.testing.assert_allclose(stats.global_m2, ref.global_m2, rtol=m2_rtol, atol=0)
    np.testing.assert_array_equal(model.theta_, ref.mean)


def small_integer_rows(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of small integers and alternating labels; every statistic is exact in float64.

    With ``n`` a multiple of 14 each class sees every residue mod 7 equally often, so all
    means are integers.
    """
    assert n % 14 == 0
    rows = np.arange(n)[:, None] % 7 + np.arange(d)[None, :]
    return rows.astype(np.float64), np.arange(n) % 2


def test_copy_on_write_memmap_edits_are_fitted_and_kept(tmp_path: Path) -> None:
    # 3 float64 columns = 24-byte rows: 1000-row batches (24 000 bytes) end inside pages.
    path = tmp_path / "X.npy"
    np.save(path, np.zeros((4_200, 3)))
    edited, y = small_integer_rows(4_200, 3)
    X = np.load(path, mmap_mode="c")
    X[:] = edited  # private, in-memory edits: the file stays all zeros
    model = fit_stream(X, y, batch_rows=1_000)
    np.testing.assert_array_equal(X, edited)  # the caller's edits survive
    assert_exact_stats(model, edited, y, 2)
    assert np.load(path).sum() == 0.0


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_shared_memmap_releases_exactly_the_whole_pages_inside_each_batch(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading the data back cannot tell (a shared page dropped too early is re-read from the
    # page cache), so the released ranges are recorded and checked against the file layout:
    # every page lying wholly inside one batch is released once, and no page holding a batch
    # boundary (or the .npy header) is. Before the fix the range was rounded outwards.
    import mmap

    import gaussmle.streaming as streaming

    path = tmp_path / "X.npy"
    X, y = small_integer_rows(5_040, 3)
    np.save(path, X)
    mapped = np.load(path, mmap_mode=mode)
    header = int(mapped.offset)  # the mapping starts at file offset 0 (allocation granularity)
    assert header < mmap.ALLOCATIONGRANULARITY
    released: list[tuple[int, int]] = []
    original = streaming._whole_pages_inside

    def spy(begin: int, end: int, page: int) -> tuple[int, int] | None:
        pages = original(begin, end, page)
        if pages is not None:
            released.append(pages)
        return pages

    monkeypatch.setattr(streaming, "_whole_pages_inside", spy)
    # 333 rows = 7992 bytes: every batch boundary falls inside a page.
    model = fit_stream(mapped, y, batch_rows=333)
    assert_exact_stats(model, X, y, 2)
    np.testing.assert_array_equal(mapped, X)

    page, row_bytes = mmap.PAGESIZE, X.itemsize * X.shape[1]
    batches = [
        (header + start * row_bytes, header + min(start + 333, len(X)) * row_bytes)
        for start in range(0, len(X), 333)
    ]
    n_pages = -(-batches[-1][1] // page)
    want = [
        p
        for p in range(n_pages)
        if any(begin <= p * page and (p + 1) * page <= end for begin, end in batches)
    ]
    got = sorted(
        p for offset, length in released for p in range(offset // page, (offset + length) // page)
    )
    assert all(offset % page == 0 and length % page == 0 for offset, length in released)
    assert got == want  # each once, none outside a batch
    assert 0 < len(want) < n_pages  # some pages released, the boundary pages kept


def test_whole_pages_inside_rounds_start_up_and_end_down() -> None:
    from gaussmle.streaming import _whole_pages_inside

    assert _whole_pages_inside(100, 3 * 4096 + 5, 4096) == (4096, 8192)
    assert _whole_pages_inside(4096, 8192, 4096) == (4096, 4096)
    assert _whole_pages_inside(0, 4095, 4096) is None  # no whole page: nothing released
    assert _whole_pages_inside(4000, 8000, 4096) is None


def test_n_jobs_minus_one_streams_with_all_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # The estimator's n_jobs=-1 means every core, not GAUSSMLE_NUM_THREADS; so must streaming.
    import gaussmle.streaming as streaming

    monkeypatch.setenv("GAUSSMLE_NUM_THREADS", "1")
    seen: list[int | None] = []
    original = streaming.class_stats

    def spy(*args: Any, n_threads: int | None = None, **kwargs: Any) -> Any:
        seen.append(n_threads)
        return original(*args, n_threads=n_threads, **kwargs)

    monkeypatch.setattr(streaming, "class_stats", spy)
    X, y = small_integer_rows(14, 2)
    fit_stream([(X, y)], classes=[0, 1], estimator=gaussmle.GaussianNB(n_jobs=-1))
    assert seen == [gaussmle._core.available_cores()]


# ---------------------------------------------------------------------------- rejected batches


def test_merge_overflow_is_a_batch_error_keeping_earlier_batches() -> None:
    # Each batch alone is fine; merging the second big one overflows the class's m2.
    ones = (np.ones((5, 1)), np.ones(5, dtype=int))
    big = (np.array([[0.7e154], [-0.7e154]]), np.zeros(2, dtype=int))
    stream = iter([ones, big, big, ones])
    with pytest.raises(BatchError, match=r"batch 2 was rejected .*overflows float64") as info:
        fit_stream(stream, classes=[0, 1])
    err = info.value
    assert (err.batch_index, err.rows_fitted) == (2, 7)
    assert err.estimator is not None
    # Class 0 holds the two big rows: mean 0, m2 = 2 * 0.7e154**2 (exact in Fractions).
    ref = fraction_class_stats(np.vstack([ones[0], big[0]]), np.r_[ones[1], big[1]], 2)
    stats = err.estimator.get_class_stats()
    np.testing.assert_array_equal(stats.weight, [2.0, 5.0])
    np.testing.assert_array_equal(stats.m2, ref.m2)
    np.testing.assert_array_equal(err.estimator.theta_, [[0.0], [1.0]])
    # The stream is positioned after the bad batch: the last batch continues the model.
    model = fit_stream(stream, estimator=err.estimator)
    np.testing.assert_array_equal(model.class_count_, [2.0, 10.0])


def test_zero_weight_batches_before_a_bad_one_are_not_lost() -> None:
    # Rows with weight 0 form no model, but count toward epsilon_ (var_smoothing scales the
    # largest variance of all X seen), so the error carries their statistics.
    X0 = np.array([[0.0, 1.0], [8.0, 1.0], [4.0, 3.0], [4.0, 3.0]])  # var 8 and 1
    X2 = np.array([[1.0, 0.0], [3.0, 2.0], [1.0, 2.0], [3.0, 0.0]])
    y = np.array([0, 1, 0, 1])

    def batches() -> Iterator[tuple[Any, ...]]:
        yield X0, y, np.zeros(4)
        yield X2, y + 5  # unknown labels
        yield X2, y

    # Non-default parameters: before, err.estimator was None and the continuation below
    # fell back to GaussianNB() (epsilon_ 1e-9 * 5.5 instead of 0.5 * 5.5).
    template = gaussmle.GaussianNB(var_smoothing=0.5)
    stream = batches()
    with pytest.raises(BatchError, match=r"sample weight 0.*pending_stats") as info:
        fit_stream(stream, classes=[0, 1], estimator=template)
    err = info.value
    assert (err.batch_index, err.rows_fitted) == (1, 4)
    assert err.pending_stats is not None
    assert err.estimator is not template and not hasattr(err.estimator, "classes_")
    assert err.estimator.var_smoothing == 0.5
    model = fit_stream(
        stream, classes=[0, 1], estimator=err.estimator, initial_stats=err.pending_stats
    )
    both = np.vstack([X0, X2])
    ref = fraction_class_stats(both, np.r_[y, y], 2, np.r_[np.zeros(4), np.ones(4)])
    # Global variance of column 0 over all 8 rows: mean 3, m2 = 9+25+1+1+4+0+4+0 = 44.
    assert ref.global_m2[0] == 44.0
    assert model.var_smoothing == 0.5
    assert model.epsilon_ == 0.5 * (44.0 / 8)
    np.testing.assert_array_equal(model.get_class_stats().global_m2, ref.global_m2)
    np.testing.assert_array_equal(model.theta_, ref.mean)
    np.testing.assert_array_equal(model.class_count_, [2.0, 2.0])


def big_model() -> tuple[Any, np.ndarray, np.ndarray]:
    """A model whose class 0 holds two rows of 0.7e154: m2 of class 0 is 0, so fine, but a
    batch of two rows of -0.7e154 in class 0 overflows its m2 when merged into it."""
    X = np.array([[0.7e154], [0.7e154], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1])
    return gaussmle.GaussianNB().fit(X, y), X, y


def test_merge_into_the_fitted_estimator_that_overflows_is_the_rejected_batch() -> None:
    # Before: every batch merged into the running total, but the total overflowed only when
    # merged into the model at the very end: a plain ValueError, the stream consumed, the
    # model unchanged, every batch lost.
    model, X, y = big_model()
    ok = (np.array([[1.0], [3.0]]), np.array([1, 1]))
    neg = (-X[:2], np.array([0, 0]))  # merges fine with `ok`, overflows with class 0
    stream = iter([ok, neg, ok])
    with pytest.raises(BatchError, match=r"batch 1 was rejected .*overflows float64") as info:
        fit_stream(stream, estimator=model)
    err = info.value
    assert (err.batch_index, err.rows_fitted, err.pending_stats) == (1, 2, None)
    assert err.estimator is model
    assert_exact_stats(model, np.vstack([X, ok[0]]), np.r_[y, ok[1]], 2, m2_rtol=4e-16)
    # The stream goes on after the bad batch.
    fit_stream(stream, estimator=model)
    rows = np.vstack([X, ok[0], ok[0]]), np.r_[y, ok[1], ok[1]]
    assert_exact_stats(model, *rows, 2, m2_rtol=4e-16)


def test_an_overflowing_first_batch_then_a_bad_one_keeps_the_estimator() -> None:
    # Before: batch 1 was reported as if every earlier weight were 0 (any ValueError of the
    # final merge was taken for that), with estimator None: the model's rows were dropped.
    model, X, y = big_model()
    stream = iter([(-X[:2], np.array([0, 0])), (np.array([[np.nan]]), np.array([1]))])
    with pytest.raises(BatchError, match=r"batch 0 was rejected .*overflows") as info:
        fit_stream(stream, estimator=model)
    err = info.value
    assert (err.batch_index, err.rows_fitted, err.pending_stats) == (0, 0, None)
    assert err.estimator is model
    assert_exact_stats(model, X, y, 2)
    with pytest.raises(BatchError, match=r"batch 0 was rejected \(no earlier batch.*NaN") as info:
        fit_stream(stream, estimator=model)
    assert info.value.estimator is model
    assert_exact_stats(model, X, y, 2)


def test_initial_stats_overflowing_the_estimator_fail_before_any_batch_is_read() -> None:
    model, X, y = big_model()
    read: list[int] = []

    def batches() -> Iterator[tuple[Any, Any]]:
        read.append(1)
        yield X, y

    initial = gaussmle.class_stats(-X[:2], np.array([0, 0]), 2)
    with pytest.raises(ValueError, match="overflows float64"):
        fit_stream(batches(), estimator=model, initial_stats=initial)
    assert read == []
    assert_exact_stats(model, X, y, 2)


def test_rows_fitted_counts_this_calls_batches_only() -> None:
    # Before: initial_stats rows were counted, the estimator's own rows were not.
    X, y = small_integer_rows(14, 2)
    bad = (X, y + 5)
    initial = gaussmle.class_stats(X, y, 2)
    with pytest.raises(BatchError, match=r"14 of them from this call's batch 0\)") as info:
        fit_stream(iter([(X, y), bad]), classes=[0, 1], initial_stats=initial)
    assert (info.value.batch_index, info.value.rows_fitted) == (1, 14)
    assert info.value.estimator.class_count_.tolist() == [14.0, 14.0]
    fitted = gaussmle.GaussianNB().fit(X, y)
    with pytest.raises(BatchError) as info:
        fit_stream(iter([(X, y), bad]), estimator=fitted)
    assert (info.value.batch_index, info.value.rows_fitted) == (1, 14)
    with pytest.raises(BatchError, match=r"none of them from this call's batches") as info:
        fit_stream(iter([bad]), classes=[0, 1], initial_stats=initial)
    assert (info.value.batch_index, info.value.rows_fitted) == (0, 0)
    assert info.value.estimator.class_count_.tolist() == [7.0, 7.0]


def test_first_batch_bad_message_says_nothing_was_fitted() -> None:
    with pytest.raises(BatchError, match=r"batch 0 was rejected \(no earlier batch was fitted;"):
        fit_stream([(np.zeros((2, 1)), [0, 7])], classes=[0, 1])


# ---------------------------------------------------------------------------- batch input


def test_nullable_float_frame_batch_is_accepted_like_fit() -> None:
    pd = pytest.importorskip("pandas")
    X, y = small_integer_rows(14, 2)
    frame = pd.DataFrame(X, columns=["a", "b"]).astype("Float64")
    model = fit_stream([(frame, y)], classes=[0, 1])
    assert_exact_stats(model, X, y, 2)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b"])


def test_nullable_float_frame_with_missing_value_names_it() -> None:
    pd = pytest.importorskip("pandas")
    X, y = small_integer_rows(14, 2)
    frame = pd.DataFrame(X, columns=["a", "b"]).astype("Float64")
    frame.iloc[3, 1] = pd.NA
    with pytest.raises(BatchError, match=r"batch 0 .*NaN.*row 3, column 1"):
        fit_stream([(frame, y)], classes=[0, 1])


def test_scalar_batch_weight_is_that_weight_for_every_row() -> None:
    X, y = small_integer_rows(14, 2)
    model = fit_stream([(X, y, 2.0)], classes=[0, 1])
    np.testing.assert_array_equal(model.class_count_, [14.0, 14.0])
    np.testing.assert_array_equal(model.get_class_stats().m2, 2 * fraction_class_stats(X, y, 2).m2)


def test_labels_of_shape_1_by_n_are_rejected() -> None:
    X, y = small_integer_rows(14, 2)
    with pytest.raises(
        BatchError, match=r"y should be a 1d array, got an array of shape \(1, 14\)"
    ):
        fit_stream([(X, y[None, :])], classes=[0, 1])


def test_empty_batches_are_skipped() -> None:
    X, y = small_integer_rows(14, 2)
    model = fit_stream([(X[:0], y[:0]), (X, y), (X[:0], y[:0])], classes=[0, 1])
    assert_exact_stats(model, X, y, 2)


@pytest.mark.parametrize("weight", [np.ones(0), [], 3.0, np.zeros(0, dtype=np.float32)])
def test_empty_batches_with_weights_are_skipped(weight: Any) -> None:
    # Before: "Found array with 0 sample(s)" (scikit-learn's weight check wants a row).
    X, y = small_integer_rows(14, 2)
    w = np.full(14, 2.0)
    stream = [(X[:0], y[:0], weight), (X, y, w), (X[:0], y[:0], weight)]
    model = fit_stream(stream, classes=[0, 1])
    np.testing.assert_array_equal(model.class_count_, [14.0, 14.0])
    np.testing.assert_array_equal(model.get_class_stats().m2, 2 * fraction_class_stats(X, y, 2).m2)
    np.testing.assert_array_equal(model.theta_, fraction_class_stats(X, y, 2).mean)


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (np.ones(3), r"sample_weight.shape == \(3,\), expected \(0,\)"),
        (np.ones((0, 1)), r"sample_weight.shape == \(0, 1\), expected \(0,\)"),
        (-1.0, "Negative values in data passed to `sample_weight`"),
    ],
)
def test_empty_batch_weights_are_still_checked(weight: Any, message: str) -> None:
    X, y = small_integer_rows(14, 2)
    with pytest.raises(BatchError, match=message) as info:
        fit_stream([(X, y), (X[:0], y[:0], weight)], classes=[0, 1])
    assert info.value.batch_index == 1


def test_y_with_a_non_matrix_source_says_what_the_source_must_be() -> None:
    pd = pytest.importorskip("pandas")
    X, y = small_integer_rows(14, 2)
    frame = pd.DataFrame(X, columns=["a", "b"])
    for source in (frame, X.tolist()):
        with pytest.raises(
            ValueError, match=r"numpy array .* or a \.npy path; got (DataFrame|list)"
        ):
            fit_stream(source, y)


def test_feature_name_mismatch_when_continuing_names_the_estimator() -> None:
    pd = pytest.importorskip("pandas")
    X, y = small_integer_rows(14, 2)
    model = gaussmle.GaussianNB().fit(pd.DataFrame(X, columns=["a", "b"]), y)
    with pytest.raises(BatchError, match=r"differ from the estimator's feature_names_in_"):
        fit_stream([(pd.DataFrame(X, columns=["b", "a"]), y)], estimator=model)
