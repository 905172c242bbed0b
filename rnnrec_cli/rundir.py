"""Files that must never be half-written, the run-directory layout, and checkpoints.

Every file rnnrec writes goes through `atomic_write` (a temp file renamed over the target), so an
interrupted write never leaves a corrupt file under the final name. Checkpoints use
flax.serialization's msgpack (no pickle); flax and the model are imported only where a
checkpoint is read or written, so the ETL never loads JAX.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli.config import RunConfig, from_dict, json_type, to_dict
from rnnrec_cli.errors import ConfigError, RunDirError, first_line, reading

if TYPE_CHECKING:
    from rnnrec_cli.model import Params


@contextmanager
def atomic_write(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes.
    `suffix` keeps an extension that a writer reads the format from (e.g. '.png').

    The temporary file is created exclusively under a random name (never through a link planted
    at a predictable one), with the mode the umask gives a new file; leftovers of killed
    processes are removed first (`clean_stale`)."""
    if is_special(path):
        raise RunDirError(f"{path} is a device, pipe or socket, not a file rnnrec may replace; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=f"{TEMP_SUFFIX}{suffix}")
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def is_special(path: Path) -> bool:
    """A device, pipe or socket: written into as a stream, never replaced."""
    return path.exists() and not path.is_file() and not path.is_dir()


def exists(path: Path) -> bool:
    """Something is at `path`: a dangling link or a loop of links counts (it would be replaced)."""
    return path.exists() or path.is_symlink()


# Temporaries are named `.<target>.rnnrec-<host>-<pid>-<random>.tmp...`: exclusive, unguessable,
# and telling which process made them, so a later run can remove those of dead processes.
TEMP_SUFFIX = ".tmp"
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.rnnrec-{_HOST}-{os.getpid()}-"


def temp_dir(path: Path) -> Path:
    """A new empty directory beside `path` (for building `path` before it replaces anything),
    with the mode the umask gives (mkdtemp's 0700 would survive the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


def alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (a temporary's or a trial's owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: Path) -> None:
    """Remove temporaries for `path` that a process on this host left when it was killed."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.rnnrec-{re.escape(_HOST)}-(\d+)-.*\{TEMP_SUFFIX}")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is not thread-safe.
_UMASK = _read_umask()


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete directory `new` in place of `target`: the old one is moved aside, not
    deleted, until the new one is in place."""
    if not target.exists() and not target.is_symlink():
        new.rename(target)
        return
    trash = temp_dir(target)
    target.rename(trash / "old")
    try:
        new.rename(target)
    except BaseException:
        (trash / "old").rename(target)
        raise
    shutil.rmtree(trash, ignore_errors=True)


MAX_JSON_BYTES = 64 << 20


def _not_a_number(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number; give a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


def save_json(path: Path, values: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")


def load_json(path: Path, *, finite: bool = True) -> dict[str, Any]:
    """A JSON object from `path`; anything else is one clear error naming the file. With
    `finite` (configs, manifests) NaN and Infinity are refused; results may hold NaN."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file; give a JSON file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ConfigError(f"{path} is over {MAX_JSON_BYTES >> 20} MiB: not a config or manifest rnnrec wrote")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        constants = {"parse_constant": _not_a_number} if finite else {}
        values = json.loads(text, object_pairs_hook=_unique_keys, **constants)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a config or manifest") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a JSON object ({{...}}), not {json_type(values)}")
    return values


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
    save_json(run.config, to_dict(cfg))


def load_config(run: RunDir) -> RunConfig:
    return from_dict(RunConfig, load_json(run.config), where=str(run.config))


