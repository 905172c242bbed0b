"""Session-parallel mini-batches (GRU4Rec): B slots each walk through sequences back to back.

A slot takes the next sequence as soon as its current one ends, and the hidden state of that slot
is reset once, at the new sequence's first step. The stream is cut into chunks of T steps for
truncated back-propagation; the hidden state is carried across chunks by the caller. Only the
very end of the stream, where slots run dry, is padded (mask False).

The layout (which slot and start step each sequence gets) is computed once from the sequence
lengths alone. Slots are numbered by when they run dry, latest first, so the slots still running
at any step are a prefix: the end of an epoch, where the longest sequences outlast the others,
runs on a narrower batch (`chunk_widths`) instead of computing idle slots, as GRU4Rec's batch
shrinks. Chunks are built one at a time, so an epoch never exists as [steps, B]
arrays in memory, and a process of a multi-host run can build just its own slots from just its
own sequences.
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.sequences import Sequences, read_lengths, read_sequences

T = TypeVar("T")

# The narrowest batch the end of an epoch shrinks to: below this a step costs about the same.
NARROWEST = 8
# Chunks a narrower width must run to be worth its compilation: at GRU 100 x 64 halving the
# batch saves about 12 ms a chunk on a 2-core CPU, and a compilation costs 2-3 s, so 20 chunks
# pay for it within 10 epochs.
MIN_CHUNKS = 20


class Batch(NamedTuple):
    """T steps of B slots, time-major: the one batch type of training, scoring and predict, as
    NumPy arrays on the host and as jax arrays on the device (a NamedTuple is a pytree).

    inputs: <int32>[T, B] item fed at the step; targets: <int32>[T, B] the next item (to
    predict); mask: <bool>[T, B] the step holds a real (input, target) pair (predict: a real
    input event); reset: <bool>[T, B] zero the slot's hidden state before the step (first step
    of a sequence); negatives: <int32>[S] the chunk's shared sampled negatives (training), or
    <int32>[T, B, S] random items for sampled ranks (evaluation); input_values, target_values:
    <float32>[T, B] the values of the input and target events (NaN or 0 where unknown);
    input_events, target_events: <int32>[T, B] their event types (-1 on padding and unknown
    types); target_pos: <int64>[T, B] index of the target in the packed `Sequences.items` (-1 on
    padding), to put per-step results back in order: host only, never sent to a device.
    Fields a model does not read are None.
    """

    inputs: Any
    targets: Any = None
    mask: Any = None
    reset: Any = None
    negatives: Any = None
    input_values: Any = None
    target_values: Any = None
    input_events: Any = None
    target_events: Any = None
    target_pos: Any = None


@dataclass(frozen=True)
class Layout:
    """Where each sequence runs: per laid-out sequence (sorted by slot, then start step) its
    index in the input `Sequences`, slot, first step and number of (input, target) pairs; the
    sort key slot * (n_steps + 1) + start, to find the sequence running at (step, slot); and per
    slot the step it runs dry at (non-increasing: slots are numbered latest first)."""

    seq: np.ndarray
    slot: np.ndarray
    start: np.ndarray
    n_pairs: np.ndarray
    batch_size: int
    n_steps: int
    key: np.ndarray
    ends: np.ndarray

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
    ends = np.zeros(batch_size, np.int64)
    np.maximum.at(ends, slot, start + n_pairs)
    # Renumber the slots by when they run dry, latest first (ties keep their order): a slot is
    # busy from step 0 until its end, so the slots running at any step are then a prefix.
    by_end = np.argsort(-ends, kind="stable")
    renumber = np.empty(batch_size, np.int64)
    renumber[by_end] = np.arange(batch_size)
    slot, ends = renumber[slot], ends[by_end]
    n_steps = max(1, -(-int(ends[0]) // bptt)) * bptt
    by_slot = np.lexsort((start, slot))
    slot, start = slot[by_slot], start[by_slot]
    key = slot * (n_steps + 1) + start
    return Layout(idx[by_slot], slot, start, n_pairs[by_slot], batch_size, n_steps, key, ends)


def chunk_widths(
    plan: Layout, bptt: int, multiple: int = 1, narrowest: int | None = None, min_chunks: int | None = None
) -> np.ndarray:
    """<int64>[n_chunks] the batch width each chunk runs at: the slots still running (a prefix,
    see `layout`), rounded up to B halved as often as they allow, but never below `narrowest`
    and always a multiple of `multiple` (the devices the batch is split over). Halving keeps the
    number of compiled widths to log2(B / narrowest) while the idle slots computed stay below
    half; a width that fewer than `min_chunks` chunks would use is left out."""
    narrowest = NARROWEST if narrowest is None else narrowest
    min_chunks = MIN_CHUNKS if min_chunks is None else min_chunks
    b = plan.batch_size
    sizes = {b}
    w = b
    while w // 2 >= max(narrowest, multiple):
        w //= 2
        sizes.add(-(-w // multiple) * multiple)
    widths = np.array(sorted(sizes), np.int64)
    starts = np.arange(plan.n_steps // bptt, dtype=np.int64) * bptt
    running = np.searchsorted(-plan.ends, -starts, side="left")  # slots with ends > start
    chosen = widths[np.minimum(np.searchsorted(widths, running), len(widths) - 1)]
    # A width costs a compilation (seconds): one that would run only a few chunks gives them to
    # the next wider one instead.
    for w in widths[:-1]:
        here = chosen == w
        if here.sum() < min_chunks:
            chosen[here] = widths[np.searchsorted(widths, w) + 1]
    return chosen


@dataclass(frozen=True)
class Stream:
    """A layout plus the items it reads, producing [T, len(slots)] batches on demand.

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
    # Per chunk, how many of `slots` (from the first) it holds; None = all of them.
    widths: np.ndarray | None = None

    @property
    def n_chunks(self) -> int:
        return self.plan.n_steps // self.bptt

    def width(self, k: int) -> int:
        return len(self.slots) if self.widths is None else int(self.widths[k])

    def chunk(self, k: int) -> Batch:
        p, t = self.plan, self.bptt
        steps = np.arange(k * t, (k + 1) * t, dtype=np.int64)[:, None]
        slots = np.arange(self.slots.start, self.slots.start + self.width(k), dtype=np.int64)[None, :]
        if not len(p.seq):
            empty = np.zeros((t, slots.shape[1]), np.int32)
            no_values = None if self.values is None else empty.astype(np.float32)
            no_events = None if self.events is None else empty - 1
            none = empty.astype(bool)
            return Batch(empty, empty, none, none, None, no_values, no_values, no_events, no_events, empty - 1)
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
        reset = mask & (offset == 0)
        return Batch(inputs, targets, mask, reset, None, in_v, out_v, in_e, out_e, np.where(mask, src + 1, -1))

    def chunks(self, start: int = 0) -> Iterator[Batch]:
        for k in range(start, self.n_chunks):
            yield self.chunk(k)


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


