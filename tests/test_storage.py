"""A study's storage and directory: the study id binding them, a moved study continuing, trial
directories never replaced, no links, and every database failure or Optuna warning one line."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.errors import ConfigError, RunDirError
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.training import storage, tune

from .conftest import prepare_synthetic

runner = CliRunner()
TINY = ["--layers", "32", "--batch-size", "16", "--bptt", "4", "--epochs", "1"]
LR = {"base": "none", "params": {"lr": {"low": 0.1, "high": 0.2}}}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_synthetic(tmp_path_factory.mktemp("storage"))


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(LR))
    return path


def _tune(data: Path, out: Path, *args: str):
    # No finalists: these tests are about the study's storage, not its final choice.
    return runner.invoke(app, ["tune", str(data), "-o", str(out), *TINY, "--finalists", "0", "-q", *args])


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "site-packages" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _study(out: Path, url: str | None = None, *, sid: str | None = "a" * 32, finished: int = 0):
    """A study in `out/study.db` (or `url`) with `finished` COMPLETE trials, made as an older
    rnnrec would (no id) unless `sid`."""
    import optuna
    from optuna.distributions import FloatDistribution

    out.mkdir(exist_ok=True)
    study = optuna.create_study(study_name=out.name, storage=url or f"sqlite:///{out / 'study.db'}",
                                direction="maximize")  # fmt: skip
    if sid is not None:
        study.set_user_attr(storage.ID_ATTR, sid)
    for i in range(finished):
        trial = optuna.trial.create_trial(params={"lr": 0.15}, distributions={"lr": FloatDistribution(0.1, 0.2)},
                                          value=0.1 * (i + 1))  # fmt: skip
        study.add_trial(trial)
    return study


def _claim(out: Path, **values: str) -> None:
    (out / "study.json").write_text(json.dumps({"study": out.name, "storage": "study.db", **values}))


# ---------------------------------------------------------------------------- unit


SPACE, FIXED = {"lr": [0.1, 0.2]}, {"epochs": 1}
SETTINGS = {"space": SPACE, "fixed": FIXED, "metric": "mrr@20"}


def test_a_worker_waits_for_the_id_of_a_study_another_just_created(tmp_path: Path) -> None:
    """Two workers start one study: the creator records its settings, then its id. The other,
    between those two writes, must take the creator's id, not give the study one of its own."""
    out = tmp_path / "shared"
    creator = _study(out, sid=None)
    creator.set_user_attr(storage.SETTINGS_ATTR, SETTINGS)
    later = threading.Timer(0.5, creator.set_user_attr, (storage.ID_ATTR, "c" * 32))
    later.start()
    try:
        study = tune.open_study(TuneOptions(), out, SPACE, FIXED)
    finally:
        later.join()
    assert study.user_attrs[storage.ID_ATTR] == "c" * 32
    assert json.loads((out / "study.json").read_text())["id"] == "c" * 32


def test_settings_are_one_write_and_an_older_rnnrecs_three_are_still_checked(tmp_path: Path) -> None:
    made = tmp_path / "made"
    tune.open_study(TuneOptions(), made, SPACE, FIXED)
    import optuna

    recorded = optuna.load_study(study_name="made", storage=f"sqlite:///{made / 'study.db'}").user_attrs
    assert recorded[storage.SETTINGS_ATTR] == SETTINGS and "metric" not in recorded
    with pytest.raises(ConfigError, match=r"different metric \(metric: mrr@20 -> recall@20\)"):
        tune.open_study(TuneOptions(metric="recall@20"), made, SPACE, FIXED)

    older = tmp_path / "older"
    study = _study(older, sid=None, finished=1)
    for key, value in SETTINGS.items():
        study.set_user_attr(key, value)
    with pytest.raises(ConfigError, match=r"different space \(lr: \[0.1, 0.2\] -> \[0.1, 0.3\]\)"):
        tune.open_study(TuneOptions(), older, {"lr": [0.1, 0.3]}, FIXED)
    started = time.monotonic()
    tune.open_study(TuneOptions(), older, SPACE, FIXED)
    assert time.monotonic() - started < storage.ADOPT_WAIT_S, "a study with trials is adopted at once"


