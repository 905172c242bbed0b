"""What a stored evaluation result may hold: every field `report`, `compare` and a re-run of
`evaluate` read back, with its type and range (rates in [0, 1], counts whole and non-negative,
intervals ordered, names that exist), so a hand-edited file is one error naming the field."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from rnnrec_cli.evaluation.results import EvalResult

# Rates: shares of targets or of the catalogue, so always in [0, 1].
RATE = re.compile(r"^(recall|mrr|ndcg|coverage|gini|pop|tail)@[1-9][0-9]*$")
# Paired differences are differences of rates at these cut-offs.
_PAIRED = re.compile(r"^(recall|mrr|ndcg)@[1-9][0-9]*$")
# Larger counts are not exact as floats (numpy, polars), and no split holds that many targets.
MAX_COUNT = 2**53
TASKS = ("next-item", "value", "event-type")
# What `EvalResult.to_json` writes; anything else was added by hand.
FIELDS = frozenset(f.name for f in dataclasses.fields(EvalResult)) - {"notes", "unsaved"}

Bad = Callable[[str], NoReturn]


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def count(value: Any) -> bool:
    """A whole, non-negative number of things (not a float, not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _rate(value: Any, nan: bool = False) -> bool:
    return number(value) and (0 <= value <= 1 or (nan and math.isnan(value)))


def _finite(value: Any, nan: bool = False) -> bool:
    return number(value) and (math.isfinite(value) or (nan and math.isnan(value)))


def _object(value: Any, what: str, bad: Bad, *, empty: bool = True) -> dict[str, Any]:
    if not isinstance(value, dict) or (not empty and not value):
        bad(f"{what} is {_shown(value)}, not {'an' if empty else 'a non-empty'} object")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _per_type(value: Any, where: str, bad: Bad) -> None:
    """Event-type precision and recall per type: {type: {support, precision, recall}}."""
    for kind, row in _object(value, where, bad).items():
        row = _object(row, f"{where} [{kind}]", bad)
        if not count(row.get("support")) or not all(_rate(row.get(k)) for k in ("precision", "recall")):
            bad(f"{where} [{kind}] is not a support count with a precision and recall in [0, 1]")


_KINDS = {"accuracy": "a share in [0, 1]", "n": "a count", "support": "a count", "rmse": "a non-negative number",
          "mae": "a non-negative number"}  # fmt: skip


def metric_table(table: Any, where: str, bad: Bad) -> None:
    """One model's or baseline's metrics: rates in [0, 1], `n` a count, errors non-negative (NaN:
    nothing to measure), `per_type` event-type rows, anything else a finite number."""
    for key, value in _object(table, where, bad).items():
        if key == "per_type":
            _per_type(value, f"{where} [per_type]", bad)
            continue
        if RATE.match(key):
            ok = _rate(value)
        elif key == "accuracy":
            ok = _rate(value, nan=True)
        elif key in ("n", "support"):
            ok = count(value)
        elif key in ("rmse", "mae"):
            ok = _finite(value, nan=True) and not value < 0
        else:
            ok = _finite(value, nan=True)
        if not ok:
            kind = "a share in [0, 1]" if RATE.match(key) else _KINDS.get(key, "a finite number")
            bad(f"{where} {key!r} is {_shown(value)}, not {kind}")


def _interval(value: Any, low: float, high: float) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(number(b) and low <= b <= high for b in value)
        and value[0] <= value[1]
    )


def check_result(result: dict[str, Any], bad: Bad) -> None:
    """Every field of a stored result that is read back, or `bad(what)` naming the first that
    `evaluate` could not have written."""
    unknown = sorted(set(result) - FIELDS)
    if unknown:
        bad(f"unknown field {unknown[0]!r} (an evaluation holds {', '.join(sorted(FIELDS))})")
    for key in ("split", "task", "ties", "name"):
        if key in result and not isinstance(result[key], str):
            bad(f"{key!r} is {_shown(result[key])}, not text")
    if result.get("task") not in TASKS:
        bad(f"'task' is {_shown(result.get('task'))}, not next-item, value or event-type")
    for key in ("n_events", "n_sequences", "n_items"):
        if not count(result.get(key)) or result[key] < 1:
            bad(f"{key!r} is {_shown(result.get(key))}, not a positive count")
    model = result.get("model")
    if model is not None and not isinstance(model, str):
        bad(f"'model' is {_shown(model)}, not a name")
    if (model is None) != (result.get("metrics") is None):
        bad("'model' and its 'metrics' must be given together")
    tables = {**({model: result["metrics"]} if model else {})}
    for name, table in _object(result.get("baselines", {}), "'baselines'", bad).items():
        tables[name] = table
    for name, table in tables.items():
        metric_table(table, f"{name}'s metrics", bad)
    if not isinstance(result.get("kept", []), list) or not all(isinstance(k, str) for k in result.get("kept", [])):
        bad("'kept' is not a list of baseline names")
    for key in ("protocol", "options"):
        _object(result.get(key, {}), repr(key), bad)
    _check_ci(result.get("ci", {}), tables, bad)
    _check_paired(result.get("paired"), tables, bad)
    _check_breakdown(result.get("breakdown", {}), tables, bad)
    _check_heads(result, bad)
    _check_provenance(result, bad)
    _check_seeds(result.get("seeds"), result.get("metrics"), bad)


