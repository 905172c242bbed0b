"""train --seeds: one configuration trained with several seeds into one run; evaluate reports
their mean and spread, compare averages them, resume continues the seed that was training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app

pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = ["--layers", "16", "--epochs", "2", "--batch-size", "16", "--bptt", "4", "--n-sample", "32", "-q"]


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from .conftest import prepare_synthetic

    tmp = tmp_path_factory.mktemp("seeds")
    data, run, single = prepare_synthetic(tmp, n_items=60), tmp / "run", tmp / "single"
    _ok(["train", str(data), "-o", str(run), "--seeds", "3,5", *TINY])
    _ok(["evaluate", str(run), "--baselines", "pop", "--bootstrap", "50", "-q"])
    _ok(["train", str(data), "-o", str(single), "--seed", "3", *TINY])
    _ok(["evaluate", str(single), "--baselines", "none", "--bootstrap", "50", "-q"])
    return data, run, single


def test_each_further_seed_is_a_complete_run_of_the_same_settings(seeded) -> None:
    _, run, single = seeded
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["seed"] == 3 and cfg["train"]["more_seeds"] == [5]
    sub = run / "seeds" / "seed-5"
    assert (run / "COMPLETE").is_file() and (sub / "COMPLETE").is_file()
    sub_cfg = json.loads((sub / "config.json").read_text())
    assert sub_cfg["train"]["seed"] == 5 and sub_cfg["train"]["more_seeds"] == []
    assert sub_cfg["run_id"] != cfg["run_id"]
    same = {k: v for k, v in cfg["train"].items() if k not in ("seed", "more_seeds")}
    assert {k: v for k, v in sub_cfg["train"].items() if k not in ("seed", "more_seeds")} == same
    # The run's own model is its first seed: the same as a run of that seed alone.
    assert _losses(run) == _losses(single)
    assert _losses(sub) != _losses(run)
    # Each seed chose its own repeat weight (on the validation split), as a run of its own does.
    assert json.loads((run / "repeat.json").read_text()) == json.loads((single / "repeat.json").read_text())
    assert json.loads((sub / "repeat.json").read_text())["chosen_on"] == "valid"
    # A further seed is a run of its own: it evaluates alone.
    _ok(["evaluate", str(sub), "--baselines", "none", "--bootstrap", "20", "-q"])


def test_evaluate_reports_every_seed_their_mean_and_spread(seeded) -> None:
    _, run, _ = seeded
    result = json.loads((run / "eval" / "default" / "test.json").read_text())
    seeds = result["seeds"]
    assert seeds["seeds"] == [3, 5] and seeds["missing"] == []
    mrr = seeds["metrics"]["mrr@20"]
    assert mrr[0] == result["metrics"]["mrr@20"]
    assert seeds["mean"]["mrr@20"] == pytest.approx(sum(mrr) / 2)
    assert seeds["sd"]["mrr@20"] == pytest.approx(abs(mrr[0] - mrr[1]) / 2**0.5)
    ranks = pl.read_parquet(run / "eval" / "default" / "test_ranks.parquet")
    assert {"gru", "pop", "gru@seed5"} <= set(ranks.columns)
    shown = runner.invoke(app, ["evaluate", str(run), "--baselines", "none", "--bootstrap", "20"])
    assert shown.exit_code == 0, shown.output
    assert "gru over seeds 3, 5: MRR@20" in shown.output


def test_compare_averages_a_runs_seeds_and_shows_their_spread(seeded) -> None:
    _, run, single = seeded
    out = json.loads(_ok(["compare", str(run), str(single), "--json"]))
    first, second = out["runs"]
    result = json.loads((run / "eval" / "default" / "test.json").read_text())
    assert first["seeds"] == 2 and first["metrics"]["mrr@20"] == pytest.approx(result["seeds"]["mean"]["mrr@20"])
    assert first["seed_sd"]["mrr@20"] == pytest.approx(result["seeds"]["sd"]["mrr@20"])
    assert "seeds" not in second
    assert any("one seed, so seed noise is not measured" in n for n in out["notes"])


def test_a_seed_lost_before_completion_is_trained_again_on_resume(seeded, tmp_path: Path) -> None:
    _, run, _ = seeded
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "COMPLETE").unlink()
    shutil.rmtree(copy / "seeds" / "seed-5")
    _ok(["train", "--resume", str(copy), "-q"])
    assert (copy / "COMPLETE").is_file()
    assert _losses(copy / "seeds" / "seed-5") == _losses(run / "seeds" / "seed-5")


def test_an_edited_seed_metric_is_refused_by_compare(seeded, tmp_path: Path) -> None:
    _, run, single = seeded
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "eval" / "default" / "test.json"
    result = json.loads(path.read_text())
    result["seeds"]["metrics"]["mrr@20"][0] += 0.01
    path.write_text(json.dumps(result))
    bad = runner.invoke(app, ["compare", str(copy), str(single)])
    assert bad.exit_code == 1
    assert "does not start with the model's own mrr@20" in bad.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seeds", "1,1"], "--seeds must differ"),
        (["--seed", "2", "--seeds", "1,3"], "differs from the first of --seeds"),
        (["--seeds", "x"], "comma-separated list of seeds"),
        (["--seeds", ","], "at least one seed"),
    ],
)
def test_bad_seeds_are_usage_errors(seeded, tmp_path: Path, args: list[str], says: str) -> None:
    data, _, _ = seeded
    bad = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), *args, *TINY])
    assert bad.exit_code == 2, bad.output
    assert says in bad.output
    assert not (tmp_path / "r").exists()


def test_tune_refuses_further_seeds_in_its_config(seeded, tmp_path: Path) -> None:
    data, _, _ = seeded
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train": {"more_seeds": [1]}}))
    bad = runner.invoke(app, ["tune", str(data), "-o", str(tmp_path / "s"), "--config", str(config), "--trials", "1"])
    assert bad.exit_code != 0
    assert "tune trains each trial with one seed" in bad.output


def test_the_library_trains_and_evaluates_several_seeds(seeded, tmp_path: Path) -> None:
    import rnnrec_cli as rr

    data, _, _ = seeded
    small = rr.TrainConfig(epochs=1, batch_size=16, bptt=4, n_sample=32)
    run = rr.train(data, out=tmp_path / "run", model=rr.ModelConfig(layers=(16,)), train=small, seeds=[4, 2])
    result = rr.evaluate(run, baselines=())
    assert result.seeds is not None and result.seeds["seeds"] == [4, 2]
    assert result.metrics is not None and result.seeds["metrics"]["recall@20"][0] == result.metrics["recall@20"]
    with pytest.raises(rr.ConfigError, match="differs from the first of seeds"):
        rr.train(data, out=tmp_path / "other", train=small, seed=1, seeds=[4, 2])


def test_the_report_shows_the_seeds_mean_and_sd(seeded, tmp_path: Path) -> None:
    _, run, _ = seeded
    page = tmp_path / "page.html"
    _ok(["report", str(run), "-o", str(page)])
    html = page.read_text()
    result = json.loads((run / "eval" / "default" / "test.json").read_text())
    assert "gru, mean of 2 seeds" in html
    assert f"sd {result['seeds']['sd']['mrr@20']:.4f}" in html
