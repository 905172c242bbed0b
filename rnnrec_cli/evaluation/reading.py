"""Reading stored evaluations back: result files, per-target ranks and the command that made them."""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np

from rnnrec_cli.errors import ConfigError, RunDirError, reading
from rnnrec_cli.evaluation.results import (
    DEFAULT_EVAL,
    PROTOCOL_FLAGS,
    _shown,
    eval_name,
    evaluations,
    protocol_options,
    ranks_path,
    result_options,
    result_path,
    seed_columns,
)
from rnnrec_cli.evaluation.schema import check_result
from rnnrec_cli.files import load_json
from rnnrec_cli.options import EvalOptions
from rnnrec_cli.rundir import RunDir

_TARGETS = ("seq", "position", "item")


def option_flags(options: dict[str, Any]) -> list[str]:
    """The evaluate flags that give these protocol options (the defaults need none)."""
    d = protocol_options(EvalOptions())
    flags: list[str] = []
    for key, flag in PROTOCOL_FLAGS.items():
        value = options.get(key, d[key])
        if value == d[key]:
            continue
        flags += [flag] if isinstance(value, bool) else [flag, _shown(value)]
    return flags


def evaluate_command(run: RunDir, split: str, name: str = DEFAULT_EVAL, options: dict[str, Any] | None = None) -> str:
    """The command that writes this evaluation's `split` again (named in every error about it)."""
    try:
        flags = option_flags(options or {})
        stored: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in flags_of(options)}
        derived = eval_name(EvalOptions(**stored))
    except (ConfigError, TypeError, ValueError, AttributeError):
        # Options a hand edit broke: name the evaluation, and let --force replace it.
        flags, derived = ["--force"], None
    if name != derived:
        flags += ["--name", name]
    return " ".join(["rnnrec evaluate", str(run.path), *(["--split", split] if split != "test" else []), *flags])


def flags_of(options: dict[str, Any] | None) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in (options or {}).items() if k in PROTOCOL_FLAGS]


def _missing(run: RunDir, split: str, name: str) -> RunDirError:
    """No such evaluation: which ones the run has, and how to make this one."""
    have = evaluations(run)
    listed = "; it has " + ", ".join(f"{n!r} ({'/'.join(s)})" for n, s in have.items()) if have else ""
    if name == DEFAULT_EVAL and not have:
        return RunDirError(f"{run.path} has no {split} evaluation; run `{evaluate_command(run, split)}` first")
    return RunDirError(f"{run.path} has no {split} result in evaluation {name!r}{listed}; pick one with --eval NAME")


def read_result(run: RunDir, split: str, name: str = DEFAULT_EVAL) -> dict[str, Any]:
    """eval/<name>/<split>.json as `evaluate` wrote it, checked (report and compare read it
    back): a damaged or hand-edited file is one error, never a wrong number on a page."""
    path = result_path(run, split, name)
    if not path.is_file():
        raise _missing(run, split, name)
    result = load_json(path, finite=False)
    try:
        options = result_options(result)
    except (TypeError, ValueError, AttributeError):
        options = {"ks": None}  # unreadable: the command says --force
    again = evaluate_command(run, split, name, options)

    def bad(what: str) -> NoReturn:
        raise RunDirError(f"{path}: {what}; the file was damaged or edited: run `{again}` again")

    if result.get("split") != split:
        bad(f"'split' is {result.get('split')!r}, not {split!r}")
    check_result(result, bad)
    if "options" in result:
        try:
            stored: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in flags_of(result["options"])}
            EvalOptions(**stored)
        except (ConfigError, TypeError, ValueError):
            bad("'options' are not evaluate's protocol options")
    return result


def read_ranks(run: RunDir, split: str, result: dict[str, Any], name: str = DEFAULT_EVAL) -> Any:
    """eval/<name>/<split>_ranks.parquet, checked against its result: one row per target, every
    scored name a column, every rank in [1, n_items] (or infinite: excluded as seen)."""
    import polars as pl

    path = ranks_path(run, split, name)
    again = evaluate_command(run, split, name, result_options(result))
    if result["task"] != "next-item":
        raise RunDirError(f"{run.path} ranks no items (its task is {result['task']}); only next-item runs have ranks")
    if not path.is_file():
        raise RunDirError(f"{run.path} has no {split} ranks ({path.name}); run `{again}` again")
    with reading(path, fix=f"run `{again}` again"):
        table = pl.read_parquet(path, glob=False)
    names = ([result["model"]] if result.get("model") else []) + list(result.get("baselines", {}))
    names += seed_columns(result)

    def bad(what: str) -> NoReturn:
        raise RunDirError(f"{path}: {what}; the file was damaged or edited: run `{again}` again")

    if table.height != result["n_events"]:
        bad(f"{table.height:,} rows for {result['n_events']:,} targets")
    for column in (*_TARGETS, *names):
        if column not in table.columns:
            bad(f"no column {column!r}")
    for column in _TARGETS:
        if not table[column].dtype.is_integer() or table[column].null_count():
            bad(f"column {column!r} is not whole numbers")
    for name in names:
        col = table[name]
        if not col.dtype.is_numeric() or col.null_count():
            bad(f"the ranks of {name!r} are not numbers")
        ranks = col.cast(pl.Float64).to_numpy()
        finite = ranks[np.isfinite(ranks)]
        if (
            np.isnan(ranks).any()
            or (ranks == -np.inf).any()
            or (finite < 1).any()
            or (finite > result["n_items"]).any()
        ):
            bad(f"the ranks of {name!r} are not all in [1, {result['n_items']:,}]")
    return table
