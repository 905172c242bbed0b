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

import csv
import dataclasses
import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rnnrec_cli.baselines import VALUE_BASELINES, baseline_scores, value_baseline
from rnnrec_cli.config import RunConfig
from rnnrec_cli.errors import ConfigError, DataError, RnnrecError, RunDirError, first_line, reading
from rnnrec_cli.metrics import (
    Scores,
    beyond_accuracy,
    bootstrap_ci,
    breakdown,
    event_accuracy,
    paired_bootstrap,
    per_sequence_sums,
    popularity_groups,
    summarize,
    value_errors,
)
from rnnrec_cli.model import Params
from rnnrec_cli.options import EvalOptions, ScoreOptions
from rnnrec_cli.rundir import (
    RunDir,
    atomic_write,
    load_config,
    load_json,
    replace_dir,
    restore_model,
    save_json,
    temp_dir,
)
from rnnrec_cli.scoring import head_predictions, model_scores
from rnnrec_cli.sequences import (
    Sequences,
    event_types,
    is_leave_one_out,
    item_counts,
    last_target_mask,
    positions,
    read_sequences,
    scored_mask,
)

POSITION_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 9, "5-9"), (10, 19, "10-19"), (20, 10**12, "20+"))
POPULARITY_BUCKETS = ("head", "mid", "tail")  # see metrics.popularity_groups
DEFAULT_EVAL = "default"
SPLITS = ("test", "valid")
# The options that decide which targets are scored and what each number means. Results under one
# name share them, so a re-run may add to a result but never mixes two protocols in it. (The
# bootstrap's resamples and seed change intervals only; --baselines says what to compute.)
PROTOCOL_FLAGS = {
    "ks": "--k", "ties": "--ties", "last_only": "--last-only", "exclude_seen": "--exclude-seen",
    "n_sampled": "--sampled", "target_events": "--target-events", "knn": "--knn", "knn_sample": "--knn-sample",
}  # fmt: skip


@dataclass(frozen=True)
class EvalResult:
    """One split's evaluation. `metrics` are the model's (None for baselines alone), `baselines`
    each baseline's, both for the run's first task: next-item ranking metrics, value errors
    (rmse, mae, n) or event-type accuracy. The next-item sections (ci, paired, breakdown,
    sampled) are empty for a model that ranks no items; `value` and `event_type` hold those
    heads' full results when the model has them."""

    split: str
    task: str
    n_events: int
    n_sequences: int
    n_items: int
    model: str | None
    metrics: dict[str, Any] | None
    baselines: dict[str, dict[str, Any]]
    ties: str
    protocol: dict[str, Any]
    ci: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    paired: dict[str, Any] | None = None
    breakdown: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, Any] | None = None
    value: dict[str, Any] | None = None
    event_type: dict[str, Any] | None = None
    name: str = DEFAULT_EVAL
    # The protocol options (PROTOCOL_FLAGS' keys) this result was computed under.
    options: dict[str, Any] = field(default_factory=dict)
    # Baselines kept from the earlier result of this name (same protocol), not recomputed.
    kept: list[str] | None = None
    # What the CLI tells people about where the result went (not saved).
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Every field, for every task; a section that does not apply (None) is left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "notes"}


