import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnrec_cli import rundir
from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data import batches
from rnnrec_cli.data.batches import Batch, session_parallel
from rnnrec_cli.data.sequences import Sequences
from rnnrec_cli.model import network
from rnnrec_cli.model.step import chunk_loss, init_state, item_stats, make_optimizer, train_step
from rnnrec_cli.training import fit as fit_mod
from rnnrec_cli.training.checkpoint import restore_last
from rnnrec_cli.training.fit import fit

from .conftest import write_data_dir


def _cfg(**train) -> RunConfig:
    return RunConfig(data_dir="unused", n_items=12, model=ModelConfig(layers=(16,)), train=TrainConfig(**train))


def _batch(chunk, negatives=(0, 5)) -> Batch:
    return chunk._replace(negatives=np.asarray(negatives, np.int32), target_pos=None)


STATS = item_stats(np.arange(1, 13), 0.5)


def _stream(cfg: RunConfig, seqs: Sequences):
    return session_parallel(seqs, cfg.train.batch_size, cfg.train.bptt)


def test_full_softmax_loss_matches_numpy_reference() -> None:
    cfg = _cfg(batch_size=2, bptt=3, full_softmax=True, loss="ce")
    params = network.init_params(cfg.model, cfg.n_items, jax.random.key(0))
    chunk = next(_stream(cfg, Sequences.from_lists([[1, 2, 3, 4], [5, 6]])).chunks())
    loss, (_, n) = chunk_loss(params, cfg, network.zero_carry(cfg.model, 2), _batch(chunk), STATS, None)
    _, hidden = network.run(params, cfg.model, network.zero_carry(cfg.model, 2), chunk)
    logits = np.asarray(network.scores(params, cfg.model, hidden), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, chunk.targets[..., None], -1)[..., 0]
    assert int(n) == chunk.mask.sum() == 4
    # Summed over the targets, divided by the nominal batch size (GRU4Rec's per-step weight).
    np.testing.assert_allclose(float(loss), nll[chunk.mask].sum() / 2, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_step_updates_every_parameter_and_overfits(optimizer: str) -> None:
    cfg = _cfg(batch_size=2, bptt=4, optimizer=optimizer, lr=0.1 if optimizer == "adagrad" else 0.02)
    tx = make_optimizer(cfg.train)
    state = init_state(cfg, tx)
    before = state.params
    step = jax.jit(partial(train_step, cfg=cfg, tx=tx))
    stream = _stream(cfg, Sequences.from_lists([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]))
    # Negatives that are no target here: with GRU4Rec's log-Q an accidental hit (a target also
    # drawn as a sample) scores above the target's own column, a floor no training removes.
    chunk = _batch(next(stream.chunks()), negatives=(0, 11))
    key = jax.random.key(0)
    losses = []
    for _ in range(150):
        state, _, m = step(state, network.zero_carry(cfg.model, 2), chunk, STATS, key)
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
    carry = network.zero_carry(cfg.model, 3)
    stream = _stream(cfg, Sequences.from_lists([[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11, 1, 2, 3]]))
    for k, chunk in enumerate(stream.chunks()):
        state, carry, _ = step(state, carry, _batch(chunk, [k % 12, 3]), STATS, jax.random.key(0))
    assert stream.n_chunks >= 2 and len(traces) == 1


def test_adagrad_is_gru4rec_style() -> None:
    tx = make_optimizer(TrainConfig(optimizer="adagrad", lr=0.5, momentum=0.0))
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.2, 0.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    # First step: g / sqrt(g^2 + eps) = sign(g) for g != 0, times -lr; zero gradient, zero step.
    np.testing.assert_allclose(updates["w"], [-0.5, 0.0], atol=1e-4)
    assert isinstance(tx, optax.GradientTransformation)


def _toy_run(tmp_path: Path, name: str, *, long: bool = False, **train) -> tuple[RunConfig, rundir.RunDir]:
    seqs = [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7], [4, 5, 6, 7, 1], [6, 7, 1, 2]] * 4
    if long:  # one history that outlasts the others: the epoch's tail runs narrowed
        seqs = [*seqs[:6], [1, 2, 3, 4, 5, 6, 7] * 5]
    data = write_data_dir(tmp_path / "data", {"train": seqs, "valid": seqs[:5], "test": seqs[:5]}, 8)
    cfg = RunConfig(
        data_dir=str(data),
        n_items=8,
        model=ModelConfig(layers=(8,), dropout_hidden=0.1),
        train=TrainConfig(**{"epochs": 3, "batch_size": 3, "bptt": 2, "n_sample": 4, **train}),
    )
    return cfg, rundir.create(tmp_path / name, force=True)


