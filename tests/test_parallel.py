"""Data-parallel training: the same numbers on 1 or 4 (fake CPU) devices, with the item tables
split or not, after a resume from a sharded checkpoint, and from 2 processes over localhost;
plus the pieces each process relies on (slot subsets, reading a share of a split, prefetch)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.data.batches import layout, prefetch, session_parallel
from rnnrec_cli.data.sequences import read_lengths, read_sequences

from .conftest import stacked, write_data_dir

TRAIN_FLAGS = [
    "--layers",
    "16",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--bptt",
    "4",
    "--n-sample",
    "16",
    "--checkpoint-every",
    "0",
    "-q",
]


def _seqs(n: int = 300, n_items: int = 40, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = int(rng.integers(n_items))
        out.append(
            [
                (start + j) % n_items if rng.random() < 0.8 else int(rng.integers(n_items))
                for j in range(int(rng.integers(2, 12)))
            ]
        )
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    seqs = _seqs()
    return write_data_dir(
        tmp_path_factory.mktemp("par") / "data", {"train": seqs, "valid": seqs[:30], "test": seqs[30:60]}, 40
    )


def test_a_process_builds_its_slots_from_its_own_sequences_only(data_dir: Path) -> None:
    full = read_sequences(data_dir, "train")
    whole = stacked(session_parallel(full, 8, 4))
    plan = layout(read_lengths(data_dir, "train"), 8, 4)
    assert (read_lengths(data_dir, "train") == full.lengths).all()
    for slots in (range(0, 4), range(4, 8), range(2, 3)):
        wanted = np.zeros(len(full), bool)
        wanted[plan.sequences_in(slots)] = True
        mine = read_sequences(data_dir, "train", wanted)
        assert len(mine) == wanted.sum() < len(full)
        first = np.full(len(full), -1, np.int64)
        first[wanted] = mine.offsets[:-1]
        from rnnrec_cli.data.batches import Stream

        part = stacked(Stream(plan, mine.items, first, 4, slots))
        for field in ("inputs", "targets", "mask", "reset"):
            np.testing.assert_array_equal(getattr(part, field), getattr(whole, field)[:, slots.start : slots.stop])


def test_reading_in_small_batches_gives_the_same_sequences(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rnnrec_cli.data.sequences as data_mod

    expected = read_sequences(data_dir, "train")
    monkeypatch.setattr(data_mod, "READ_BATCH_ROWS", 7)  # sequences straddle batch edges
    got = read_sequences(data_dir, "train")
    np.testing.assert_array_equal(got.items, expected.items)
    np.testing.assert_array_equal(got.offsets, expected.offsets)
    np.testing.assert_array_equal(read_lengths(data_dir, "train"), expected.lengths)


def test_prefetch_keeps_order_and_raises_the_producers_error() -> None:
    assert list(prefetch(iter(range(50)), 3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad chunk")

    with pytest.raises(ValueError, match="bad chunk"):
        list(prefetch(failing(), 2))


def test_prefetch_stops_its_thread_when_the_consumer_leaves() -> None:
    before = threading.active_count()
    gen = prefetch(iter(range(10**6)), 2)
    assert next(gen) == 0
    gen.close()
    time.sleep(0.2)
    assert threading.active_count() == before


def test_prefetch_lets_the_consumer_leave_when_the_producer_is_done() -> None:
    """Ctrl-C at the end of an epoch: the producer has produced every item and waits to put its
    end marker on a full queue. Leaving must not wait for it forever."""
    gen = prefetch(iter(range(2)), 1)
    assert next(gen) == 0
    time.sleep(0.3)  # the producer puts 1, then blocks on the end marker (the queue holds one)
    closer = threading.Thread(target=gen.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), "closing the prefetch hung"


def test_clear_errors_for_impossible_device_counts(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(data_dir), "-o", str(tmp_path / "r"), "--devices", "2", *TRAIN_FLAGS])
    assert res.exit_code == 2 and "only 1 CPU device(s) visible" in res.output and "XLA_FLAGS" in res.output
    res = runner.invoke(app, ["train", str(data_dir), "-o", str(tmp_path / "r2"), "--num-processes", "2", *TRAIN_FLAGS])
    assert res.exit_code == 2 and "--coordinator" in res.output


def _env(devices: int) -> dict[str, str]:
    # Simulated devices are threads; on a loaded 2-core CI machine one can reach a collective
    # long after the others, past XLA's 40 s limit (an abort seen once in three CI runs).
    wait = "--xla_cpu_collective_timeout_seconds=900 --xla_cpu_collective_call_terminate_timeout_seconds=900"
    flags = f"--xla_force_host_platform_device_count={devices} {wait}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    env.pop("COLUMNS", None)
    return env


def _train(data_dir: Path, out: Path, devices: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rnnrec_cli", "train", str(data_dir), "-o", str(out), *TRAIN_FLAGS, *extra]
    return subprocess.run(cmd, env=_env(devices), capture_output=True, text=True, timeout=300)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _best(run: Path):
    from flax import serialization

    return serialization.msgpack_restore((run / "checkpoints" / "best.msgpack").read_bytes())["params"]


def _assert_same_run(a: Path, b: Path) -> None:
    import jax

    ma, mb = _metrics(a), _metrics(b)
    assert len(ma) == len(mb) == 2
    for ra, rb in zip(ma, mb, strict=True):
        np.testing.assert_allclose(ra["train/loss"], rb["train/loss"], rtol=1e-5)
        np.testing.assert_allclose(ra["valid/mrr@20"], rb["valid/mrr@20"], atol=1e-6)
    pa, pb = _best(a), _best(b)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def single_device_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "one"
    proc = _train(data_dir, out, 4, "--devices", "1")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--shard-items"]], ids=["replicated", "shard-items"])
def test_four_devices_train_like_one(data_dir: Path, single_device_run: Path, tmp_path: Path, extra) -> None:
    proc = _train(data_dir, tmp_path / "four", 4, "--devices", "4", *extra)
    assert proc.returncode == 0, proc.stderr
    _assert_same_run(single_device_run, tmp_path / "four")


@pytest.mark.slow
def test_resume_from_a_sharded_checkpoint_continues_the_run(data_dir: Path, tmp_path: Path) -> None:
    """Stop after epoch 1 (4 devices, item tables split), resume on 2 devices: same as straight
    through. Evaluation split over 4 devices ranks like one device."""
    script = f"""
