"""Simple baselines, ranked on the same targets and the full catalogue as the model.

Each baseline scores every item at every target position of a sequence from the sequence's
prefix alone. Ties in a baseline's own score are broken by global popularity (a common, fair
fallback), and only then by the chosen tie policy; without it, a sparse baseline's many
zero-score items would all tie with an unseen target.

- pop: global popularity (training counts).
- spop: how often the item occurred in the prefix so far, then popularity.
- markov: first-order transition counts from the current item (sequential rules of length 1).
- iknn: item-kNN, cosine similarity of items over training sessions (GRU4Rec's baseline).
- sknn: session-kNN (Jannach & Ludewig 2017): among the `sample` most recent training sessions
  sharing an item with the prefix, the `k` most similar (cosine over item sets) vote for their
  items with their similarity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from rnnrec_cli.config import Ties
from rnnrec_cli.data.sequences import Positions, Sequences, positions
from rnnrec_cli.evaluation.metrics import Scores, rank_with_ties
from rnnrec_cli.options import EvalOptions, ScoreOptions

BASELINES = EvalOptions.baselines
# Positions scored at once (their sparse scores are held together).
ROWS_PER_BLOCK = 2048


def _ordered_u32(x: np.ndarray) -> np.ndarray:
    """float32 values as uint32 in the same order (-0.0 reads as 0.0; -inf is the smallest)."""
    bits = (np.asarray(x, np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))


def sort_keys(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """<uint64>[b, N] one key per score that orders items by (primary, then secondary): the
    primary score (as float32, whose precision the baselines' scores never need beyond) in the
    high 32 bits, the secondary (training counts; else any float, order-preserved) in the low
    32. Comparing keys is the lexicographic comparison, in one pass and without sorting."""
    return (_ordered_u32(primary).astype(np.uint64) << np.uint64(32)) | _secondary_keys(secondary)[None, :]


def _secondary_keys(secondary: np.ndarray) -> np.ndarray:
    """<uint64>[N] the low half of `sort_keys`: counts as they are, other values order-preserved."""
    sec = np.asarray(secondary)
    exact = np.issubdtype(sec.dtype, np.integer) or bool(np.all(sec == np.round(sec)))
    if exact and sec.min(initial=0) >= 0 and sec.max(initial=0) < 2**32:
        return sec.astype(np.uint64)
    return _ordered_u32(sec).astype(np.uint64)


def _ranks_from_keys(keys: np.ndarray, targets: np.ndarray, ties: Ties) -> np.ndarray:
    own = keys[np.arange(len(targets)), targets][:, None]
    higher = (keys > own).sum(1)
    tied = (keys == own).sum(1) - 1
    return np.asarray(rank_with_ties(higher, tied, ties), np.float32)


def lexicographic_ranks(primary: np.ndarray, secondary: np.ndarray, targets: np.ndarray, ties: Ties) -> np.ndarray:
    """Ranks of targets ordered by (primary score, then secondary score), tie policy last.

    Args:
      primary: <float>[b, N] scores; secondary: <float>[N] tie-breaker shared by all rows;
      targets: <int>[b].
    """
    return _ranks_from_keys(sort_keys(primary, secondary), targets, ties)


def _session_item_matrix(train: Sequences, n_items: int) -> sp.csr_matrix:
    """Binary sessions x items matrix of the training sequences."""
    rows = np.repeat(np.arange(len(train)), train.lengths)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, train.items)), shape=(len(train), n_items))
    x.data[:] = 1.0  # duplicates inside a session count once
    return x


def _prefix_matrix(test: Sequences, pos: Positions, block: slice, n_items: int) -> sp.csr_matrix:
    """<binary>[rows, N]: the items of each position's prefix."""
    starts, ends = pos.start[block], pos.end[block]
    lens = ends - starts
    rows = np.repeat(np.arange(len(lens)), lens)
    idx = np.repeat(starts, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
    m = sp.csr_matrix((np.ones(len(idx), np.float32), (rows, test.items[idx])), shape=(len(lens), n_items))
    return m


class _Scorer:
    """Builds the sparse [rows, N] primary scores (float32, all >= 0) of a block of positions."""

    def __init__(self, name: str, train: Sequences, n_items: int, k: int, sample: int) -> None:
        self.name, self.n_items, self.k, self.sample = name, n_items, k, sample
        if name == "markov":
            pairs = positions(train)
            src, dst = pairs.current, pairs.target
            self.table = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(n_items, n_items))
        elif name == "iknn":
            x = _session_item_matrix(train, n_items)
            co = (x.T @ x).tocsr()
            co.setdiag(0)
            co.eliminate_zeros()
            norm = np.sqrt(np.asarray(x.sum(0)).ravel())
            inv = sp.diags(1.0 / np.maximum(norm, 1e-12))
            self.table = (inv @ co @ inv).tocsr()
        elif name == "sknn":
            self.sessions = _session_item_matrix(train, n_items)
            self.sessions_t = self.sessions.T.tocsr()
            self.session_norm = np.sqrt(np.asarray(self.sessions.sum(1)).ravel())

    def __call__(self, test: Sequences, pos: Positions, block: slice) -> sp.csr_matrix:
        n_rows = block.stop - block.start
        if self.name == "pop":
            return sp.csr_matrix((n_rows, self.n_items), dtype=np.float32)
        if self.name in ("markov", "iknn"):
            return self.table[pos.current[block]]
        prefix = _prefix_matrix(test, pos, block, self.n_items)
        if self.name == "spop":
            return prefix  # counts of each item in the prefix
        return self._sknn(prefix)

    def _sknn(self, prefix: sp.csr_matrix) -> sp.csr_matrix:
        binary = prefix.copy()
        binary.data[:] = 1.0
        overlap = (binary @ self.sessions_t).tocsr()  # [rows, sessions]: shared items
        q_norm = np.sqrt(np.asarray(binary.sum(1)).ravel())
        rows, cols, vals = [], [], []
        for r in range(overlap.shape[0]):
            lo, hi = overlap.indptr[r], overlap.indptr[r + 1]
            cand, shared = overlap.indices[lo:hi], overlap.data[lo:hi]
            if len(cand) > self.sample:
                # Sessions are numbered by start time: the most recent have the largest ids.
                keep = np.argpartition(-cand, self.sample - 1)[: self.sample]
                cand, shared = cand[keep], shared[keep]
            sim = shared / (q_norm[r] * self.session_norm[cand])
            if len(cand) > self.k:
                top = np.argpartition(-sim, self.k - 1)[: self.k]
                cand, sim = cand[top], sim[top]
            rows.append(np.full(len(cand), r))
            cols.append(cand)
            vals.append(sim)
        weights = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(overlap.shape[0], self.sessions.shape[0]),
        )
        return (weights @ self.sessions).tocsr()


