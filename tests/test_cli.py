"""End to end through the command line: prepare -> train -> evaluate -> predict."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app

# End to end: the command line on tiny logs.
pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = ["--layers", "32", "--epochs", "4", "--batch-size", "16", "--bptt", "4", "--lr", "0.2", "-q"]


def _ok(args: list[str], **kw) -> str:
    result = runner.invoke(app, args, **kw)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from .conftest import synthetic_log

    tmp = tmp_path_factory.mktemp("e2e")
    log = tmp / "events.csv"
    synthetic_log(n_users=100, n_items=150).write_csv(log)
    data, run = tmp / "data", tmp / "run"
    assert _ok(["prepare", str(log), "-o", str(data), "--split", "time:0.2", "--valid", "0.1", "-q"]).strip() == str(
        data
    )
    out = _ok(["train", str(data), "-o", str(run), *TINY])
    assert out.strip().splitlines()[-1] == str(run)
    return log, data, run


def test_run_directory_contents(trained) -> None:
    _, _, run = trained
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoints", "items.parquet", "data_manifest.json", "COMPLETE"} <= names
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["cell"] == "gru" and cfg["train"]["epochs"] == 4 and cfg["train"]["optimizer"] == "adagrad"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_evaluate_json_beats_random(trained) -> None:
    _, _, run = trained
    result = json.loads(_ok(["evaluate", str(run), "--json", "-q"]))
    assert result["split"] == "test" and result["n_events"] > 0
    n_items = result["n_items"]
    # The synthetic log's next item is mostly item + 1: far better than random (20 / n_items).
    assert result["metrics"]["recall@20"] > 3 * 20 / n_items
    assert result["metrics"]["recall@20"] > result["baselines"]["pop"]["recall@20"]
    assert (run / "eval" / "default" / "test.json").is_file()


def test_evaluate_with_k_beyond_the_catalogue(trained) -> None:
    """Cut-offs past the catalogue: lists hold every item, so every target is found."""
    _, _, run = trained
    result = json.loads(_ok(["evaluate", str(run), "--json", "-q", "--k", "1,5,1000", "--baselines", "pop,sknn"]))
    assert result["n_items"] < 1000
    for metrics in [result["metrics"], *result["baselines"].values()]:
        assert metrics["recall@1000"] == 1.0 and metrics["coverage@1000"] == 1.0


def test_evaluate_table_on_stderr(trained) -> None:
    _, _, run = trained
    result = runner.invoke(app, ["evaluate", str(run), "--k", "5,20"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Recall@20" in result.stderr and "sknn" in result.stderr and "gru" in result.stderr


def test_predict_file_and_stdin(trained, tmp_path: Path) -> None:
    log, _, run = trained
    out = tmp_path / "recs.csv"
    _ok(["predict", str(run), str(log), "-o", str(out), "-k", "5", "-q"])
    recs = pl.read_csv(out)
    assert recs.columns == ["session_id", "rank", "item_id", "score", "fallback"]
    events = pl.read_csv(log)
    assert set(recs["session_id"]) == set(events["user_id"])
    assert recs.group_by("session_id").len()["len"].max() == 5
    assert set(recs["item_id"]) <= set(events["item_id"])
    # Seen items are excluded: the last session's items never come back for that user.
    piped = _ok(["predict", str(run), "-", "-k", "3", "-q"], input=log.read_text())
    assert piped.splitlines()[0] == "session_id,rank,item_id,score,fallback"
    assert len(piped.splitlines()) == 1 + 3 * events["user_id"].n_unique()


def test_predict_excludes_seen_items(trained, tmp_path: Path) -> None:
    _, _, run = trained
    p = tmp_path / "s.csv"
    p.write_text("user_id,item_id,timestamp\nx,1,100\nx,2,160\nx,3,220\n")
    recs = pl.read_csv(runner.invoke(app, ["predict", str(run), str(p), "-k", "10", "-q"]).stdout.encode())
    assert not set(recs["item_id"]) & {1, 2, 3}
    # The structure of the log: after 1, 2, 3 comes 4.
    assert recs["item_id"][0] == 4


def test_predict_refuses_to_overwrite(trained, tmp_path: Path) -> None:
    log, _, run = trained
    out = tmp_path / "recs.csv"
    out.write_text("keep me")
    result = runner.invoke(app, ["predict", str(run), str(log), "-o", str(out)])
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
    assert out.read_text() == "keep me"


def test_train_on_raw_file_prepares_into_the_run(log_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _ok(["train", str(log_csv), "-o", str(run), "--cell", "lstm", "--epochs", "1", "--layers", "8", "-q"])
    assert out.strip() == str(run)
    assert (run / "data" / "manifest.json").is_file()
    assert json.loads((run / "config.json").read_text())["model"]["cell"] == "lstm"


def test_missing_column_is_a_one_line_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("user,product,ts\n1,2,3\n")
    result = runner.invoke(app, ["prepare", str(p), "-o", str(tmp_path / "d"), "--item-col", "item_id"])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"Error: column 'item_id' not in {p} (found: user, product, ts). Pass --item-col with one of those."
    )
    assert not (tmp_path / "d").exists()


def test_missing_file_and_bad_run_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "d")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1 and "not a run directory" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["train", "x", "--cell", "transformer"],
        ["evaluate", "x", "--ties", "random"],
        ["prepare", "x", "-o", "y", "--split", "random"],
        ["train", "x", "--layers", "a,b"],
        ["nonsense"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_module_entry_point_and_closed_pipe(trained) -> None:
    log, _, run = trained
    # --every-position writes far more than a pipe holds, so the writer meets the closed pipe.
    cmd = f"{sys.executable} -m rnnrec_cli predict {run} {log} -k 20 --every-position -q | head -n 2"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "session_id,position,rank,item_id,score,fallback"
    assert "Traceback" not in proc.stderr


def test_evaluate_data_dir_with_baselines_only(trained) -> None:
    _, data, _ = trained
    result = json.loads(_ok(["evaluate", str(data), "--baselines", "pop,markov", "--json", "-q", "--k", "20"]))
    assert "metrics" not in result and set(result["baselines"]) == {"pop", "markov"}
    # The log's next item is mostly item + 1: first-order transitions capture it.
    assert result["baselines"]["markov"]["recall@20"] > 0.5
    bad = runner.invoke(app, ["evaluate", str(data), "--baselines", "magic"])
    assert bad.exit_code == 2 and "unknown baseline" in bad.output


def test_kill_9_then_resume_matches_an_uninterrupted_run(trained, tmp_path: Path) -> None:
    """A real SIGKILL mid-training, then `train --resume`: same final metrics as a straight run."""
    import signal
    import time

    _, data, _ = trained
    args = [*TINY, "--epochs", "3", "--checkpoint-every", "0.000001", "--seed", "3"]
    straight = tmp_path / "straight"
    _ok(["train", str(data), "-o", str(straight), *args])
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rnnrec_cli", "train", str(data), "-o", str(killed), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Wait until at least one epoch is logged and a mid-epoch checkpoint follows it.
    while time.time() < deadline and proc.poll() is None:
        metrics = killed / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (killed / "COMPLETE").exists():
        pytest.skip("training finished before it could be killed")
    out = _ok(["train", "--resume", str(killed), "-q"])
    assert out.strip() == str(killed)
    final = lambda run: json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])  # noqa: E731
    a, b = final(straight), final(killed)
    assert a["epoch"] == b["epoch"] == 3
    assert a["train/loss"] == b["train/loss"] and a["valid/mrr@20"] == b["valid/mrr@20"]
    # The same weights, byte for byte; only the run each checkpoint names (written_by) differs.
    from flax import serialization

    weights = lambda run: serialization.msgpack_restore((run / "checkpoints/best.msgpack").read_bytes())  # noqa: E731
    a_tree, b_tree = weights(straight), weights(killed)
    assert a_tree.pop("written_by")["run_id"] != b_tree.pop("written_by")["run_id"]
    assert serialization.msgpack_serialize(a_tree) == serialization.msgpack_serialize(b_tree)


def test_resume_refuses_a_finished_run(trained) -> None:
    _, _, run = trained
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1 and "finished training already" in result.stderr


def test_prepare_from_stdin_with_filters(tmp_path: Path) -> None:
    rows = ["user_id,item_id,timestamp,event,rating"]
    for u in range(30):
        for j in range(6):
            rows.append(
                f"u{u},{(u + j) % 12},{1_700_000_000 + u * 86400 + j * 60},{'view' if j % 3 else 'buy'},{j % 5}"
            )
    data = tmp_path / "d"
    out = _ok(
        ["prepare", "-", "-o", str(data), "--event-col", "event", "--events", "view", "--value-col", "rating",
         "--min-value", "1", "--min-item-support", "1", "--split", "time:0.2", "--valid", "0", "-q"],
        input="\n".join(rows) + "\n",
    )  # fmt: skip
    assert out.strip() == str(data)
    manifest = json.loads((data / "manifest.json").read_text())
    # 30 users x 6 events: 'buy' at j = 0, 3 dropped, rating 0 at j = 0, 5 dropped -> j in {1, 2, 4}.
    assert manifest["stages"]["events_read"] == 90
    assert manifest["inputs"][0]["path"] == "-"


def test_mixed_id_types_fail_cleanly(tmp_path: Path) -> None:
    p = tmp_path / "mixed.csv"
    lines = ["user_id,item_id,timestamp"] + [f"u,{i},{1_700_000_000 + i}" for i in range(10_050)] + ["u,abc,1800000000"]
    p.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["prepare", str(p), "-o", str(tmp_path / "d")])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: cannot read") and "mixes numbers and text" in result.stderr
    assert "Traceback" not in result.output


def test_prepare_preset_on_real_format_through_cli(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "diginetica-train-item-views.csv"
    result = runner.invoke(
        app,
        ["prepare", str(fixture), "-o", str(tmp_path / "d"), "--preset", "diginetica", "--min-item-support", "1",
         "--split", "time:1d", "--valid", "0", "--allow-tiny-test"],  # a tiny fixture: the format is what counts
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Prepared" in result.stderr


def test_train_without_out_makes_a_timestamped_run_dir(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data, _ = trained
    monkeypatch.chdir(tmp_path)
    out = _ok(["train", str(data), "--cell", "rnn", "--epochs", "1", "--layers", "8", "-q"])
    path = Path(out.strip().splitlines()[-1])
    assert path.parent == Path("runs") and path.name.endswith("-rnn") and (tmp_path / path / "COMPLETE").is_file()


def test_prepare_recbole_file_says_so_and_predict_reads_it(trained, tmp_path: Path) -> None:
    """A RecBole atomic file: columns found by their names once the types are dropped, said on
    screen and in the manifest; predict reads the same format."""
    log, _, run = trained
    events = pl.read_csv(log)
    typed = events.rename({"user_id": "user_id:token", "item_id": "item_id:token", "timestamp": "timestamp:float"})
    path = tmp_path / "log.inter"
    typed.write_csv(path, separator="\t")
    data = tmp_path / "d"
    result = runner.invoke(app, ["prepare", str(path), "-o", str(data), "--split", "time:0.2", "--valid", "0.1"])
    assert result.exit_code == 0, result.output
    assert "header: RecBole typed header (name:type): type suffixes dropped" in result.stderr
    assert "item = 'item_id' (recognised name)" in result.stderr
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["recognised"]["header"].startswith("RecBole typed header")
    assert manifest["config"]["item_col"] == "item_id"
    _ok(["prepare", "-", "-o", str(tmp_path / "p"), "--split", "time:0.2", "-q"], input=path.read_text())
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["recognised"]["header"].startswith("RecBole")
    from_csv = _ok(["predict", str(run), str(log), "-k", "3", "-q"])
    assert _ok(["predict", str(run), str(path), "-k", "3", "-q"]) == from_csv
    piped = _ok(["predict", str(run), "-", "-k", "3", "-q"], input=path.read_text())
    assert piped == from_csv


def test_prepare_headerless_tsv_with_escaped_tab(tmp_path: Path) -> None:
    """`--sep '\\t'` (a backslash and a t, as a shell passes it) is a tab."""
    from .conftest import synthetic_log

    path = tmp_path / "events.txt"
    synthetic_log(n_users=30).write_csv(path, separator="\t", include_header=False)
    args = ["prepare", str(path), "-o", str(tmp_path / "d"), "--split", "time:0.2", "--valid", "0", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "has no header row" in result.stderr and "--no-header --columns user_id,item_id,timestamp" in result.stderr
    _ok([*args, "--no-header", "--columns", "user_id,item_id,timestamp", "--sep", "\\t"])
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["config"]["sep"] == "\t" and manifest["stages"]["events_read"] == synthetic_log(n_users=30).height


# ---------------------------------------------------------------------------- exit codes

BAD_VALUES = [
    (["train", "{data}", "-o", "{tmp}/r", "--epochs", "0"], "--epochs"),
    (["train", "{data}", "-o", "{tmp}/r", "--epochs", "many"], "--epochs"),
    (["evaluate", "{run}", "--k", "0,5"], "--k"),
    (["evaluate", "{run}", "-k", "5"], "-k"),  # no such option (evaluate's is --k)
    (["tune", "{data}", "-o", "{tmp}/s", "--trials", "0"], "--trials"),
    (["tune", "{data}", "-o", "{tmp}/s", "--finalists", "-1"], "--finalists"),
    (["tune", "{data}", "-o", "{tmp}/s", "--timeout", "soon"], "--timeout"),
    (["predict", "{run}", "{log}", "-k", "0"], "-k"),
    (["predict", "{run}", "{log}", "-k", "100000"], "-k"),  # more than the catalogue holds
    (["predict", "{run}", "{log}", "--generate", "2", "--strategy", "beam", "--beams", "100000"], "--beams"),
    (["prepare", "{log}", "-o", "{tmp}/d", "--split", "random"], "--split"),
    (["prepare", "{log}", "-o", "{tmp}/d", "--session-gap", "soon"], "--session-gap"),
    (["compare", "{run}", "{run}", "--metric", "auc"], "--metric"),
]


@pytest.mark.parametrize(("args", "option"), BAD_VALUES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_VALUES])
def test_every_invalid_option_value_exits_2_with_one_error_line(trained, tmp_path: Path, args, option) -> None:
    log, data, run = trained
    filled = [a.format(log=log, data=data, run=run, tmp=tmp_path) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and option in lines[0], result.stderr
    assert "Usage:" not in result.stderr and "╭" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_run_config_is_not_a_usage_error(trained, tmp_path: Path) -> None:
    """A bad value read back from a run's config.json names the file and exits 1, not 2."""
    import shutil

    _, _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["train"]["epochs"] = 0
    (copy / "config.json").write_text(json.dumps(cfg))
    result = runner.invoke(app, ["evaluate", str(copy), "-q"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and str(copy / "config.json") in result.stderr


def test_library_warnings_are_one_line_each(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning from JAX, Polars or matplotlib: one `Warning: LIBRARY: ...` line, no path."""
    import warnings

    from rnnrec_cli.errors import RnnrecError
    from rnnrec_cli.evaluation import compare

    jax_warning = type("JaxWarning", (UserWarning,), {"__module__": "jax._src.config"})

    def noisy(*args, **kwargs):
        site = "/venv/lib/python3.11/site-packages/polars/io/csv/functions.py"
        warnings.warn_explicit("slow path taken;\n  pass a schema", UserWarning, site, 12)
        warnings.warn("float64 is not enabled", jax_warning, stacklevel=1)  # raised "at" rnnrec's code
        raise RnnrecError("stopped")

    monkeypatch.setattr(compare, "compare_runs", noisy)
    _, _, run = trained
    result = runner.invoke(app, ["compare", str(run), str(run)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "Warning: polars: slow path taken; pass a schema",
        "Warning: jax: float64 is not enabled",
        "Error: stopped",
    ]


def test_device_out_of_memory_is_an_expected_failure() -> None:
    from rnnrec_cli.errors import describe

    oom = type("JaxRuntimeError", (RuntimeError,), {})("RESOURCE_EXHAUSTED: Out of memory allocating 9 bytes.\nmore")
    line = describe(oom)
    assert line is not None and "ran out of memory" in line and "--batch-size" in line
    assert describe(type("JaxRuntimeError", (RuntimeError,), {})("INTERNAL: something else")) is None