# ---------------------------------------------------------------------------- training epochs


class TrainData(NamedTuple):
    """What this process reads of the training split: every sequence's length, and the items
    of either all sequences (one process) or, per epoch, only those its slots run."""

    data_dir: Path
    lengths: np.ndarray
    seqs: Sequences | None
    values: bool = False
    events: tuple[str, ...] | None = None


def load_train_data(
    data_dir: Path, values: bool = False, events: tuple[str, ...] | None = None, *, per_epoch: bool = False
) -> TrainData:
    """All of the training split, or with `per_epoch` (a multi-process run) only the lengths:
    each epoch then reads just the sequences this process's slots run."""
    if per_epoch:
        return TrainData(data_dir, read_lengths(data_dir, "train"), None, values, events)
    seqs = read_sequences(data_dir, "train", values=values, events=events)
    return TrainData(data_dir, seqs.lengths, seqs, values, events)


def epoch_stream(
    cfg: RunConfig,
    data: TrainData,
    epoch: int,
    slots: range,
    plan: Layout | None = None,
    narrow_by: int | None = None,
    subset: np.ndarray | None = None,
) -> Stream:
    """The epoch's stream for `slots`: a function of (seed, epoch) alone, so a resumed run
    replays exactly the batches an uninterrupted one would see, and every process agrees on
    the layout without talking to the others. `plan`: the unshuffled layout, if already made.
    `narrow_by`: run the epoch's tail on narrower batches, in multiples of this (the device
    count; the caller passes it only where one process holds all slots). `subset`: the indices
    of the sequences to run (in stored order; None = all)."""
    tc = cfg.train
    if tc.shuffle:
        n = len(data.lengths) if subset is None else len(subset)
        order = np.random.default_rng([tc.seed, epoch]).permutation(n)
        plan = layout(data.lengths, tc.batch_size, tc.bptt, order if subset is None else subset[order])
    elif plan is None:
        # Prepared sequences are stored by start time; GRU4Rec trains in that order.
        plan = layout(data.lengths, tc.batch_size, tc.bptt, subset)
    widths = None if narrow_by is None else chunk_widths(plan, tc.bptt, narrow_by)
    if data.seqs is not None:
        seqs = data.seqs
        return Stream(plan, seqs.items, seqs.offsets[:-1], tc.bptt, slots, seqs.values, seqs.events, widths)
    wanted = np.zeros(len(data.lengths), bool)
    wanted[plan.sequences_in(slots)] = True
    mine = read_sequences(data.data_dir, "train", wanted, values=data.values, events=data.events)
    first = np.full(len(data.lengths), -1, np.int64)
    first[wanted] = mine.offsets[:-1]
    return Stream(plan, mine.items, first, tc.bptt, slots, mine.values, mine.events, widths)


