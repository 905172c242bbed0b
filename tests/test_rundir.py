"""Run-directory files: atomic writes, format versions, and checkpoints written before item tables moved."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from rnnrec_cli import files, rundir
from rnnrec_cli.config import ModelConfig, RunConfig
from rnnrec_cli.errors import RunDirError
from rnnrec_cli.model import network, weights


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "f.json"
    files.save_json(target, {"a": 1})
    with pytest.raises(RuntimeError), files.atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert files.load_json(target) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


@pytest.mark.parametrize("embedding", [0, 6])
def test_a_checkpoint_from_before_the_items_subtree_restores(tmp_path: Path, embedding: int) -> None:
    cfg = RunConfig(data_dir="unused", n_items=9, model=ModelConfig(layers=(5,), embedding=embedding))
    params = jax.device_get(network.init_params(cfg.model, cfg.n_items, jax.random.key(1)))
    items = params.pop("items")
    old = {**params, "embedding": items["embedding"], "out_bias": items["bias"] + 1.0}
    if embedding:
        old["out_kernel"] = items["kernel"]
    run = rundir.create(tmp_path / "run", force=False)
    run.checkpoint("best").parent.mkdir(parents=True, exist_ok=True)
    # Written as before format versions: the bare tree, no "format_version" key.
    run.checkpoint("best").write_bytes(serialization.to_bytes({"params": old}))
    restored = weights.restore_params(run, cfg)
    np.testing.assert_array_equal(restored["items"]["embedding"], items["embedding"])
    np.testing.assert_array_equal(restored["items"]["bias"], items["bias"] + 1.0)
    assert ("kernel" in restored["items"]) == bool(embedding)
    assert set(restored) == {"items", "cells"}


def test_atomic_write_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "recs.csv"
    (tmp_path / "recs.csv.tmp").symlink_to(victim)  # the old, predictable temporary name
    with files.atomic_write(target) as tmp:
        assert not tmp.is_symlink() and tmp.name != "recs.csv.tmp"
        tmp.write_text("new")
    assert victim.read_text() == "keep me" and target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_files_carry_a_format_version_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    cfg = RunConfig(data_dir="unused", n_items=9, model=ModelConfig(layers=(5,)))
    run = rundir.create(tmp_path / "run", force=False)
    rundir.save_config(run, cfg)
    assert files.load_json(run.config)["format_version"] == files.FORMAT_VERSION
    assert rundir.load_config(run) == cfg
    params = jax.device_get(network.init_params(cfg.model, cfg.n_items, jax.random.key(1)))
    weights.save_checkpoint(run, "best", {"params": params})
    assert serialization.msgpack_restore(run.checkpoint("best").read_bytes())["format_version"] == files.FORMAT_VERSION
    np.testing.assert_array_equal(weights.restore_params(run, cfg)["items"]["bias"], params["items"]["bias"])

    newer = files.FORMAT_VERSION + 1
    files.save_json(run.config, {**files.load_json(run.config), "format_version": newer})
    with pytest.raises(RunDirError, match="newer rnnrec"):
        rundir.load_config(run)
    run.checkpoint("best").write_bytes(serialization.msgpack_serialize({"format_version": newer, "params": params}))
    with pytest.raises(RunDirError, match="newer rnnrec"):
        weights.restore_params(run, cfg)
    with pytest.raises(RunDirError, match="format_version"):
        files.format_version({"format_version": "1"}, "x.json", "fix it")
    assert files.format_version({}, "x.json", "fix it") == 0  # written before versions


def _metrics(tmp_path: Path, text: str) -> rundir.RunDir:
    run = rundir.RunDir(tmp_path)
    run.metrics.write_text(text)
    return run


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 2}\n', r"metrics.jsonl line 3: epoch 2 follows epoch 2"),
        ('{"epoch": 2}\n{"epoch": 1}\n', r"metrics.jsonl line 2: epoch 1 follows epoch 2"),
        ('{"epoch": 1, "seconds": null}\n', r"line 1: 'seconds' is None, not a non-negative finite number"),
        ('{"epoch": 1, "seconds": -1}\n', r"line 1: 'seconds' is -1, not a non-negative"),
        ('{"epoch": 1, "train/loss": Infinity}\n', r"line 1: 'train/loss' is inf, not a finite number"),
        ('{"epoch": 1, "valid/mrr@20": 1e308}\n', r"line 1: 'valid/mrr@20' is 1e\+308, not a share in \[0, 1\]"),
        ('{"epoch": 1, "best": 1}\n', r"line 1: 'best' is 1, not true or false"),
    ],
    ids=["duplicate-epoch", "out-of-order", "null-seconds", "negative-seconds", "inf-loss", "huge-rate", "best-int"],
)
def test_read_metrics_refuses_what_training_never_writes(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RunDirError, match=message):
        rundir.read_metrics(_metrics(tmp_path, text))


def test_read_metrics_drops_a_cut_off_last_line_and_round_trips_for_resume(tmp_path: Path) -> None:
    records = [
        {"epoch": 1, "train/loss": 2.0, "valid/mrr@20": 0.1, "valid/rmse": float("nan"), "seconds": 1.5, "best": True},
        {"epoch": 2, "train/loss": 1.0, "valid/mrr@20": None, "seconds": 0.0, "best": False},
    ]
    run = _metrics(tmp_path, "")
    rundir.write_metrics(run, records)
    with open(run.metrics, "a") as f:
        f.write('{"epoch": 3, "train/lo')  # killed mid-write
    read = rundir.read_metrics(run)
    assert [r["epoch"] for r in read] == [1, 2] and read[1] == records[1]
    # Resume keeps the epochs before the checkpoint, rewrites them, and appends the next one.
    rundir.write_metrics(run, [r for r in read if r["epoch"] < 2])
    rundir.append_metrics(run, records[1])
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2]
