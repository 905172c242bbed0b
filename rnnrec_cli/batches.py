"""Session-parallel mini-batches (GRU4Rec): B slots each walk through sequences back to back.

A slot takes the next sequence as soon as its current one ends, and the hidden state of that slot
is reset once, at the new sequence's first step. The stream is cut into chunks of T steps for
truncated back-propagation; the hidden state is carried across chunks by the caller. Only the
very end of the stream, where slots run dry, is padded (mask False).

The layout (which slot and start step each sequence gets) is computed once from the sequence
lengths alone; chunks are then built one at a time, so an epoch never exists as [steps, B]
arrays in memory, and a process of a multi-host run can build just its own slots from just its
own sequences.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rnnrec_cli.data import Sequences


@dataclass(frozen=True)
class Chunk:
    """T steps of the stream. All arrays are [T, B].

    inputs: <int32> item fed at the step; targets: <int32> the next item (to predict);
    mask: <bool> the step holds a real (input, target) pair; reset: <bool> zero the slot's
    hidden state before the step (first step of a sequence); target_pos: <int64> index of the
    target in the packed `Sequences.items` (-1 on padding), to put per-step results back in order.
    input_values, target_values: <float32> the values of the input and target events (0 on
    padding), when the sequences carry values; input_events, target_events: <int32> their
    event types (-1 on padding and unknown types), when the sequences carry types.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    reset: np.ndarray
    target_pos: np.ndarray
    input_values: np.ndarray | None = None
    target_values: np.ndarray | None = None
    input_events: np.ndarray | None = None
    target_events: np.ndarray | None = None

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.inputs, self.targets, self.mask, self.reset


@dataclass(frozen=True)
class Layout:
    """Where each sequence runs: per laid-out sequence (sorted by slot, then start step) its
    index in the input `Sequences`, slot, first step and number of (input, target) pairs; and
    the sort key slot * (n_steps + 1) + start, to find the sequence running at (step, slot)."""

    seq: np.ndarray
    slot: np.ndarray
    start: np.ndarray
    n_pairs: np.ndarray
    batch_size: int
    n_steps: int
    key: np.ndarray

    def sequences_in(self, slots: range) -> np.ndarray:
        """Indices of the sequences that run in `slots` (what a process must read)."""
        return np.sort(self.seq[(self.slot >= slots.start) & (self.slot < slots.stop)])


