"""The value task (a regression head on the shared recurrent body), alone and beside next-item:
losses, baselines, and the CLI end to end (train, evaluate against the value baselines, predict)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.data.sequences import Sequences
from rnnrec_cli.evaluation.baselines import value_baseline
from rnnrec_cli.evaluation.metrics import value_errors
from rnnrec_cli.model.losses import value_loss

from .conftest import cli_ok

# End to end: each task trained and evaluated through the command line.
pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = ["--layers", "32", "--epochs", "3", "--batch-size", "16", "--bptt", "4", "-q"]

_ok = cli_ok


def test_value_losses_by_hand() -> None:
    pred, target = np.array([0.0, 1.0, 4.0]), np.array([0.5, 1.0, 1.0])
    np.testing.assert_allclose(value_loss(pred, target, "mse"), [0.25, 0.0, 9.0])
    # Huber, delta 1: quadratic 0.5 e^2 inside, linear delta (|e| - delta / 2) outside.
    np.testing.assert_allclose(value_loss(pred, target, "huber", 1.0), [0.125, 0.0, 2.5])


def test_value_baselines_and_errors_by_hand() -> None:
    nan = np.nan
    train = Sequences.from_lists([[0, 1], [1, 2]])
    train = Sequences(train.items, train.offsets, np.array([1.0, 3.0, 5.0, nan], np.float32))
    test = Sequences.from_lists([[1, 2, 0]])
    test = Sequences(test.items, test.offsets, np.array([2.0, nan, 4.0], np.float32))
    # Targets: item 2 (value nan), item 0 (value 4). Training mean (1 + 3 + 5) / 3 = 3.
    np.testing.assert_allclose(value_baseline("global-mean", train, test), [3.0, 3.0])
    # Item 2's only training value is missing -> global mean; item 0's mean is 1.
    np.testing.assert_allclose(value_baseline("item-mean", train, test), [3.0, 1.0])
    # The sequence's earlier known values: [2] before both targets (the nan is skipped).
    np.testing.assert_allclose(value_baseline("history-mean", train, test), [2.0, 2.0])
    errors = value_errors(np.array([3.0, 1.0]), np.array([nan, 4.0]))
    assert errors == {"rmse": 3.0, "mae": 3.0, "n": 1}


def _valued_log(path: Path, n_users: int = 80, n_items: int = 30, seed: int = 0) -> Path:
    """Sessions walking item -> item + 1; a rating that is the item's quality plus the user's
    bias: an RNN seeing past ratings can learn both, the mean baselines only one or none."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(1, 5, n_items)
    rows, t = [], 1_700_000_000
    for u in range(n_users):
        bias = rng.normal(0, 0.8)
        for _ in range(3):
            item = int(rng.integers(n_items))
            for _ in range(int(rng.integers(4, 9))):
                rating = float(np.clip(quality[item] + bias + rng.normal(0, 0.2), 0.5, 5.5))
                rows.append((f"u{u}", item, t, round(rating, 2)))
                t += 60
                item = (item + 1) % n_items if rng.random() < 0.8 else int(rng.integers(n_items))
            t += 7200
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "rating"], orient="row").write_csv(path)
    return path


@pytest.fixture(scope="module")
def valued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tasks")
    log = _valued_log(tmp / "ratings.csv")
    data = tmp / "data"
    _ok(
        ["prepare", str(log), "-o", str(data), "--split", "time:0.2", "--valid", "0.1", "--min-item-support", "2", "-q"]
    )
    return log, data


