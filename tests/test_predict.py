"""predict through the CLI: modes, candidate lists, fallback, formats and streaming."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import synthetic_log

    tmp = tmp_path_factory.mktemp("pred")
    log = tmp / "events.csv"
    synthetic_log(n_users=100, n_items=60, follow=0.95).write_csv(log)
    run = tmp / "run"
    # CE at a high rate learns this structure in few epochs (BPR-max needs its lower rate, more epochs).
    args = ["train", str(log), "-o", str(run), "--layers", "32", "--epochs", "8", "--batch-size", "16", "--lr", "0.2"]
    args += ["--loss", "ce"]
    result = runner.invoke(app, [*args, "--n-sample", "16", "-q"])
    assert result.exit_code == 0, result.output
    return run


def _predict(run: Path, events: str, *args: str) -> pl.DataFrame:
    result = runner.invoke(app, ["predict", str(run), "-", "-q", *args], input=events)
    assert result.exit_code == 0, result.output
    return pl.read_csv(result.stdout.encode()) if result.stdout.strip() else pl.DataFrame()


SESSION = "user_id,item_id,timestamp\nx,10,100\nx,11,160\nx,12,220\ny,30,100\n"


@pytest.mark.slow
def test_top_k_follows_the_learned_structure(run_dir: Path) -> None:
    recs = _predict(run_dir, SESSION, "-k", "3")
    x = recs.filter(pl.col("session_id") == "x")
    assert x["item_id"][0] == 13 and x["rank"].to_list() == [1, 2, 3]
    assert not x["fallback"].any()
    assert recs.filter(pl.col("session_id") == "y")["item_id"][0] == 31


def test_every_position(run_dir: Path) -> None:
    recs = _predict(run_dir, SESSION, "-k", "1", "--every-position")
    x = recs.filter(pl.col("session_id") == "x").sort("position")
    assert x["position"].to_list() == [1, 2, 3] and x["item_id"].to_list() == [11, 12, 13]


def test_every_position_in_windows_equals_one_pass(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long sessions run in windows (state and seen items carried over): the same lists as one
    window over the whole batch, for sessions of several lengths, seen items excluded."""
    import rnnrec_cli as rr
    from rnnrec_cli.evaluation import recommend

    sessions = {"long": [i % 40 for i in range(37)], "mid": [5, 6, 7, 8, 9, 10, 11, 12, 13], "short": [3]}
    whole = rr.recommend(run_dir, sessions, k=4, every_position=True, exclude_seen=True)
    monkeypatch.setattr(recommend, "WINDOW", 8)
    windowed = rr.recommend(run_dir, sessions, k=4, every_position=True, exclude_seen=True)
    assert windowed.height == whole.height == 4 * (37 + 9 + 1)
    assert windowed["item_id"].to_list() == whole["item_id"].to_list()
    assert windowed["score"].to_list() == pytest.approx(whole["score"].to_list(), abs=1e-5)


def test_repeat_puts_the_sessions_own_items_first_and_needs_include_seen(run_dir: Path) -> None:
    plain = _predict(run_dir, SESSION, "-k", "3", "--include-seen")
    boosted = _predict(run_dir, SESSION, "-k", "3", "--include-seen", "--repeat", "1000")
    x = boosted.filter(pl.col("session_id") == "x")
    # A weight of 1000 sd ranks the session's own items (10, 11, 12, once each) first, in the
    # model's order among them; the learned next item no longer leads.
    assert sorted(x["item_id"].to_list()) == [10, 11, 12]
    assert plain.filter(pl.col("session_id") == "x")["item_id"][0] == 13
    every = _predict(run_dir, SESSION, "-k", "1", "--include-seen", "--repeat", "1000", "--every-position")
    tops = every.filter(pl.col("session_id") == "x").sort("position")["item_id"].to_list()
    assert [top in (10, 11, 12)[:p] for p, top in enumerate(tops, 1)] == [True] * 3  # the items so far
    for args, words in (([], "--include-seen"), (["--include-seen", "--generate", "3"], "--generate")):
        result = runner.invoke(app, ["predict", str(run_dir), "-", "-q", "--repeat", "2", *args], input=SESSION)
        assert result.exit_code != 0 and words in result.output and "Traceback" not in result.output


def test_include_exclude_lists(run_dir: Path, tmp_path: Path) -> None:
    inc = tmp_path / "inc.txt"
    inc.write_text("item_id\n40\n41\n42\n99999\n")
    exc = tmp_path / "exc.txt"
    exc.write_text("13\n")
    only = _predict(run_dir, SESSION, "-k", "3", "--include", str(inc))
    assert set(only["item_id"]) <= {40, 41, 42}
    without = _predict(run_dir, SESSION, "-k", "5", "--exclude", str(exc))
    assert 13 not in set(without["item_id"])


