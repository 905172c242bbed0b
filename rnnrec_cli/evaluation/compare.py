"""`compare`: runs evaluated on the same targets, paired.

Each run's evaluation keeps the rank of every target (eval/<name>/<split>_ranks.parquet). Two runs are
comparable only when they ranked the very same targets (the same sequences, positions and
items); then the difference of a metric is tested with a paired bootstrap over sequences
(metrics.paired_bootstrap), which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_cli.errors import OptionError, RunDirError
from rnnrec_cli.evaluation.metrics import paired_bootstrap, per_sequence_sums, summarize
from rnnrec_cli.evaluation.results import seed_columns
from rnnrec_cli.options import CompareOptions
from rnnrec_cli.rundir import open_run

_METRIC = re.compile(r"^(recall|mrr|ndcg)@([1-9][0-9]*)$")
TARGET_COLUMNS = ("seq", "position", "item")


def parse_metric(text: str) -> tuple[str, int]:
    m = _METRIC.match(text.strip().lower())
    if m is None:
        raise OptionError(f"--metric {text!r} is not one of recall@K, mrr@K, ndcg@K (e.g. mrr@20)")
    return m.group(1), int(m.group(2))


@dataclass(frozen=True)
class RunRanks:
    """One evaluated run: its label, the model's name, how it was evaluated, the ranks of its
    targets, and the evaluation's stored result."""

    label: str
    model: str
    protocol: dict[str, Any]
    targets: dict[str, np.ndarray]
    ranks: np.ndarray
    result: dict[str, Any]
    # The ranks under the run's further seeds (train --seeds), in its result's order.
    seed_ranks: tuple[np.ndarray, ...] = ()


def pick_evaluation(
    available: Mapping[str, Sequence[str]], asked: str | None = None, *, strict: bool = True
) -> str | None:
    """Which evaluation to show of runs with these evaluation names ({label: names}): `asked`;
    else `default` when every run has it; else the one name they all share. Runs without any
    evaluation are left out of the choice (None: no run has one). `strict` (compare): every run
    must have the choice. Otherwise (a report, where a run may show none) `asked` needs one run
    holding it, and with no single shared name the most common one is shown (`default` first,
    then alphabetically): the report's notes say which, and what else there is."""
    from rnnrec_cli.evaluation.results import DEFAULT_EVAL

    evaluated = {label: list(names) for label, names in available.items() if names}
    if not evaluated:
        return None
    listed = "; ".join(f"{label} has {', '.join(map(repr, names))}" for label, names in evaluated.items())
    if asked is not None:
        lacking = [label for label, names in evaluated.items() if asked not in names]
        if lacking and (strict or len(lacking) == len(evaluated)):
            raise RunDirError(f"--eval {asked!r}: {', '.join(lacking)} has no such evaluation ({listed})")
        return asked
    common = set.intersection(*(set(names) for names in evaluated.values()))
    if DEFAULT_EVAL in common:
        return DEFAULT_EVAL
    if len(common) == 1:
        return common.pop()
    if strict:
        raise RunDirError(f"no evaluation named default{' in every run' if len(evaluated) > 1 else ''} and no "
                          f"single one to show ({listed}); pick one with --eval NAME")  # fmt: skip
    counts = Counter(n for names in evaluated.values() for n in names)
    return max(counts, key=lambda n: (n == DEFAULT_EVAL, counts[n], [-ord(c) for c in n]))


def run_ranks(path: Path, split: str, name: str, label: str | None = None) -> RunRanks:
    """The model's rank of each target of `split` in the run's evaluation `name`."""
    from rnnrec_cli.evaluation.reading import read_ranks, read_result
    from rnnrec_cli.rundir import load_config

    run = open_run(path)
    load_config(run)  # a damaged config.json is an error here too
    result = read_result(run, split, name)
    if not result.get("model"):
        raise RunDirError(f"{run.path}'s {split} evaluation has no model; evaluate the run, not its data")
    table = read_ranks(run, split, result, name)
    return ranks_of(label or str(path), result, table)


def ranks_of(label: str, result: dict[str, Any], table: Any) -> RunRanks:
    """A run's model ranks from its checked result and ranks table (evaluate.read_ranks)."""
    protocol = {"ties": result.get("ties"), **result.get("protocol", {})}
    # The repeat boost changes the model's scores, not which targets are ranked against what:
    # boosted and unboosted evaluations pair, as two models do (the weight is part of the model).
    protocol.pop("repeat", None)
    targets = {c: table[c].to_numpy() for c in TARGET_COLUMNS}
    model = result["model"]
    own = table[model].to_numpy().astype(np.float64)
    more = tuple(table[c].to_numpy().astype(np.float64) for c in seed_columns(result))
    return RunRanks(label, model, protocol, targets, own, result, more)


