"""`evaluate --repeat auto`: the repeat boost's weight chosen on the validation split (see
evaluation.repeats), the one split the model has not trained on and the test is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.sequences import is_leave_one_out, read_sequences, validation_targets
from rnnrec_cli.errors import DataError
from rnnrec_cli.evaluation.metrics import summarize
from rnnrec_cli.evaluation.repeats import GRID
from rnnrec_cli.evaluation.scoring import model_scores
from rnnrec_cli.model import network
from rnnrec_cli.options import ScoreOptions
from rnnrec_cli.rules import HEADLINE_K


def fit_weight(
    params: network.Params,
    cfg: RunConfig,
    data_dir: Path,
    features: dict[str, np.ndarray] | None,
    devices: int = 0,
    seed: int = 0,
) -> tuple[float, list[dict[str, Any]]]:
    """The weight of GRID with the best validation MRR@20 (ties: the smaller weight, so no
    boost unless it helps), and every weight's row: weight, Recall@20 and MRR@20."""
    seqs = read_sequences(data_dir, "valid")
    if not seqs.n_targets:
        raise DataError(
            f"--repeat auto chooses the weight on the validation split, and {data_dir} has none: prepare with "
            "--valid (e.g. --valid 0.1), or give the weight (e.g. --repeat 2)"
        )
    # The targets validation scores during training, so the weight is chosen on what it reports.
    mask = validation_targets(seqs, is_leave_one_out(data_dir))
    keep = slice(None) if mask is None else mask
    recall, mrr = f"recall@{HEADLINE_K}", f"mrr@{HEADLINE_K}"
    rows = []
    for beta in GRID:
        opts = ScoreOptions(k=0, repeat=beta, devices=devices)
        m = summarize(model_scores(params, cfg, seqs, opts, seed, features).ranks[keep], (HEADLINE_K,))
        rows.append({"weight": beta, recall: m[recall], mrr: m[mrr]})
    best = max(rows, key=lambda r: (r[mrr], -r["weight"]))
    return float(best["weight"]), rows
