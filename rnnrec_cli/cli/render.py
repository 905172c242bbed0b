"""What the CLI shows people, on stderr: the console, errors and warnings, progress, and the
tables of prepare, train, evaluate and predict. Only the CLI imports this module (and Rich).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.markup import escape as markup_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from rnnrec_cli.config import RunConfig
from rnnrec_cli.errors import escape
from rnnrec_cli.rules import MIN_TARGETS

if TYPE_CHECKING:
    from rnnrec_cli.evaluation.evaluate import EvalResult
    from rnnrec_cli.evaluation.predict import PredictStats
    from rnnrec_cli.training import fit


# Logs and CI read stderr from a file or pipe: whole lines there, never wrapped at 80 columns.
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=1000, soft_wrap=True)


def error_line(message: str) -> None:
    """One line, whatever the message quotes: user data is escaped (errors.escape) and never
    read as Rich markup."""
    line = markup_escape(escape(message, limit=1000))
    err.print(f"[bold red]Error:[/] {line}", markup=True, highlight=False, soft_wrap=True)


def status(message: str, quiet: bool) -> Any:
    """A spinner while a long step runs (nothing with --quiet); `.update(text)` changes its text."""
    return nullcontext() if quiet else err.status(message, spinner="dots")


# ---------------------------------------------------------------------------- prepare


def prepare_summary(manifest: dict[str, Any], out_dir: Path) -> Group:
    """What prepare decided and what came out: columns and how each was found, the sequence and
    split rules, the time span, and the counts per split."""
    from rnnrec_cli.data.sequences import split_targets

    rec = manifest.get("recognised", {})
    st = manifest["stages"]
    lines = []
    if rec:
        cols = ", ".join(f"{role} = {c['column']!r} ({c['how']})" for role, c in rec["columns"].items())
        unit = rec["time_unit"]
        unit_text = {"auto": "text or dates", "order": "none (events in the order column's order)"}.get(
            unit["unit"], f"unix {unit['unit']} ({unit['how']})"
        )
        if "header" in rec:
            lines.append(f"header: {rec['header']}")
        lines.append(f"columns: {cols}; times: {unit_text}")
        lines.append(f"sequences: {rec['sequences']}")
    if "order_note" in st:
        lines.append(f"order: {st['order_note']}")
    elif "time_span" in st:
        a, b = st["time_span"]
        lines.append(f"time span: {a[:16].replace('T', ' ')} to {b[:16].replace('T', ' ')}")
    rules = st.get("split_rule")
    if rules:
        lines.append(f"split: test = {rules['test']}, validation = {rules['valid']}")
    if "split_scheme" in st:
        cut = ", ".join(
            f"{name} after {st[f'{name}_cutoff'][:16].replace('T', ' ')}"
            for name in ("test", "valid")
            if f"{name}_cutoff" in st
        )
        lines.append(f"split rule: {st['split_scheme']}" + (f"; cutoffs: {cut}" if cut else ""))
    for name in ("test", "valid"):
        if f"{name}_split_note" in st:
            lines.append(f"note: {st[f'{name}_split_note']}")
    steps = [(k.removeprefix("after_").replace("_", " "), v) for k, v in st.items() if k.startswith("after_")]
    lines.append(
        f"events: {st['events_read']:,} read"
        + "".join(f" -> {v:,} after {k}" for k, v in steps)
        + f" ({st['filter_rounds']} extra filter rounds)"
    )
    for split in ("test", "valid"):
        c = st.get(f"{split}_cleaning", {})
        if any(c.values()):
            without = c.get("events_in_sequences_without_targets", 0)
            lines.append(
                f"{split}: removed {c['events_on_unseen_items']:,} events on items not in training, "
                f"{c['sequences_dropped']:,} sequences left too short" + (" or without a target" if without else "")
            )
    table = Table(title=f"Prepared {out_dir} ({manifest['n_items']:,} items)", title_justify="left")
    # With a global cutoff a split's sequences begin with context: its time range is its targets'.
    marked = any("target_time_min" in sp for sp in manifest["splits"].values())
    for col in ("split", "events", "sequences", "targets", "items", "from", "to"):
        title = f"targets {col}" if marked and col in ("from", "to") else col
        table.add_column(title, justify="left" if col in ("split", "from", "to") else "right")
    for name, sp in manifest["splits"].items():
        targets = split_targets(sp)
        first, last = ("target_time_min", "target_time_max") if "target_time_min" in sp else ("time_min", "time_max")
        table.add_row(
            name,
            f"{sp['events']:,}",
            f"{sp['sequences']:,}",
            f"{targets:,}",
            f"{sp['items']:,}",
            "-" if "order_note" in st else (sp[first] or "-")[:10],
            "-" if "order_note" in st else (sp[last] or "-")[:10],
        )
    return Group(Text("\n".join(lines)), table)


def warn(warnings: list[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]Warning:[/] {markup_escape(escape(warning, limit=2000))}")


def notes(lines: Sequence[str]) -> None:
    """What people should know that is not a problem (which evaluation is shown, what was kept
    or is missing): `note:` lines, never worded as a warning."""
    for line in lines:
        err.print(f"[cyan]note:[/] {markup_escape(escape(line, limit=2000))}")


# ---------------------------------------------------------------------------- train


def training_header(cfg: RunConfig, path: Path, resume: bool) -> str:
    """One line: the model, its heads and losses, the optimiser, and where the run goes."""
    m, t = cfg.model, cfg.train
    heads = []
    if m.predicts_items:
        out = "full softmax" if t.full_softmax else f"{t.n_sample} shared negatives (alpha {t.sample_alpha})"
        heads.append(f"next item: {t.loss} loss over in-batch + {out}")
    if m.predicts_values:
        heads.append(f"value: {t.value_loss}")
    if m.predicts_events:
        heads.append(f"event type: {len(m.event_types)} classes")
    extra = [name for name, on in (("event types", m.event_input), ("item features", m.item_features)) if on]
    return (
        f"{'Resuming' if resume else 'Training'} {m.cell.upper()} {list(m.layers)} on {cfg.n_items:,} items"
        + (f" (+ {', '.join(extra)} as input)" if extra else "")
        + f"; {'; '.join(heads)}; {t.optimizer} lr {t.lr}"
        + (f"; seed {t.seed}, then seeds {', '.join(map(str, t.more_seeds))}" if t.more_seeds else "")
        + f" -> {path}"
    )


def epoch_line(r: fit.EpochReport, cfg: RunConfig) -> str:
    """The epoch's loss, the validation metrics that pick the best epoch, speed and time."""
    shown = {cfg.train.monitor, "rmse", "mae"}
    if "@" in cfg.train.monitor:
        shown.add("recall@" + cfg.train.monitor.split("@")[1])
    val = "  ".join(f"{k} {v:.4f}" for k, v in r.valid.items() if k in shown)
    valid_time = f" + valid {r.valid_seconds:.1f}s" if r.valid else ""
    return (
        f"epoch {r.epoch:>3}  loss {r.train_loss:.4f}  {val}  {r.events_per_s:,.0f} ev/s  "
        f"train {r.seconds:.1f}s{valid_time}" + ("  *best" if r.best else "")
    )


