"""The repeat weight chosen while training: the latest training sequences held out until the last
epoch (training.holdout), what evaluate and predict then apply, and exact resume across it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.config import ConfigError, ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data import batches
from rnnrec_cli.rundir import RunDir, create
from rnnrec_cli.training import fit as fit_mod
from rnnrec_cli.training.fit import fit
from rnnrec_cli.training.holdout import held_out, held_sequences

from .conftest import cli_ok, write_data_dir


def _repeating(rng: np.random.Generator, n: int, n_items: int) -> list[list[int]]:
    """Sessions that each go back and forth over three random items of their own."""
    return [rng.choice(rng.integers(0, n_items, 3), size=8).tolist() for _ in range(n)]


def test_held_out_leaves_something_on_both_sides() -> None:
    assert held_out(100, 0.05) == 5 and held_out(100, 0.0) == 0
    assert held_out(5, 0.05) == 0  # rounds to none: nothing to choose on
    assert held_out(1, 0.5) == 0  # nothing left to train


def test_repeat_holdout_is_a_share() -> None:
    for bad in (-0.1, 0.6, float("nan")):
        with pytest.raises(ConfigError):
            TrainConfig(repeat_holdout=bad)


def test_the_epochs_before_the_last_leave_out_the_earliest_sequences(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 30, rng.integers(2, 9)).tolist() for _ in range(40)]
    data = write_data_dir(tmp_path / "d", {"train": seqs, "valid": [], "test": seqs[:3]}, 30)
    cfg = RunConfig(data_dir=str(data), n_items=30, train=TrainConfig(batch_size=4, bptt=3))
    train = batches.load_train_data(data)
    n_held = held_out(len(seqs), 0.25)
    stream = batches.epoch_stream(cfg, train, 1, range(4), subset=np.arange(n_held, len(seqs)))
    trained = np.sort(np.concatenate([b.target_pos[b.mask] for b in stream.chunks()]))
    # Every (input, target) pair of the later sequences exactly once, none of the held-out ones.
    starts = np.cumsum([0] + [len(x) for x in seqs])[:-1]
    pairs = [np.arange(o + 1, o + len(x)) for o, x in zip(starts, seqs, strict=True)]
    np.testing.assert_array_equal(trained, np.concatenate(pairs[n_held:]))
    assert held_sequences(train, n_held).items.tolist() == [x for s in seqs[:n_held] for x in s]
    shuffled = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, shuffle=True))
    stream = batches.epoch_stream(shuffled, train, 1, range(4), subset=np.arange(n_held, len(seqs)))
    trained = np.sort(np.concatenate([b.target_pos[b.mask] for b in stream.chunks()]))
    np.testing.assert_array_equal(trained, np.concatenate(pairs[n_held:]))


def _no_valid_run(tmp_path: Path, name: str, **train) -> tuple[RunConfig, RunDir]:
    rng = np.random.default_rng(3)
    seqs = _repeating(rng, 24, 40)
    data = write_data_dir(tmp_path / "data", {"train": seqs, "valid": [], "test": seqs[:4]}, 40)
    cfg = RunConfig(
        data_dir=str(data),
        n_items=40,
        model=ModelConfig(layers=(8,), dropout_hidden=0.1),
        train=TrainConfig(**{"epochs": 2, "batch_size": 3, "bptt": 2, "n_sample": 4, "repeat_holdout": 0.25, **train}),
    )
    return cfg, create(tmp_path / name, force=True)


class _Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [(1, 2), (2, 2)])
def test_a_run_stopped_before_or_after_the_choice_resumes_to_the_same_choice_and_model(
    tmp_path: Path, stop_at: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped before the choice (epoch 1) or after it (the last epoch), resumed: the same
    weight, the same model as a straight run."""
    cfg, straight = _no_valid_run(tmp_path, "straight", checkpoint_every=1e-9)
    monkeypatch.setattr(fit_mod, "PROGRESS_EVERY", 1)
    chunks: dict[int, int] = {}
    expected = fit(cfg, straight, on_progress=lambda p: chunks.update({p.epoch: p.n_chunks}))
    # The first epoch ran without the held-out sequences, the last with them.
    assert chunks[1] < chunks[2]
    choice = json.loads((straight.path / "repeat.json").read_text())
    assert choice["chosen_on"] == "holdout" and choice["sequences"] == 6
    cfg, run = _no_valid_run(tmp_path, "stopped", checkpoint_every=1e-9)

    def interrupt(p) -> None:
        if (p.epoch, p.chunk) == stop_at:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(cfg, run, on_progress=interrupt)
    assert (run.path / "repeat.json").is_file() == (stop_at[0] == 2)
    resumed = fit(cfg, run, resume=True)
    assert resumed[-1].train_loss == expected[-1].train_loss
    assert json.loads((run.path / "repeat.json").read_text()) == choice
    assert run.checkpoint("best").read_bytes() == straight.checkpoint("best").read_bytes()