@dataclass(frozen=True)
class _Targets:
    """The scored targets of a split: which of all its targets are kept (`keep`, by protocol
    and --target-events) and, for those, their sequence, prefix length and item."""

    seqs: Sequences
    keep: np.ndarray
    seq: np.ndarray
    prefix_len: np.ndarray
    item: np.ndarray
    types: tuple[str, ...] | None
    # The type of each kept target's event (index into `types`), when the data has types.
    kinds: np.ndarray | None


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
    force: bool = False,
) -> EvalResult:
    """Score the run's best checkpoint (if a run is given) and the baselines on one split.

    Writes eval/<name>/<split>.json and, for next-item results, <split>.csv and
    <split>_ranks.parquet beside it into the run directory (see `_save`).
    """
    note = on_stage or (lambda _s: None)
    # Named from the options as given: data that forces a protocol (leave-one-out) keeps `default`.
    name = eval_name(opts)
    if is_leave_one_out(data_dir):
        # Earlier events of a leave-one-out test sequence are training data: never score them.
        opts = dataclasses.replace(opts, last_only=True)
    cfg = load_config(run) if run is not None else None
    if cfg is not None and not cfg.model.predicts_items:
        # A value-only model ranks nothing: its comparison is the value baselines.
        opts = dataclasses.replace(opts, baselines=())
    tg = _targets(data_dir, opts, cfg)
    counts = item_counts(data_dir).astype(np.float64)
    heads: dict[str, dict[str, Any]] = {}
    scored: dict[str, Scores] = {}
    if run is not None and cfg is not None:
        params, features = restore_model(run, cfg)
        if cfg.model.predicts_values:
            note("predicting values")
            heads["value"] = _value_metrics(params, cfg, data_dir, tg, opts.devices, features)
        if cfg.model.predicts_events:
            note("predicting event types")
            heads["event_type"] = _event_metrics(params, cfg, data_dir, tg, opts.devices, features)
        if cfg.model.predicts_items:
            note("scoring the model")
            scored[cfg.model.cell] = model_scores(
                params, cfg, tg.seqs, _score_options(opts, cfg.n_items), opts.seed, features
            )
    n_sequences = int(np.count_nonzero(np.bincount(tg.seq, minlength=len(tg.seqs))))
    common = {
        "split": opts.split,
        "n_events": len(tg.item),
        "n_sequences": n_sequences,
        "n_items": len(counts),
        "ties": opts.ties,
        "protocol": _protocol(opts),
        "value": heads.get("value"),
        "event_type": heads.get("event_type"),
        "name": name,
        "options": protocol_options(opts),
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
    if run is not None:
        result = _save(run, result, tg, {n: s.ranks for n, s in scored.items()}, opts, force)
    return result


def protocol_options(opts: EvalOptions) -> dict[str, Any]:
    """The protocol options of an evaluation, as JSON (the result's `options`)."""
    return {k: list(v) if isinstance(v, tuple) else v for k in PROTOCOL_FLAGS for v in [getattr(opts, k)]}


def eval_name(opts: EvalOptions) -> str:
    """`--name`, else `default` for the default protocol, else a short slug of the options that
    differ from it, e.g. `exclude-seen_k5-10` or `sampled100`."""
    if opts.name:
        return opts.name
    d = EvalOptions()
    parts = [
        *(["exclude-seen"] if opts.exclude_seen else []),
        *(["last-only"] if opts.last_only else []),
        *(["k" + "-".join(map(str, opts.ks))] if opts.ks != d.ks else []),
        *([f"ties-{opts.ties}"] if opts.ties != d.ties else []),
        *([f"sampled{opts.n_sampled}"] if opts.n_sampled else []),
        *(["events-" + "-".join(re.sub(r"[^A-Za-z0-9]", "", t) or "x" for t in opts.target_events)]
          if opts.target_events else []),
        *([f"knn{opts.knn}"] if opts.knn != d.knn else []),
        *([f"knn-sample{opts.knn_sample}"] if opts.knn_sample != d.knn_sample else []),
    ]  # fmt: skip
    name = "_".join(parts) or DEFAULT_EVAL
    if len(name) > 64:
        # Many event types: still a valid name, still one per set of options.
        name = name[:55] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def result_options(result: dict[str, Any]) -> dict[str, Any]:
    """A stored result's protocol options. A result written before evaluations had names holds
    no `options`: they are read from what it holds (sknn's --knn/--knn-sample as the defaults)."""
    if isinstance(result.get("options"), dict):
        return result["options"]
    d = protocol_options(EvalOptions())
    protocol = result.get("protocol") if isinstance(result.get("protocol"), dict) else {}
    table = result.get("metrics") or next(iter((result.get("baselines") or {}).values()), {})
    ks = sorted({int(k.split("@")[1]) for k in table if re.match(r"^recall@\d+$", k)})
    return {
        **d,
        "ks": ks or d["ks"],
        "ties": result.get("ties", d["ties"]),
        "last_only": bool(protocol.get("last_only", False)),
        "exclude_seen": bool(protocol.get("exclude_seen", False)),
        "n_sampled": (result.get("sampled") or {}).get("n_sampled", 0),
        "target_events": list(protocol.get("target_events", [])),
    }


def option_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'--exclude-seen: True before, False now' for each protocol option that differs."""
    return [
        f"{flag}: {_shown(before.get(key))} before, {_shown(now.get(key))} now"
        for key, flag in PROTOCOL_FLAGS.items()
        if before.get(key) != now.get(key)
    ]


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def result_path(run: RunDir, split: str, name: str = DEFAULT_EVAL) -> Path:
    """eval/<name>/<split>.json; for `default`, a run evaluated before names existed keeps
    eval/<split>.json (read as `default` until a new default evaluation moves it)."""
    path = run.eval_dir / name / f"{split}.json"
    legacy = run.eval_dir / f"{split}.json"
    return legacy if name == DEFAULT_EVAL and not path.is_file() and legacy.is_file() else path


def ranks_path(run: RunDir, split: str, name: str = DEFAULT_EVAL) -> Path:
    return result_path(run, split, name).with_name(f"{split}_ranks.parquet")


def _split_files(run: RunDir, split: str, name: str) -> list[Path]:
    """The files of one split's result: its JSON, CSV and ranks."""
    json_path = result_path(run, split, name)
    return [json_path, json_path.with_name(f"{split}.csv"), json_path.with_name(f"{split}_ranks.parquet")]


def evaluations(run: RunDir) -> dict[str, list[str]]:
    """Every evaluation of the run, by name, with the splits it holds (`default` first)."""
    from rnnrec_cli.options import EVAL_NAME

    found: dict[str, list[str]] = {}
    names = [DEFAULT_EVAL]
    if run.eval_dir.is_dir():
        names += sorted(p.name for p in run.eval_dir.iterdir() if p.is_dir() and EVAL_NAME.match(p.name))
    for name in dict.fromkeys(names):
        splits = [s for s in SPLITS if result_path(run, s, name).is_file()]
        if splits:
            found[name] = splits
    return found


def _save(
    run: RunDir, result: EvalResult, tg: _Targets, ranks: dict[str, np.ndarray], opts: EvalOptions, force: bool
) -> EvalResult:
    """Write the result under its name. Same protocol: the other split stays, and baselines of the
    earlier result of this split that were not recomputed are kept (merged). Another protocol:
    refused unless `force`, which replaces the whole name. Nothing is lost until the new folder
    is completely written (built beside it, then put in its place)."""
    name, split = result.name, result.split
    notes: list[str] = []
    earlier: dict[str, dict[str, Any]] = {}
    for s in SPLITS:
        if result_path(run, s, name).is_file():
            try:
                earlier[s] = read_result(run, s, name)
            except (RunDirError, ConfigError) as exc:
                if s == split:
                    notes.append(f"the earlier {s} result of evaluation {name!r} was unreadable ({first_line(exc)}); "
                                 "it is replaced")  # fmt: skip
    clash = {s: d for s, r in earlier.items() if (d := option_differences(result_options(r), result.options))}
    if clash and not force:
        s, differ = next(iter(clash.items()))
        raise RunDirError(
            f"evaluation {name!r} of {run.path} holds a {s} result made with other options ({'; '.join(differ)}); "
            f"pass --name NAME to keep both, or --force to replace it"
        )
    if clash:
        notes.append(f"replaced evaluation {name!r} (made with other options: {'; '.join(next(iter(clash.values())))})")
    elif split in earlier and result.task == "next-item" and earlier[split].get("task") == "next-item":
        result, ranks = _merge_earlier(run, result, earlier[split], tg, ranks, opts)
    keep = [] if clash else [s for s in SPLITS if s != split and result_path(run, s, name).is_file()]
    folder = run.eval_dir / name
    tmp = temp_dir(folder)
    try:
        for s in keep:
            for src in _split_files(run, s, name):
                if src.is_file():
                    shutil.copyfile(src, tmp / src.name)
        save_json(tmp / f"{split}.json", result.to_json())
        if result.task == "next-item":
            names = [*([result.model] if result.model else []), *result.baselines]
            _write_csv(tmp / f"{split}.csv", {n: _row(result, n) for n in names}, result.ci)
            write_ranks(tmp / f"{split}_ranks.parquet", tg, {n: ranks[n] for n in names})
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if name == DEFAULT_EVAL:
        # Files of a run evaluated before names existed now live in eval/default/ (or were replaced).
        for s in SPLITS:
            for legacy in (f"{s}.json", f"{s}.csv", f"{s}_ranks.parquet"):
                (run.eval_dir / legacy).unlink(missing_ok=True)
    return dataclasses.replace(result, notes=(*result.notes, *notes))


def _merge_earlier(
    run: RunDir,
    result: EvalResult,
    old: dict[str, Any],
    tg: _Targets,
    ranks: dict[str, np.ndarray],
    opts: EvalOptions,
) -> tuple[EvalResult, dict[str, np.ndarray]]:
    """The result with the earlier result's baselines that this run did not recompute (same
    protocol, same targets: their numbers still hold), and the paired test against the best of
    all of them again."""
    kept = [b for b in old.get("baselines", {}) if b not in result.baselines and b != result.model]
    if not kept:
        return result, ranks
    try:
        table = read_ranks(run, result.split, old, result.name)
    except RnnrecError as exc:
        note = f"the earlier baselines {', '.join(kept)} could not be kept: {first_line(exc)}"
        return dataclasses.replace(result, notes=(*result.notes, note)), ranks
    same = table.height == len(tg.item) and all(
        np.array_equal(table[c].to_numpy(), v) for c, v in zip(_TARGETS, (tg.seq, tg.prefix_len, tg.item), strict=True)
    )
    if not same:
        note = f"the earlier baselines {', '.join(kept)} were scored on other targets (the data changed?); not kept"
        return dataclasses.replace(result, notes=(*result.notes, note)), ranks
    ranks = {**ranks, **{b: table[b].to_numpy().astype(np.float32) for b in kept}}
    order = list(EvalOptions.baselines)
    baselines = {**{b: old["baselines"][b] for b in kept}, **result.baselines}
    baselines = dict(sorted(baselines.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))

    def with_kept(new: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
        return {**new, **{b: (before or {})[b] for b in kept if b in (before or {})}}

    old_sampled = (old.get("sampled") or {}).get("metrics")
    return dataclasses.replace(
        result,
        baselines=baselines,
        ci=with_kept(result.ci, old.get("ci")),
        breakdown={k: with_kept(part, (old.get("breakdown") or {}).get(k)) for k, part in result.breakdown.items()},
        sampled=result.sampled and {**result.sampled, "metrics": with_kept(result.sampled["metrics"], old_sampled)},
        paired=_paired_best(result.model, baselines, ranks, tg, opts),
        kept=kept,
    ), ranks


def _paired_best(
    model: str | None, baselines: dict[str, dict[str, Any]], ranks: dict[str, np.ndarray], tg: _Targets,
    opts: EvalOptions,
) -> dict[str, Any] | None:  # fmt: skip
    """The paired bootstrap of the model against the best baseline by MRR at the largest K."""
    if model is None or not baselines:
        return None
    monitor = f"mrr@{max(opts.ks)}"
    best = max(baselines, key=lambda b: baselines[b][monitor])
    per_seq = np.bincount(tg.seq, minlength=len(tg.seqs)).astype(np.float64)
    used = per_seq > 0
    (model_sums, names), (best_sums, _) = (
        per_sequence_sums(ranks[n], tg.seq, len(tg.seqs), opts.ks) for n in (model, best)
    )
    diff, diff_ci, p = paired_bootstrap(model_sums[used], best_sums[used], per_seq[used], opts.n_boot, opts.seed)
    return {
        "against": best,
        "chosen_by": monitor,
        "diff": dict(zip(names, map(float, diff), strict=True)),
        "ci": {m: [float(lo), float(hi)] for m, (lo, hi) in zip(names, diff_ci, strict=True)},
        "p": dict(zip(names, map(float, p), strict=True)),
    }


def write_ranks(path: Path, tg: _Targets, ranks: dict[str, np.ndarray]) -> None:
    """Each scored target (sequence, position, item index) and its rank under the model and each
    baseline: what `compare` pairs runs on and the report's metric@K curves come from."""
    import polars as pl

    columns = {
        "seq": tg.seq.astype(np.int64),
        "position": tg.prefix_len.astype(np.int32),
        "item": tg.item.astype(np.int32),
    }
    table = pl.DataFrame({**columns, **{name: r.astype(np.float32) for name, r in ranks.items()}})
    with atomic_write(path, ".parquet") as tmp:
        table.write_parquet(tmp)


def _score_options(opts: EvalOptions, n_items: int) -> ScoreOptions:
    # Top-K lists longer than the catalogue hold every item: metrics at such K read them whole.
    k = min(max(opts.ks), n_items)
    return ScoreOptions(
        ties=opts.ties, k=k, exclude_seen=opts.exclude_seen, n_sampled=opts.n_sampled, devices=opts.devices
    )


def _protocol(opts: EvalOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"last_only": opts.last_only, "exclude_seen": opts.exclude_seen, "ranking": "full catalogue"}
    if opts.target_events:
        out["target_events"] = list(opts.target_events)
    return out


def _row(result: EvalResult, name: str) -> dict[str, float]:
    return result.metrics if name == result.model and result.metrics is not None else result.baselines[name]


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
    preds = {cfg.model.cell: head_predictions(params, cfg, seqs, devices, features)["value"]}
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


def _write_csv(path: Path, table: dict[str, dict[str, float]], ci: dict[str, dict[str, list[float]]]) -> None:
    """One row per model/baseline: every metric, and CI bounds for the accuracy metrics."""
    names = list(next(iter(table.values())))
    ci_names = list(next(iter(ci.values())))
    header = ["name", *names, *[f"{m}_ci_low" for m in ci_names], *[f"{m}_ci_high" for m in ci_names]]
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
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


# ---------------------------------------------------------------------------- reading results back

_BOUNDED = re.compile(r"^(recall|mrr|ndcg|coverage|gini|pop|tail)@[1-9][0-9]*$")
_TARGETS = ("seq", "position", "item")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def option_flags(options: dict[str, Any]) -> list[str]:
    """The evaluate flags that give these protocol options (the defaults need none)."""
    d = protocol_options(EvalOptions())
    flags: list[str] = []
    for key, flag in PROTOCOL_FLAGS.items():
        value = options.get(key, d[key])
        if value == d[key]:
            continue
        flags += [flag] if isinstance(value, bool) else [flag, _shown(value)]
    return flags


def evaluate_command(run: RunDir, split: str, name: str = DEFAULT_EVAL, options: dict[str, Any] | None = None) -> str:
    """The command that writes this evaluation's `split` again (named in every error about it)."""
    try:
        flags = option_flags(options or {})
        derived = eval_name(EvalOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in flags_of(options)}))
    except (ConfigError, TypeError, ValueError, AttributeError):
        # Options a hand edit broke: name the evaluation, and let --force replace it.
        flags, derived = ["--force"], None
    if name != derived:
        flags += ["--name", name]
    return " ".join(["rnnrec evaluate", str(run.path), *(["--split", split] if split != "test" else []), *flags])