def progress_bars(quiet: bool) -> Progress:
    """Bars on stderr (description, bar, k of N, elapsed, a stats field) that vanish when done."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=err,
        redirect_stdout=False,
        redirect_stderr=False,
        disable=quiet,
        transient=True,
    )


@contextmanager
def training_progress(quiet: bool) -> Iterator[Callable[[fit.Progress], None]]:
    """A progress bar over an epoch's chunks; yields the `on_progress` callback for fit."""
    progress = progress_bars(quiet)
    # Started by the first report, so a spinner shown before training (preparing data) is gone.
    task = progress.add_task("epoch", total=None, stats="")

    def on_progress(p: fit.Progress) -> None:
        if not progress.live.is_started:
            progress.start()
        stats = f"loss {p.loss:.4f}  {p.events_per_s:,.0f} ev/s" if p.loss is not None else ""
        progress.update(task, description=f"epoch {p.epoch}", completed=p.chunk, total=p.n_chunks, stats=stats)

    try:
        yield on_progress
    finally:
        if progress.live.is_started:
            progress.stop()


# ---------------------------------------------------------------------------- evaluate


def evaluation(result: EvalResult) -> None:
    """The result tables of every task the result holds."""
    if result.task == "next-item":
        err.print(_results_table(result))
        err.print(_breakdown_table(result, "position"))
        err.print(_breakdown_table(result, "popularity"))
    if "event" in result.breakdown:
        err.print(_breakdown_table(result, "event"))
    if result.value is not None:
        err.print(_value_table(result))
    if result.event_type is not None:
        err.print(_event_table(result))