def test_unknown_items_and_fallback(run_dir: Path) -> None:
    events = "user_id,item_id,timestamp\nz,777777,100\nz,888888,200\nx,10,100\n"
    result = runner.invoke(app, ["predict", str(run_dir), "-", "-k", "2"], input=events)
    assert result.exit_code == 0, result.output
    recs = pl.read_csv(result.stdout.encode())
    z = recs.filter(pl.col("session_id") == "z")
    assert z["fallback"].all() and z.height == 2
    # Fallback rows are ranked by popularity and carry no model score (counts are not scores).
    assert z["score"].null_count() == 2 and z["rank"].to_list() == [1, 2]
    assert "2 events on items unknown to the model skipped" in result.stderr
    assert "1 sequences had no known item" in result.stderr
    none = _predict(run_dir, events, "-k", "2", "--no-fallback")
    assert set(none["session_id"]) == {"x"}


@pytest.mark.slow
def test_generate_strategies(run_dir: Path) -> None:
    greedy = _predict(run_dir, SESSION, "--generate", "4")
    x = greedy.filter(pl.col("session_id") == "x")
    assert x["step"].to_list() == [1, 2, 3, 4] and x["item_id"].to_list() == [13, 14, 15, 16]
    assert (x["score"] <= 0).all()  # log-probabilities
    beam1 = _predict(run_dir, SESSION, "--generate", "4", "--strategy", "beam", "--beams", "1")
    assert beam1["item_id"].to_list() == greedy["item_id"].to_list()
    beam = _predict(run_dir, SESSION, "--generate", "4", "--strategy", "beam", "--beams", "4")
    bx = beam.filter(pl.col("session_id") == "x")
    assert bx["score"].sum() >= x["score"].sum() - 1e-4  # beam finds at least the greedy likelihood
    assert bx["item_id"].n_unique() == 4 and not set(bx["item_id"]) & {10, 11, 12}  # no repeats, no seen
    s1 = _predict(run_dir, SESSION, "--generate", "5", "--strategy", "sample", "--seed", "1")
    s2 = _predict(run_dir, SESSION, "--generate", "5", "--strategy", "sample", "--seed", "1")
    assert s1.equals(s2)
    hot = _predict(run_dir, SESSION, "--generate", "5", "--strategy", "sample", "--temperature", "5", "--seed", "2")
    assert hot.filter(pl.col("session_id") == "x")["item_id"].n_unique() == 5