def _check_seeds(seeds: Any, metrics: Any, bad: Bad) -> None:
    """Per-seed metrics of a run trained with several seeds: distinct seeds, the run's own
    first (its numbers the model's), one rate per seed for each metric, a mean and an sd."""
    if seeds is None:
        return
    seeds = _object(seeds, "'seeds'", bad)
    listed, missing = seeds.get("seeds"), seeds.get("missing", [])
    for key, value in (("seeds", listed), ("missing", missing)):
        if not isinstance(value, list) or not all(count(s) for s in value):
            bad(f"'seeds' [{key}] is {_shown(value)}, not a list of seeds")
    if not listed or len(set(listed) | set(missing)) != len(listed) + len(missing):
        bad(f"'seeds' [seeds] is {_shown(listed)}, not distinct seeds")
    per_seed = _object(seeds.get("metrics"), "'seeds' [metrics]", bad, empty=False)
    mean, sd = (_object(seeds.get(k), f"'seeds' [{k}]", bad) for k in ("mean", "sd"))
    if not set(per_seed) == set(mean) == set(sd):
        bad("'seeds' [metrics], [mean] and [sd] do not hold the same metrics")
    for key, values in per_seed.items():
        if not _PAIRED.match(key) or not isinstance(values, list) or len(values) != len(listed):
            bad(f"'seeds' [metrics] [{key}] is not recall@K, mrr@K or ndcg@K with one value per seed")
        if not all(_rate(v) for v in values) or not _rate(mean[key]):
            bad(f"'seeds' [metrics] [{key}] holds {_shown(values)}, not shares in [0, 1]")
        if sd[key] is None if len(listed) > 1 else sd[key] is not None:
            bad(f"'seeds' [sd] [{key}] is {_shown(sd[key])}: a spread needs two seeds or more, and only then")
        if sd[key] is not None and not (_finite(sd[key]) and sd[key] >= 0):
            bad(f"'seeds' [sd] [{key}] is {_shown(sd[key])}, not a non-negative number")
        if isinstance(metrics, dict) and metrics.get(key) != values[0]:
            bad(f"'seeds' [metrics] [{key}] does not start with the model's own {key}")


def _check_ci(ci: Any, tables: dict[str, Any], bad: Bad) -> None:
    """{name: {metric: [low, high]}}, for names that were scored; rates' bounds in [0, 1]."""
    for name, per_metric in _object(ci, "'ci'", bad).items():
        if name not in tables:
            bad(f"'ci' [{name}] is not a scored model or baseline")
        for key, bounds in _object(per_metric, f"'ci' [{name}]", bad).items():
            low, high = (0.0, 1.0) if RATE.match(key) else (-math.inf, math.inf)
            if not _interval(bounds, low, high) or not all(map(math.isfinite, bounds)):
                bad(f"'ci' [{name}] [{key}] is {_shown(bounds)}, not a [low, high] interval in [{low}, {high}]")


