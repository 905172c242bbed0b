"""Training: a pure jitted step over one chunk of the session-parallel stream, and `fit()`.

`train_step` is a pure function of (state, carry, batch, item stats, key); `fit` is the IO shell
that owns batching, negative sampling, validation, checkpoints, metrics.jsonl and the NaN check.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnrec_cli import losses, model, parallel
from rnnrec_cli.batches import Layout, Stream, layout, sample_negatives, sampling_distribution
from rnnrec_cli.config import RunConfig, TrainConfig
from rnnrec_cli.data import Sequences, read_items, read_lengths, read_sequences
from rnnrec_cli.errors import RunDirError, TrainingDiverged
from rnnrec_cli.evaluate import is_leave_one_out, last_target_mask, model_ranks
from rnnrec_cli.features import read_item_features
from rnnrec_cli.metrics import event_accuracy, summarize, value_errors
from rnnrec_cli.plots import learning_curve
from rnnrec_cli.rundir import (
    RunDir,
    append_metrics,
    mark_complete,
    read_metrics,
    restore_checkpoint,
    save_checkpoint,
    write_metrics,
)
from rnnrec_cli.scoring import head_predictions, target_positions

log = logging.getLogger(__name__)

PROGRESS_EVERY = 20  # chunks between host syncs for the progress line
FIRST_CHECKPOINT_S = 20.0  # seconds before a run's first mid-epoch checkpoint

T = TypeVar("T")


class Batch(NamedTuple):
    """One chunk: inputs/targets/mask/reset <[T, B]> (see batches.Chunk), the chunk's shared
    negatives <int32>[n_sample], and, for the value task, the input and target events' values."""

    inputs: jax.Array
    targets: jax.Array
    mask: jax.Array
    reset: jax.Array
    negatives: jax.Array
    input_values: jax.Array | None = None
    target_values: jax.Array | None = None
    input_events: jax.Array | None = None
    target_events: jax.Array | None = None


class ItemStats(NamedTuple):
    """The log-Q correction of each item, as GRU4Rec and the papers define it: log(support) when
    it is an in-batch target, alpha * log(support) when it is a sampled negative; <float32>[N]
    each. (Not normalised: normalising would shift the two column groups by different constants
    and make sampled negatives weigh several times less than in GRU4Rec.)"""

    log_p_target: jax.Array
    log_p_sample: jax.Array
    # Item side features ({"codes": [N, M], "numeric": [N, K]}, see features.py), if any.
    features: dict[str, jax.Array] | None = None


class TrainState(NamedTuple):
    params: model.Params
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
    params = model.init_params(cfg.model, cfg.n_items, jax.random.key(cfg.train.seed))
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def item_stats(counts: np.ndarray, alpha: float, features: dict[str, np.ndarray] | None = None) -> ItemStats:
    log_counts = np.log(np.maximum(np.asarray(counts, np.float64), 1.0))
    return ItemStats(
        log_p_target=jnp.asarray(log_counts, jnp.float32),
        log_p_sample=jnp.asarray(alpha * log_counts, jnp.float32),
        features=None if features is None else {k: jnp.asarray(v) for k, v in features.items()},
    )


def chunk_loss(
    params: model.Params,
    cfg: RunConfig,
    carry: model.Carry,
    batch: Batch,
    stats: ItemStats | None,
    key: jax.Array | None,
) -> tuple[jax.Array, tuple[model.Carry, jax.Array]]:
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
    if stats is not None and stats.features is not None:
        # Constants, not parameters: attached here so they stay out of the gradient.
        params = {**params, "item_features": stats.features}
    carry, hidden = model.run(
        params, cfg.model, carry, batch.inputs, batch.reset, key, batch.input_values, batch.input_events
    )
    mask = batch.mask.reshape(-1)
    n = jnp.sum(mask)
    per_step = 1.0 / batch.mask.shape[1]  # the nominal batch size, however many slots are active
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
        pred = model.standardised_values(params, m, hidden, batch.targets)
        target = (batch.target_values - m.value_mean) / m.value_std
        known = batch.mask & ~jnp.isnan(target)  # events without a value teach nothing here
        per = losses.value_loss(pred, jnp.nan_to_num(target), tc.value_loss, tc.huber_delta)
        loss = loss + cfg.task_weight("value") * jnp.sum(jnp.where(known, per, 0.0)) * per_step
    if cfg.model.predicts_events:
        logits = model.event_logits(params, hidden)
        types = batch.target_events
        known = batch.mask & (types >= 0)
        own = jnp.take_along_axis(logits, jnp.maximum(types, 0)[..., None], axis=-1)[..., 0]
        per = jax.nn.logsumexp(logits, axis=-1) - own
        loss = loss + cfg.task_weight("event-type") * jnp.sum(jnp.where(known, per, 0.0)) * per_step
    return loss, (carry, n)


