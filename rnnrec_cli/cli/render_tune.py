"""What people see of a tuning study: its header, a line per trial, a progress bar and the
table of the best trials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rnnrec_cli.options import TuneOptions
    from rnnrec_cli.training import fit, tune
    from rnnrec_cli.training.finalists import Finalist
from rnnrec_cli.cli.render import progress_bars

# ---------------------------------------------------------------------------- tune


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(params.items()))


def _study_state(ev: tune.TrialEvent, metric: str) -> str:
    best = f"best {metric} {ev.best_value:.4f} (trial {ev.best_number})" if ev.best_value is not None else "no best yet"
    return f"{best}, ETA {_duration(ev.eta_s)}"


def trial_line(row: dict[str, Any], ev: tune.TrialEvent, metric: str) -> str:
    """One finished trial, with where the study stands: printed on every output, TTY or not."""
    value = f"{metric} {row['value']:.4f}" if row["value"] is not None else "no value"
    if row["reason"]:
        value += f" ({row['reason']})"
    return (
        f"trial {row['number']} {row['state'].lower()}: {value} after {row['epochs']} epoch(s) in "
        f"{_duration(row['seconds'])}; {_params_text(row['params'])}  [{ev.finished} of {ev.total} done; "
        f"{_study_state(ev, metric)}]"
    )


def finalist_line(f: Finalist, done: bool, metric: str) -> str:
    """A finalist starting to train, or trained: printed on every output, TTY or not."""
    start = " (the settings the search started from)" if f.baseline else ""
    if not done:
        return (f"finalist: trial {f.trial}{start}, {metric} {f.trial_value:.4f} as a trial; training it for the "
                f"final epochs in {f.path}")  # fmt: skip
    return f"finalist trial {f.trial}: {metric} {f.value:.4f} after {f.epochs} epoch(s), {f.trial_value:.4f} as a trial"


def finalists_table(finalists: list[Finalist], metric: str) -> Table:
    """The finalists, best first at the final length; the first row is best.json's."""
    from rnnrec_cli.training.finalists import chosen

    win = chosen(finalists)
    table = Table(title=f"Finalists, retrained for the final epochs (best.json: trial {win.trial})",
                  title_justify="left")  # fmt: skip
    for col in ("trial", f"{metric} final", "epochs", f"{metric} as a trial"):
        table.add_column(col, justify="right")
    for f in sorted(finalists, key=lambda f: (f is not win, -(f.value or 0.0), f.trial)):
        name = f"{f.trial} (start)" if f.baseline else str(f.trial)
        table.add_row(name, f"{f.value:.4f}", str(f.epochs), f"{f.trial_value:.4f}")
    return table


@contextmanager
def tune_progress(
    quiet: bool, metric: str
) -> Iterator[
    tuple[Callable[[tune.TrialEvent], None], Callable[[fit.Progress], None], Callable[[Finalist, bool], None]]
]:
    """Two bars: the study's trials (k of N, best so far, ETA) and the running trial's epoch.
    Yields the `on_trial`, `on_progress` and `on_finalist` callbacks for `search`."""
    progress = progress_bars(quiet)
    with progress:
        study_task = progress.add_task("trials", total=None, stats="")
        epoch_task = progress.add_task("epoch", total=None, stats="")

        def on_trial(ev: tune.TrialEvent) -> None:
            if ev.last is not None and not quiet:
                progress.console.print(trial_line(ev.last, ev, metric), highlight=False)
            description = f"trial {ev.number} ({ev.finished + 1} of {ev.total})" if ev.number >= 0 else "trials"
            progress.update(
                study_task, description=description, completed=ev.finished, total=ev.total,
                stats=_study_state(ev, metric),
            )  # fmt: skip
            progress.reset(epoch_task, description="epoch", total=None, stats="")

        def on_progress(p: fit.Progress) -> None:
            stats = f"loss {p.loss:.4f}  {p.events_per_s:,.0f} ev/s" if p.loss is not None else ""
            progress.update(
                epoch_task, description=f"epoch {p.epoch}", completed=p.chunk, total=p.n_chunks, stats=stats
            )

        def on_finalist(f: Finalist, done: bool) -> None:
            if not quiet:
                progress.console.print(finalist_line(f, done, metric), highlight=False)
            progress.update(study_task, description="finalists", stats="")
            progress.reset(epoch_task, description="epoch", total=None, stats="")

        yield on_trial, on_progress, on_finalist


def tune_table(rows: list[dict[str, Any]], metric: str, title: str) -> Table:
    """The top trials, best first: value, epochs, time and parameters."""
    names = sorted({k for r in rows for k in r["params"]})
    table = Table(title=title, title_justify="left")
    for col in ("trial", "state", metric, "epochs", "time", *names):
        table.add_column(col, justify="left" if col == "state" else "right")
    for r in rows:
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in (r["params"].get(n, "") for n in names)]
        table.add_row(str(r["number"]), r["state"].lower(), f"{r['value']:.4f}", str(r["epochs"]),
                      _duration(r["seconds"]), *cells)  # fmt: skip
    return table


def tune_header(study: Any, opts: TuneOptions, searched: dict[str, Any], out: Path) -> str:
    """Which study, where it is stored, how far it is, and what it searches."""
    from rnnrec_cli.training.storage import shown_url, storage_url
    from rnnrec_cli.training.trials import count_trials

    finished, running = count_trials(study)
    state = f"continuing with {finished} finished" if finished else "new"
    if running:
        state += f", {running} running elsewhere"

    def dim(v: Any) -> str:
        if isinstance(v, dict) and "choices" in v:
            return "{" + ", ".join(map(str, v["choices"])) + "}"
        if isinstance(v, dict):
            return f"[{v['low']}, {v['high']}]" + (" log" if v.get("log") else "")
        return str(v)

    limit = f", at most {_duration(opts.timeout)}" if opts.timeout else ""
    return (
        f"Tuning study {study.study_name!r} ({state}) in {shown_url(storage_url(opts, out))}: {opts.trials} trials"
        f"{limit}, maximising validation {opts.metric}; searching "
        + ", ".join(f"{k} {dim(v)}" for k, v in searched.items())
    )


def tune_footer(out: Path, notes: list[str], finalists: bool = False) -> str:
    wrote = ", ".join(p.name for p in (out / n for n in ("best.json", "trials.csv", "history.png", "importances.png"))
                      if p.is_file())  # fmt: skip
    lines = [f"Wrote {out}/: {wrote}; each trial's run directory is in {out}/trials/."]
    lines += [f"note: {n}" for n in notes]
    if finalists:
        lines[0] += f" The finalists' runs are in {out}/finalists/."
    chosen = "the best finalist's" if finalists else "the best trial's"
    lines.append(f"Next: rnnrec train DATA --config {out}/best.json ({chosen} settings, for the final epochs)")
    return "\n".join(lines)
