"""Evaluation: next-item ranks at every position of every sequence, against the full catalogue,
for the model and the baselines on the same targets, with beyond-accuracy metrics, breakdowns,
bootstrap confidence intervals and a paired test.

The hidden state starts at zero for each sequence (reset in the session-parallel stream) and
only real targets count; training positions are never scored.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_cli import model
from rnnrec_cli.baselines import BASELINES, VALUE_BASELINES, baseline_scores, positions, value_baseline
from rnnrec_cli.config import RunConfig, Ties, save_json
from rnnrec_cli.data import Sequences, event_types, load_manifest, read_items, read_sequences
from rnnrec_cli.errors import DataError, RunDirError
from rnnrec_cli.features import read_item_features
from rnnrec_cli.metrics import (
    beyond_accuracy,
    bootstrap_ci,
    breakdown,
    event_accuracy,
    paired_bootstrap,
    per_sequence_sums,
    summarize,
    value_errors,
)
from rnnrec_cli.rundir import RunDir, load_config, restore_checkpoint
from rnnrec_cli.scoring import ScoreOptions, Scores, head_predictions, model_scores, target_positions

POSITION_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 9, "5-9"), (10, 19, "10-19"), (20, 10**12, "20+"))
POPULARITY_BUCKETS = ("head", "mid", "tail")  # top 20% of items by training count, next 30%, bottom 50%


def model_ranks(params: model.Params, cfg: RunConfig, seqs: Sequences, ties: Ties = "conservative") -> np.ndarray:
    """Full-catalogue ranks of every target event, in sequence order (see `target_items`)."""
    return model_scores(params, cfg, seqs, ScoreOptions(ties=ties, k=1)).ranks


def target_items(seqs: Sequences) -> np.ndarray:
    return seqs.items[target_positions(seqs)]


def last_target_mask(seqs: Sequences) -> np.ndarray:
    """<bool>[n_targets]: the target is the last event of its sequence (sequence order)."""
    pos = positions(seqs)
    return pos.end == seqs.offsets[1:][pos.seq] - 1


def is_leave_one_out(data_dir: Path) -> bool:
    return load_manifest(data_dir).get("config", {}).get("split") == "loo"


def restore_params(run: RunDir, cfg: RunConfig) -> model.Params:
    """The best checkpoint's parameters, with the item features attached when the model uses them."""
    template = {"params": model.init_params(cfg.model, cfg.n_items, jax.random.key(0))}
    params = jax.tree.map(jnp.asarray, restore_checkpoint(run, "best", template)["params"])
    if cfg.model.item_features:
        features = read_item_features(run.path)
        if features is None:
            raise RunDirError(f"{run.path} lacks item_features.parquet, which its model reads; train the run again")
        params["item_features"] = jax.tree.map(jnp.asarray, features)
    return params


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    ks: tuple[int, ...] = (1, 5, 10, 20)
    ties: Ties = "conservative"
    last_only: bool = False
    exclude_seen: bool = False
    n_sampled: int = 0
    baselines: tuple[str, ...] = BASELINES
    knn: int = 100
    knn_sample: int = 500
    n_boot: int = 1000
    seed: int = 0
    devices: int = 0
    # Score next-item targets of these event types only (e.g. ("order",): "what will be bought").
    target_events: tuple[str, ...] = ()


def _buckets(values: np.ndarray, edges: Sequence[tuple[int, int, str]]) -> np.ndarray:
    out = np.zeros(len(values), np.int64)
    for i, (lo, hi, _) in enumerate(edges):
        out[(values >= lo) & (values <= hi)] = i
    return out


def _popularity_groups(counts: np.ndarray) -> np.ndarray:
    """Per item: 0 head (top 20% of items by training count), 1 mid (next 30%), 2 tail."""
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(counts), np.int64)
    rank[order] = np.arange(len(counts))
    n = len(counts)
    return np.where(rank < 0.2 * n, 0, np.where(rank < 0.5 * n, 1, 2))


