"""`report`: one self-contained HTML page for one run, several runs, or a tune study.

`load_view` reads what a run directory already holds (config, data manifest, metrics.jsonl, each
evaluation's JSON and per-target ranks); `build_report` turns views into the page's context
(tables as rows of formatted cells, figures as inline SVG) and renders it with the Jinja2
template beside this module. Nothing is fetched: the page opens offline.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli import __version__
from rnnrec_cli.errors import RunDirError, reading
from rnnrec_cli.metrics import p_text, summarize
from rnnrec_cli.plots import BASELINE_COLORS, MODEL_COLORS, series_colors
from rnnrec_cli.rundir import COMPLETE, RunDir, load_json, read_metrics

CURVE_KS = tuple(range(1, 51))
ACCURACY = ("recall", "mrr", "ndcg")
BEYOND = ("coverage", "gini", "pop", "tail")


@dataclass(frozen=True)
class RunView:
    """What one run directory holds, read once."""

    path: Path
    label: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    metrics: list[dict[str, Any]]
    evals: dict[str, dict[str, dict[str, Any]]]  # evaluation name -> split -> result
    ranks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> split -> polars DataFrame
    complete: bool = True


@dataclass(frozen=True)
class StudyView:
    """A `tune` study directory: its trials table (trials.csv) and best configuration."""

    path: Path
    trials: list[dict[str, str]]
    best: dict[str, Any] | None


def load_view(path: Path, label: str | None = None) -> RunView | StudyView:
    """A run's (or study's) files, each checked as it is read: a damaged or hand-edited file is
    one error naming it, never a wrong number on the page."""
    from rnnrec_cli.config import to_dict
    from rnnrec_cli.evaluate import evaluations, ranks_path, read_ranks, read_result
    from rnnrec_cli.rundir import load_config
    from rnnrec_cli.sequences import check_manifest

    if not (path / "config.json").is_file() and (path / "trials.csv").is_file():
        return StudyView(path, _read_trials(path / "trials.csv"), _read_best(path / "best.json"))
    run = RunDir(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is neither a run directory (no config.json) nor a tune study (no trials.csv)")
    config = to_dict(load_config(run))
    evals: dict[str, dict[str, dict[str, Any]]] = {}
    ranks: dict[str, dict[str, Any]] = {}
    for name, splits in evaluations(run).items():
        evals[name], ranks[name] = {}, {}
        for split in splits:
            result = evals[name][split] = read_result(run, split, name)
            if result["task"] == "next-item" and ranks_path(run, split, name).is_file():
                ranks[name][split] = read_ranks(run, split, result, name)
    manifest = {}
    if run.data_manifest.is_file():
        manifest = check_manifest(load_json(run.data_manifest), run.data_manifest)
    return RunView(
        path=path,
        label=label or path.name,
        config=config,
        manifest=manifest,
        metrics=read_metrics(run),
        evals=evals,
        ranks=ranks,
        complete=(path / COMPLETE).is_file(),
    )


def _read_trials(path: Path) -> list[dict[str, str]]:
    """A `tune` study's trials.csv: a trial number, state and objective value per row."""
    with reading(path, fix="run `rnnrec tune` again"):
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    if rows and not {"number", "state", "value"} <= set(rows[0]):
        raise RunDirError(f"{path} lacks the number/state/value columns `rnnrec tune` writes")
    for n, row in enumerate(rows, 2):
        try:
            int(row["number"])
            float(row["value"]) if row["value"] not in ("", None) else None
        except (TypeError, ValueError):
            raise RunDirError(f"{path} line {n}: the trial number or value is not a number") from None
    return rows


def _read_best(path: Path) -> dict[str, Any] | None:
    return load_json(path) if path.is_file() else None


# ---------------------------------------------------------------------------- formatting


