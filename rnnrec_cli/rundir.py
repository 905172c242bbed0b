"""Files that must never be half-written, the run-directory layout, and checkpoints.

Every file rnnrec writes goes through `atomic_write` (a temp file renamed over the target), so an
interrupted write never leaves a corrupt file under the final name. Checkpoints use
flax.serialization's msgpack (no pickle); flax and the model are imported only where a
checkpoint is read or written, so the ETL never loads JAX.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli.config import RunConfig
from rnnrec_cli.errors import RunDirError, reading
from rnnrec_cli.validation import from_dict, to_dict

if TYPE_CHECKING:
    pass
from rnnrec_cli.files import (
    FORMAT_VERSION,
    _unique_keys,
    atomic_write,
    clean_stale,
    exists,
    format_version,
    load_json,
    replace_dir,
    save_json,
    temp_dir,
)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
DATA_MANIFEST = "data_manifest.json"
ITEMS = "items.parquet"
COMPLETE = "COMPLETE"
REPLACES = "REPLACES"


@dataclass(frozen=True)
class RunDir:
    """A run directory. `fresh`: this process created it (a failure before the first
    checkpoint removes it again)."""

    path: Path
    fresh: bool = False

    @property
    def replaces(self) -> Path | None:
        """The finished run this one replaces once complete (`train --force`), if any."""
        marker = self.path / REPLACES
        return Path(marker.read_text().strip()) if marker.is_file() else None

    @property
    def final_path(self) -> Path:
        return self.replaces or self.path

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


def default_path(cell: str) -> Path:
    return Path("runs") / f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{cell}"


def create(path: Path, *, force: bool) -> RunDir:
    """A fresh run directory. An existing non-empty one is refused unless --force; with --force
    the new run is built beside it and replaces it only when complete (`finish`)."""
    if exists(path) and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory; give another --out")
    if path.exists() and any(path.iterdir()):
        if not force:
            raise RunDirError(f"run directory {path} already exists; pass --force to replace it")
        staging = temp_dir(path)
        (staging / "checkpoints").mkdir()
        (staging / REPLACES).write_text(f"{path.absolute()}\n")
        return RunDir(staging, fresh=True)
    clean_stale(path)
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    return RunDir(path, fresh=True)


def finish(run: RunDir) -> RunDir:
    """Mark the run complete; a run built to replace another (`--force`) takes its place now."""
    mark_complete(run)
    target = run.replaces
    if target is None:
        return run
    (run.path / REPLACES).unlink()
    replace_dir(run.path, target)
    return RunDir(target)


def discard_failed(run: RunDir) -> None:
    """After a failure: remove a replacement that never finished, and a run this process
    created that has no checkpoint to resume from. Anything resumable stays."""
    resumable = run.checkpoint("last").is_file()
    if run.replaces is not None or (run.fresh and not resumable):
        shutil.rmtree(run.path, ignore_errors=True)


def data_dir(run: RunDir, cfg: RunConfig) -> Path:
    """The run's data: a relative `data_dir` (data prepared inside the run) is under the run."""
    path = Path(cfg.data_dir)
    return path if path.is_absolute() else run.path / path


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


def read_vocabulary(run: RunDir, n_items: int) -> Any:
    """The run's items.parquet (index -> original id), checked against the run's catalogue: one
    row per index 0..n_items-1, ids unique. A damaged or edited vocabulary would map every
    recommendation to the wrong item without a sound."""
    import numpy as np
    import polars as pl

    fix = f"copy it again from the data directory, or train {run.path} again"
    with reading(run.items, fix=fix):
        vocab = pl.read_parquet(run.items, glob=False)
    if not {"idx", "item_id"} <= set(vocab.columns):
        raise RunDirError(f"{run.items} lacks its idx/item_id columns; {fix}")
    vocab = vocab.sort("idx")
    if vocab.height != n_items or not np.array_equal(vocab["idx"].to_numpy(), np.arange(n_items)):
        raise RunDirError(f"{run.items} does not index the run's {n_items:,} items as 0..{n_items - 1}; {fix}")
    ids = vocab["item_id"]
    if ids.dtype.is_nested() or ids.null_count() or ids.n_unique() != n_items:
        raise RunDirError(f"{run.items} maps two indices to one item id (or holds empty ids or lists); {fix}")
    if "count" in vocab.columns and (vocab["count"].null_count() or (vocab["count"] < 0).any()):
        raise RunDirError(f"{run.items} holds negative or missing training counts; {fix}")
    return vocab


