"""The table `compare` shows: each run's metrics, its paired difference from the first run, and
the spread over seeds of runs trained with several."""

from __future__ import annotations

from rich.markup import escape as markup_escape
from rich.table import Table

from rnnrec_cli.evaluation.compare import Comparison
from rnnrec_cli.evaluation.metrics import p_text


def comparison(result: Comparison) -> Table:
    """Each run's metrics at K; for each run after the first, its difference from the first with a
    95% interval and p-value; for a run of several seeds, their number and standard deviation.
    The tested metric is bold."""
    names = list(result.values[0])
    table = Table(
        title=f"{result.split} (evaluation {result.evaluation!r}): {result.n_events:,} targets in "
        f"{result.n_sequences:,} sequences, paired with "
        f"{result.runs[0]} (second line: this run minus the first, 95% paired bootstrap interval, two-sided p"
        + ("; seeds: their mean, and sd across them" if any(s is not None for s in result.spreads) else "")
        + ")",
        title_justify="left",
    )
    table.add_column("run")
    table.add_column("model")
    for name in names:
        table.add_column(f"[bold]{name}[/]" if name == result.metric else name, justify="right")
    spreads = result.spreads or [None] * len(result.runs)
    n_seeds = result.n_seeds or [1] * len(result.runs)
    for i, (run, model, values) in enumerate(zip(result.runs, result.models, result.values, strict=True)):
        cells = []
        spread = spreads[i]
        for name in names:
            cell = f"{values[name]:.4f}"
            if spread is not None:
                cell += f" sd {spread[name]:.4f}"
            if i:
                d = result.differences[i - 1][name]
                cell += f"\n{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] {p_text(d['p'])}"
            cells.append(f"[bold]{cell}[/]" if name == result.metric else cell)
        label = markup_escape(run) + (f"\n{n_seeds[i]} seeds" if n_seeds[i] > 1 else "")
        table.add_row(label, model, *cells)
    return table
