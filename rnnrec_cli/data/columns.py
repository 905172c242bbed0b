"""Which input columns are the user, session, item, time, event and value: mapped by option or
recognised by name, renamed to the canonical schema, and times parsed and checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import polars as pl

from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.errors import DataError

# Column names recognised without flags, compared lower-cased without '_' and '-'.
_GUESSES: dict[str, tuple[str, ...]] = {
    "item_col": ("itemid", "item", "movieid", "aid", "productid", "asin", "articleid", "sku"),
    "time_col": ("timestamp", "time", "ts", "datetime", "eventtime", "unixreviewtime", "date"),
    "user_col": ("userid", "user", "visitorid", "reviewerid", "customerid", "clientid"),
    "session_col": ("sessionid", "session"),
    "event_col": ("eventtype", "event", "type", "action"),
    "value_col": ("rating", "value", "score"),
    "split_col": ("split", "set", "fold"),
}
COLUMN_FLAGS = {
    "item_col": "--item-col",
    "time_col": "--time-col",
    "user_col": "--user-col",
    "session_col": "--session-col",
    "event_col": "--event-col",
    "value_col": "--value-col",
    "split_col": "--split-col",
}
_CANON = {
    "user_col": "user",
    "session_col": "session",
    "item_col": "item",
    "time_col": "ts",
    "event_col": "event",
    "value_col": "value",
    "split_col": "_split",
    "time_offset_col": "_offset",
}
# --split-col none: no split column, even one with a recognised name.
NO_COLUMN = "none"
# Microseconds per unit of a numeric time column.
MICROSECONDS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}


def resolve_columns(
    cfg: PrepareConfig, names: Sequence[str], source: str, time_optional: bool = False
) -> PrepareConfig:
    """Fill unset column options from well-known names; fail naming the flag when impossible.

    With `time_optional` (predict: the input is already in order), a missing time column is
    allowed and left None."""
    twice = sorted({n.rsplit("_duplicated_", 1)[0] for n in names if "_duplicated_" in n} & set(names))
    headerless = _headerless_fix(names, cfg, source)
    if headerless and (twice or not _columns_present(cfg, names)):
        raise DataError(headerless)
    if twice:
        raise DataError(
            f"{source} has more than one column named {twice[0]!r}; rename them so each name is unique "
            "(rnnrec will not guess which one you mean)"
        )
    normalized = {n.lower().replace("_", "").replace("-", ""): n for n in names}
    if time_optional and cfg.order_col is not None and cfg.order_col not in names:
        cfg = dataclasses.replace(cfg, order_col=None, time_col=None)
    if cfg.order_col is not None:
        if cfg.order_col not in names:
            raise DataError(
                f"column {cfg.order_col!r} not in {source} (found: {', '.join(names)}). Pass --order-col with one "
                "of those."
            )
        # Positions are read as microseconds: they order events and never exceed a session gap.
        cfg = dataclasses.replace(cfg, time_col=cfg.order_col, time_unit="us", time_offset_col=None)
    if time_optional and cfg.time_col is not None and cfg.time_col not in names:
        cfg = dataclasses.replace(cfg, time_col=None, time_offset_col=None)
    updates: dict[str, Any] = {}
    if cfg.time_offset_col is not None and cfg.time_offset_col not in names:
        raise DataError(
            f"column {cfg.time_offset_col!r} not in {source} (found: {', '.join(names)}). "
            "Pass --time-offset-col with one of those."
        )
    missing = [
        key
        for key in _GUESSES
        if getattr(cfg, key) not in (None, NO_COLUMN if key == "split_col" else None) and getattr(cfg, key) not in names
    ]
    if len(missing) == 1:
        raise DataError(
            f"column {getattr(cfg, missing[0])!r} not in {source} (found: {', '.join(names)}). "
            f"Pass {COLUMN_FLAGS[missing[0]]} with one of those."
        )
    if missing:
        raise DataError(
            f"columns {', '.join(repr(getattr(cfg, k)) for k in missing)} not in {source} "
            f"(found: {', '.join(names)}). Pass {', '.join(COLUMN_FLAGS[k] for k in missing)} to map them."
        )
    for key, candidates in _GUESSES.items():
        if getattr(cfg, key) is not None:
            continue
        taken = set(updates.values()) | {getattr(cfg, k) for k in _GUESSES}
        match = next((normalized[c] for c in candidates if c in normalized), None)
        if match is not None and match not in taken:
            updates[key] = match
    cfg = dataclasses.replace(cfg, **updates)
    for key in ("item_col",) if time_optional else ("item_col", "time_col"):
        if getattr(cfg, key) is None:
            raise DataError(
                headerless
                or f"no {key.removesuffix('_col')} column found in {source} "
                f"(found: {', '.join(names)}). Pass {COLUMN_FLAGS[key]}."
            )
    if cfg.session_col is None and cfg.user_col is None:
        raise DataError(
            headerless
            or f"{source} has no session or user column (found: {', '.join(names)}). Pass --session-col or --user-col."
        )
    return cfg


# The column options of a run, in the order a header-less file most often has them.
_MAPPED = ("session_col", "user_col", "item_col", "time_col", "event_col", "value_col")


def _columns_present(cfg: PrepareConfig, names: Sequence[str]) -> bool:
    """Whether every column named by an option is among `names`."""
    return all(getattr(cfg, key) in (None, *names) for key in _MAPPED)


def _headerless_fix(names: Sequence[str], cfg: PrepareConfig, source: str) -> str:
    """The error for a file read with a header that has none: its first data row became the
    column names (a number or date among them gives it away). '' when the names look like a header."""
    if not cfg.header or not any(_is_value(n.rsplit("_duplicated_", 1)[0]) for n in names):
        return ""
    wanted = [getattr(cfg, key) for key in _MAPPED if getattr(cfg, key) is not None]
    missing = [name for name in wanted if name not in names]
    what = f"columns {', '.join(map(repr, missing))} not in {source}: it" if missing else source
    example = ",".join(wanted or ("user_id", "item_id", "timestamp"))
    first = ", ".join(n.rsplit("_duplicated_", 1)[0] for n in names)
    return (
        f"{what} has no header row (its first line reads {first}); add a header naming the columns, or pass "
        f"--no-header --columns {example} (in the order of its columns)"
    )


def _is_value(text: str) -> bool:
    """A number, a date or an id like 1st: a value, not a column name."""
    try:
        float(text)
    except ValueError:
        return text[:1].isdigit()
    return True


def canonicalize(
    lf: pl.LazyFrame, cfg: PrepareConfig, source: str, time_optional: bool = False
) -> tuple[pl.LazyFrame, PrepareConfig]:
    """Raw columns -> canonical columns plus `_row` (row index); resolves columns and time unit.

    Without a time column (allowed by `time_optional`), rows are in order: `ts` counts rows in
    microseconds, so order holds and no inactivity gap ever splits a sequence."""
    schema = lf.collect_schema()
    cfg = resolve_columns(cfg, schema.names(), source, time_optional)
    for key in ("user_col", "session_col", "item_col", "event_col", "time_col"):
        name = getattr(cfg, key)
        if name is not None and schema[name].is_nested():
            raise DataError(
                f"column {name!r} of {source} holds {schema[name]} values; ids, event types and times must be "
                "plain values (explode or flatten the column first)"
            )
    selected = [
        pl.col(getattr(cfg, key)).alias(canon)
        for key, canon in _CANON.items()
        if getattr(cfg, key) is not None and not (key == "split_col" and cfg.split_col == NO_COLUMN)
    ]
    lf = lf.select(selected).with_row_index("_row")
    if cfg.time_col is None:
        return lf.with_columns(ts=pl.from_epoch(pl.col("_row").cast(pl.Int64), time_unit="us")), cfg
    ts_dtype = schema[cfg.time_col]
    if cfg.time_unit == "auto" and (ts_dtype.is_integer() or ts_dtype.is_float()):
        cfg = dataclasses.replace(cfg, time_unit=_guess_units(lf, cfg, source))  # type: ignore[arg-type]
    ts = _time_expr(ts_dtype, cfg, source)
    if cfg.time_offset_col is not None:
        per_unit = MICROSECONDS[cfg.time_offset_unit]
        offset = pl.duration(microseconds=(pl.col("_offset").cast(pl.Float64) * per_unit).cast(pl.Int64))
        ts = ts + offset
    # Raw time text is kept until parsing is checked, so an error can quote it.
    raw = {"_ts_raw": pl.col("ts")} if ts_dtype == pl.String else {}
    lf = lf.with_columns(**raw, ts=ts)
    return (lf.drop("_offset") if cfg.time_offset_col is not None else lf), cfg


def _time_expr(dtype: pl.DataType, cfg: PrepareConfig, source: str) -> pl.Expr:
    col = pl.col("ts")
    if dtype.is_integer() or dtype.is_float():
        scale = MICROSECONDS[cfg.time_unit]
        return pl.from_epoch((col.cast(pl.Float64) * scale).cast(pl.Int64), time_unit="us")
    if dtype == pl.String:
        return _parse_time_strings(col)
    if isinstance(dtype, pl.Datetime):
        out = col.cast(pl.Datetime("us", dtype.time_zone))
        return out.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else out
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    raise DataError(f"time column {cfg.time_col!r} in {source} has unsupported type {dtype}")


_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _parse_time_strings(col: pl.Expr) -> pl.Expr:
    """ISO-8601 strings, with or without an offset or 'Z', row by row (formats may mix).

    Offsets are converted to UTC; times without one are taken as UTC.
    """
    text = col.str.strip_chars().str.replace(r"Z$", "+00:00")
    aware = [
        text.str.to_datetime(f + "%:z", time_unit="us", strict=False)
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
        for f in _ISO_FORMATS[:4]
    ]
    naive = [text.str.to_datetime(f, time_unit="us", strict=False) for f in _ISO_FORMATS]
    return pl.coalesce(*aware, *naive)


def _guess_units(lf: pl.LazyFrame, cfg: PrepareConfig, source: str) -> str:
    """The unit of numeric times, from their magnitude; the smallest and the largest must agree,
    else rows mix units (or one row is far off) and guessing would put some in the wrong century."""
    size = pl.col("ts").cast(pl.Float64).abs()
    nonzero = size > 0
    row = lf.select(
        hi=size.max(),
        hi_row=pl.col("_row").get(size.arg_max()),
        lo=size.filter(nonzero).min(),
        lo_row=pl.col("_row").filter(nonzero).get(size.filter(nonzero).arg_min()),
    ).collect().row(0, named=True)  # fmt: skip
    hi, lo = row["hi"] or 0.0, row["lo"] or 0.0
    unit = _guess_unit(hi)
    if lo and _guess_unit(lo) != unit:
        raise DataError(
            f"the times in column {cfg.time_col!r} of {source} mix units: {lo:.0f} (data row {row['lo_row'] + 1}) "
            f"reads as {_UNIT_NAMES[_guess_unit(lo)]} but {hi:.0f} (data row {row['hi_row'] + 1}) as "
            f"{_UNIT_NAMES[unit]}. Fix the rows in the other unit, or pass --time-unit to say which one all rows use"
        )
    return unit


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _guess_unit(magnitude: float) -> str:
    # Unix seconds stay below 1e11 until the year 5138; ms, us and ns are 1e3 apart.
    if magnitude >= 1e17:
        return "ns"
    if magnitude >= 1e14:
        return "us"
    if magnitude >= 1e11:
        return "ms"
    return "s"


def check_times(df: pl.DataFrame, cfg: PrepareConfig) -> pl.DataFrame:
    """Fail on the first timestamp that is present but could not be parsed, quoting it.

    Returns the frame without the raw time column.
    """
    if "_ts_raw" not in df.columns:
        return df
    bad = df.filter(pl.col("ts").is_null() & pl.col("_ts_raw").is_not_null()).head(1)
    if bad.height:
        row = bad.row(0, named=True)
        raise DataError(
            f"cannot parse time {row['_ts_raw']!r} in column {cfg.time_col!r} (data row {row['_row'] + 1}); "
            "use unix seconds/ms/us or ISO-8601 like 2024-05-01T12:00:00, or pass --time-unit"
        )
    return df.drop("_ts_raw")
