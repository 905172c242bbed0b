"""Next-item losses over an output layer restricted to the needed columns (pure, jittable).

Each row is one position of a chunk. Its columns are the targets of the other sequences at the
same step (in-batch negatives, popularity-distributed by construction, as in GRU4Rec) followed
by the items sampled for the whole chunk; `own` names the column holding the row's target.
Accidental hits (the target among the negatives) are kept, as in GRU4Rec.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def negative_mask(own: jax.Array, valid: jax.Array) -> jax.Array:
    """<bool>[R, C]: the columns that are negatives for each row (valid, not its own target)."""
    return valid & (jnp.arange(valid.shape[1])[None, :] != own[:, None])


def _own(logits: jax.Array, own: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, own[:, None], axis=1)


def cross_entropy(
    logits: jax.Array, own: jax.Array, valid: jax.Array, correction: jax.Array | None = None
) -> jax.Array:
    """Softmax cross-entropy of each row's own column against its valid columns.

    Args:
      logits: <float32>[R, C] scores.
      own: <int32>[R] column of each row's target.
      valid: <bool>[R, C] columns that exist for the row (padding slots' targets do not).
      correction: optional <float32>[R, C] subtracted from the scores (log-Q correction).
    Returns:
      <float32>[R] per-row loss.
    """
    if correction is not None:
        logits = logits - correction
    # A padding row's own column is invalid; keeping it keeps the row finite (it is masked later).
    valid = valid | (jnp.arange(valid.shape[1])[None, :] == own[:, None])
    logits = jnp.where(valid, logits, -jnp.inf)
    return jax.nn.logsumexp(logits, axis=1) - _own(logits, own)[:, 0]


def split_cross_entropy(
    in_batch: jax.Array,
    sampled: jax.Array,
    column_valid: jax.Array,
    corr_in: jax.Array | None = None,
    corr_s: jax.Array | None = None,
) -> jax.Array:
    """`cross_entropy` over [in-batch columns | sampled columns] without joining them: each
    block's log-sum-exp, combined; the [T*B, B+S] logits, mask and correction are never built.

    Args:
      in_batch: <float32>[T, B, B] scores of step t's sequence b for step t's target of slot c
        (its own target on the diagonal).
      sampled: <float32>[T*B, S] scores of the shared sampled items.
      column_valid: <bool>[T, B] slot c holds a real target at step t.
      corr_in, corr_s: optional log-Q corrections <float32>[T, B] (per in-batch column) and [S].
    Returns:
      <float32>[T*B] per-row loss, rows in (t, b) order.
    """
    n_steps, batch, _ = in_batch.shape
    if corr_in is not None:
        in_batch = in_batch - corr_in[:, None, :]
    if corr_s is not None:
        sampled = sampled - corr_s[None, :]
    own = jnp.diagonal(in_batch, axis1=1, axis2=2)  # [T, B]
    # A padding row's own column is invalid; keeping it keeps the row finite (it is masked later).
    valid = column_valid[:, None, :] | jnp.eye(batch, dtype=bool)[None]
    lse_in = jax.nn.logsumexp(jnp.where(valid, in_batch, -jnp.inf), axis=-1)
    lse_s = jax.nn.logsumexp(sampled, axis=-1).reshape(n_steps, batch)
    return (jnp.logaddexp(lse_in, lse_s) - own).reshape(-1)


def _negative_softmax(logits: jax.Array, neg: jax.Array) -> jax.Array:
    # Softmax over the negatives only: the target never takes part (a known third-party bug).
    masked = jnp.where(neg, logits, -jnp.inf)
    return jnp.where(neg, jax.nn.softmax(masked, axis=1), 0.0)


def bpr_max(logits: jax.Array, own: jax.Array, valid: jax.Array, bpreg: float, elu: float = 0.0) -> jax.Array:
    """BPR-max (Hidasi & Karatzoglou 2018) per row.

    -log sum_j s_j sigmoid(r_t - r_j) + bpreg * sum_j s_j r_j^2, with s a softmax over the
    negatives; summed over negatives, not averaged. Scores pass through ELU(elu) when elu > 0.
    Training uses `split_bpr_max`; this joined form is the definition it is tested against.
    """
    if elu > 0:
        logits = jax.nn.elu(logits, alpha=elu)
    neg = negative_mask(own, valid)
    s = _negative_softmax(logits, neg)
    target = _own(logits, own)
    prob = jnp.sum(s * jax.nn.sigmoid(target - logits), axis=1)
    return -jnp.log(prob + 1e-24) + bpreg * jnp.sum(s * logits**2, axis=1)


def split_bpr_max(
    in_batch: jax.Array, sampled: jax.Array, column_valid: jax.Array, bpreg: float, elu: float = 0.0
) -> jax.Array:
    """`bpr_max` over [in-batch columns | sampled columns] without joining them (as
    `split_cross_entropy`): the negatives' softmax weights s_j = e_j / Z share one row maximum
    and one normaliser Z over both blocks, so each block only adds its sums of e_j,
    e_j * sigmoid(r_t - r_j) and e_j * r_j^2.

    Args:
      in_batch: <float32>[T, B, B] scores, each row's own target on the diagonal.
      sampled: <float32>[T*B, S] scores of the shared sampled items.
      column_valid: <bool>[T, B] slot c holds a real target at step t.
    Returns:
      <float32>[T*B] per-row loss, rows in (t, b) order.
    """
    n_steps, batch, _ = in_batch.shape
    if elu > 0:
        in_batch, sampled = jax.nn.elu(in_batch, alpha=elu), jax.nn.elu(sampled, alpha=elu)
    sampled = sampled.reshape(n_steps, batch, -1)
    own = jnp.diagonal(in_batch, axis1=1, axis2=2)[..., None]  # [T, B, 1]
    neg = column_valid[:, None, :] & ~jnp.eye(batch, dtype=bool)[None]
    top = jnp.maximum(jnp.max(jnp.where(neg, in_batch, -jnp.inf), axis=-1), jnp.max(sampled, axis=-1, initial=-jnp.inf))
    # No negative at all (a padding row of a one-slot batch without samples): any finite shift.
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))[..., None]

    def sums(scores: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
        e = jnp.exp(scores - top)
        if mask is not None:
            e = jnp.where(mask, e, 0.0)
        return e.sum(-1), (e * jax.nn.sigmoid(own - scores)).sum(-1), (e * scores**2).sum(-1)

    z_in, p_in, r_in = sums(in_batch, neg)
    z_s, p_s, r_s = sums(sampled, None)
    z = z_in + z_s
    z = jnp.where(z > 0, z, 1.0)  # no negatives: prob 0, as bpr_max gives it
    loss = -jnp.log((p_in + p_s) / z + 1e-24) + bpreg * (r_in + r_s) / z
    return loss.reshape(-1)


def top1_max(logits: jax.Array, own: jax.Array, valid: jax.Array) -> jax.Array:
    """TOP1-max per row: sum_j s_j (sigmoid(r_j - r_t) + sigmoid(r_j^2))."""
    neg = negative_mask(own, valid)
    s = _negative_softmax(logits, neg)
    target = _own(logits, own)
    return jnp.sum(s * (jax.nn.sigmoid(logits - target) + jax.nn.sigmoid(logits**2)), axis=1)


def full_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Exact softmax cross-entropy against the full catalogue: <float32>[R, N], <int32>[R] -> [R]."""
    return jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


def value_loss(pred: jax.Array, target: jax.Array, kind: str, delta: float = 1.0) -> jax.Array:
    """Per-row regression loss on standardised values: squared error, or Huber (quadratic within
    `delta`, linear beyond, so a few extreme values do not dominate)."""
    err = pred - target
    if kind == "huber":
        a = jnp.abs(err)
        return jnp.where(a <= delta, 0.5 * err**2, delta * (a - 0.5 * delta))
    return err**2