def _check_paired(paired: Any, tables: dict[str, Any], bad: Bad) -> None:
    """The model minus its best baseline: the same metrics in diff, ci and p; differences of
    rates in [-1, 1], p-values in [0, 1] (NaN: not tested)."""
    if paired is None:
        return
    paired = _object(paired, "'paired'", bad)
    if not isinstance(paired.get("against"), str) or paired["against"] not in tables:
        bad(f"'paired' [against] is {_shown(paired.get('against'))}, not a scored baseline")
    if "chosen_by" in paired and not isinstance(paired["chosen_by"], str):
        bad("'paired' [chosen_by] is not a metric name")
    diff, ci, p = (_object(paired.get(k), f"'paired' [{k}]", bad) for k in ("diff", "ci", "p"))
    if not set(diff) == set(ci) == set(p):
        bad("'paired' [diff], [ci] and [p] do not hold the same metrics")
    for key in diff:
        if not _PAIRED.match(key):
            bad(f"'paired' [diff] [{key}] is not recall@K, mrr@K or ndcg@K")
        if not (_rate(abs(diff[key])) if number(diff[key]) else False):
            bad(f"'paired' [diff] [{key}] is {_shown(diff[key])}, not a difference in [-1, 1]")
        if not _interval(ci[key], -1.0, 1.0):
            bad(f"'paired' [ci] [{key}] is {_shown(ci[key])}, not a [low, high] interval in [-1, 1]")
        if not _rate(p[key], nan=True):
            bad(f"'paired' [p] [{key}] is {_shown(p[key])}, not a p-value in [0, 1]")


def _check_breakdown(breakdown: Any, tables: dict[str, Any], bad: Bad) -> None:
    """{kind: {name: {group: metrics}}}: groups of each scored name, each a count and rates."""
    for kind, per_name in _object(breakdown, "'breakdown'", bad).items():
        for name, groups in _object(per_name, f"'breakdown' [{kind}]", bad).items():
            if name not in tables:
                bad(f"'breakdown' [{kind}] [{name}] is not a scored model or baseline")
            where = f"'breakdown' [{kind}] [{name}]"
            for group, row in _object(groups, where, bad, empty=False).items():
                metric_table(_object(row, f"{where} [{group}]", bad, empty=False), f"{where} [{group}]", bad)


_HASH = re.compile(r"^[0-9a-f]{64}$")


def _check_provenance(result: dict[str, Any], bad: Bad) -> None:
    """What the result scored: a run id, the best checkpoint (epoch, SHA-256), the data's hash."""
    if result.get("provenance") is None:
        return
    prov = _object(result["provenance"], "'provenance'", bad)
    if not isinstance(prov.get("run_id"), str | None):
        bad(f"'provenance' [run_id] is {_shown(prov.get('run_id'))}, not a run id")
    checkpoint = _object(prov.get("checkpoint"), "'provenance' [checkpoint]", bad)
    if checkpoint.get("name") != "best":
        bad(f"'provenance' [checkpoint] [name] is {_shown(checkpoint.get('name'))}, not 'best'")
    epoch = checkpoint.get("epoch")
    if epoch is not None and not (count(epoch) and epoch >= 1):
        bad(f"'provenance' [checkpoint] [epoch] is {_shown(epoch)}, not an epoch (1, 2, ...)")
    for where, value in (("[checkpoint] [sha256]", checkpoint.get("sha256")),
                         ("[data_manifest_sha256]", prov.get("data_manifest_sha256"))):  # fmt: skip
        if value is not None and not (isinstance(value, str) and _HASH.match(value)):
            bad(f"'provenance' {where} is {_shown(value)}, not a SHA-256 in hex")


def _check_heads(result: dict[str, Any], bad: Bad) -> None:
    """The value and event-type heads' full results, and sampled metrics, when present."""
    if result.get("value") is not None:
        value = _object(result["value"], "'value'", bad)
        for name, table in _object(value.get("metrics"), "'value' [metrics]", bad, empty=False).items():
            metric_table(_object(table, f"'value' [metrics] [{name}]", bad, empty=False), f"'value' {name}'s", bad)
    if result.get("event_type") is not None:
        head = _object(result["event_type"], "'event_type'", bad)
        if "n" in head and not count(head["n"]):
            bad(f"'event_type' [n] is {_shown(head['n'])}, not a count")
        for name, acc in _object(head.get("accuracy"), "'event_type' [accuracy]", bad, empty=False).items():
            if not _rate(acc, nan=True):
                bad(f"'event_type' [accuracy] [{name}] is {_shown(acc)}, not a share in [0, 1]")
        if "per_type" in head:
            _per_type(head["per_type"], "'event_type' [per_type]", bad)
    if result.get("sampled") is not None:
        sampled = _object(result["sampled"], "'sampled'", bad)
        if not count(sampled.get("n_sampled")):
            bad(f"'sampled' [n_sampled] is {_shown(sampled.get('n_sampled'))}, not a count")
        for name, table in _object(sampled.get("metrics", {}), "'sampled' [metrics]", bad).items():
            metric_table(table, f"'sampled' {name}'s", bad)
