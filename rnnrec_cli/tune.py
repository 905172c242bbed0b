"""Hyper-parameter search (`rnnrec tune`): the search space, the Optuna study, the objective.

Each trial is an ordinary training run (`start_run` + `fit`) in STUDY_DIR/trials/NNNN, so
`evaluate` and `predict` work on any of them. The study lives in an Optuna RDB storage (SQLite in
STUDY_DIR by default, or any SQLAlchemy URL that several workers share). The loop is plain: fail
the trials dead workers left running, then one `study.optimize(n_trials=1)` at a time until the
study holds enough finished trials or the time is up, writing best.json and trials.csv after each.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli import rundir
from rnnrec_cli.config import ModelConfig, TrainConfig, to_dict
from rnnrec_cli.errors import ConfigError, DataError, StorageError, TrainingDiverged

if TYPE_CHECKING:
    import optuna

    from rnnrec_cli.train import EpochReport, Progress


# ---------------------------------------------------------------------------- search space

# What a space may search: the config field behind each name, and whether it is an integer.
# `layers` is one layer's size (GRU4Rec tunes a single layer); a model flag such as
# `--layers 256,128` fixes it instead.
PARAMS: dict[str, tuple[type, bool]] = {
    "layers": (ModelConfig, True),
    "embedding": (ModelConfig, True),
    "dropout_embed": (ModelConfig, False),
    "dropout_hidden": (ModelConfig, False),
    "batch_size": (TrainConfig, True),
    "bptt": (TrainConfig, True),
    "n_sample": (TrainConfig, True),
    "lr": (TrainConfig, False),
    "momentum": (TrainConfig, False),
    "sample_alpha": (TrainConfig, False),
    "logq": (TrainConfig, False),
    "bpreg": (TrainConfig, False),
    "elu": (TrainConfig, False),
}

# The ranges of GRU4Rec's published Optuna search (Hidasi & Czapp 2023; REFERENCE.md), on the
# grids its parameter files use, so best.json holds round values. The loss decides which
# loss-specific parameters join: log-Q for cross-entropy, the score regulariser and ELU for BPR-max.
_COMMON: dict[str, Any] = {
    "layers": {"low": 64, "high": 512, "step": 32},
    "batch_size": {"low": 32, "high": 256, "step": 16},
    "dropout_embed": {"low": 0.0, "high": 0.5, "step": 0.05},
    "dropout_hidden": {"low": 0.0, "high": 0.7, "step": 0.05},
    "lr": {"low": 0.01, "high": 0.25, "step": 0.005},
    "momentum": {"low": 0.0, "high": 0.9, "step": 0.05},
    "sample_alpha": {"low": 0.0, "high": 1.0, "step": 0.1},
    # 0 = the constrained (tied) embedding, GRU4Rec's default and usually best; else a separate one.
    "embedding": {"choices": [0, 64, 128, 256]},
}
SPACES: dict[str, dict[str, Any]] = {
    "ce": {**_COMMON, "logq": {"choices": [0.0, 1.0]}},
    "bpr-max": {**_COMMON, "bpreg": {"low": 0.0, "high": 2.0, "step": 0.05}, "elu": {"choices": [0.0, 0.5, 1.0]}},
}


@dataclass(frozen=True)
class Dim:
    """One searched parameter: a range (`low`..`high`, optional `step` or `log`), `choices`,
    or a fixed `value`."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    value: Any = None

    def to_json(self) -> Any:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        if self.low is None:
            return self.value
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out

    def values(self) -> list[Any]:
        """The extreme values this dimension can take (to check them against the configs)."""
        if self.choices is not None:
            return list(self.choices)
        return [self.value] if self.low is None else [self.low, self.high]


