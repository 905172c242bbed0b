"""Evaluation: next-item ranks at every position of every sequence, against the full catalogue.

The hidden state starts at zero for each sequence (reset in the session-parallel stream) and
only real targets count; training positions are never scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_cli import model
from rnnrec_cli.batches import longest_first, session_parallel
from rnnrec_cli.config import RunConfig, Ties, save_json
from rnnrec_cli.data import Sequences, read_items, read_sequences
from rnnrec_cli.errors import DataError
from rnnrec_cli.metrics import popularity_ranks, summarize, target_ranks
from rnnrec_cli.rundir import RunDir, load_config, restore_checkpoint

EVAL_BPTT = 32


def chunk_ranks(
    params: model.Params,
    carry: model.Carry,
    inputs: jax.Array,
    targets: jax.Array,
    reset: jax.Array,
    *,
    cfg: RunConfig,
    ties: Ties,
) -> tuple[model.Carry, jax.Array]:
    """Ranks <float32>[T, B] of each step's target; the [B, N] scores exist one step at a time."""
    carry, hidden = model.run(params, cfg.model, carry, inputs, reset)

    def one_step(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        h, t = args
        return target_ranks(model.scores(params, cfg.model, h), t, ties)

    return carry, jax.lax.map(one_step, (hidden, targets))


# Configs are frozen and hashable, so one compiled function serves every epoch's validation.
_chunk_ranks = jax.jit(chunk_ranks, static_argnames=("cfg", "ties"))


def model_ranks(params: model.Params, cfg: RunConfig, seqs: Sequences, ties: Ties = "conservative") -> np.ndarray:
    """Ranks of every target event (positions 2..L of each sequence), in stream order."""
    batch = cfg.train.eval_batch_size
    stream = session_parallel(seqs, batch, EVAL_BPTT, longest_first(seqs))
    carry = model.zero_carry(cfg.model, batch)
    out = []
    for chunk in stream.chunks():
        carry, ranks = _chunk_ranks(params, carry, chunk.inputs, chunk.targets, chunk.reset, cfg=cfg, ties=ties)
        out.append((ranks, chunk.mask))
    return np.concatenate([np.asarray(r)[m] for r, m in out]) if out else np.zeros(0, np.float32)


def stream_targets(seqs: Sequences, batch: int) -> np.ndarray:
    """The targets in the same order as `model_ranks` returns their ranks."""
    stream = session_parallel(seqs, batch, EVAL_BPTT, longest_first(seqs))
    return stream.targets[stream.mask]


def restore_params(run: RunDir, cfg: RunConfig) -> model.Params:
    template = {"params": model.init_params(cfg.model, cfg.n_items, jax.random.key(0))}
    return jax.tree.map(jnp.asarray, restore_checkpoint(run, "best", template)["params"])


def evaluate_run(run: RunDir, split: str, ks: Sequence[int], ties: Ties = "conservative") -> dict[str, Any]:
    """Evaluate the run's best checkpoint and the popularity baseline; write eval/<split>.json."""
    cfg = load_config(run)
    data_dir = Path(cfg.data_dir)
    seqs = read_sequences(data_dir, split)
    if seqs.n_targets == 0:
        raise DataError(f"the {split} split of {data_dir} has no sequences to evaluate; pick another --split")
    params = restore_params(run, cfg)
    ranks = model_ranks(params, cfg, seqs, ties)
    counts = read_items(data_dir).sort("idx")["count"].to_numpy()
    targets = stream_targets(seqs, cfg.train.eval_batch_size)
    result = {
        "split": split,
        "ties": ties,
        "n_sequences": int((seqs.lengths >= 2).sum()),
        "n_events": int(ranks.size),
        "n_items": cfg.n_items,
        "metrics": summarize(ranks, ks),
        "baselines": {"pop": summarize(popularity_ranks(counts, targets, ties), ks)},
    }
    run.eval_dir.mkdir(exist_ok=True)
    save_json(run.eval_dir / f"{split}.json", result)
    return result