def _next_item_loss(
    params: model.Params, cfg: RunConfig, hidden: jax.Array, batch: Batch, stats: ItemStats | None
) -> jax.Array:
    """<float32>[T*B] next-item loss of every position (padding included; the caller masks)."""
    tc = cfg.train
    h = hidden.reshape(-1, hidden.shape[-1])
    targets = batch.targets.reshape(-1)
    kernel, bias = model.output_layer(params, cfg.model)
    if tc.full_softmax:
        # [:n_items]: item tables split over devices carry padding rows that are not items.
        return losses.full_cross_entropy((h @ kernel.T + bias)[:, : cfg.n_items], targets)
    n_steps, batch_size = batch.targets.shape
    # Gathering the needed rows keeps the full item table out of the products.
    w_t, b_t = kernel[batch.targets], bias[batch.targets]  # [T, B, H], [T, B]
    in_batch = jnp.einsum("tbh,tch->tbc", hidden, w_t) + b_t[:, None, :]  # [T, B, B]
    sampled = h @ kernel[batch.negatives].T + bias[batch.negatives]  # [T*B, S]
    logits = jnp.concatenate([in_batch.reshape(-1, batch_size), sampled], axis=1)
    own = jnp.tile(jnp.arange(batch_size), n_steps)
    valid = jnp.concatenate(
        [
            jnp.broadcast_to(batch.mask[:, None, :], (n_steps, batch_size, batch_size)).reshape(-1, batch_size),
            jnp.ones((n_steps * batch_size, batch.negatives.shape[0]), bool),
        ],
        axis=1,
    )
    match tc.loss:
        case "ce":
            correction = None
            if tc.logq and stats is not None:
                # GRU4Rec's correction: each column group by the probability of drawing the
                # item into it (data popularity for in-batch targets, support^alpha for samples).
                corr_in = stats.log_p_target[batch.targets]  # [T, B]
                corr_s = stats.log_p_sample[batch.negatives]  # [S]
                correction = tc.logq * jnp.concatenate(
                    [
                        jnp.broadcast_to(corr_in[:, None, :], (n_steps, batch_size, batch_size)).reshape(
                            -1, batch_size
                        ),
                        jnp.broadcast_to(corr_s[None, :], sampled.shape),
                    ],
                    axis=1,
                )
            return losses.cross_entropy(logits, own, valid, correction)
        case "bpr-max":
            return losses.bpr_max(logits, own, valid, tc.bpreg, tc.elu)
        case "top1-max":
            return losses.top1_max(logits, own, valid)


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


def touched_rows(batch: Batch, n_items: int) -> jax.Array:
    """Sorted unique item ids a chunk reads (inputs, targets, negatives), padded with n_items."""
    ids = jnp.concatenate([batch.inputs.ravel(), batch.targets.ravel(), batch.negatives])
    return jnp.unique(ids, size=ids.shape[0], fill_value=n_items)


def train_step(
    state: TrainState,
    carry: model.Carry,
    batch: Batch,
    stats: ItemStats,
    base_key: jax.Array,
    *,
    cfg: RunConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, model.Carry, dict[str, jax.Array]]:
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
        n_items = state.params["out_bias"].shape[0]
        rows = touched_rows(batch, n_items)
        local = lambda ids: jnp.searchsorted(rows, ids).astype(jnp.int32)  # noqa: E731
        batch_local = batch._replace(
            inputs=local(batch.inputs), targets=local(batch.targets), negatives=local(batch.negatives)
        )
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
    return TrainState(params, opt_state, state.step + 1), carry, {"loss_sum": loss * batch.mask.shape[1], "n": n}


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    train_loss: float
    valid: dict[str, float]
    events_per_s: float
    seconds: float
    best: bool
    valid_seconds: float = 0.0


@dataclass(frozen=True)
class Progress:
    epoch: int
    chunk: int
    n_chunks: int
    loss: float | None
    events_per_s: float | None