class _CountOrder(NamedTuple):
    """The training counts as sort keys, once per evaluation: the keys, sorted, and the items
    by popularity (ties: lower index first)."""

    keys: np.ndarray
    ascending: np.ndarray
    popular: np.ndarray


def _count_order(counts: np.ndarray) -> _CountOrder:
    keys = _secondary_keys(counts)
    return _CountOrder(keys, np.sort(keys), np.lexsort((np.arange(len(keys)), ~keys)))


def _score_block(
    scores: sp.csr_matrix,
    order: _CountOrder,
    targets: np.ndarray,
    prefix: sp.csr_matrix | None,
    opts: ScoreOptions,
    negatives: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks, top-k and sampled ranks for one block of positions, by (score, then training
    count), from the sparse scores alone: every item without an entry scores 0, the lowest
    score, so its place among the others follows from the counts (`sort_keys` order, exactly
    as the dense comparison would give). Items seen earlier in the sequence, with
    `exclude_seen`, become entries scoring -inf, and a seen target ranks infinitely low."""
    n_rows, n_items = scores.shape
    rows = np.arange(n_rows)
    s = sp.csr_matrix(scores, dtype=np.float32)
    s.sum_duplicates()
    s.eliminate_zeros()
    if prefix is not None:
        seen = sp.csr_matrix(prefix, dtype=np.float32)
        seen.data[:] = 1.0
        unseen = s - s.multiply(seen)
        unseen.eliminate_zeros()
        s = (
            unseen + sp.csr_matrix((np.full(seen.nnz, -np.inf, np.float32), seen.indices, seen.indptr), s.shape)
        ).tocsr()
    count_keys = order.keys
    row_of = np.repeat(rows, np.diff(s.indptr))
    key_e = (_ordered_u32(s.data).astype(np.uint64) << np.uint64(32)) | count_keys[s.indices]
    p_t = np.asarray(s[rows, targets]).ravel().astype(np.float32)
    key_t = (_ordered_u32(p_t).astype(np.uint64) << np.uint64(32)) | count_keys[targets]
    per_row = lambda hit: np.bincount(row_of, weights=hit, minlength=n_rows)  # noqa: E731
    higher = per_row(key_e > key_t[row_of])
    tied = per_row(key_e == key_t[row_of]) - (p_t != 0)
    # A target scoring 0: the items without an entry (all score 0) above or level with it are
    # those with a larger or equal count, found among all items by count, less the entries.
    zero = p_t == 0
    by_count = order.ascending
    c_t, c_e = count_keys[targets], count_keys[s.indices]
    above = n_items - np.searchsorted(by_count, c_t, side="right")
    level = np.searchsorted(by_count, c_t, side="right") - np.searchsorted(by_count, c_t, side="left")
    higher += np.where(zero, above - per_row(c_e > c_t[row_of]), 0)
    tied += np.where(zero, level - 1 - per_row(c_e == c_t[row_of]), 0)
    ranks = np.asarray(rank_with_ties(higher, tied, opts.ties), np.float32)
    ranks[np.isneginf(p_t)] = np.inf
    topk = _top_k(s, key_e, order.popular, min(opts.k, n_items))
    sampled = np.zeros(n_rows, np.float32)
    if opts.n_sampled:
        vals = np.asarray(s[np.repeat(rows, opts.n_sampled), negatives.ravel()]).reshape(negatives.shape)
        key_n = (_ordered_u32(vals).astype(np.uint64) << np.uint64(32)) | count_keys[negatives]
        # Conservative: a sampled item ranks above the target unless strictly below it.
        sampled = (1 + (key_n >= key_t[:, None]).sum(1)).astype(np.float32)
    return ranks, topk, sampled


def _top_k(s: sp.csr_matrix, key_e: np.ndarray, popular: np.ndarray, k: int) -> np.ndarray:
    """<int32>[rows, k]: each row's positive entries by key, then the most popular items
    without an entry (ties among equal counts: lower index first), then, when the catalogue
    runs out, the excluded (-inf) entries."""
    out = np.zeros((s.shape[0], k), np.int32)
    for r in range(s.shape[0]):
        lo, hi = s.indptr[r], s.indptr[r + 1]
        cols, keys, positive = s.indices[lo:hi], key_e[lo:hi], s.data[lo:hi] > 0
        best = _largest(cols[positive], keys[positive], k)
        if len(best) < k:
            fill = popular[: k + (hi - lo)]
            fill = fill[~np.isin(fill, cols)][: k - len(best)]
            best = np.concatenate([best, fill])
        if len(best) < k:
            best = np.concatenate([best, _largest(cols[~positive], keys[~positive], k - len(best))])
        out[r] = best
    return out


def _largest(cols: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """The (at most) k columns with the largest keys, largest first."""
    if len(cols) > k:
        part = np.argpartition(keys, len(keys) - k)[len(keys) - k :]
        cols, keys = cols[part], keys[part]
    return cols[np.argsort(keys, kind="stable")[::-1]]


def baseline_scores(
    name: str,
    train: Sequences,
    test: Sequences,
    counts: np.ndarray,
    opts: ScoreOptions | None = None,
    *,
    k: int = 100,
    sample: int = 500,
    seed: int = 0,
) -> Scores:
    """Ranks, top-k lists and sampled ranks of every target of `test`, in sequence order."""
    opts = opts or ScoreOptions()
    if name not in BASELINES:
        raise ValueError(name)
    counts = np.asarray(counts)
    n_items = len(counts)
    pos = positions(test)
    scorer = _Scorer(name, train, n_items, k, sample)
    n = len(pos.target)
    ranks = np.zeros(n, np.float32)
    topk = np.zeros((n, opts.k), np.int32)
    sampled = np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    order = _count_order(counts)
    for lo in range(0, n, ROWS_PER_BLOCK):
        block = slice(lo, min(n, lo + ROWS_PER_BLOCK))
        prefix = _prefix_matrix(test, pos, block, n_items) if opts.exclude_seen else None
        negatives = rng.integers(0, n_items, (block.stop - lo, opts.n_sampled))
        ranks[block], topk[block], sampled[block] = _score_block(
            scorer(test, pos, block), order, pos.target[block], prefix, opts, negatives
        )
    return Scores(ranks, topk, sampled)


# ---------------------------------------------------------------------------- value baselines

VALUE_BASELINES = ("global-mean", "item-mean", "history-mean")


def value_baseline(name: str, train: Sequences, seqs: Sequences) -> np.ndarray:
    """<float32>[n_targets] a simple prediction of each target event's value (sequence order).

    - global-mean: the mean value of the training events.
    - item-mean: the target item's mean value in training (the global mean for items without).
    - history-mean: the mean of the earlier values in the same sequence (a user's or session's
      own level so far; the global mean before any).
    Missing values (NaN) are ignored everywhere.
    """
    assert train.values is not None and seqs.values is not None
    known = ~np.isnan(train.values)
    mean = float(train.values[known].mean()) if known.any() else 0.0
    pos = positions(seqs)
    match name:
        case "global-mean":
            return np.full(len(pos.target), mean, np.float32)
        case "item-mean":
            n = int(max(train.items.max(initial=0), seqs.items.max(initial=0))) + 1
            sums = np.bincount(train.items[known], train.values[known], minlength=n)
            counts = np.bincount(train.items[known], minlength=n)
            per_item = np.where(counts > 0, sums / np.maximum(counts, 1), mean)
            return per_item[pos.target].astype(np.float32)
        case "history-mean":
            v = np.nan_to_num(seqs.values)
            has = (~np.isnan(seqs.values)).astype(np.float64)
            # Running sums over the packed events, restarted per sequence by subtraction.
            csum, ccount = np.r_[0, np.cumsum(v)], np.r_[0, np.cumsum(has)]
            total = csum[pos.end] - csum[pos.start]
            count = ccount[pos.end] - ccount[pos.start]
            return np.where(count > 0, total / np.maximum(count, 1), mean).astype(np.float32)
    raise ValueError(f"unknown value baseline {name!r}")
