"""A study's finalists: its best trials, and trial 0 (the settings the search started from),
trained again for the final epochs on the same data and chosen on validation at that length.

A trial's value is measured after the trials' budget (`tune --epochs`, often 1-3 epochs), where
settings that learn fast lead; the model people use trains for --final-epochs. On Tmall (issue
28) the best of 20 three-epoch trials beat trial 0 on validation and then lost to it on test
after the 10-epoch retrain. Each finalist is an ordinary run in STUDY_DIR/finalists/NNNN (NNNN
its trial's number): a finished one is read again, an interrupted one resumed, so running the
same `tune` command again continues or repeats nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli import locks, rundir
from rnnrec_cli.config import ModelConfig, TrainConfig
from rnnrec_cli.errors import RunDirError
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.training.storage import FINALISTS
from rnnrec_cli.training.trials import save_best, trial_settings

if TYPE_CHECKING:
    import optuna

    from rnnrec_cli.training.fit import EpochReport, Progress


@dataclass(frozen=True)
class Finalist:
    """One finalist: the trial whose settings it trains, its value then and at the final length."""

    trial: int
    trial_value: float  # the trial's value, after the trials' epochs
    baseline: bool  # trial 0, the settings the search started from
    path: Path
    value: float | None = None  # best validation metric over the final epochs; None until trained
    epochs: int = 0  # epochs it trained (early stopping may end it sooner)

    def row(self) -> dict[str, Any]:
        # run_dir relative to the study directory, which may move (see storage: study.db too).
        return {"trial": self.trial, "trial_value": self.trial_value, "value": self.value, "epochs": self.epochs,
                "baseline": self.baseline, "run_dir": f"{FINALISTS}/{self.path.name}"}  # fmt: skip


def pick(study: optuna.Study, out: Path, n: int) -> list[Finalist]:
    """The `n` best complete trials, best first, and trial 0 when it is not among them. Pruned
    trials stopped before the trials' budget and are not compared at full length."""
    from optuna.trial import TrialState

    if n == 0:
        return []
    done = {t.number: (float(t.value), t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None}  # fmt: skip
    best = sorted(done, key=lambda k: (-done[k][0], k))[:n]
    start = [k for k, (_, t) in done.items() if t.user_attrs.get("baseline") and k not in best]
    return [Finalist(k, done[k][0], bool(done[k][1].user_attrs.get("baseline")), out / FINALISTS / f"{k:04d}")
            for k in best + start]  # fmt: skip


def _value(path: Path, metric: str) -> tuple[float | None, int]:
    records = rundir.read_metrics(rundir.RunDir(path))
    values = [r[f"valid/{metric}"] for r in records if f"valid/{metric}" in r]
    return (max(values) if values else None), len(records)


def train_finalists(
    data_dir: Path,
    out: Path,
    model: ModelConfig,
    train: TrainConfig,
    opts: TuneOptions,
    study: optuna.Study,
    *,
    on_finalist: Callable[[Finalist, bool], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> list[Finalist]:
    """Train each finalist for the final epochs (or read it back when finished), then write
    best.json from the best of them on validation. `on_finalist(f, done)` is told before a
    finalist trains (done False) and once its value is known (done True)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    pending = pick(study, out, opts.finalists)
    order = [f.trial for f in pending]
    results: dict[int, Finalist] = {}
    while pending:
        # Another worker of the same study may be training a finalist: this one trains the
        # others meanwhile, and reads that one once it is finished.
        busy = []
        for f in pending:
            try:
                results[f.trial] = _train_one(data_dir, f, *trial_settings(model, train, opts, trials[f.trial].params),
                                              opts.metric, on_finalist, on_progress, on_epoch)  # fmt: skip
            except locks.BusyError:
                busy.append(f)
        if len(busy) == len(pending):
            time.sleep(BUSY_WAIT_S)
        pending = busy
    final = [results[n] for n in order]
    if final:
        write_best(out, model, train, opts, trials, final)
    return final


# Seconds between looks at a finalist another worker is training.
BUSY_WAIT_S = 5.0


def _train_one(
    data_dir: Path,
    f: Finalist,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    metric: str,
    on_finalist: Callable[[Finalist, bool], None] | None,
    on_progress: Callable[[Progress], None] | None,
    on_epoch: Callable[[EpochReport], None] | None,
) -> Finalist:
    from rnnrec_cli.training.session import train_run

    run = rundir.RunDir(f.path)
    if not run.complete:
        f.path.mkdir(parents=True, exist_ok=True)
        # Held across the check and the training: another worker may finish it in between.
        locks.acquire(f.path, "tune")
        try:
            if not run.complete:
                if on_finalist is not None:
                    on_finalist(f, False)
                resume = f.path if run.checkpoint("last").is_file() else None
                # Without a checkpoint, what an interrupted finalist left (this study's own,
                # never the user's) is started again, and replaced once the new one is complete.
                train_run([str(data_dir)], f.path, model_cfg, train_cfg, force=True, resume=resume,
                          on_progress=on_progress, on_epoch=on_epoch)  # fmt: skip
        finally:
            locks.release(f.path)
    value, epochs = _value(f.path, metric)
    if value is None:
        raise RunDirError(f"{f.path} has no validation {metric}; remove it and run the same command again")
    f = dataclasses.replace(f, value=value, epochs=epochs)
    if on_finalist is not None:
        on_finalist(f, True)
    return f


def chosen(results: list[Finalist]) -> Finalist:
    """The best finalist on validation; a tie goes to the lower trial number (trial 0 first)."""
    return max(results, key=lambda f: (f.value if f.value is not None else float("-inf"), -f.trial))


def write_best(
    out: Path,
    model: ModelConfig,
    train: TrainConfig,
    opts: TuneOptions,
    trials: dict[int, Any],
    results: list[Finalist],
) -> None:
    """best.json from the chosen finalist: its settings for the final epochs, and in `tuning`
    every finalist's value at the trials' length and at the final one."""
    win = chosen(results)
    tuning = {"trial": win.trial, "metric": opts.metric, "value": win.value, "trial_value": win.trial_value,
              "baseline": win.baseline, "chosen_by": "finalists", "finalists": [f.row() for f in results]}  # fmt: skip
    save_best(out, model, train, opts, trials[win.trial].params, tuning)
