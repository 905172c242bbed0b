"""`compare`: runs evaluated on the same targets, paired.

Each run's evaluation keeps the rank of every target (eval/<split>_ranks.parquet). Two runs are
comparable only when they ranked the very same targets (the same sequences, positions and
items); then the difference of a metric is tested with a paired bootstrap over sequences
(metrics.paired_bootstrap), which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli.errors import ConfigError, RunDirError
from rnnrec_cli.metrics import paired_bootstrap, per_sequence_sums, summarize
from rnnrec_cli.rundir import open_run

_METRIC = re.compile(r"^(recall|mrr|ndcg)@([1-9][0-9]*)$")
TARGET_COLUMNS = ("seq", "position", "item")


def parse_metric(text: str) -> tuple[str, int]:
    m = _METRIC.match(text.strip().lower())
    if m is None:
        raise ConfigError(f"--metric {text!r} is not one of recall@K, mrr@K, ndcg@K (e.g. mrr@20)")
    return m.group(1), int(m.group(2))


@dataclass(frozen=True)
class RunRanks:
    """One evaluated run: its label, the model's name, how it was evaluated, and the ranks of
    its targets."""

    label: str
    model: str
    protocol: dict[str, Any]
    targets: dict[str, np.ndarray]
    ranks: np.ndarray


def load_ranks(path: Path, split: str) -> RunRanks:
    """The model's rank of each target of `split`, from the run's last `rnnrec evaluate`."""
    from rnnrec_cli.evaluate import read_ranks, read_result
    from rnnrec_cli.rundir import load_config

    run = open_run(path)
    load_config(run)  # a damaged config.json is an error here too
    result = read_result(run, split)
    if not result.get("model"):
        raise RunDirError(f"{run.path}'s {split} evaluation has no model; evaluate the run, not its data")
    table = read_ranks(run, split, result)
    protocol = {"ties": result.get("ties"), **result.get("protocol", {})}
    targets = {c: table[c].to_numpy() for c in TARGET_COLUMNS}
    return RunRanks(str(path), result["model"], protocol, targets, table[result["model"]].to_numpy().astype(np.float64))


def same_targets(a: RunRanks, b: RunRanks) -> bool:
    return all(
        len(a.targets[c]) == len(b.targets[c]) and np.array_equal(a.targets[c], b.targets[c]) for c in TARGET_COLUMNS
    )


@dataclass(frozen=True)
class Comparison:
    """Every run's metrics at K, and each later run's paired difference from the first."""

    split: str
    metric: str
    k: int
    runs: list[str]
    models: list[str]
    n_events: int
    n_sequences: int
    values: list[dict[str, float]]
    # For runs[1:]: metric -> {"diff": B - A, "ci": [low, high], "p": two-sided p-value}.
    differences: list[dict[str, dict[str, Any]]]

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "metric": self.metric,
            "baseline_run": self.runs[0],
            "n_events": self.n_events,
            "n_sequences": self.n_sequences,
            "runs": [
                {"run": run, "model": model, "metrics": values, **({"vs_first": diff} if i else {})}
                for i, (run, model, values, diff) in enumerate(
                    zip(self.runs, self.models, self.values, [{}, *self.differences], strict=True)
                )
            ],
        }


def compare_runs(
    paths: Sequence[Path], metric: str = "mrr@20", split: str = "test", n_boot: int = 1000, seed: int = 0
) -> Comparison:
    """Pair each run after the first with the first, on the targets they all ranked."""
    if len(paths) < 2:
        raise ConfigError("compare needs at least two runs")
    _, k = parse_metric(metric)
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) < len(resolved):
        raise ConfigError("the same run is given twice; compare different runs")
    runs = [load_ranks(p, split) for p in paths]
    first = runs[0]
    for other in runs[1:]:
        if other.protocol != first.protocol:
            differ = sorted(
                k for k in {*first.protocol, *other.protocol} if first.protocol.get(k) != other.protocol.get(k)
            )
            raise RunDirError(
                f"{other.label} was evaluated with other options than {first.label} ({', '.join(differ)}); "
                "evaluate both the same way"
            )
        if not same_targets(first, other):
            raise RunDirError(
                f"{other.label} was evaluated on other {split} targets than {first.label} "
                f"({len(other.ranks):,} vs {len(first.ranks):,} targets, or other sequences or items); compare "
                "runs evaluated on the same split of the same prepared data, with the same evaluate options"
            )
    _, seq = np.unique(first.targets["seq"], return_inverse=True)
    n_seqs = int(seq.max()) + 1 if len(seq) else 0
    n_events = np.bincount(seq, minlength=n_seqs).astype(np.float64)
    sums = [per_sequence_sums(r.ranks, seq, n_seqs, [k]) for r in runs]
    names = sums[0][1]
    differences = []
    for i, (run_sums, _) in enumerate(sums[1:], 1):
        diff, ci, p = paired_bootstrap(run_sums, sums[0][0], n_events, n_boot=n_boot, seed=seed + i)
        differences.append(
            {
                n: {"diff": float(diff[j]), "ci": [float(ci[j, 0]), float(ci[j, 1])], "p": float(p[j])}
                for j, n in enumerate(names)
            }
        )
    return Comparison(
        split=split,
        metric=metric.strip().lower(),
        k=k,
        runs=[r.label for r in runs],
        models=[r.model for r in runs],
        n_events=len(seq),
        n_sequences=n_seqs,
        values=[summarize(r.ranks, [k]) for r in runs],
        differences=differences,
    )
