"""Files that must never be half-written, the run-directory layout, and checkpoints.

Every file rnnrec writes goes through `atomic_write` (a temp file renamed over the target), so an
interrupted write never leaves a corrupt file under the final name. Checkpoints use
flax.serialization's msgpack (no pickle); flax and the model are imported only where a
checkpoint is read or written, so the ETL never loads JAX.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli.config import RunConfig, from_dict, to_dict
from rnnrec_cli.errors import ConfigError, RunDirError

if TYPE_CHECKING:
    from rnnrec_cli.model import Params


@contextmanager
def atomic_write(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes.
    `suffix` keeps an extension that a writer reads the format from (e.g. '.png').

    The temporary file is created exclusively under a random name (never through a link planted
    at a predictable one), with the mode the umask gives a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is not thread-safe.
_UMASK = _read_umask()


def save_json(path: Path, values: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")


def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


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


def default_path(cell: str) -> Path:
    return Path("runs") / f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{cell}"


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
    from flax import serialization

    path = run.checkpoint(name)
    try:
        raw = _nest_item_tables(serialization.msgpack_restore(path.read_bytes()))
        return serialization.from_state_dict(template, raw)
    except (ValueError, KeyError) as exc:
        raise RunDirError(f"checkpoint {path} does not match config.json ({exc}); was the config edited?") from None


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
    if not run.metrics.is_file():
        return []
    return [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]


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