def append_metrics(run: RunDir, record: dict[str, Any]) -> None:
    with open(run.metrics, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(run: RunDir, name: str, tree: Any) -> None:
    from flax import serialization

    with atomic_write(run.checkpoint(name)) as tmp:
        tmp.write_bytes(serialization.to_bytes(tree))


def _nest_item_tables(tree: Any) -> Any:
    """Checkpoints written before item tables moved under params["items"] (2026-12): every
    params-like dict (parameters, and each optimiser state mirroring them) is moved over."""
    if not isinstance(tree, dict):
        return tree
    tree = {k: _nest_item_tables(v) for k, v in tree.items()}
    if "out_bias" in tree and "embedding" in tree and "items" not in tree:
        items = {"embedding": tree.pop("embedding"), "bias": tree.pop("out_bias")}
        if "out_kernel" in tree:
            items["kernel"] = tree.pop("out_kernel")
        tree["items"] = items
    return tree


def restore_checkpoint(run: RunDir, name: str, template: Any) -> Any:
    """The checkpoint, checked against `template` (built from config.json): the same tree and
    every array the same shape, so a checkpoint of another model or catalogue is an error."""
    import jax
    from flax import serialization

    path = run.checkpoint(name)
    fix = f"train {run.path} again (or continue it with --resume)"
    with reading(path, fix=fix):
        raw = serialization.msgpack_restore(path.read_bytes())
    try:
        restored = serialization.from_state_dict(template, _nest_item_tables(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunDirError(f"checkpoint {path} does not match {run.config} ({first_line(exc)}); {fix}") from None
    for (key, want), got in zip(
        jax.tree_util.tree_flatten_with_path(template)[0], jax.tree.leaves(restored), strict=False
    ):
        want_shape, got_shape = tuple(getattr(want, "shape", ())), tuple(getattr(got, "shape", ()))
        if want_shape != got_shape:
            raise RunDirError(
                f"checkpoint {path} does not match {run.config}: {jax.tree_util.keystr(key)} has shape "
                f"{got_shape} there but {want_shape} for the configured model (another model's or another "
                f"catalogue's checkpoint?); {fix}"
            )
    return restored


def restore_params(run: RunDir, cfg: RunConfig) -> Params:
    """The best checkpoint's parameters (as device arrays)."""
    import jax
    import jax.numpy as jnp

    from rnnrec_cli import model

    # Shapes only: restoring needs the tree's structure, not initial values.
    template = {"params": jax.eval_shape(lambda key: model.init_params(cfg.model, cfg.n_items, key), jax.random.key(0))}
    return jax.tree.map(jnp.asarray, restore_checkpoint(run, "best", template)["params"])


def restore_model(run: RunDir, cfg: RunConfig) -> tuple[Params, dict[str, Any] | None]:
    """The best checkpoint's parameters and, when the model reads them, the item features
    copied into the run (see features.read_item_features)."""
    params = restore_params(run, cfg)
    if not cfg.model.item_features:
        return params, None
    from rnnrec_cli.features import read_item_features

    features = read_item_features(run.path)
    if features is None:
        raise RunDirError(f"{run.path} lacks item_features.parquet, which its model reads; train the run again")
    return params, features


def mark_complete(run: RunDir) -> None:
    (run.path / COMPLETE).write_text("")


def save_data_files(run: RunDir, data_dir: Path) -> None:
    """Copy the vocabulary and data manifest so the run alone can map ids and read raw events."""
    shutil.copyfile(data_dir / "items.parquet", run.items)
    shutil.copyfile(data_dir / "manifest.json", run.data_manifest)
    if (data_dir / "item_features.parquet").is_file():
        shutil.copyfile(data_dir / "item_features.parquet", run.path / "item_features.parquet")


def read_metrics(run: RunDir) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a last line cut off by a kill is dropped, damage elsewhere is an error."""
    if not run.metrics.is_file():
        return []
    lines = [line for line in run.metrics.read_text(errors="replace").splitlines() if line.strip()]
    records = []
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
        fields_ok = isinstance(record, dict) and all(
            isinstance(v, int | float | bool) or v is None for k, v in record.items() if k != "epoch"
        )
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1 and fields_ok):
            raise RunDirError(
                f"{run.metrics} line {n} is not an epoch record (a whole epoch >= 1 and numbers); remove that line "
                "or train again"
            )
        records.append(record)
    return records


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