def test_value_task_end_to_end(valued, tmp_path: Path) -> None:
    log, data = valued
    run = tmp_path / "value"
    # No tuning flags: the value task's own defaults must converge and beat the baselines.
    _ok(["train", str(data), "-o", str(run), "--task", "value", "--epochs", "6", *TINY[2:4], *TINY[4:]])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["tasks"] == ["value"] and cfg["train"]["monitor"] == "rmse"
    assert cfg["train"]["optimizer"] == "adam" and cfg["train"]["clip_norm"] > 0
    assert 1.0 < cfg["model"]["value_mean"] < 5.0 and cfg["model"]["value_std"] > 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"valid/rmse", "valid/mae"} <= set(record) and "valid/mrr@20" not in record

    result = json.loads(_ok(["evaluate", str(run), "--json", "-q"]))
    # The same top-level shape as a next-item result, the task named.
    assert result["task"] == "value" and result["metrics"] == result["value"]["metrics"]["gru"]
    assert set(result["baselines"]) == {"global-mean", "item-mean", "history-mean"}
    errors = result["value"]["metrics"]
    assert set(errors) == {"gru", "global-mean", "item-mean", "history-mean"}
    assert errors["gru"]["rmse"] < errors["global-mean"]["rmse"]
    assert errors["gru"]["rmse"] < errors["item-mean"]["rmse"]
    assert (run / "eval" / "default" / "test.json").is_file()
    table = runner.invoke(app, ["evaluate", str(run)])
    assert "RMSE" in table.output and "history-mean" in table.output

    every = pl.read_csv(_ok(["predict", str(run), str(log), "--task", "value", "-q"]).encode())
    assert every.columns == ["session_id", "position", "item_id", "value", "predicted_value"]
    assert every.filter(pl.col("position") == 1)["predicted_value"].null_count() == every["session_id"].n_unique()
    later = every.filter(pl.col("position") > 1)
    assert later["predicted_value"].null_count() == 0 and later["predicted_value"].is_between(-5, 12).all()

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\nu1,3\nu1,4\nu2,999\n")
    cands = pl.read_csv(
        _ok(["predict", str(run), str(log), "--task", "value", "--candidates", str(pairs), "-q"]).encode()
    )
    assert cands.columns == ["session_id", "item_id", "predicted_value"]
    assert cands["session_id"].to_list() == ["u1", "u1"] and cands["item_id"].to_list() == [3, 4]

    res = runner.invoke(app, ["predict", str(run), str(log), "-q"])
    assert res.exit_code == 1 and "--task value" in res.output


def test_next_item_and_value_share_one_network(valued, tmp_path: Path) -> None:
    log, data = valued
    run = tmp_path / "both"
    _ok(["train", str(data), "-o", str(run), "--task", "next-item,value", "--task-weights", "1,0.5", *TINY])
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"valid/rmse", "valid/mrr@20"} <= set(record)
    result = json.loads(_ok(["evaluate", str(run), "--json", "-q", "--baselines", "pop"]))
    assert "recall@20" in result["metrics"] and "gru" in result["value"]["metrics"]
    # Next-item predictions of a model that reads values: the input's values are fed too.
    recs = pl.read_csv(_ok(["predict", str(run), str(log), "-k", "3", "-q"]).encode())
    assert recs.height == 3 * recs["session_id"].n_unique()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--monitor", "rmse"], "needs the value task"),
        (["--task", "value", "--monitor", "mrr@20"], "use --monitor rmse"),
        (["--task", "next-item,value", "--task-weights", "1"], "one weight per task"),
        (["--task", "ratings"], "--task"),
    ],
)
def test_task_option_errors(valued, tmp_path: Path, args: list[str], message: str) -> None:
    _, data = valued
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), *args, *TINY])
    assert res.exit_code != 0 and message in res.output
    assert not (tmp_path / "r").exists()


def test_value_task_needs_a_value_column(tmp_path: Path) -> None:
    from .conftest import synthetic_log

    log = tmp_path / "e.csv"
    synthetic_log().write_csv(log)
    data = tmp_path / "data"
    _ok(["prepare", str(log), "-o", str(data), "--split", "time:0.2", "--valid", "0.1", "-q"])
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), "--task", "value", *TINY])
    assert res.exit_code == 1 and "--value-col" in res.output


# ---------------------------------------------------------------------------- event types


