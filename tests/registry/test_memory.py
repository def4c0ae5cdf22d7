"""The malloc arena cap of worker processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Eight threads allocate at once, then glibc reports its arenas ("Arena N:" lines on stderr).
_PROGRAM = """
import ctypes, ctypes.util, sys, threading
from registry.memory import cap_malloc_arenas
if sys.argv[1] == "cap":
    assert cap_malloc_arenas(2)
start = threading.Barrier(8)
def allocate():
    start.wait()
    kept = [bytearray(4096 + i % 512) for i in range(20000)]
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""


def arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_threads_of_a_capped_process_share_at_most_two_arenas() -> None:
    if arenas("free") <= 2:
        pytest.skip("this C library gave the threads no arenas of their own to begin with")
    assert arenas("cap") <= 2
