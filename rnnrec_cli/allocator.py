"""How the C allocator treats large buffers: set once per process, on glibc only.

XLA on CPU allocates a program's temporary buffers on every call (one training step at GRU 224 x
80 uses 35 MiB of them with CE, more than 64 MiB with BPR-max). glibc serves large allocations
with fresh pages from the kernel and hands them back on free, so every step faulted in and
zeroed its buffers anew: most of training's system time (docs/benchmarks.md, "The
weight-gradient product and the allocator", "One malloc arena"). Served from the heap and kept
after free, the same pages are reused from step to step.

XLA runs programs on its own threads, and glibc gives threads arenas of their own, each at most
64 MiB: an allocation larger than that is mapped afresh from the kernel whatever mallopt says
(glibc's sysmalloc falls back to mmap there). So the setting also keeps every thread on the
main heap (one arena). A thread takes its arena at its first allocation, so this must run
before JAX's first computation to reach XLA's threads; `fit` calls it first, and the CLI's
`train` and `tune` before anything else. Training sets it; the other commands keep the
allocator's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
# Freed memory at the heap's top is handed back to the kernel only past this much.
_TRIM_THRESHOLD = 1 << 30
# Each growth of the heap asks the kernel for this much beyond the request.
_TOP_PAD = 64 << 20

_done = False


def keep_freed_memory() -> bool:
    """Serve every allocation from the main heap and keep freed memory for reuse (glibc's
    mallopt). Returns whether it applied; elsewhere than glibc on Linux it does nothing.
    Idempotent. Threads that allocated before it keep their own arenas.

    The cost: memory freed after a peak stays with the process until it exits (its resident
    size does not fall back): a RetailRocket training run peaked 150-400 MiB higher, a step at
    1M items the same (docs/benchmarks.md).
    """
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (_M_MMAP_MAX, 0),
                (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                (_M_TOP_PAD, _TOP_PAD),
                (_M_ARENA_MAX, 1),
            )
        )
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("mallopt was refused: the allocator keeps its defaults")
    _done = ok
    return ok
