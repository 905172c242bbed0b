"""How the C allocator treats large buffers: set once per process, on glibc only.

XLA on CPU allocates a program's temporary buffers on every call (one training step at GRU 224 x
80 uses 35 MiB of them with CE, 66 MiB with BPR-max). glibc serves large allocations with fresh
pages from the kernel and hands them back on free, so every step faulted in and zeroed its
buffers anew: most of training's system time (docs/benchmarks.md, "The weight-gradient product
and the allocator"). Served from the heap and kept after free (`keep_freed_memory`), the same
pages are reused from step to step. Training sets it; the other commands keep the defaults.

XLA runs programs on its own threads, and glibc gives threads arenas of their own whose heaps
hold at most 64 MiB: a larger buffer there is mapped afresh whatever mallopt says (glibc's
sysmalloc falls back to mmap). `one_arena` keeps every thread on the main heap instead, which
made the default training (BPR-max) 1.5x faster, but costs steps with small temporaries in lock
contention (about a fifth of MovieLens's CE epoch; docs/benchmarks.md, "One malloc arena"). A
thread takes its arena at its first allocation and XLA's threads allocate as JAX starts, so it
must come before JAX's first computation: the CLI's `train` and `tune` set it first, for the
losses whose temporaries pass 64 MiB at the default size (`LARGE_STEP_LOSSES`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# The losses whose step temporaries pass 64 MiB at the default size (GRU 224 x 80, 2,048 samples:
# BPR-max 66 MiB, TOP1-max 75 MiB, CE 35 MiB; XLA's `memory_analysis`, 2026-12-06).
LARGE_STEP_LOSSES = frozenset({"bpr-max", "top1-max"})

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
# Freed memory at the heap's top is handed back to the kernel only past this much.
_TRIM_THRESHOLD = 1 << 30
# Each growth of the heap asks the kernel for this much beyond the request.
_TOP_PAD = 64 << 20

_done: set[str] = set()


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed memory for reuse (glibc's mallopt).
    Returns whether it applied; elsewhere than glibc on Linux it does nothing. Idempotent.

    The cost: memory freed after a peak stays with the process until it exits (its resident
    size does not fall back): a RetailRocket training run peaked 150-400 MiB higher, a step at
    1M items the same (docs/benchmarks.md).
    """
    return _mallopt("keep", ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))


def one_arena() -> bool:
    """Keep every thread on the main heap (one malloc arena), so buffers over 64 MiB are reused
    too. Reaches only threads that had not allocated yet: call it before JAX's first
    computation. Returns whether it applied; elsewhere than glibc on Linux it does nothing."""
    return _mallopt("arena", ((_M_ARENA_MAX, 1),))


def for_training(loss: str) -> None:
    """Both settings as training wants them before JAX's first computation: freed memory kept,
    and one arena where the loss's step temporaries pass 64 MiB at the default size."""
    keep_freed_memory()
    if loss in LARGE_STEP_LOSSES:
        one_arena()


def _mallopt(name: str, settings: tuple[tuple[int, int], ...]) -> bool:
    if name in _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("mallopt was refused: the allocator keeps its defaults")
    else:
        _done.add(name)
    return ok
