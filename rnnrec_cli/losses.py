"""Next-item losses over an output layer restricted to the needed columns (pure, jittable).

Rows are the M = T*B positions of a chunk; row i's target is column i (the chunk's targets come
first), and the remaining columns are the other rows' targets (in-batch negatives, popularity
distributed by construction) followed by items sampled for the whole chunk. Accidental hits (the
target among the negatives) are kept, as in GRU4Rec.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def negative_mask(n_rows: int, col_valid: jax.Array) -> jax.Array:
    """<bool>[M, C]: the columns that are negatives for each row (valid, and not its own target)."""
    own = jnp.arange(col_valid.shape[0])[None, :] == jnp.arange(n_rows)[:, None]
    return col_valid[None, :] & ~own


def cross_entropy(logits: jax.Array, col_valid: jax.Array, correction: jax.Array | None = None) -> jax.Array:
    """Softmax cross-entropy of each row's own column against all valid columns.

    Args:
      logits: <float32>[M, C] scores, target of row i in column i.
      col_valid: <bool>[C] columns that exist (padding rows' targets do not).
      correction: optional <float32>[C] subtracted from every row (log-Q correction).
    Returns:
      <float32>[M] per-row loss.
    """
    if correction is not None:
        logits = logits - correction[None, :]
    logits = jnp.where(col_valid[None, :], logits, -jnp.inf)
    target = jnp.diagonal(logits)
    return jax.nn.logsumexp(logits, axis=1) - target


def _negative_softmax(logits: jax.Array, neg: jax.Array) -> jax.Array:
    # Softmax over the negatives only: the target never takes part (a known third-party bug).
    masked = jnp.where(neg, logits, -jnp.inf)
    return jnp.where(neg, jax.nn.softmax(masked, axis=1), 0.0)


def bpr_max(logits: jax.Array, col_valid: jax.Array, bpreg: float, elu: float = 0.0) -> jax.Array:
    """BPR-max (Hidasi & Karatzoglou 2018) per row.

    -log sum_j s_j sigmoid(r_t - r_j) + bpreg * sum_j s_j r_j^2, with s a softmax over the negatives.
    Scores pass through ELU(elu) first when elu > 0.
    """
    if elu > 0:
        logits = jax.nn.elu(logits, alpha=elu)
    neg = negative_mask(logits.shape[0], col_valid)
    s = _negative_softmax(logits, neg)
    target = jnp.diagonal(logits)[:, None]
    prob = jnp.sum(s * jax.nn.sigmoid(target - logits), axis=1)
    return -jnp.log(prob + 1e-24) + bpreg * jnp.sum(s * logits**2, axis=1)


def top1_max(logits: jax.Array, col_valid: jax.Array) -> jax.Array:
    """TOP1-max per row: sum_j s_j (sigmoid(r_j - r_t) + sigmoid(r_j^2))."""
    neg = negative_mask(logits.shape[0], col_valid)
    s = _negative_softmax(logits, neg)
    target = jnp.diagonal(logits)[:, None]
    return jnp.sum(s * (jax.nn.sigmoid(logits - target) + jax.nn.sigmoid(logits**2)), axis=1)


def full_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Exact softmax cross-entropy against the full catalogue: <float32>[M, N], <int32>[M] -> [M]."""
    return jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