class _Position(NamedTuple):
    """Where training resumes: chunk `chunk` of epoch `epoch`, with the epoch's running sums."""

    epoch: int
    chunk: int
    carry: model.Carry
    loss_sum: jax.Array
    n_sum: jax.Array
    best_value: float
    bad_epochs: int


class TrainData(NamedTuple):
    """What this process reads of the training split: every sequence's length, and the items
    of either all sequences (one process) or, per epoch, only those its slots run."""

    data_dir: Path
    lengths: np.ndarray
    seqs: Sequences | None
    values: bool = False
    events: tuple[str, ...] | None = None


def load_train_data(data_dir: Path, values: bool = False, events: tuple[str, ...] | None = None) -> TrainData:
    if jax.process_count() > 1:
        return TrainData(data_dir, read_lengths(data_dir, "train"), None, values, events)
    seqs = read_sequences(data_dir, "train", values=values, events=events)
    return TrainData(data_dir, seqs.lengths, seqs, values, events)


def epoch_stream(cfg: RunConfig, data: TrainData, epoch: int, slots: range, plan: Layout | None = None) -> Stream:
    """The epoch's stream for `slots`: a function of (seed, epoch) alone, so a resumed run
    replays exactly the batches an uninterrupted one would see, and every process agrees on
    the layout without talking to the others. `plan`: the unshuffled layout, if already made."""
    tc = cfg.train
    if tc.shuffle:
        order = np.random.default_rng([tc.seed, epoch]).permutation(len(data.lengths))
        plan = layout(data.lengths, tc.batch_size, tc.bptt, order)
    elif plan is None:
        # Prepared sequences are stored by start time; GRU4Rec trains in that order.
        plan = layout(data.lengths, tc.batch_size, tc.bptt)
    if data.seqs is not None:
        return Stream(plan, data.seqs.items, data.seqs.offsets[:-1], tc.bptt, slots, data.seqs.values, data.seqs.events)
    wanted = np.zeros(len(data.lengths), bool)
    wanted[plan.sequences_in(slots)] = True
    mine = read_sequences(data.data_dir, "train", wanted, values=data.values, events=data.events)
    first = np.full(len(data.lengths), -1, np.int64)
    first[wanted] = mine.offsets[:-1]
    return Stream(plan, mine.items, first, tc.bptt, slots, mine.values, mine.events)


