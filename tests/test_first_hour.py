"""A newcomer's first hour: the headline command gives a meaningful split, every command says
what it decided and what to run next, and the output reads well in logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app

from .conftest import REPO, synthetic_log

# End to end: a new user's first hour, through the command line.
pytestmark = pytest.mark.slow

runner = CliRunner()
SMALL = ["--layers", "16", "--epochs", "1", "--batch-size", "16", "--n-sample", "64"]


def test_headline_train_on_raw_movielens_rows_gives_a_real_split(tmp_path: Path) -> None:
    """`rnnrec train data.csv --cell lstm` on 20,000 MovieLens rows: 7 days would leave one test
    sequence, so the split falls back to the last 10% of events, says so, and warns of nothing."""
    rows = (REPO / "datasets/ml-latest-small/ratings.csv").read_text().splitlines()[:20001]
    data = tmp_path / "data.csv"
    data.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--cell", "lstm", "-o", str(run), *SMALL])
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr
    assert "the last 7 days hold 1 test targets" in result.stderr and "last 10% of events" in result.stderr
    assert "user = 'userId' (recognised name)" in result.stderr and "30 minutes" in result.stderr
    assert "split: test = time:0.1" in result.stderr and "time span: 1996-" in result.stderr
    assert f"Next: rnnrec evaluate {run}" in result.stderr
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    assert manifest["splits"]["test"]["targets"] >= 100 and manifest["splits"]["test"]["sequences"] >= 10
    assert manifest["stages"]["split_rule"] == {"test": "time:0.1", "valid": "time:0.1"}
    assert manifest["recognised"]["columns"]["item"] == {"column": "movieId", "how": "recognised name"}
    # Epoch lines give the validation time apart from the training time.
    assert "train " in result.stderr and "+ valid " in result.stderr
    evaluated = runner.invoke(app, ["evaluate", str(run), "--baselines", "pop"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "Warning" not in evaluated.stderr and "Next: rnnrec predict" in evaluated.stderr


def test_train_takes_prepare_options_for_raw_files(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    synthetic_log().write_csv(log)
    run = tmp_path / "run"
    args = ["train", str(log), "-o", str(run), "--split", "time:0.3", "--valid", "0", "--session-gap", "none"]
    result = runner.invoke(app, [*args, *SMALL])
    assert result.exit_code == 0, result.output
    cfg = json.loads((run / "data" / "manifest.json").read_text())["config"]
    assert cfg["split"] == "time:0.3" and cfg["valid"] == "0" and cfg["session_gap"] is None
    assert "no validation split: the last epoch's model is kept" in result.stderr
    # On a prepared directory they would be ignored silently: refuse instead.
    again = runner.invoke(app, ["train", str(run / "data"), "-o", str(tmp_path / "r2"), "--split", "time:0.1"])
    assert again.exit_code == 2 and "already prepared" in again.output


def test_short_log_falls_back_and_tiny_test_is_an_error(tmp_path: Path) -> None:
    """A log shorter than 7 days gets the fraction split; a test split of a handful of targets
    is refused unless asked for, naming the count."""
    log = tmp_path / "week.csv"
    df = synthetic_log(n_users=30, sessions_per_user=2)
    start = df["timestamp"].min()
    # Squeeze the log into 5 days.
    df = df.with_columns((pl.col("timestamp") - start) * 5 * 86400 // (df["timestamp"].max() - start) + start)
    df.write_csv(log)
    result = runner.invoke(app, ["prepare", str(log), "-o", str(tmp_path / "d"), "--min-item-support", "1"])
    assert result.exit_code == 0, result.output
    assert "with nothing before them" in result.stderr and "split: test = time:0.1" in result.stderr
    tiny = runner.invoke(
        app, ["prepare", str(log), "-o", str(tmp_path / "t"), "--split", "time:1h", "--min-item-support", "1"]
    )
    assert tiny.exit_code == 1 and "target events: its metrics would be noise" in tiny.stderr
    assert "--allow-tiny-test" in tiny.stderr and not (tmp_path / "t").exists()
    ok = runner.invoke(
        app,
        ["prepare", str(log), "-o", str(tmp_path / "t"), "--split", "time:1h", "--min-item-support", "1",
         "--allow-tiny-test"],
    )  # fmt: skip
    assert ok.exit_code == 0 and "Warning: the test split holds only" in ok.stderr


def test_empty_split_error_names_the_span_and_an_outlier(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    df = synthetic_log(n_users=10)
    # A two-event sequence in the year 9999: every time split of the rest looks empty.
    far = df.head(2).with_columns(pl.lit(253_402_000_000).alias("timestamp"), pl.lit("u999").alias("user_id"))
    pl.concat([df, far]).write_csv(log)
    args = ["prepare", str(log), "-o", str(tmp_path / "d"), "--split", "time:7d", "--time-unit", "s"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "data spans" in result.stderr and "over a year after all others" in result.stderr


def test_help_shows_defaults_in_panels() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnnrec_cli", "train", "--help"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"}, check=True,
    )  # fmt: skip
    out = result.stdout
    for panel in ("Data", "Model", "Loss", "Optimisation", "Run", "Scale"):
        assert f"─ {panel} " in out, panel
    assert "[default: 10]" in out and "[default: adagrad]" in out and "[default: 224]" in out
    assert "<list[str]>" not in out and "<bool>" not in out.split("--help")[0]


def test_logs_are_not_wrapped_when_stderr_is_a_file(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    synthetic_log().write_csv(log)
    with open(tmp_path / "err.txt", "w") as err:
        subprocess.run(
            [sys.executable, "-m", "rnnrec_cli", "prepare", str(log), "-o", str(tmp_path / "d")],
            stderr=err, stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
            check=True,
        )  # fmt: skip
    lines = (tmp_path / "err.txt").read_text().splitlines()
    columns_line = next(line for line in lines if line.startswith("columns:"))
    assert len(columns_line) > 80 and columns_line.endswith("(guessed from the magnitude)")


def test_ctrl_c_names_the_resume_command(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    synthetic_log(n_users=400).write_csv(log)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnrec_cli", "train", str(log), "-o", str(run), "--epochs", "50", "--layers", "64"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # After the first checkpoint (20 s into training, or the first epoch's end) there is something to resume.
    deadline = time.time() + 180
    while not (run / "checkpoints" / "last.msgpack").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"rnnrec train --resume {run}" in err
