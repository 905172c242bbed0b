"""Validation after each epoch: the metrics that pick the best epoch and stop early."""

from __future__ import annotations

import numpy as np

from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.sequences import Sequences, positions
from rnnrec_cli.evaluation.metrics import event_accuracy, summarize, value_errors
from rnnrec_cli.evaluation.scoring import head_predictions, model_ranks
from rnnrec_cli.model import network


def validate(
    params: network.Params,
    cfg: RunConfig,
    seqs: Sequences,
    last: np.ndarray | None,
    features: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Validation metrics of the tasks the model has ({} without a validation split); with
    `last`, only the targets it marks. Every process computes them itself on the same split:
    no traffic, the same answer."""
    if not len(seqs) or not seqs.n_targets:
        return {}
    keep = last if last is not None else slice(None)
    out: dict[str, float] = {}
    if cfg.model.predicts_items:
        out.update(summarize(model_ranks(params, cfg, seqs, features=features)[keep], cfg.train.valid_ks))
    if cfg.model.predicts_values or cfg.model.predicts_events:
        heads = head_predictions(params, cfg, seqs, features=features)
        at = positions(seqs).end
        if "value" in heads:
            assert seqs.values is not None
            errors = value_errors(heads["value"][keep], seqs.values[at][keep])
            out.update(rmse=errors["rmse"], mae=errors["mae"])
        if "event" in heads:
            assert seqs.events is not None
            out["accuracy"] = event_accuracy(heads["event"][keep], seqs.events[at][keep])
    return out