def flags_of(options: dict[str, Any] | None) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in (options or {}).items() if k in PROTOCOL_FLAGS]


def _missing(run: RunDir, split: str, name: str) -> RunDirError:
    """No such evaluation: which ones the run has, and how to make this one."""
    have = evaluations(run)
    listed = "; it has " + ", ".join(f"{n!r} ({'/'.join(s)})" for n, s in have.items()) if have else ""
    if name == DEFAULT_EVAL and not have:
        return RunDirError(f"{run.path} has no {split} evaluation; run `{evaluate_command(run, split)}` first")
    return RunDirError(f"{run.path} has no {split} result in evaluation {name!r}{listed}; pick one with --eval NAME")


def read_result(run: RunDir, split: str, name: str = DEFAULT_EVAL) -> dict[str, Any]:
    """eval/<name>/<split>.json as `evaluate` wrote it, checked (report and compare read it
    back): a damaged or hand-edited file is one error, never a wrong number on a page."""
    path = result_path(run, split, name)
    if not path.is_file():
        raise _missing(run, split, name)
    result = load_json(path, finite=False)
    try:
        options = result_options(result)
    except (TypeError, ValueError, AttributeError):
        options = {"ks": None}  # unreadable: the command says --force
    again = evaluate_command(run, split, name, options)

    def bad(what: str) -> NoReturn:
        raise RunDirError(f"{path}: {what}; the file was damaged or edited: run `{again}` again")

    if result.get("split") != split:
        bad(f"'split' is {result.get('split')!r}, not {split!r}")
    if result.get("task") not in ("next-item", "value", "event-type"):
        bad("'task' is not next-item, value or event-type")
    for key in ("n_events", "n_sequences", "n_items"):
        if not _number(result.get(key)) or not isinstance(result[key], int) or result[key] < 1:
            bad(f"{key!r} is not a positive count")
    model = result.get("model")
    if model is not None and (not isinstance(model, str) or not isinstance(result.get("metrics"), dict)):
        bad("'model' or its 'metrics' are missing or of the wrong type")
    baselines = result.get("baselines", {})
    if not isinstance(baselines, dict) or not all(isinstance(v, dict) for v in baselines.values()):
        bad("'baselines' is not an object of metric tables")
    for name, table in {**({model: result["metrics"]} if model else {}), **baselines}.items():
        for key, value in table.items():
            if _BOUNDED.match(key) and not (_number(value) and 0 <= value <= 1):
                bad(f"{name}'s {key} is {value!r}, not a share in [0, 1]")
            if key in ("rmse", "mae", "accuracy") and not (_number(value) and (value != value or value >= 0)):
                bad(f"{name}'s {key} is {value!r}, not a non-negative number")
    ci = result.get("ci", {})
    if not isinstance(ci, dict) or any(
        not isinstance(t, dict)
        or any(not (isinstance(b, list) and len(b) == 2 and all(map(_number, b))) for b in t.values())
        for t in ci.values()
    ):
        bad("'ci' is not an object of [low, high] intervals")
    for kind in ("breakdown",):
        section = result.get(kind, {})
        if not isinstance(section, dict) or any(
            not isinstance(per_name, dict)
            or any(
                not isinstance(groups, dict)
                or any(not isinstance(g, dict) or not all(map(_number, g.values())) for g in groups.values())
                for groups in per_name.values()
            )
            for per_name in section.values()
        ):
            bad(f"{kind!r} is not an object of per-group numbers")
    paired = result.get("paired")
    if paired is not None and (
        not isinstance(paired, dict)
        or not isinstance(paired.get("against"), str)
        or not all(isinstance(paired.get(k), dict) for k in ("diff", "ci", "p"))
    ):
        bad("'paired' is not a paired test")
    return result


