"""Learning-curve PNG for a run directory (matplotlib, headless), and the colours every figure
gives models and baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnrec_cli.files import atomic_write

# A baseline keeps its colour on every figure of every page, so a reader learns it once; models
# and runs take the other colours, in the order the page names them.
BASELINE_COLORS = {"pop": "#7f7f7f", "spop": "#8c564b", "markov": "#e377c2", "iknn": "#17becf", "sknn": "#bcbd22"}
MODEL_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#393b79", "#637939", "#843c39")


def series_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per name: a baseline's own, every other name the next model colour (cycling
    after eight). Duplicates keep their first colour."""
    out: dict[str, str] = {}
    models = 0
    for name in names:
        if name in out:
            continue
        if name in BASELINE_COLORS:
            out[name] = BASELINE_COLORS[name]
        else:
            out[name] = MODEL_COLORS[models % len(MODEL_COLORS)]
            models += 1
    return out


def learning_curve(records: list[dict[str, Any]], path: Path, monitor: str) -> None:
    """Training loss and the monitored validation metric per epoch, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in records]
    fig, ax_loss = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax_loss.plot(epochs, [r["train/loss"] for r in records], "o-", color="tab:blue", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_ylabel("train loss", color="tab:blue")
    key = f"valid/{monitor}"
    if any(key in r for r in records):
        ax_val = ax_loss.twinx()
        ax_val.plot(epochs, [r.get(key, float("nan")) for r in records], "s-", color="tab:orange")
        ax_val.set_ylabel(f"valid {monitor}", color="tab:orange")
        best = [r["epoch"] for r in records if r.get("best")]
        if best:
            ax_val.axvline(best[-1], color="grey", linestyle=":", linewidth=1)
    ax_loss.set_title("learning curve")
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
