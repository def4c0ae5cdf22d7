"""Benchmarks of the registry, most of them against CNCF Distribution 2.8 (`python -m bench.run`, see README.md).

What every module of the package shares: where the project and the results are, the loopback host the servers
listen on, and the error a workload raises when an answer is wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
MIB = 1 << 20


class BenchError(RuntimeError):
    """A workload saw a wrong answer (status, size, digest, error count): the numbers would not mean anything."""


def command_line() -> str:
    """The command that started this process, as typed in the project directory (`python -m bench.run ...`)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return " ".join([Path(sys.executable).name, *program, *sys.argv[1:]])
