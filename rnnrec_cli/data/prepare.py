"""`prepare`: a raw event log -> cleaned, sessionized, split, item-indexed Parquet + manifest.json.

Out of core: events are hashed by sequence key into Parquet parts, each cleaned in memory on
its own (transforms.py); the global steps read all parts in streaming queries. Reading the raw
files is ingest.py's job; reading the result is sequences.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from rnnrec_cli import __version__
from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.data.columns import COLUMN_FLAGS, NO_COLUMN
from rnnrec_cli.data.features import ITEM_FEATURES, build_item_features
from rnnrec_cli.data.ingest import (
    materialized_inputs,
    read_failure,
    scan_events,
    typed_header,
)
from rnnrec_cli.data.presets import PRESETS
from rnnrec_cli.data.sequences import ITEMS, MANIFEST, SPLITS, split_targets
from rnnrec_cli.data.splits import auto_buckets, build_splits
from rnnrec_cli.data.transforms import (
    split_stats,
)
from rnnrec_cli.errors import DataError, RunDirError, escape
from rnnrec_cli.files import FORMAT_VERSION, exists, refuse_to_replace, replace_dir, save_json, temp_dir
from rnnrec_cli.rules import AS_GIVEN, MIN_SEQUENCES, MIN_TARGETS, SPLIT_VALUES
from rnnrec_cli.validation import to_dict


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_warnings(manifest: dict[str, Any]) -> list[str]:
    """Rows dropped for a missing id or time (empty fields, short rows), and a split file that is
    the training file itself."""
    out = []
    stages = manifest.get("stages", {})
    read, kept = stages.get("events_read", 0), stages.get("after_dropping_nulls", 0)
    if read and kept < read:
        out.append(
            f"{read - kept:,} of {read:,} rows ({(read - kept) / read:.1%}) lack an id or a time (empty fields, short "
            "rows) and were dropped; check the input if that is unexpected"
        )
    train = {i["sha256"] for i in manifest.get("inputs", []) if i.get("role") == "train"}
    for given in manifest.get("inputs", []):
        if given.get("role") != "train" and given.get("sha256") in train:
            out.append(
                f"the {given['role']} file {given['path']} has the same content as a training input: its metrics "
                "measure memory, not prediction"
            )
    return out


def split_warnings(manifest: dict[str, Any]) -> list[str]:
    """A warning for each evaluated split too small for its metrics to mean much (an empty
    validation split is a choice, not a warning)."""
    out = []
    for name in ("valid", "test"):
        st = manifest.get("splits", {}).get(name)
        if not st or not st["events"]:
            continue
        targets = split_targets(st)
        if targets < MIN_TARGETS or st["sequences"] < MIN_SEQUENCES:
            out.append(
                f"the {name} split holds only {targets:,} target events in {st['sequences']:,} sequences: its "
                f"metrics are mostly noise (aim for at least {MIN_TARGETS} targets in {MIN_SEQUENCES} sequences; "
                "use a longer --split/--valid period, e.g. time:0.2)"
            )
    return out


def prepare(
    inputs: Sequence[str],
    out_dir: Path,
    cfg: PrepareConfig,
    *,
    force: bool = False,
    given: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Run the whole ETL and write the data directory atomically (temp dir, then rename);
    returns its manifest.

    `given` maps "test"/"valid" to the user's own split files, used instead of the time split.
    """
    refuse_to_replace(out_dir, force)
    if exists(out_dir) and not out_dir.is_dir():
        raise RunDirError(f"{out_dir} exists and is not a directory; give another -o")
    given_files = {k: v for k, v in (given or {}).items() if v}
    tmp = temp_dir(out_dir)
    try:
        with ExitStack() as stack:
            paths = stack.enter_context(materialized_inputs(inputs, cfg.encoding))
            given_paths = {k: stack.enter_context(materialized_inputs(v, cfg.encoding)) for k, v in given_files.items()}
            asked = cfg
            lf, cfg = scan_events(paths, cfg)
            typed = typed_header(paths[0], asked)
            given_lfs = {k: _scan_given(v, asked, cfg) for k, v in given_paths.items()}
            lf, cfg, by_column = _split_column(lf, cfg, asked, given_lfs, _input_name(paths[0]))
            given_lfs.update(by_column)
            buckets = cfg.buckets or auto_buckets(paths)
            try:
                items, stages = build_splits(
                    lf, cfg, given_lfs, out=tmp, buckets=buckets, given_by=_given_by(cfg, by_column),
                    detect_order=asked.time_unit == "auto",
                )  # fmt: skip
            except pl.exceptions.PolarsError as exc:
                raise read_failure(exc, paths, writing=out_dir) from None
            roles = [("train", paths)] + [(k, v) for k, v in given_paths.items()]
            input_info = [
                {
                    "role": role,
                    "path": _input_name(q),
                    "bytes": q.stat().st_size,
                    "sha256": _sha256(q),
                }
                for role, resolved in roles
                for q in resolved
            ]
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "rnnrec_version": __version__,
            "polars_version": pl.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": input_info,
            "config": to_dict(cfg),
            "recognised": describe_inputs(asked, cfg, ordered="order_note" in stages, typed=typed),
            "buckets": buckets,
            "stages": stages,
            "splits": {name: split_stats(pl.scan_parquet(tmp / f"{name}.parquet", glob=False)) for name in SPLITS},
            "n_items": items.height,
            "warnings": [
                *(
                    [
                        "leave-one-out ignores the global timeline: test targets can precede training events of "
                        "other users, so results are optimistic next to a time split (use it only to compare with "
                        "papers that report it); evaluate scores only the last event of each sequence"
                    ]
                    if cfg.leave_one_out
                    else []
                ),
            ],
        }
        manifest["warnings"] += split_warnings(manifest) + input_warnings(manifest)
        if cfg.item_features:
            table, spec = build_item_features(
                Path(cfg.item_features), cfg.item_key or "item_id", items, categorical=cfg.item_categorical,
                numeric=cfg.item_numeric, vector=cfg.item_vector, sep=cfg.item_sep,
            )  # fmt: skip
            table.write_parquet(tmp / ITEM_FEATURES)
            manifest["item_features"] = spec
        items.write_parquet(tmp / ITEMS)
        save_json(tmp / MANIFEST, manifest)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _given_by(cfg: PrepareConfig, by_column: dict[str, pl.LazyFrame]) -> str:
    return f"split column {cfg.split_col!r}" if by_column else "given file"


