"""Hyper-parameter search (`rnnrec tune`): the search space, the Optuna study, the objective.

Each trial is an ordinary training run (`start_run` + `fit`) in STUDY_DIR/trials/NNNN, so
`evaluate` and `predict` work on any of them. The study lives in an Optuna RDB storage (SQLite in
STUDY_DIR by default, or any SQLAlchemy URL that several workers share). The loop is plain: fail
the trials dead workers left running, then one `study.optimize(n_trials=1)` at a time until the
study holds enough finished trials or the time is up, writing best.json and trials.csv after each.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli import files, rundir
from rnnrec_cli.config import ModelConfig, TrainConfig
from rnnrec_cli.errors import ConfigError, DataError, StorageError, TrainingDiverged, first_line

if TYPE_CHECKING:
    import optuna

    from rnnrec_cli.training.fit import EpochReport, Progress
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.training import storage
from rnnrec_cli.training.space import Dim, apply, suggest
from rnnrec_cli.training.storage import shown_url, storage_url
from rnnrec_cli.training.trials import _best, _row, count_trials, write_results

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
    """Create or load the study (maximising `opts.metric`) bound to `out` (storage.bind),
    refusing one made for another search space or other fixed settings. Run inside
    `storage.guard`, which turns the database's failures into StorageError."""
    import optuna

    claim = storage.read_claim(out)
    # A moved or renamed directory keeps its study's name.
    name = opts.study or (claim["study"] if claim else out.resolve().name)
    url = storage_url(opts, out)
    storage.check_links(out, url)
    storage.check_claim(claim, out, name, url)
    # Optuna's own log lines (and a failed trial's traceback) would repeat what the progress
    # shows; a failed trial's reason is in trials.csv and its line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    bound = claim is not None and "id" in claim
    if bound and storage.missing_file(url):
        assert claim is not None
        raise StorageError(storage.mismatch(out, claim, url, "has no database file"))
    try:
        # A directory bound to a study continues it and never creates one in another storage.
        study, created = _load(opts, url, name, create=not bound)
    except ImportError:
        raise StorageError(
            f"no database driver for --storage {shown_url(url)}; for PostgreSQL: pip install 'psycopg[binary]'"
        ) from None
    except RuntimeError as exc:  # Optuna's check of the database's schema version
        raise StorageError(f"cannot use the study storage {shown_url(url)}: {first_line(exc)}") from None
    if study is None:
        assert claim is not None
        raise StorageError(storage.mismatch(out, claim, url, f"holds no study {name!r}"))
    settings = {"space": space, "fixed": fixed, "metric": opts.metric}
    if created:
        # One write, ahead of the id: a worker that loads the study waits for the id (storage.bind),
        # so it never sees a study with part of its settings.
        study.set_user_attr(storage.SETTINGS_ATTR, settings)
    storage.bind(study, created, claim, out, url)
    recorded = _settings(study.user_attrs)
    if recorded is None:  # an older rnnrec's study that never recorded them
        study.set_user_attr(storage.SETTINGS_ATTR, settings)
        return study
    differs = [k for k, v in settings.items() if recorded.get(k) != v]
    if differs:
        detail = _differences(recorded, space, fixed, opts.metric)
        raise ConfigError(
            f"study {name!r} in {shown_url(url)} was created with a different {' and '.join(differs)} "
            f"({detail}); run the same command as before, or start a new study with --study NAME or another -o"
        )
    return study