def test_formats(run_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text(SESSION)
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"r.{fmt}"
        result = runner.invoke(app, ["predict", str(run_dir), str(src), "-o", str(out), "--format", fmt, "-q"])
        assert result.exit_code == 0, result.output
        df = pl.read_ndjson(out) if fmt == "jsonl" else pl.read_parquet(out)
        assert df.columns == ["session_id", "rank", "item_id", "score", "fallback"] and df.height == 40


@pytest.mark.slow
def test_streaming_stdin_emits_before_input_ends(run_dir: Path) -> None:
    """The first recommendations arrive while stdin is still open."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnrec_cli", "predict", str(run_dir), "-", "-k", "1", "-q", "--block-rows", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    # A watchdog, so a regression that waits for EOF fails the test instead of hanging CI.
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    proc.stdin.write(b"user_id,item_id,timestamp\na,1,100\na,2,160\nb,5,100\nb,6,160\n")
    proc.stdin.flush()
    header = proc.stdout.readline()
    first = proc.stdout.readline()  # arrives although stdin is not closed yet
    proc.stdin.write(b"c,20,100\n")
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    watchdog.cancel()
    assert header.startswith(b"session_id") and first.startswith(b"a,1,3,")
    assert b"c,1,21," in rest


def test_noncontiguous_stdin_sessions_warn(run_dir: Path) -> None:
    events = "user_id,item_id,timestamp\na,1,100\nb,5,100\na,2,160\n"
    result = runner.invoke(app, ["predict", str(run_dir), "-", "-k", "1", "--block-rows", "1"], input=events)
    assert result.exit_code == 0 and "not contiguous" in result.stderr


def test_predict_errors(run_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("who,what,when\n1,2,3\n")
    result = runner.invoke(app, ["predict", str(run_dir), str(bad)])
    assert result.exit_code == 1
    # The time column is optional for predict (ordered input), so only item and user are missing.
    assert "columns 'item_id', 'user_id' not in" in result.stderr and "--user-col" in result.stderr
    result = runner.invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 1 and "rnnrec train" in result.stderr
    (tmp_path / "norun").mkdir()
    (tmp_path / "norun" / "config.json").write_text(json.dumps({}))
    result = runner.invoke(app, ["predict", str(tmp_path / "norun")])
    assert result.exit_code == 1 and "no checkpoint" in result.stderr and "rnnrec train" in result.stderr
    result = runner.invoke(app, ["predict", str(run_dir), "-", "--strategy", "nope", "--generate", "2"], input=SESSION)
    assert result.exit_code == 2


def test_time_column_is_optional_for_ordered_input(run_dir: Path, tmp_path: Path) -> None:
    """Input already in order needs no time column; the result equals the timed input's."""
    untimed = "user_id,item_id\nx,10\nx,11\nx,12\ny,30\n"
    timed = _predict(run_dir, SESSION, "-k", "3")
    assert _predict(run_dir, untimed, "-k", "3").equals(timed)
    # Streamed in blocks of 2 rows, x's events span blocks: row order still counts across them.
    assert _predict(run_dir, untimed, "-k", "3", "--block-rows", "2").equals(timed)
    path = tmp_path / "untimed.csv"
    path.write_text(untimed)
    result = runner.invoke(app, ["predict", str(run_dir), str(path), "-k", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(result.stdout.encode()).equals(timed)


# ------------------------------------------------------------------ input formats (as prepare's)

HEADERLESS_TSV = "x\t10\t100\nx\t11\t160\nx\t12\t220\ny\t30\t100\n"
NO_HEADER = ["--no-header", "--columns", "user_id,item_id,timestamp"]


def test_headerless_stdin_and_file_with_columns(run_dir: Path, tmp_path: Path) -> None:
    """GRU4Rec-style TSV lines without a header, piped or by path, give the headed input's result."""
    timed = _predict(run_dir, SESSION, "-k", "3")
    assert _predict(run_dir, HEADERLESS_TSV, "-k", "3", *NO_HEADER, "--sep", "\\t").equals(timed)
    assert _predict(run_dir, HEADERLESS_TSV, "-k", "3", *NO_HEADER, "--block-rows", "2").equals(timed)  # sniffed
    path = tmp_path / "part.tsv"
    path.write_text(HEADERLESS_TSV)
    result = runner.invoke(app, ["predict", str(run_dir), str(path), "-k", "3", "-q", *NO_HEADER, "--sep", "tab"])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(result.stdout.encode()).equals(timed)


def test_input_format_names_the_format_a_file_name_does_not(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "current.txt"
    pl.read_csv(SESSION.encode()).write_ndjson(path)
    assert runner.invoke(app, ["predict", str(run_dir), str(path), "-q"]).exit_code == 1  # read as CSV
    result = runner.invoke(app, ["predict", str(run_dir), str(path), "-k", "3", "-q", "--input-format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(result.stdout.encode()).equals(_predict(run_dir, SESSION, "-k", "3"))


def test_headerless_input_is_a_one_line_error_naming_the_fix(run_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(run_dir), "-"], input=HEADERLESS_TSV.replace("x", "7"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: columns 'user_id', 'item_id', 'timestamp' not in stdin: it has no header")
    assert "add a header naming the columns, or pass --no-header --columns user_id,item_id,timestamp" in result.stderr
    path = tmp_path / "part.tsv"
    path.write_text(HEADERLESS_TSV)  # a text id first: the numbers further on give it away
    result = runner.invoke(app, ["predict", str(run_dir), str(path)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"not in {path}: it has no header row (its first line reads x, 10, 100)" in result.stderr
    result = runner.invoke(app, ["predict", str(run_dir), str(path), "--columns", "user_id,item_id,timestamp"])
    assert result.exit_code == 2 and "add --no-header" in result.stderr


def test_a_headerless_run_reads_headerless_input_and_header_on_request(run_dir: Path, tmp_path: Path) -> None:
    """A run prepared with --no-header --columns maps predict's input the same way; --header
    says the input has one after all."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    manifest = json.loads((run / "data_manifest.json").read_text())
    manifest["config"].update(header=False, columns=["user_id", "item_id", "timestamp"])
    (run / "data_manifest.json").write_text(json.dumps(manifest))
    timed = _predict(run_dir, SESSION, "-k", "3")
    assert _predict(run, HEADERLESS_TSV.replace("\t", ","), "-k", "3").equals(timed)
    assert _predict(run, SESSION, "-k", "3", "--header").equals(timed)


def test_recbole_atomic_file(run_dir: Path, tmp_path: Path) -> None:
    """RecBole's typed header (name:type) is read without its types; a .inter file is a TSV."""
    typed = "user_id:token\titem_id:token\ttimestamp:float\n" + HEADERLESS_TSV
    timed = _predict(run_dir, SESSION, "-k", "3")
    assert _predict(run_dir, typed, "-k", "3").equals(timed)
    path = tmp_path / "current.inter"
    path.write_text(typed)
    result = runner.invoke(app, ["predict", str(run_dir), str(path), "-k", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(result.stdout.encode()).equals(timed)
    # An unknown type is not RecBole's: the header is left as it is, and the message names it.
    result = runner.invoke(app, ["predict", str(run_dir), "-"], input=typed.replace("float", "date"))
    assert result.exit_code == 1 and "(found: user_id:token, item_id:token, timestamp:date)" in result.stderr


def test_fewer_rows_than_asked_is_a_warning(run_dir: Path, tmp_path: Path) -> None:
    inc = tmp_path / "inc.txt"
    inc.write_text("item_id\n40\n41\n42\n")
    short = runner.invoke(app, ["predict", str(run_dir), "-", "-k", "5", "--include", str(inc)], input=SESSION)
    assert short.exit_code == 0, short.output
    assert pl.read_csv(short.stdout.encode()).group_by("session_id").len()["len"].max() == 3
    assert "2 lists have fewer recommendations than asked" in short.stderr
    enough = runner.invoke(app, ["predict", str(run_dir), "-", "-k", "3", "--include", str(inc)], input=SESSION)
    assert enough.exit_code == 0 and "fewer recommendations" not in enough.stderr
