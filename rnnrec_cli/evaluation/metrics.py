"""Full-catalogue ranking metrics with an explicit tie policy.

A rank is 1-based: rank 1 means the target scored highest. Under the conservative policy every
item scoring at least as high as the target (other than the target) ranks above it, so a model
that gives all items the same score gets the worst rank, not the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnrec_cli.config import Ties


@dataclass(frozen=True)
class Scores:
    """A model's or baseline's results per target event, in sequence order (see
    sequences.positions)."""

    ranks: np.ndarray  # <float32>[n]; inf where the target was excluded as seen
    topk: np.ndarray  # <int32>[n, k]
    sampled: np.ndarray  # <float32>[n] rank among sampled items (zeros unless asked for)
    grid: np.ndarray | None = None  # <float32>[G, n] ranks under each repeat-boost weight scored


def popularity_groups(counts: np.ndarray) -> np.ndarray:
    """<int64>[N] per item: 0 head (the top 20% of items by training count), 1 mid (the next
    30%), 2 tail (the bottom 50%)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    n = len(order)
    return np.where(rank < 0.2 * n, 0, np.where(rank < 0.5 * n, 1, 2))


def rank_with_ties(higher: Any, tied_others: Any, ties: Ties) -> Any:
    """1-based rank from the number of items scoring higher than the target and the number tied
    with it (the target excluded). Works on NumPy and JAX arrays alike."""
    match ties:
        case "conservative":
            return higher + tied_others + 1
        case "optimistic":
            return higher + 1
        case "median":
            return higher + tied_others / 2 + 1


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,5,10,20' -> (1, 5, 10, 20); raises ValueError on anything else."""
    ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    if not ks or ks[0] < 1:
        raise ValueError(text)
    return ks


def summarize(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Micro-averaged Recall@K (= hit rate), MRR@K and NDCG@K over target events.

    MRR@K and NDCG@K count 0 for a target ranked beyond K.
    """
    ranks = np.asarray(ranks, np.float64)
    out: dict[str, float] = {}
    if ranks.size == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in ("recall", "mrr", "ndcg")}
    for k in ks:
        hit = ranks <= k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    return out


def beyond_accuracy(topk: np.ndarray, counts: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Properties of the top-K lists, over all target positions.

    coverage@K: share of the catalogue in at least one list; gini@K: Gini index of how often each
    item is recommended (0 = all equally, 1 = one item always); pop@K: mean training count of
    recommended items divided by the largest count; tail@K: share of recommendations outside the
    head (see `popularity_groups`).
    """
    n_items = len(counts)
    counts = np.asarray(counts, np.float64)
    head = popularity_groups(counts) == 0
    out: dict[str, float] = {}
    for k in ks:
        recs = topk[:, :k].ravel()
        freq = np.bincount(recs, minlength=n_items).astype(np.float64)
        out[f"coverage@{k}"] = float((freq > 0).mean())
        out[f"gini@{k}"] = gini(freq)
        out[f"pop@{k}"] = float(counts[recs].mean() / counts.max()) if recs.size else float("nan")
        out[f"tail@{k}"] = float((~head[recs]).mean()) if recs.size else float("nan")
    return out


def gini(values: np.ndarray) -> float:
    """Gini index of non-negative values (0 = equal, -> 1 = concentrated)."""
    v = np.sort(np.asarray(values, np.float64))
    n = len(v)
    if n == 0 or v.sum() == 0:
        return 0.0
    cum = np.cumsum(v)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def breakdown(ranks: np.ndarray, groups: np.ndarray, labels: Sequence[str], k: int) -> dict[str, dict[str, float]]:
    """Recall@k and MRR@k per group (group i has label labels[i]), with the number of targets."""
    out = {}
    for i, label in enumerate(labels):
        sel = ranks[groups == i]
        if sel.size:
            m = summarize(sel, [k])
            out[label] = {"n": int(sel.size), f"recall@{k}": m[f"recall@{k}"], f"mrr@{k}": m[f"mrr@{k}"]}
    return out


def per_sequence_sums(
    ranks: np.ndarray, seq: np.ndarray, n_seqs: int, ks: Sequence[int]
) -> tuple[np.ndarray, list[str]]:
    """[n_seqs, n_metrics] sums of each per-event metric within each sequence (for bootstrap)."""
    names, cols = [], []
    r = np.asarray(ranks, np.float64)
    for k in ks:
        hit = r <= k
        for name, values in (
            (f"recall@{k}", hit.astype(np.float64)),
            (f"mrr@{k}", np.where(hit, 1.0 / r, 0.0)),
            (f"ndcg@{k}", np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)),
        ):
            names.append(name)
            cols.append(np.bincount(seq, weights=values, minlength=n_seqs))
    return np.stack(cols, axis=1), names


def bootstrap_ci(
    sums: np.ndarray, n_events: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> np.ndarray:
    """Percentile bootstrap over sequences of micro-averaged metrics: [n_metrics, 2] bounds.

    sums: [n_seqs, n_metrics] per-sequence metric sums; n_events: [n_seqs] targets per sequence.
    Resampling whole sequences keeps the dependence between events of one sequence.
    """
    rng = np.random.default_rng(seed)
    n = len(n_events)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # [n_boot, n]
    stats = (weights @ sums) / np.maximum(weights @ n_events, 1)[:, None]
    alpha = (1 - level) / 2
    return np.quantile(stats, [alpha, 1 - alpha], axis=0).T


def paired_bootstrap(
    sums_a: np.ndarray, sums_b: np.ndarray, n_events: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired test of A - B over the same sequences: (difference, [n_metrics, 2] 95% CI, p-value).

    The p-value is two-sided: twice the share of resamples whose difference has the other sign.
    """
    rng = np.random.default_rng(seed)
    n = len(n_events)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    denom = np.maximum(weights @ n_events, 1)[:, None]
    diffs = (weights @ sums_a - weights @ sums_b) / denom
    observed = (sums_a.sum(0) - sums_b.sum(0)) / max(n_events.sum(), 1)
    ci = np.quantile(diffs, [0.025, 0.975], axis=0).T
    other_side = np.where(observed >= 0, (diffs <= 0).mean(0), (diffs >= 0).mean(0))
    return observed, ci, np.minimum(1.0, 2 * other_side)


def p_text(p: float) -> str:
    """How a p-value is printed everywhere: `p < 0.001` below what 3 decimals can show (a
    bootstrap p of 0 means "below 1/n_boot", never exactly 0), else `p = 0.042`."""
    if p != p:
        return "p = –"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def value_errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE and MAE over the targets that have a value (NaN actuals are skipped)."""
    known = ~np.isnan(actual)
    err = np.asarray(pred, np.float64)[known] - np.asarray(actual, np.float64)[known]
    if not len(err):
        return {"rmse": float("nan"), "mae": float("nan"), "n": 0}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": len(err)}


def event_accuracy(probs: np.ndarray, actual: np.ndarray) -> float:
    """Share of targets (with a known type, actual >= 0) whose most probable type is right."""
    known = actual >= 0
    if not known.any():
        return float("nan")
    return float(np.mean(np.argmax(probs[known], axis=1) == actual[known]))
