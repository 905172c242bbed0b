from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnrec_cli import model, rundir
from rnnrec_cli.batches import session_parallel
from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data import Sequences
from rnnrec_cli.train import chunk_loss, init_state, make_optimizer, train_step


def _cfg(**train) -> RunConfig:
    return RunConfig(data_dir="unused", n_items=12, model=ModelConfig(layers=(16,)), train=TrainConfig(**train))


def _stream(cfg: RunConfig, seqs: Sequences):
    return session_parallel(seqs, cfg.train.batch_size, cfg.train.bptt)


def test_full_softmax_loss_matches_numpy_reference() -> None:
    cfg = _cfg(batch_size=2, bptt=3)
    params = model.init_params(cfg.model, cfg.n_items, jax.random.key(0))
    chunk = next(_stream(cfg, Sequences.from_lists([[1, 2, 3, 4], [5, 6]])).chunks())
    loss, (_, n) = chunk_loss(params, cfg, model.zero_carry(cfg.model, 2), chunk.as_tuple(), None)
    _, hidden = model.run(params, cfg.model, model.zero_carry(cfg.model, 2), chunk.inputs, chunk.reset)
    logits = np.asarray(model.scores(params, cfg.model, hidden), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, chunk.targets[..., None], -1)[..., 0]
    assert int(n) == chunk.mask.sum() == 4
    np.testing.assert_allclose(float(loss), nll[chunk.mask].mean(), rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_step_updates_every_parameter_and_overfits(optimizer: str) -> None:
    cfg = _cfg(batch_size=2, bptt=4, optimizer=optimizer, lr=0.1 if optimizer == "adagrad" else 0.02)
    tx = make_optimizer(cfg.train)
    state = init_state(cfg, tx)
    before = state.params
    step = jax.jit(partial(train_step, cfg=cfg, tx=tx))
    stream = _stream(cfg, Sequences.from_lists([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]))
    chunk = next(stream.chunks()).as_tuple()
    key = jax.random.key(0)
    losses = []
    for _ in range(150):
        state, _, m = step(state, model.zero_carry(cfg.model, 2), chunk, key)
        losses.append(float(m["loss_sum"] / m["n"]))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, state.params)
    assert all(jax.tree.leaves(changed)), changed
    assert losses[-1] < 0.1 < losses[0]


def test_train_step_compiles_once() -> None:
    cfg = _cfg(batch_size=3, bptt=2)
    tx = make_optimizer(cfg.train)
    traces = []

    def counted(*args, **kwargs):
        traces.append(1)
        return train_step(*args, **kwargs)

    step = jax.jit(partial(counted, cfg=cfg, tx=tx))
    state = init_state(cfg, tx)
    carry = model.zero_carry(cfg.model, 3)
    stream = _stream(cfg, Sequences.from_lists([[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11, 1, 2, 3]]))
    for chunk in stream.chunks():
        state, carry, _ = step(state, carry, chunk.as_tuple(), jax.random.key(0))
    assert stream.n_chunks >= 2 and len(traces) == 1


def test_adagrad_is_gru4rec_style() -> None:
    tx = make_optimizer(TrainConfig(optimizer="adagrad", lr=0.5, momentum=0.0))
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.2, 0.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    # First step: g / sqrt(g^2 + eps) = sign(g) for g != 0, times -lr; zero gradient, zero step.
    np.testing.assert_allclose(updates["w"], [-0.5, 0.0], atol=1e-4)
    assert isinstance(tx, optax.GradientTransformation)


def test_fit_writes_metrics_and_checkpoints(tmp_path: Path) -> None:
    import polars as pl

    from rnnrec_cli.train import fit

    data = tmp_path / "data"
    data.mkdir()
    seqs = [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7]] * 3
    for split, part in (("train", seqs), ("valid", seqs[:4]), ("test", seqs[:4])):
        pl.DataFrame(
            {"seq": [i for i, s in enumerate(part) for _ in s], "item": [x for s in part for x in s]},
            schema={"seq": pl.Int64, "item": pl.Int32},
        ).write_parquet(data / f"{split}.parquet")
    cfg = RunConfig(
        data_dir=str(data), n_items=8, model=ModelConfig(layers=(8,)), train=TrainConfig(epochs=3, batch_size=4, bptt=2)
    )
    run = rundir.create(tmp_path / "run", force=False)
    reports = fit(cfg, run)
    assert [r.epoch for r in reports] == [1, 2, 3]
    lines = run.metrics.read_text().splitlines()
    assert len(lines) == 3 and '"valid/mrr@20"' in lines[0]
    assert run.checkpoint("best").is_file() and run.checkpoint("last").is_file() and run.complete
    assert reports[-1].train_loss < reports[0].train_loss
