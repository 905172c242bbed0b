"""Model scoring for evaluation: exact full-catalogue ranks and top-K lists, in item blocks.

Scores for one step exist only one item block at a time ([B, block]), so memory stays bounded
for catalogues of millions of items. Ranks are exact: the target's own column is set to the
target's score, so the comparison counts it once as a tie, never as higher.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_cli import model, parallel
from rnnrec_cli.batches import Batch, Stream, longest_first, session_parallel
from rnnrec_cli.config import RunConfig, Ties
from rnnrec_cli.metrics import Scores, rank_with_ties
from rnnrec_cli.options import ScoreOptions
from rnnrec_cli.sequences import Sequences, positions

EVAL_BPTT = 32


class StepOut(NamedTuple):
    ranks: jax.Array  # <float32>[B]; inf when the target was excluded as seen
    topk: jax.Array  # <int32>[B, k]
    sampled: jax.Array  # <float32>[B] rank among n_sampled negatives (1 + count above); 0 if unused


def _count(mask: jax.Array) -> jax.Array:
    """<int32>[B] True per row. Summed as float32, which XLA's CPU backend vectorises (an
    integer sum of booleans runs ~3x slower there); exact, as a block has far fewer than 2**24
    columns."""
    return jnp.sum(mask.astype(jnp.float32), axis=1).astype(jnp.int32)


def rank_step(
    h: jax.Array,
    targets: jax.Array,
    seen: jax.Array,
    negatives: jax.Array,
    kernel_blocks: jax.Array,
    bias_blocks: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    *,
    opts: ScoreOptions,
    n_items: int,
) -> StepOut:
    """Ranks and top-k of one step.

    Args:
      h: <float32>[B, H] hidden states; targets: <int32>[B].
      seen: <int32>[B, L] items seen so far in each sequence (-1 = empty slot).
      negatives: <int32>[B, n_sampled] items for sampled ranks.
      kernel_blocks, bias_blocks: [n_blocks, block, H] and [n_blocks, block], the item matrix
        padded to whole blocks.
    """
    batch = h.shape[0]
    block = kernel_blocks.shape[1]
    rows = jnp.arange(batch)
    ts = jnp.sum(h * kernel[targets], axis=-1) + bias[targets]
    target_seen = jnp.any(seen == targets[:, None], axis=1) if opts.exclude_seen else jnp.zeros(batch, bool)

    def over_blocks(acc: tuple, xs: tuple) -> tuple[tuple, None]:
        higher, tied, top_v, top_i = acc
        w, b, start = xs
        # Padding rows past the catalogue have bias -inf (see score_chunk): never above a target.
        s = h @ w.T + b
        if opts.exclude_seen:
            local = jnp.where((seen >= start) & (seen < start + block), seen - start, block)
            s = s.at[rows[:, None], local].set(-jnp.inf, mode="drop")
        # Count over the whole block, then take the target's own column back out: exact, with no
        # write into the [B, block] scores.
        own = targets - start
        mine = (own >= 0) & (own < block)
        s_own = jnp.take_along_axis(s, jnp.clip(own, 0, block - 1)[:, None], axis=1)[:, 0]
        higher = higher + _count(s > ts[:, None]) - (mine & (s_own > ts))
        tied = tied + _count(s == ts[:, None]) - (mine & (s_own == ts))
        if opts.k:
            # The block's own top-k first, then merged with the running one: ties keep the
            # lower item id, as one top-k over the whole catalogue would.
            v, j = jax.lax.top_k(s, opts.k)
            cand_v, cand_i = jnp.concatenate([top_v, v], axis=1), jnp.concatenate([top_i, start + j], axis=1)
            top_v, j = jax.lax.top_k(cand_v, opts.k)
            top_i = jnp.take_along_axis(cand_i, j, axis=1)
        return (higher, tied, top_v, top_i), None

    n_blocks = kernel_blocks.shape[0]
    init = (
        jnp.zeros(batch, jnp.int32),
        jnp.zeros(batch, jnp.int32),
        jnp.full((batch, opts.k), -jnp.inf),
        jnp.zeros((batch, opts.k), jnp.int32),
    )
    starts = jnp.arange(n_blocks, dtype=jnp.int32) * block
    (higher, tied, _, top_i), _ = jax.lax.scan(over_blocks, init, (kernel_blocks, bias_blocks, starts))
    ranks = jnp.where(target_seen, jnp.inf, rank_with_ties(higher, tied, opts.ties).astype(jnp.float32))
    if opts.n_sampled:
        neg = jnp.einsum("bh,bnh->bn", h, kernel[negatives]) + bias[negatives]
        sampled = (1 + jnp.sum(neg >= ts[:, None], axis=1)).astype(jnp.float32)
    else:
        sampled = jnp.zeros(batch, jnp.float32)
    return StepOut(ranks, top_i, sampled)


def score_chunk(
    params: model.Params,
    carry: model.Carry,
    seen: jax.Array,
    seen_n: jax.Array,
    batch: Batch,
    features: model.Features,
    *,
    cfg: RunConfig,
    opts: ScoreOptions,
) -> tuple[model.Carry, jax.Array, jax.Array, StepOut]:
    """Run the model over a [T, B] chunk and score every step. Pure; jitted below.

    Reads the batch's inputs, targets, reset, side inputs and negatives <int32>[T, B, n_sampled].
    `seen`/`seen_n` carry each slot's seen items across chunks (used only with exclude_seen).
    """
    inputs, targets, reset, negatives = batch.inputs, batch.targets, batch.reset, batch.negatives
    carry, hidden = model.run(params, cfg.model, carry, batch, None, features)
    kernel, bias = model.output_layer(params, cfg.model, features)
    n_items = kernel.shape[0]
    # As few blocks as item_block allows, of equal size (a multiple of 128), so the padding
    # past the catalogue stays small: 50k items are 2 blocks of 25,088, not 2 of 32,768.
    n_blocks = -(-n_items // opts.item_block)
    block = -(-n_items // n_blocks)
    block = -(-block // 128) * 128 if block >= 1024 else block
    pad = n_blocks * block - n_items
    kernel_blocks = jnp.pad(kernel, ((0, pad), (0, 0))).reshape(n_blocks, block, -1)
    bias_blocks = jnp.pad(bias, (0, pad), constant_values=-jnp.inf).reshape(n_blocks, block)
    rows = jnp.arange(inputs.shape[1])

    def step(state: tuple[jax.Array, jax.Array], xs: tuple) -> tuple[tuple, StepOut]:
        seen, seen_n = state
        h, x, t, r, neg = xs
        if opts.exclude_seen:
            seen = jnp.where(r[:, None], -1, seen)
            seen_n = jnp.where(r, 0, seen_n)
            present = jnp.any(seen == x[:, None], axis=1)
            slot = jnp.where(present, seen.shape[1], seen_n)
            seen = seen.at[rows, slot].set(x, mode="drop")
            seen_n = seen_n + (~present).astype(jnp.int32)
        out = rank_step(h, t, seen, neg, kernel_blocks, bias_blocks, kernel, bias, opts=opts, n_items=n_items)
        return (seen, seen_n), out

    (seen, seen_n), out = jax.lax.scan(step, (seen, seen_n), (hidden, inputs, targets, reset, negatives))
    return carry, seen, seen_n, out


_score_chunk = jax.jit(score_chunk, static_argnames=("cfg", "opts"), donate_argnums=(1, 2, 3))


def model_scores(
    params: model.Params,
    cfg: RunConfig,
    seqs: Sequences,
    opts: ScoreOptions,
    seed: int = 0,
    features: dict[str, np.ndarray] | None = None,
) -> Scores:
    """Score every target of `seqs` (positions 2..L of each sequence) with the model.

    With several devices the batch of sequences is split over them (parameters replicated)."""
    place, batch, params, stream, carry, features = _placed_stream(params, cfg, seqs, opts.devices, features)
    seen_len = int(seqs.lengths.max()) if opts.exclude_seen and len(seqs) else 1
    seen = place.put(np.full((batch, seen_len), -1, np.int32), place.rows)
    seen_n = place.put(np.zeros(batch, np.int32), place.rows)
    n = len(seqs.items)
    ranks = np.zeros(n, np.float32)
    topk = np.zeros((n, opts.k), np.int32)
    sampled = np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    for chunk in stream.chunks():
        negs = rng.integers(0, cfg.n_items, (EVAL_BPTT, batch, opts.n_sampled), dtype=np.int32)
        on_device = _put(place, chunk._replace(negatives=negs), batch)
        carry, seen, seen_n, out = _score_chunk(params, carry, seen, seen_n, on_device, features, cfg=cfg, opts=opts)
        pos = chunk.target_pos[chunk.mask]
        ranks[pos] = np.asarray(out.ranks)[chunk.mask]
        topk[pos] = np.asarray(out.topk)[chunk.mask]
        sampled[pos] = np.asarray(out.sampled)[chunk.mask]
    keep = positions(seqs).end
    return Scores(ranks[keep], topk[keep], sampled[keep])


def _placed_stream(
    params: model.Params, cfg: RunConfig, seqs: Sequences, devices: int, features: dict[str, np.ndarray] | None
) -> tuple[parallel.Placement, int, model.Params, Stream, model.Carry, model.Features]:
    """The evaluation stream over `devices` local devices (0 = all): (placement, batch size
    rounded up to a multiple of the device count, replicated params, stream, zero carry,
    replicated item features)."""
    n_dev = devices or len(jax.local_devices())
    batch = -(-cfg.train.eval_batch_size // n_dev) * n_dev
    place = parallel.make_placement(n_dev, False, batch, local=True)
    params = place.put(parallel.to_host(params), place.replicated)
    features = None if features is None else place.put(features, place.replicated)
    stream = session_parallel(seqs, batch, EVAL_BPTT, longest_first(seqs))
    carry = place.put(jax.device_get(model.zero_carry(cfg.model, batch)), place.rows)
    return place, batch, params, stream, carry, features


def _put(place: parallel.Placement, chunk: Batch, batch_size: int) -> Batch:
    """A host chunk on the devices, split along the slots (target positions stay on the host)."""
    return jax.tree.map(partial(place.put_batch, batch_size=batch_size), chunk._replace(target_pos=None))


@partial(jax.jit, static_argnames=("cfg",), donate_argnums=(1,))
def _heads_chunk(
    params: model.Params, carry: model.Carry, batch: Batch, features: model.Features, *, cfg: RunConfig
) -> tuple[model.Carry, dict[str, jax.Array]]:
    carry, hidden = model.run(params, cfg.model, carry, batch, None, features)
    out = {}
    if cfg.model.predicts_values:
        out["value"] = model.predicted_values(params, cfg.model, hidden, batch.targets)
    if cfg.model.predicts_events:
        out["event"] = jax.nn.softmax(model.event_logits(params, hidden), axis=-1)
    return carry, out


def head_predictions(
    params: model.Params,
    cfg: RunConfig,
    seqs: Sequences,
    devices: int = 0,
    features: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per target event, in sequence order (see `sequences.positions`), from the events before it:
    "value" <float32>[n], the value head's prediction of its value (given its item), and
    "event" <float32>[n, n_types], the event-type head's probabilities of its type, for the
    heads the model has. `seqs` must carry what the model reads (values, event types)."""
    place, batch, params, stream, carry, features = _placed_stream(params, cfg, seqs, devices, features)
    n = len(seqs.items)
    out: dict[str, np.ndarray] = {}
    if cfg.model.predicts_values:
        out["value"] = np.zeros(n, np.float32)
    if cfg.model.predicts_events:
        out["event"] = np.zeros((n, len(cfg.model.event_types)), np.float32)
    for chunk in stream.chunks():
        carry, pred = _heads_chunk(params, carry, _put(place, chunk, batch), features, cfg=cfg)
        pos = chunk.target_pos[chunk.mask]
        for name, p in pred.items():
            out[name][pos] = np.asarray(p)[chunk.mask]
    keep = positions(seqs).end
    return {name: a[keep] for name, a in out.items()}


def model_ranks(
    params: model.Params,
    cfg: RunConfig,
    seqs: Sequences,
    ties: Ties = "conservative",
    features: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Full-catalogue ranks of every target event, in sequence order (see `sequences.positions`)."""
    return model_scores(params, cfg, seqs, ScoreOptions(ties=ties, k=0), features=features).ranks