def _typed_log(path: Path, n_users: int = 90, n_items: int = 30, seed: int = 1) -> Path:
    """Shopping sessions: clicks walk item -> item + 1; a cart follows some clicks (same item);
    after a cart, the next event is an order of that item with probability 0.9. The next type is
    predictable from the current one, which the majority baseline ("click") cannot see."""
    rng = np.random.default_rng(seed)
    rows, t = [], 1_700_000_000
    for u in range(n_users):
        for _ in range(3):
            item = int(rng.integers(n_items))
            kind = "click"
            for _ in range(int(rng.integers(5, 10))):
                rows.append((f"u{u}", item, t, kind))
                t += 60
                if kind == "cart" and rng.random() < 0.9:
                    kind = "order"
                elif kind == "click" and rng.random() < 0.4:
                    kind = "cart"
                    item = (item + 1) % n_items
                else:
                    kind = "click"
                    item = (item + 1) % n_items
            t += 7200
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "event"], orient="row").write_csv(path)
    return path


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("typed")
    log = _typed_log(tmp / "shop.csv")
    data = tmp / "data"
    _ok(
        ["prepare", str(log), "-o", str(data), "--event-col", "event", "--keep-repeats", "--split", "time:0.2",
         "--valid", "0.1", "--min-item-support", "2", "-q"]
    )  # fmt: skip
    return log, data


def test_next_item_and_event_type_with_event_input(typed, tmp_path: Path) -> None:
    log, data = typed
    run = tmp_path / "multi"
    args = ["--task", "next-item,event-type", "--event-input", "--task-weights", "1,1", "--lr", "0.1"]
    _ok(["train", str(data), "-o", str(run), *args, "--epochs", "4", *TINY[:2], *TINY[4:]])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["event_types"] == ["cart", "click", "order"] and cfg["model"]["event_input"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"valid/accuracy", "valid/mrr@20"} <= set(record)

    result = json.loads(_ok(["evaluate", str(run), "--json", "-q", "--baselines", "pop,markov"]))
    ev = result["event_type"]
    assert ev["accuracy"]["gru"] > ev["accuracy"]["majority"] + 0.05
    assert set(ev["per_type"]) == {"cart", "click", "order"} and ev["per_type"]["order"]["support"] > 0
    assert set(result["breakdown"]["event"]["gru"]) >= {"cart", "click", "order"}
    everything = result["n_events"]

    orders = json.loads(_ok(["evaluate", str(run), "--json", "-q", "--baselines", "pop", "--target-events", "order"]))
    assert orders["protocol"]["target_events"] == ["order"]
    assert 0 < orders["n_events"] < everything
    assert orders["n_events"] == ev["per_type"]["order"]["support"]
    # The ordered item is the one just carted: the model sees the cart, popularity does not.
    assert orders["metrics"]["recall@20"] > orders["baselines"]["pop"]["recall@20"]

    recs = pl.read_csv(_ok(["predict", str(run), str(log), "-k", "2", "-q"]).encode())
    assert recs.height == 2 * recs["session_id"].n_unique()

    res = runner.invoke(app, ["evaluate", str(run), "--target-events", "refund", "-q"])
    assert res.exit_code == 1 and "cart, click, order" in res.output


def test_event_type_alone_monitors_accuracy(typed, tmp_path: Path) -> None:
    _, data = typed
    run = tmp_path / "types"
    _ok(["train", str(data), "-o", str(run), "--task", "event-type", *TINY])
    assert json.loads((run / "config.json").read_text())["train"]["monitor"] == "accuracy"
    result = json.loads(_ok(["evaluate", str(run), "--json", "-q"]))
    # The same top-level shape for every task (#12): the first task's numbers in metrics/baselines.
    assert result["task"] == "event-type" and result["metrics"]["accuracy"] == result["event_type"]["accuracy"]["gru"]
    assert result["event_type"]["accuracy"]["gru"] > 0 and set(result["baselines"]) == {"majority", "same-as-current"}


def test_event_type_needs_an_event_column(valued, tmp_path: Path) -> None:
    _, data = valued
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), "--task", "next-item,event-type", *TINY])
    assert res.exit_code == 1 and "--event-col" in res.output
