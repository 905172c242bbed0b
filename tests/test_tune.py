"""`rnnrec tune`: the search space, a tiny study end to end, pruning, resuming after kill -9,
bad input, and two workers on one study in a real PostgreSQL server."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.config import ModelConfig, TrainConfig
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.training.space import SPACES, apply, check_space, load_space, parse_space, suggest

from .conftest import prepare_synthetic

runner = CliRunner()
# Tiny trials: a few seconds each, most of it compiling.
TINY = ["--layers", "32", "--batch-size", "16", "--bptt", "4", "--epochs", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_synthetic(tmp_path_factory.mktemp("tune"), n_users=100, n_items=150)


def _tune(data: Path, out: Path, *args: str) -> str:
    result = runner.invoke(app, ["tune", str(data), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _study(out: Path, storage: str | None = None):
    import optuna

    return optuna.load_study(study_name=out.name, storage=storage or f"sqlite:///{out / 'study.db'}")


def _space_file(tmp: Path, values: dict) -> Path:
    path = tmp / f"space-{len(list(tmp.glob('space-*')))}.json"
    path.write_text(json.dumps(values))
    return path


# ---------------------------------------------------------------------------- the space (unit)


def test_shipped_spaces_are_valid_and_loss_specific() -> None:
    for loss, space in SPACES.items():
        dims = parse_space(space, loss)
        check_space(dims, ModelConfig(), TrainConfig(loss="ce" if loss == "auto" else loss), loss)
    assert "logq" in SPACES["ce"] and "bpreg" not in SPACES["ce"]
    assert {"bpreg", "elu"} <= set(SPACES["bpr-max"]) and "logq" not in SPACES["bpr-max"]


def test_the_loss_is_searched_with_its_own_parameters() -> None:
    """The shipped space searches the loss, each with its own parameters (a conditional space);
    a --loss flag fixes it and leaves the other losses' parameters out."""
    import optuna

    from rnnrec_cli.training.space import baseline, without

    dims = parse_space(SPACES["auto"], "auto")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = {}
    for _ in range(12):
        params = suggest(study.ask(), dims)
        seen[params["loss"]] = set(params)
        apply(ModelConfig(), TrainConfig(), params)  # every trial is a valid config
    assert {"logq"} <= seen["ce"] and not {"bpreg", "elu"} & seen["ce"]
    assert {"bpreg", "elu"} <= seen["bpr-max"] and "logq" not in seen["bpr-max"]
    fixed = without(SPACES["auto"], {"loss"}, "bpr-max")
    assert "loss" not in fixed and "logq" not in fixed and {"bpreg", "elu"} <= set(fixed)
    # Trial 0: the given settings, only the given loss's parameters.
    start = baseline(ModelConfig(), TrainConfig(), dims)
    assert start["loss"] == "bpr-max" and (start["bpreg"], start["elu"]) == (1.95, 0.5) and "logq" not in start
    assert start["layers"] == 224
    start = baseline(ModelConfig(), TrainConfig(loss="ce"), dims)
    assert start["loss"] == "ce" and start["logq"] == 1.0 and "bpreg" not in start


