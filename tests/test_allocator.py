"""The allocator setting training turns on (glibc's mallopt), run in a fresh process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_once_and_large_buffers_come_from_the_heap() -> None:
    # A fresh interpreter: the setting lasts for the process, and other tests share this one.
    code = (
        "import ctypes, numpy as np\n"
        "from rnnrec_cli import allocator\n"
        "assert allocator.keep_freed_memory() and allocator.keep_freed_memory()\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info\n"
        "before = libc.mallinfo2().hblks\n"
        "big = np.ones(64 << 20, np.uint8)\n"
        "print(libc.mallinfo2().hblks - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # hblks counts mmap-served blocks: none for a 64 MiB array once the setting is on.
    assert out.stdout.strip() == "0"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_with_one_arena_a_thread_started_after_it_gets_large_buffers_from_the_heap_too() -> None:
    # XLA runs programs on its own threads. A thread with an arena of its own (at most 64 MiB)
    # maps a larger buffer afresh from the kernel whatever mallopt says; one arena avoids it.
    code = (
        "import ctypes, threading, numpy as np\n"
        "from rnnrec_cli import allocator\n"
        "assert allocator.keep_freed_memory() and allocator.one_arena()\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info\n"
        "out = []\n"
        "def work():\n"
        "    first = np.ones(1000)  # a thread takes its arena at its first allocation\n"
        "    before = libc.mallinfo2().hblks\n"
        "    big = np.ones(128 << 20, np.uint8)\n"
        "    out.append(libc.mallinfo2().hblks - before)\n"
        "t = threading.Thread(target=work); t.start(); t.join()\n"
        "print(out[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