import dataclasses, sys
from pathlib import Path
from rnnrec_cli import rundir
from rnnrec_cli.config import RunConfig, ModelConfig, TrainConfig
from rnnrec_cli.training.fit import fit
def cfg(epochs, devices):
    return RunConfig(data_dir={str(data_dir)!r}, n_items=40, model=ModelConfig(layers=(16,)),
        train=TrainConfig(epochs=epochs, batch_size=8, bptt=4, n_sample=16, checkpoint_every=0,
                          devices=devices, shard_items=True))
straight = rundir.create(Path({str(tmp_path / "straight")!r}), force=False)
fit(cfg(2, 4), straight)
stopped = rundir.create(Path({str(tmp_path / "stopped")!r}), force=False)
fit(cfg(1, 4), stopped)
(stopped.path / "COMPLETE").unlink()
fit(cfg(2, 2), stopped, resume=True)

import numpy as np
from rnnrec_cli.data.sequences import read_sequences
from rnnrec_cli.model.weights import restore_params
from rnnrec_cli.options import ScoreOptions
from rnnrec_cli.evaluation.scoring import model_scores
params = restore_params(straight, cfg(2, 1))
test = read_sequences(Path({str(data_dir)!r}), "test")
one = model_scores(params, cfg(2, 1), test, ScoreOptions(k=5, exclude_seen=True, devices=1))
four = model_scores(params, cfg(2, 1), test, ScoreOptions(k=5, exclude_seen=True, devices=4))
np.testing.assert_array_equal(one.ranks, four.ranks)
np.testing.assert_array_equal(one.topk, four.topk)
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(4), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _assert_same_run(tmp_path / "straight", tmp_path / "stopped")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_over_localhost_train_like_two_devices(data_dir: Path, tmp_path: Path) -> None:
    """Each process supplies its half of the slots from its own sequences; process 0 writes."""
    two = tmp_path / "two-devices"
    proc = _train(data_dir, two, 2, "--devices", "2")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "two-processes"
    port = _free_port()
    cmds = [
        [sys.executable, "-m", "rnnrec_cli", "train", str(data_dir), "-o", str(out), *TRAIN_FLAGS,
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
        for i in (0, 1)
    ]  # fmt: skip
    procs = [subprocess.Popen(c, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0].strip() == str(out) and outs[1][0] == ""  # only process 0 prints the run dir
    assert (out / "COMPLETE").is_file()
    _assert_same_run(two, out)