def _dim(name: str, spec: Any, where: str) -> Dim:
    """A `Dim` from its JSON form, checked: known keys, numbers, a non-empty range."""
    is_int = PARAMS[name][1]
    kind = "an integer" if is_int else "a number"

    def number(key: str, x: Any) -> float:
        ok = isinstance(x, int) if is_int else isinstance(x, int | float)
        if isinstance(x, bool) or not ok:
            raise ConfigError(f"{where}: {name}.{key} must be {kind}, got {x!r}")
        return x

    if not isinstance(spec, dict):
        number("value", spec)
        return Dim(name, value=spec)
    unknown = sorted(set(spec) - {"low", "high", "step", "log", "choices"})
    if unknown:
        raise ConfigError(f"{where}: {name} has unknown key(s) {', '.join(unknown)}; use low/high/step/log or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {name}.choices must be a non-empty list (and alone), got {choices!r}")
        return Dim(name, choices=tuple(number("choices", c) for c in choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: {name} needs low and high (or choices)")
    low, high = number("low", spec["low"]), number("high", spec["high"])
    if low > high:
        raise ConfigError(f"{where}: {name} has an empty range (low {low} > high {high})")
    step, log = spec.get("step"), spec.get("log", False)
    if step is not None and number("step", step) <= 0:
        raise ConfigError(f"{where}: {name}.step must be > 0, got {step}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {name}.log must be true or false, got {log!r}")
    if log and (step is not None or low <= 0):
        raise ConfigError(f"{where}: {name} with log needs low > 0 and no step")
    return Dim(name, low=low, high=high, step=step, log=log)


def load_space(loss: str, file: Path | None) -> dict[str, Any]:
    """The space's JSON form: the shipped space of `loss`, with a --space FILE's changes.

    The file is `{"params": {NAME: SPEC or null, ...}}`, optionally with `"base": "ce"`,
    `"bpr-max"` or `"none"` (default: the shipped space of --loss). Its entries replace the
    base's, null drops one from the search; with base "none" the file's params are the space."""
    if file is None:
        return dict(SPACES.get(loss, SPACES["ce"]))
    where = f"--space {file}"
    values = rundir.load_json(file)
    if not isinstance(values, dict) or not set(values) <= {"base", "params"} or "params" not in values:
        raise ConfigError(f'{where}: expected {{"params": {{...}}}} and optionally "base" (ce, bpr-max or none)')
    base = values.get("base", loss)
    if base not in (*SPACES, "none"):
        raise ConfigError(f"{where}: base {base!r} is not one of: {', '.join(SPACES)}, none")
    if not isinstance(values["params"], dict):
        raise ConfigError(f"{where}: params must be an object of NAME: SPEC")
    space = {} if base == "none" else dict(SPACES[base])
    for name, spec in values["params"].items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = spec
    return space


def parse_space(space: Mapping[str, Any], where: str) -> list[Dim]:
    """Checked dimensions of a space's JSON form; names not in PARAMS are an error."""
    unknown = sorted(set(space) - set(PARAMS))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; searchable: {', '.join(PARAMS)}")
    return [_dim(name, spec, where) for name, spec in space.items()]


def apply(model: ModelConfig, train: TrainConfig, params: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The configs with a trial's parameter values; raises ConfigError for an invalid value."""
    changes: dict[type, dict[str, Any]] = {ModelConfig: {}, TrainConfig: {}}
    for name, value in params.items():
        changes[PARAMS[name][0]][name] = (int(value),) if name == "layers" else value
    return dataclasses.replace(model, **changes[ModelConfig]), dataclasses.replace(train, **changes[TrainConfig])


def check_space(dims: list[Dim], model: ModelConfig, train: TrainConfig, where: str) -> None:
    """Every extreme value of every dimension must make a valid config (e.g. dropout < 1)."""
    for dim in dims:
        for value in dim.values():
            try:
                apply(model, train, {dim.name: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: {dim.name} = {value!r} is invalid: {exc}") from None


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """How `rnnrec tune` searches: the study and its budget."""

    trials: int = 100
    # Seconds after which no new trial starts (None = no limit); a running trial finishes.
    timeout: float | None = None
    metric: str = "mrr@20"
    storage: str | None = None
    study: str | None = None
    # TPE's seed (each trial's training seed is TrainConfig.seed, the same for all trials).
    seed: int = 0
    pruning: bool = True
    # Finished trials before the median pruner may stop a trial at an epoch.
    prune_after: int = 3

    def __post_init__(self) -> None:
        if self.trials <= 0:
            raise ConfigError(f"--trials must be > 0, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be > 0, got {self.timeout}")
        if not re.fullmatch(r"(mrr|recall)@[1-9]\d*", self.metric):
            raise ConfigError(
                f"--metric {self.metric!r} is not a validation metric computed each epoch; use mrr@K or recall@K "
                "(e.g. mrr@20)"
            )
        if self.prune_after < 0:
            raise ConfigError(f"--prune-after must be >= 0, got {self.prune_after}")

    @property
    def startup_trials(self) -> int:
        """Random trials before TPE models the results: GRU4Rec-style searches of 100-200
        trials use Optuna's 10; a short search gets a quarter of its trials, at least 3."""
        return max(3, min(10, self.trials // 4))


def storage_url(opts: TuneOptions, out: Path) -> str:
    return opts.storage or f"sqlite:///{(out / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


# ---------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class TrialEvent:
    """What the progress display needs: the study's state, and the trial being run."""

    number: int  # the running trial's number (-1 between trials)
    finished: int  # COMPLETE or PRUNED trials in the study
    total: int
    best_value: float | None
    best_number: int | None
    eta_s: float | None
    last: dict[str, Any] | None = None  # the trial that just ended: number, state, value, epochs, seconds


WORKER = f"{socket.gethostname()}:{os.getpid()}"
HEARTBEAT_S = 30  # a trial's worker records that it is alive this often ...
GRACE_S = 120  # ... and its trial is failed when it has not for this long (another host died)


def open_study(opts: TuneOptions, out: Path, space: dict[str, Any], fixed: dict[str, Any]) -> optuna.Study:
    """Create or load the study (maximising `opts.metric`), refusing one made for another
    search space or other fixed settings."""
    import optuna
    import sqlalchemy.exc

    url = storage_url(opts, out)
    name = opts.study or out.resolve().name
    # Optuna's own log lines (and a failed trial's traceback) would repeat what the progress
    # shows; a failed trial's reason is in trials.csv and its line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in range(3):
            try:
                study = _create(opts, url, name)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers starting together race to create the tables or the study; the loser
                # finds them made a moment later.
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        recorded = study.user_attrs
        if "space" not in recorded:
            study.set_user_attr("space", space)
            study.set_user_attr("fixed", fixed)
            study.set_user_attr("metric", opts.metric)
    except ImportError:
        raise StorageError(
            f"no database driver for --storage {shown_url(url)}; for PostgreSQL: pip install 'psycopg[binary]'"
        ) from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise StorageError(f"--storage {shown_url(url)} is not a database URL ({exc})") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(f"cannot use the study storage {shown_url(url)}: {reason}") from None
    _claim(out, name, url)
    if "space" in recorded:
        differs = [k for k, v in (("space", space), ("fixed", fixed), ("metric", opts.metric)) if recorded.get(k) != v]
        if differs:
            detail = _differences(recorded, space, fixed, opts.metric)
            raise ConfigError(
                f"study {name!r} in {shown_url(url)} was created with a different {' and '.join(differs)} "
                f"({detail}); run the same command as before, or start a new study with --study NAME or another -o"
            )
    return study


def _create(opts: TuneOptions, url: str, name: str) -> optuna.Study:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # The heartbeat lets a worker on another host fail the trials of one that died.
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    return optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True,
        pruner=_pruner(opts), sampler=_sampler(opts, 0),
    )  # fmt: skip


def _claim(out: Path, name: str, url: str) -> None:
    """STUDY_DIR belongs to one study: trial directories are named by trial number, which
    another study would reuse."""
    path = out / "study.json"
    mine = {"study": name, "storage": shown_url(url)}
    if path.is_file():
        theirs = rundir.load_json(path)
        if theirs != mine:
            raise ConfigError(
                f"{out} holds study {theirs.get('study')!r} in {theirs.get('storage')}, not {name!r} in "
                f"{mine['storage']}; use another -o for another study"
            )
        return
    rundir.save_json(path, mine)


def _differences(recorded: dict[str, Any], space: dict[str, Any], fixed: dict[str, Any], metric: str) -> str:
    out = []
    for key, new in (("space", space), ("fixed", fixed)):
        old = recorded.get(key, {})
        out += [
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
        ]
    if recorded.get("metric") != metric:
        out.append(f"metric: {recorded.get('metric')} -> {metric}")
    return "; ".join(out[:4]) + (f"; {len(out) - 4} more" if len(out) > 4 else "")


def _sampler(opts: TuneOptions, number: int) -> optuna.samplers.BaseSampler:
    """TPE seeded with --seed plus the number of the trial it samples."""
    import optuna

    return optuna.samplers.TPESampler(seed=opts.seed + number, n_startup_trials=opts.startup_trials)


def _pruner(opts: TuneOptions) -> optuna.pruners.BasePruner:
    import optuna

    if not opts.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=opts.prune_after, n_warmup_steps=0)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the running trials whose worker process on this host is gone (kill -9, power
    loss). Trials of live workers, or of other hosts, are left to Optuna's heartbeat check."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        w_host, _, pid = worker.rpartition(":")
        if w_host == host and pid.isdigit() and not rundir.alive(int(pid)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


def count_trials(study: optuna.Study) -> tuple[int, int]:
    """(finished, running): COMPLETE or PRUNED trials count towards --trials; FAIL ones
    (interrupted, diverged) do not."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return finished, sum(t.state == TrialState.RUNNING for t in trials)


def _best(study: optuna.Study) -> tuple[float | None, int | None]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None, None
    best = max(done, key=lambda t: (t.value, -t.number))
    return best.value, best.number


def _eta(study: optuna.Study, remaining: int, deadline: float | None) -> float | None:
    """Mean duration of the study's finished trials times the trials still to run (capped by
    the time left before --timeout); None before a trial has finished."""
    from optuna.trial import TrialState

    spans = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.datetime_start and t.datetime_complete
    ]
    if not spans:
        return None
    eta = sum(spans) / len(spans) * max(remaining, 0)
    return min(eta, max(deadline - time.monotonic(), 0.0)) if deadline is not None else eta


def run_study(
    data_dir: Path,
    out: Path,
    model: ModelConfig,
    train: TrainConfig,
    dims: list[Dim],
    opts: TuneOptions,
    study: optuna.Study,
    *,
    on_trial: Callable[[TrialEvent], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> optuna.Study:
    """Run trials until the study holds `opts.trials` finished (or running) trials or the
    timeout passes; write best.json and trials.csv after each trial."""
    import optuna

    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    objective = _objective(data_dir, out, model, train, dims, opts, on_progress, on_epoch)
    while True:
        fail_dead_trials(study)
        finished, running = count_trials(study)
        if finished + running >= opts.trials or (deadline is not None and time.monotonic() >= deadline):
            break
        if on_trial is not None:
            best, best_number = _best(study)
            eta = _eta(study, opts.trials - finished, deadline)
            on_trial(TrialEvent(len(study.trials), finished, opts.trials, best, best_number, eta))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # A diverging trial is a bad point of the space, not a broken study: it is marked
            # FAIL and the search goes on.
            study.optimize(objective, n_trials=1, catch=(TrainingDiverged,))
        write_results(study, out, model, train)
        if on_trial is not None:
            last = study.trials[-1] if study.trials else None
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == WORKER]
            last = mine[-1] if mine else last
            finished, _ = count_trials(study)
            best, best_number = _best(study)
            eta = _eta(study, opts.trials - finished, deadline)
            on_trial(TrialEvent(-1, finished, opts.trials, best, best_number, eta, _row(last) if last else None))
    write_results(study, out, model, train)
    return study


def _objective(
    data_dir: Path,
    out: Path,
    model: ModelConfig,
    train: TrainConfig,
    dims: list[Dim],
    opts: TuneOptions,
    on_progress: Callable[[Progress], None] | None,
    on_epoch: Callable[[EpochReport], None] | None,
) -> Callable[[optuna.Trial], float]:
    import optuna

    from rnnrec_cli.plots import learning_curve
    from rnnrec_cli.train import fit, start_run

    metric = opts.metric

    def objective(trial: optuna.Trial) -> float:
        # Seeded by the trial's number, which the storage hands out once: a study run again
        # after a kill, or by several workers at once, draws new points rather than the same
        # ones, and one worker's study is reproducible. (Optuna samples at the first suggest.)
        trial.study.sampler = _sampler(opts, trial.number)
        trial.set_user_attr("worker", WORKER)
        path = out / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(path.resolve()))
        model_cfg, train_cfg = apply(model, train, suggest(trial, dims))
        # The trial number is new to the study, so a directory under it is a leftover of a
        # study that was deleted: replace it.
        started = start_run([str(data_dir)], path, model_cfg, train_cfg, force=True)
        run, cfg = started.run, started.cfg

        def report(r: EpochReport) -> None:
            if on_epoch is not None:
                on_epoch(r)
            trial.report(r.valid[metric], r.epoch)
            # Stopping after the last epoch saves nothing: that trial completes.
            if r.epoch < cfg.train.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {r.valid[metric]:.4f} after epoch {r.epoch}")

        try:
            reports = fit(cfg, run, on_progress=on_progress, on_epoch=report)
        except optuna.TrialPruned:
            # A pruned trial is still a finished run directory: its best epoch is saved.
            learning_curve(rundir.read_metrics(run), run.path / "learning_curve.png", cfg.train.monitor)
            rundir.mark_complete(run)
            raise
        except TrainingDiverged as exc:
            trial.set_user_attr("error", str(exc))
            raise
        return max(r.valid[metric] for r in reports)

    return objective


def suggest(trial: optuna.Trial, dims: list[Dim]) -> dict[str, Any]:
    """The trial's value of every dimension."""
    out: dict[str, Any] = {}
    for d in dims:
        if d.choices is not None:
            out[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.low is None:
            out[d.name] = d.value
        elif PARAMS[d.name][1]:
            out[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            value = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
            # Grid values as written (0.15, not 0.15000000000000002) for best.json.
            out[d.name] = round(value, 10)
    return out


def check_data(data_dir: Path) -> None:
    """Tuning needs a validation split: choosing settings on the test split would leak it."""
    from rnnrec_cli.sequences import is_data_dir, load_manifest, split_targets

    if not is_data_dir(data_dir):
        raise DataError(f"{data_dir} is not a prepared data directory; run `rnnrec prepare` first (with --valid)")
    valid = load_manifest(data_dir).get("splits", {}).get("valid")
    if not valid or not split_targets(valid):
        raise DataError(
            f"{data_dir} has no validation split, and trials must not be chosen on the test split; prepare it "
            "with --valid 0.1 (or --valid 1d, or --valid FILE)"
        )


# ---------------------------------------------------------------------------- results


def _row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value if t.value is not None else (max(t.intermediate_values.values(), default=None)),
        "epochs": len(t.intermediate_values),
        "seconds": round(seconds, 1) if seconds is not None else None,
        "params": _rounded(t.params),
        "reason": t.user_attrs.get("error", ""),
        "worker": t.user_attrs.get("worker", ""),
        "run_dir": t.user_attrs.get("run_dir", ""),
    }


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [_row(t) for t in study.get_trials(deepcopy=False)]


def top_rows(study: optuna.Study, n: int = 10) -> list[dict[str, Any]]:
    """Finished trials, best first (a pruned trial by its best epoch)."""
    rows = [r for r in trial_rows(study) if r["state"] in ("COMPLETE", "PRUNED") and r["value"] is not None]
    return sorted(rows, key=lambda r: (r["state"] != "COMPLETE", -r["value"], r["number"]))[:n]


def write_results(study: optuna.Study, out: Path, model: ModelConfig, train: TrainConfig) -> None:
    """best.json (`rnnrec train DATA --config best.json` trains the best trial's settings) and
    trials.csv (one row per trial), both replaced atomically: several workers may write them."""
    rows = trial_rows(study)
    names = sorted({k for r in rows for k in r["params"]})
    with rundir.atomic_write(out / "trials.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", "epochs", "seconds", *names, "worker", "run_dir", "error"])
        for r in rows:
            value = "" if r["value"] is None else f"{r['value']:.6f}"
            params = [r["params"].get(n, "") for n in names]
            writer.writerow([r["number"], r["state"], value, r["epochs"], r["seconds"] or "", *params, r["worker"],
                             r["run_dir"], r["reason"]])  # fmt: skip
    _, number = _best(study)
    if number is not None:
        best = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        model_cfg, train_cfg = apply(model, train, _rounded(best.params))
        rundir.save_json(out / "best.json", {"model": to_dict(model_cfg), "train": to_dict(train_cfg)})


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 10) if isinstance(v, float) else v for k, v in params.items()}


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """history.png and importances.png; returns notes on plots that could not be made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    notes = []
    finished, _ = count_trials(study)
    plots = (("history.png", ovm.plot_optimization_history), ("importances.png", ovm.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # "too few trials to compute importances": said below, as a note.
            warnings.simplefilter("ignore", UserWarning)
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                notes.append(f"{name} not written ({exc})")
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        with rundir.atomic_write(out / name, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
    if finished < 2:
        notes.append("importances need at least 2 finished trials")
    return notes


def fixed_settings(model: ModelConfig, train: TrainConfig, dims: list[Dim]) -> dict[str, Any]:
    """The settings every trial shares (what is not searched), as JSON: a study must not mix
    trials of different epochs, cells or data. Fields that change no result (checkpoint
    timing, devices, prefetch, the narrowed tail) are left out, so a worker may set them its own way."""
    searched = {d.name for d in dims}
    io_only = {"checkpoint_every", "devices", "shard_items", "prefetch", "narrow_tail", "eval_batch_size"}
    out = {f"model.{k}": v for k, v in to_dict(model).items() if k not in searched}
    out |= {f"train.{k}": v for k, v in to_dict(train).items() if k not in searched | io_only}
    return json.loads(json.dumps(out))


def without(space: dict[str, Any], fixed: set[str]) -> dict[str, Any]:
    """The space less the parameters that flags fix (`--layers 100` trains every trial with 100)."""
    return {k: v for k, v in space.items() if k not in fixed}
