"""Training: a pure jitted step over one chunk of the session-parallel stream, and `fit()`.

`train_step` is a pure function of (state, carry, chunk, key); `fit` is the IO shell that owns
batching, validation, checkpoints, metrics.jsonl and the NaN check.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnrec_cli import model
from rnnrec_cli.batches import session_parallel
from rnnrec_cli.config import RunConfig, TrainConfig
from rnnrec_cli.data import read_sequences
from rnnrec_cli.errors import TrainingDiverged
from rnnrec_cli.evaluate import model_ranks
from rnnrec_cli.metrics import summarize
from rnnrec_cli.rundir import RunDir, append_metrics, mark_complete, save_checkpoint

log = logging.getLogger(__name__)

ChunkArrays = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


class TrainState(NamedTuple):
    params: model.Params
    opt_state: optax.OptState
    step: jax.Array


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    match cfg.optimizer:
        case "adagrad":
            # GRU4Rec's optimiser: Adagrad with eps 1e-6 and optional heavy-ball momentum.
            parts = [optax.scale_by_rss(initial_accumulator_value=0.0, eps=1e-6)]
            if cfg.momentum:
                parts.append(optax.trace(decay=cfg.momentum))
            parts.append(optax.scale(-cfg.lr))
            tx = optax.chain(*parts)
        case "adam":
            tx = optax.adam(cfg.lr)
        case "adamw":
            tx = optax.adamw(cfg.lr)
        case "sgd":
            tx = optax.sgd(cfg.lr, momentum=cfg.momentum or None)
    if cfg.clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx


def init_state(cfg: RunConfig, tx: optax.GradientTransformation) -> TrainState:
    params = model.init_params(cfg.model, cfg.n_items, jax.random.key(cfg.train.seed))
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def chunk_loss(
    params: model.Params,
    cfg: RunConfig,
    carry: model.Carry,
    chunk: ChunkArrays,
    key: jax.Array | None,
) -> tuple[jax.Array, tuple[model.Carry, jax.Array]]:
    """Mean cross-entropy over the chunk's real steps, against the full catalogue.

    Returns (mean loss, (carry, number of real target events)).
    """
    inputs, targets, mask, reset = chunk
    carry, hidden = model.run(params, cfg.model, carry, inputs, reset, key)
    logits = model.scores(params, cfg.model, hidden)  # [T, B, N]: one matrix product per chunk
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    n = jnp.sum(mask)
    loss = jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.maximum(n, 1)
    return loss, (carry, n)


def train_step(
    state: TrainState,
    carry: model.Carry,
    chunk: ChunkArrays,
    base_key: jax.Array,
    *,
    cfg: RunConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, model.Carry, dict[str, jax.Array]]:
    """One optimiser update on one chunk. Pure: jit it in the caller (see `fit`)."""
    key = jax.random.fold_in(base_key, state.step)
    grad_fn = jax.value_and_grad(chunk_loss, has_aux=True)
    (loss, (carry, n)), grads = grad_fn(state.params, cfg, carry, chunk, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The state flows into the next chunk, but gradients stop at the chunk boundary (TBPTT).
    carry = jax.lax.stop_gradient(carry)
    return TrainState(params, opt_state, state.step + 1), carry, {"loss_sum": loss * n, "n": n}


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    train_loss: float
    valid: dict[str, float]
    events_per_s: float
    seconds: float
    best: bool


ProgressFn = Callable[[int, int, int], None]


def fit(
    cfg: RunConfig,
    run: RunDir,
    *,
    on_progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> list[EpochReport]:
    """Train for cfg.train.epochs (or until early stopping), validating after each epoch.

    Writes metrics.jsonl (one line per epoch), checkpoints/last.msgpack every epoch and
    checkpoints/best.msgpack whenever the monitored validation metric improves.
    """
    tc = cfg.train
    data_dir = Path(cfg.data_dir)
    train_seqs = read_sequences(data_dir, "train")
    valid_seqs = read_sequences(data_dir, "valid")
    tx = make_optimizer(tc)
    state = init_state(cfg, tx)
    step_fn = jax.jit(partial(train_step, cfg=cfg, tx=tx), donate_argnums=(0, 1))
    base_key = jax.random.key(tc.seed + 1)
    k_eval = _parse_k(tc.monitor)
    best_value, bad_epochs, reports = -math.inf, 0, []
    for epoch in range(1, tc.epochs + 1):
        t0 = time.perf_counter()
        order = np.random.default_rng([tc.seed, epoch]).permutation(len(train_seqs))
        stream = session_parallel(train_seqs, tc.batch_size, tc.bptt, order)
        carry = model.zero_carry(cfg.model, tc.batch_size)
        loss_sum, n_sum = jnp.zeros(()), jnp.zeros((), jnp.int32)
        for k, chunk in enumerate(stream.chunks()):
            state, carry, m = step_fn(state, carry, chunk.as_tuple(), base_key)
            loss_sum, n_sum = loss_sum + m["loss_sum"], n_sum + m["n"]
            if on_progress is not None:
                on_progress(epoch, k + 1, stream.n_chunks)
        train_loss = float(loss_sum / jnp.maximum(n_sum, 1))
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"training loss became {train_loss} in epoch {epoch}; the last good checkpoint "
                f"is kept. Lower --lr (now {tc.lr}) or set --clip-norm"
            )
        valid = {}
        if len(valid_seqs):
            ranks = model_ranks(state.params, cfg, valid_seqs)
            valid = summarize(ranks, sorted({k_eval, 20}))
        value = valid.get(tc.monitor, -train_loss)
        improved = value > best_value
        if improved:
            best_value, bad_epochs = value, 0
            save_checkpoint(run, "best", {"params": state.params})
        else:
            bad_epochs += 1
        save_checkpoint(run, "last", {"state": state, "epoch": epoch})
        report = EpochReport(epoch, train_loss, valid, int(n_sum) / seconds, seconds, improved)
        append_metrics(run, _record(report))
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if tc.patience and bad_epochs >= tc.patience:
            log.info("early stopping after epoch %d: %s did not improve for %d epochs", epoch, tc.monitor, bad_epochs)
            break
    mark_complete(run)
    return reports


def _parse_k(monitor: str) -> int:
    return int(monitor.split("@")[1])


def _record(r: EpochReport) -> dict[str, Any]:
    return {
        "epoch": r.epoch,
        "train/loss": r.train_loss,
        **{f"valid/{k}": v for k, v in r.valid.items()},
        "train/events_per_s": round(r.events_per_s, 1),
        "seconds": round(r.seconds, 3),
        "best": r.best,
    }