def evaluation_written(run: Path, result: EvalResult) -> str:
    """Where the evaluation went, what it kept, and what to do next."""
    folder = run / "eval" / result.name
    files = [f"{result.split}.json", *([f"{result.split}.csv"] if result.task == "next-item" else [])]
    kept = f" (kept {', '.join(result.kept)} from the earlier result: same options)" if result.kept else ""
    hint = "--task value -o values.csv" if result.task == "value" else "-o recs.csv"
    return (
        f"Wrote {', '.join(str(folder / f) for f in files)} (evaluation {result.name!r}){kept}. "
        f"Next: rnnrec predict {run} EVENTS {hint}; rnnrec report {run} for the page"
    )


def few_targets(result: EvalResult) -> list[str]:
    if result.n_events >= MIN_TARGETS:
        return []
    return [
        f"only {result.n_events:,} target events were scored on the {result.split} split: these metrics are mostly "
        f"noise (aim for at least {MIN_TARGETS}; prepare with a longer --split period)"
    ]


def _results_table(result: EvalResult) -> Group:
    """Metrics as rows and models as columns, so more baselines stay readable in 80 columns."""
    from rnnrec_cli.evaluation import repeats
    from rnnrec_cli.evaluation.metrics import p_text

    rows = {**({result.model: result.metrics} if result.model and result.metrics else {}), **result.baselines}
    first = next(iter(rows.values()))
    k_max = max(int(m.split("@")[1]) for m in first)
    shown = [m for m in first if m.startswith(("recall@", "mrr@"))]
    shown.sort(key=lambda m: (m.split("@")[0] != "recall", int(m.split("@")[1])))
    shown += [f"coverage@{k_max}", f"tail@{k_max}"]
    protocol = result.protocol
    title = Text(
        f"{result.split} split: {result.n_events:,} target events in {result.n_sequences:,} sequences, "
        f"ranked against all {result.n_items:,} items, {result.ties} ties"
        + (", last position only" if protocol["last_only"] else "")
        + (", seen items excluded" if protocol["exclude_seen"] else "")
        + repeats.describe(protocol.get("repeat"), result.model)
    )
    table = Table()
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    for m in shown:
        higher_is_better = not m.startswith("pop@")
        best = max(r[m] for r in rows.values()) if higher_is_better else None
        cells = [f"[bold green]{r[m]:.4f}[/]" if r[m] == best else f"{r[m]:.4f}" for r in rows.values()]
        table.add_row(m.replace("recall", "Recall").replace("mrr", "MRR"), *cells)
    notes = []
    key = f"mrr@{k_max}"
    for name in rows:
        lo, hi = result.ci[name][key]
        notes.append(f"{name} MRR@{k_max} 95% CI [{lo:.4f}, {hi:.4f}]")
    lines = ["; ".join(notes)]
    if result.seeds is not None:
        lines.append(seeds_line(result.seeds, result.model or "", f"mrr@{k_max}", f"recall@{k_max}"))
    if result.paired is not None:
        p = result.paired
        lo, hi = p["ci"][key]
        lines.append(
            f"{result.model} - {p['against']} (best baseline by {p['chosen_by']}): MRR@{k_max} "
            f"{p['diff'][key]:+.4f} [{lo:+.4f}, {hi:+.4f}], {p_text(p['p'][key])} (paired bootstrap over sequences)"
        )
    return Group(title, table, Text("\n".join(lines)))