def test_space_file_narrows_drops_or_replaces(tmp_path: Path) -> None:
    narrowed = load_space("ce", _space_file(tmp_path, {"params": {"layers": {"low": 64, "high": 128}, "logq": None}}))
    assert narrowed["layers"] == {"low": 64, "high": 128} and "logq" not in narrowed and "lr" in narrowed
    assert load_space("ce", _space_file(tmp_path, {"base": "none", "params": {"lr": 0.1}})) == {"lr": 0.1}
    assert "bpreg" in load_space("ce", _space_file(tmp_path, {"base": "bpr-max", "params": {}}))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lrr": {"low": 0.1, "high": 0.2}}, "unknown parameter(s) lrr"),
        ({"lr": {"low": 0.2, "high": 0.1}}, "lr has an empty range (low 0.2 > high 0.1)"),
        ({"lr": {"choices": []}}, "lr.choices must be a non-empty list"),
        ({"layers": {"low": 64.5, "high": 128}}, "layers.low must be an integer"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "lr with log needs low > 0"),
        ({"lr": {"lo": 0.1, "high": 0.2}}, "lr has unknown key(s) lo"),
    ],
)
def test_bad_spaces_name_the_problem(space: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_space(space, "--space s.json")
    assert message in str(exc.value)


def test_space_values_are_checked_against_the_configs() -> None:
    dims = parse_space({"dropout_hidden": {"low": 0.0, "high": 1.0}}, "--space s.json")
    with pytest.raises(ConfigError, match=r"dropout_hidden = 1\.0 is invalid"):
        check_space(dims, ModelConfig(), TrainConfig(), "--space s.json")


def test_trial_values_become_configs() -> None:
    import optuna

    dims = parse_space({**SPACES["ce"], "n_sample": 512}, "ce")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    params = suggest(trial, dims)
    model, train = apply(ModelConfig(), TrainConfig(), params)
    assert model.layers == (params["layers"],) and 64 <= params["layers"] <= 512 and params["layers"] % 32 == 0
    assert train.lr == params["lr"] and train.n_sample == 512 and train.logq in (0.0, 1.0)


def test_hyperband_pruner_is_chosen_by_name() -> None:
    import optuna

    from rnnrec_cli.training.tune import _pruner

    assert isinstance(_pruner(TuneOptions(pruner="hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(_pruner(TuneOptions()), optuna.pruners.MedianPruner)
    assert isinstance(_pruner(TuneOptions(pruner="hyperband", pruning=False)), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match="--pruner must be median or hyperband"):
        TuneOptions(pruner="asha")


def test_metric_must_be_computed() -> None:
    with pytest.raises(ConfigError, match="'ndcg@20' is not a validation metric"):
        TuneOptions(metric="ndcg@20")


def test_finalists_are_the_best_complete_trials_and_trial_0(tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from rnnrec_cli.training.finalists import Finalist, chosen, pick

    study = optuna.create_study(direction="maximize")
    lr = {"lr": FloatDistribution(1e-4, 1.0)}
    # (value, state, baseline): trial 0 started from the defaults; trial 3 was pruned higher.
    for value, state, start in ((0.20, "COMPLETE", True), (0.25, "COMPLETE", False), (0.22, "COMPLETE", False),
                                (0.30, "PRUNED", False), (0.10, "COMPLETE", False)):  # fmt: skip
        trial = create_trial(params={"lr": 0.1}, distributions=lr, value=value if state == "COMPLETE" else None,
                             state=TrialState[state], intermediate_values={1: value},
                             user_attrs={"baseline": True} if start else {})  # fmt: skip
        study.add_trial(trial)
    picked = pick(study, tmp_path, 2)
    assert [(f.trial, f.trial_value, f.baseline) for f in picked] == [
        (1, 0.25, False),
        (2, 0.22, False),
        (0, 0.2, True),
    ]
    assert picked[0].path == tmp_path / "finalists" / "0001"
    assert [f.trial for f in pick(study, tmp_path, 3)] == [1, 2, 0]  # trial 0 among the best: once
    assert pick(study, tmp_path, 0) == []
    # At the final length the best on validation wins; a tie goes to the lower trial (trial 0).
    done = [Finalist(1, 0.25, False, tmp_path, 0.31, 10), Finalist(0, 0.2, True, tmp_path, 0.31, 10)]
    assert chosen(done).trial == 0
    assert chosen([*done, Finalist(2, 0.22, False, tmp_path, 0.32, 10)]).trial == 2


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_study_end_to_end(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    stdout = _tune(data, out, "--trials", "3", *TINY, "--seed", "1", "--final-epochs", "3", "--finalists", "1")
    assert stdout.strip().splitlines()[-1] == str(out / "best.json")
    for name in ("best.json", "trials.csv", "history.png", "importances.png", "study.db"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1", "2"] and all(r["state"] == "COMPLETE" for r in rows)
    assert {"lr", "dropout_embed", "momentum", "bpreg", "elu"} <= set(rows[0]) and "layers" not in rows[0]  # a flag
    # Trial 0 trains the settings the search starts from (the defaults here).
    d = TrainConfig()
    assert rows[0]["loss"] == d.loss and rows[0]["logq"] == ""  # CE's parameter: not this loss's
    trial0 = tuple(float(rows[0][k]) for k in ("lr", "momentum", "bpreg", "elu"))
    assert trial0 == (d.lr, d.momentum, d.bpreg, d.elu)
    assert float(rows[0]["dropout_embed"]) == ModelConfig().dropout_embed and "batch_size" not in rows[0]
    for r in rows:
        assert r["run_dir"] == f"trials/{int(r['number']):04d}"  # relative: the study can move
        run = out / r["run_dir"]
        assert (run / "COMPLETE").is_file()
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    # The finalists: the best trial and trial 0, each trained again for the final epochs.
    best = max(rows, key=lambda r: (float(r["value"]), -int(r["number"])))
    picked = sorted({int(best["number"]), 0})
    assert sorted(int(p.name) for p in (out / "finalists").iterdir()) == picked
    values = {}
    for n in picked:
        lines = [
            json.loads(line) for line in (out / "finalists" / f"{n:04d}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(lines) == 3 and (out / "finalists" / f"{n:04d}" / "COMPLETE").is_file()
        values[n] = max(r["valid/mrr@20"] for r in lines)
    win = max(picked, key=lambda n: (values[n], -n))
    # best.json is the best finalist's settings at the final length, and `train --config` takes it.
    cfg = json.loads((out / "best.json").read_text())
    chosen = next(r for r in rows if int(r["number"]) == win)
    assert cfg["train"]["lr"] == float(chosen["lr"]) and cfg["model"]["layers"] == [32]
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["monitor"] == "mrr@20"
    tuning = cfg["tuning"]
    assert tuning["chosen_by"] == "finalists" and tuning["trial"] == win and tuning["value"] == values[win]
    assert tuning["trial_value"] == pytest.approx(float(chosen["value"]), abs=1e-6)
    assert tuning["trial_epochs"] == 2 and tuning["epochs"] == 3 and tuning["baseline"] == (win == 0)
    assert [f["trial"] for f in tuning["finalists"]] == [int(best["number"]), *([0] if best["number"] != "0" else [])]
    assert all(f["run_dir"] == f"finalists/{f['trial']:04d}" for f in tuning["finalists"])
    best = chosen
    run = tmp_path / "retrained"
    result = runner.invoke(app, ["train", str(data), "--config", str(out / "best.json"), "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == float(best["lr"])
    # Any trial is an ordinary run directory.
    result = runner.invoke(app, ["evaluate", str(out / best["run_dir"]), "--baselines", "pop", "--json", "-q"])
    assert result.exit_code == 0, result.output

    # The same command again: the study has its trials and its finalists, nothing runs or repeats.
    before = {p.name: (p / "metrics.jsonl").read_text() for p in (out / "finalists").iterdir()}
    again = runner.invoke(app, ["tune", str(data), "-o", str(out), "--trials", "3", *TINY, "--seed", "1",
                                "--final-epochs", "3", "--finalists", "1"])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "continuing with 3 finished" in again.stderr and "training it for the final epochs" not in again.stderr
    assert f"Finalists, retrained for the final epochs (best.json: trial {win})" in again.stderr
    assert len(_study(out).trials) == 3
    assert {p.name: (p / "metrics.jsonl").read_text() for p in (out / "finalists").iterdir()} == before
    assert json.loads((out / "best.json").read_text()) == cfg


@pytest.mark.slow
def test_pruning_stops_a_trial_with_a_bad_first_epoch(data: Path, tmp_path: Path) -> None:
    """Two good trials, then one whose learning rate leaves the model untrained after its first
    epoch: the median pruner stops it there, and it stays a finished run directory."""
    import optuna

    out = tmp_path / "study"
    out.mkdir()
    study = optuna.create_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}", direction="maximize")
    for lr in (0.3, 0.2, 1e-5):
        study.enqueue_trial({"lr": lr})
    space = _space_file(tmp_path, {"base": "none", "params": {"lr": {"low": 1e-5, "high": 0.5, "log": True}}})
    _tune(
        data,
        out,
        "--trials",
        "3",
        "--space",
        str(space),
        "--prune-after",
        "2",
        *TINY,
        "--epochs",
        "3",
        "--finalists",
        "0",
        "-q",
    )
    trials = _study(out).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], [(t.params, t.intermediate_values) for t in trials]
    assert list(trials[2].intermediate_values) == [1] and list(trials[0].intermediate_values) == [1, 2, 3]
    pruned = out / "trials" / "0002"
    assert len((pruned / "metrics.jsonl").read_text().splitlines()) == 1
    assert (pruned / "COMPLETE").is_file() and (pruned / "checkpoints" / "best.msgpack").is_file()
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert rows[2]["state"] == "PRUNED" and rows[2]["epochs"] == "1"


@pytest.mark.slow
def test_hyperband_study_prunes_on_epochs(data: Path, tmp_path: Path) -> None:
    """--pruner hyperband: trials report every epoch to Hyperband's brackets; a study of good
    and hopeless learning rates ends with finished or pruned trials and the best in best.json."""
    import optuna

    out = tmp_path / "study"
    out.mkdir()
    study = optuna.create_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}", direction="maximize")
    for lr in (0.3, 1e-5, 1e-5, 0.2):
        study.enqueue_trial({"lr": lr})
    space = _space_file(tmp_path, {"base": "none", "params": {"lr": {"low": 1e-5, "high": 0.5, "log": True}}})
    _tune(
        data,
        out,
        "--trials",
        "4",
        "--space",
        str(space),
        "--pruner",
        "hyperband",
        *TINY,
        "--epochs",
        "3",
        "--finalists",
        "0",
        "-q",
    )
    trials = _study(out).trials
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"} and len(trials) == 4
    # Every epoch is reported (whether a bracket prunes this few trials is Hyperband's call).
    assert all(list(t.intermediate_values)[:1] == [1] for t in trials)
    best = json.loads((out / "best.json").read_text())
    assert best["train"]["lr"] in (0.3, 0.2)
    # Without finalists, best.json is the best trial as measured after the trials' epochs.
    tuning = best["tuning"]
    assert tuning["chosen_by"] == "trials" and tuning["value"] == tuning["trial_value"] and tuning["trial_epochs"] == 3
    assert not (out / "finalists").exists()


@pytest.mark.slow
def test_kill_9_then_the_same_command_continues(data: Path, tmp_path: Path) -> None:
    """A real SIGKILL during the second trial; running the command again marks that trial
    failed, keeps the first, and runs new trials up to the count."""
    from optuna.trial import TrialState

    out = tmp_path / "study"
    args = ["tune", str(data), "-o", str(out), "--trials", "3", *TINY, "--epochs", "3", "--finalists", "0", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnrec_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (out / "trials" / "0001" / "config.json").is_file():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    before = _study(out).trials
    if len(before) < 2 or before[1].state != TrialState.RUNNING:
        pytest.skip("the second trial was not running when the kill came")
    assert before[0].state == TrialState.COMPLETE
    first_metrics = (out / "trials" / "0000" / "metrics.jsonl").read_text()

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    after = _study(out).trials
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.number for t in after] == [0, 1, 2, 3]
    assert after[0].datetime_complete == before[0].datetime_complete and after[0].value == before[0].value
    assert (out / "trials" / "0000" / "metrics.jsonl").read_text() == first_metrics
    # A resumed study draws new points, not the first trials' again.
    assert after[2].params != after[0].params


@pytest.mark.slow
def test_a_killed_finalist_resumes_to_the_same_training(data: Path, tmp_path: Path) -> None:
    """kill -9 while a finalist trains; the same command again resumes it from its last
    checkpoint, and it ends with the losses of the same settings trained without a stop."""
    out = tmp_path / "study"
    args = ["tune", str(data), "-o", str(out), "--trials", "2", *TINY, "--finalists", "1", "--final-epochs", "6", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "rnnrec_cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 300
    while (
        time.time() < deadline and proc.poll() is None and not glob.glob(f"{out}/finalists/*/checkpoints/last.msgpack")
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the study ended before a finalist had a checkpoint")
    killed = Path(glob.glob(f"{out}/finalists/*/checkpoints/last.msgpack")[0]).parents[1]
    assert not (killed / "COMPLETE").is_file()

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "best.json").read_text())
    assert cfg["tuning"]["chosen_by"] == "finalists"
    assert killed in {out / f["run_dir"] for f in cfg["tuning"]["finalists"]}
    resumed = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5, 6] and (killed / "COMPLETE").is_file()
    # The same settings trained in one go: the same losses, epoch by epoch.
    settings = json.loads((killed / "config.json").read_text())
    config = tmp_path / "finalist.json"
    config.write_text(json.dumps({"model": settings["model"], "train": settings["train"]}))
    plain = tmp_path / "plain"
    result = runner.invoke(app, ["train", str(data), "--config", str(config), "-o", str(plain), "-q"])
    assert result.exit_code == 0, result.output
    straight = [json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/loss"] for r in resumed] == pytest.approx([r["train/loss"] for r in straight], rel=1e-6)


# ---------------------------------------------------------------------------- bad input


def _one_error_line(result) -> str:
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_bad_input_is_one_error_line(data: Path, tmp_path: Path) -> None:
    def tune(*args: str, out: Path | None = None) -> str:
        target = out or tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        return _one_error_line(runner.invoke(app, ["tune", str(data), "-o", str(target), *TINY, *args]))

    unknown = _space_file(tmp_path, {"params": {"lrr": {"low": 0.1, "high": 0.2}}})
    assert "unknown parameter(s) lrr" in tune("--space", str(unknown))
    empty = _space_file(tmp_path, {"params": {"lr": {"low": 0.3, "high": 0.1}}})
    assert "lr has an empty range (low 0.3 > high 0.1)" in tune("--space", str(empty))
    assert "--metric 'ndcg@20' is not a validation metric" in tune("--metric", "ndcg@20")
    line = tune("--storage", "postgresql://rnnrec:secret@127.0.0.1:1/nothing")
    assert line.startswith("Error: cannot use the study storage postgresql://rnnrec:***@127.0.0.1:1/nothing")
    assert "secret" not in line
    assert "is not a database URL" in tune("--storage", "not a url")

    # An existing study made with another space.
    out = tmp_path / "study"
    first = _space_file(tmp_path, {"base": "none", "params": {"lr": {"low": 0.1, "high": 0.2}}})
    _tune(data, out, "--trials", "1", "--space", str(first), *TINY, "-q")
    other = _space_file(tmp_path, {"base": "none", "params": {"lr": {"low": 0.1, "high": 0.3}}})
    line = tune("--trials", "2", "--space", str(other), out=out)
    assert "was created with a different space" in line and "lr:" in line

    # No validation split: choosing on the test split would leak it.
    no_valid = tmp_path / "data-no-valid"
    shutil.copytree(data, no_valid)
    manifest = json.loads((no_valid / "manifest.json").read_text())
    manifest["splits"]["valid"] = {**manifest["splits"]["valid"], "events": 0, "sequences": 0, "targets": 0}
    (no_valid / "manifest.json").write_text(json.dumps(manifest))
    line = _one_error_line(runner.invoke(app, ["tune", str(no_valid), "-o", str(tmp_path / "nv"), *TINY]))
    assert "has no validation split" in line


# ---------------------------------------------------------------------------- PostgreSQL, two workers


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a free local port, stopped afterwards. PostgreSQL
    refuses to run as root, so as root the cluster belongs to the `postgres` user."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI") or os.environ.get("RNNREC_TEST_POSTGRES"):
            pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed; .ci/run installs the distribution's package")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="rnnrec-pg-")
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chmod(root, 0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pgdata = f"{root}/data"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", pgdata, "-l", f"{root}/log", "-w", "-t", "60", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1")  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", pgdata, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgres_study(data: Path, tmp_path: Path, postgres_url: str) -> None:
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "rnnrec_cli", "tune", str(data), "-o", str(out), "--storage", postgres_url,
           "--study", "shared", "--trials", "6", *TINY, "--final-epochs", "2", "-q"]  # fmt: skip
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for w in workers:
        stdout, stderr = w.communicate(timeout=600)
        assert w.returncode == 0, stderr.decode()
        assert stdout.decode().strip().endswith("best.json")
    import optuna

    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 6
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    pids = {str(w.pid) for w in workers}
    assert {t.user_attrs["worker"].rpartition(":")[2] for t in finished} == pids, "both workers ran trials"
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)
    # Both workers reach the finalists: each is trained once (by one of them) and both read it.
    best = json.loads((out / "best.json").read_text())["tuning"]
    assert best["chosen_by"] == "finalists" and len(best["finalists"]) >= 2
    for f in best["finalists"]:
        run = out / f["run_dir"]
        assert (run / "COMPLETE").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # (A worker that reached them first may have trained one the other's later trial displaced.)
    assert {f"{f['trial']:04d}" for f in best["finalists"]} <= {p.name for p in (out / "finalists").iterdir()}
