"""The report's figures as inline SVG: learning curves, metric@K curves, breakdowns and a
study's trials."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnrec_cli.evaluation.metrics import summarize
from rnnrec_cli.reporting.views import RunView
from rnnrec_cli.training.plots import MODEL_COLORS

CURVE_KS = tuple(range(1, 51))


# ---------------------------------------------------------------------------- figures


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)


def _figure(n_plots: int, width: float = 5.2, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    # Labels are run, model and baseline names: text from the runs, never mathtext (`$x$` drawn as
    # a formula, or an error for an unbalanced one).
    matplotlib.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "rnnrec", "font.size": 9, "text.parse_math": False}
    )
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_plots, figsize=(width * n_plots, height), squeeze=False)
    return fig, axes[0]


def learning_figure(runs: Sequence[RunView], colors: Mapping[str, str]) -> str | None:
    """Training loss, the monitored validation metric per epoch (best epoch starred) and seconds
    per epoch; a panel with nothing to draw (no validation split, no timings) is left out."""
    if not any(r.metrics for r in runs):
        return None
    monitors = {r.label: r.config.get("train", {}).get("monitor", "") for r in runs}
    has_valid = any(m.get(f"valid/{monitors[r.label]}") is not None for r in runs for m in r.metrics)
    has_time = any(m.get("seconds") for r in runs for m in r.metrics)
    panels = ["loss", *(["valid"] if has_valid else []), *(["time"] if has_time else [])]
    fig, axes = _figure(len(panels), width=4.2)
    ax = dict(zip(panels, axes, strict=True))
    for i, run in enumerate(runs):
        color = colors[run.label]
        epochs = [m["epoch"] for m in run.metrics]
        ax["loss"].plot(epochs, [m.get("train/loss") for m in run.metrics], "o-", color=color, label=run.label, ms=3)
        monitor = monitors[run.label]
        values = [m.get(f"valid/{monitor}") for m in run.metrics]
        if has_valid and any(v is not None for v in values):
            ax["valid"].plot(epochs, values, "o-", color=color, label=f"{run.label}: {monitor}", ms=3)
            best = [e for e, m in zip(epochs, run.metrics, strict=True) if m.get("best")]
            if best:
                at = best[-1]
                ax["valid"].plot([at], [values[epochs.index(at)]], "*", color=color, ms=12, label=f"best epoch {at}")
        if has_time:
            ax["time"].bar(
                np.asarray(epochs) + (i - (len(runs) - 1) / 2) * 0.8 / len(runs),
                [m.get("seconds", 0) for m in run.metrics],
                width=0.8 / len(runs),
                color=color,
                label=run.label,
            )
    titles = {"loss": "training loss", "valid": "validation", "time": "seconds per epoch"}
    from matplotlib.ticker import MaxNLocator

    for name, a in ax.items():
        a.set(title=titles[name], xlabel="epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return _svg(fig)


def _curves(ranks: np.ndarray) -> tuple[list[float], list[float]]:
    m = summarize(ranks, CURVE_KS)
    return [m[f"recall@{k}"] for k in CURVE_KS], [m[f"mrr@{k}"] for k in CURVE_KS]


def k_curve_figure(lines: dict[str, np.ndarray], colors: Mapping[str, str], models: int = 1) -> str:
    """Recall@K and MRR@K for K = 1..50, one line per model or baseline (the first `models`
    lines are models: drawn thicker)."""
    fig, (recall_ax, mrr_ax) = _figure(2)
    for i, (name, ranks) in enumerate(lines.items()):
        recall, mrr = _curves(ranks)
        style = {"linestyle": "-", "linewidth": 2.4 if i < models else 1.2}
        recall_ax.plot(CURVE_KS, recall, color=colors[name], label=name, **style)
        mrr_ax.plot(CURVE_KS, mrr, color=colors[name], label=name, **style)
    recall_ax.set(title="Recall@K", xlabel="K")
    mrr_ax.set(title="MRR@K", xlabel="K")
    for ax in (recall_ax, mrr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _svg(fig)


def breakdown_figure(breakdown: dict[str, Any], colors: Mapping[str, str]) -> str | None:
    """Recall@K by target popularity and by position in the sequence, model and baselines."""
    parts = [(name, breakdown[name]) for name in ("popularity", "position") if breakdown.get(name)]
    if not parts:
        return None
    fig, axes = _figure(len(parts))
    for ax, (title, table) in zip(axes, parts, strict=True):
        names = list(table)
        groups = list(next(iter(table.values())))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            key = next((k for k in next(iter(table[name].values())) if k.startswith("recall@")), None)
            if key is None:
                continue
            heights = [table[name].get(g, {}).get(key, 0.0) for g in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, heights, width, label=name,
                   color=colors[name])  # fmt: skip
            ax.set_ylabel(key)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set(title=f"by {'target popularity' if title == 'popularity' else 'position in the sequence'}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _svg(fig)


def study_figure(trials: list[dict[str, str]]) -> str | None:
    """Each finished trial's objective and the best so far."""
    points = [(int(t["number"]), float(t["value"])) for t in trials if t.get("value") not in (None, "", "nan")]
    if not points:
        return None
    fig, (ax,) = _figure(1, width=7)
    xs, ys = zip(*sorted(points), strict=True)
    ax.plot(xs, ys, "o", color=MODEL_COLORS[0], label="trial")
    ax.plot(xs, np.maximum.accumulate(ys), "-", color=MODEL_COLORS[1], label="best so far")
    ax.set(title="optimisation history", xlabel="trial", ylabel="objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _svg(fig)
