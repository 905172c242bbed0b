"""Training runs: `start_run` sets up a run directory and its config, `fit` trains it.

`fit` is the IO shell around the pure step (step.py): data, placement on devices, resume,
checkpoints, progress, validation, early stopping and the learning curve. Its loop is plain:
`run_epoch`, `validate`, keep the best, stop when patience runs out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnrec_cli import allocator, rundir
from rnnrec_cli.compiled import make_room
from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.batches import (
    Batch,
    Layout,
    Stream,
    TrainData,
    chunk_negatives,
    epoch_stream,
    layout,
    load_train_data,
    prefetch,
    sampling_distribution,
    validation_subset,
)
from rnnrec_cli.data.features import read_item_features
from rnnrec_cli.data.sequences import (
    Sequences,
    is_leave_one_out,
    item_counts,
    read_sequences,
    validation_targets,
)
from rnnrec_cli.errors import RunDirError, TrainingDiverged
from rnnrec_cli.model import network, parallel, weights
from rnnrec_cli.model.step import ItemStats, TrainState, item_stats, make_optimizer, train_step
from rnnrec_cli.rundir import RunDir
from rnnrec_cli.training.checkpoint import Position, Trainer, make_trainer, restore_last, save_last
from rnnrec_cli.training.compile import compile_ahead, shut_down
from rnnrec_cli.training.holdout import choose, held_out, held_sequences
from rnnrec_cli.training.plots import learning_curve
from rnnrec_cli.training.validate import validate

log = logging.getLogger(__name__)

PROGRESS_EVERY = 20  # chunks between host syncs for the progress line
FIRST_CHECKPOINT_S = 20.0  # seconds before a run's first mid-epoch checkpoint


# ---------------------------------------------------------------------------- training


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    train_loss: float
    valid: dict[str, float]
    events_per_s: float
    seconds: float
    best: bool
    valid_seconds: float = 0.0
    # Seconds of the steps that compiled it (the first at each batch width; 0 in later epochs),
    # left out of events_per_s.
    compile_seconds: float = 0.0


class _EpochRun(NamedTuple):
    """What `run_epoch` did: the state and position at its end (with the epoch's loss and target
    sums), its seconds, the targets trained on, whether a checkpoint exists yet, and the
    seconds of the steps that compiled it."""

    state: TrainState
    end: Position
    seconds: float
    n_trained: int
    saved_once: bool
    compile_seconds: float


@dataclass(frozen=True)
class Progress:
    epoch: int
    chunk: int
    n_chunks: int
    loss: float | None
    events_per_s: float | None


def _step_and_sum(
    state: TrainState,
    carry: network.Carry,
    sums: tuple[jax.Array, jax.Array],
    batch: Batch,
    stats: ItemStats,
    key: jax.Array,
    *,
    cfg: RunConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, network.Carry, tuple[jax.Array, jax.Array]]:
    """The training step, adding its loss and target count to the epoch's running sums."""
    state, carry, m = train_step(state, carry, batch, stats, key, cfg=cfg, tx=tx)
    return state, carry, (sums[0] + m["loss_sum"], sums[1] + m["n"])


class _Session(NamedTuple):
    """What the epoch loop needs, set up once by `_setup`."""

    cfg: RunConfig
    run: RunDir
    trainer: Trainer
    # jit(train_step): (state, carry, sums, batch, stats, key) -> (state, carry, sums); lowered ahead in compile.py.
    step_fn: jax.stages.Wrapped
    stats: ItemStats
    base_key: jax.Array
    cdf: np.ndarray
    data: TrainData
    plan: Layout
    slots: range
    valid: Sequences
    # <bool>[n_targets] of the validation split with leave-one-out (score last events only).
    valid_last: np.ndarray | None
    features: dict[str, np.ndarray] | None
    zero_carry: network.Carry
    leader: bool
    # Narrow the epoch's tail in multiples of this (the device count), or None: full width.
    narrow_by: int | None
    # The earliest training sequences held out until the repeat weight is chosen (training.holdout).
    held: int


