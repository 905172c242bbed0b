"""How the C allocator treats large buffers: set once per process, on glibc only.

XLA on CPU allocates a program's temporary buffers on every call (one training step at GRU 224 x
80 uses 35 MiB of them). glibc serves large allocations with fresh pages from the kernel and
hands them back on free, so every step faulted in and zeroed its buffers anew: most of training's
system time, and about a tenth of the step at GRU 224 x 80 (docs/benchmarks.md, "The
weight-gradient product and the allocator"). Served from the heap and kept after free, the same
pages are reused from step to step. Training (`training.fit`) sets it; the other commands keep
the allocator's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
# Freed memory at the heap's top is handed back to the kernel only past this much.
_TRIM_THRESHOLD = 1 << 30
# Each growth of the heap asks the kernel for this much beyond the request.
_TOP_PAD = 64 << 20

_done = False


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed memory for reuse (glibc's mallopt).
    Returns whether it applied; elsewhere than glibc on Linux it does nothing. Idempotent.

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
            for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
        )
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("mallopt was refused: the allocator keeps its defaults")
    _done = ok
    return ok
