"""Devices and hosts: the mesh, where each array lives, and multi-process start-up.

One code path for one device or many, on one process or many: the session-parallel batch axis
is split over a one-dimensional mesh axis, parameters are replicated (or, with `shard_items`,
the item tables are split by rows), and XLA inserts the collectives (GSPMD through `jax.jit`).
A single CPU is simply a mesh of one.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from rnnrec_cli.errors import ConfigError, OptionError

AXIS = "data"
# The params subtree (and its mirror in optimiser states) with one row per item; see network.py.
ITEM_TABLES = "items"


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process run. "auto" lets JAX read the cluster's environment (Cloud TPU,
    SLURM, Open MPI, GKE); HOST:PORT with --num-processes/--process-id sets it by hand."""
    if coordinator is None:
        if num_processes is not None or process_id is not None:
            raise OptionError("--num-processes/--process-id need --coordinator HOST:PORT (or --coordinator auto)")
        return
    # CPU processes need a collectives backend to talk to each other; GPUs and TPUs have their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _native_stdout_to_stderr()
    try:
        if coordinator == "auto":
            jax.distributed.initialize()
        else:
            if num_processes is None or process_id is None:
                raise OptionError("--coordinator HOST:PORT needs --num-processes and --process-id")
            if not 0 <= process_id < num_processes:
                raise OptionError(f"--process-id must be in [0, {num_processes}), got {process_id}")
            jax.distributed.initialize(coordinator, num_processes, process_id)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot join the multi-process run at {coordinator}: {first}") from None


def _native_stdout_to_stderr() -> None:
    """Collective libraries (gloo) print connection notes to the process's stdout from C++,
    which would corrupt data piped from rnnrec's stdout. Point file descriptor 1 at stderr and
    keep Python's sys.stdout on the original stdout."""
    sys.stdout.flush()
    original = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(os.fdopen(original, "wb"), line_buffering=True)


def is_leader() -> bool:
    """The process that writes the run directory and prints (process 0)."""
    return jax.process_index() == 0


def is_item_leaf(path: tuple) -> bool:
    return any(isinstance(p, jax.tree_util.DictKey) and p.key == ITEM_TABLES for p in path)


@dataclass(frozen=True)
class Placement:
    """The mesh and the shardings of training state, hidden state and batches."""

    mesh: jax.sharding.Mesh
    shard_items: bool = False

    @property
    def n_devices(self) -> int:
        return self.mesh.size

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch(self) -> NamedSharding:
        """[T, B] chunk arrays: split along the slots."""
        return NamedSharding(self.mesh, P(None, AXIS))

    @property
    def rows(self) -> NamedSharding:
        """[B, ...] (hidden state) or [N, ...] (item tables with shard_items): split along axis 0."""
        return NamedSharding(self.mesh, P(AXIS))

    def item_rows(self, n_items: int) -> int:
        """Rows of the item tables on the devices: padded to a multiple of the device count when
        they are split, since every device must hold an equal share."""
        return math.ceil(n_items / self.n_devices) * self.n_devices if self.shard_items else n_items

    def local_slots(self, batch_size: int) -> range:
        """The slots of the global batch whose data this process supplies."""
        index = self.batch.addressable_devices_indices_map((1, batch_size))
        slots = []
        for ix in index.values():
            assert ix is not None  # a NamedSharding gives every addressable device its slice
            slots.append(ix[1])
        lo = min(s.start or 0 for s in slots)
        hi = max(batch_size if s.stop is None else s.stop for s in slots)
        return range(lo, hi)

    def state_shardings(self, tree: Any) -> Any:
        """Shardings for params-like trees (params, optimiser state): item tables split by rows
        with shard_items, everything else replicated."""

        def pick(path: tuple, x: Any) -> NamedSharding:
            if self.shard_items and is_item_leaf(path) and np.ndim(x) >= 1:
                return self.rows
            return self.replicated

        return jax.tree_util.tree_map_with_path(pick, tree)

    def put_batch(self, local: np.ndarray, batch_size: int) -> jax.Array:
        """This process's [T, local slots] slice -> the global [T, B] array."""
        shape = (local.shape[0], batch_size, *local.shape[2:])
        return jax.make_array_from_process_local_data(self.batch, local, shape)

    def put(self, tree: Any, shardings: Any) -> Any:
        """Host values (the same on every process) -> global arrays with `shardings` (a tree like
        `tree`, or one sharding for every leaf)."""
        if isinstance(shardings, NamedSharding):
            shardings = jax.tree.map(lambda _: shardings, tree)

        def one(x: Any, s: NamedSharding) -> jax.Array:
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, s, lambda ix: x[ix])

        return jax.tree.map(one, tree, shardings)


def make_placement(devices: int, shard_items: bool, batch_size: int, *, local: bool = False) -> Placement:
    """A mesh over `devices` devices (0 = every visible one: on every process, or with `local`
    only this process's, for work each process does on its own such as evaluation)."""
    visible = jax.local_devices() if local else jax.devices()
    n = len(visible) if devices == 0 else devices
    where = f"{len(visible)} {visible[0].platform.upper()} device(s) visible"
    if not local and jax.process_count() > 1 and n != len(visible):
        raise OptionError(f"--devices {devices}: a multi-process run uses every device ({where}); pass --devices 0")
    if n > len(visible):
        hint = (
            "; for testing on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N"
            if visible[0].platform == "cpu"
            else ""
        )
        raise OptionError(f"--devices {devices}: only {where}{hint}")
    if batch_size % n:
        raise OptionError(f"--batch-size {batch_size} does not split evenly over {n} devices; use a multiple of {n}")
    mesh = jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=visible[:n])
    return Placement(mesh, shard_items)


def pad_items(tree: Any, rows: int) -> Any:
    """Pad the item tables of a params-like tree with zero rows up to `rows`."""

    def pad(path: tuple, x: Any) -> Any:
        if is_item_leaf(path) and np.ndim(x) >= 1 and x.shape[0] < rows:
            return np.pad(np.asarray(x), [(0, rows - x.shape[0])] + [(0, 0)] * (np.ndim(x) - 1))
        return x

    return jax.tree_util.tree_map_with_path(pad, tree)


def unpad_items(tree: Any, n_items: int) -> Any:
    """The inverse of `pad_items`: the first `n_items` rows of the item tables."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x[:n_items] if is_item_leaf(path) and np.ndim(x) >= 1 else x, tree
    )


def to_host(tree: Any) -> Any:
    """Arrays -> NumPy on every process. Shards held by other processes are gathered (a
    collective: every process must call this at the same point); replicated and host values
    are read locally."""

    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)