def unfinished(run: RunDir) -> list[str]:
    """A warning when the run's training never completed: its best checkpoint so far is used."""
    if run.complete:
        return []
    improved = [r.get("epoch") for r in read_metrics(run) if r.get("best", True)]
    epoch = f"epoch {improved[-1]}" if improved else "an unknown epoch"
    return [
        f"{run.path} did not finish training (no {COMPLETE} file): using its best checkpoint so far, from {epoch}; "
        f"continue training with `rnnrec train --resume {run.path}`"
    ]


def save_config(run: RunDir, cfg: RunConfig) -> None:
    save_json(run.config, {"format_version": FORMAT_VERSION, **to_dict(cfg)})


def load_config(run: RunDir) -> RunConfig:
    values = load_json(run.config)
    format_version(values, run.config, "train the run again")
    return from_dict(RunConfig, {k: v for k, v in values.items() if k != "format_version"}, where=str(run.config))


def append_metrics(run: RunDir, record: dict[str, Any]) -> None:
    with open(run.metrics, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def mark_complete(run: RunDir) -> None:
    (run.path / COMPLETE).write_text("")


def save_data_files(run: RunDir, data_dir: Path) -> None:
    """Copy the vocabulary and data manifest so the run alone can map ids and read raw events."""
    shutil.copyfile(data_dir / "items.parquet", run.items)
    shutil.copyfile(data_dir / "manifest.json", run.data_manifest)
    if (data_dir / "item_features.parquet").is_file():
        shutil.copyfile(data_dir / "item_features.parquet", run.path / "item_features.parquet")


def read_metrics(run: RunDir) -> list[dict[str, Any]]:
    """metrics.jsonl's records, one per epoch in increasing order; a last line cut off by a kill is
    dropped, damage elsewhere (or an epoch twice, or out of order) is an error naming the line."""
    if not run.metrics.is_file():
        return []
    lines = [line for line in run.metrics.read_text(errors="replace").splitlines() if line.strip()]
    records: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise RunDirError(f"{run.metrics} line {n} is not a JSON record; remove that line or train again") from None
        except ValueError as exc:
            raise RunDirError(f"{run.metrics} line {n}: {exc}") from None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1 and isinstance(record, dict)):
            raise RunDirError(
                f"{run.metrics} line {n} is not an epoch record (a whole epoch >= 1 and numbers); remove that line "
                "or train again"
            )
        if records and epoch <= records[-1]["epoch"]:
            # A repeated or earlier epoch would be drawn as one more epoch; training writes them in order.
            raise RunDirError(
                f"{run.metrics} line {n}: epoch {epoch} follows epoch {records[-1]['epoch']} (epochs must increase, "
                "each once); remove that line or train again"
            )
        for key, value in record.items():
            if key != "epoch" and (why := _bad_metric(key, value)):
                raise RunDirError(
                    f"{run.metrics} line {n}: {key!r} is {value!r}, {why}; remove that line or train again"
                )
        records.append(record)
    return records


_RATE = re.compile(r"^valid/(recall|mrr|ndcg|coverage|accuracy)(@[1-9][0-9]*)?$")


def _bad_metric(key: str, value: Any) -> str | None:
    """Why a field of an epoch record cannot be what training wrote (None: it can). Timings are
    non-negative finite seconds (or rates), `best` a boolean, validation rates in [0, 1] or null
    (not measured), every other value a finite number, NaN or null."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key == "best":
        return None if isinstance(value, bool) else "not true or false"
    if key.endswith("seconds") or key.endswith("_per_s"):
        return None if number and math.isfinite(value) and value >= 0 else "not a non-negative finite number"
    if value is None or (number and math.isnan(value)):
        return None
    if _RATE.match(key):
        return None if number and 0 <= value <= 1 else "not a share in [0, 1]"
    return None if number and math.isfinite(value) else "not a finite number"


def write_metrics(run: RunDir, records: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl (on resume: drop epochs that will be run again)."""
    with atomic_write(run.metrics) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


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
