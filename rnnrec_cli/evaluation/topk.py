"""Passes over wide rows of scores (the top k, the counts above and tied with a target's score),
and the catalogue padding they and the item blocks need."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Items per group of the two-pass top-k: a multiple of the SIMD width, small enough that the
# k best groups are few candidates.
TOP_K_GROUP = 128


def top_k(s: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`jax.lax.top_k` over the last axis (ties: the lower index first), in two passes, which
    XLA's CPU backend runs 2-4x faster on wide rows: the k groups of TOP_K_GROUP columns with
    the highest maxima hold the top k (any column outside them is beaten by those k maxima, on
    value or, tied, on index), so one top-k runs over the group maxima and one over those k
    groups' columns, taken in index order. Other widths (pad the scores' source with
    `pad_catalogue`: padding the scores themselves costs more than it saves) and narrow rows
    take one `lax.top_k`, as do scores where a group holds a NaN or has a zero maximum: top_k
    orders -0.0 below +0.0 and NaN above inf, which a float maximum does not see (an
    integer-key maximum would, at 3x the cost of the whole top-k)."""
    n = s.shape[-1]
    if n % TOP_K_GROUP or n // TOP_K_GROUP < 4 * k:
        return jax.lax.top_k(s, k)

    groups = s.reshape(*s.shape[:-1], n // TOP_K_GROUP, TOP_K_GROUP)
    maxima = groups.max(axis=-1)

    def two_pass(s: jax.Array) -> tuple[jax.Array, jax.Array]:
        _, best = jax.lax.top_k(maxima, k)
        cols = (jnp.sort(best, axis=-1)[..., None] * TOP_K_GROUP + jnp.arange(TOP_K_GROUP)).reshape(*s.shape[:-1], -1)
        v, j = jax.lax.top_k(jnp.take_along_axis(s, cols, axis=-1), k)
        return v, jnp.take_along_axis(cols, j, axis=-1)

    # A NaN makes its group's sum NaN (the CPU maximum may skip it); a group whose maximum is
    # a zero may hold both zeros.
    special = jnp.any(jnp.isnan(groups.sum(axis=-1)) | (maxima == 0))
    return jax.lax.cond(special, lambda s: tuple(jax.lax.top_k(s, k)), two_pass, s)


def counts(s: jax.Array, ts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """<int32>[..., R] the entries of each row of `s` above and equal to its `ts`, in one pass
    over the block (one variadic reduction: two separate counts each read the block, and XLA's
    CPU backend wrote the compared block out in between). Summed as float32: exact, as a block
    has far fewer than 2**24 columns."""
    t = ts[..., None]
    above, tied = jax.lax.reduce(
        ((s > t).astype(jnp.float32), (s == t).astype(jnp.float32)),
        (jnp.float32(0), jnp.float32(0)),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
        (s.ndim - 1,),
    )
    return above.astype(jnp.int32), tied.astype(jnp.int32)


def pad_catalogue(kernel: jax.Array, bias: jax.Array, multiple: int) -> tuple[jax.Array, jax.Array]:
    """The output layer's [N, H] weights and [N] bias with zero rows of bias -inf appended up to
    a multiple of `multiple`: scores over them come in whole top-k groups or item blocks, and
    the padding columns, after every item and never above one, change no rank or top-k."""
    pad = -kernel.shape[0] % multiple
    return jnp.pad(kernel, ((0, pad), (0, 0))), jnp.pad(bias, (0, pad), constant_values=-jnp.inf)