def _setup(cfg: RunConfig, run: RunDir, resume: bool) -> tuple[_Session, TrainState, Position]:
    """Data, optimiser, placement, the jitted step, and the state and position to start from."""
    tc = cfg.train
    data_dir = rundir.data_dir(run, cfg)
    counts = item_counts(data_dir)
    if len(counts) != cfg.n_items:
        raise RunDirError(f"{data_dir} has {len(counts)} items but the run's config says {cfg.n_items}")
    values = cfg.model.predicts_values
    events = cfg.model.event_types if cfg.model.predicts_events or cfg.model.event_input else None
    train_data = load_train_data(data_dir, values, events, per_epoch=jax.process_count() > 1)
    valid = validation_subset(read_sequences(data_dir, "valid", values=values, events=events), tc.valid_sample, tc.seed)
    if not valid.n_targets:
        log.warning(
            "no validation split: the last epoch's model is kept (prepare with --valid 1d, --valid 0.1 or "
            "--valid FILE to pick the best epoch and to stop early)"
        )
    n_seqs = len(train_data.lengths)
    # One epoch has no earlier epoch to hold sequences out of: it chooses no weight.
    choosing = cfg.model.predicts_items and not valid.n_targets and tc.epochs > 1
    held = held_out(n_seqs, tc.repeat_holdout) if choosing else 0
    if held:
        log.info("the earliest %d training sequences sit out until the last epoch, to choose the repeat weight", held)
    # Schedules need the run's length; epochs differ by a chunk or two with the shuffled order.
    plan = layout(train_data.lengths, tc.batch_size, tc.bptt, np.arange(held, n_seqs) if held else None)
    tx = make_optimizer(tc, total_steps=plan.n_steps // tc.bptt * tc.epochs)
    trainer, host = make_trainer(cfg, tx)
    placement = trainer.placement
    features = read_item_features(data_dir) if cfg.model.item_features else None
    if cfg.model.item_features and features is None:
        raise RunDirError(f"{data_dir} has no item_features.parquet, but the run's config uses item features")
    zero_host = jax.device_get(network.zero_carry(cfg.model, tc.batch_size))
    pos = Position(1, 0, zero_host, np.zeros((), np.float32), np.zeros((), np.int32), -math.inf, 0)
    if resume:
        host, pos = restore_last(run, host, zero_host)
        if parallel.is_leader():
            rundir.write_metrics(run, [r for r in rundir.read_metrics(run) if r["epoch"] < pos.epoch])
        log.info("resuming at epoch %d, chunk %d", pos.epoch, pos.chunk)
    step_fn = jax.jit(
        partial(_step_and_sum, cfg=cfg, tx=tx),
        donate_argnums=(0, 1, 2),
        out_shardings=(trainer.state_shardings, trainer.carry_shardings, placement.replicated),
    )
    session = _Session(
        cfg=cfg,
        run=run,
        trainer=trainer,
        step_fn=step_fn,
        stats=placement.put(jax.device_get(item_stats(counts, tc.sample_alpha, features)), placement.replicated),
        base_key=placement.put(jax.random.key_data(jax.random.key(tc.seed + 1)), placement.replicated),
        cdf=np.cumsum(sampling_distribution(counts, tc.sample_alpha)),
        data=train_data,
        plan=plan,
        slots=placement.local_slots(tc.batch_size),
        valid=valid,
        valid_last=validation_targets(valid, is_leave_one_out(data_dir)),
        features=features,
        zero_carry=zero_host,
        leader=parallel.is_leader(),
        # A process of a multi-host run supplies a fixed share of the slots: keep the full width.
        narrow_by=placement.n_devices if tc.narrow_tail and jax.process_count() == 1 else None,
        held=held,
    )
    return session, trainer.place_state(host), pos


def fit(
    cfg: RunConfig,
    run: RunDir,
    *,
    resume: bool = False,
    finish: bool = True,
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
    allocator.keep_freed_memory()
    make_room()  # before this run compiles anything: a long process (tune) keeps every program
    tc = cfg.train
    s, state, pos = _setup(cfg, run, resume)
    has_valid = bool(s.valid.n_targets)
    reports: list[EpochReport] = []
    stream: Stream | None = None
    saved_once, compiled = resume, set[int]()
    for epoch in range(pos.epoch, tc.epochs + 1):
        if tc.patience and pos.bad_epochs >= tc.patience:
            break
        choice_seconds = 0.0
        if s.held and epoch == tc.epochs:
            if pos.chunk == 0:  # a run resumed inside the last epoch chose before it stopped
                t_choice = time.perf_counter()
                _choose_on_held(s, state)
                choice_seconds = time.perf_counter() - t_choice
            # The last epoch is a whole one: the held-out sequences first, in their time order.
            stream = epoch_stream(cfg, s.data, epoch, s.slots, None, s.narrow_by)
        elif stream is None or tc.shuffle:
            stream = epoch_stream(cfg, s.data, epoch, s.slots, s.plan, s.narrow_by, _kept(s))
        done = run_epoch(s, state, stream, epoch, pos, saved_once, compiled, on_progress)
        state, end, seconds, saved_once = done.state, done.end, done.seconds, done.saved_once
        train_loss = float(end.loss_sum / max(int(end.n_sum), 1))
        if not math.isfinite(train_loss) or not _all_finite(state.params):
            raise TrainingDiverged(
                f"training loss became {train_loss} in epoch {epoch}; the last good checkpoint is kept. "
                f"Lower --lr (now {tc.lr}) or set --clip-norm"
            )
        params = parallel.unpad_items(parallel.to_host(state.params), cfg.n_items)
        t_valid = time.perf_counter()
        valid = validate(params, cfg, s.valid, s.valid_last, s.features)
        valid_seconds = time.perf_counter() - t_valid
        # Higher is better: error metrics are negated. Without validation every epoch "improves",
        # so the last one is kept (a training loss says nothing about held-out accuracy).
        value = -valid[tc.monitor] if tc.monitor in ("rmse", "mae") else valid.get(tc.monitor, float(epoch))
        improved = value > pos.best_value or not has_valid
        best_value, bad_epochs = (value, 0) if improved else (pos.best_value, pos.bad_epochs + 1)
        if improved and s.leader:
            weights.save_checkpoint(run, "best", {"params": params}, epoch=epoch)
        rate = done.n_trained / max(seconds - done.compile_seconds, 1e-9)
        seconds, valid_seconds = seconds + choice_seconds, valid_seconds + choice_seconds
        report = EpochReport(epoch, train_loss, valid, rate, seconds, improved, valid_seconds, done.compile_seconds)
        if s.leader:
            rundir.append_metrics(run, _record(report))
        zeros = (np.zeros((), np.float32), np.zeros((), np.int32))
        pos = Position(epoch + 1, 0, s.zero_carry, *zeros, best_value, bad_epochs)
        save_last(run, s.trainer, state, pos)
        saved_once = True
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if tc.patience and bad_epochs >= tc.patience:
            log.info("early stopping after epoch %d: %s did not improve for %d epochs", epoch, tc.monitor, bad_epochs)
    if has_valid and tc.repeat_holdout and cfg.model.predicts_items and s.leader:
        # On the model training keeps: the best epoch's, which need not be the last.
        best, _ = weights.read_params(run, cfg)
        choose(run.path, best, cfg, s.valid, s.valid_last, s.features, "valid", write=True)
    if s.leader:
        learning_curve(rundir.read_metrics(run), run.path / "learning_curve.png", tc.monitor)
        if finish:
            rundir.finish(run)
    return reports


def run_epoch(
    s: _Session,
    state: TrainState,
    stream: Stream,
    epoch: int,
    pos: Position,
    saved_once: bool,
    compiled: set[int],
    on_progress: Callable[[Progress], None] | None,
) -> _EpochRun:
    """One epoch from `pos` (its chunk, when the run resumes mid-epoch). The first step at each
    batch width not yet in `compiled` (updated) is waited for and timed: its compilation."""
    tc = s.cfg.train
    start = pos.chunk if epoch == pos.epoch else 0
    carry_host, loss_sum, n_sum = (pos.carry, pos.loss_sum, pos.n_sum) if start else (s.zero_carry, 0.0, 0)
    carry = s.trainer.place_carry(carry_host)
    n_start = n_last = int(n_sum)
    # The epoch's sums stay on the device, updated inside the step: the loop never waits for a
    # chunk's result, except to show progress every PROGRESS_EVERY chunks.
    sums = s.trainer.placement.put((np.float32(loss_sum), np.int32(n_sum)), s.trainer.placement.replicated)
    t0 = t_ckpt = t_last = time.perf_counter()

    def device_chunk(k: int) -> Batch:
        width = tc.batch_size if stream.widths is None else stream.width(k)
        return s.trainer.batch(stream.chunk(k), chunk_negatives(s.cfg, s.cdf, epoch, k), width)

    def batches() -> Iterator[tuple[int, Batch]]:
        for k in range(start, stream.n_chunks):
            yield k, device_chunk(k)

    pending = compile_ahead(s, (state, carry, sums), stream, start, compiled, device_chunk)

    # Closed on the way out of an exception too (Ctrl-C): the prefetch thread must stop before
    # the interpreter does, or it runs on into a torn-down runtime.
    compile_seconds = 0.0
    with shut_down(pending), closing(prefetch(batches(), tc.prefetch)) as chunks:
        for k, batch in chunks:
            width = batch.mask.shape[1]
            if width != network.carry_width(carry):
                carry = network.resize_carry(carry, width)  # the slots after `width` have run dry
            t_step = time.perf_counter()
            if width in pending:
                pending.pop(width).result()  # waiting for it is compile time too
            state, carry, sums = s.step_fn(state, carry, sums, batch, s.stats, s.base_key)
            if width not in compiled:
                jax.block_until_ready(sums)
                compile_seconds += time.perf_counter() - t_step
                compiled.add(width)
            loss_sum, n_sum = sums
            if on_progress is not None and ((k + 1) % PROGRESS_EVERY == 0 or k + 1 == stream.n_chunks):
                now, n_now = time.perf_counter(), int(n_sum)
                rate = (n_now - n_last) / max(now - t_last, 1e-9)
                on_progress(Progress(epoch, k + 1, stream.n_chunks, float(loss_sum / max(n_now, 1)), rate))
                t_last, n_last = now, n_now
            # The first checkpoint of a run comes early, so that even an interrupted first epoch resumes.
            every = tc.checkpoint_every if saved_once else min(tc.checkpoint_every, FIRST_CHECKPOINT_S)
            if tc.checkpoint_every and time.perf_counter() - t_ckpt >= every:
                saved_once = True
                if _all_finite(state.params) and math.isfinite(float(loss_sum)):
                    full = network.resize_carry(carry, tc.batch_size)
                    here = Position(epoch, k + 1, full, loss_sum, n_sum, pos.best_value, pos.bad_epochs)
                    save_last(s.run, s.trainer, state, here)
                t_ckpt = time.perf_counter()
    full = network.resize_carry(carry, tc.batch_size)
    end = Position(epoch, stream.n_chunks, full, loss_sum, n_sum, pos.best_value, pos.bad_epochs)
    return _EpochRun(state, end, time.perf_counter() - t0, int(n_sum) - n_start, saved_once, compile_seconds)


def _kept(s: _Session) -> np.ndarray | None:
    """The training sequences the epochs before the last run: all but the held-out ones."""
    return np.arange(s.held, len(s.data.lengths)) if s.held else None


def _choose_on_held(s: _Session, state: TrainState) -> None:
    """The repeat weight, chosen on the held-out sequences by the model as it stands before the
    last epoch, which trains on them (every process computes it, as validation; one writes it)."""
    params = parallel.unpad_items(parallel.to_host(state.params), s.cfg.n_items)
    held = held_sequences(s.data, s.held)
    choose(s.run.path, params, s.cfg, held, validation_targets(held, False), s.features, "holdout", s.leader)


def _all_finite(tree: Any) -> bool:
    return bool(_finite(tree))


@jax.jit
def _finite(tree: Any) -> jax.Array:
    """One compiled check of every leaf (eagerly, each leaf shape compiles its own programs)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _record(r: EpochReport) -> dict[str, Any]:
    return {
        "epoch": r.epoch,
        "train/loss": r.train_loss,
        **{f"valid/{k}": v for k, v in r.valid.items()},
        "train/events_per_s": round(r.events_per_s, 1),
        "seconds": round(r.seconds, 3),
        "valid_seconds": round(r.valid_seconds, 3),
        "compile_seconds": round(r.compile_seconds, 3),
        "best": r.best,
    }
