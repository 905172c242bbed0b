"""What the report reads from a run or study directory, checked as it is read."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnrec_cli.errors import RunDirError, reading
from rnnrec_cli.files import load_json
from rnnrec_cli.rundir import COMPLETE, RunDir, read_metrics


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
    # Per evaluation name: what no longer holds of its results (provenance.stale_notes).
    stale: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyView:
    """A `tune` study directory: its trials table (trials.csv) and best configuration."""

    path: Path
    trials: list[dict[str, str]]
    best: dict[str, Any] | None


def load_view(path: Path, label: str | None = None) -> RunView | StudyView:
    """A run's (or study's) files, each checked as it is read: a damaged or hand-edited file is
    one error naming it, never a wrong number on the page."""
    from rnnrec_cli.data.sequences import check_manifest
    from rnnrec_cli.evaluation.provenance import stale_notes
    from rnnrec_cli.evaluation.reading import read_ranks, read_result
    from rnnrec_cli.evaluation.results import evaluations, ranks_path, result_path
    from rnnrec_cli.rundir import load_config, refuse_links
    from rnnrec_cli.validation import to_dict

    if not (path / "config.json").is_file() and (path / "trials.csv").is_file():
        return StudyView(path, _read_trials(path / "trials.csv"), _read_best(path / "best.json"))
    run = RunDir(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is neither a run directory (no config.json) nor a tune study (no trials.csv)")
    refuse_links(path)
    config = to_dict(load_config(run))
    evals: dict[str, dict[str, dict[str, Any]]] = {}
    ranks: dict[str, dict[str, Any]] = {}
    stale: dict[str, list[str]] = {}
    for name, splits in evaluations(run).items():
        evals[name], ranks[name] = {}, {}
        for split in splits:
            result = evals[name][split] = read_result(run, split, name)
            stale.setdefault(name, []).extend(stale_notes(run, result, result_path(run, split, name)))
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
        stale=stale,
    )


# trials.csv as `tune` writes it (training.trials.write_results): these first, the tuned
# parameters in between, these last.
TRIALS_HEAD = ("number", "state", "value", "epochs", "seconds")
TRIALS_TAIL = ("worker", "run_dir", "error")
TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _read_trials(path: Path) -> list[dict[str, str]]:
    """A `tune` study's trials.csv, checked: tune's header, every row whole (as many fields as
    the header, the file ending in a line end), trials numbered 0, 1, ... once each, a known
    state, and numbers where tune writes numbers. A file cut off or edited is one error."""
    fix = "run `rnnrec tune` again to rewrite it"
    with reading(path, fix=fix):
        text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        raise RunDirError(f"{path}: the last line is cut off (no line end); {fix}")
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RunDirError(f"{path}: not CSV ({exc}); {fix}") from None
    header = table[0] if table else []
    if (
        tuple(header[: len(TRIALS_HEAD)]) != TRIALS_HEAD
        or tuple(header[-len(TRIALS_TAIL) :]) != TRIALS_TAIL
        or len(header) < len(TRIALS_HEAD) + len(TRIALS_TAIL)
        or len(set(header)) < len(header)
    ):
        raise RunDirError(
            f"{path} line 1: not the header `rnnrec tune` writes ({', '.join(TRIALS_HEAD)}, the parameters, "
            f"{', '.join(TRIALS_TAIL)}); {fix}"
        )
    rows = []
    for n, fields in enumerate(table[1:], 2):
        if len(fields) != len(header):
            raise RunDirError(f"{path} line {n}: {len(fields)} fields for {len(header)} columns; {fix}")
        row = dict(zip(header, fields, strict=True))
        if why := _bad_trial(row, number=n - 2):
            raise RunDirError(f"{path} line {n}: {why}; {fix}")
        rows.append(row)
    return rows


def _bad_trial(row: dict[str, str], number: int) -> str | None:
    """Why a trials.csv row cannot be one tune wrote (None: it can)."""
    if row["number"] != str(number):
        return f"trial number {row['number']!r} where trial {number} belongs (trials are numbered 0, 1, ...)"
    if row["state"] not in TRIAL_STATES:
        return f"state {row['state']!r} is not one of {', '.join(TRIAL_STATES)}"
    if not (row["epochs"].isascii() and row["epochs"].isdigit()):
        return f"epochs {row['epochs']!r} is not a count"
    for key in ("value", "seconds"):
        try:
            value = float(row[key]) if row[key] else None
        except ValueError:
            return f"{key} {row[key]!r} is not a number"
        # A pruned trial's value is its best epoch's, NaN when no epoch was measured.
        if value is not None and not (math.isfinite(value) or (key == "value" and math.isnan(value))):
            return f"{key} {row[key]!r} is not a finite number"
        if value is not None and key == "seconds" and value < 0:
            return f"seconds {row[key]!r} is negative"
    return None


def _read_best(path: Path) -> dict[str, Any] | None:
    return load_json(path) if path.is_file() else None