def layout(lengths: np.ndarray, batch_size: int, bptt: int, order: np.ndarray | None = None) -> Layout:
    """Lay sequences (in `order`, default as stored) into B slots. Sequences shorter than 2 give
    no (input, target) pair and are skipped. The stream length is a multiple of `bptt`."""
    lengths = np.asarray(lengths, np.int64)
    idx = np.arange(len(lengths)) if order is None else np.asarray(order, np.int64)
    idx = idx[lengths[idx] >= 2]
    n_pairs = lengths[idx] - 1
    slot, start = assign_slots(n_pairs, batch_size)
    end = int((start + n_pairs).max()) if len(idx) else 0
    n_steps = max(1, -(-end // bptt)) * bptt
    by_slot = np.lexsort((start, slot))
    slot, start = slot[by_slot], start[by_slot]
    return Layout(idx[by_slot], slot, start, n_pairs[by_slot], batch_size, n_steps, slot * (n_steps + 1) + start)


@dataclass(frozen=True)
class Stream:
    """A layout plus the items it reads, producing [T, len(slots)] chunks on demand.

    `first[i]` is the index in `items` of sequence i's first event; only the sequences running
    in `slots` need valid entries (a process of a multi-host run holds only those).
    """

    plan: Layout
    items: np.ndarray
    first: np.ndarray
    bptt: int
    slots: range
    values: np.ndarray | None = None
    events: np.ndarray | None = None

    @property
    def n_chunks(self) -> int:
        return self.plan.n_steps // self.bptt

    @property
    def n_events(self) -> int:
        """Real (input, target) pairs in this stream's slots."""
        p = self.plan
        return int(p.n_pairs[(p.slot >= self.slots.start) & (p.slot < self.slots.stop)].sum())

    def chunk(self, k: int) -> Chunk:
        p, t = self.plan, self.bptt
        steps = np.arange(k * t, (k + 1) * t, dtype=np.int64)[:, None]
        slots = np.arange(self.slots.start, self.slots.stop, dtype=np.int64)[None, :]
        if not len(p.seq):
            empty = np.zeros((t, slots.shape[1]), np.int32)
            no_values = None if self.values is None else empty.astype(np.float32)
            no_events = None if self.events is None else empty - 1
            return Chunk(
                empty,
                empty,
                empty.astype(bool),
                empty.astype(bool),
                empty - 1,
                no_values,
                no_values,
                no_events,
                no_events,
            )
        # Sequences are sorted by (slot, start): the one running at (step, slot) is the last that
        # started at or before the step in that slot.
        j = np.searchsorted(p.key, slots * (p.n_steps + 1) + steps, side="right") - 1
        jc = np.maximum(j, 0)
        offset = steps - p.start[jc]
        mask = (j >= 0) & (p.slot[jc] == slots) & (offset < p.n_pairs[jc])
        src = np.where(mask, self.first[p.seq[jc]] + offset, 0)
        nxt = np.where(mask, src + 1, 0)
        inputs = np.where(mask, self.items[src], 0).astype(np.int32)
        targets = np.where(mask, self.items[nxt], 0).astype(np.int32)
        in_v = out_v = None
        if self.values is not None:
            in_v = np.where(mask, self.values[src], 0).astype(np.float32)
            out_v = np.where(mask, self.values[nxt], 0).astype(np.float32)
        in_e = out_e = None
        if self.events is not None:
            in_e = np.where(mask, self.events[src], -1).astype(np.int32)
            out_e = np.where(mask, self.events[nxt], -1).astype(np.int32)
        return Chunk(inputs, targets, mask, mask & (offset == 0), np.where(mask, src + 1, -1), in_v, out_v, in_e, out_e)

    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        for k in range(start, self.n_chunks):
            yield self.chunk(k)

    def whole(self) -> Chunk:
        """Every chunk stacked: [n_steps, B] arrays (for tests and small data)."""
        parts = [self.chunk(k) for k in range(self.n_chunks)]

        def stack(field: str) -> np.ndarray | None:
            got = [getattr(c, field) for c in parts]
            return None if got[0] is None else np.concatenate(got)

        return Chunk(*(stack(f) for f in Chunk.__dataclass_fields__))


def assign_slots(n_pairs: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Give each sequence, in order, to the slot that frees up first (ties: lowest slot).

    Returns (slot, start step) per sequence.
    """
    heap = [(0, s) for s in range(batch_size)]
    slot = np.empty(len(n_pairs), np.int64)
    start = np.empty(len(n_pairs), np.int64)
    for i, p in enumerate(n_pairs.tolist()):
        cursor, s = heapq.heappop(heap)
        slot[i], start[i] = s, cursor
        heapq.heappush(heap, (cursor + p, s))
    return slot, start


def session_parallel(
    seqs: Sequences, batch_size: int, bptt: int, order: np.ndarray | None = None, slots: range | None = None
) -> Stream:
    """The session-parallel stream of `seqs` (all slots, or just `slots`)."""
    plan = layout(seqs.lengths, batch_size, bptt, order)
    slots = slots if slots is not None else range(batch_size)
    return Stream(plan, seqs.items, seqs.offsets[:-1], bptt, slots, seqs.values, seqs.events)


def longest_first(seqs: Sequences) -> np.ndarray:
    """An order that packs the stream tightly (for evaluation, where order does not matter)."""
    return np.argsort(-seqs.lengths, kind="stable")


def sampling_distribution(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Probability of drawing each item as a shared negative: support^alpha, normalised."""
    weights = np.asarray(counts, np.float64) ** alpha
    return weights / weights.sum()


def sample_negatives(cdf: np.ndarray, n_sample: int, rng: np.random.Generator) -> np.ndarray:
    """<int32>[n_sample] items drawn by inverting `cdf` (cumulative `sampling_distribution`)."""
    draws = np.searchsorted(cdf, rng.random(n_sample) * cdf[-1], side="right")
    return np.minimum(draws, len(cdf) - 1).astype(np.int32)