def test_the_default_database_is_recorded_relative_to_the_study(tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert storage.reference(storage.storage_url(TuneOptions(), out), out) == "study.db"
    assert storage.reference(f"sqlite:///{tmp_path / 'elsewhere.db'}", out) == f"sqlite:///{tmp_path}/elsewhere.db"
    assert storage.reference("postgresql://u:secret@h/db", out) == "postgresql://u:***@h/db"
    assert storage.in_memory("sqlite:///:memory:") and storage.in_memory("sqlite://")
    assert not storage.in_memory(f"sqlite:///{out}/study.db")


def test_an_existing_trial_directory_is_never_replaced(tmp_path: Path) -> None:
    kept = tmp_path / "trials" / "0003" / "metrics.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}\n")
    with pytest.raises(RunDirError, match=r"trial directory .*trials/0003 already exists"):
        storage.new_trial_dir(tmp_path, 3)
    assert kept.read_text() == "{}\n"
    assert storage.new_trial_dir(tmp_path, 4).is_dir()


def test_database_failures_are_one_line_naming_the_storage() -> None:
    import optuna
    import sqlalchemy.exc

    url = "postgresql://rnnrec:secret@db/rnnrec"
    full = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from full
    except optuna.exceptions.StorageInternalError as exc:
        line = storage.failure(url, exc)
    assert line.startswith("cannot use the study storage postgresql://rnnrec:***@db/rnnrec: database or disk is full")
    assert "free some space" in line and "secret" not in line


# ---------------------------------------------------------------------------- the study id


def test_a_directory_refuses_a_storage_without_its_study(data: Path, tmp_path: Path, space: Path) -> None:
    out = tmp_path / "study"
    _study(out, sid="b" * 32)
    _claim(out, id="a" * 32)
    line = _error(_tune(data, out, "--space", str(space)))
    assert (
        f"{out} belongs to study 'study' (id aaaaaaaa), but sqlite:///{out}/study.db holds a study 'study' of " in line
    )
    assert "another id (bbbbbbbb)" in line and line.endswith(
        "restore that database (the study was made in it), or use a new -o for a new study"
    )

    (out / "study.db").unlink()
    _study(out, sid=None)  # an emptied database, the study made again without its id
    assert "holds a study 'study' without its id" in _error(_tune(data, out, "--space", str(space)))

    (out / "study.db").unlink()
    line = _error(_tune(data, out, "--space", str(space)))
    assert "study.db has no database file" in line
    assert not (out / "study.db").exists(), "a missing database is not created empty"
    assert not (out / "trials").exists()


def test_an_older_study_without_an_id_is_adopted(data: Path, tmp_path: Path, space: Path) -> None:
    """A directory made before study ids, moved since (its study.json names the old path)."""
    out = tmp_path / "old"
    study = _study(out, sid=None, finished=1)
    (out / "study.json").write_text(json.dumps({"study": "old", "storage": "sqlite:////gone/old/study.db"}))
    result = _tune(data, out, "--space", str(space), "--trials", "1")
    assert result.exit_code == 0, result.output
    claim = json.loads((out / "study.json").read_text())
    assert claim == {"study": "old", "storage": "study.db", "id": study.user_attrs[storage.ID_ATTR]}
    assert len(claim["id"]) == 32


