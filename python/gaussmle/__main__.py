"""Command line: ``python -m gaussmle demo [--seed N] [--n N] [--plot PATH]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from gaussmle.demo import DEFAULT_PLOT, MIN_N, run_demo

    def count(text: str) -> int:
        value = int(text)
        if value < MIN_N:
            raise argparse.ArgumentTypeError(f"must be at least {MIN_N}; got {value}")
        return value

    parser = argparse.ArgumentParser(prog="python -m gaussmle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="fit one Gaussian per skittle colour, check it against numpy, classify new skittles",
        description="The skittles demo: per-class Gaussian MLE and classification.",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--n", type=count, default=200, help="number of labelled skittles (default: 200)"
    )
    demo.add_argument(
        "--plot",
        metavar="PATH",
        default=DEFAULT_PLOT,
        help=f"where to write the PNG (default: ./{DEFAULT_PLOT}; needs gaussmle[plot])",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(seed=args.seed, n=args.n, plot=args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
