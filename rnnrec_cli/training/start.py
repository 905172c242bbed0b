"""Starting a run: preparing raw event files into it when needed, resolving the run's config
against its data, and saving config.json and the data files the run needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli import rundir
from rnnrec_cli.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig
from rnnrec_cli.data.sequences import (
    event_types,
    is_data_dir,
    load_manifest,
    read_sequences,
)
from rnnrec_cli.errors import DataError, RunDirError
from rnnrec_cli.rundir import RunDir

# ---------------------------------------------------------------------------- a new run


@dataclass(frozen=True)
class StartedRun:
    """A run directory with its config saved; `manifest` is its data's, `prepared` whether
    `start_run` just prepared that data from raw files."""

    run: RunDir
    cfg: RunConfig
    manifest: dict[str, Any]
    prepared: bool


def start_run(
    data: Sequence[str],
    out: Path | None,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    prepare_cfg: PrepareConfig | None = None,
    given: dict[str, list[str]] | None = None,
    item_features: bool | None = None,
    force: bool = False,
    write: bool = True,
    command: str = "train",
) -> StartedRun:
    """Create the run directory (preparing raw event files into run/data first), resolve the
    run's config against its data, and save config.json and the data files the run needs.

    `data`: one prepared data directory, or raw event files (prepared with `prepare_cfg` and
    the `given` split files). Without `write` (processes other than 0 of a multi-process run)
    nothing is written: the data must be prepared already, and the run directory is process 0's.
    The run is owned (locked) by `command` of this process until `rundir.release`.
    """
    from rnnrec_cli.data.prepare import prepare

    first = Path(data[0])
    prepared_dir = len(data) == 1 and is_data_dir(first)
    if len(data) == 1 and first.is_dir() and not prepared_dir:
        raise DataError(
            f"{first} is a directory but not a prepared data directory (no manifest.json); run `rnnrec prepare` first"
        )
    path = out or rundir.default_path(model_cfg.cell)
    if not write:
        if not prepared_dir:
            raise DataError("a multi-process run trains from a prepared data directory; run `rnnrec prepare`")
        cfg = run_config(first.resolve(), model_cfg, train_cfg, item_features)
        return StartedRun(RunDir(path), cfg, load_manifest(first), False)
    if prepared_dir:
        if path.resolve() in first.resolve().parents or path.resolve() == first.resolve():
            raise RunDirError(f"the data {first} lies inside {path}, which this run would replace; give another --out")
        cfg = run_config(first.resolve(), model_cfg, train_cfg, item_features)
    run = rundir.create(path, force=force, command=command)
    try:
        if prepared_dir:
            manifest = load_manifest(first)
        else:
            manifest = prepare(data, run.path / "data", prepare_cfg or PrepareConfig(), given=given)
            # Relative: the run directory may still move (a --force replacement takes its place).
            cfg = run_config(run.path / "data", model_cfg, train_cfg, item_features, stored_as="data")
        rundir.save_config(run, cfg)
        rundir.save_data_files(run, rundir.data_dir(run, cfg))
    except BaseException:
        rundir.discard_failed(run)
        raise
    return StartedRun(run, cfg, manifest, not prepared_dir)


def run_config(
    data_dir: Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    item_features: bool | None = None,
    *,
    stored_as: str | None = None,
) -> RunConfig:
    """The run's config for `data_dir`: catalogue size, the value task's standardisation (from
    the training split), event types, item features (used when the data has them, unless
    `item_features` is False)."""
    manifest = load_manifest(data_dir)
    if model_cfg.predicts_values:
        values = read_sequences(data_dir, "train", values=True).values
        assert values is not None
        known = values[~np.isnan(values)]
        if not len(known):
            raise DataError(f"{data_dir}: the training split has no values to learn (all missing)")
        std = float(known.std())
        model_cfg = dataclasses.replace(model_cfg, value_mean=float(known.mean()), value_std=std if std > 0 else 1.0)
    if model_cfg.predicts_events or model_cfg.event_input:
        model_cfg = dataclasses.replace(model_cfg, event_types=event_types(data_dir))
    spec = manifest.get("item_features")
    if item_features is False or (item_features is None and spec is None):
        model_cfg = dataclasses.replace(model_cfg, item_features=False)
    elif spec is None:
        raise DataError(f"{data_dir} has no item features; prepare it with --item-features FILE")
    else:
        model_cfg = dataclasses.replace(
            model_cfg, item_features=True, feature_codes=int(spec["n_codes"]), feature_numeric=int(spec["n_numeric"])
        )
    n_items = int(manifest["n_items"])
    return RunConfig(data_dir=stored_as or str(data_dir), n_items=n_items, model=model_cfg, train=train_cfg)
