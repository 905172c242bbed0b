"""The repeat boost: a sequence's own items ranked higher, the more often it holds them.

On some session data users go back to items of their own session again and again (Tmall: a
session-popularity baseline beats the GRU there). A GRU trained on those sessions predicts their
repeats from memory, not as a rule, so on new sessions it ranks the session's own items too low.
The boost adds `beta * sd * log(1 + c)` to an item's score, where c is the times the item occurs
among the sequence's events before the target and sd the standard deviation of that row's
scores over the whole catalogue: scaled so, one beta means the same for any model. beta is a
choice made on held-out data (training chooses it, see training.holdout; `evaluate --repeat
auto` on the validation split): fitted on the training sequences, which the model knows by
heart, it would always be 0.

These are pure functions, shared by evaluation (item blocks) and predict (dense scores).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The betas `--repeat auto` tries on the validation split. 1000 ranks the sequence's own items
# first (by count, then by score): no model score is 1000 standard deviations above another.
GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 1000.0)


class Boost(NamedTuple):
    """The boost's inputs to the item-block scorer: <float32>[R, L] each seen entry's share of
    log(1 + count) (`occurrence_increments`), the weights beta ([G]: one, or the grid a choice
    scores) and the catalogue's [H+1, H+1] score covariance, for each row's score sd."""

    inc: jax.Array
    beta: jax.Array
    cov: jax.Array


def seen_before(items: np.ndarray, first: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """<int32>[R, width] the items from `first` up to (not including) each target at `pos`, -1
    past them. `width` is a power of two (at least 8) that holds the longest, so few shapes
    are compiled."""
    col = np.arange(width)
    idx = np.minimum(first[:, None] + col, len(items) - 1)
    return np.where(col < (pos - first)[:, None], items[idx], -1).astype(np.int32)


def catalogue_cov(kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """<float32>[H+1, H+1] the covariance of the output layer's rows [w_i, b_i] over the items
    (pass the real items only, no padding): the variance of a row's scores h.w_i + b_i over
    the catalogue is [h, 1] C [h, 1], so no pass over the scores is needed for it."""
    x = jnp.concatenate([kernel, bias[:, None]], axis=1)
    x = x - jnp.mean(x, axis=0)
    return x.T @ x / x.shape[0]


def score_sd(h: jax.Array, cov: jax.Array) -> jax.Array:
    """<float32>[R] the standard deviation of each row's scores over the catalogue."""
    x = jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], axis=1)
    return jnp.sqrt(jnp.maximum(jnp.einsum("ri,ij,rj->r", x, cov, x), 0.0))


def occurrence_increments(seen: np.ndarray) -> np.ndarray:
    """<float32>[R, L] for the items `seen` before each target (<int32>[R, L], -1 = none): each
    entry's share of its item's log(1 + count), log(1 + 1/k) for the item's k-th occurrence in
    the row, so that the entries of one item add up to log(1 + count) (0 on padding)."""
    rows, width = seen.shape
    key = (np.arange(rows, dtype=np.int64)[:, None] * (int(seen.max(initial=0)) + 2) + seen + 1).ravel()
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    run_start = np.maximum.accumulate(np.where(first, np.arange(len(ordered)), 0))
    k = np.empty(len(key), np.float64)
    k[order] = np.arange(len(ordered)) - run_start + 1
    return np.where(seen >= 0, np.log1p(1.0 / k.reshape(rows, width)), 0.0).astype(np.float32)


def dense_boost(counts: jax.Array, sd: jax.Array, beta: float) -> jax.Array:
    """<float32>[B, N] the boost of every item, from <float32>[B, N] times seen and [B] sd."""
    return beta * sd[:, None] * jnp.log1p(counts)


def describe(repeat: dict[str, Any] | None, model: str | None) -> str:
    """The boost as a results table's title says it (`protocol.repeat` of a result), with what the
    held-out sequences it was chosen on said of it."""
    if not repeat:
        return ""
    weight = repeat["weight"]
    where = {"valid": "validation", "holdout": "the held-out training sequences"}.get(repeat.get("chosen_on") or "")
    if where is None:
        return f"; {model}'s scores of items seen earlier raised by {weight:g} sd x log(1 + times seen)"
    grid = {r["weight"]: r for r in repeat["grid"]}
    mrr = next(k for k in grid[0.0] if k.startswith("mrr@"))
    if not weight:
        runner_up = max((r for w, r in grid.items() if w), key=lambda r: r[mrr])
        return (f"; no repeat boost: weight 0 was best on {where} ({mrr} {grid[0.0][mrr]:.4f}; "
                f"weight {runner_up['weight']:g}: {runner_up[mrr]:.4f})")  # fmt: skip
    return (f"; {model}'s scores of items seen earlier raised by {weight:g} sd x log(1 + times seen), the weight "
            f"chosen on {where} ({mrr} {grid[0.0][mrr]:.4f} without, {grid[weight][mrr]:.4f} with)")  # fmt: skip
