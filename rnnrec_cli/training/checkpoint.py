"""The training state on the devices and in checkpoints/last.msgpack: placement (padding and
sharding the item tables, gathering them back), and the position in the data that --resume
continues from.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, cast

import jax
import numpy as np
import optax

from rnnrec_cli.config import RunConfig
from rnnrec_cli.data.batches import Batch
from rnnrec_cli.model import network, parallel, weights
from rnnrec_cli.model.step import TrainState, init_state
from rnnrec_cli.rundir import RunDir


class Position(NamedTuple):
    """Where training resumes: chunk `chunk` of epoch `epoch`, with the epoch's running sums."""

    epoch: int
    chunk: int
    carry: network.Carry
    # Device scalars from the epoch loop, host zeros at an epoch's start, or 0.0 / 0 from an epoch with no chunk to run.
    loss_sum: jax.Array | np.ndarray | float
    n_sum: jax.Array | np.ndarray | int
    best_value: float
    bad_epochs: int


class Trainer(NamedTuple):
    """Where training runs and how host values move to and from it."""

    placement: parallel.Placement
    state_shardings: TrainState
    carry_shardings: Any
    n_items: int

    def place_state(self, host: TrainState) -> TrainState:
        rows = self.placement.item_rows(self.n_items)
        padded = TrainState(parallel.pad_items(host.params, rows), parallel.pad_items(host.opt_state, rows), host.step)
        return self.placement.put(padded, self.state_shardings)

    def host_state(self, state: TrainState) -> TrainState:
        """Gathered, without padding rows: what checkpoints hold, whatever the device count."""
        host = parallel.to_host(state)
        return TrainState(
            parallel.unpad_items(host.params, self.n_items),
            parallel.unpad_items(host.opt_state, self.n_items),
            host.step,
        )

    def place_carry(self, host: network.Carry) -> network.Carry:
        return self.placement.put(host, self.carry_shardings)

    def batch(self, chunk: Batch, negatives: np.ndarray, batch_size: int) -> Batch:
        """A host chunk on the devices, split along the slots, with the shared negatives."""
        put = partial(self.placement.put_batch, batch_size=batch_size)
        on_device = jax.tree.map(put, chunk._replace(target_pos=None))
        return on_device._replace(negatives=self.placement.put(negatives, self.placement.replicated))


def make_trainer(cfg: RunConfig, tx: optax.GradientTransformation) -> tuple[Trainer, TrainState]:
    """The trainer and the initial host state (unpadded)."""
    tc = cfg.train
    placement = parallel.make_placement(tc.devices, tc.shard_items, tc.batch_size)
    host = jax.device_get(init_state(cfg, tx))
    # Shardings depend on which leaf is an item table, not on its (padded or not) length.
    # A TrainState-shaped tree whose leaves are shardings (the step's leaf is an array elsewhere).
    shardings = TrainState(
        placement.state_shardings(host.params),
        placement.state_shardings(host.opt_state),
        cast(jax.Array, placement.replicated),
    )
    carry = jax.tree.map(lambda _: placement.rows, network.zero_carry(cfg.model, 1))
    return Trainer(placement, shardings, carry, cfg.n_items), host


def position_tree(pos: Position) -> dict[str, Any]:
    """A position as checkpoint leaves (host values; the types a checkpoint has always held)."""
    return {
        "carry": parallel.to_host(pos.carry),
        "epoch": np.int64(pos.epoch),
        "chunk": np.int64(pos.chunk),
        "loss_sum": np.asarray(parallel.to_host(pos.loss_sum), np.float32),
        "n_sum": np.asarray(parallel.to_host(pos.n_sum), np.int32),
        "best_value": np.float64(pos.best_value),
        "bad_epochs": np.int64(pos.bad_epochs),
    }


def save_last(run: RunDir, trainer: Trainer, state: TrainState, pos: Position) -> None:
    # Every process takes part in gathering; only the leader writes.
    tree = {"state": trainer.host_state(state), **position_tree(pos)}
    if parallel.is_leader():
        weights.save_checkpoint(run, "last", tree)


def restore_last(run: RunDir, host: TrainState, carry: network.Carry) -> tuple[TrainState, Position]:
    zero = Position(0, 0, carry, np.zeros((), np.float32), np.zeros((), np.int32), 0.0, 0)
    saved = weights.restore_checkpoint(run, "last", {"state": host, **position_tree(zero)})
    pos = Position(
        int(saved["epoch"]), int(saved["chunk"]), saved["carry"], saved["loss_sum"], saved["n_sum"],
        float(saved["best_value"]), int(saved["bad_epochs"]),
    )  # fmt: skip
    return TrainState(*saved["state"]), pos
