"""Session-parallel mini-batches (GRU4Rec): B slots each walk through sequences back to back.

A slot takes the next sequence as soon as its current one ends, and the hidden state of that slot
is reset once, at the new sequence's first step. The stream is cut into chunks of T steps for
truncated back-propagation; the hidden state is carried across chunks by the caller. Only the
very end of the stream, where slots run dry, is padded (mask False).
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
    hidden state before the step (first step of a sequence).
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    reset: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.inputs, self.targets, self.mask, self.reset


@dataclass(frozen=True)
class Stream:
    """The whole epoch's stream, [n_steps, B] arrays with n_steps a multiple of T.

    target_pos: <int64> index of each step's target in the packed `Sequences.items` (-1 on
    padding), so per-step results can be put back in sequence order.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    reset: np.ndarray
    bptt: int
    target_pos: np.ndarray

    @property
    def n_chunks(self) -> int:
        return self.inputs.shape[0] // self.bptt

    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        t = self.bptt
        for k in range(start, self.n_chunks):
            sl = slice(k * t, (k + 1) * t)
            yield Chunk(self.inputs[sl], self.targets[sl], self.mask[sl], self.reset[sl])


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


def session_parallel(seqs: Sequences, batch_size: int, bptt: int, order: np.ndarray | None = None) -> Stream:
    """Lay sequences (in `order`, default as stored) into a session-parallel stream.

    Sequences shorter than 2 give no (input, target) pair and are skipped.
    """
    idx = np.arange(len(seqs)) if order is None else np.asarray(order)
    lengths = seqs.lengths[idx]
    idx = idx[lengths >= 2]
    n_pairs = seqs.lengths[idx] - 1
    slot, start = assign_slots(n_pairs, batch_size)
    end = int((start + n_pairs).max()) if len(idx) else 0
    n_steps = max(1, -(-end // bptt)) * bptt
    inputs = np.zeros((n_steps, batch_size), np.int32)
    targets = np.zeros((n_steps, batch_size), np.int32)
    mask = np.zeros((n_steps, batch_size), bool)
    reset = np.zeros((n_steps, batch_size), bool)
    target_pos = np.full((n_steps, batch_size), -1, np.int64)
    total = int(n_pairs.sum())
    if total:
        first = np.cumsum(n_pairs) - n_pairs
        j = np.arange(total) - np.repeat(first, n_pairs)
        t = np.repeat(start, n_pairs) + j
        s = np.repeat(slot, n_pairs)
        src = np.repeat(seqs.offsets[idx], n_pairs) + j
        inputs[t, s] = seqs.items[src]
        targets[t, s] = seqs.items[src + 1]
        mask[t, s] = True
        target_pos[t, s] = src + 1
        reset[start, slot] = True
    return Stream(inputs, targets, mask, reset, bptt, target_pos)


def longest_first(seqs: Sequences) -> np.ndarray:
    """An order that packs the stream tightly (for evaluation, where order does not matter)."""
    return np.argsort(-seqs.lengths, kind="stable")


def sampling_distribution(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Probability of drawing each item as a shared negative: support^alpha, normalised."""
    weights = np.asarray(counts, np.float64) ** alpha
    return weights / weights.sum()


def sample_negatives(probs: np.ndarray, n_chunks: int, n_sample: int, rng: np.random.Generator) -> np.ndarray:
    """A whole epoch's shared negatives at once: <int32>[n_chunks, n_sample].

    Drawn in bulk by inverting the cumulative distribution, so sampling costs one vectorised call
    per epoch instead of work in every step.
    """
    cdf = np.cumsum(probs)
    draws = np.searchsorted(cdf, rng.random((n_chunks, n_sample)) * cdf[-1], side="right")
    return np.minimum(draws, len(probs) - 1).astype(np.int32)