def validation_subset(seqs: Sequences, n: int, seed: int) -> Sequences:
    """At most `n` sequences, drawn with a fixed seed (kept in stored order); all when n is 0."""
    if not n or n >= len(seqs):
        return seqs
    keep = np.sort(np.random.default_rng([seed, 2]).choice(len(seqs), n, replace=False))
    lengths = seqs.lengths[keep]
    idx = (
        np.repeat(seqs.offsets[keep], lengths)
        + np.arange(lengths.sum())
        - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    values = None if seqs.values is None else seqs.values[idx]
    events = None if seqs.events is None else seqs.events[idx]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return Sequences(items=seqs.items[idx], offsets=offsets, values=values, events=events)


def chunk_negatives(cfg: RunConfig, cdf: np.ndarray, epoch: int, chunk: int) -> np.ndarray:
    """The chunk's shared negatives, seeded by (seed, epoch, chunk): the same on every process
    and on resume, without holding an epoch's worth in memory."""
    n_sample = 0 if cfg.train.full_softmax or not cfg.model.predicts_items else cfg.train.n_sample
    return sample_negatives(cdf, n_sample, np.random.default_rng([cfg.train.seed, epoch, 1, chunk]))


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """Run the iterator `depth` items ahead in a background thread (batch assembly and the
    host-to-device copy overlap the device's work). Exceptions surface in the consumer."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for x in items:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # re-raised in the consumer
            q.put((done, exc))

    thread = threading.Thread(target=produce, daemon=True, name="rnnrec-prefetch")
    thread.start()
    try:
        while True:
            x, exc = q.get()
            if exc is not None:
                raise exc
            if x is done:
                return
            yield x
    finally:
        stop.set()
        thread.join()


class Trainer(NamedTuple):
    """Where training runs and how host values move to and from it."""

    placement: parallel.Placement
    state_shardings: TrainState
    carry_shardings: Any
    n_items: int

    def place_state(self, host: TrainState) -> TrainState:
        rows = self.placement.item_rows(self.n_items)
        padded = TrainState(parallel.pad_items(host.params, rows), parallel.pad_items(host.opt_state, rows), host.step)
        return self.placement.put(padded, self.state_shardings)

    def host_state(self, state: TrainState) -> TrainState:
        """Gathered, without padding rows: what checkpoints hold, whatever the device count."""
        host = parallel.to_host(state)
        return TrainState(
            parallel.unpad_items(host.params, self.n_items),
            parallel.unpad_items(host.opt_state, self.n_items),
            host.step,
        )

    def place_carry(self, host: model.Carry) -> model.Carry:
        return self.placement.put(host, self.carry_shardings)

    def batch(self, chunk: Any, negatives: np.ndarray, batch_size: int) -> Batch:
        put = partial(self.placement.put_batch, batch_size=batch_size)
        neg = self.placement.put(negatives, self.placement.replicated)
        side = [None if x is None else put(x) for x in (chunk.input_values, chunk.target_values)]
        side += [None if x is None else put(x) for x in (chunk.input_events, chunk.target_events)]
        return Batch(put(chunk.inputs), put(chunk.targets), put(chunk.mask), put(chunk.reset), neg, *side)


def make_trainer(cfg: RunConfig, tx: optax.GradientTransformation) -> tuple[Trainer, TrainState]:
    """The trainer and the initial host state (unpadded)."""
    tc = cfg.train
    placement = parallel.make_placement(tc.devices, tc.shard_items, tc.batch_size)
    host = jax.device_get(init_state(cfg, tx))
    # Shardings depend on which leaf is an item table, not on its (padded or not) length.
    shardings = TrainState(
        placement.state_shardings(host.params), placement.state_shardings(host.opt_state), placement.replicated
    )
    carry = jax.tree.map(lambda _: placement.rows, model.zero_carry(cfg.model, 1))
    return Trainer(placement, shardings, carry, cfg.n_items), host


def _save_last(run: RunDir, trainer: Trainer, state: TrainState, pos: _Position) -> None:
    # Every process takes part in gathering; only the leader writes.
    host = trainer.host_state(state)
    carry = parallel.to_host(pos.carry)
    if not parallel.is_leader():
        return
    save_checkpoint(
        run,
        "last",
        {
            "state": host,
            "carry": carry,
            "epoch": np.int64(pos.epoch),
            "chunk": np.int64(pos.chunk),
            "loss_sum": np.asarray(parallel.to_host(pos.loss_sum)),
            "n_sum": np.asarray(parallel.to_host(pos.n_sum)),
            "best_value": np.float64(pos.best_value),
            "bad_epochs": np.int64(pos.bad_epochs),
        },
    )


def _restore_last(run: RunDir, host: TrainState, carry: model.Carry) -> tuple[TrainState, _Position]:
    template = {
        "state": host,
        "carry": carry,
        "epoch": np.int64(0),
        "chunk": np.int64(0),
        "loss_sum": np.zeros((), np.float32),
        "n_sum": np.zeros((), np.int32),
        "best_value": np.float64(0),
        "bad_epochs": np.int64(0),
    }
    saved = restore_checkpoint(run, "last", template)
    pos = _Position(
        int(saved["epoch"]),
        int(saved["chunk"]),
        saved["carry"],
        saved["loss_sum"],
        saved["n_sum"],
        float(saved["best_value"]),
        int(saved["bad_epochs"]),
    )
    return TrainState(*saved["state"]), pos


def fit(
    cfg: RunConfig,
    run: RunDir,
    *,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> list[EpochReport]:
    """Train for cfg.train.epochs (or until early stopping), validating after each epoch.

    Writes metrics.jsonl (one line per epoch), checkpoints/best.msgpack whenever the monitored
    validation metric improves, and checkpoints/last.msgpack (the whole training state and the
    position in the data) at every epoch end and every `checkpoint_every` seconds. With
    `resume`, training continues from last.msgpack and ends as an uninterrupted run would.

    On several devices or processes the batch is split over them (see `parallel`); every
    process runs this same function, and only process 0 writes the run directory.
    """
    tc = cfg.train
    data_dir = Path(cfg.data_dir)
    leader = parallel.is_leader()
    counts = read_items(data_dir).sort("idx")["count"].to_numpy()
    if len(counts) != cfg.n_items:
        raise RunDirError(f"{data_dir} has {len(counts)} items but the run's config says {cfg.n_items}")
    values = cfg.model.predicts_values
    events = cfg.model.event_types if cfg.model.predicts_events or cfg.model.event_input else None
    train_data = load_train_data(data_dir, values, events)
    valid_seqs = validation_subset(
        read_sequences(data_dir, "valid", values=values, events=events), tc.valid_sample, tc.seed
    )
    loo = is_leave_one_out(data_dir)
    valid_last = last_target_mask(valid_seqs)
    has_valid = bool(len(valid_seqs) and valid_seqs.n_targets)
    if not has_valid:
        log.warning(
            "no validation split: the last epoch's model is kept (prepare with --valid 1d, --valid 0.1 or "
            "--valid FILE to pick the best epoch and to stop early)"
        )
    cdf = np.cumsum(sampling_distribution(counts, tc.sample_alpha))
    # Schedules need the run's length; epochs differ by a chunk or two with the shuffled order.
    plan = layout(train_data.lengths, tc.batch_size, tc.bptt)
    chunks_per_epoch = plan.n_steps // tc.bptt
    tx = make_optimizer(tc, total_steps=chunks_per_epoch * tc.epochs)
    trainer, host = make_trainer(cfg, tx)
    placement = trainer.placement
    slots = placement.local_slots(tc.batch_size)
    features = read_item_features(data_dir) if cfg.model.item_features else None
    if cfg.model.item_features and features is None:
        raise RunDirError(f"{data_dir} has no item_features.parquet, but the run's config uses item features")
    stats = placement.put(jax.device_get(item_stats(counts, tc.sample_alpha, features)), placement.replicated)
    zero_host = jax.device_get(model.zero_carry(cfg.model, tc.batch_size))
    pos = _Position(1, 0, zero_host, np.zeros((), np.float32), np.zeros((), np.int32), -math.inf, 0)
    if resume:
        host, pos = _restore_last(run, host, zero_host)
        if leader:
            write_metrics(run, [r for r in read_metrics(run) if r["epoch"] < pos.epoch])
        log.info("resuming at epoch %d, chunk %d", pos.epoch, pos.chunk)
    state = trainer.place_state(host)
    del host
    step_fn = jax.jit(
        partial(train_step, cfg=cfg, tx=tx),
        donate_argnums=(0, 1),
        out_shardings=(trainer.state_shardings, trainer.carry_shardings, placement.replicated),
    )
    base_key = placement.put(jax.random.key_data(jax.random.key(tc.seed + 1)), placement.replicated)
    k_eval = int(tc.monitor.split("@")[1]) if "@" in tc.monitor else 20
    reports: list[EpochReport] = []
    best_value, bad_epochs = pos.best_value, pos.bad_epochs
    stream: Stream | None = None
    saved_once = resume
    for epoch in range(pos.epoch, tc.epochs + 1):
        if tc.patience and bad_epochs >= tc.patience:
            break
        if stream is None or tc.shuffle:
            stream = epoch_stream(cfg, train_data, epoch, slots, plan)
        start = pos.chunk if epoch == pos.epoch else 0
        carry_host, loss_sum, n_sum = (pos.carry, pos.loss_sum, pos.n_sum) if start else (zero_host, 0.0, 0)
        carry = trainer.place_carry(carry_host)
        n_start = int(n_sum)
        t0 = t_ckpt = t_last = time.perf_counter()
        n_last = n_start

        def batches(stream: Stream = stream, epoch: int = epoch, start: int = start) -> Iterator[tuple[int, Batch]]:
            for k in range(start, stream.n_chunks):
                yield k, trainer.batch(stream.chunk(k), chunk_negatives(cfg, cdf, epoch, k), tc.batch_size)

        # Closed on the way out of an exception too (Ctrl-C): the prefetch thread must stop before
        # the interpreter does, or it runs on into a torn-down runtime.
        with closing(prefetch(batches(), tc.prefetch)) as chunks:
            for k, batch in chunks:
                state, carry, m = step_fn(state, carry, batch, stats, base_key)
                loss_sum, n_sum = loss_sum + m["loss_sum"], n_sum + m["n"]
                if on_progress is not None and ((k + 1) % PROGRESS_EVERY == 0 or k + 1 == stream.n_chunks):
                    now, n_now = time.perf_counter(), int(n_sum)
                    loss = float(loss_sum / max(n_now, 1))
                    on_progress(
                        Progress(epoch, k + 1, stream.n_chunks, loss, (n_now - n_last) / max(now - t_last, 1e-9))
                    )
                    t_last, n_last = now, n_now
                # The first checkpoint of a run comes early, so that even an interrupted first epoch resumes.
                every = tc.checkpoint_every if saved_once else min(tc.checkpoint_every, FIRST_CHECKPOINT_S)
                if tc.checkpoint_every and time.perf_counter() - t_ckpt >= every:
                    saved_once = True
                    if _all_finite(state.params) and math.isfinite(float(loss_sum)):
                        _save_last(
                            run, trainer, state, _Position(epoch, k + 1, carry, loss_sum, n_sum, best_value, bad_epochs)
                        )
                    t_ckpt = time.perf_counter()
        seconds = time.perf_counter() - t0
        n_total = int(n_sum)
        train_loss = float(loss_sum / max(n_total, 1))
        if not math.isfinite(train_loss) or not _all_finite(state.params):
            raise TrainingDiverged(
                f"training loss became {train_loss} in epoch {epoch}; the last good checkpoint is kept. "
                f"Lower --lr (now {tc.lr}) or set --clip-norm"
            )
        params = parallel.unpad_items(parallel.to_host(state.params), cfg.n_items)
        scoring_params = params if features is None else {**params, "item_features": features}
        t_valid = time.perf_counter()
        valid = _validate(scoring_params, cfg, valid_seqs, valid_last if loo else None, k_eval)
        valid_seconds = time.perf_counter() - t_valid
        # Higher is better: error metrics are negated. Without validation every epoch "improves",
        # so the last one is kept (a training loss says nothing about held-out accuracy).
        value = -valid[tc.monitor] if tc.monitor in ("rmse", "mae") else valid.get(tc.monitor, float(epoch))
        improved = value > best_value or not has_valid
        if improved:
            best_value, bad_epochs = value, 0
            if leader:
                save_checkpoint(run, "best", {"params": params})
        else:
            bad_epochs += 1
        report = EpochReport(epoch, train_loss, valid, (n_total - n_start) / seconds, seconds, improved, valid_seconds)
        if leader:
            append_metrics(run, _record(report))
        _save_last(
            run,
            trainer,
            state,
            _Position(
                epoch + 1, 0, zero_host, np.zeros((), np.float32), np.zeros((), np.int32), best_value, bad_epochs
            ),
        )
        saved_once = True
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if tc.patience and bad_epochs >= tc.patience:
            log.info("early stopping after epoch %d: %s did not improve for %d epochs", epoch, tc.monitor, bad_epochs)
    if leader:
        learning_curve(read_metrics(run), run.path / "learning_curve.png", tc.monitor)
        mark_complete(run)
    return reports


def _validate(
    params: model.Params, cfg: RunConfig, seqs: Sequences, last: np.ndarray | None, k_eval: int
) -> dict[str, float]:
    """Validation metrics of the tasks the model has ({} without a validation split). Every
    process computes them itself on the same split: no traffic, the same answer."""
    if not len(seqs) or not seqs.n_targets:
        return {}
    keep = last if last is not None else slice(None)
    out: dict[str, float] = {}
    if cfg.model.predicts_items:
        out.update(summarize(model_ranks(params, cfg, seqs)[keep], sorted({k_eval, 20})))
    if cfg.model.predicts_values or cfg.model.predicts_events:
        heads = head_predictions(params, cfg, seqs)
        at = target_positions(seqs)
        if "value" in heads:
            assert seqs.values is not None
            errors = value_errors(heads["value"][keep], seqs.values[at][keep])
            out.update(rmse=errors["rmse"], mae=errors["mae"])
        if "event" in heads:
            assert seqs.events is not None
            out["accuracy"] = event_accuracy(heads["event"][keep], seqs.events[at][keep])
    return out


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def _record(r: EpochReport) -> dict[str, Any]:
    return {
        "epoch": r.epoch,
        "train/loss": r.train_loss,
        **{f"valid/{k}": v for k, v in r.valid.items()},
        "train/events_per_s": round(r.events_per_s, 1),
        "seconds": round(r.seconds, 3),
        "valid_seconds": round(r.valid_seconds, 3),
        "best": r.best,
    }
