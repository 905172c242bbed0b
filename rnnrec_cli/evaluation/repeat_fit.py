"""The repeat boost's weight (see evaluation.repeats) chosen on sequences the model has not
trained on: the validation split (`evaluate --repeat auto`, and training when the data has
one), or the earliest training sequences, held out until the choice (training without one, see
training.holdout). The weight a run was trained with is kept in its repeat.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.sequences import Sequences, is_leave_one_out, read_sequences, validation_targets
from rnnrec_cli.errors import DataError, RunDirError
from rnnrec_cli.evaluation.metrics import summarize
from rnnrec_cli.evaluation.repeats import GRID
from rnnrec_cli.evaluation.scoring import model_scores
from rnnrec_cli.files import load_json, save_json
from rnnrec_cli.model import network
from rnnrec_cli.options import ScoreOptions
from rnnrec_cli.rules import HEADLINE_K

# The run's repeat boost, as training chose it: weight, chosen_on, targets, grid.
REPEAT_FILE = "repeat.json"


def choose_weight(
    params: network.Params,
    cfg: RunConfig,
    seqs: Sequences,
    keep: np.ndarray | None,
    features: dict[str, np.ndarray] | None,
    devices: int = 0,
    seed: int = 0,
) -> tuple[float, list[dict[str, Any]]]:
    """The weight of GRID with the best MRR@20 on `seqs`' targets (those `keep` marks; None:
    all), ties to the smaller weight, so there is no boost unless it helps; and every weight's
    row: weight, Recall@20 and MRR@20."""
    mask = slice(None) if keep is None else keep
    recall, mrr = f"recall@{HEADLINE_K}", f"mrr@{HEADLINE_K}"
    # Every weight in one pass over the catalogue: the model's scores are the same for all.
    grid = model_scores(params, cfg, seqs, ScoreOptions(k=0, devices=devices), seed, features, weights=GRID).grid
    assert grid is not None
    rows = []
    for beta, ranks in zip(GRID, grid, strict=True):
        m = summarize(ranks[mask], (HEADLINE_K,))
        rows.append({"weight": beta, recall: m[recall], mrr: m[mrr]})
    best = max(rows, key=lambda r: (r[mrr], -r["weight"]))
    return float(best["weight"]), rows


def fit_weight(
    params: network.Params,
    cfg: RunConfig,
    data_dir: Path,
    features: dict[str, np.ndarray] | None,
    devices: int = 0,
    seed: int = 0,
) -> tuple[float, list[dict[str, Any]]]:
    """`choose_weight` on the data's validation split, the targets validation scores in training."""
    seqs = read_sequences(data_dir, "valid")
    if not seqs.n_targets:
        raise DataError(
            f"--repeat auto chooses the weight on the validation split, and {data_dir} has none: prepare with "
            "--valid (e.g. --valid 0.1), or give the weight (e.g. --repeat 2)"
        )
    keep = validation_targets(seqs, is_leave_one_out(data_dir))
    return choose_weight(params, cfg, seqs, keep, features, devices, seed)


def save_choice(run_path: Path, choice: dict[str, Any]) -> None:
    save_json(run_path / REPEAT_FILE, choice)


def read_choice(run_path: Path) -> dict[str, Any] | None:
    """The repeat boost training chose for the run at `run_path`, or None (trained without one,
    or by a version before it)."""
    path = run_path / REPEAT_FILE
    if not path.is_file():
        return None
    choice = load_json(path)
    weight, grid = choice.get("weight"), choice.get("grid")
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not weight >= 0
        or not isinstance(grid, list)
    ):
        raise RunDirError(f"{path} is damaged (no weight >= 0 and grid); train the run again, or evaluate it with "
                          "--repeat off or --repeat WEIGHT")  # fmt: skip
    return choice