def _load(opts: TuneOptions, url: str, name: str, *, create: bool) -> tuple[optuna.Study | None, bool]:
    """(the study, whether this call created it); (None, False) when it must exist and does not."""
    import optuna
    import sqlalchemy.exc

    # In memory each connection has its own database: the heartbeat's thread would find none.
    beat = None if storage.in_memory(url) else HEARTBEAT_S
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # The heartbeat lets a worker on another host fail the trials of one that died.
                rdb = optuna.storages.RDBStorage(url, heartbeat_interval=beat, grace_period=beat and GRACE_S)
            found = dict(storage=rdb, study_name=name, pruner=_pruner(opts), sampler=_sampler(opts, 0))
            if create:
                try:
                    return optuna.create_study(direction="maximize", **found), True  # type: ignore[arg-type]
                except optuna.exceptions.DuplicatedStudyError:
                    pass
            try:
                return optuna.load_study(**found), False  # type: ignore[arg-type]
            except KeyError:
                return None, False
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together race to create the tables or the study; the loser
            # finds them made a moment later.
            if attempt == 2:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _settings(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The study's recorded settings: one attr, or the three that an older rnnrec wrote
    one at a time; None when it has neither."""
    if storage.SETTINGS_ATTR in attrs:
        return dict(attrs[storage.SETTINGS_ATTR])
    if "space" in attrs:
        return {k: attrs.get(k) for k in ("space", "fixed", "metric")}
    return None


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
    if opts.pruner == "hyperband":
        # Brackets over the epochs a trial may run (read from the first trial that reports).
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
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
        if w_host == host and pid.isdigit() and not files.alive(int(pid)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


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
        write_results(study, out, model, train, opts)
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == WORKER]
        _stop_after_failures(mine, opts.max_failed)
        if on_trial is not None:
            last = study.trials[-1] if study.trials else None
            last = mine[-1] if mine else last
            finished, _ = count_trials(study)
            best, best_number = _best(study)
            eta = _eta(study, opts.trials - finished, deadline)
            on_trial(TrialEvent(-1, finished, opts.trials, best, best_number, eta, _row(last) if last else None))
    write_results(study, out, model, train, opts)
    return study


def _stop_after_failures(mine: list[Any], limit: int) -> None:
    """Stop the study when this worker's last `limit` trials all failed, naming the last reason."""
    import optuna

    recent = mine[-limit:]
    if len(recent) == limit and all(t.state == optuna.trial.TrialState.FAIL for t in recent):
        reason = recent[-1].user_attrs.get("error") or "see trials.csv"
        raise TrainingDiverged(
            f"the last {limit} trials all failed (trial {recent[-1].number}: {reason}); the search space or the "
            "fixed settings do not train. Change them (e.g. --lr, --space), then run the same command to continue"
        )


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

    from rnnrec_cli.training.fit import fit
    from rnnrec_cli.training.plots import learning_curve
    from rnnrec_cli.training.start import start_run

    metric = opts.metric

    def objective(trial: optuna.Trial) -> float:
        # Seeded by the trial's number, which the storage hands out once: a study run again
        # after a kill, or by several workers at once, draws new points rather than the same
        # ones, and one worker's study is reproducible. (Optuna samples at the first suggest.)
        trial.study.sampler = _sampler(opts, trial.number)
        trial.set_user_attr("worker", WORKER)
        model_cfg, train_cfg = apply(model, train, suggest(trial, dims))
        path = storage.new_trial_dir(out, trial.number)
        # Relative to STUDY_DIR (the worker's, see `worker`): a study moved elsewhere still reads.
        trial.set_user_attr("run_dir", f"{storage.TRIALS}/{path.name}")
        # A trial is scored without the repeat boost: choosing its weight would cost a trial more
        # validation passes than its epochs may take (best.json keeps the setting for the retrain).
        trial_cfg = dataclasses.replace(train_cfg, repeat_holdout=0.0)
        started = start_run([str(data_dir)], path, model_cfg, trial_cfg, command="tune")
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
        finally:
            rundir.release(run)  # the trial's run is its own once the trial ends
        return max(r.valid[metric] for r in reports)

    return objective


def check_data(data_dir: Path) -> None:
    """Tuning needs a validation split: choosing settings on the test split would leak it."""
    from rnnrec_cli.data.sequences import is_data_dir, load_manifest, split_targets

    if not is_data_dir(data_dir):
        raise DataError(f"{data_dir} is not a prepared data directory; run `rnnrec prepare` first (with --valid)")
    valid = load_manifest(data_dir).get("splits", {}).get("valid")
    if not valid or not split_targets(valid):
        raise DataError(
            f"{data_dir} has no validation split, and trials must not be chosen on the test split; prepare it "
            "with --valid 0.1 (or --valid 1d, or --valid FILE)"
        )
