"""The allocator settings training turns on (glibc's mallopt), each run in a fresh process: a
setting lasts for the process, and other tests share this one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# `mmapped()`: how many blocks glibc serves by mmap now (mallinfo2's hblks).
PRELUDE = (
    "import ctypes, threading, numpy as np\n"
    "from rnnrec_cli import allocator\n"
    "class Info(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]\n"
    "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info\n"
    "mmapped = lambda: libc.mallinfo2().hblks\n"
)


def run(code: str) -> str:
    # glibc's own defaults, whatever this environment sets.
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code], capture_output=True, text=True, check=True, env=env
    ).stdout


def test_keep_freed_memory_applies_once_and_large_buffers_come_from_the_heap() -> None:
    out = run(
        "assert allocator.keep_freed_memory() and allocator.keep_freed_memory()\n"
        "before = mmapped()\n"
        "big = np.ones(64 << 20, np.uint8)\n"
        "print(mmapped() - before)\n"
    )
    # None mmap-served for a 64 MiB array once the setting is on.
    assert out.strip() == "0"


def test_with_one_arena_a_thread_started_after_it_gets_large_buffers_from_the_heap_too() -> None:
    # XLA runs programs on its own threads. A thread with an arena of its own (at most 64 MiB)
    # maps a larger buffer afresh from the kernel whatever mallopt says; one arena avoids it.
    code = (
        "out = []\n"
        "def work():\n"
        "    first = np.ones(1000)  # a thread takes its arena at its first allocation\n"
        "    before = mmapped()\n"
        "    big = np.ones(128 << 20, np.uint8)\n"
        "    out.append(mmapped() - before)\n"
        "t = threading.Thread(target=work); t.start(); t.join()\n"
        "print(out[0])\n"
    )
    assert run("assert allocator.keep_freed_memory() and allocator.one_arena()\n" + code).strip() == "0"
    # Without one arena the thread's buffer is mapped: the test above can tell.
    assert run("assert allocator.keep_freed_memory()\n" + code).strip() == "1"


def test_train_and_tune_choose_one_arena_by_the_runs_loss(tmp_path: Path) -> None:
    import json

    from rnnrec_cli import allocator
    from rnnrec_cli.cli.run_commands import _resumed_loss
    from rnnrec_cli.config import TrainConfig

    # The default loss is one whose step temporaries pass 64 MiB at the default size; CE's do not.
    assert TrainConfig().loss in allocator.LARGE_STEP_LOSSES and "ce" not in allocator.LARGE_STEP_LOSSES
    # --resume reads the loss from the run's config, and falls back to the default.
    assert _resumed_loss(tmp_path) == TrainConfig().loss
    (tmp_path / "config.json").write_text(json.dumps({"train": {"loss": "ce"}}))
    assert _resumed_loss(tmp_path) == "ce"
    (tmp_path / "config.json").write_text("{not json")
    assert _resumed_loss(tmp_path) == TrainConfig().loss
