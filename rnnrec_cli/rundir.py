"""The run directory: its layout, its identity, and who may write it.

A run is created with a random `run_id` (in config.json, and in every checkpoint it writes), so
a reader opens it once (`open_run` pins the id) and notices when the directory was replaced
while it read (`train --force` elsewhere): a model is never assembled from two runs. The command
that writes a run holds its lock (`locks`), and nothing below a run directory is read or written
through a symbolic link (`refuse_links`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rnnrec_cli import locks
from rnnrec_cli.config import RunConfig
from rnnrec_cli.errors import DataError, RunDirError, reading
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
from rnnrec_cli.validation import from_dict, to_dict

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
    # The run_id read when the run was opened: later reads of its files must find the same one.
    pinned: str | None = None

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


def create(path: Path, *, force: bool, command: str = "train") -> RunDir:
    """A fresh run directory, owned (locked) by this process until `locks.release`. An existing
    non-empty one is refused unless --force; with --force the new run is built beside it and
    replaces it only when complete (`finish`), and the old one stays locked meanwhile."""
    if exists(path) and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory; give another --out")
    if _holds_files(path) and not force:
        raise RunDirError(f"run directory {path} already exists; pass --force to replace it")
    path.mkdir(parents=True, exist_ok=True)
    locks.acquire(path, command)
    try:
        if _holds_files(path):
            if not force:
                raise RunDirError(f"run directory {path} already exists; pass --force to replace it")
            staging = temp_dir(path)
            locks.acquire(staging, command)
            (staging / "checkpoints").mkdir()
            (staging / REPLACES).write_text(f"{path.absolute()}\n")
            return RunDir(staging, fresh=True)
        clean_stale(path)
        (path / "checkpoints").mkdir(exist_ok=True)
    except BaseException:
        locks.release(path)
        raise
    return RunDir(path, fresh=True)


def _holds_files(path: Path) -> bool:
    return path.is_dir() and any(p.name != locks.LOCK for p in path.iterdir())


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
    replaces = run.replaces
    if replaces is not None or (run.fresh and not resumable):
        shutil.rmtree(run.path, ignore_errors=True)
    release(run, replaces)


def release(run: RunDir, final: Path | None = None) -> None:
    """Give up the run's lock, and the lock on the run it was built to replace (`final`)."""
    locks.release(run.path)
    if final is not None and final != run.path:
        locks.release(final)


def data_dir(run: RunDir, cfg: RunConfig) -> Path:
    """The run's data: a relative `data_dir` (data prepared inside the run) is under the run."""
    path = Path(cfg.data_dir)
    return path if path.is_absolute() else run.path / path


def open_run(path: Path) -> RunDir:
    """An existing run directory with a best checkpoint (for evaluate/predict), its id pinned."""
    run = RunDir(path)
    refuse_links(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG}); create one with `rnnrec train`")
    if not run.checkpoint("best").is_file():
        raise RunDirError(
            f"{path} has no checkpoint (checkpoints/best.msgpack); training did not finish an "
            "epoch. Run `rnnrec train` again"
        )
    return RunDir(path, pinned=run_id(run))


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
    owner = locks.owner(run.path)
    if owner is not None and owner.command.startswith("train"):
        return [f"{run.path} is being trained now by {owner}: using its best checkpoint so far"]
    improved = [r.get("epoch") for r in read_metrics(run) if r.get("best", True)]
    epoch = f"epoch {improved[-1]}" if improved else "an unknown epoch"
    return [
        f"{run.path} did not finish training (no {COMPLETE} file): using its best checkpoint so far, from {epoch}; "
        f"continue training with `rnnrec train --resume {run.path}`"
    ]


def save_config(run: RunDir, cfg: RunConfig) -> None:
    """config.json, with the run's new random id."""
    save_json(run.config, {"format_version": FORMAT_VERSION, "run_id": uuid.uuid4().hex, **to_dict(cfg)})


_NOT_CONFIG = ("format_version", "run_id")


def load_config(run: RunDir) -> RunConfig:
    values = load_json(run.config)
    format_version(values, run.config, "train the run again")
    check_pinned(run, values.get("run_id", ""))
    return from_dict(RunConfig, {k: v for k, v in values.items() if k not in _NOT_CONFIG}, where=str(run.config))


def run_id(run: RunDir) -> str:
    """The run's id ("" for a run made before ids, or none at all: its config.json is gone)."""
    if not run.config.is_file():
        return ""
    value = load_json(run.config).get("run_id", "")
    if not isinstance(value, str):
        raise RunDirError(f"{run.config}: 'run_id' must be a string; train the run again")
    return value


def check_pinned(run: RunDir, found: object | None = None) -> None:
    """Refuse to go on when the run opened (its pinned id) is no longer the one at its path:
    another `train --force` replaced it while this command read or wrote it. `found`: an id
    just read from one of its files (default: config.json's, read now)."""
    if run.pinned is None:
        return
    found = run_id(run) if found is None else found
    if found != run.pinned:
        raise RunDirError(
            f"{run.path} was replaced by another run while this command used it (train --force?); "
            "nothing was mixed or written: run the command again"
        )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_data(run: RunDir, cfg: RunConfig) -> str | None:
    """The hash of the run's data manifest, once the data directory config.json names is shown
    to be the data the run trained on (its manifest the copy the run keeps); None for a run
    made before it kept one."""
    if not run.data_manifest.is_file():
        return None
    kept = sha256(run.data_manifest)
    current = data_dir(run, cfg) / "manifest.json"
    if not current.is_file():
        raise DataError(f"{current} is missing: {run.config} names data that is gone; prepare it again")
    if sha256(current) != kept:
        raise DataError(
            f"{data_dir(run, cfg)} is not the data {run.path} was trained on (its manifest.json differs from "
            f"{run.data_manifest}): the data was prepared again, or {run.config} was edited. Point data_dir back at "
            "that data, or train a new run"
        )
    return kept


def refuse_links(path: Path) -> None:
    """A symbolic link anywhere below a run or study directory is an error naming it: rnnrec
    would otherwise read or write the place it points to (the directory itself may be a link)."""
    for root, dirs, names in os.walk(path):
        for name in (*dirs, *names):
            entry = Path(root) / name
            if entry.is_symlink():
                raise RunDirError(
                    f"{entry} is a symbolic link; rnnrec never reads or writes through links inside {path}: "
                    "remove it (or replace it with what it points to)"
                )


def append_metrics(run: RunDir, record: dict[str, Any]) -> None:
    fd = os.open(run.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def mark_complete(run: RunDir) -> None:
    # Renamed into place: a link planted at COMPLETE is replaced, never written through.
    with atomic_write(run.path / COMPLETE) as tmp:
        tmp.write_text("")


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
    refuse_links(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG}); start one with `rnnrec train DATA -o {path}`")
    if run.complete:
        raise RunDirError(f"{path} finished training already; evaluate it, or start a new run")
    if not run.checkpoint("last").is_file():
        raise RunDirError(
            f"{path} has no checkpoint to resume from (checkpoints/last.msgpack); start again with --force"
        )
    return run
