"""Writing an evaluation: result JSON and CSV, per-target ranks, merged with what a run had."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli import locks
from rnnrec_cli.errors import ConfigError, RnnrecError, RunDirError, first_line
from rnnrec_cli.evaluation.metrics import (
    paired_bootstrap,
    per_sequence_sums,
)
from rnnrec_cli.evaluation.reading import _TARGETS, read_ranks, read_result
from rnnrec_cli.evaluation.results import (
    DEFAULT_EVAL,
    SPLITS,
    EvalResult,
    _row,
    _split_files,
    _Targets,
    option_differences,
    result_options,
    result_path,
    seed_columns,
)
from rnnrec_cli.files import atomic_write, replace_dir, save_json, temp_dir
from rnnrec_cli.options import EvalOptions
from rnnrec_cli.rundir import RunDir, check_pinned, refuse_links


def _save(
    run: RunDir, result: EvalResult, tg: _Targets, ranks: dict[str, np.ndarray], opts: EvalOptions, force: bool
) -> EvalResult:
    """Write the result into its run, as the run's owner for the while (its lock), into the run
    that was scored (its pinned id) and never through a link below it."""
    with locks.holding(run.path, "evaluate"):
        refuse_links(run.path)
        check_pinned(run)
        return _save_owned(run, result, tg, ranks, opts, force)


def _save_owned(
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
    clash = {s: d for s, r in earlier.items() if (d := _differences(r, result))}
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
            names += seed_columns({"model": result.model, "seeds": result.seeds})
            write_ranks(tmp / f"{split}_ranks.parquet", tg, {n: ranks[n] for n in names})
        check_pinned(run)  # again at the last moment: the run may have been moved away meanwhile
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


def _differences(earlier: dict[str, Any], result: EvalResult) -> list[str]:
    """The protocol options an earlier result of the same evaluation was made with otherwise.
    `--repeat off` and `run` score alike where neither boosted (a run training chose no weight
    for, or a result from before `run` was the default)."""
    before, now = result_options(earlier), dict(result.options)
    boosted = (earlier.get("protocol") or {}).get("repeat") or (result.protocol or {}).get("repeat")
    if {before.get("repeat"), now.get("repeat")} == {"off", "run"} and not boosted:
        before["repeat"] = now["repeat"]
    return option_differences(before, now)