def result_metrics(result: dict[str, Any]) -> list[str]:
    """The metric names a result holds for its model or any baseline."""
    rows = [result.get("metrics") or {}, *result.get("baselines", {}).values()]
    return list(dict.fromkeys(m for row in rows for m in row))


def same_targets(a: RunRanks, b: RunRanks) -> bool:
    return all(
        len(a.targets[c]) == len(b.targets[c]) and np.array_equal(a.targets[c], b.targets[c]) for c in TARGET_COLUMNS
    )


def check_comparable(first: RunRanks, other: RunRanks, split: str) -> None:
    """Refuse runs evaluated with other options or on other targets: their numbers do not pair."""
    if other.protocol != first.protocol:
        differ = sorted(k for k in {*first.protocol, *other.protocol} if first.protocol.get(k) != other.protocol.get(k))
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


def paired_differences(
    runs: Sequence[RunRanks], ks: Sequence[int], n_boot: int = 1000, seed: int = 0
) -> tuple[list[dict[str, float]], list[dict[str, dict[str, Any]]], int, int]:
    """Each run's Recall/MRR/NDCG at `ks`, and each later run's paired bootstrap difference from
    the first ({metric: {"diff", "ci", "p"}}), over the sequences of their common targets (check
    them first). Also the number of targets and of sequences. A run trained with several seeds
    counts as the mean of its seeds' models, target by target."""
    _, seq = np.unique(runs[0].targets["seq"], return_inverse=True)
    n_seqs = int(seq.max()) + 1 if len(seq) else 0
    n_events = np.bincount(seq, minlength=n_seqs).astype(np.float64)
    per_run = [[per_sequence_sums(r, seq, n_seqs, ks) for r in (run.ranks, *run.seed_ranks)] for run in runs]
    names = per_run[0][0][1]
    sums = [np.mean([one for one, _ in per_seed], axis=0) for per_seed in per_run]
    differences = []
    for i, run_sums in enumerate(sums[1:], 1):
        diff, ci, p = paired_bootstrap(run_sums, sums[0], n_events, n_boot=n_boot, seed=seed + i)
        differences.append(
            {
                n: {"diff": float(diff[j]), "ci": [float(ci[j, 0]), float(ci[j, 1])], "p": float(p[j])}
                for j, n in enumerate(names)
            }
        )
    values = [seed_spread(run, ks)[0] for run in runs]
    return values, differences, len(seq), n_seqs


def seed_spread(run: RunRanks, ks: Sequence[int]) -> tuple[dict[str, float], dict[str, float] | None]:
    """A run's metrics at `ks` (the mean over its seeds' models) and their sample standard
    deviation across seeds (None for a run of one seed)."""
    per_seed = [summarize(r, ks) for r in (run.ranks, *run.seed_ranks)]
    mean = {m: float(np.mean([p[m] for p in per_seed])) for m in per_seed[0]}
    if len(per_seed) < 2:
        return mean, None
    return mean, {m: float(np.std([p[m] for p in per_seed], ddof=1)) for m in per_seed[0]}


def missing_notes(
    baselines: Mapping[str, Iterable[str]], metrics: Mapping[str, Iterable[str]], where: str = ""
) -> list[str]:
    """What one result has and another lacks, keyed by who holds it ("run B"): "run B has no
    baseline 'iknn' in evaluation 'default'" (`where` is the tail), and the same for metrics.
    Nothing when they all hold the same."""
    notes = []
    for kind, held in (("baseline", baselines), ("metric", metrics)):
        every = list(dict.fromkeys(n for names in held.values() for n in names))
        for who, names in held.items():
            lacking = [n for n in every if n not in set(names)]
            if lacking:
                plural = "s" if len(lacking) > 1 else ""
                notes.append(f"{who} has no {kind}{plural} {', '.join(map(repr, lacking))}{where}")
    return notes


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
    evaluation: str = "default"
    # Which evaluation was picked, and what one run has that another lacks.
    notes: list[str] = field(default_factory=list)
    # Per run: how many seeds its numbers average, and their sample standard deviation of each
    # metric (None: one seed).
    n_seeds: list[int] = field(default_factory=list)
    spreads: list[dict[str, float] | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "evaluation": self.evaluation,
            "metric": self.metric,
            "baseline_run": self.runs[0],
            "n_events": self.n_events,
            "n_sequences": self.n_sequences,
            "runs": [
                {
                    "run": run,
                    "model": model,
                    "metrics": values,
                    **({"vs_first": diff} if i else {}),
                    **({"seeds": n, "seed_sd": spread} if spread is not None else {}),
                }
                for i, (run, model, values, diff, n, spread) in enumerate(
                    zip(
                        self.runs,
                        self.models,
                        self.values,
                        [{}, *self.differences],
                        self.n_seeds,
                        self.spreads,
                        strict=True,
                    )
                )
            ],
            "notes": self.notes,
        }


