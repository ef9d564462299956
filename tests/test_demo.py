"""The skittles demo (``python -m gaussmle demo``): its numbers, its output and its PNG."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gaussmle.__main__ import main
from gaussmle.demo import COLOURS, TRAITS, DemoResult, run_demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_quiet(seed: int, n: int, plot: Path | None) -> tuple[DemoResult, str]:
    buf = io.StringIO()
    result = run_demo(seed=seed, n=n, plot=plot, out=buf)
    return result, buf.getvalue()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG: starts with {head[:8]!r}"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fit_is_the_closed_form_mle(seed: int) -> None:
    result, _ = run_quiet(seed=seed, n=200, plot=None)
    x, y = result.x_train, result.y_train
    for c in range(len(COLOURS)):
        rows = x[y == c]
        # Independent of the demo's own numpy check: numpy's mean and var(ddof=0).
        np.testing.assert_allclose(result.stats.mean[c], rows.mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(result.stats.var[c], rows.var(axis=0, ddof=0), rtol=1e-13)
        assert result.stats.weight[c] == rows.shape[0]
    assert result.mean_max_diff < 1e-14
    assert result.var_max_diff < 1e-14
    assert result.merge_max_diff < 1e-14
    np.testing.assert_allclose(np.exp(result.log_prior), [0.6, 0.4], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_classifies_well_separated_skittles(seed: int) -> None:
    result, text = run_quiet(seed=seed, n=200, plot=None)
    assert result.accuracy > 0.9
    assert result.accuracy == np.mean(result.predicted == result.y_new)
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(result.predicted, np.argmax(result.proba, axis=1))
    assert f"accuracy: {result.accuracy:.3f}" in text


def test_printed_table_matches_numpy() -> None:
    result, text = run_quiet(seed=0, n=200, plot=None)
    for c, colour in enumerate(COLOURS):
        for d, trait in enumerate(TRAITS):
            line = re.search(rf"^\s+{colour}\s+{trait}\s+(.+)$", text, flags=re.MULTILINE)
            assert line is not None, f"no row for {colour}/{trait} in:\n{text}"
            mu, np_mu, var, np_var = (float(v) for v in line.group(1).split())
            assert mu == np_mu == round(float(result.numpy_mean[c, d]), 6)
            assert var == np_var == round(float(result.numpy_var[c, d]), 6)
    diffs = re.search(r"max \|difference\|: mu (\S+), sigma\^2 (\S+)", text)
    assert diffs is not None
    assert float(diffs.group(1)) < 1e-14
    assert float(diffs.group(2)) < 1e-14


def test_deterministic_for_a_seed() -> None:
    _, first = run_quiet(seed=7, n=60, plot=None)
    _, second = run_quiet(seed=7, n=60, plot=None)
    _, other = run_quiet(seed=8, n=60, plot=None)
    assert first == second
    assert first != other


def test_rejects_too_few_skittles() -> None:
    with pytest.raises(ValueError, match="at least"):
        run_demo(n=3, plot=None, out=io.StringIO())


def test_plot_is_skipped_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes `import matplotlib...` raise ImportError.
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.lines"):
        monkeypatch.setitem(sys.modules, name, None)
    target = tmp_path / "skipped.png"
    result, text = run_quiet(seed=0, n=50, plot=target)
    assert result.plot_path is None
    assert not target.exists()
    assert "Plot skipped" in text
    assert "gaussmle[plot]" in text


def test_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "sub" / "skittles.png"
    result, text = run_quiet(seed=0, n=200, plot=target)
    assert result.plot_path == target
    assert png_size(target) == (1250, 500)
    assert f"Plot written to {target}" in text


def test_cli_demo_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "x.png"
    proc = subprocess.run(
        [sys.executable, "-m", "gaussmle", "demo", "--plot", str(target), "--seed", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert png_size(target) == (1250, 500)
    match = re.search(r"accuracy: ([0-9.]+)", proc.stdout)
    assert match is not None, proc.stdout
    assert float(match.group(1)) > 0.9
    # The CLI prints exactly what the function prints for the same arguments.
    _, text = run_quiet(seed=1, n=200, plot=None)
    assert proc.stdout == text + f"Plot written to {target}\n"


def test_cli_default_plot_goes_to_current_directory(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    proc = subprocess.run(
        [sys.executable, "-m", "gaussmle", "demo", "--n", "40"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    png_size(tmp_path / "skittles.png")


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as no_command:
        main([])
    assert no_command.value.code == 2
    with pytest.raises(SystemExit) as too_small:
        main(["demo", "--n", "3"])
    assert too_small.value.code == 2
    assert "at least" in capsys.readouterr().err
