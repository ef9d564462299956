"""The skittles demo: fit one Gaussian per colour by maximum likelihood, then classify blind.

Expert tasters rate skittles on two traits, *aromatic lift* and *elegance*. Purple skittles
score low on both, yellow ones high. From the rated (labelled) skittles we learn one diagonal
Gaussian per colour; its maximum-likelihood parameters have a closed form (the mean of the
ratings, and the mean squared deviation from it), which the demo checks against plain numpy.
Then a batch of skittles is tasted blind and each is given the colour whose Gaussian (times
its prior) explains its ratings best.

Run it with ``python -m gaussmle demo`` (or ``make demo``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

import gaussmle

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

COLOURS = ("purple", "yellow")
TRAITS = ("aromatic lift", "elegance")
#: True generating process: centre and per-trait spread of each colour's ratings.
TRUE_MEAN = np.array([[-1.0, -1.0], [1.0, 1.0]])
TRUE_STD = np.array([[0.75, 0.50], [0.55, 0.80]])
#: Share of purple skittles in every bag, so the class priors are not 50/50.
PURPLE_SHARE = 0.6
#: Matplotlib colours of the two classes.
PLOT_COLOURS = ("#7b3294", "#e6b800")
DEFAULT_PLOT = "skittles.png"
#: Fewest labelled skittles the demo accepts (each colour needs a few to have a variance).
MIN_N = 10


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo computed, for tests and for anyone who wants to poke at it."""

    x_train: F64
    y_train: I64
    stats: gaussmle.ClassStats
    numpy_mean: F64
    numpy_var: F64
    mean_max_diff: float
    var_max_diff: float
    merge_max_diff: float
    log_prior: F64
    x_new: F64
    y_new: I64
    predicted: I64
    proba: F64
    accuracy: float
    plot_path: Path | None


def rate_skittles(rng: np.random.Generator, n: int) -> tuple[F64, I64]:
    """Ratings ``(n, 2)`` and true colour codes of ``n`` skittles drawn from the true process."""
    n_purple = round(PURPLE_SHARE * n)
    y = np.repeat(np.arange(2, dtype=np.int64), [n_purple, n - n_purple])
    rng.shuffle(y)
    x: F64 = TRUE_MEAN[y] + TRUE_STD[y] * rng.standard_normal((n, 2))
    return x, y


def numpy_mle(x: F64, y: I64, n_classes: int) -> tuple[F64, F64]:
    """The closed-form MLE, independently: per class, the mean and the mean squared deviation."""
    mean = np.empty((n_classes, x.shape[1]))
    var = np.empty((n_classes, x.shape[1]))
    for c in range(n_classes):
        rows = x[y == c]
        mean[c] = rows.sum(axis=0) / rows.shape[0]
        var[c] = ((rows - mean[c]) ** 2).sum(axis=0) / rows.shape[0]
    return mean, var


