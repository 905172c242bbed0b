"""Top-K recommendations for new sequences, in the original item ids of the input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from rnnrec_cli import model
from rnnrec_cli.config import ModelConfig, PrepareConfig, from_dict, load_json
from rnnrec_cli.data import check_times, drop_consecutive_repeats, materialized_inputs, scan_events, sessionize
from rnnrec_cli.errors import DataError
from rnnrec_cli.evaluate import restore_params
from rnnrec_cli.rundir import RunDir, load_config

PREDICT_BATCH = 256
_MIN_LEN = 8


@dataclass(frozen=True)
class PredictResult:
    recs: pl.DataFrame
    n_sequences: int
    n_events: int
    unknown_events: int
    empty_sequences: int


def run_prepare_config(run: RunDir, overrides: dict[str, Any]) -> PrepareConfig:
    """The column mapping and sessionization the run was trained with, plus explicit overrides."""
    manifest = load_json(run.data_manifest)
    values = {**manifest["config"], **{k: v for k, v in overrides.items() if v is not None}}
    return from_dict(PrepareConfig, values, where=str(run.data_manifest))


def top_k_after(
    params: model.Params,
    inputs: jax.Array,
    reset: jax.Array,
    valid: jax.Array,
    *,
    cfg: ModelConfig,
    k: int,
    exclude_seen: bool,
) -> tuple[jax.Array, jax.Array]:
    """Top-k items after each left-padded sequence.

    inputs/reset/valid: [L, B]; the first real step of each column has reset=True, so the padding
    before it never reaches the state. Returns (<float32>[B, k] scores, <int32>[B, k] items).
    """
    batch = inputs.shape[1]
    carry, _ = model.run(params, cfg, model.zero_carry(cfg, batch), inputs, reset)
    scores = model.scores(params, cfg, model.last_hidden(cfg, carry))
    if exclude_seen:
        cols = jnp.where(valid, inputs, scores.shape[1])  # out of range -> dropped
        rows = jnp.broadcast_to(jnp.arange(batch)[None, :], inputs.shape)
        scores = scores.at[rows, cols].set(-jnp.inf, mode="drop")
    return jax.lax.top_k(scores, k)


_top_k_after = jax.jit(top_k_after, static_argnames=("cfg", "k", "exclude_seen"))


def _bucket(n: int) -> int:
    return max(_MIN_LEN, 1 << (n - 1).bit_length())


def recommend(
    params: model.Params,
    cfg: ModelConfig,
    seqs: Sequence[np.ndarray],
    k: int,
    exclude_seen: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, item indices) for each non-empty index sequence: [n, k] each."""
    n = len(seqs)
    out_s = np.zeros((n, k), np.float32)
    out_i = np.zeros((n, k), np.int32)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for lo in range(0, n, PREDICT_BATCH):
        idx = order[lo : lo + PREDICT_BATCH]
        length = _bucket(max(len(seqs[i]) for i in idx))
        inputs = np.zeros((length, PREDICT_BATCH), np.int32)
        reset = np.zeros((length, PREDICT_BATCH), bool)
        valid = np.zeros((length, PREDICT_BATCH), bool)
        for col, i in enumerate(idx):
            s = seqs[i]
            inputs[length - len(s) :, col] = s
            valid[length - len(s) :, col] = True
            reset[length - len(s), col] = True
        s, it = _top_k_after(params, inputs, reset, valid, cfg=cfg, k=k, exclude_seen=exclude_seen)
        out_s[idx] = np.asarray(s)[: len(idx)]
        out_i[idx] = np.asarray(it)[: len(idx)]
    return out_s, out_i


def predict(
    run: RunDir,
    inputs: Sequence[str],
    *,
    k: int = 20,
    exclude_seen: bool = True,
    overrides: dict[str, Any] | None = None,
) -> PredictResult:
    """Read raw events as the run was trained, and recommend k items after each sequence.

    A sequence is a session when the data has a session column, else a user's most recent
    session (or whole history when the run used no inactivity gap).
    """
    cfg = load_config(run)
    pcfg = run_prepare_config(run, overrides or {})
    if k > cfg.n_items:
        raise DataError(f"-k {k} is larger than the catalogue ({cfg.n_items} items); lower -k")
    items = pl.read_parquet(run.items).sort("idx")
    with materialized_inputs(inputs) as paths:
        lf, pcfg = scan_events(paths, pcfg)
        raw = lf.collect()
    df = sessionize(check_times(raw, pcfg).drop_nulls(["item", "ts"]).lazy(), pcfg).collect()
    key = "session" if pcfg.session_col is not None else "user"
    n_events = df.height
    # The recommendation is for the current sequence: a user's last session.
    df = df.filter(pl.col("seq") == pl.col("seq").max().over(key))
    known = df.join(items.select(pl.col("item_id").alias("item"), "idx"), on="item", how="inner", maintain_order="left")
    unknown = df.height - known.height
    known = known.rename({"item": "orig_item"}).rename({"idx": "item"})
    if pcfg.dedupe_consecutive:
        known = drop_consecutive_repeats(known)
    order = df.group_by(key).agg(first=pl.col("_row").min()).sort("first")
    grouped = known.group_by(key).agg(pl.col("item")).join(order, on=key).sort("first")
    seqs = [np.asarray(s, np.int32) for s in grouped["item"].to_list()]
    params = restore_params(run, cfg)
    scores, idx = (
        recommend(params, cfg.model, seqs, k, exclude_seen)
        if seqs
        else (
            np.zeros((0, k), np.float32),
            np.zeros((0, k), np.int32),
        )
    )
    n = len(seqs)
    recs = pl.DataFrame(
        {
            "session_id": grouped[key].gather(np.repeat(np.arange(n), k)),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            "item_id": items["item_id"].gather(idx.reshape(-1)),
            "score": scores.reshape(-1),
        }
    )
    # -inf marks excluded items when a sequence has seen nearly the whole catalogue.
    recs = recs.filter(pl.col("score").is_finite())
    return PredictResult(
        recs=recs,
        n_sequences=n,
        n_events=n_events,
        unknown_events=unknown,
        empty_sequences=order.height - n,
    )