def validation_subset(seqs: Sequences, n: int, seed: int) -> Sequences:
    """At most `n` sequences, drawn with a fixed seed (kept in stored order); all when n is 0."""
    if not n or n >= len(seqs):
        return seqs
    keep = np.sort(np.random.default_rng([seed, 2]).choice(len(seqs), n, replace=False))
    lengths = seqs.lengths[keep]
    idx = (
        np.repeat(seqs.offsets[keep], lengths)
        + np.arange(lengths.sum())
        - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    values = None if seqs.values is None else seqs.values[idx]
    events = None if seqs.events is None else seqs.events[idx]
    scored = None if seqs.scored is None else seqs.scored[idx]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return Sequences(items=seqs.items[idx], offsets=offsets, values=values, events=events, scored=scored)


def chunk_negatives(cfg: RunConfig, cdf: np.ndarray, epoch: int, chunk: int) -> np.ndarray:
    """The chunk's shared negatives, seeded by (seed, epoch, chunk): the same on every process
    and on resume, without holding an epoch's worth in memory."""
    n_sample = 0 if cfg.train.full_softmax or not cfg.model.predicts_items else cfg.train.n_sample
    return sample_negatives(cdf, n_sample, np.random.default_rng([cfg.train.seed, epoch, 1, chunk]))


def prefetch(items: Iterator[T], depth: int) -> Generator[T, None, None]:
    """Run the iterator `depth` items ahead in a background thread (batch assembly and the
    host-to-device copy overlap the device's work). Exceptions surface in the consumer."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        # Every put gives up once the consumer has stopped (Ctrl-C): a blocking put on a full
        # queue would never return, and the consumer's join below would wait for it forever.
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
            put((done, None))
        except BaseException as exc:  # re-raised in the consumer
            put((done, exc))

    thread = threading.Thread(target=produce, daemon=True, name="rnnrec-prefetch")
    thread.start()
    try:
        while True:
            x, exc = q.get()
            if exc is not None:
                raise exc
            if x is done:
                return
            yield x
    finally:
        stop.set()
        thread.join()
