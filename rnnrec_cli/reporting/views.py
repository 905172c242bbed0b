"""What the report reads from a run or study directory, checked as it is read."""

from __future__ import annotations

import csv
import io
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
    from rnnrec_cli.evaluation.reading import read_ranks, read_result
    from rnnrec_cli.evaluation.results import evaluations, ranks_path
    from rnnrec_cli.rundir import load_config
    from rnnrec_cli.validation import to_dict

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