def read_ranks(run: RunDir, split: str, result: dict[str, Any], name: str = DEFAULT_EVAL) -> Any:
    """eval/<name>/<split>_ranks.parquet, checked against its result: one row per target, every
    scored name a column, every rank in [1, n_items] (or infinite: excluded as seen)."""
    import polars as pl

    path = ranks_path(run, split, name)
    again = evaluate_command(run, split, name, result_options(result))
    if result["task"] != "next-item":
        raise RunDirError(f"{run.path} ranks no items (its task is {result['task']}); only next-item runs have ranks")
    if not path.is_file():
        raise RunDirError(f"{run.path} has no {split} ranks ({path.name}); run `{again}` again")
    with reading(path, fix=f"run `{again}` again"):
        table = pl.read_parquet(path, glob=False)
    names = ([result["model"]] if result.get("model") else []) + list(result.get("baselines", {}))

    def bad(what: str) -> NoReturn:
        raise RunDirError(f"{path}: {what}; the file was damaged or edited: run `{again}` again")

    if table.height != result["n_events"]:
        bad(f"{table.height:,} rows for {result['n_events']:,} targets")
    for column in (*_TARGETS, *names):
        if column not in table.columns:
            bad(f"no column {column!r}")
    for column in _TARGETS:
        if not table[column].dtype.is_integer() or table[column].null_count():
            bad(f"column {column!r} is not whole numbers")
    for name in names:
        col = table[name]
        if not col.dtype.is_numeric() or col.null_count():
            bad(f"the ranks of {name!r} are not numbers")
        ranks = col.cast(pl.Float64).to_numpy()
        finite = ranks[np.isfinite(ranks)]
        if (
            np.isnan(ranks).any()
            or (ranks == -np.inf).any()
            or (finite < 1).any()
            or (finite > result["n_items"]).any()
        ):
            bad(f"the ranks of {name!r} are not all in [1, {result['n_items']:,}]")
    return table
