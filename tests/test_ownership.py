"""Who owns a run, what a reader pinned, what a result scored, and links below a run.

Concurrency is tested with real processes: a writer holds a run's lock for as long as it works
there, a second writer is refused with one line naming the first, and a writer killed with -9
leaves no lock behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rnnrec_cli as rr
from rnnrec_cli import locks, rundir
from rnnrec_cli.cli.app import app
from rnnrec_cli.errors import DataError, RunDirError

from .conftest import prepare_synthetic

TINY = ["--layers", "16", "--batch-size", "16", "--bptt", "4", "--seed", "0", "-q"]
runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnrec_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _rnnrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnrec_cli", *args], capture_output=True, text=True, timeout=600)


def _wait(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """events.csv, data/ (prepared), run/ (trained 2 epochs, evaluated)."""
    root = tmp_path_factory.mktemp("ownership")
    prepare_synthetic(root)
    for args in (
        ["train", str(root / "data"), "-o", str(root / "run"), "--epochs", "2", *TINY],
        ["evaluate", str(root / "run"), "-q", "--bootstrap", "50"],
    ):
        result = _cli(*args)
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Path:
    work = tmp_path / "ws"
    shutil.copytree(base, work, symlinks=True)
    cfg = json.loads((work / "run" / "config.json").read_text())
    cfg["data_dir"] = str(work / "data")
    (work / "run" / "config.json").write_text(json.dumps(cfg))
    return work


# ---------------------------------------------------------------------------- the lock itself


_HOLDER = "import sys,time; from pathlib import Path; from rnnrec_cli import locks; \
locks.acquire(Path(sys.argv[1]), 'train'); print('held', flush=True); time.sleep(120)"


def test_a_live_owner_is_named_and_a_dead_one_leaves_no_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        owner = locks.owner(tmp_path)
        assert owner is not None and owner.pid == holder.pid and owner.command == "train"
        with pytest.raises(locks.BusyError, match=rf"in use by `rnnrec train` \(pid {holder.pid} on "):
            locks.acquire(tmp_path, "evaluate")
    finally:
        _kill(holder)
    assert locks.owner(tmp_path) is None
    with locks.holding(tmp_path, "evaluate"), locks.holding(tmp_path, "evaluate"):
        # This process owns it (twice over: the CLI and the library both take it): no one else.
        assert locks.owner(tmp_path) is None
    assert locks._key(tmp_path) not in locks._HELD


def test_a_lock_file_planted_as_a_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / locks.LOCK).symlink_to(victim)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        locks.acquire(run, "train")
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------------------- one writer at a time


@pytest.mark.slow
def test_a_run_being_trained_is_refused_to_other_writers(ws: Path) -> None:
    """train --resume, train --force and evaluate of a run that is training now each get one
    line naming the trainer; predict reads it and says it is being trained, not interrupted.
    Killed with -9, the trainer's lock goes with it."""
    run = ws / "live"
    # Epochs enough that neither the trainer nor its resumption ends while the test runs: 500
    # tiny epochs were done within the seconds `second` took to start (2026-12-06).
    trainer = _spawn("train", str(ws / "data"), "-o", str(run), "--epochs", "1000000", *TINY)
    try:
        _wait(trainer, lambda: (run / "checkpoints" / "last.msgpack").is_file())
        named = f"in use by `rnnrec train` (pid {trainer.pid} on "
        for args in (
            ["train", "--resume", str(run)],
            ["train", str(ws / "data"), "-o", str(run), "--force", "--epochs", "1", *TINY],
            ["evaluate", str(run), "-q"],
        ):
            done = _rnnrec(*args)
            assert done.returncode == 1, (args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], (args, done.stderr)
        predicted = _rnnrec("predict", str(run), str(ws / "events.csv"), "-k", "2", "-q")
        assert predicted.returncode == 0, predicted.stderr
        assert f"is being trained now by `rnnrec train` (pid {trainer.pid}" in predicted.stderr
        assert "--resume" not in predicted.stderr
        metrics = (run / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(line)["epoch"] for line in metrics]
        assert epochs == sorted(set(epochs)), "only the trainer wrote metrics"
    finally:
        _kill(trainer)
    # The owner is dead: its run may be resumed (and is, by one process at a time).
    first = _spawn("train", "--resume", str(run))
    try:
        _wait(first, lambda: (o := locks.owner(run)) is not None and o.pid == first.pid)
        second = _rnnrec("train", "--resume", str(run))
        assert second.returncode == 1 and f"`rnnrec train --resume` (pid {first.pid} on " in second.stderr
    finally:
        _kill(first)
    assert _rnnrec("evaluate", str(run), "-q").returncode == 0


# ---------------------------------------------------------------------------- readers pin their run


def _swap(ws: Path, run: Path) -> None:
    """Replace `run` by another trained run (as `train --force` does: a rename)."""
    other = ws / "other"
    assert _cli("train", str(ws / "data"), "-o", str(other), "--epochs", "1", "--seed", "5", *TINY[:-3]).exit_code == 0
    shutil.rmtree(run)
    other.rename(run)


