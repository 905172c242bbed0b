"""The training step: a pure function of (state, carry, batch, item stats, key) over one chunk
of the session-parallel stream. Jit it in the caller (train.fit); tests call it raw.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnrec_cli.config import RunConfig, TrainConfig
from rnnrec_cli.data.batches import Batch
from rnnrec_cli.model import losses, network, parallel


class ItemStats(NamedTuple):
    """The log-Q correction of each item, as GRU4Rec and the papers define it: log(support) when
    it is an in-batch target, alpha * log(support) when it is a sampled negative; <float32>[N]
    each. (Not normalised: normalising would shift the two column groups by different constants
    and make sampled negatives weigh several times less than in GRU4Rec.)"""

    log_p_target: jax.Array
    log_p_sample: jax.Array
    # Item side features (see network.Features), if any: constants, outside the gradient.
    features: network.Features = None


class TrainState(NamedTuple):
    params: network.Params
    opt_state: optax.OptState
    step: jax.Array


def make_optimizer(cfg: TrainConfig, total_steps: int = 1) -> optax.GradientTransformation:
    match cfg.lr_schedule:
        case "constant":
            lr: float | optax.Schedule = cfg.lr
        case "cosine":
            lr = optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1))
        case "linear":
            lr = optax.linear_schedule(cfg.lr, 0.0, max(total_steps, 1))
    match cfg.optimizer:
        case "adagrad":
            # GRU4Rec's optimiser: Adagrad with eps 1e-6 and optional heavy-ball momentum.
            parts = [optax.scale_by_rss(initial_accumulator_value=0.0, eps=1e-6)]
            if cfg.momentum:
                parts.append(optax.trace(decay=cfg.momentum))
            parts.append(optax.scale_by_learning_rate(lr))
            tx = optax.chain(*parts)
        case "adam":
            tx = optax.adam(lr)
        case "adamw":
            tx = optax.adamw(lr)
        case "sgd":
            tx = optax.sgd(lr, momentum=cfg.momentum or None)
    if cfg.clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx


def init_state(cfg: RunConfig, tx: optax.GradientTransformation) -> TrainState:
    """The initial parameters and optimiser state, computed in one compiled call (run eagerly,
    initialisation compiles a dozen small programs)."""
    return _init_state(cfg, tx)


@partial(jax.jit, static_argnums=(0, 1))
def _init_state(cfg: RunConfig, tx: optax.GradientTransformation) -> TrainState:
    params = network.init_params(cfg.model, cfg.n_items, jax.random.key(cfg.train.seed))
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def item_stats(counts: np.ndarray, alpha: float, features: dict[str, np.ndarray] | None = None) -> ItemStats:
    log_counts = np.log(np.maximum(np.asarray(counts, np.float64), 1.0))
    return ItemStats(
        log_p_target=jnp.asarray(log_counts, jnp.float32),
        log_p_sample=jnp.asarray(alpha * log_counts, jnp.float32),
        features=None if features is None else {k: jnp.asarray(v) for k, v in features.items()},
    )


def chunk_loss(
    params: network.Params,
    cfg: RunConfig,
    carry: network.Carry,
    batch: Batch,
    stats: ItemStats | None,
    key: jax.Array | None,
) -> tuple[jax.Array, tuple[network.Carry, jax.Array]]:
    """The chunk's loss: each step's summed target losses over the nominal batch size B, summed
    over the T steps. Returns (loss, (carry, number of real targets)).

    This gives every target event the weight GRU4Rec's per-step update gives it (its step's loss
    is the batch mean, one update per step): a step where only a few slots are still running
    contributes little instead of a full-size update, and item rows get gradients of GRU4Rec's
    size, well above Adagrad's epsilon. All T*B positions are scored at once, against either the
    full catalogue (--full-softmax) or, as in GRU4Rec, the other sequences' targets at the same
    step plus the chunk's shared sampled negatives (one matrix product for those).
    """
    tc = cfg.train
    features = stats.features if stats is not None else None
    carry, hidden = network.run(params, cfg.model, carry, batch, key, features)
    mask = batch.mask.reshape(-1)
    n = jnp.sum(mask)
    # The nominal batch size, however many slots are active or the chunk is narrowed to.
    per_step = 1.0 / cfg.train.batch_size
    loss = jnp.zeros(())
    if cfg.model.predicts_items:
        per_row = _next_item_loss(params, cfg, hidden, batch, stats)
        weight = mask.astype(jnp.float32)
        if tc.target_weighting and stats is not None:
            # Targets weighted by popularity^-beta, normalised to mean 1 over the chunk's targets:
            # rare items count more, the chunk's total weight stays its number of targets.
            weight = weight * jnp.exp(-tc.target_weighting * stats.log_p_target[batch.targets.reshape(-1)])
            weight = weight * n / jnp.maximum(jnp.sum(weight), 1e-12)
        item_loss = jnp.sum(jnp.where(mask, weight * per_row, 0.0)) * per_step
        loss = loss + cfg.task_weight("next-item") * item_loss
    if cfg.model.predicts_values:
        m = cfg.model
        pred = network.standardised_values(params, hidden, batch.targets)
        target = (batch.target_values - m.value_mean) / m.value_std
        known = batch.mask & ~jnp.isnan(target)  # events without a value teach nothing here
        per = losses.value_loss(pred, jnp.nan_to_num(target), tc.value_loss, tc.huber_delta)
        loss = loss + cfg.task_weight("value") * jnp.sum(jnp.where(known, per, 0.0)) * per_step
    if cfg.model.predicts_events:
        logits = network.event_logits(params, hidden)
        types = batch.target_events
        known = batch.mask & (types >= 0)
        own = jnp.take_along_axis(logits, jnp.maximum(types, 0)[..., None], axis=-1)[..., 0]
        per = jax.nn.logsumexp(logits, axis=-1) - own
        loss = loss + cfg.task_weight("event-type") * jnp.sum(jnp.where(known, per, 0.0)) * per_step
    return loss, (carry, n)


def _next_item_loss(
    params: network.Params, cfg: RunConfig, hidden: jax.Array, batch: Batch, stats: ItemStats | None
) -> jax.Array:
    """<float32>[T*B] next-item loss of every position (padding included; the caller masks)."""
    tc = cfg.train
    h = hidden.reshape(-1, hidden.shape[-1])
    targets = batch.targets.reshape(-1)
    kernel, bias = network.output_layer(params, cfg.model, stats.features if stats is not None else None)
    if tc.full_softmax:
        # [:n_items]: item tables split over devices carry padding rows that are not items.
        return losses.full_cross_entropy((h @ kernel.T + bias)[:, : cfg.n_items], targets)
    n_steps, batch_size = batch.targets.shape
    # Gathering the needed rows keeps the full item table out of the products.
    w_t, b_t = kernel[batch.targets], bias[batch.targets]  # [T, B, H], [T, B]
    in_batch = jnp.einsum("tbh,tch->tbc", hidden, w_t) + b_t[:, None, :]  # [T, B, B]
    # GRU4Rec's log-Q correction: each column group by the probability of drawing the item into
    # it (data popularity for in-batch targets, support^alpha for samples).
    corrected = stats if tc.loss == "ce" and tc.logq else None
    column = bias[batch.negatives]
    if corrected is not None:
        column = column - tc.logq * corrected.log_p_sample[batch.negatives]
    sampled = _with_column_terms(h, kernel[batch.negatives], column)  # [T*B, S]
    if tc.loss == "ce":
        corr_in = None if corrected is None else tc.logq * corrected.log_p_target[batch.targets]  # [T, B]
        return losses.split_cross_entropy(in_batch, sampled, batch.mask, corr_in)
    if tc.loss == "bpr-max":
        return losses.split_bpr_max(in_batch, sampled, batch.mask, tc.bpreg, tc.elu)
    logits = jnp.concatenate([in_batch.reshape(-1, batch_size), sampled], axis=1)
    own = jnp.tile(jnp.arange(batch_size), n_steps)
    valid = jnp.concatenate(
        [
            jnp.broadcast_to(batch.mask[:, None, :], (n_steps, batch_size, batch_size)).reshape(-1, batch_size),
            jnp.ones((n_steps * batch_size, batch.negatives.shape[0]), bool),
        ],
        axis=1,
    )
    return losses.top1_max(logits, own, valid)


def _with_column_terms(h: jax.Array, w: jax.Array, column: jax.Array) -> jax.Array:
    """h @ w.T + column, as one matrix product ([h, 1] against [w, column]): the [rows, S]
    scores, the largest array of a step, are then written once instead of twice."""
    ones = jnp.ones((h.shape[0], 1), h.dtype)
    return _scores(jnp.concatenate([h, ones], axis=1), jnp.concatenate([w, column[:, None]], axis=1))


@jax.custom_vjp
def _scores(h: jax.Array, w: jax.Array) -> jax.Array:
    """<float32>[R, S] = h [R, D] @ w [S, D].T, differentiated as usual but for the order of
    w's gradient product (see `_scores_bwd`)."""
    return h @ w.T


