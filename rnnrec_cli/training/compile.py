"""Compiling the next epoch's step programs ahead, in the background, while the current epoch
trains (the narrowed tail's widths), and shutting that work down cleanly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from rnnrec_cli.data.batches import (
    Batch,
    Stream,
)
from rnnrec_cli.model import network
from rnnrec_cli.model.step import TrainState

if TYPE_CHECKING:
    from rnnrec_cli.training.fit import _Session


def compile_ahead(
    s: _Session,
    args: tuple[TrainState, network.Carry, Any],
    stream: Stream,
    start: int,
    compiled: set[int],
    device_chunk: Callable[[int], Batch],
) -> dict[int, Future[Any]]:
    """Compile the step for the narrower widths of the epoch's tail in a background thread while
    the full-width chunks run (a compilation costs seconds, the tail of a short epoch not much
    more). jit's cache is shared: the first call at a width compiled here does not compile.
    Returns a future per width, to wait for before its first step."""
    if stream.widths is None:
        return {}
    firsts = {int(w): start + int(i) for w, i in zip(*np.unique(stream.widths[start:], return_index=True), strict=True)}
    todo = sorted((w for w in firsts if w not in compiled and firsts[w] > start), reverse=True)
    if not todo:
        return {}
    state, carry, sums = args

    def spec(x: jax.Array, shape: tuple[int, ...] | None = None) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(x.shape if shape is None else shape, x.dtype, sharding=x.sharding)

    # Shapes and placements are taken here, on the loop's thread: the loop donates these arrays.
    fixed = jax.tree.map(spec, (state, sums, s.stats, s.base_key))
    calls = {}
    for w in todo:
        narrow_carry = jax.tree.map(lambda x, w=w: spec(x, (w, *x.shape[1:])), carry)
        calls[w] = (fixed[0], narrow_carry, fixed[1], jax.tree.map(spec, device_chunk(firsts[w])), *fixed[2:])
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnrec-compile")
    futures = {w: pool.submit(lambda a: s.step_fn.lower(*a).compile(), calls[w]) for w in todo}
    pool.shutdown(wait=False)
    return futures


@contextmanager
def shut_down(pending: dict[int, Future[Any]]) -> Iterator[None]:
    """On the way out (an error, Ctrl-C), compilations not started are dropped and a running one
    is waited for, so that no thread outlives the loop into a torn-down runtime."""
    try:
        yield
    finally:
        for f in pending.values():
            f.cancel()
        for f in pending.values():
            if not f.cancelled():
                with suppress(Exception):  # the loop's own exception is the one that counts
                    f.result()
