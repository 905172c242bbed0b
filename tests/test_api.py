"""The Python API: the documented example runs, a given split behaves as on the command line,
DataFrames are accepted, evaluate writes nothing until saved, recommend matches predict."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import rnnrec_cli as rr

from .conftest import cli_ok, synthetic_log

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_python_api_page_runs_on_the_bundled_data(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python-api.md").read_text(), re.S)
    assert len(blocks) >= 2
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test targets" in out.stdout and "alice" in out.stdout
    run = tmp_path / "demo-run" / "run"
    assert (run / "COMPLETE").is_file() and (run / "eval" / "default" / "test.json").is_file()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("api")
    synthetic_log(n_users=50, n_items=30).write_csv(tmp / "events.csv")
    return tmp / "events.csv"


def _tables(data: Path) -> dict[str, pl.DataFrame]:
    return {p.name: pl.read_parquet(p) for p in sorted(data.glob("*.parquet"))}


def test_a_given_test_split_in_python_matches_the_command_line(log: Path, tmp_path: Path) -> None:
    events = pl.read_csv(log).sort("timestamp")
    cut = events.height * 3 // 4
    events.head(cut).write_csv(tmp_path / "train.csv")
    events.tail(events.height - cut).write_csv(tmp_path / "test.csv")
    cli_ok(
        [
            "prepare",
            str(tmp_path / "train.csv"),
            "--test",
            str(tmp_path / "test.csv"),
            "-o",
            str(tmp_path / "cli"),
            "-q",
        ]
    )
    data = rr.prepare(tmp_path / "train.csv", test=tmp_path / "test.csv", out=tmp_path / "api")
    cli_manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert data.manifest["config"] == cli_manifest["config"]
    assert data.manifest["config"]["dedupe_consecutive"] is False and data.manifest["config"]["min_item_support"] == 1
    assert data.manifest["splits"] == cli_manifest["splits"]
    cli, api = _tables(tmp_path / "cli"), _tables(tmp_path / "api")
    assert cli.keys() == api.keys()
    for name in cli:
        assert cli[name].equals(api[name]), name


def test_prepare_takes_a_dataframe_and_keeps_data_in_memory_until_saved(log: Path, tmp_path: Path) -> None:
    from_file = rr.prepare(log, split="time:0.2", valid="0.1")
    from_frame = rr.prepare(pl.read_csv(log), split="time:0.2", valid="0.1")
    assert from_file.temporary and from_frame.temporary
    assert from_frame.manifest["splits"] == from_file.manifest["splits"]
    assert from_frame.read("test").equals(from_file.read("test"))
    saved = from_frame.save(tmp_path / "data")
    assert not saved.temporary and (tmp_path / "data" / "manifest.json").is_file()
    with pytest.raises(rr.RunDirError, match="already exists"):
        from_frame.save(tmp_path / "data")
    with pytest.raises(rr.ConfigError, match=r"prepared\.save"):
        rr.train(from_file, out=tmp_path / "run")
    with pytest.raises(rr.ConfigError, match="preset"):
        rr.prepare(log, preset="nope")


@pytest.fixture(scope="module")
def trained(log: Path, tmp_path_factory: pytest.TempPathFactory) -> rr.Run:
    tmp = tmp_path_factory.mktemp("api-run")
    data = rr.prepare(log, out=tmp / "data", split="time:0.2", valid="0.1")
    return rr.train(
        data, out=tmp / "run", model=rr.ModelConfig(layers=(8,)), train=rr.TrainConfig(epochs=1, batch_size=16), seed=0
    )


@pytest.mark.slow
def test_train_returns_the_run_and_evaluate_writes_nothing_until_saved(trained: rr.Run) -> None:
    assert trained.config.model.layers == (8,) and len(trained.history) == 1
    assert rr.open_run(trained.path).config == trained.config
    result = rr.evaluate(trained, baselines=("pop",), n_boot=20)
    assert not (trained.path / "eval").exists()
    assert set(result.table()["name"]) == {"gru", "pop"}
    saved = result.save()
    assert json.loads((trained.path / "eval" / "default" / "test.json").read_text())["metrics"] == saved.metrics
    with pytest.raises(rr.RunDirError, match="no run to be saved"):
        saved.save()


@pytest.mark.slow
def test_recommend_in_memory_matches_predict_on_a_file(trained: rr.Run, log: Path, tmp_path: Path) -> None:
    events = pl.read_csv(log).sort("timestamp").head(40)
    events.write_csv(tmp_path / "sessions.csv")
    out = tmp_path / "recs.csv"
    cli_ok(["predict", str(trained.path), str(tmp_path / "sessions.csv"), "-o", str(out), "-k", "3", "-q"])
    from_file = pl.read_csv(out, schema_overrides={"session_id": pl.String, "item_id": pl.String})
    from_frame = rr.recommend(trained, events, k=3)
    assert from_frame.height == from_file.height
    assert from_frame["item_id"].cast(pl.String).to_list() == from_file["item_id"].to_list()
    # Without times there are no session gaps: each user's events are one sequence, in row order.
    whole = rr.recommend(trained, events.drop("timestamp"), k=3)
    sessions = {str(u): g["item_id"].to_list() for (u,), g in events.group_by("user_id", maintain_order=True)}
    from_lists = rr.recommend(trained, sessions, k=3)
    assert from_lists["session_id"].to_list() == whole["session_id"].cast(pl.String).to_list()
    assert from_lists["item_id"].to_list() == whole["item_id"].to_list()
    with pytest.raises(rr.ConfigError, match="list of item ids"):
        rr.recommend(trained, {"a": "xyz"})


@pytest.mark.slow
def test_compare_and_report_in_process(trained: rr.Run, tmp_path: Path) -> None:
    import shutil

    first = rr.open_run(shutil.copytree(trained.path, tmp_path / "a"))
    other = rr.train(first.config.data_dir, out=tmp_path / "b", model=rr.ModelConfig(layers=(8,)),
                     train=rr.TrainConfig(epochs=1, batch_size=16), seed=1)  # fmt: skip
    for run in (first, other):
        rr.evaluate(run, baselines=("pop",), n_boot=100, save=True, force=True)
    result = rr.compare([first, other], metric="recall@20", n_boot=200)
    assert result.metric == "recall@20" and result.evaluation == "default"
    with pytest.raises(rr.ConfigError, match="n_boot"):
        rr.compare([first, other], n_boot=5)
    html = rr.report([first, other], out=tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == html and "recall@20" in html.lower()


@pytest.mark.slow
def test_tune_is_one_call(trained: rr.Run, tmp_path: Path) -> None:
    found = rr.tune(trained.config.data_dir, out=tmp_path / "study", trials=2, fixed=("layers",), finalists=1,
                    final_epochs=2, model=rr.ModelConfig(layers=(8,)), train=rr.TrainConfig(epochs=1, batch_size=16))  # fmt: skip
    assert found.best == tmp_path / "study" / "best.json" and found.best.is_file()
    # The best trial and trial 0, each trained again for the final epochs.
    assert {f.trial for f in found.finalists} >= {0} and all(f.epochs == 2 for f in found.finalists)
    assert 1 <= len(found.top) <= 2 and all("layers" not in row["params"] for row in found.top)
    with pytest.raises(rr.ConfigError, match="metric"):
        rr.tune(trained.config.data_dir, out=tmp_path / "other", metric="ndcg@5")


def test_library_errors_name_fields_not_flags(log: Path) -> None:
    with pytest.raises(rr.ConfigError, match=r"^n_boot must be between 100") as err:
        rr.compare(["a", "b"], n_boot=5)
    assert "--" not in str(err.value)
    with pytest.raises(rr.ConfigError, match="min_item_support must be > 0"):
        rr.prepare(log, min_item_support=0)
    with pytest.raises(rr.DataError, match="Pass item_col with one of those"):
        rr.prepare(log, item_col="nope")
    with pytest.raises(rr.ConfigError, match="prepare: no setting named 'bogus'"):
        rr.prepare(log, bogus=1)
    with pytest.raises(rr.ConfigError, match="evaluate: no setting named 'kk'"):
        rr.evaluate(log.parent, kk=3)


@pytest.mark.slow
def test_tune_stops_when_trials_keep_failing(trained: rr.Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnrec_cli.errors import TrainingDiverged
    from rnnrec_cli.training import fit

    def diverges(*args: object, **kwargs: object) -> None:
        raise TrainingDiverged("training diverged at epoch 1 (loss nan)")

    monkeypatch.setattr(fit, "fit", diverges)  # every trial fails, as with --lr 1e30 on real data
    with pytest.raises(TrainingDiverged, match=r"the last 2 trials all failed \(trial 1: training diverged"):
        rr.tune(trained.config.data_dir, out=tmp_path / "study", trials=50, max_failed=2,
                model=rr.ModelConfig(layers=(8,)), train=rr.TrainConfig(epochs=1, batch_size=16))  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "study" / "trials").iterdir()) == ["0000", "0001"]
