"""The `qwen-evals` command.

    qwen-evals run [HYDRA OVERRIDES ...]        evaluate (the same as python run_eval.py)
    qwen-evals leaderboard [RESULTS_DIR ...]    tables, card parity and the HTML report
    qwen-evals compare RUN_A RUN_B              paired per-task comparison
    qwen-evals gate [BASELINE_DIR] CANDIDATE_DIR  the nightly gate (exit 1: worse, incomplete, partial or another exam)
    qwen-evals matrix [OVERRIDES ...]           the runs a sweep is expected to produce (JSON, for the gate)
    qwen-evals convert qwen1 SRC DST            a Qwen (v1) checkpoint as native Qwen2

Each subcommand takes the arguments of its module's own command line; `--help`
after a subcommand shows them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = __doc__.split("\n\n")[1]


def _run(argv: list[str]) -> int:
    from qwen_evals.cli import run

    sys.argv = [f"{sys.argv[0]} run", *argv]  # Hydra reads its overrides from sys.argv
    run.main()
    return 0


def _leaderboard(argv: list[str]) -> int:
    from qwen_evals.analysis import leaderboard

    return leaderboard.main(argv)


def _compare(argv: list[str]) -> int:
    from qwen_evals.analysis import compare

    return compare.main(argv)


def _gate(argv: list[str]) -> int:
    from qwen_evals.analysis import gate

    return gate.main(argv)


def _matrix(argv: list[str]) -> int:
    from qwen_evals.cli import matrix

    return matrix.main(argv)


def _convert(argv: list[str]) -> int:
    from qwen_evals.backends.qwen1 import cli

    return cli.main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "leaderboard": _leaderboard,
    "compare": _compare,
    "gate": _gate,
    "matrix": _matrix,
    "convert": _convert,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage:\n{USAGE}")
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"qwen-evals: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}\n\nusage:\n{USAGE}", file=sys.stderr)
        return 2
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