@pytest.mark.slow
def test_a_moved_study_continues_and_memory_storage_is_not_reused(data: Path, tmp_path: Path, space: Path) -> None:
    first = tmp_path / "first"
    result = _tune(data, first, "--space", str(space), "--trials", "1")
    assert result.exit_code == 0, result.output
    claim = json.loads((first / "study.json").read_text())
    assert claim["storage"] == "study.db" and claim["study"] == "first" and len(claim["id"]) == 32

    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    result = runner.invoke(
        app, ["tune", str(data), "-o", str(moved), *TINY, "--space", str(space), "--trials", "2", "--finalists", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "Tuning study 'first' (continuing with 1 finished)" in result.stderr
    assert sorted(p.name for p in (moved / "trials").iterdir()) == ["0000", "0001"]
    assert json.loads((moved / "study.json").read_text()) == claim

    # In memory, the study ends with its command: the same directory again is refused.
    mem = tmp_path / "mem"
    args = ("--space", str(space), "--trials", "1", "--storage", "sqlite:///:memory:")
    result = _tune(data, mem, *args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.stderr  # the heartbeat's thread found no tables before
    line = _error(_tune(data, mem, *args))
    assert "sqlite:///:memory: holds no study 'mem'" in line and "an in-memory study ends" in line
    assert sorted(p.name for p in (mem / "trials").iterdir()) == ["0000"]


# ---------------------------------------------------------------------------- the directory


def test_trial_directories_of_another_study_are_not_replaced(data: Path, tmp_path: Path, space: Path) -> None:
    out = tmp_path / "study"
    kept = out / "trials" / "0000" / "metrics.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text("kept\n")
    line = _error(_tune(data, out, "--space", str(space), "--trials", "1"))
    assert f"trial directory {out}/trials/0000 already exists" in line
    assert kept.read_text() == "kept\n" and sorted(kept.parent.iterdir()) == [kept]


def test_links_are_refused(data: Path, tmp_path: Path, space: Path) -> None:
    out = tmp_path / "study"
    _study(tmp_path / "real", sid=None)
    out.mkdir()
    (out / "study.db").symlink_to(tmp_path / "real" / "study.db")
    line = _error(_tune(data, out, "--space", str(space)))
    assert f"{out}/study.db is a symbolic link" in line
    (out / "study.db").unlink()
    (tmp_path / "elsewhere").mkdir()
    (out / "trials").symlink_to(tmp_path / "elsewhere")
    assert f"{out}/trials is a symbolic link" in _error(_tune(data, out, "--space", str(space)))
    assert not list((tmp_path / "elsewhere").iterdir())
    (out / "trials").unlink()
    (out / "finalists").symlink_to(tmp_path / "elsewhere")
    assert f"{out}/finalists is a symbolic link" in _error(_tune(data, out, "--space", str(space)))
    assert not list((tmp_path / "elsewhere").iterdir())


# ---------------------------------------------------------------------------- failures and warnings


def test_damaged_and_read_only_databases_are_one_error_line(data: Path, tmp_path: Path, space: Path) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "study.db").write_bytes(b"not a database, " * 400)
    line = _error(_tune(data, damaged, "--space", str(space)))
    assert line.startswith(f"Error: cannot use the study storage sqlite:///{damaged}/study.db: file is not a database")

    # Read-only whoever runs it (root writes through file permissions): SQLite's mode=ro.
    out = tmp_path / "ro"
    _study(out, finished=1)
    _claim(out, id="a" * 32)
    url = f"sqlite:///file:{out}/study.db?mode=ro&uri=true"
    line = _error(_tune(data, out, "--space", str(space), "--trials", "2", "--storage", url))
    assert "attempt to write a readonly database; make the database and its directory writable" in line
    assert not (out / "trials").exists()


def test_a_full_disk_during_the_study_is_one_error_line(
    data: Path, tmp_path: Path, space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna
    import sqlalchemy.exc

    from rnnrec_cli.training import tune

    def full(study: optuna.Study) -> list[int]:
        cause = sqlalchemy.exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("database or disk is full"))
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cause

    monkeypatch.setattr(tune, "fail_dead_trials", full)
    out = tmp_path / "study"
    line = _error(_tune(data, out, "--space", str(space)))
    assert line == (
        f"Error: cannot use the study storage sqlite:///{out}/study.db: database or disk is full; free some space "
        "on that filesystem, then run the same command to continue the study"
    )


@pytest.mark.slow
def test_optuna_warnings_are_one_line_without_paths(data: Path, tmp_path: Path, space: Path) -> None:
    """A queued trial outside the space: Optuna warns (a UserWarning from its own source)."""
    out = tmp_path / "study"
    _study(out, sid=None).enqueue_trial({"lr": 0.9})
    result = runner.invoke(app, ["tune", str(data), "-o", str(out), *TINY, "--space", str(space), "--trials", "1"])
    assert result.exit_code == 0, result.output
    assert "site-packages" not in result.stderr and "warnings.warn" not in result.stderr, result.stderr
    warned = [line for line in result.stderr.splitlines() if "out of range" in line]
    assert len(warned) == 1 and "UserWarning: Fixed parameter lr with value 0.9" in warned[0], result.stderr