def seeds_line(seeds: dict[str, Any], model: str, *shown: str) -> str:
    """The mean and spread over a run's seeds (train --seeds) of the metrics `shown`."""
    listed, sd, mean = seeds["seeds"], seeds["sd"], seeds["mean"]
    parts = [f"{m.replace('recall', 'Recall').replace('mrr', 'MRR')} {mean[m]:.4f}"
             + (f" sd {sd[m]:.4f} [{min(seeds['metrics'][m]):.4f}, {max(seeds['metrics'][m]):.4f}]" if sd[m] is not None
                else "") for m in shown]  # fmt: skip
    missing = f"; seeds {', '.join(map(str, seeds['missing']))} not trained yet" if seeds["missing"] else ""
    return f"{model} over seeds {', '.join(map(str, listed))}: " + "; ".join(parts) + f" (mean, sd, range){missing}"


def _value_table(result: EvalResult) -> Group:
    """Value prediction errors of the model and the value baselines (lower is better)."""
    assert result.value is not None
    rows = result.value["metrics"]
    n = next(iter(rows.values()))["n"]
    table = Table()
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    for m in ("rmse", "mae"):
        best = min(r[m] for r in rows.values())
        table.add_row(
            m.upper(), *(f"[bold green]{r[m]:.4f}[/]" if r[m] == best else f"{r[m]:.4f}" for r in rows.values())
        )
    return Group(Text(f"{result.split} split: value of {n:,} target events (lower is better)"), table)


def _event_table(result: EvalResult) -> Group:
    """Next event-type accuracy of the model and two baselines, and the model's per-type scores."""
    ev = result.event_type
    assert ev is not None
    acc = Table()
    for name in ev["accuracy"]:
        acc.add_column(name, justify="right")
    acc.add_row(*(f"{v:.4f}" for v in ev["accuracy"].values()))
    per = Table()
    for col in ("type", "support", "precision", "recall"):
        per.add_column(col, justify="right")
    for name, row in ev["per_type"].items():
        per.add_row(name, f"{row['support']:,}", f"{row['precision']:.4f}", f"{row['recall']:.4f}")
    title = Text(f"{result.split} split: type of {ev['n']:,} next events (accuracy)")
    return Group(title, acc, Text(f"{ev['model']} per type"), per)


def _breakdown_table(result: EvalResult, kind: str) -> Table:
    parts = result.breakdown[kind]
    names = list(parts)
    groups = list(next(iter(parts.values())))
    metric = next(m for m in next(iter(next(iter(parts.values())).values())) if m.startswith("recall@"))
    caption = (
        "head: top 20% of items by training count, mid: next 30%, tail: bottom 50%" if kind == "popularity" else None
    )
    table = Table(title=f"{metric} by {kind} of the target", title_justify="left", caption=caption)
    table.add_column(kind)
    table.add_column("targets", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    for g in groups:
        first = parts[names[0]].get(g, {})
        table.add_row(
            g, f"{first.get('n', 0):,}", *[f"{parts[n].get(g, {}).get(metric, float('nan')):.4f}" for n in names]
        )
    return table


# ---------------------------------------------------------------------------- predict


def predict_summary(stats: PredictStats, candidates: bool, left_out: bool) -> str:
    return (
        f"{stats.n_sequences:,} sequences, {stats.n_events:,} events read; "
        f"{stats.unknown_events:,} {'events or candidate pairs' if candidates else 'events'} "
        "on items unknown to the model skipped; "
        f"{stats.empty_sequences:,} sequences had no known item"
        + (" (left out)" if left_out else " (popular items given, marked fallback)")
        + (f"; the session's own items raised by the repeat boost, weight {stats.repeat:g}" if stats.repeat else "")
    )


def predict_warnings(stats: PredictStats, safe_csv: bool = False) -> list[str]:
    out = []
    if stats.repeated_keys:
        out.append(
            f"{stats.repeated_keys:,} sessions were not contiguous on stdin and got recommendations more than once; "
            "sort the input by session, or pass it as a file"
        )
    if stats.short_lists:
        out.append(
            f"{stats.short_lists:,} lists have fewer recommendations than asked: every other item was already seen "
            "(--exclude-seen), excluded, or not in --include"
        )
    if stats.formula_cells and not safe_csv:
        out.append(
            f"{stats.formula_cells:,} ids in the CSV start with =, +, -, @ or a tab, which a spreadsheet may run as "
            "a formula; they are written exactly as given. Pass --safe-csv before opening the file in a spreadsheet"
        )
    return out


# ---------------------------------------------------------------------------- compare