@pytest.mark.slow
def test_train_chooses_the_weight_and_evaluate_and_predict_apply_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    splits = {"train": _repeating(rng, 300, 300), "valid": [], "test": _repeating(rng, 60, 300)}
    data = write_data_dir(tmp_path / "data", splits, 300)
    run, plain = tmp_path / "run", tmp_path / "plain"
    args = ["--layers", "8", "--epochs", "2", "--batch-size", "16", "-q"]
    cli_ok(["train", str(data), "-o", str(run), *args])
    cli_ok(["train", str(data), "-o", str(plain), *args, "--repeat-holdout", "0"])
    choice = json.loads((run / "repeat.json").read_text())
    assert choice["chosen_on"] == "holdout" and choice["sequences"] == 15 and choice["weight"] > 0
    assert not (plain / "repeat.json").exists()
    # One epoch has nothing to hold the sequences out of: no choice, no boost.
    cli_ok(["train", str(data), "-o", str(tmp_path / "one"), *args, "--epochs", "1"])
    assert not (tmp_path / "one" / "repeat.json").exists()
    default = json.loads(cli_ok(["evaluate", str(run), "--baselines", "spop", "--json", "-q"]))
    off = json.loads(cli_ok(["evaluate", str(run), "--baselines", "spop", "--repeat", "off", "--json", "-q"]))
    assert default["protocol"]["repeat"] == choice and "repeat" not in off["protocol"]
    assert default["metrics"]["mrr@20"] > off["metrics"]["mrr@20"] + 0.1
    assert (run / "eval" / "default" / "test.json").is_file() and (run / "eval" / "repeat-off" / "test.json").is_file()
    # A run trained without the choice evaluates unboosted by default, which is the protocol of a
    # default evaluation made before `run` was the default (`off`): no clash, no --force needed.
    cli_ok(["evaluate", str(plain), "--baselines", "none", "--repeat", "off", "--name", "default", "-q"])
    unboosted = json.loads(cli_ok(["evaluate", str(plain), "--baselines", "none", "--json", "-q"]))
    assert "repeat" not in unboosted["protocol"]
    # Runs with a chosen weight pair in compare with runs without one: the weight is their model's.
    assert "mrr@20" in cli_ok(["compare", str(run), str(plain), "--json"])
    # Two evaluations of one run, paired: the boost against none.
    paired = json.loads(cli_ok(["compare", str(run), str(run), "--eval", "repeat-off,default", "--json"]))
    assert [r["run"] for r in paired["runs"]] == [f"{run} (repeat-off)", f"{run} (default)"]
    gain = paired["runs"][1]["vs_first"]["mrr@20"]
    assert gain["diff"] == pytest.approx(default["metrics"]["mrr@20"] - off["metrics"]["mrr@20"]) and gain["ci"][0] > 0
    for args, says in (
        (["--eval", "default"], "--eval A,B"),
        (["--eval", "default,default"], "given twice"),
        (["--eval", "default,repeat-off,default"], "one per run"),
        (["--eval", "default,nope"], "no such evaluation"),
    ):
        result = CliRunner().invoke(app, ["compare", str(run), str(run), *args])
        assert result.exit_code != 0 and says in result.output and "Traceback" not in result.output
    # predict applies it where the session's own items are kept, as the same weight given.
    events = tmp_path / "events.csv"
    events.write_text("session_id,item_id,timestamp\ns,7,1\ns,8,2\ns,7,3\ns,9,4\n")
    own = cli_ok(["predict", str(run), str(events), "--include-seen", "-k", "5"])
    given = cli_ok(["predict", str(run), str(events), "--include-seen", "-k", "5", "--repeat", str(choice["weight"])])
    assert own == given
    assert own.splitlines()[1].split(",")[2] == "7"  # seen twice: first
    excluded = cli_ok(["predict", str(run), str(events), "-k", "5"])
    assert "7" not in [line.split(",")[2] for line in excluded.splitlines()[1:]]
    # A damaged choice is one line naming the file and the way out, for evaluate and predict alike.
    (run / "repeat.json").write_text('{"weight": "lots"}')
    for args in (["evaluate", str(run)], ["predict", str(run), str(events), "--include-seen"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "repeat.json is damaged" in result.output and "--repeat off" in result.output
        assert "Traceback" not in result.output
    cli_ok(["evaluate", str(run), "--repeat", "off", "-q", "--baselines", "none"])  # the way out works
