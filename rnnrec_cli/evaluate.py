"""Evaluation: next-item ranks at every position of every sequence, against the full catalogue.

The hidden state starts at zero for each sequence (reset in the session-parallel stream) and
only real targets count; training positions are never scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_cli import model
from rnnrec_cli.baselines import BASELINES, baseline_ranks
from rnnrec_cli.batches import longest_first, session_parallel
from rnnrec_cli.config import RunConfig, Ties, save_json
from rnnrec_cli.data import Sequences, read_items, read_sequences
from rnnrec_cli.errors import DataError
from rnnrec_cli.metrics import summarize, target_ranks
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
    """Ranks of every target event (positions 2..L of each sequence), in sequence order.

    The order matches `target_items(seqs)`, so ranks from different models pair up.
    """
    batch = cfg.train.eval_batch_size
    stream = session_parallel(seqs, batch, EVAL_BPTT, longest_first(seqs))
    carry = model.zero_carry(cfg.model, batch)
    out = np.zeros(len(seqs.items), np.float32)
    for k, chunk in enumerate(stream.chunks()):
        carry, ranks = _chunk_ranks(params, carry, chunk.inputs, chunk.targets, chunk.reset, cfg=cfg, ties=ties)
        pos = stream.target_pos[k * EVAL_BPTT : (k + 1) * EVAL_BPTT]
        out[pos[chunk.mask]] = np.asarray(ranks)[chunk.mask]
    return out[target_positions(seqs)]


def target_positions(seqs: Sequences) -> np.ndarray:
    """Indices into `seqs.items` of every target event: all but the first of each sequence."""
    is_first = np.zeros(len(seqs.items), bool)
    is_first[seqs.offsets[:-1][seqs.lengths > 0]] = True
    return np.flatnonzero(~is_first)


def target_items(seqs: Sequences) -> np.ndarray:
    return seqs.items[target_positions(seqs)]


def restore_params(run: RunDir, cfg: RunConfig) -> model.Params:
    template = {"params": model.init_params(cfg.model, cfg.n_items, jax.random.key(0))}
    return jax.tree.map(jnp.asarray, restore_checkpoint(run, "best", template)["params"])


def evaluate(
    data_dir: Path,
    split: str,
    ks: Sequence[int],
    ties: Ties = "conservative",
    *,
    run: RunDir | None = None,
    baselines: Sequence[str] = BASELINES,
    knn: tuple[int, int] = (100, 500),
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rank every target of a split under the run's best checkpoint (if a run is given) and the
    baselines, on the full catalogue. Writes eval/<split>.json into the run directory.

    knn: (neighbours k, recent-session sample) for sknn.
    """
    note = on_stage or (lambda _s: None)
    seqs = read_sequences(data_dir, split)
    if seqs.n_targets == 0:
        raise DataError(f"the {split} split of {data_dir} has no sequences to evaluate; pick another --split")
    counts = read_items(data_dir).sort("idx")["count"].to_numpy()
    result: dict[str, Any] = {
        "split": split,
        "ties": ties,
        "n_sequences": int((seqs.lengths >= 2).sum()),
        "n_events": seqs.n_targets,
        "n_items": len(counts),
    }
    if run is not None:
        note("scoring the model")
        cfg = load_config(run)
        result["model"] = cfg.model.cell
        result["metrics"] = summarize(model_ranks(restore_params(run, cfg), cfg, seqs, ties), ks)
    train = read_sequences(data_dir, "train") if set(baselines) - {"pop"} else seqs
    result["baselines"] = {}
    for name in baselines:
        note(f"scoring baseline {name}")
        ranks = baseline_ranks(name, train, seqs, counts, ties, k=knn[0], sample=knn[1])
        result["baselines"][name] = summarize(ranks, ks)
    if run is not None:
        run.eval_dir.mkdir(exist_ok=True)
        save_json(run.eval_dir / f"{split}.json", result)
    return result