def compare_runs(paths: Sequence[Path], opts: CompareOptions | None = None) -> Comparison:
    """Pair each run after the first with the first, on the targets they all ranked, in one
    evaluation (`opts.evaluation`, else `default`, else the one they share), or in one each
    (`opts.evaluation` "A,B,...": then one run may be given twice, e.g. with and without the
    repeat boost)."""
    opts = opts or CompareOptions()
    metric, split, n_boot, seed, evaluation = opts.metric, opts.split, opts.n_boot, opts.seed, opts.evaluation
    from rnnrec_cli.evaluation.provenance import stale_notes
    from rnnrec_cli.evaluation.results import evaluations, result_path

    if len(paths) < 2:
        raise OptionError("compare needs at least two runs")
    _, k = parse_metric(metric)
    available = {str(p): list(evaluations(open_run(p))) for p in paths}
    each = evaluation.split(",") if evaluation is not None and "," in evaluation else None
    if each is not None:
        names = _one_each(paths, each, available)
        name = ",".join(names)
    else:
        if len({p.resolve() for p in paths}) < len(paths):
            raise OptionError("the same run is given twice; compare different runs, or two evaluations of one run "
                              "with --eval A,B")  # fmt: skip
        picked = pick_evaluation(available, evaluation)
        if picked is None:
            raise RunDirError(f"{paths[0]} has no evaluation; run `rnnrec evaluate {paths[0]}` first")
        name, names = picked, [picked] * len(paths)
    labels = [f"{p} ({n})" if each is not None else str(p) for p, n in zip(paths, names, strict=True)]
    runs = [run_ranks(p, split, n, label) for p, n, label in zip(paths, names, labels, strict=True)]
    first = runs[0]
    for other in runs[1:]:
        check_comparable(first, other, split)
    values, differences, n_events, n_seqs = paired_differences(runs, [k], n_boot, seed)
    notes = []
    if each is None and (any(len(held) > 1 for held in available.values()) or name != "default"):
        notes.append(f"comparing evaluation {name!r} (" + "; ".join(
            f"{label} has {', '.join(map(repr, held))}" for label, held in available.items()) + ")")  # fmt: skip
    notes += missing_notes(
        {f"run {r.label}": list(r.result.get("baselines", {})) for r in runs},
        {f"run {r.label}": result_metrics(r.result) for r in runs},
        f" in evaluation {name!r}",
    )
    for path, r, n in zip(paths, runs, names, strict=True):
        run = open_run(path)
        notes += stale_notes(run, r.result, result_path(run, split, n))
    several = [r.label for r in runs if r.seed_ranks]
    if several:
        notes.append(f"{', '.join(several)}: the mean of {'its' if len(several) == 1 else 'their'} seeds' models, "
                     "target by target; the interval is over targets, the seed spread is beside it")  # fmt: skip
    if several and len(several) < len(runs):
        notes.append(f"{', '.join(r.label for r in runs if not r.seed_ranks)}: one seed, so seed noise is not "
                     "measured for it (train with --seeds 0,1,2)")  # fmt: skip
    return Comparison(
        split=split,
        metric=metric.strip().lower(),
        k=k,
        runs=[r.label for r in runs],
        models=[r.model for r in runs],
        n_events=n_events,
        n_sequences=n_seqs,
        values=values,
        differences=differences,
        evaluation=name,
        notes=notes,
        n_seeds=[1 + len(r.seed_ranks) for r in runs],
        spreads=[seed_spread(r, [k])[1] for r in runs],
    )


def _one_each(paths: Sequence[Path], names: list[str], available: Mapping[str, Sequence[str]]) -> list[str]:
    """`--eval A,B,...`: one evaluation per run, each held by its run, no pair given twice."""
    if len(names) != len(paths) or not all(names):
        raise OptionError(f"--eval {','.join(names)} names {len(names)} evaluations for {len(paths)} runs: give one "
                          "per run, in order (e.g. --eval default,repeat-off)")  # fmt: skip
    pairs = [(p.resolve(), n) for p, n in zip(paths, names, strict=True)]
    if len(set(pairs)) < len(pairs):
        raise OptionError("the same run and evaluation are given twice; compare different runs or evaluations")
    for p, n in zip(paths, names, strict=True):
        if n not in available[str(p)]:
            held = ", ".join(map(repr, available[str(p)])) or "none"
            raise RunDirError(f"--eval {n!r}: {p} has no such evaluation (it has {held})")
    return names