def _scores_fwd(h: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return h @ w.T, (h, w)


def _scores_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    h, w = res
    # w's gradient is g.T @ h [S, D]. XLA's CPU backend runs that product, with both operands
    # contracted on their first axis, at about half the rate of h.T @ g [D, S] (2-core EPYC,
    # 2026-12-06: 3.5 against 1.7 ms at R 640, S 2,048, D 101), and folds a plain transpose of
    # the latter back into the former; the barrier keeps the fast product.
    return g @ w, jax.lax.optimization_barrier(h.T @ g).T


_scores.defvjp(_scores_fwd, _scores_bwd)


def gather_item_rows(tree: Any, rows: jax.Array) -> Any:
    """The item-table leaves of a params-like tree (params, or optimiser state) at `rows`;
    other leaves as they are. Rows past the table (padding) read as zeros."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.take(x, rows, axis=0, mode="fill", fill_value=0) if parallel.is_item_leaf(path) else x, tree
    )


def scatter_item_rows(tree: Any, sub: Any, rows: jax.Array) -> Any:
    """Write `sub`'s item rows back into `tree` (padding rows dropped); other leaves from `sub`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x, s: x.at[rows].set(s, mode="drop") if parallel.is_item_leaf(path) else s, tree, sub
    )


# Catalogues up to this many times a chunk's item ids are marked in a dense [N] array (a scatter
# and a cumulative sum, O(N)); larger ones are sorted (O(ids log ids)). At 3,328 ids a chunk the
# two cost the same near 200k items (2-core Xeon, 2026-12-06); below that the marks are up to
# 10x faster.
DENSE_MARK_RATIO = 32


