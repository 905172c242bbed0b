"""Run-directory layout, config/metrics files and msgpack checkpoints.

Checkpoints use flax.serialization's msgpack (no pickle) written to a temp file and renamed, so an
interrupted save never leaves a corrupt file under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flax import serialization

from rnnrec_cli.config import RunConfig, from_dict, load_json, save_json, to_dict
from rnnrec_cli.errors import RunDirError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
DATA_MANIFEST = "data_manifest.json"
ITEMS = "items.parquet"
COMPLETE = "COMPLETE"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def items(self) -> Path:
        return self.path / ITEMS

    @property
    def data_manifest(self) -> Path:
        return self.path / DATA_MANIFEST

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def complete(self) -> bool:
        return (self.path / COMPLETE).is_file()

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.msgpack"


def create(path: Path, *, force: bool) -> RunDir:
    """A fresh run directory. An existing non-empty one is refused unless --force."""
    if path.exists() and any(path.iterdir()):
        if not force:
            raise RunDirError(f"run directory {path} already exists; pass --force to replace it")
        shutil.rmtree(path)
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def open_run(path: Path) -> RunDir:
    """An existing, finished run directory (for evaluate/predict)."""
    run = RunDir(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG}); create one with `rnnrec train`")
    if not run.checkpoint("best").is_file():
        raise RunDirError(
            f"{path} has no checkpoint (checkpoints/best.msgpack); training did not finish an "
            "epoch. Run `rnnrec train` again"
        )
    return run


def save_config(run: RunDir, cfg: RunConfig) -> None:
    save_json(run.config, to_dict(cfg))


def load_config(run: RunDir) -> RunConfig:
    return from_dict(RunConfig, load_json(run.config), where=str(run.config))


def append_metrics(run: RunDir, record: dict[str, Any]) -> None:
    with open(run.metrics, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(run: RunDir, name: str, tree: Any) -> None:
    path = run.checkpoint(name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(serialization.to_bytes(tree))
    tmp.replace(path)


def restore_checkpoint(run: RunDir, name: str, template: Any) -> Any:
    path = run.checkpoint(name)
    try:
        return serialization.from_bytes(template, path.read_bytes())
    except (ValueError, KeyError) as exc:
        raise RunDirError(f"checkpoint {path} does not match config.json ({exc}); was the config edited?") from None


def mark_complete(run: RunDir) -> None:
    (run.path / COMPLETE).write_text("")


def save_data_files(run: RunDir, data_dir: Path) -> None:
    """Copy the vocabulary and data manifest so the run alone can map ids and read raw events."""
    shutil.copyfile(data_dir / "items.parquet", run.items)
    shutil.copyfile(data_dir / "manifest.json", run.data_manifest)
    if (data_dir / "item_features.parquet").is_file():
        shutil.copyfile(data_dir / "item_features.parquet", run.path / "item_features.parquet")


def read_metrics(run: RunDir) -> list[dict[str, Any]]:
    if not run.metrics.is_file():
        return []
    return [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]


def write_metrics(run: RunDir, records: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl (on resume: drop epochs that will be run again)."""
    tmp = run.metrics.with_name(run.metrics.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(run.metrics)


def open_for_resume(path: Path) -> RunDir:
    """A run directory whose training was interrupted after at least one checkpoint."""
    run = RunDir(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG}); start one with `rnnrec train DATA -o {path}`")
    if run.complete:
        raise RunDirError(f"{path} finished training already; evaluate it, or start a new run")
    if not run.checkpoint("last").is_file():
        raise RunDirError(
            f"{path} has no checkpoint to resume from (checkpoints/last.msgpack); start again with --force"
        )
    return run
