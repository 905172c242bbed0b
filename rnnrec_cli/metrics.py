"""Full-catalogue ranking metrics with an explicit tie policy.

A rank is 1-based: rank 1 means the target scored highest. Under the conservative policy every
item scoring at least as high as the target (other than the target) ranks above it, so a model
that gives all items the same score gets the worst rank, not the best.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from rnnrec_cli.config import Ties


def target_ranks(scores: jnp.ndarray, targets: jnp.ndarray, ties: Ties = "conservative") -> jnp.ndarray:
    """Rank of each row's target among all columns. Jittable.

    Args:
      scores: <float>[B, N] scores over the full catalogue.
      targets: <int32>[B] target column per row.
    Returns:
      <float32>[B] ranks (half-integers possible under the median policy).
    """
    target_score = jnp.take_along_axis(scores, targets[:, None], axis=1)
    higher = jnp.sum(scores > target_score, axis=1)
    tied = jnp.sum(scores == target_score, axis=1) - 1
    match ties:
        case "conservative":
            rank = higher + tied + 1
        case "optimistic":
            rank = higher + 1
        case "median":
            rank = higher + tied / 2 + 1
    return rank.astype(jnp.float32)


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


def popularity_ranks(counts: np.ndarray, targets: np.ndarray, ties: Ties = "conservative") -> np.ndarray:
    """Ranks under the global popularity baseline (score = training count), same tie policy."""
    sorted_counts = np.sort(counts)
    c = counts[targets]
    n = len(counts)
    higher = n - np.searchsorted(sorted_counts, c, side="right")
    tied = np.searchsorted(sorted_counts, c, side="right") - np.searchsorted(sorted_counts, c, side="left") - 1
    match ties:
        case "conservative":
            rank = higher + tied + 1
        case "optimistic":
            rank = higher + 1
        case "median":
            rank = higher + tied / 2 + 1
    return rank.astype(np.float32)