def _split_column(
    lf: pl.LazyFrame, cfg: PrepareConfig, asked: PrepareConfig, given: dict[str, pl.LazyFrame], source: str
) -> tuple[pl.LazyFrame, PrepareConfig, dict[str, pl.LazyFrame]]:
    """The training events and the given valid/test events of a log with a split column (asked
    for with --split-col, or recognised by its name). The split is then used as given, like
    --test/--valid files: AS_GIVEN replaces the defaults the user did not set."""
    if cfg.split_col in (None, NO_COLUMN):
        return lf, cfg, {}
    explicit = asked.split_col is not None
    other = "--test" if "test" in given else ("--split" if cfg.split != "auto" else None)
    if other is not None:
        if explicit:
            raise DataError(f"--split-col {cfg.split_col} and {other} both give the test split; pass one of them")
        # A recognised column yields to a split the user asked for; it is dropped, not read.
        return lf.drop("_split"), dataclasses.replace(cfg, split_col=NO_COLUMN), {}
    names = dict(zip(SPLITS, cfg.split_values, strict=True)) if cfg.split_values else None
    values = lf.select(pl.col("_split").cast(pl.String).unique()).collect(engine="streaming")["_split"].to_list()
    role = {}
    for v in values:
        text = None if v is None else v.strip() if names else v.strip().lower()
        match = [s for s in SPLITS if (text == names[s] if names else text in SPLIT_VALUES[s])]
        if not match:
            row = lf.select(pl.col("_row").filter(pl.col("_split").cast(pl.String).eq_missing(v)).first()).collect()
            known = ", ".join(cfg.split_values) if names else "train, valid or test"
            raise DataError(
                f"the split column {cfg.split_col!r} of {source} holds {v!r} (data row {row.item() + 1}), not {known}; "
                "name your values with --split-values TRAIN,VALID,TEST, or pass --split-col none to ignore the column"
            )
        role[v] = match[0]
    parts = {s: [v for v, r in role.items() if r == s] for s in SPLITS}
    if not parts["test"]:
        raise DataError(
            f"the split column {cfg.split_col!r} of {source} marks no row as test (values: "
            f"{', '.join(map(str, values))}); name the test value with --split-values TRAIN,VALID,TEST"
        )

    def rows(split: str) -> pl.LazyFrame:
        return lf.filter(pl.col("_split").cast(pl.String).is_in(parts[split])).drop("_split")

    defaults = PrepareConfig()
    preset = PRESETS.get(asked.preset or "", {})
    as_given = {k: v for k, v in AS_GIVEN.items() if getattr(asked, k) == getattr(defaults, k) and k not in preset}
    out = {"test": rows("test")} | ({"valid": rows("valid")} if parts["valid"] else {})
    return rows("train"), dataclasses.replace(cfg, **as_given), out


