"""A study's results: trial rows, the best trial, best.json and trials.csv, and the study's plots."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli import files
from rnnrec_cli.config import ModelConfig, TrainConfig
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.validation import to_dict

if TYPE_CHECKING:
    import optuna

from rnnrec_cli.training.space import apply

# ---------------------------------------------------------------------------- results


def _row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    start, end = t.datetime_start, t.datetime_complete
    # A finished trial has both times (optuna sets the start before the end).
    seconds = (end - start).total_seconds() if end and start else None
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


def final_epochs(train: TrainConfig, opts: TuneOptions) -> int:
    """The epochs best.json trains: --final-epochs, else the training default, or the trials'
    epochs when they ran longer (a trial's epochs are a budget, not a setting)."""
    return opts.final_epochs or max(TrainConfig().epochs, train.epochs)


def write_results(study: optuna.Study, out: Path, model: ModelConfig, train: TrainConfig, opts: TuneOptions) -> None:
    """best.json (`rnnrec train DATA --config best.json` trains the best trial's settings for
    the final epochs; its `tuning` section says which trial, and the trials' epochs) and
    trials.csv (one row per trial), both replaced atomically: several workers may write them."""
    rows = trial_rows(study)
    names = sorted({k for r in rows for k in r["params"]})
    with files.atomic_write(out / "trials.csv") as tmp, tmp.open("w", newline="") as f:
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
        tuning = {"trial": number, "metric": opts.metric, "value": best.value, "trial_value": best.value,
                  "baseline": bool(best.user_attrs.get("baseline")), "chosen_by": "trials"}  # fmt: skip
        save_best(out, model, train, opts, best.params, tuning)


def trial_settings(
    model: ModelConfig, train: TrainConfig, opts: TuneOptions, params: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig]:
    """A trial's settings as best.json trains them: the trial's parameters, the final epochs."""
    model_cfg, train_cfg = apply(model, train, _rounded(params))
    return model_cfg, dataclasses.replace(train_cfg, epochs=final_epochs(train, opts))


def save_best(
    out: Path, model: ModelConfig, train: TrainConfig, opts: TuneOptions, params: dict[str, Any], tuning: dict[str, Any]
) -> None:
    """best.json: the chosen trial's settings (`trial_settings`) and its `tuning` section, with
    the trials' epochs and the final ones added."""
    model_cfg, train_cfg = trial_settings(model, train, opts, params)
    tuning = {**tuning, "trial_epochs": train.epochs, "epochs": train_cfg.epochs}
    files.save_json(out / "best.json", {"model": to_dict(model_cfg), "train": to_dict(train_cfg), "tuning": tuning})


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 10) if isinstance(v, float) else v for k, v in params.items()}


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """history.png and importances.png; returns notes on plots that could not be made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
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
        # Typed as an Axes; an array of them (`flat`) is handled too.
        fig = ax.figure if isinstance(ax, Axes) else ax.flat[0].figure
        assert isinstance(fig, Figure)  # optuna draws on plt.subplots(): a figure, not a SubFigure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        with files.atomic_write(out / name, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
    if finished < 2:
        notes.append("importances need at least 2 finished trials")
    return notes


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
