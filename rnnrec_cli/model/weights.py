"""Saving and restoring model weights and training state as checkpoints, checked against the
configured model's shapes; older checkpoint layouts read by their format version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rnnrec_cli import rundir
from rnnrec_cli.config import RunConfig
from rnnrec_cli.errors import RunDirError, first_line, reading

if TYPE_CHECKING:
    from rnnrec_cli.model.network import Params
from rnnrec_cli.files import FORMAT_VERSION, atomic_write, format_version
from rnnrec_cli.rundir import RunDir

# Written beside the tree in every checkpoint (the run's id; for `best`, its epoch), under one
# key no tree uses; not part of the tree a reader restores.
_META = ("format_version", "written_by")


@dataclass(frozen=True)
class CheckpointInfo:
    """Which checkpoint a result came from: its name, the epoch that wrote it (None for a
    checkpoint written before epochs were recorded) and the SHA-256 of its bytes."""

    name: str
    epoch: int | None
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "epoch": self.epoch, "sha256": self.sha256}


def save_checkpoint(run: RunDir, name: str, tree: Any, *, epoch: int | None = None) -> None:
    from flax import serialization

    written_by: dict[str, Any] = {"run_id": rundir.run_id(run)}
    if epoch is not None:
        written_by["epoch"] = epoch
    meta = {"format_version": FORMAT_VERSION, "written_by": written_by}
    with atomic_write(run.checkpoint(name)) as tmp:
        tmp.write_bytes(serialization.msgpack_serialize({**meta, **serialization.to_state_dict(tree)}))


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
    return read_checkpoint(run, name, template)[0]


def read_checkpoint(run: RunDir, name: str, template: Any) -> tuple[Any, CheckpointInfo]:
    """The checkpoint, checked against `template` (built from config.json): the same tree and
    every array the same shape, so a checkpoint of another model or catalogue is an error; and
    the same run as the one opened (a pinned run). With what it is (`CheckpointInfo`)."""
    import hashlib

    import jax
    from flax import serialization

    path = run.checkpoint(name)
    fix = f"train {run.path} again (or continue it with --resume)"
    with reading(path, fix=fix):
        data = path.read_bytes()
        raw = serialization.msgpack_restore(data)
    version = format_version(raw, path, fix) if isinstance(raw, dict) else 0
    written_by = raw.get("written_by") if isinstance(raw, dict) else None
    epoch = None
    if isinstance(written_by, dict):
        if "run_id" in written_by:
            rundir.check_pinned(run)  # config.json is still the opened run's
            if written_by["run_id"] != (run.pinned if run.pinned is not None else rundir.run_id(run)):
                raise RunDirError(
                    f"checkpoint {path} was written by another run (its run_id is not {run.config}'s): it was "
                    f"copied in from elsewhere; {fix}"
                )
        epoch = int(written_by["epoch"]) if isinstance(written_by.get("epoch"), int) else None
    info = CheckpointInfo(name, epoch, hashlib.sha256(data).hexdigest())
    tree = {k: v for k, v in raw.items() if k not in _META} if isinstance(raw, dict) else raw
    try:
        restored = serialization.from_state_dict(template, tree if version >= 1 else _nest_item_tables(tree))
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
    return restored, info


def restore_params(run: RunDir, cfg: RunConfig) -> Params:
    return read_params(run, cfg)[0]


def read_params(run: RunDir, cfg: RunConfig) -> tuple[Params, CheckpointInfo]:
    """The best checkpoint's parameters (as device arrays), and which checkpoint it is."""
    import jax
    import jax.numpy as jnp

    from rnnrec_cli.model import network

    # Shapes only: restoring needs the tree's structure, not initial values.
    template = {
        "params": jax.eval_shape(lambda key: network.init_params(cfg.model, cfg.n_items, key), jax.random.key(0))
    }
    tree, info = read_checkpoint(run, "best", template)
    return jax.tree.map(jnp.asarray, tree["params"]), info


def restore_model(run: RunDir, cfg: RunConfig) -> tuple[Params, dict[str, Any] | None, CheckpointInfo]:
    """The best checkpoint's parameters, which checkpoint it is, and, when the model reads them,
    the item features copied into the run (see features.read_item_features)."""
    params, info = read_params(run, cfg)
    if not cfg.model.item_features:
        return params, None, info
    from rnnrec_cli.data.features import read_item_features

    features = read_item_features(run.path)
    if features is None:
        raise RunDirError(f"{run.path} lacks item_features.parquet, which its model reads; train the run again")
    return params, features, info