def _scan_given(paths: Sequence[Path], asked: PrepareConfig, cfg: PrepareConfig) -> pl.LazyFrame:
    """A given split file, read with the training file's columns; a time unit that was guessed
    is guessed (and checked) for this file too, and must agree."""
    lf, own = scan_events(paths, dataclasses.replace(cfg, time_unit=asked.time_unit))
    if own.time_unit != cfg.time_unit:
        raise DataError(
            f"the times of {', '.join(map(str, paths))} read as {own.time_unit} but those of the training "
            f"events as {cfg.time_unit}; give every file in one unit, or pass --time-unit"
        )
    return lf


def _input_name(path: Path) -> str:
    """How the manifest names an input: '-' for stdin, the original file for a transcoded copy."""
    if path.name.startswith("rnnrec-stdin-"):
        return "-"
    return escape(str(path.resolve()), limit=10_000)


RECBOLE_NOTE = "RecBole typed header (name:type): type suffixes dropped"


def describe_inputs(
    asked: PrepareConfig, cfg: PrepareConfig, ordered: bool = False, typed: bool = False
) -> dict[str, Any]:
    """How each column and the time unit were decided: by an option, by the preset, or guessed
    (a recognised column name; the unit from the magnitude of the times); with `typed`, that the
    header was RecBole's `name:type` one, read without its types."""
    preset = PRESETS.get(asked.preset or "", {})

    def how(key: str) -> str:
        if getattr(asked, key) in (None, "auto"):
            return "guessed from the magnitude" if key == "time_unit" else "recognised name"
        return "preset" if preset.get(key) == getattr(asked, key) else "option"

    columns = {
        key.removesuffix("_col"): {"column": getattr(cfg, key), "how": how(key)}
        for key in COLUMN_FLAGS
        if getattr(cfg, key) is not None
    }
    if cfg.session_col is not None:
        sequences = "given sessions (session column)"
    elif cfg.session_gap is None:
        sequences = "each user's whole history"
    else:
        sequences = f"a user's events cut where {cfg.session_gap / 60:g} minutes pass without an event"
    unit = {"unit": cfg.time_unit, "how": how("time_unit")}
    if cfg.order_col is not None or ordered:
        if cfg.session_col is None:
            sequences = "each user's events, in the order column's order"
        how_order = "option" if cfg.order_col is not None else "values restart at 0 in every sequence"
        columns["order"] = {"column": columns.pop("time")["column"], "how": how_order}
        unit = {"unit": "order", "how": how_order}
    header = {"header": RECBOLE_NOTE} if typed else {}
    return {"columns": columns, "time_unit": unit, "sequences": sequences, **header}