def num(x: Any, digits: int = 4) -> str:
    """How every metric appears on the page (and how the tests look for it)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _interval(ci: Sequence[float] | None) -> str:
    return f"[{num(ci[0])}, {num(ci[1])}]" if ci else ""


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


# ---------------------------------------------------------------------------- figures


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)


def _figure(n_plots: int, width: float = 5.2, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "rnnrec", "font.size": 9})
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_plots, figsize=(width * n_plots, height), squeeze=False)
    return fig, axes[0]


def learning_figure(runs: Sequence[RunView], colors: Mapping[str, str]) -> str | None:
    """Training loss, the monitored validation metric per epoch (best epoch starred) and seconds
    per epoch; a panel with nothing to draw (no validation split, no timings) is left out."""
    if not any(r.metrics for r in runs):
        return None
    monitors = {r.label: r.config.get("train", {}).get("monitor", "") for r in runs}
    has_valid = any(m.get(f"valid/{monitors[r.label]}") is not None for r in runs for m in r.metrics)
    has_time = any(m.get("seconds") for r in runs for m in r.metrics)
    panels = ["loss", *(["valid"] if has_valid else []), *(["time"] if has_time else [])]
    fig, axes = _figure(len(panels), width=4.2)
    ax = dict(zip(panels, axes, strict=True))
    for i, run in enumerate(runs):
        color = colors[run.label]
        epochs = [m["epoch"] for m in run.metrics]
        ax["loss"].plot(epochs, [m.get("train/loss") for m in run.metrics], "o-", color=color, label=run.label, ms=3)
        monitor = monitors[run.label]
        values = [m.get(f"valid/{monitor}") for m in run.metrics]
        if has_valid and any(v is not None for v in values):
            ax["valid"].plot(epochs, values, "o-", color=color, label=f"{run.label}: {monitor}", ms=3)
            best = [e for e, m in zip(epochs, run.metrics, strict=True) if m.get("best")]
            if best:
                at = best[-1]
                ax["valid"].plot([at], [values[epochs.index(at)]], "*", color=color, ms=12, label=f"best epoch {at}")
        if has_time:
            ax["time"].bar(
                np.asarray(epochs) + (i - (len(runs) - 1) / 2) * 0.8 / len(runs),
                [m.get("seconds", 0) for m in run.metrics],
                width=0.8 / len(runs),
                color=color,
                label=run.label,
            )
    titles = {"loss": "training loss", "valid": "validation", "time": "seconds per epoch"}
    from matplotlib.ticker import MaxNLocator

    for name, a in ax.items():
        a.set(title=titles[name], xlabel="epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return _svg(fig)


def _curves(ranks: np.ndarray) -> tuple[list[float], list[float]]:
    m = summarize(ranks, CURVE_KS)
    return [m[f"recall@{k}"] for k in CURVE_KS], [m[f"mrr@{k}"] for k in CURVE_KS]


def k_curve_figure(lines: dict[str, np.ndarray], colors: Mapping[str, str], models: int = 1) -> str:
    """Recall@K and MRR@K for K = 1..50, one line per model or baseline (the first `models`
    lines are models: drawn thicker)."""
    fig, (recall_ax, mrr_ax) = _figure(2)
    for i, (name, ranks) in enumerate(lines.items()):
        recall, mrr = _curves(ranks)
        style = {"linestyle": "-", "linewidth": 2.4 if i < models else 1.2}
        recall_ax.plot(CURVE_KS, recall, color=colors[name], label=name, **style)
        mrr_ax.plot(CURVE_KS, mrr, color=colors[name], label=name, **style)
    recall_ax.set(title="Recall@K", xlabel="K")
    mrr_ax.set(title="MRR@K", xlabel="K")
    for ax in (recall_ax, mrr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _svg(fig)


def breakdown_figure(breakdown: dict[str, Any], colors: Mapping[str, str]) -> str | None:
    """Recall@K by target popularity and by position in the sequence, model and baselines."""
    parts = [(name, breakdown[name]) for name in ("popularity", "position") if breakdown.get(name)]
    if not parts:
        return None
    fig, axes = _figure(len(parts))
    for ax, (title, table) in zip(axes, parts, strict=True):
        names = list(table)
        groups = list(next(iter(table.values())))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            key = next((k for k in next(iter(table[name].values())) if k.startswith("recall@")), None)
            if key is None:
                continue
            heights = [table[name].get(g, {}).get(key, 0.0) for g in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, heights, width, label=name,
                   color=colors[name])  # fmt: skip
            ax.set_ylabel(key)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set(title=f"by {'target popularity' if title == 'popularity' else 'position in the sequence'}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _svg(fig)


def study_figure(trials: list[dict[str, str]]) -> str | None:
    """Each finished trial's objective and the best so far."""
    points = [(int(t["number"]), float(t["value"])) for t in trials if t.get("value") not in (None, "", "nan")]
    if not points:
        return None
    fig, (ax,) = _figure(1, width=7)
    xs, ys = zip(*sorted(points), strict=True)
    ax.plot(xs, ys, "o", color=MODEL_COLORS[0], label="trial")
    ax.plot(xs, np.maximum.accumulate(ys), "-", color=MODEL_COLORS[1], label="best so far")
    ax.set(title="optimisation history", xlabel="trial", ylabel="objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _svg(fig)


# ---------------------------------------------------------------------------- page context


def _metric_table(result: dict[str, Any]) -> dict[str, Any]:
    """Model and baselines, accuracy metrics at every K with their intervals."""
    rows_in = {**({result["model"]: result["metrics"]} if result.get("metrics") else {}), **result.get("baselines", {})}
    keys = [k for k in next(iter(rows_in.values()), {}) if k.split("@")[0] in ACCURACY]
    ci = result.get("ci", {})
    rows = [
        {
            "name": name,
            "is_model": name == result.get("model"),
            "cells": [{"value": num(values.get(k)), "ci": _interval(ci.get(name, {}).get(k))} for k in keys],
        }
        for name, values in rows_in.items()
    ]
    beyond_keys = [k for k in next(iter(rows_in.values()), {}) if k.split("@")[0] in BEYOND]
    beyond = [{"name": n, "cells": [num(v.get(k)) for k in beyond_keys]} for n, v in rows_in.items()]
    paired = result.get("paired")
    paired_rows = []
    if paired:
        paired_rows = [
            {"metric": k, "diff": num(paired["diff"][k]), "ci": _interval(paired["ci"][k]), "p": p_text(paired["p"][k])}
            for k in keys
            if k in paired.get("diff", {})
        ]
    return {
        "keys": keys,
        "rows": rows,
        "beyond_keys": beyond_keys,
        "beyond": beyond,
        "paired": paired,
        "paired_rows": paired_rows,
    }


def _task_tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Value and event-type results: one table each, model beside its baselines."""
    out = []
    if result.get("value"):
        table = result["value"]["metrics"]
        keys = [k for k in next(iter(table.values())) if k != "n"]
        out.append({
            "title": "Value prediction (lower is better)",
            "keys": keys,
            "rows": [{"name": n, "cells": [num(v.get(k)) for k in keys]} for n, v in table.items()],
        })  # fmt: skip
    if result.get("event_type"):
        acc = result["event_type"]["accuracy"]
        out.append({
            "title": "Event-type prediction (accuracy, higher is better)",
            "keys": ["accuracy"],
            "rows": [{"name": n, "cells": [num(v)]} for n, v in acc.items()],
        })  # fmt: skip
    return out


def _data_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    splits = manifest.get("splits", {})
    stages = manifest.get("stages", {})
    rule = stages.get("split_rule", {})
    return {
        "splits": [
            {
                "name": name,
                "events": num(st.get("events")),
                "sequences": num(st.get("sequences")),
                "targets": num(st.get("targets")),
                "items": num(st.get("items")),
                "from": (st.get("time_min") or "")[:16].replace("T", " "),
                "to": (st.get("time_max") or "")[:16].replace("T", " "),
                "rule": rule.get(name, ""),
            }
            for name, st in splits.items()
        ],
        "n_items": num(manifest.get("n_items")),
        "inputs": [i.get("path", "") for i in manifest.get("inputs", [])],
        "versions": {k: manifest[k] for k in ("rnnrec_version", "polars_version") if k in manifest},
        "created": manifest.get("created", ""),
    }


def _run_colors(run_color: str, model: str | None, names: Sequence[str]) -> dict[str, str]:
    """A run's figures: its model in the run's colour (as on the overlaid figures), each baseline
    in its own."""
    return {**series_colors(names), **({model: run_color} if model else {})}


def _run_section(run: RunView, index: int, color: str, shown: str | None) -> dict[str, Any]:
    """One run: what was run, every evaluation it has (name, protocol, headline), and the shown
    evaluation in full."""
    evals = []
    for split, result in run.evals.get(shown or "", {}).items():
        names = [*([result["model"]] if result.get("model") else []), *result.get("baselines", {})]
        colors = _run_colors(color, result.get("model"), names)
        section: dict[str, Any] = {"split": split, "task": result.get("task"), "result": result}
        section["n_events"] = num(result.get("n_events"))
        section["n_sequences"] = num(result.get("n_sequences"))
        if result.get("task") == "next-item":
            section["table"] = _metric_table(result)
            if split in run.ranks.get(shown or "", {}):
                table = run.ranks[shown or ""][split]
                names = [c for c in table.columns if c not in ("seq", "position", "item")]
                names.sort(key=lambda n: n != result.get("model"))
                section["k_curves"] = k_curve_figure({n: table[n].to_numpy().astype(np.float64) for n in names}, colors)
            section["breakdown"] = breakdown_figure(result.get("breakdown", {}), colors)
        else:
            base = {
                "metrics": result.get("metrics"),
                "baselines": result.get("baselines", {}),
                "model": result.get("model"),
            }
            keys = [k for k, v in (base["metrics"] or {}).items() if isinstance(v, int | float) and k != "n"]
            section["plain"] = {
                "keys": keys,
                "rows": [{"name": base["model"], "cells": [num(base["metrics"].get(k)) for k in keys]}]
                + [{"name": n, "cells": [num(v.get(k)) for k in keys]} for n, v in base["baselines"].items()],
            }
        section["tasks"] = _task_tables(result)
        evals.append(section)
    return {
        "id": f"run-{index}",
        "label": run.label,
        "path": str(run.path),
        "complete": run.complete,
        "data": _data_summary(run.manifest),
        "config": {k: v for k, v in _flat("", run.config).items()},
        "epochs": len(run.metrics),
        "shown": shown,
        "evaluations": _evaluation_list(run, shown),
        "evals": evals,
    }


def _evaluation_list(run: RunView, shown: str | None) -> list[dict[str, Any]]:
    """Every evaluation of a run: its name, splits, protocol, targets, the model's headline
    number and the baselines it holds."""
    from rnnrec_cli.evaluate import option_flags, result_options

    out = []
    for name, splits in run.evals.items():
        result = splits.get("test") or next(iter(splits.values()))
        flags = option_flags(result_options(result))
        metrics = result.get("metrics") or {}
        k = _largest_k(result)
        key = f"mrr@{k}" if k else next((m for m in metrics if m != "n"), "")
        out.append({
            "name": name,
            "shown": name == shown,
            "splits": ", ".join(splits),
            "protocol": " ".join(flags) if flags else "default options",
            "targets": num(result.get("n_events")),
            "headline": f"{key} {num(metrics.get(key))}" if key and result.get("model") else "–",
            "baselines": ", ".join(result.get("baselines", {})) or "none",
        })  # fmt: skip
    return out


def _largest_k(result: dict[str, Any]) -> int | None:
    rows = [result.get("metrics") or {}, *result.get("baselines", {}).values()]
    ks = [int(m.split("@")[1]) for row in rows for m in row if re.match(r"^mrr@\d+$", m)]
    return max(ks) if ks else None


def _comparison(runs: Sequence[RunView], colors: Mapping[str, str], shown: str | None) -> dict[str, Any]:
    """Several runs: one row each (headline test metrics with their intervals and, for each run
    after the first, the paired test against it; epochs, time), the config keys whose values
    differ, and the model curves overlaid."""
    flats = [_flat("", r.config) for r in runs]
    keys = sorted(set().union(*flats))
    differ = {k for k in keys if len({repr(f.get(k)) for f in flats}) > 1}
    tests = [r.evals.get(shown or "", {}).get("test", {}) for r in runs]
    paired, paired_note = _paired_with_first(runs, tests, shown)
    rows = []
    for i, (run, test) in enumerate(zip(runs, tests, strict=True)):
        metrics = test.get("metrics") or {}
        k = _largest_k(test)
        keys_here = [f"{m}@{k}" for m in ACCURACY] if test.get("task") == "next-item" and k else [
            m for m in metrics if m != "n" and isinstance(metrics[m], int | float)][:3]  # fmt: skip
        ci = test.get("ci", {}).get(test.get("model"), {})
        diffs = paired[i - 1] if i and paired else {}
        rows.append({
            "label": run.label,
            "model": test.get("model", run.config.get("model", {}).get("cell", "")),
            "metrics": {
                k: {
                    "value": num(metrics.get(k)),
                    "ci": _interval(ci.get(k)),
                    "paired": f"{diffs[k]['diff']:+.4f} {_interval(diffs[k]['ci'])}, {p_text(diffs[k]['p'])}"
                    if k in diffs else "",
                }
                for k in keys_here
            },
            "epochs": len(run.metrics),
            "seconds": num(float(sum(m.get("seconds", 0.0) for m in run.metrics)), 1),
        })  # fmt: skip
    metric_keys = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    lines, line_colors = {}, dict(BASELINE_COLORS)
    for run, test in zip(runs, tests, strict=True):
        table = run.ranks.get(shown or "", {}).get("test")
        model = test.get("model")
        if table is not None and model in table.columns:
            lines[f"{run.label} ({model})"] = table[model].to_numpy().astype(np.float64)
            line_colors[f"{run.label} ({model})"] = colors[run.label]
    models = len(lines)
    first = runs[0].ranks.get(shown or "", {}).get("test")
    if first is not None:
        for name in [c for c in first.columns if c not in ("seq", "position", "item", tests[0].get("model"))]:
            lines[name] = first[name].to_numpy().astype(np.float64)
    return {
        "rows": rows,
        "metric_keys": metric_keys,
        "first": runs[0].label,
        "paired": bool(paired),
        "paired_note": paired_note,
        "config": [{"key": k, "values": [num(f.get(k)) for f in flats], "differs": k in differ} for k in keys],
        "n_differ": len(differ),
        "learning": learning_figure(runs, colors),
        "k_curves": k_curve_figure(lines, {**series_colors(list(lines)), **line_colors}, models) if lines else None,
    }


def _paired_with_first(
    runs: Sequence[RunView], tests: Sequence[dict[str, Any]], shown: str | None
) -> tuple[list[dict[str, dict[str, Any]]], str]:
    """Each later run's paired bootstrap against the first at the headline K (compare's test),
    or why there is none (not next-item, no ranks, other targets or options)."""
    from rnnrec_cli.compare import check_comparable, paired_differences, ranks_of

    tables = [r.ranks.get(shown or "", {}).get("test") for r in runs]
    if any(t is None or not test.get("model") for t, test in zip(tables, tests, strict=True)):
        return [], "no paired test: not every run has next-item test ranks of a model in this evaluation"
    ranked = [ranks_of(r.label, test, t) for r, test, t in zip(runs, tests, tables, strict=True)]
    k = _largest_k(tests[0])
    try:
        for other in ranked[1:]:
            check_comparable(ranked[0], other, "test")
    except RunDirError as exc:
        return [], f"no paired test: {exc}"
    if k is None:
        return [], "no paired test: the first run's result has no MRR@K"
    _, differences, _, _ = paired_differences(ranked, [k])
    return differences, ""


def build_report(paths: Sequence[Path], evaluation: str | None = None) -> tuple[str, list[str]]:
    """The report's HTML for these run (or study) directories, showing one evaluation of each
    run (`evaluation`, else `default`, else the only one), and the notes that go with it (which
    evaluation is shown, what one run or evaluation has and another lacks): on the page and for
    the CLI to print."""
    labels = [p.name for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    views = [load_view(p, label) for p, label in zip(paths, labels, strict=True)]
    runs = [v for v in views if isinstance(v, RunView)]
    shown, notes = _shown_evaluation(runs, evaluation)
    with warnings.catch_warnings():
        # A figure of odd but valid numbers (one epoch, equal values) is still a figure.
        warnings.simplefilter("ignore")
        return _render(labels, views, shown, notes), notes


def _shown_evaluation(runs: Sequence[RunView], asked: str | None) -> tuple[str | None, list[str]]:
    """The evaluation the page shows, and the notes: which one and what else there is, the
    baselines or metrics one run has and another lacks in it, and the baselines one evaluation
    of a run has and another lacks."""
    from rnnrec_cli.compare import missing_notes, pick_evaluation, result_metrics

    shown = pick_evaluation({r.label: list(r.evals) for r in runs}, asked, strict=False)
    if shown is None:
        return None, []
    notes = [f"run {r.label} has no evaluation {shown!r}" for r in runs if r.evals and shown not in r.evals]
    if shown != "default" or any(len(r.evals) > 1 for r in runs):
        listed = "; ".join(f"{r.label} has {', '.join(map(repr, r.evals))}" for r in runs if r.evals)
        notes.append(f"showing evaluation {shown!r} ({listed}); pick another with --eval NAME")
    tests = {f"run {r.label}": _first_result(r.evals[shown]) for r in runs if shown in r.evals}
    if len(tests) > 1:
        notes += missing_notes(
            {who: list(res.get("baselines", {})) for who, res in tests.items()},
            {who: result_metrics(res) for who, res in tests.items()},
            f" in evaluation {shown!r}",
        )
    for r in runs:
        if len(r.evals) > 1:
            held = {f"evaluation {n!r} of run {r.label}": list(_first_result(e).get("baselines", {}))
                    for n, e in r.evals.items()}  # fmt: skip
            notes += missing_notes(held, {})
    return shown, notes


def _first_result(splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return splits.get("test") or next(iter(splits.values()))


def _render(labels: list[str], views: list[RunView | StudyView], shown: str | None, notes: list[str]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    runs = [v for v in views if isinstance(v, RunView)]
    studies = [v for v in views if isinstance(v, StudyView)]
    env = Environment(loader=PackageLoader("rnnrec_cli", "templates"), autoescape=select_autoescape(["html", "j2"]))
    from markupsafe import Markup

    env.filters["svg"] = lambda text: Markup(text) if text else ""
    # One colour per run (its model's, on every figure of the page); baselines keep their own.
    colors = {r.label: MODEL_COLORS[i % len(MODEL_COLORS)] for i, r in enumerate(runs)}
    context = {
        "title": "rnnrec report: " + ", ".join(labels),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "shown": shown,
        "notes": notes,
        "runs": [
            {**_run_section(r, i, colors[r.label], shown), "learning": learning_figure([r], colors)}
            for i, r in enumerate(runs)
        ],
        "comparison": _comparison(runs, colors, shown) if len(runs) > 1 else None,
        "studies": [
            {
                "path": str(s.path),
                "columns": list(s.trials[0]) if s.trials else [],
                "trials": s.trials,
                "history": study_figure(s.trials),
                "best": s.best,
            }
            for s in studies
        ],
    }
    return env.get_template("report.html.j2").render(**context)
