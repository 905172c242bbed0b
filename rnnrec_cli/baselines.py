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

import numpy as np
import scipy.sparse as sp

from rnnrec_cli.config import Ties
from rnnrec_cli.metrics import Scores, rank_with_ties
from rnnrec_cli.options import EvalOptions, ScoreOptions
from rnnrec_cli.sequences import Positions, Sequences, positions

BASELINES = EvalOptions.baselines
ROWS_PER_BLOCK = 512


def lexicographic_ranks(primary: np.ndarray, secondary: np.ndarray, targets: np.ndarray, ties: Ties) -> np.ndarray:
    """Ranks of targets ordered by (primary score, then secondary score), tie policy last.

    Args:
      primary: <float>[b, N] scores; secondary: <float>[N] tie-breaker shared by all rows;
      targets: <int>[b].
    """
    rows = np.arange(len(targets))
    p_t = primary[rows, targets][:, None]
    s_t = secondary[targets][:, None]
    same = primary == p_t
    higher = (primary > p_t).sum(1) + (same & (secondary[None, :] > s_t)).sum(1)
    tied = (same & (secondary[None, :] == s_t)).sum(1) - 1
    return np.asarray(rank_with_ties(higher, tied, ties), np.float32)


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
    """Builds dense [rows, N] primary scores for a block of positions."""

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

    def __call__(self, test: Sequences, pos: Positions, block: slice) -> np.ndarray:
        if self.name in ("markov", "iknn"):
            return self.table[pos.current[block]].toarray()
        prefix = _prefix_matrix(test, pos, block, self.n_items)
        if self.name == "spop":
            return prefix.toarray()  # counts of each item in the prefix
        return self._sknn(prefix)

    def _sknn(self, prefix: sp.csr_matrix) -> np.ndarray:
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
        return (weights @ self.sessions).toarray()


def _rows_per_block(n_items: int) -> int:
    # Dense [rows, N] float64 scores: keep a block near 16M entries (128 MB).
    return max(1, min(ROWS_PER_BLOCK, (1 << 24) // max(n_items, 1)))


def _score_block(
    primary: np.ndarray,
    counts: np.ndarray,
    targets: np.ndarray,
    prefix: sp.csr_matrix | None,
    opts: ScoreOptions,
    negatives: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks, top-k and sampled ranks for one block of positions, ties broken by popularity."""
    rows = np.arange(len(targets))
    target_seen = np.zeros(len(targets), bool)
    if prefix is not None:  # exclude items seen earlier in the sequence
        r, c = prefix.nonzero()
        target_seen = np.asarray(prefix[rows, targets]).ravel() > 0
        primary = primary.copy()
        primary[r, c] = -np.inf
    ranks = lexicographic_ranks(primary, counts, targets, opts.ties)
    ranks[target_seen] = np.inf
    # Popularity breaks ties in the top-k as in the ranks; it is scaled below any score gap.
    finite = np.where(np.isfinite(primary), primary, np.nan)
    gaps = np.diff(np.unique(finite[~np.isnan(finite)])) if np.isfinite(primary).any() else np.array([])
    scale = (gaps.min() if gaps.size else 1.0) / (counts.max() + 1.0) / 2
    composite = primary + scale * counts[None, :]
    k = min(opts.k, primary.shape[1])
    part = np.argpartition(-composite, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(composite, part, 1), axis=1, kind="stable")
    topk = np.take_along_axis(part, order, 1).astype(np.int32)
    sampled = np.zeros(len(targets), np.float32)
    if opts.n_sampled:
        t_p, t_s = primary[rows, targets][:, None], counts[targets][:, None]
        n_p, n_s = np.take_along_axis(primary, negatives, 1), counts[negatives]
        # Conservative: a sampled item ranks above the target unless strictly below it.
        sampled = (1 + ((n_p > t_p) | ((n_p == t_p) & (n_s >= t_s))).sum(1)).astype(np.float32)
    return ranks, topk, sampled


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
    counts = np.asarray(counts, np.float64)
    n_items = len(counts)
    pos = positions(test)
    scorer = _Scorer(name, train, n_items, k, sample)
    n = len(pos.target)
    ranks = np.zeros(n, np.float32)
    topk = np.zeros((n, opts.k), np.int32)
    sampled = np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    step = _rows_per_block(n_items)
    for lo in range(0, n, step):
        block = slice(lo, min(n, lo + step))
        primary = np.zeros((block.stop - lo, n_items)) if name == "pop" else scorer(test, pos, block).astype(np.float64)
        prefix = _prefix_matrix(test, pos, block, n_items) if opts.exclude_seen else None
        negatives = rng.integers(0, n_items, (block.stop - lo, opts.n_sampled))
        ranks[block], topk[block], sampled[block] = _score_block(
            primary, counts, pos.target[block], prefix, opts, negatives
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
