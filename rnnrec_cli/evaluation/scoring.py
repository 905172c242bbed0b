"""Model scoring for evaluation: exact full-catalogue ranks and top-K lists, in item blocks.

Scores for one step exist only one item block at a time ([B, block]), so memory stays bounded
for catalogues of millions of items. Ranks are exact: the target's own column is set to the
target's score, so the comparison counts it once as a tie, never as higher.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_cli.config import RunConfig, Ties
from rnnrec_cli.data.batches import Batch, Stream, longest_first, session_parallel
from rnnrec_cli.data.sequences import Sequences, positions
from rnnrec_cli.evaluation import repeats
from rnnrec_cli.evaluation.metrics import Scores, rank_with_ties
from rnnrec_cli.evaluation.topk import TOP_K_GROUP, counts, pad_catalogue, top_k
from rnnrec_cli.model import network, parallel
from rnnrec_cli.options import ScoreOptions

EVAL_BPTT = 32


class StepOut(NamedTuple):
    ranks: jax.Array  # <float32>[B]; inf when the target was excluded as seen
    topk: jax.Array  # <int32>[B, k]
    sampled: jax.Array  # <float32>[B] rank among n_sampled negatives (1 + count above); 0 if unused
    grid: jax.Array  # <float32>[G, B] the ranks under each of the boost's G weights (the first: `ranks`)


def rank_step(
    h: jax.Array,
    targets: jax.Array,
    seen: jax.Array,
    negatives: jax.Array,
    blocks: jax.Array,
    boost: repeats.Boost,
    *,
    opts: ScoreOptions,
) -> StepOut:
    """Ranks and top-k of a batch of rows (one target each); with the repeat boost, the ranks
    under each of its weights too (one pass over the catalogue for all: the scores are shared).

    Args:
      h: <float32>[R, H] hidden states; targets: <int32>[R].
      seen: <int32>[R, L] items seen before each target (-1 = none), used with exclude_seen
        and the repeat boost.
      negatives: <int32>[R, n_sampled] items for sampled ranks.
      blocks: [n_blocks, block, H + 1] the output layer, each item's weights then its bias,
        padded to whole blocks (padding rows have bias -inf: never above a target).
      boost: the repeat boost's inputs, used when opts.repeat (see `repeats.Boost`).
    """
    batch = h.shape[0]
    block = blocks.shape[1]
    layer = blocks.reshape(-1, blocks.shape[2])
    # [h, 1]: the bias is the last column of the product, not a pass of its own over the block.
    h1 = jnp.concatenate([h, jnp.ones((batch, 1), h.dtype)], axis=1)
    rows = jnp.arange(batch)
    ts = jnp.sum(h1 * layer[targets], axis=-1)
    target_seen = jnp.any(seen == targets[:, None], axis=1) if opts.exclude_seen else jnp.zeros(batch, bool)
    # Several weights (a choice's grid) score [G, R, block]; one keeps [R, block] (faster on CPU).
    multi = bool(opts.repeat) and boost.beta.shape[0] > 1
    add = jnp.zeros((batch, 1))
    if opts.repeat:
        # Each seen entry's share of its item's boost; the target's own share raises its score.
        sd = repeats.score_sd(h, boost.cov)
        if multi:
            add = boost.beta[:, None, None] * sd[None, :, None] * boost.inc[None]
        else:
            add = boost.beta[0] * sd[:, None] * boost.inc
        ts = ts + jnp.sum(jnp.where(seen == targets[:, None], add, 0.0), axis=-1)  # [G, R] or [R]

    def over_blocks(acc: tuple, xs: tuple) -> tuple[tuple, None]:
        higher, tied, top_v, top_i = acc
        w, start = xs
        s = h1 @ w.T
        if opts.exclude_seen:
            local = jnp.where((seen >= start) & (seen < start + block), seen - start, block)
            s = s.at[rows[:, None], local].set(-jnp.inf, mode="drop")
        first = s
        if opts.repeat:
            local = jnp.where((seen >= start) & (seen < start + block), seen - start, block)
            if multi:
                s = jnp.broadcast_to(s, (add.shape[0], *s.shape)).at[:, rows[:, None], local].add(add, mode="drop")
                first = s[0]
            else:
                s = first = s.at[rows[:, None], local].add(add, mode="drop")
        # Count over the whole block, then take the target's own column back out: exact, with no
        # write into the block's scores.
        own = targets - start
        mine = (own >= 0) & (own < block)
        at = jnp.clip(own, 0, block - 1)[:, None]
        s_own = jnp.take_along_axis(s, at[None] if multi else at, axis=-1)[..., 0]
        above, equal = counts(s, ts)
        higher = higher + above - (mine & (s_own > ts))
        tied = tied + equal - (mine & (s_own == ts))
        if opts.k:
            # The block's own top-k first (the first weight's), then merged with the running one:
            # ties keep the lower item id, as one top-k over the whole catalogue would.
            v, j = top_k(first, opts.k)
            cand_v, cand_i = jnp.concatenate([top_v, v], axis=1), jnp.concatenate([top_i, start + j], axis=1)
            top_v, j = jax.lax.top_k(cand_v, opts.k)
            top_i = jnp.take_along_axis(cand_i, j, axis=1)
        return (higher, tied, top_v, top_i), None

    n_blocks = blocks.shape[0]
    init = (
        jnp.zeros(ts.shape, jnp.int32),
        jnp.zeros(ts.shape, jnp.int32),
        jnp.full((batch, opts.k), -jnp.inf),
        jnp.zeros((batch, opts.k), jnp.int32),
    )
    starts = jnp.arange(n_blocks, dtype=jnp.int32) * block
    (higher, tied, _, top_i), _ = jax.lax.scan(over_blocks, init, (blocks, starts))
    ranks = jnp.where(target_seen, jnp.inf, rank_with_ties(higher, tied, opts.ties).astype(jnp.float32))
    grid = ranks if multi else ranks[None]
    if opts.n_sampled:
        neg = jnp.einsum("bh,bnh->bn", h1, layer[negatives])
        sampled = (1 + jnp.sum(neg >= ts[:, None], axis=1)).astype(jnp.float32)
    else:
        sampled = jnp.zeros(batch, jnp.float32)
    return StepOut(grid[0], top_i, sampled, grid)


# Targets are scored SCORE_ROWS at a time, up to SCORE_CALL of those per jitted call: inside one
# call XLA reuses the [rows, block] buffers, where separate calls each allocate them afresh
# (twice as slow on CPU).
SCORE_ROWS = 128
SCORE_CALL = 16
# At most this many entries in one call's seen-item array (--exclude-seen): 64 MiB of int32.
SEEN_ENTRIES = 1 << 24


@partial(jax.jit, static_argnames=("opts",))
def _rank_rows(
    n: jax.Array,
    h: jax.Array,
    targets: jax.Array,
    seen: jax.Array,
    negatives: jax.Array,
    blocks: jax.Array,
    boost: repeats.Boost,
    *,
    opts: ScoreOptions,
) -> StepOut:
    """`rank_step` over the first `n` of S batches of rows ([S, R, ...] inputs, boost.inc too;
    the rest is padding, left as zeros in the output)."""
    s, r = targets.shape
    g = boost.beta.shape[0] if opts.repeat else 1
    out = StepOut(jnp.zeros((s, r)), jnp.zeros((s, r, opts.k), jnp.int32), jnp.zeros((s, r)), jnp.zeros((s, g, r)))

    def one(i: jax.Array, out: StepOut) -> StepOut:
        b = boost._replace(inc=boost.inc[i])
        o = rank_step(h[i], targets[i], seen[i], negatives[i], blocks, b, opts=opts)
        return jax.tree.map(lambda a, b: a.at[i].set(b), out, o)

    return jax.lax.fori_loop(0, n, one, out)


@partial(jax.jit, static_argnames=("cfg", "item_block"))
def item_blocks(params: network.Params, features: network.Features, *, cfg: RunConfig, item_block: int) -> jax.Array:
    """The output layer as [n_blocks, block, H + 1]: each item's weights, then its bias. As few
    blocks as `item_block` allows, of equal size (a multiple of 128), so the padding past the
    catalogue stays small (50k items are 2 blocks of 25,088, not 2 of 32,768). Padding rows have
    bias -inf."""
    kernel, bias = network.output_layer(params, cfg.model, features)
    n_blocks = -(-kernel.shape[0] // item_block)
    block = -(-kernel.shape[0] // n_blocks)
    block = -(-block // TOP_K_GROUP) * TOP_K_GROUP if block >= 1024 else block
    kernel, bias = pad_catalogue(kernel, bias, n_blocks * block)
    return jnp.concatenate([kernel, bias[:, None]], axis=1).reshape(n_blocks, block, -1)


@partial(jax.jit, static_argnames=("cfg",))
def _catalogue_cov(params: network.Params, features: network.Features, *, cfg: RunConfig) -> jax.Array:
    kernel, bias = network.output_layer(params, cfg.model, features)
    # [:n_items]: item tables split over devices carry padding rows that are not items.
    return repeats.catalogue_cov(kernel[: cfg.n_items], bias[: cfg.n_items])


@partial(jax.jit, static_argnames=("cfg",), donate_argnums=(1,))
def _hidden_chunk(
    params: network.Params, carry: network.Carry, batch: Batch, features: network.Features, *, cfg: RunConfig
) -> tuple[network.Carry, jax.Array]:
    return network.run(params, cfg.model, carry, batch, None, features)


def _hidden_rows(
    place: parallel.Placement,
    batch: int,
    params: network.Params,
    stream: Stream,
    carry: network.Carry,
    features: network.Features,
    cfg: RunConfig,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(<float32>[m, H] hidden states, <int64>[m] positions in the items of the targets they
    predict), chunk by chunk: the recurrence alone, the next chunk already running while the
    host reads one."""
    pending: tuple[jax.Array, Batch] | None = None
    for chunk in itertools.chain(stream.chunks(), [None]):  # None: read the last chunk
        if chunk is not None:
            carry, hidden = _hidden_chunk(params, carry, _put(place, chunk, batch), features, cfg=cfg)
        if pending is not None:
            done_hidden, done = pending
            yield np.asarray(done_hidden)[done.mask], done.target_pos[done.mask]
        pending = None if chunk is None else (hidden, chunk)