def run_demo(
    *,
    seed: int = 0,
    n: int = 200,
    plot: str | Path | None = DEFAULT_PLOT,
    out: TextIO | None = None,
) -> DemoResult:
    """Run the demo: print its report to ``out`` (stdout) and, if ``plot``, try to draw a PNG.

    ``n`` labelled skittles are used for fitting and ``n // 2`` (at least ``MIN_N``) are
    tasted blind. The same ``seed`` gives the same numbers.
    """
    if n < MIN_N:
        raise ValueError(f"n must be at least {MIN_N}; got {n}")
    stream = sys.stdout if out is None else out

    def say(line: str = "") -> None:
        print(line, file=stream)

    rng = np.random.default_rng(seed)
    x_train, y_train = rate_skittles(rng, n)
    x_new, y_new = rate_skittles(rng, max(n // 2, MIN_N))

    counts = np.bincount(y_train, minlength=2)
    say(
        f"gaussmle {gaussmle.__version__} skittles demo (seed {seed}): "
        f"{counts[0]} purple and {counts[1]} yellow skittles rated on {TRAITS[0]} and {TRAITS[1]}"
    )
    say()

    # 1. Fit: one pass in Rust gives every class's weighted mean and ddof=0 variance.
    stats = gaussmle.class_stats(x_train, y_train, n_classes=2)
    np_mean, np_var = numpy_mle(x_train, y_train, 2)
    mean_diff = float(np.max(np.abs(stats.mean - np_mean)))
    var_diff = float(np.max(np.abs(stats.var - np_var)))
    say("Maximum-likelihood Gaussian per colour: gaussmle.class_stats vs closed form in numpy")
    say(f"  {'colour':<7} {'trait':<14} {'mu':>10} {'(numpy)':>10} {'sigma^2':>10} {'(numpy)':>10}")
    for c, colour in enumerate(COLOURS):
        for d, trait in enumerate(TRAITS):
            say(
                f"  {colour:<7} {trait:<14} {stats.mean[c, d]:>10.6f} {np_mean[c, d]:>10.6f}"
                f" {stats.var[c, d]:>10.6f} {np_var[c, d]:>10.6f}"
            )
    say(f"  max |difference|: mu {mean_diff:.1e}, sigma^2 {var_diff:.1e}")

    # Statistics merge exactly: fitting two halves separately and adding gives the same model.
    half = n // 2
    merged = gaussmle.class_stats(x_train[:half], y_train[:half], 2) + gaussmle.class_stats(
        x_train[half:], y_train[half:], 2
    )
    merge_diff = float(
        max(np.max(np.abs(merged.mean - stats.mean)), np.max(np.abs(merged.var - stats.var)))
    )
    say(f"  fitting two halves and merging them (ClassStats +): max |difference| {merge_diff:.1e}")
    say()

    # 2. Classify the blind tasting: the prior of a colour is its share of the labelled bag.
    log_prior: F64 = np.log(stats.weight / stats.weight.sum())
    predicted = gaussmle.predict(x_new, stats.mean, stats.var, log_prior)
    # float64 ratings in, float64 probabilities out (asarray only narrows the static type).
    proba = np.asarray(
        gaussmle.predict_proba(x_new, stats.mean, stats.var, log_prior), dtype=np.float64
    )
    correct = int(np.sum(predicted == y_new))
    accuracy = correct / y_new.shape[0]
    prior = np.exp(log_prior)
    say(
        f"Blind tasting of {y_new.shape[0]} new skittles "
        f"(priors: purple {prior[0]:.2f}, yellow {prior[1]:.2f})"
    )
    say(f"  accuracy: {accuracy:.3f} ({correct} of {y_new.shape[0]} colours right)")
    say("  the five least certain skittles, then the two most certain ones:")
    say(f"  {'lift':>6} {'elegance':>8} {'P(purple)':>10} {'P(yellow)':>10}  {'guess':<7} truth")
    # The five skittles the model was least sure about, then two easy ones.
    order = np.argsort(np.abs(proba[:, 0] - 0.5))
    for i in [*order[:5], *order[-2:]]:
        say(
            f"  {x_new[i, 0]:>6.2f} {x_new[i, 1]:>8.2f} {proba[i, 0]:>10.4f} {proba[i, 1]:>10.4f}"
            f"  {COLOURS[predicted[i]]:<7} {COLOURS[y_new[i]]}"
        )
    say()

    # 3. The picture, if matplotlib is installed.
    plot_path: Path | None = None
    if plot is not None:
        try:
            plot_path = draw(
                Path(plot), x_train, y_train, x_new, predicted, y_new, stats, log_prior
            )
        except ImportError:
            say("Plot skipped: matplotlib is not installed (pip install 'gaussmle[plot]').")
        else:
            say(f"Plot written to {plot_path}")

    return DemoResult(
        x_train=x_train,
        y_train=y_train,
        stats=stats,
        numpy_mean=np_mean,
        numpy_var=np_var,
        mean_max_diff=mean_diff,
        var_max_diff=var_diff,
        merge_max_diff=merge_diff,
        log_prior=log_prior,
        x_new=x_new,
        y_new=y_new,
        predicted=predicted,
        proba=proba,
        accuracy=accuracy,
        plot_path=plot_path,
    )


def draw(
    path: Path,
    x_train: F64,
    y_train: I64,
    x_new: F64,
    predicted: I64,
    y_new: I64,
    stats: gaussmle.ClassStats,
    log_prior: F64,
) -> Path:
    """Two panels: labelled ratings with the fitted Gaussians, and the blind tasting.

    Raises ``ImportError`` if matplotlib is missing. Uses ``Figure`` directly (no pyplot), so
    no GUI backend is ever touched.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    lo = np.minimum(x_train.min(axis=0), x_new.min(axis=0)) - 0.5
    hi = np.maximum(x_train.max(axis=0), x_new.max(axis=0)) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    jll = gaussmle.joint_log_likelihood(grid, stats.mean, stats.var, log_prior)
    boundary = (jll[:, 1] - jll[:, 0]).reshape(gx.shape)

    fig = Figure(figsize=(12.5, 5), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    for c, colour in enumerate(COLOURS):
        rows = x_train[y_train == c]
        left.scatter(rows[:, 0], rows[:, 1], s=14, color=PLOT_COLOURS[c], alpha=0.7, label=colour)
        # Mahalanobis distance 1, 2, 3 of the fitted diagonal Gaussian: its 1-3 sigma ellipses.
        z = np.sqrt(((grid - stats.mean[c]) ** 2 / stats.var[c]).sum(axis=1)).reshape(gx.shape)
        left.contour(gx, gy, z, levels=[1.0, 2.0, 3.0], colors=PLOT_COLOURS[c], linewidths=1.2)
        left.plot(*stats.mean[c], marker="+", color="black", markersize=12, mew=2)
    left.set_title("Labelled skittles and the fitted Gaussians (1, 2, 3 sigma)")
    left.legend(loc="upper left")

    handles = []
    for c, colour in enumerate(COLOURS):
        rows = x_new[predicted == c]
        right.scatter(
            rows[:, 0], rows[:, 1], s=22, facecolors="none", edgecolors=PLOT_COLOURS[c], lw=1.3
        )
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                mfc="none",
                mec=PLOT_COLOURS[c],
                label=f"guessed {colour}",
            )
        )
    wrong = predicted != y_new
    right.scatter(x_new[wrong, 0], x_new[wrong, 1], s=60, marker="x", color="red")
    right.contour(gx, gy, boundary, levels=[0.0], colors="black", linestyles="dashed")
    right.set_title(f"Blind tasting: {int(wrong.sum())} of {y_new.shape[0]} misclassified")
    handles.append(Line2D([], [], ls="", marker="x", color="red", label="wrong guess"))
    handles.append(Line2D([], [], ls="--", color="black", label="decision boundary"))
    # Outside the axes: the boundary is a conic and can run through any corner.
    right.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    for ax in (left, right):
        ax.set_xlabel(TRAITS[0])
        ax.set_aspect("equal")
    left.set_ylabel(TRAITS[1])

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