def touched_rows(batch: Batch, n_items: int) -> tuple[jax.Array, Batch]:
    """The sorted unique item ids a chunk reads (inputs, targets, negatives), padded with
    n_items, and the batch with its item ids renumbered as positions in them. Padding steps
    read none: their id 0 would count item 0 as touched, and with momentum a touched row moves
    even with a zero gradient."""
    real = lambda ids: jnp.where(batch.mask, ids, n_items).ravel()  # noqa: E731
    ids = jnp.concatenate([real(batch.inputs), real(batch.targets), batch.negatives])
    size = ids.shape[0]
    if n_items <= DENSE_MARK_RATIO * size:
        # Position of each item among the touched ones: a running count of the marks. Padding
        # (n_items) is marked too and comes last, so it maps to the first unused position.
        marks = jnp.zeros(n_items + 1, jnp.int32).at[ids].set(1).at[n_items].set(1)
        local = (jnp.cumsum(marks) - 1)[ids].astype(jnp.int32)
        rows = jnp.full(size, n_items, jnp.int32).at[local].set(ids, mode="drop")
    else:
        rows = jnp.unique(ids, size=size, fill_value=n_items)
        local = jnp.searchsorted(rows, ids).astype(jnp.int32)
    n_in = batch.inputs.size
    shape = batch.inputs.shape
    renumbered = batch._replace(
        inputs=local[:n_in].reshape(shape),
        targets=local[n_in : 2 * n_in].reshape(shape),
        negatives=local[2 * n_in :],
    )
    return rows, renumbered


def train_step(
    state: TrainState,
    carry: network.Carry,
    batch: Batch,
    stats: ItemStats,
    base_key: jax.Array,
    *,
    cfg: RunConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, network.Carry, dict[str, jax.Array]]:
    """One optimiser update on one chunk. Pure: jit it in the caller (see `fit`).

    With the sampled output layer only the item rows the chunk touches enter the gradient and
    the optimiser ("lazy" sparse updates, as GRU4Rec does): the full item table is never part of
    a per-step computation. For Adagrad without momentum this equals the dense update exactly;
    with momentum or Adam, untouched rows keep their state instead of decaying.
    """
    if not jax.dtypes.issubdtype(base_key.dtype, jax.dtypes.prng_key):
        base_key = jax.random.wrap_key_data(base_key)  # raw key data, as placed on a mesh by `fit`
    key = jax.random.fold_in(base_key, state.step)
    grad_fn = jax.value_and_grad(chunk_loss, has_aux=True)
    if cfg.train.full_softmax:
        (loss, (carry, n)), grads = grad_fn(state.params, cfg, carry, batch, stats, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
    else:
        n_items = network.n_items(state.params)
        rows, batch_local = touched_rows(batch, n_items)
        stats_local = jax.tree.map(lambda x: jnp.take(x, rows, axis=0, mode="fill", fill_value=0), stats)
        p_sub = gather_item_rows(state.params, rows)
        s_sub = gather_item_rows(state.opt_state, rows)
        (loss, (carry, n)), grads = grad_fn(p_sub, cfg, carry, batch_local, stats_local, key)
        updates, s_sub = tx.update(grads, s_sub, p_sub)
        params = scatter_item_rows(state.params, optax.apply_updates(p_sub, updates), rows)
        opt_state = scatter_item_rows(state.opt_state, s_sub, rows)
    # The state flows into the next chunk, but gradients stop at the chunk boundary (TBPTT).
    carry = jax.lax.stop_gradient(carry)
    # Reported per target: the chunk's loss is a sum over its targets divided by B.
    return TrainState(params, opt_state, state.step + 1), carry, {"loss_sum": loss * cfg.train.batch_size, "n": n}