@pytest.mark.slow
def test_a_run_replaced_while_read_is_an_error_never_a_mix(ws: Path) -> None:
    run = ws / "run"
    opened = rundir.open_run(run)
    assert opened.pinned and opened.pinned == json.loads((run / "config.json").read_text())["run_id"]
    result = rr.evaluate(run, n_boot=20)
    before = {p: p.read_bytes() for p in (run / "eval").rglob("*") if p.is_file()}
    _swap(ws, run)
    with pytest.raises(RunDirError, match="was replaced by another run while this command used it"):
        rundir.load_config(opened)
    from rnnrec_cli.model.weights import restore_params

    with pytest.raises(RunDirError, match="was replaced by another run"):
        restore_params(opened, rundir.load_config(rundir.open_run(run)))
    # The result of the old run is not written into the new one.
    with pytest.raises(RunDirError, match="was replaced by another run"):
        result.save()
    assert not (run / "eval").exists() or before.keys().isdisjoint(p for p in (run / "eval").rglob("*"))


@pytest.mark.slow
def test_a_checkpoint_copied_from_another_run_is_named_as_such(ws: Path) -> None:
    other = ws / "other"
    assert _cli("train", str(ws / "data"), "-o", str(other), "--epochs", "1", *TINY).exit_code == 0
    shutil.copyfile(other / "checkpoints" / "best.msgpack", ws / "run" / "checkpoints" / "best.msgpack")
    result = _cli("evaluate", str(ws / "run"), "-q", "--force")
    assert result.exit_code == 1 and "was written by another run" in result.output, result.output


def test_report_writes_into_pipes_and_devices(ws: Path) -> None:
    """A named pipe or /dev/null as -o is written into as a stream (never opened to be read,
    which would wait for a writer forever)."""
    import threading

    fifo = ws / "page.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = _cli("report", str(ws / "run"), "-o", str(fifo))
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert got and b"<title>rnnrec report" in got[0] and fifo.exists() and not fifo.is_file()
    assert _cli("report", str(ws / "run"), "-o", "/dev/null").exit_code == 0


# ---------------------------------------------------------------------------- provenance


def test_an_evaluation_records_what_it_scored(ws: Path) -> None:
    run = ws / "run"
    saved = json.loads((run / "eval" / "default" / "test.json").read_text())
    prov = saved["provenance"]
    assert prov["run_id"] == json.loads((run / "config.json").read_text())["run_id"]
    assert prov["checkpoint"]["name"] == "best" and prov["checkpoint"]["epoch"] in (1, 2)
    assert prov["checkpoint"]["sha256"] == rundir.sha256(run / "checkpoints" / "best.msgpack")
    assert prov["data_manifest_sha256"] == rundir.sha256(run / "data_manifest.json")

    from rnnrec_cli.evaluation.provenance import stale_notes

    opened = rundir.open_run(run)
    assert stale_notes(opened, saved, "test.json") == []
    # A newer best checkpoint: the stored result no longer describes the run, and report and
    # compare say so (the copy still holds the checkpoint it scored).
    shutil.copytree(run, ws / "copy")
    shutil.copyfile(run / "checkpoints" / "last.msgpack", run / "checkpoints" / "best.msgpack")
    (notes,) = stale_notes(opened, saved, "test.json")
    assert "test.json is stale: it scored the best checkpoint of epoch" in notes and "evaluate it again" in notes
    stale = f"{run / 'eval' / 'default' / 'test.json'} is stale"
    shown = _cli("report", str(run), "-o", str(ws / "report.html"))
    assert shown.exit_code == 0 and stale in shown.output.replace("\n", " "), shown.output
    compared = _cli("compare", str(run), str(ws / "copy"))
    assert compared.exit_code == 0, compared.output
    assert stale in compared.output.replace("\n", " ") and "copy/eval" not in compared.output


def test_data_other_than_the_run_trained_on_is_refused(ws: Path) -> None:
    """config.json edited to name other prepared data (same catalogue): evaluate and resume say so."""
    other = ws / "data-other"
    done = _cli("prepare", str(ws / "events.csv"), "-o", str(other), "--split", "time:0.3", "--valid", "0.1", "-q")
    assert done.exit_code == 0, done.output
    assert (
        json.loads((other / "manifest.json").read_text())["n_items"]
        == rundir.load_config(rundir.RunDir(ws / "run")).n_items
    )
    cfg = json.loads((ws / "run" / "config.json").read_text())
    cfg["data_dir"] = str(other)
    (ws / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"is not the data .* was trained on"):
        rr.evaluate(ws / "run")
    result = _cli("evaluate", str(ws / "run"), "-q")
    assert result.exit_code == 1 and "is not the data" in result.output


# ---------------------------------------------------------------------------- links below a run


@pytest.mark.parametrize("planted", ["eval", "checkpoints", "COMPLETE", "eval/default/test.json"])
def test_a_link_planted_inside_a_run_is_an_error_naming_it(ws: Path, planted: str) -> None:
    run = ws / "run"
    elsewhere = ws / "elsewhere"
    target = run / planted
    shutil.move(target, elsewhere)
    target.symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.rglob("*")) if elsewhere.is_dir() else elsewhere.read_bytes()
    for args in (
        ["evaluate", str(run), "-q", "--force"],
        ["predict", str(run), str(ws / "events.csv"), "-q"],
        ["report", str(run), "-o", str(ws / "report.html")],
    ):
        result = _cli(*args)
        assert result.exit_code == 1, result.output
        assert f"{target} is a symbolic link" in result.output
    after = sorted(p.name for p in elsewhere.rglob("*")) if elsewhere.is_dir() else elsewhere.read_bytes()
    assert after == before


def test_the_run_directory_itself_may_be_a_link(ws: Path) -> None:
    (ws / "alias").symlink_to(ws / "run")
    assert _cli("evaluate", str(ws / "alias"), "-q", "--bootstrap", "20").exit_code == 0
    assert os.path.islink(ws / "alias")
