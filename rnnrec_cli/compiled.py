"""The compiled programs a process keeps, and the memory mappings they hold.

XLA's CPU backend links each compiled program's code into the process as memory mappings
(three per linked object: read-only, executable, writable), and jit keeps every program it has
compiled for the life of the process. A process that trains or evaluates many models (tune's
trials, a notebook's loop over settings) gains some hundreds of mappings a run: about 335 per
one-epoch run on Diginetica at GRU 32-88, batch 32 (`jax.clear_caches` after each kept the
count flat at about 790; 2026-12-07). Linux refuses a process more than `vm.max_map_count` of
them (65,530 by default). Past that, LLVM's linker cannot map memory ("LLVM compilation error:
Cannot allocate memory") and XLA crashes with a segmentation fault: about 195 such runs into
one process, at that rate. `make_room`, called as `train`, `evaluate` and `predict` start, drops
jit's caches once the process holds more than `MAPS_SHARE` of its limit: a new run compiles its
own programs anyway, and the programs dropped only compile again if used again.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Share of vm.max_map_count past which `make_room` drops the compiled programs. Half leaves room
# for the largest run seen (a few thousand mappings) and for what the rest of the process maps.
MAPS_SHARE = 0.5

_LIMIT = Path("/proc/sys/vm/max_map_count")
_MAPS = Path("/proc/self/maps")


def map_limit() -> int | None:
    """The kernel's limit on one process's memory mappings; None where it cannot be read (not Linux)."""
    try:
        return int(_LIMIT.read_text().strip())
    except (OSError, ValueError):
        return None


def map_count() -> int | None:
    """The memory mappings this process holds now; None where it cannot be read (not Linux)."""
    try:
        with _MAPS.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def make_room(share: float | None = None) -> bool:
    """Drop jit's compiled programs when the process holds more than `share` (default
    `MAPS_SHARE`) of its mapping limit.

    Returns whether it did. Call it only where no other thread compiles or runs a program of
    rnnrec's: at the start of a training run or an evaluation, not inside one.
    """
    limit, count = map_limit(), map_count()
    share = MAPS_SHARE if share is None else share
    if limit is None or count is None or count <= share * limit:
        return False
    import jax

    jax.clear_caches()
    gc.collect()
    log.info("dropped compiled programs: %d of %d memory mappings held, %s now", count, limit, map_count())
    return True