def evaluate(
    data_dir: Path,
    opts: EvalOptions,
    *,
    run: RunDir | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score the run's best checkpoint (if a run is given) and the baselines on one split.

    Writes eval/<split>.json and eval/<split>.csv into the run directory.
    """
    note = on_stage or (lambda _s: None)
    if is_leave_one_out(data_dir):
        # Earlier events of a leave-one-out test sequence are training data: never score them.
        opts = dataclasses.replace(opts, last_only=True)
    cfg = load_config(run) if run is not None else None
    with_values = cfg is not None and cfg.model.predicts_values
    if cfg is not None and not cfg.model.predicts_items:
        # A value-only model ranks nothing: its comparison is the value baselines.
        opts = dataclasses.replace(opts, baselines=())
    types = _event_vocabulary(data_dir, cfg, opts)
    seqs = read_sequences(data_dir, opts.split, values=with_values, events=types)
    if seqs.n_targets == 0:
        raise DataError(f"the {opts.split} split of {data_dir} has no sequences to evaluate; pick another --split")
    counts = read_items(data_dir).sort("idx")["count"].to_numpy().astype(np.float64)
    k_max = max(opts.ks)
    score_opts = ScoreOptions(
        ties=opts.ties, k=k_max, exclude_seen=opts.exclude_seen, n_sampled=opts.n_sampled, devices=opts.devices
    )
    pos = positions(seqs)
    keep = last_target_mask(seqs) if opts.last_only else np.ones(len(pos.target), bool)
    target_types = seqs.events[pos.end] if seqs.events is not None else None
    if opts.target_events:
        assert types is not None and target_types is not None
        keep &= np.isin(target_types, [types.index(t) for t in opts.target_events])
        if not keep.any():
            raise DataError(f"no {opts.split} target is of type {', '.join(opts.target_events)}")
    seq_ids = pos.seq[keep]
    prefix_len = (pos.end - pos.start)[keep]
    targets = pos.target[keep]

    scored: dict[str, Scores] = {}
    params = restore_params(run, cfg) if run is not None and cfg is not None else None
    value_result = event_result = None
    if cfg is not None and params is not None and with_values:
        note("predicting values")
        value_result = _value_metrics(params, cfg, data_dir, seqs, keep, opts.devices)
    if cfg is not None and params is not None and cfg.model.predicts_events:
        note("predicting event types")
        event_result = _event_metrics(params, cfg, data_dir, seqs, keep, opts.devices)
    if cfg is not None and params is not None and cfg.model.predicts_items:
        note("scoring the model")
        scored[cfg.model.cell] = model_scores(params, cfg, seqs, score_opts, seed=opts.seed)
    if not scored and not opts.baselines:
        # A model that ranks no items: its first task's numbers take the same top-level places
        # (metrics, baselines) as next-item numbers do, so every result reads alike.
        assert cfg is not None
        task = cfg.model.tasks[0]
        section = value_result if task == "value" else event_result
        assert section is not None
        metrics, baselines = _task_view(task, section)
        result_v: dict[str, Any] = {
            "split": opts.split,
            "task": task,
            "n_events": int(keep.sum()),
            "model": cfg.model.cell,
            "metrics": metrics,
            "baselines": baselines,
        }
        result_v.update({k: v for k, v in (("value", value_result), ("event_type", event_result)) if v is not None})
        if run is not None:
            run.eval_dir.mkdir(exist_ok=True)
            save_json(run.eval_dir / f"{opts.split}.json", result_v)
        return result_v
    train = read_sequences(data_dir, "train") if set(opts.baselines) - {"pop"} else seqs
    for name in opts.baselines:
        note(f"scoring baseline {name}")
        scored[name] = baseline_scores(
            name, train, seqs, counts, score_opts, k=opts.knn, sample=opts.knn_sample, seed=opts.seed
        )
    scored = {name: Scores(s.ranks[keep], s.topk[keep], s.sampled[keep]) for name, s in scored.items()}

    note("summarising")
    n_events_per_seq = np.bincount(seq_ids, minlength=len(seqs)).astype(np.float64)
    used = n_events_per_seq > 0
    sums = {}
    table: dict[str, dict[str, float]] = {}
    ci: dict[str, dict[str, list[float]]] = {}
    for name, s in scored.items():
        table[name] = {**summarize(s.ranks, opts.ks), **beyond_accuracy(s.topk, counts, opts.ks)}
        sums[name], metric_names = per_sequence_sums(s.ranks, seq_ids, len(seqs), opts.ks)
        bounds = bootstrap_ci(sums[name][used], n_events_per_seq[used], opts.n_boot, opts.seed)
        ci[name] = {m: [float(lo), float(hi)] for m, (lo, hi) in zip(metric_names, bounds, strict=True)}
    result: dict[str, Any] = {
        "split": opts.split,
        "task": "next-item",
        "ties": opts.ties,
        "protocol": {"last_only": opts.last_only, "exclude_seen": opts.exclude_seen, "ranking": "full catalogue"},
        "n_sequences": int(used.sum()),
        "n_events": len(targets),
        "n_items": len(counts),
    }
    model_name = next(iter(scored)) if run is not None else None
    if model_name is not None:
        result["model"] = model_name
        result["metrics"] = table[model_name]
    result["baselines"] = {name: table[name] for name in opts.baselines}
    result["ci"] = ci
    monitor = f"mrr@{k_max}"
    if model_name is not None and opts.baselines:
        best = max(opts.baselines, key=lambda b: table[b][monitor])
        diff, diff_ci, p = paired_bootstrap(
            sums[model_name][used], sums[best][used], n_events_per_seq[used], opts.n_boot, opts.seed
        )
        result["paired"] = {
            "against": best,
            "chosen_by": monitor,
            "diff": dict(zip(metric_names, map(float, diff), strict=True)),
            "ci": {m: [float(lo), float(hi)] for m, (lo, hi) in zip(metric_names, diff_ci, strict=True)},
            "p": dict(zip(metric_names, map(float, p), strict=True)),
        }
    pop_group = _popularity_groups(counts)[targets]
    pos_group = _buckets(prefix_len, POSITION_BUCKETS)
    result["breakdown"] = {
        "position": {
            n: breakdown(s.ranks, pos_group, [b[2] for b in POSITION_BUCKETS], k_max) for n, s in scored.items()
        },
        "popularity": {n: breakdown(s.ranks, pop_group, POPULARITY_BUCKETS, k_max) for n, s in scored.items()},
    }
    if target_types is not None and types is not None:
        # Next-item accuracy by the type of the target event (unknown types left out).
        kinds = target_types[keep]
        names = [*types, "unknown"]
        group = np.where(kinds >= 0, kinds, len(types))
        result["breakdown"]["event"] = {n: breakdown(s.ranks, group, names, k_max) for n, s in scored.items()}
    if opts.target_events:
        result["protocol"]["target_events"] = list(opts.target_events)
    if event_result is not None:
        result["event_type"] = event_result
    if value_result is not None:
        result["value"] = value_result
    if opts.n_sampled:
        result["sampled"] = {
            "n_sampled": opts.n_sampled,
            "warning": "sampled metrics rank the target against a few random items; they are not comparable "
            "with full-ranking numbers and can reverse which model wins (Krichene & Rendle 2020)",
            "metrics": {name: summarize(s.sampled, opts.ks) for name, s in scored.items()},
        }
    if run is not None:
        run.eval_dir.mkdir(exist_ok=True)
        save_json(run.eval_dir / f"{opts.split}.json", result)
        _write_csv(run.eval_dir / f"{opts.split}.csv", table, ci)
    return result


def _task_view(task: str, section: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model metrics, {baseline: metrics}) of a value or event-type section."""
    model_name = section["model"]
    if task == "value":
        table = section["metrics"]
        return table[model_name], {k: v for k, v in table.items() if k != model_name}
    acc = section["accuracy"]
    metrics = {"accuracy": acc[model_name], "n": section["n"], "per_type": section["per_type"]}
    return metrics, {k: {"accuracy": v} for k, v in acc.items() if k != model_name}


def _value_metrics(
    params: model.Params, cfg: RunConfig, data_dir: Path, seqs: Sequences, keep: np.ndarray, devices: int
) -> dict[str, Any]:
    """RMSE/MAE of the value head and the value baselines on the same target events."""
    train = read_sequences(data_dir, "train", values=True)
    assert seqs.values is not None
    actual = seqs.values[target_positions(seqs)][keep]
    preds = {cfg.model.cell: head_predictions(params, cfg, seqs, devices)["value"]}
    preds.update({name: value_baseline(name, train, seqs) for name in VALUE_BASELINES})
    return {
        "model": cfg.model.cell,
        "metrics": {name: value_errors(p[keep], actual) for name, p in preds.items()},
    }


def _event_vocabulary(data_dir: Path, cfg: RunConfig | None, opts: EvalOptions) -> tuple[str, ...] | None:
    """Event types to read: the model's, else the training split's when the data has types."""
    if cfg is not None and cfg.model.event_types:
        types: tuple[str, ...] | None = cfg.model.event_types
    else:
        try:
            types = event_types(data_dir)
        except DataError:
            types = None
    if opts.target_events:
        if types is None:
            raise DataError(f"--target-events needs event types, but {data_dir} has none; prepare with --event-col")
        unknown = [t for t in opts.target_events if t not in types]
        if unknown:
            raise DataError(f"--target-events {', '.join(unknown)}: not an event type here ({', '.join(types)})")
    return types


def _event_metrics(
    params: model.Params, cfg: RunConfig, data_dir: Path, seqs: Sequences, keep: np.ndarray, devices: int
) -> dict[str, Any]:
    """Accuracy of the event-type head beside two baselines (the most frequent type in training,
    and "the same type as the current event"), and the head's per-type precision and recall."""
    assert seqs.events is not None
    types = cfg.model.event_types
    train_types = read_sequences(data_dir, "train", events=types).events
    assert train_types is not None
    majority = int(np.bincount(train_types[train_types >= 0], minlength=len(types)).argmax())
    pos = positions(seqs)
    actual, current = seqs.events[pos.end][keep], seqs.events[pos.end - 1][keep]
    probs = head_predictions(params, cfg, seqs, devices)["event"][keep]
    known = actual >= 0
    guess = np.argmax(probs, axis=1)
    per_type = {}
    for i, name in enumerate(types):
        hit = (guess == i) & (actual == i) & known
        per_type[name] = {
            "support": int(((actual == i) & known).sum()),
            "precision": float(hit.sum() / max(((guess == i) & known).sum(), 1)),
            "recall": float(hit.sum() / max(((actual == i) & known).sum(), 1)),
        }
    one_hot = lambda idx: np.eye(len(types) + 1)[np.where(idx >= 0, idx, len(types))][:, : len(types)]  # noqa: E731
    return {
        "model": cfg.model.cell,
        "n": int(known.sum()),
        "accuracy": {
            cfg.model.cell: event_accuracy(probs, actual),
            "same-as-current": event_accuracy(one_hot(current), actual),
            "majority": float(np.mean(actual[known] == majority)) if known.any() else float("nan"),
        },
        "per_type": per_type,
    }


def _write_csv(path: Path, table: dict[str, dict[str, float]], ci: dict[str, dict[str, list[float]]]) -> None:
    """One row per model/baseline: every metric, and CI bounds for the accuracy metrics."""
    names = list(next(iter(table.values())))
    ci_names = list(next(iter(ci.values())))
    header = ["name", *names, *[f"{m}_ci_low" for m in ci_names], *[f"{m}_ci_high" for m in ci_names]]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for name, row in table.items():
            w.writerow(
                [
                    name,
                    *(row[m] for m in names),
                    *(ci[name][m][0] for m in ci_names),
                    *(ci[name][m][1] for m in ci_names),
                ]
            )
    tmp.replace(path)