def test_fit_writes_metrics_and_checkpoints(tmp_path: Path) -> None:
    cfg, run = _toy_run(tmp_path, "run")
    reports = fit(cfg, run)
    assert [r.epoch for r in reports] == [1, 2, 3]
    lines = run.metrics.read_text().splitlines()
    assert len(lines) == 3 and '"valid/mrr@20"' in lines[0]
    assert run.checkpoint("best").is_file() and run.checkpoint("last").is_file() and run.complete
    assert (run.path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert reports[-1].train_loss < reports[0].train_loss


def test_same_seed_same_result_different_seed_differs(tmp_path: Path) -> None:
    a = fit(*_toy_run(tmp_path, "a"))
    b = fit(*_toy_run(tmp_path, "b"))
    c = fit(*_toy_run(tmp_path, "c", seed=7))
    assert [r.train_loss for r in a] == [r.train_loss for r in b]
    assert [r.train_loss for r in a] != [r.train_loss for r in c]


class _Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("stop_at,long", [((2, 3), False), ((3, 1), False), ((2, 12), True)])
def test_resume_ends_like_an_uninterrupted_run(
    tmp_path: Path, stop_at: tuple[int, int], long: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupt mid-epoch (checkpoint after every chunk), resume, compare with a straight run;
    `long`: inside the narrowed tail of the epoch."""
    monkeypatch.setattr(batches, "NARROWEST", 1)
    monkeypatch.setattr(batches, "MIN_CHUNKS", 1)
    cfg, straight = _toy_run(tmp_path, "straight", long=long, checkpoint_every=1e-9)
    expected = fit(cfg, straight)
    cfg, run = _toy_run(tmp_path, "interrupted", long=long, checkpoint_every=1e-9)

    def interrupt(p) -> None:
        if (p.epoch, p.chunk) == stop_at:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit_mod.PROGRESS_EVERY, old = 1, fit_mod.PROGRESS_EVERY
        try:
            fit(cfg, run, on_progress=interrupt)
        finally:
            fit_mod.PROGRESS_EVERY = old
    assert not run.complete
    resumed = fit(cfg, run, resume=True)
    assert [r.epoch for r in resumed][-1] == 3
    assert resumed[-1].train_loss == expected[-1].train_loss
    assert resumed[-1].valid == expected[-1].valid
    assert run.metrics.read_text().count('"epoch"') == 3
    assert run.checkpoint("best").read_bytes() == straight.checkpoint("best").read_bytes()


def test_narrowed_tail_trains_like_the_full_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without dropout, running the idle tail narrower changes nothing but float order."""
    monkeypatch.setattr(batches, "NARROWEST", 1)
    monkeypatch.setattr(batches, "MIN_CHUNKS", 1)
    no_dropout = ModelConfig(layers=(8,), dropout_embed=0.0, dropout_hidden=0.0)
    cfg, run = _toy_run(tmp_path, "narrow", long=True)
    plan = batches.layout(batches.load_train_data(Path(cfg.data_dir)).lengths, 3, 2)
    assert batches.chunk_widths(plan, 2).min() == 1  # the toy does narrow
    narrow = fit(dataclasses.replace(cfg, model=no_dropout), run)
    cfg, run = _toy_run(tmp_path, "full", long=True, narrow_tail=False)
    full = fit(dataclasses.replace(cfg, model=no_dropout), run)
    np.testing.assert_allclose([r.train_loss for r in narrow], [r.train_loss for r in full], rtol=1e-5)
    for a, b in zip(narrow, full, strict=True):
        np.testing.assert_allclose(list(a.valid.values()), list(b.valid.values()), rtol=1e-4, atol=1e-6)


def test_sparse_item_updates_equal_dense_adagrad_and_skip_untouched_rows() -> None:
    cfg = _cfg(batch_size=2, bptt=3, n_sample=2, clip_norm=1.0)
    tx = make_optimizer(cfg.train)
    state = init_state(cfg, tx)
    stream = _stream(cfg, Sequences.from_lists([[1, 2, 3, 4], [5, 6, 7]]))
    batch = _batch(next(stream.chunks()), negatives=[9, 2])
    carry = network.zero_carry(cfg.model, 2)
    sparse, _, _ = train_step(state, carry, batch, STATS, jax.random.key(0), cfg=cfg, tx=tx)
    # Dense reference: gradient over the whole table, optax over the whole state.
    key = jax.random.fold_in(jax.random.key(0), state.step)
    grads = jax.grad(lambda p: chunk_loss(p, cfg, carry, batch, STATS, key)[0])(state.params)
    updates, _ = tx.update(grads, state.opt_state, state.params)
    dense = optax.apply_updates(state.params, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), sparse.params, dense)
    before, after = np.asarray(state.params["items"]["embedding"]), np.asarray(sparse.params["items"]["embedding"])
    untouched = [0, 8, 10, 11]
    np.testing.assert_array_equal(after[untouched], before[untouched])
    assert (after[[1, 2, 3, 5, 6, 9]] != before[[1, 2, 3, 5, 6, 9]]).any(axis=1).all()


def test_in_batch_only_negatives_train(tmp_path: Path) -> None:
    cfg, run = _toy_run(tmp_path, "inbatch", n_sample=0, epochs=2)
    reports = fit(cfg, run)
    assert reports[-1].train_loss < reports[0].train_loss


def test_early_stopping_and_best_checkpoint(tmp_path: Path) -> None:
    # A learning rate of ~0 cannot improve validation after the first epoch: patience 1 stops at 2.
    cfg, run = _toy_run(tmp_path, "patience", epochs=6, patience=1, optimizer="sgd", lr=1e-12)
    reports = fit(cfg, run)
    assert [r.epoch for r in reports] == [1, 2]
    assert reports[0].best and not reports[1].best


def test_divergence_names_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    from rnnrec_cli.errors import TrainingDiverged

    cfg, run = _toy_run(tmp_path, "nan", epochs=3, optimizer="sgd", lr=1e36, checkpoint_every=1e-9)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+.*Lower --lr \(now 1e\+36\)"):
        fit(cfg, run)
    assert not run.complete
    # The first step's update is huge but finite, so a checkpoint is written after it; the NaN
    # that follows is never saved: what was kept holds finite numbers only.
    tx = make_optimizer(cfg.train)
    state = init_state(cfg, tx)
    restored, pos = restore_last(run, state, network.zero_carry(cfg.model, cfg.train.batch_size))
    assert (pos.epoch, pos.chunk) >= (1, 1)  # saved after a step, before the loss turned NaN
    assert fit_mod._all_finite(restored.params)


def test_validation_subset_is_seeded_and_keeps_whole_sequences() -> None:
    from rnnrec_cli.data.batches import validation_subset

    seqs = Sequences.from_lists([[i, i + 1, i + 2][: 2 + i % 2] for i in range(20)])
    sub = validation_subset(seqs, 5, seed=3)
    assert len(sub) == 5 and sub.items.tolist() == validation_subset(seqs, 5, seed=3).items.tolist()
    whole = {tuple(seqs.items[a:b]) for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:], strict=True)}
    assert all(tuple(sub.items[a:b]) in whole for a, b in zip(sub.offsets[:-1], sub.offsets[1:], strict=True))
    assert validation_subset(seqs, 0, seed=3) is seqs and validation_subset(seqs, 50, seed=3) is seqs
