"""An evaluation's result (`EvalResult`), its scored targets, its name from the protocol
options, and where its files live in a run directory."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnrec_cli.errors import RunDirError
from rnnrec_cli.options import EvalOptions
from rnnrec_cli.rundir import RunDir

DEFAULT_EVAL = "default"
SPLITS = ("test", "valid")
# The options that decide which targets are scored and what each number means. Results under one
# name share them, so a re-run may add to a result but never mixes two protocols in it. (The
# bootstrap's resamples and seed change intervals only; --baselines says what to compute.)
PROTOCOL_FLAGS = {
    "ks": "--k", "ties": "--ties", "last_only": "--last-only", "exclude_seen": "--exclude-seen",
    "n_sampled": "--sampled", "target_events": "--target-events", "knn": "--knn", "knn_sample": "--knn-sample",
    "repeat": "--repeat",
}  # fmt: skip

if TYPE_CHECKING:
    from rnnrec_cli.data.sequences import Sequences


def protocol_options(opts: EvalOptions) -> dict[str, Any]:
    """The protocol options of an evaluation, as JSON (the result's `options`)."""
    return {k: list(v) if isinstance(v, tuple) else v for k in PROTOCOL_FLAGS for v in [getattr(opts, k)]}


def _weight(opts: EvalOptions) -> str:
    """`--repeat` in a name: auto, off, or the weight with '_' for its point (repeat-0_5)."""
    beta = opts.repeat_weight
    return opts.repeat if beta is None or not beta else f"{beta:g}".replace(".", "_")


def eval_name(opts: EvalOptions) -> str:
    """`--name`, else `default` for the default protocol, else a short slug of the options that
    differ from it, e.g. `exclude-seen_k5-10` or `sampled100`."""
    if opts.name:
        return opts.name
    d = EvalOptions()
    parts = [
        *(["exclude-seen"] if opts.exclude_seen else []),
        *(["last-only"] if opts.last_only else []),
        *(["k" + "-".join(map(str, opts.ks))] if opts.ks != d.ks else []),
        *([f"ties-{opts.ties}"] if opts.ties != d.ties else []),
        *([f"sampled{opts.n_sampled}"] if opts.n_sampled else []),
        *(["events-" + "-".join(re.sub(r"[^A-Za-z0-9]", "", t) or "x" for t in opts.target_events)]
          if opts.target_events else []),
        *([f"knn{opts.knn}"] if opts.knn != d.knn else []),
        *([f"knn-sample{opts.knn_sample}"] if opts.knn_sample != d.knn_sample else []),
        *([f"repeat-{_weight(opts)}"] if opts.repeat != d.repeat else []),
    ]  # fmt: skip
    name = "_".join(parts) or DEFAULT_EVAL
    if len(name) > 64:
        # Many event types: still a valid name, still one per set of options.
        name = name[:55] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def result_options(result: dict[str, Any]) -> dict[str, Any]:
    """A stored result's protocol options. A result written before evaluations had names holds
    no `options`: they are read from what it holds (sknn's --knn/--knn-sample as the defaults)."""
    d = protocol_options(EvalOptions())
    if isinstance(result.get("options"), dict):
        # Options added since the result was written read as their defaults.
        return {**d, **result["options"]}
    protocol = p if isinstance(p := result.get("protocol"), dict) else {}
    table: dict[str, Any] = result.get("metrics") or next(iter((result.get("baselines") or {}).values()), {})
    ks = sorted({int(k.split("@")[1]) for k in table if re.match(r"^recall@\d+$", k)})
    return {
        **d,
        "ks": ks or d["ks"],
        "ties": result.get("ties", d["ties"]),
        "last_only": bool(protocol.get("last_only", False)),
        "exclude_seen": bool(protocol.get("exclude_seen", False)),
        "n_sampled": (result.get("sampled") or {}).get("n_sampled", 0),
        "target_events": list(protocol.get("target_events", [])),
    }


def option_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'--exclude-seen: True before, False now' for each protocol option that differs."""
    return [
        f"{flag}: {_shown(before.get(key))} before, {_shown(now.get(key))} now"
        for key, flag in PROTOCOL_FLAGS.items()
        if before.get(key) != now.get(key)
    ]


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def result_path(run: RunDir, split: str, name: str = DEFAULT_EVAL) -> Path:
    """eval/<name>/<split>.json; for `default`, a run evaluated before names existed keeps
    eval/<split>.json (read as `default` until a new default evaluation moves it)."""
    path = run.eval_dir / name / f"{split}.json"
    legacy = run.eval_dir / f"{split}.json"
    return legacy if name == DEFAULT_EVAL and not path.is_file() and legacy.is_file() else path


def ranks_path(run: RunDir, split: str, name: str = DEFAULT_EVAL) -> Path:
    return result_path(run, split, name).with_name(f"{split}_ranks.parquet")


def _split_files(run: RunDir, split: str, name: str) -> list[Path]:
    """The files of one split's result: its JSON, CSV and ranks."""
    json_path = result_path(run, split, name)
    return [json_path, json_path.with_name(f"{split}.csv"), json_path.with_name(f"{split}_ranks.parquet")]


def evaluations(run: RunDir) -> dict[str, list[str]]:
    """Every evaluation of the run, by name, with the splits it holds (`default` first)."""
    from rnnrec_cli.options import EVAL_NAME

    found: dict[str, list[str]] = {}
    names = [DEFAULT_EVAL]
    if run.eval_dir.is_dir():
        names += sorted(p.name for p in run.eval_dir.iterdir() if p.is_dir() and EVAL_NAME.match(p.name))
    for name in dict.fromkeys(names):
        splits = [s for s in SPLITS if result_path(run, s, name).is_file()]
        if splits:
            found[name] = splits
    return found


# ---------------------------------------------------------------------------- reading results back


@dataclass(frozen=True)
class EvalResult:
    """One split's evaluation. `metrics` are the model's (None for baselines alone), `baselines`
    each baseline's, both for the run's first task: next-item ranking metrics, value errors
    (rmse, mae, n) or event-type accuracy. The next-item sections (ci, paired, breakdown,
    sampled) are empty for a model that ranks no items; `value` and `event_type` hold those
    heads' full results when the model has them."""

    split: str
    task: str
    n_events: int
    n_sequences: int
    n_items: int
    model: str | None
    metrics: dict[str, Any] | None
    baselines: dict[str, dict[str, Any]]
    ties: str
    protocol: dict[str, Any]
    ci: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    paired: dict[str, Any] | None = None
    breakdown: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, Any] | None = None
    value: dict[str, Any] | None = None
    event_type: dict[str, Any] | None = None
    name: str = DEFAULT_EVAL
    # The protocol options (PROTOCOL_FLAGS' keys) this result was computed under.
    options: dict[str, Any] = field(default_factory=dict)
    # Baselines kept from the earlier result of this name (same protocol), not recomputed.
    kept: list[str] | None = None
    # What was scored: the run's id, the checkpoint (name, epoch, SHA-256) and the SHA-256 of
    # the data manifest; report and compare tell from it whether the result is stale.
    provenance: dict[str, Any] | None = None
    # A run trained with several seeds (train --seeds): "seeds" (the run's own first), each
    # one's next-item "metrics" (lists in that order), their "mean" and "sd", and the "missing"
    # seeds not trained to a checkpoint yet. Their ranks are columns <model>@seed<s>.
    seeds: dict[str, Any] | None = None
    # What the CLI tells people about where the result went (not saved).
    notes: tuple[str, ...] = ()
    # How `save` writes it into its run (holding the scored targets and every ranking's ranks,
    # which the JSON leaves out); None once saved, and for data evaluated without a run.
    unsaved: Callable[[EvalResult, bool], EvalResult] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Every field, for every task; a section that does not apply (None) is left out."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("notes", "unsaved")}
        return {k: copy.deepcopy(v) for k, v in shown.items() if v is not None}

    def save(self, *, force: bool = False) -> EvalResult:
        """Write this result into its run as eval/<name>/<split>.json (+ .csv and per-target
        ranks for next-item results), merged with an earlier result of the same protocol;
        another protocol under the name is refused unless `force`. Returns the saved result."""
        if self.unsaved is None:
            raise RunDirError("this result has no run to be saved in (saved already, or data evaluated alone)")
        saved = self.unsaved(dataclasses.replace(self, unsaved=None), force)
        return dataclasses.replace(saved, unsaved=None)

    def table(self) -> Any:
        """The headline numbers as a Polars table: one row per model and baseline."""
        import polars as pl

        names = [*([self.model] if self.model and self.metrics else []), *self.baselines]
        return pl.DataFrame([{"name": n, **_row(self, n)} for n in names])


@dataclass(frozen=True)
class _Targets:
    """The scored targets of a split: which of all its targets are kept (`keep`, by protocol
    and --target-events) and, for those, their sequence, prefix length and item."""

    seqs: Sequences
    keep: np.ndarray
    seq: np.ndarray
    prefix_len: np.ndarray
    item: np.ndarray
    types: tuple[str, ...] | None
    # The type of each kept target's event (index into `types`), when the data has types.
    kinds: np.ndarray | None


def seed_column(model: str, seed: int) -> str:
    """The ranks column of one further seed's model."""
    return f"{model}@seed{seed}"


def seed_columns(result: dict[str, Any]) -> list[str]:
    """The ranks columns of a stored result's further seeds (none for one seed)."""
    seeds = (result.get("seeds") or {}).get("seeds", [])
    return [seed_column(result["model"], s) for s in seeds[1:]]


def _row(result: EvalResult, name: str) -> dict[str, float]:
    return result.metrics if name == result.model and result.metrics is not None else result.baselines[name]
