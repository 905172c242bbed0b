"""Evaluation: next-item ranks at every position of every sequence, against the full catalogue,
for the model and the baselines on the same targets, with beyond-accuracy metrics, breakdowns,
bootstrap confidence intervals and a paired test; value and event-type heads beside their own
baselines.

The hidden state starts at zero for each sequence (reset in the session-parallel stream) and
only real targets count; training positions are never scored. `evaluate` returns an
`EvalResult`, whose JSON (eval/<name>/<split>.json, `rnnrec evaluate --json`) has one shape for
every task (README, "evaluate --json").

Each evaluation protocol keeps its own results under a name (eval/<name>/, `--name` or derived
from the options): a run evaluated two ways keeps both. A re-run under the same name and the same
protocol adds to what is there (baselines it did not recompute are kept, with their ranks), never
removes it; another protocol under a taken name is refused unless --force, and even then the old
results go only once the new ones are completely written. A run evaluated before names existed
keeps eval/<split>.json: it is read as the evaluation named `default`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli import compiled
from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.sequences import (
    event_types,
    is_leave_one_out,
    item_counts,
    last_target_mask,
    positions,
    read_sequences,
    scored_mask,
)
from rnnrec_cli.errors import ConfigError, DataError
from rnnrec_cli.evaluation.baselines import VALUE_BASELINES, baseline_scores, value_baseline
from rnnrec_cli.evaluation.metrics import (
    Scores,
    beyond_accuracy,
    bootstrap_ci,
    breakdown,
    event_accuracy,
    per_sequence_sums,
    popularity_groups,
    summarize,
    value_errors,
)
from rnnrec_cli.evaluation.repeat_fit import fit_weight, read_choice
from rnnrec_cli.evaluation.results import EvalResult, _Targets, eval_name, protocol_options, seed_column
from rnnrec_cli.evaluation.saving import _paired_best, _save
from rnnrec_cli.evaluation.scoring import head_predictions, model_scores
from rnnrec_cli.model.network import Params
from rnnrec_cli.model.weights import restore_model
from rnnrec_cli.options import EvalOptions, ScoreOptions
from rnnrec_cli.rundir import RunDir, check_data, check_pinned, load_config
from rnnrec_cli.seeds import seed_runs

POSITION_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 9, "5-9"), (10, 19, "10-19"), (20, 10**12, "20+"))
POPULARITY_BUCKETS = ("head", "mid", "tail")  # see metrics.popularity_groups


def _targets(data_dir: Path, opts: EvalOptions, cfg: RunConfig | None) -> _Targets:
    types = _event_vocabulary(data_dir, cfg, opts)
    seqs = read_sequences(data_dir, opts.split, values=cfg is not None and cfg.model.predicts_values, events=types)
    if seqs.n_targets == 0:
        raise DataError(f"the {opts.split} split of {data_dir} has no sequences to evaluate; pick another --split")
    pos = positions(seqs)
    # Context events of a split cut at one cutoff are never scored, whatever the protocol.
    keep = scored_mask(seqs) & (last_target_mask(seqs) if opts.last_only else True)
    kinds = seqs.events[pos.end] if seqs.events is not None else None
    if opts.target_events:
        assert types is not None and kinds is not None
        keep &= np.isin(kinds, [types.index(t) for t in opts.target_events])
        if not keep.any():
            raise DataError(f"no {opts.split} target is of type {', '.join(opts.target_events)}")
    return _Targets(
        seqs, keep, pos.seq[keep], (pos.end - pos.start)[keep], pos.target[keep], types,
        None if kinds is None else kinds[keep],
    )  # fmt: skip


def evaluate(
    data_dir: Path,
    opts: EvalOptions,
    *,
    run: RunDir | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> EvalResult:
    """Score the run's best checkpoint (if a run is given) and the baselines on one split.

    Writes nothing: `result.save()` puts it into the run (eval/<name>/<split>.json, and for
    next-item results <split>.csv and <split>_ranks.parquet beside it).
    """
    compiled.make_room()  # a notebook or script may evaluate many runs in one process
    note = on_stage or (lambda _s: None)
    # Named from the options as given: data that forces a protocol (leave-one-out) keeps `default`.
    name = eval_name(opts)
    if is_leave_one_out(data_dir):
        # Earlier events of a leave-one-out test sequence are training data: never score them.
        opts = dataclasses.replace(opts, last_only=True)
    cfg = load_config(run) if run is not None else None
    if run is None and opts.repeat not in ("off", "run"):
        raise ConfigError("--repeat boosts a model's scores, and a data directory has no model (baselines are never "
                          "boosted): evaluate a run")  # fmt: skip
    if cfg is not None and not cfg.model.predicts_items and opts.repeat not in ("off", "run"):
        raise ConfigError(f"--repeat boosts next-item scores, and this run predicts {', '.join(cfg.model.tasks)} only")
    if cfg is not None and not cfg.model.predicts_items:
        # A value-only model ranks nothing: its comparison is the value baselines.
        opts = dataclasses.replace(opts, baselines=())
    tg = _targets(data_dir, opts, cfg)
    counts = item_counts(data_dir).astype(np.float64)
    heads: dict[str, dict[str, Any]] = {}
    scored: dict[str, Scores] = {}
    seed_ranks: dict[int, np.ndarray] = {}
    missing: list[int] = []
    provenance = None
    repeat: dict[str, Any] | None = None
    if run is not None and cfg is not None:
        data_hash = check_data(run, cfg)
        params, features, checkpoint = restore_model(run, cfg)
        provenance = {"run_id": run.pinned, "checkpoint": checkpoint.to_json(), "data_manifest_sha256": data_hash}
        if cfg.model.predicts_values:
            note("predicting values")
            heads["value"] = _value_metrics(params, cfg, data_dir, tg, opts.devices, features)
        if cfg.model.predicts_events:
            note("predicting event types")
            heads["event_type"] = _event_metrics(params, cfg, data_dir, tg, opts.devices, features)
        if cfg.model.predicts_items:
            beta = opts.repeat_weight
            if opts.repeat == "run":
                # The weight training chose: none for an earlier version's run, or where seen
                # items are left out or candidates sampled.
                choice = None if opts.exclude_seen or opts.n_sampled else read_choice(run.path)
                beta, repeat = (float(choice["weight"]), choice) if choice else (0.0, None)
            elif beta is None:
                note("choosing the repeat weight on the validation split")
                beta, grid = fit_weight(params, cfg, data_dir, features, opts.devices, opts.seed)
                repeat = {"weight": beta, "chosen_on": "valid", "grid": grid}
            elif beta:
                repeat = {"weight": beta, "chosen_on": None}
            note("scoring the model")
            scored[cfg.model.cell] = model_scores(
                params, cfg, tg.seqs, _score_options(opts, cfg.n_items, beta), opts.seed, features
            )
            each = None if opts.repeat == "run" and repeat is not None else beta
            seed_ranks, missing = _seed_ranks(run, cfg, tg, opts, each, note)
    n_sequences = int(np.count_nonzero(np.bincount(tg.seq, minlength=len(tg.seqs))))
    common: dict[str, Any] = {
        "split": opts.split,
        "n_events": len(tg.item),
        "n_sequences": n_sequences,
        "n_items": len(counts),
        "ties": opts.ties,
        "protocol": _protocol(opts) | ({"repeat": repeat} if repeat else {}),
        "value": heads.get("value"),
        "event_type": heads.get("event_type"),
        "name": name,
        "options": protocol_options(opts),
        "provenance": provenance,
    }
    if cfg is not None and not cfg.model.predicts_items:
        # A model that ranks no items: its first task's numbers take the same places (metrics,
        # baselines) as next-item numbers do, so every result reads alike.
        task = cfg.model.tasks[0]
        metrics, baselines = _task_view(task, heads["value" if task == "value" else "event_type"])
        result = EvalResult(task=task, model=cfg.model.cell, metrics=metrics, baselines=baselines, **common)
    else:
        train = read_sequences(data_dir, "train") if set(opts.baselines) - {"pop"} else tg.seqs
        for name in opts.baselines:
            note(f"scoring baseline {name}")
            scored[name] = baseline_scores(
                name,
                train,
                tg.seqs,
                counts,
                _score_options(opts, len(counts)),
                k=opts.knn,
                sample=opts.knn_sample,
                seed=opts.seed,
            )
        note("summarising")
        scored = {name: Scores(s.ranks[tg.keep], s.topk[tg.keep], s.sampled[tg.keep]) for name, s in scored.items()}
        result = _next_item_result(scored, tg, counts, opts, cfg.model.cell if cfg is not None else None, common)
        if cfg is not None and cfg.train.more_seeds:
            seed_ranks = {s: r[tg.keep] for s, r in seed_ranks.items()}
            own = scored[cfg.model.cell].ranks
            result = dataclasses.replace(result, seeds=_seed_section(cfg.train.seed, own, seed_ranks, missing, opts))
    if run is not None:
        check_pinned(run)  # everything read above came from the run that was opened
        ranks = {n: s.ranks for n, s in scored.items()}
        if cfg is not None:
            ranks |= {seed_column(cfg.model.cell, s): r for s, r in seed_ranks.items()}
        result = dataclasses.replace(result, unsaved=lambda r, force: _save(run, r, tg, ranks, opts, force))
    return result


def _seed_ranks(
    run: RunDir, cfg: RunConfig, tg: _Targets, opts: EvalOptions, beta: float | None, note: Callable[[str], None]
) -> tuple[dict[int, np.ndarray], list[int]]:
    """The ranks of every target under each further seed's model (train --seeds), and the
    seeds not trained to a checkpoint yet. Each seed takes the repeat weight `beta`, or with
    None the one its training chose."""
    ranks, missing = {}, []
    for seed, sub in seed_runs(run, cfg):
        if sub is None:
            missing.append(seed)
            continue
        note(f"scoring seed {seed}")
        sub_cfg = load_config(sub)
        params, features, _ = restore_model(sub, sub_cfg)
        own = float((read_choice(sub.path) or {}).get("weight", 0.0)) if beta is None else beta
        scores = model_scores(params, sub_cfg, tg.seqs, _score_options(opts, cfg.n_items, own), opts.seed, features)
        ranks[seed] = scores.ranks
    return ranks, missing


def _seed_section(
    seed: int, own: np.ndarray, others: dict[int, np.ndarray], missing: list[int], opts: EvalOptions
) -> dict[str, Any]:
    """Next-item metrics per seed (the run's own first), their mean and sample standard
    deviation (None with one seed)."""
    per_seed = [summarize(r, opts.ks) for r in (own, *others.values())]
    metrics = {m: [float(p[m]) for p in per_seed] for m in per_seed[0]}
    return {
        "seeds": [seed, *others],
        "metrics": metrics,
        "mean": {m: float(np.mean(v)) for m, v in metrics.items()},
        "sd": {m: float(np.std(v, ddof=1)) if len(v) > 1 else None for m, v in metrics.items()},
        "missing": missing,
    }


def _score_options(opts: EvalOptions, n_items: int, repeat: float = 0.0) -> ScoreOptions:
    # Top-K lists longer than the catalogue hold every item: metrics at such K read them whole.
    k = min(max(opts.ks), n_items)
    return ScoreOptions(
        ties=opts.ties, k=k, exclude_seen=opts.exclude_seen, n_sampled=opts.n_sampled, devices=opts.devices,
        repeat=repeat,
    )  # fmt: skip


def _protocol(opts: EvalOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"last_only": opts.last_only, "exclude_seen": opts.exclude_seen, "ranking": "full catalogue"}
    if opts.target_events:
        out["target_events"] = list(opts.target_events)
    return out


def _next_item_result(
    scored: dict[str, Scores],
    tg: _Targets,
    counts: np.ndarray,
    opts: EvalOptions,
    model_name: str | None,
    common: dict[str, Any],
) -> EvalResult:
    """Metrics, confidence intervals, the paired test against the best baseline, breakdowns."""
    k_max = max(opts.ks)
    per_seq = np.bincount(tg.seq, minlength=len(tg.seqs)).astype(np.float64)
    used = per_seq > 0
    sums, table, ci = {}, {}, {}
    metric_names: list[str] = []
    for name, s in scored.items():
        table[name] = {**summarize(s.ranks, opts.ks), **beyond_accuracy(s.topk, counts, opts.ks)}
        sums[name], metric_names = per_sequence_sums(s.ranks, tg.seq, len(tg.seqs), opts.ks)
        bounds = bootstrap_ci(sums[name][used], per_seq[used], opts.n_boot, opts.seed)
        ci[name] = {m: [float(lo), float(hi)] for m, (lo, hi) in zip(metric_names, bounds, strict=True)}
    paired = _paired_best(
        model_name, {b: table[b] for b in opts.baselines}, {n: s.ranks for n, s in scored.items()}, tg, opts
    )
    pop_group = popularity_groups(counts)[tg.item]
    pos_group = _buckets(tg.prefix_len, POSITION_BUCKETS)
    parts = {
        "position": {
            n: breakdown(s.ranks, pos_group, [b[2] for b in POSITION_BUCKETS], k_max) for n, s in scored.items()
        },
        "popularity": {n: breakdown(s.ranks, pop_group, POPULARITY_BUCKETS, k_max) for n, s in scored.items()},
    }
    if tg.kinds is not None and tg.types is not None:
        # Next-item accuracy by the type of the target event (unknown types left out).
        group = np.where(tg.kinds >= 0, tg.kinds, len(tg.types))
        parts["event"] = {n: breakdown(s.ranks, group, [*tg.types, "unknown"], k_max) for n, s in scored.items()}
    sampled = None
    if opts.n_sampled:
        sampled = {
            "n_sampled": opts.n_sampled,
            "warning": "sampled metrics rank the target against a few random items; they are not comparable "
            "with full-ranking numbers and can reverse which model wins (Krichene & Rendle 2020)",
            "metrics": {name: summarize(s.sampled, opts.ks) for name, s in scored.items()},
        }
    return EvalResult(
        task="next-item", model=model_name, metrics=table[model_name] if model_name is not None else None,
        baselines={name: table[name] for name in opts.baselines}, ci=ci, paired=paired, breakdown=parts,
        sampled=sampled, **common,
    )  # fmt: skip


def _buckets(values: np.ndarray, edges: Sequence[tuple[int, int, str]]) -> np.ndarray:
    out = np.zeros(len(values), np.int64)
    for i, (lo, hi, _) in enumerate(edges):
        out[(values >= lo) & (values <= hi)] = i
    return out


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
    params: Params, cfg: RunConfig, data_dir: Path, tg: _Targets, devices: int, features: dict[str, Any] | None
) -> dict[str, Any]:
    """RMSE/MAE of the value head and the value baselines on the same target events."""
    train = read_sequences(data_dir, "train", values=True)
    seqs, keep = tg.seqs, tg.keep
    assert seqs.values is not None
    actual = seqs.values[positions(seqs).end][keep]
    preds: dict[str, np.ndarray] = {cfg.model.cell: head_predictions(params, cfg, seqs, devices, features)["value"]}
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
    params: Params, cfg: RunConfig, data_dir: Path, tg: _Targets, devices: int, features: dict[str, Any] | None
) -> dict[str, Any]:
    """Accuracy of the event-type head beside two baselines (the most frequent type in training,
    and "the same type as the current event"), and the head's per-type precision and recall."""
    seqs, keep = tg.seqs, tg.keep
    assert seqs.events is not None
    types = cfg.model.event_types
    train_types = read_sequences(data_dir, "train", events=types).events
    assert train_types is not None
    majority = int(np.bincount(train_types[train_types >= 0], minlength=len(types)).argmax())
    pos = positions(seqs)
    actual, current = seqs.events[pos.end][keep], seqs.events[pos.end - 1][keep]
    probs = head_predictions(params, cfg, seqs, devices, features)["event"][keep]
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