def model_scores(
    params: network.Params,
    cfg: RunConfig,
    seqs: Sequences,
    opts: ScoreOptions,
    seed: int = 0,
    features: dict[str, np.ndarray] | None = None,
    weights: tuple[float, ...] = (),
) -> Scores:
    """Score every target of `seqs` (positions 2..L of each sequence) with the model; where
    `seqs.scored` marks targets, only those (the others get rank 0 and top-K 0: callers keep
    `sequences.scored_mask`). With `weights`, the ranks under each of those repeat-boost
    weights too (`Scores.grid`), in the same pass; `ranks` are then the first weight's.

    The recurrence runs session-parallel; its hidden states are then scored in full batches of
    targets, however few slots still held a sequence (long sequences leave most slots idle
    towards the end). With several devices those rows are split over them (parameters
    replicated)."""
    place, batch, params, stream, carry, placed = _placed_stream(params, cfg, seqs, opts.devices, features)
    blocks = item_blocks(params, placed, cfg=cfg, item_block=opts.item_block)
    # The boost's weights are an input, not part of the compiled program.
    beta = np.asarray(weights or (opts.repeat,), np.float32)
    opts = dataclasses.replace(opts, repeat=float(bool(weights) or opts.repeat > 0))
    cov = _catalogue_cov(params, placed, cfg=cfg) if opts.repeat else np.zeros((1, 1), np.float32)
    cov = place.put(cov, place.replicated)
    histories = opts.exclude_seen or opts.repeat
    # SCORE_ROWS per device: each device scores batches of the shape one device would, so the
    # float results, and the ranks of near-ties, do not depend on the device count.
    rows = SCORE_ROWS * place.n_devices
    per_call = rows * SCORE_CALL
    n = len(seqs.items)
    ranks = np.zeros(n, np.float32)
    grid = np.zeros((len(beta), n), np.float32)
    topk = np.zeros((n, opts.k), np.int32)
    sampled = np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    # Each item's sequence start, for the histories --exclude-seen takes out.
    first = np.repeat(seqs.offsets[:-1], seqs.lengths) if histories else np.zeros(0, np.int64)
    running: list[tuple[np.ndarray, StepOut]] = []

    def collect() -> None:
        for pos, out in running:
            m = len(pos)
            ranks[pos] = np.asarray(out.ranks).reshape(-1)[:m]
            topk[pos] = np.asarray(out.topk).reshape(out.ranks.size, opts.k)[:m]
            sampled[pos] = np.asarray(out.sampled).reshape(-1)[:m]
            if weights:
                grid[:, pos] = np.moveaxis(np.asarray(out.grid), 1, 0).reshape(len(beta), -1)[:, :m]
        running.clear()

    def score(h: np.ndarray, pos: np.ndarray) -> None:
        # With --exclude-seen each target carries its history: fewer batches per call when
        # histories are long keep that array within SEEN_ENTRIES.
        width = max(8, 1 << int((pos - first[pos]).max() - 1).bit_length()) if histories else 1
        n_batches = max(1, min(SCORE_CALL, SEEN_ENTRIES // (rows * width)))
        size = rows * n_batches
        for i in range(0, len(pos), size):
            part = pos[i : i + size]
            pad = size - len(part)
            if histories:
                seen = repeats.seen_before(seqs.items, first[part], part, width)
            else:
                seen = np.full((len(part), 1), -1, np.int32)
            seen = np.pad(seen, ((0, pad), (0, 0)), constant_values=-1)
            inc = repeats.occurrence_increments(seen) if opts.repeat else np.zeros((size, 1), np.float32)
            host: tuple[np.ndarray, ...] = (
                np.pad(h[i : i + size], ((0, pad), (0, 0))),
                np.pad(seqs.items[part], (0, pad)).astype(np.int32),
                seen,
                rng.integers(0, cfg.n_items, (size, opts.n_sampled), dtype=np.int32),
                inc,
            )
            host = tuple(x.reshape(n_batches, rows, *x.shape[1:]) for x in host)
            boost = repeats.Boost(place.put(host[-1], place.batch), place.put(beta, place.replicated), cov)
            used = np.int32(-(-len(part) // rows))
            out = _rank_rows(
                place.put(used, place.replicated), *place.put(host[:-1], place.batch), blocks, boost, opts=opts
            )
            collect()  # the previous call's results, read while this one runs
            running.append((part, out))

    held_h: list[np.ndarray] = []
    held_pos: list[np.ndarray] = []
    for h, pos in _hidden_rows(place, batch, params, stream, carry, placed, cfg):
        if seqs.scored is not None:
            # A split with context (user histories cut at a time): the events before the cutoff
            # are fed to the recurrence but never scored, so their ranks are not computed (0).
            h, pos = h[seqs.scored[pos]], pos[seqs.scored[pos]]
        held_h.append(h)
        held_pos.append(pos)
        if sum(map(len, held_pos)) >= per_call:
            all_h, all_pos = np.concatenate(held_h), np.concatenate(held_pos)
            cut = len(all_pos) - len(all_pos) % per_call
            for i in range(0, cut, per_call):
                score(all_h[i : i + per_call], all_pos[i : i + per_call])
            held_h, held_pos = [all_h[cut:]], [all_pos[cut:]]
    if sum(map(len, held_pos)):
        score(np.concatenate(held_h), np.concatenate(held_pos))
    collect()
    keep = positions(seqs).end
    return Scores(ranks[keep], topk[keep], sampled[keep], grid[:, keep] if weights else None)


def _placed_stream(
    params: network.Params, cfg: RunConfig, seqs: Sequences, devices: int, features: dict[str, np.ndarray] | None
) -> tuple[parallel.Placement, int, network.Params, Stream, network.Carry, network.Features]:
    """The evaluation stream over `devices` local devices (0 = all): (placement, slots (at most
    eval_batch_size, rounded up to a multiple of the device count), replicated params, stream, zero carry,
    replicated item features)."""
    n_dev = devices or len(jax.local_devices())
    # No wider than the split needs: idle slots would run the recurrence for nothing.
    batch = -(-min(cfg.train.eval_batch_size, max(1, len(seqs))) // n_dev) * n_dev
    place = parallel.make_placement(n_dev, False, batch, local=True)
    params = place.put(parallel.to_host(params), place.replicated)
    features = None if features is None else place.put(features, place.replicated)
    stream = session_parallel(seqs, batch, EVAL_BPTT, longest_first(seqs))
    carry = place.put(jax.device_get(network.zero_carry(cfg.model, batch)), place.rows)
    return place, batch, params, stream, carry, features


def _put(place: parallel.Placement, chunk: Batch, batch_size: int) -> Batch:
    """A host chunk on the devices, split along the slots (target positions stay on the host)."""
    return jax.tree.map(partial(place.put_batch, batch_size=batch_size), chunk._replace(target_pos=None))


@partial(jax.jit, static_argnames=("cfg",), donate_argnums=(1,))
def _heads_chunk(
    params: network.Params, carry: network.Carry, batch: Batch, features: network.Features, *, cfg: RunConfig
) -> tuple[network.Carry, dict[str, jax.Array]]:
    carry, hidden = network.run(params, cfg.model, carry, batch, None, features)
    out = {}
    if cfg.model.predicts_values:
        out["value"] = network.predicted_values(params, cfg.model, hidden, batch.targets)
    if cfg.model.predicts_events:
        out["event"] = jax.nn.softmax(network.event_logits(params, hidden), axis=-1)
    return carry, out


def head_predictions(
    params: network.Params,
    cfg: RunConfig,
    seqs: Sequences,
    devices: int = 0,
    features: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per target event, in sequence order (see `sequences.positions`), from the events before it:
    "value" <float32>[n], the value head's prediction of its value (given its item), and
    "event" <float32>[n, n_types], the event-type head's probabilities of its type, for the
    heads the model has. `seqs` must carry what the model reads (values, event types)."""
    place, batch, params, stream, carry, placed = _placed_stream(params, cfg, seqs, devices, features)
    n = len(seqs.items)
    out: dict[str, np.ndarray] = {}
    if cfg.model.predicts_values:
        out["value"] = np.zeros(n, np.float32)
    if cfg.model.predicts_events:
        out["event"] = np.zeros((n, len(cfg.model.event_types)), np.float32)
    for chunk in stream.chunks():
        carry, pred = _heads_chunk(params, carry, _put(place, chunk, batch), placed, cfg=cfg)
        pos = chunk.target_pos[chunk.mask]
        for name, p in pred.items():
            out[name][pos] = np.asarray(p)[chunk.mask]
    keep = positions(seqs).end
    return {name: a[keep] for name, a in out.items()}


def model_ranks(
    params: network.Params,
    cfg: RunConfig,
    seqs: Sequences,
    ties: Ties = "conservative",
    features: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Full-catalogue ranks of every target event, in sequence order (see `sequences.positions`)."""
    return model_scores(params, cfg, seqs, ScoreOptions(ties=ties, k=0), features=features).ranks
