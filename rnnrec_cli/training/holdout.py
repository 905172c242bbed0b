"""The repeat boost's weight chosen while training (TrainConfig.repeat_holdout).

The weight has to be chosen on sequences the model has not trained on, and for the model as
trained (docs/benchmarks.md, repeats). With a validation split it is chosen there, on the model
training keeps. Without one (a given train/test split), the earliest `repeat_holdout` of the
training sequences (stored by start time) sit out every epoch but the last; the weight is chosen
on them by the model as it stands before the last epoch, which is then a whole epoch, in time
order. The earliest sequences, not the latest: the latest matter most for a test that follows
them (held out of all but one epoch they cost RetailRocket 0.014 Recall@20), the earliest
least. The choice is saved to the run's repeat.json, which `evaluate` and `predict` apply.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.batches import TrainData
from rnnrec_cli.data.sequences import Sequences, read_sequences
from rnnrec_cli.evaluation.repeat_fit import choose_weight, read_choice, save_choice
from rnnrec_cli.model import network

log = logging.getLogger(__name__)


def held_out(n_sequences: int, share: float) -> int:
    """How many of the earliest training sequences sit out until the choice: none when that
    would leave nothing to train or nothing to choose on."""
    n = round(n_sequences * share)
    return n if 0 < n < n_sequences else 0


def held_sequences(data: TrainData, n_held: int) -> Sequences:
    """The held-out training sequences (the first `n_held`), read whole on every process."""
    if data.seqs is not None:
        seqs, hi = data.seqs, int(data.seqs.offsets[n_held])
        return Sequences(
            items=seqs.items[:hi],
            offsets=seqs.offsets[: n_held + 1],
            values=None if seqs.values is None else seqs.values[:hi],
            events=None if seqs.events is None else seqs.events[:hi],
            scored=None if seqs.scored is None else seqs.scored[:hi],
        )
    wanted = np.zeros(len(data.lengths), bool)
    wanted[:n_held] = True
    return read_sequences(data.data_dir, "train", wanted, values=data.values, events=data.events)


def choose(
    run_path: Path,
    params: network.Params,
    cfg: RunConfig,
    seqs: Sequences,
    keep: np.ndarray | None,
    features: dict[str, np.ndarray] | None,
    chosen_on: str,
    write: bool,
) -> dict[str, Any]:
    """Choose the weight on `seqs` (the targets `keep` marks) and save it to the run, unless the
    run has one already (a resumed run chose it before it was stopped: the same model, the
    same choice)."""
    done = read_choice(run_path)
    if done is not None:
        return done
    weight, grid = choose_weight(params, cfg, seqs, keep, features, cfg.train.devices, cfg.train.seed)
    n_targets = int(seqs.n_targets if keep is None else np.count_nonzero(keep))
    choice = {"weight": weight, "chosen_on": chosen_on, "sequences": len(seqs), "targets": n_targets, "grid": grid}
    if write:
        save_choice(run_path, choice)
    log.info("repeat weight %g, chosen on %s (%d sequences)", weight, chosen_on, len(seqs))
    return choice
