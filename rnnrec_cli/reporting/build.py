"""`report`: one self-contained HTML page for one run, several runs, or a tune study.

`load_view` reads what a run directory already holds (config, data manifest, metrics.jsonl, each
evaluation's JSON and per-target ranks); `build_report` turns views into the page's context
(tables as rows of formatted cells, figures as inline SVG) and renders it with the Jinja2
template beside this module. Nothing is fetched: the page opens offline.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli import __version__
from rnnrec_cli.errors import RunDirError
from rnnrec_cli.evaluation.metrics import p_text
from rnnrec_cli.evaluation.results import seed_columns
from rnnrec_cli.reporting.figures import breakdown_figure, k_curve_figure, learning_figure, study_figure
from rnnrec_cli.reporting.views import RunView, StudyView, load_view
from rnnrec_cli.training.plots import BASELINE_COLORS, MODEL_COLORS, series_colors

ACCURACY = ("recall", "mrr", "ndcg")
BEYOND = ("coverage", "gini", "pop", "tail")


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
    if seeds := result.get("seeds"):  # train --seeds: their mean, the sd in place of an interval
        mean, sd, n = seeds["mean"], seeds["sd"], len(seeds["seeds"])
        cells = [{"value": num(mean.get(k)), "ci": f"sd {num(sd[k])}" if sd.get(k) is not None else ""} for k in keys]
        rows.insert(1, {"name": f"{result['model']}, mean of {n} seeds", "is_model": False, "cells": cells})
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
                "rule": rule.get(name) or "",
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
                names = [c for c in table.columns if c not in ("seq", "position", "item", *seed_columns(result))]
                names.sort(key=lambda n: n != result.get("model"))
                section["k_curves"] = k_curve_figure({n: table[n].to_numpy().astype(np.float64) for n in names}, colors)
            section["breakdown"] = breakdown_figure(result.get("breakdown", {}), colors)
        else:
            base = {
                "metrics": result.get("metrics"),
                "baselines": result.get("baselines", {}),
                "model": result.get("model"),
            }
            first: dict[str, Any] = base["metrics"] or next(iter(base["baselines"].values()), {})
            keys = [k for k, v in first.items() if isinstance(v, int | float) and k != "n"]
            section["plain"] = {
                "keys": keys,
                # A result of baselines alone has no model row.
                "rows": [{"name": n, "cells": [num(v.get(k)) for k in keys]} for n, v in [
                    *([(base["model"], base["metrics"])] if base["model"] else []), *base["baselines"].items()]],
            }  # fmt: skip
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
    from rnnrec_cli.evaluation.reading import option_flags
    from rnnrec_cli.evaluation.results import result_options

    out = []
    for name, splits in run.evals.items():
        result = splits.get("test") or next(iter(splits.values()))
        flags = option_flags(result_options(result)) or ["default options"]
        if isinstance(boost := (result.get("protocol") or {}).get("repeat"), dict) and boost.get("chosen_on"):
            flags.append(f"(repeat weight {boost.get('weight'):g} chosen on {boost['chosen_on']})")
        metrics = result.get("metrics") or {}
        k = _largest_k(result)
        key = f"mrr@{k}" if k else next((m for m in metrics if m != "n"), "")
        out.append({
            "name": name,
            "shown": name == shown,
            "splits": ", ".join(splits),
            "protocol": " ".join(flags),
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
        skip = ("seq", "position", "item", tests[0].get("model"), *seed_columns(tests[0]))
        for name in [c for c in first.columns if c not in skip]:
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
    from rnnrec_cli.evaluation.compare import check_comparable, paired_differences, ranks_of

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
    from rnnrec_cli.evaluation.compare import missing_notes, pick_evaluation, result_metrics

    shown = pick_evaluation({r.label: list(r.evals) for r in runs}, asked, strict=False)
    if shown is None:
        return None, []
    notes = [f"run {r.label} has no evaluation {shown!r}" for r in runs if r.evals and shown not in r.evals]
    notes += [note for r in runs for note in r.stale.get(shown, [])]
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
    env = Environment(
        loader=PackageLoader("rnnrec_cli.reporting", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
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
