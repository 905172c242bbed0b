"""Polars ETL: raw event log -> cleaned, sessionized, split, item-indexed Parquet + manifest.json.

Every transform takes and returns a LazyFrame (or DataFrame where a loop needs materialised
counts); IO lives in `prepare()` and the readers at the bottom.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import gzip
import hashlib
import io
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rnnrec_cli import __version__
from rnnrec_cli.config import (
    AS_GIVEN,
    AUTO_SPLIT,
    MIN_SEQUENCES,
    MIN_TARGETS,
    TINY_TEST_TARGETS,
    Period,
    PrepareConfig,
    load_json,
    parse_split,
    save_json,
    to_dict,
)
from rnnrec_cli.errors import DataError, RunDirError
from rnnrec_cli.features import ITEM_FEATURES, build_item_features

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
ITEMS = "items.parquet"

PRESETS: dict[str, dict[str, Any]] = {
    # MovieLens ratings.csv: a user's whole rating history is one sequence (rating sittings are
    # an artefact of the site, not sessions); the last 10% of ratings in time form the test users.
    "movielens": {
        "format": "csv",
        # ratings.dat of ml-1m/ml-10m: 'UserID::MovieID::Rating::Timestamp' without a header.
        "columns": ("userId", "movieId", "rating", "timestamp"),
        "user_col": "userId",
        "item_col": "movieId",
        "time_col": "timestamp",
        "value_col": "rating",
        "time_unit": "s",
        "session_gap": None,
        "split": "time:0.1",
        "valid": "0.1",
    },
    # CIKM Cup 2016 train-item-views.csv: ';'-separated, eventdate (day) + timeframe (ms).
    "diginetica": {
        "format": "csv",
        "sep": ";",
        "session_col": "session_id",
        "item_col": "item_id",
        "time_col": "eventdate",
        "time_offset_col": "timeframe",
        "time_offset_unit": "ms",
    },
    # RetailRocket events.csv: timestamp (ms), visitorid, event, itemid, transactionid.
    "retailrocket": {
        "format": "csv",
        "sep": ",",
        "user_col": "visitorid",
        "item_col": "itemid",
        "time_col": "timestamp",
        "event_col": "event",
        "time_unit": "ms",
        "session_gap": 1800.0,
    },
    # RecSys Challenge 2015 clicks.dat / buys.dat: no header, ISO-8601 times.
    "yoochoose": {
        "format": "csv",
        "sep": ",",
        "header": False,
        "columns": ("session_id", "timestamp", "item_id", "category"),
        "session_col": "session_id",
        "item_col": "item_id",
        "time_col": "timestamp",
        "split": "time:1d",
        "valid": "1d",
    },
    # Amazon reviews (McAuley et al.): reviewerID, asin, overall, unixReviewTime; CSV or JSON lines.
    "amazon": {
        "user_col": "reviewerID",
        "item_col": "asin",
        "time_col": "unixReviewTime",
        "value_col": "overall",
        "time_unit": "s",
        "session_gap": None,
        "split": "time:0.1",
        "valid": "0.1",
    },
    # GRU4Rec's own format: tab-separated SessionId, ItemId, Time (unix seconds), written by the
    # published preprocessing scripts, so the data is used as given (see config.AS_GIVEN).
    "gru4rec": {
        "format": "csv",
        "sep": "\t",
        "session_col": "SessionId",
        "item_col": "ItemId",
        "time_col": "Time",
        "time_unit": "s",
        **AS_GIVEN,
    },
    # OTTO's nested JSONL: {"session": int, "events": [{"aid", "ts" (ms), "type"}]}.
    "otto": {
        "format": "otto",
        "session_col": "session",
        "item_col": "aid",
        "time_col": "ts",
        "event_col": "type",
        "time_unit": "ms",
    },
}

# Column names recognised without flags, compared lower-cased without '_' and '-'.
_GUESSES: dict[str, tuple[str, ...]] = {
    "item_col": ("itemid", "item", "movieid", "aid", "productid", "asin", "articleid", "sku"),
    "time_col": ("timestamp", "time", "ts", "datetime", "eventtime", "unixreviewtime", "date"),
    "user_col": ("userid", "user", "visitorid", "reviewerid", "customerid", "clientid"),
    "session_col": ("sessionid", "session"),
    "event_col": ("eventtype", "event", "type", "action"),
    "value_col": ("rating", "value", "score"),
}
_FLAGS = {
    "item_col": "--item-col",
    "time_col": "--time-col",
    "user_col": "--user-col",
    "session_col": "--session-col",
    "event_col": "--event-col",
    "value_col": "--value-col",
}
_CANON = {
    "user_col": "user",
    "session_col": "session",
    "item_col": "item",
    "time_col": "ts",
    "event_col": "event",
    "value_col": "value",
    "time_offset_col": "_offset",
}
_SEPARATORS = (",", "\t", ";", "|")


# ---------------------------------------------------------------------------- reading raw logs


_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def _compression(path: Path) -> str | None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP):
        return "gzip"
    if magic == _ZSTD:
        return "zstd"
    return None


def _head_text(path: Path, n_bytes: int = 65536) -> str:
    try:
        match _compression(path):
            case "gzip":
                with gzip.open(path, "rb") as f:
                    raw = f.read(n_bytes)
            case "zstd":
                raw = _zstd_head(path, n_bytes)
            case _:
                with open(path, "rb") as f:
                    raw = f.read(n_bytes)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return raw.decode("utf-8", errors="replace")


def _zstd_head(path: Path, n_bytes: int) -> bytes:
    # Polars decompresses zstd itself; for sniffing, read a small eager sample through it.
    try:
        df = pl.read_csv(
            path, has_header=False, n_rows=50, separator="\x1f", infer_schema=False, truncate_ragged_lines=True
        )
    except pl.exceptions.PolarsError as exc:
        raise OSError(str(exc).splitlines()[0]) from None
    return "\n".join(df.to_series(0).to_list()).encode()[:n_bytes]


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz").removesuffix(".zst").removesuffix(".zstd")
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def sniff_separator(path: Path) -> str:
    """The candidate separator that splits the header and first rows most consistently."""
    lines = [ln for ln in _head_text(path).splitlines()[:20] if ln.strip()]
    if not lines:
        raise DataError(f"{path} is empty")
    if "::" in lines[0]:
        return "::"  # MovieLens 1M/10M .dat files
    best, best_score = ",", -1
    for sep in _SEPARATORS:
        counts = [ln.count(sep) for ln in lines[:-1] or lines]
        if counts[0] == 0:
            continue
        score = counts[0] * 10 + (10 if len(set(counts)) == 1 else 0)
        if score > best_score:
            best, best_score = sep, score
    return best


def _scan_one(path: Path, cfg: PrepareConfig) -> pl.LazyFrame:
    fmt = cfg.format if cfg.format != "auto" else detect_format(path)
    compressed = _compression(path)
    try:
        if fmt == "parquet":
            return pl.scan_parquet(path)
        if fmt in ("jsonl", "otto"):
            lf = pl.read_ndjson(path).lazy() if compressed else pl.scan_ndjson(path)
            return _flatten_otto(lf, path) if fmt == "otto" else lf
        return _scan_csv(path, cfg, compressed)
    except (pl.exceptions.PolarsError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None


def _scan_csv(path: Path, cfg: PrepareConfig, compressed: str | None) -> pl.LazyFrame:
    sep = cfg.sep or sniff_separator(path)
    double_colon = sep == "::"
    options: dict[str, Any] = {
        "separator": ":" if double_colon else sep,
        "has_header": cfg.header and not double_colon,
        "infer_schema_length": 10000,
    }
    # Polars decompresses only in its eager reader.
    lf = pl.read_csv(path, **options).lazy() if compressed else pl.scan_csv(path, **options)
    if double_colon:
        # 'a::b::c' split on ':' leaves empty columns between the fields.
        names = lf.collect_schema().names()
        lf = lf.select(names[::2])
    if not cfg.header or double_colon:
        names = lf.collect_schema().names()
        given = list(cfg.columns)[: len(names)]
        lf = lf.rename(dict(zip(names, given + names[len(given) :], strict=True)))
    return lf


def _flatten_otto(lf: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    names = lf.collect_schema().names()
    if "events" not in names:
        raise DataError(
            f"{path} is not OTTO's nested format: no 'events' list (found: {', '.join(names)}). "
            "Drop --preset otto / --format otto for flat JSON lines."
        )
    return lf.explode("events").unnest("events")


@contextmanager
def materialized_inputs(paths: Sequence[str]) -> Iterator[list[Path]]:
    """Yield real file paths; '-' (stdin) is spooled to a temporary file for lazy scanning."""
    tmp: Path | None = None
    out = []
    try:
        for p in paths:
            if p == "-":
                if tmp is not None:
                    raise DataError("'-' (stdin) may be given only once")
                fd, name = tempfile.mkstemp(prefix="rnnrec-stdin-")
                tmp = Path(name)
                with open(fd, "wb") as f:
                    shutil.copyfileobj(sys.stdin.buffer, f)
                out.append(tmp)
            elif any(ch in p for ch in "*?[") and not Path(p).exists():
                matches = sorted(Path(m) for m in glob.glob(p))
                files = [m for m in matches if m.is_file()]
                if not files:
                    raise DataError(f"no input file matches {p}")
                out.extend(files)
            else:
                path = Path(p)
                if not path.is_file():
                    raise DataError(f"input file {p} does not exist")
                out.append(path)
        yield out
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def resolve_columns(
    cfg: PrepareConfig, names: Sequence[str], source: str, time_optional: bool = False
) -> PrepareConfig:
    """Fill unset column options from well-known names; fail naming the flag when impossible.

    With `time_optional` (predict: the input is already in order), a missing time column is
    allowed and left None."""
    normalized = {n.lower().replace("_", "").replace("-", ""): n for n in names}
    if time_optional and cfg.time_col is not None and cfg.time_col not in names:
        cfg = dataclasses.replace(cfg, time_col=None, time_offset_col=None)
    updates: dict[str, str] = {}
    if cfg.time_offset_col is not None and cfg.time_offset_col not in names:
        raise DataError(
            f"column {cfg.time_offset_col!r} not in {source} (found: {', '.join(names)}). "
            "Pass --time-offset-col with one of those."
        )
    missing = [key for key in _GUESSES if getattr(cfg, key) is not None and getattr(cfg, key) not in names]
    if len(missing) == 1:
        raise DataError(
            f"column {getattr(cfg, missing[0])!r} not in {source} (found: {', '.join(names)}). "
            f"Pass {_FLAGS[missing[0]]} with one of those."
        )
    if missing:
        raise DataError(
            f"columns {', '.join(repr(getattr(cfg, k)) for k in missing)} not in {source} "
            f"(found: {', '.join(names)}). Pass {', '.join(_FLAGS[k] for k in missing)} to map them."
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
                f"no {key.removesuffix('_col')} column found in {source} "
                f"(found: {', '.join(names)}). Pass {_FLAGS[key]}."
            )
    if cfg.session_col is None and cfg.user_col is None:
        raise DataError(
            f"{source} has no session or user column (found: {', '.join(names)}). Pass --session-col or --user-col."
        )
    return cfg


def scan_events(
    paths: Sequence[Path], cfg: PrepareConfig, time_optional: bool = False
) -> tuple[pl.LazyFrame, PrepareConfig]:
    """Raw files -> one LazyFrame with canonical columns (user/session, item, ts, event, value).

    Returns the config with column names (and an 'auto' time unit) resolved. `ts` becomes
    Datetime[us] (naive UTC).
    """
    frames = [_scan_one(p, cfg) for p in paths]
    schemas = [f.collect_schema() for f in frames]
    names = schemas[0].names()
    source = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"
    for p, s in zip(paths[1:], schemas[1:], strict=True):
        if s.names() != names:
            raise DataError(
                f"{p} has columns {', '.join(s.names())} but {paths[0]} has {', '.join(names)}; "
                "all inputs must share one layout"
            )
    lf = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    return canonicalize(lf, cfg, source, time_optional)


def canonicalize(
    lf: pl.LazyFrame, cfg: PrepareConfig, source: str, time_optional: bool = False
) -> tuple[pl.LazyFrame, PrepareConfig]:
    """Raw columns -> canonical columns plus `_row` (row index); resolves columns and time unit.

    Without a time column (allowed by `time_optional`), rows are in order: `ts` counts rows in
    microseconds, so order holds and no inactivity gap ever splits a sequence."""
    schema = lf.collect_schema()
    cfg = resolve_columns(cfg, schema.names(), source, time_optional)
    selected = [
        pl.col(getattr(cfg, key)).alias(canon) for key, canon in _CANON.items() if getattr(cfg, key) is not None
    ]
    lf = lf.select(selected).with_row_index("_row")
    if cfg.time_col is None:
        return lf.with_columns(ts=pl.from_epoch(pl.col("_row").cast(pl.Int64), time_unit="us")), cfg
    ts_dtype = schema[cfg.time_col]
    if cfg.time_unit == "auto" and (ts_dtype.is_integer() or ts_dtype.is_float()):
        top = lf.select(pl.col("ts").abs().max()).collect().item()
        cfg = dataclasses.replace(cfg, time_unit=_guess_unit(float(top or 0)))  # type: ignore[arg-type]
    ts = _time_expr(ts_dtype, cfg, source)
    if cfg.time_offset_col is not None:
        per_unit = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[cfg.time_offset_unit]
        offset = pl.duration(microseconds=(pl.col("_offset").cast(pl.Float64) * per_unit).cast(pl.Int64))
        ts = ts + offset
    # Raw time text is kept until parsing is checked, so an error can quote it.
    raw = {"_ts_raw": pl.col("ts")} if ts_dtype == pl.String else {}
    lf = lf.with_columns(**raw, ts=ts)
    return (lf.drop("_offset") if cfg.time_offset_col is not None else lf), cfg


def _time_expr(dtype: pl.DataType, cfg: PrepareConfig, source: str) -> pl.Expr:
    col = pl.col("ts")
    if dtype.is_integer() or dtype.is_float():
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[cfg.time_unit]
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


def _guess_unit(magnitude: float) -> str:
    # Unix seconds stay below 1e11 until the year 5138; ms, us and ns are 1e3 apart.
    if magnitude >= 1e17:
        return "ns"
    if magnitude >= 1e14:
        return "us"
    if magnitude >= 1e11:
        return "ms"
    return "s"


# ---------------------------------------------------------------------------- transforms


def sequence_keys(cfg: PrepareConfig) -> list[str]:
    return ["session"] if cfg.session_col is not None else ["user"]


def sessionize(lf: pl.LazyFrame, cfg: PrepareConfig) -> pl.LazyFrame:
    """Add `seq`, a global sequence number; rows end sorted by (key, ts, original row).

    Given sessions keep their ids; otherwise a user's events split where the inactivity gap is
    exceeded, or stay one sequence per user when `session_gap` is None. The original row index
    breaks timestamp ties, so the order (and every later step) is deterministic.
    """
    keys = sequence_keys(cfg)
    lf = lf.sort([*keys, "ts", "_row"])
    new = pl.any_horizontal([pl.col(k) != pl.col(k).shift(1) for k in keys]).fill_null(True)
    if cfg.session_col is None and cfg.session_gap is not None:
        gap = pl.duration(microseconds=int(cfg.session_gap * 1_000_000))
        new = new | ((pl.col("ts") - pl.col("ts").shift(1)) > gap).fill_null(True)
    return lf.with_columns(seq=new.cast(pl.Int64).cum_sum())


def drop_consecutive_repeats(df: pl.DataFrame) -> pl.DataFrame:
    """Collapse runs of the same item inside a sequence (rows sorted by seq, ts)."""
    keep = (pl.col("item") != pl.col("item").shift(1)) | (pl.col("seq") != pl.col("seq").shift(1))
    return df.filter(keep.fill_null(True))


def supported_items(lf: pl.LazyFrame, min_support: int) -> pl.Series:
    """Items with at least `min_support` events (counted over every part, streaming)."""
    counts = lf.group_by("item").agg(n=pl.len()).filter(pl.col("n") >= min_support)
    return counts.select("item").collect(engine="streaming")["item"]


def filter_round(df: pl.DataFrame, supported: pl.Series, cfg: PrepareConfig) -> pl.DataFrame:
    """One round of the support filters: unsupported items out, repeats collapsed again, short
    sequences out."""
    df = df.filter(pl.col("item").is_in(supported.implode()))
    if cfg.dedupe_consecutive:
        df = drop_consecutive_repeats(df)
    return df.filter(pl.len().over("seq") >= cfg.min_session_length)


def filter_until_stable(parts: list[Path], cfg: PrepareConfig) -> int:
    """Item support and sequence length filters, iterated over the parts (rewritten in place)
    until a round changes nothing. Returns the number of rounds that changed something."""
    rounds = 0
    while True:
        supported = supported_items(pl.scan_parquet(parts), cfg.min_item_support)
        changed = False
        for path in parts:
            df = pl.read_parquet(path)
            out = filter_round(df, supported, cfg)
            if out.height != df.height:
                changed = True
                out.write_parquet(path)
        if not changed:
            return rounds
        rounds += 1


def cutoff(lf: pl.LazyFrame, period: Period) -> datetime:
    """The time after which a sequence's last event puts it in the later split."""
    if period.seconds is not None:
        return lf.select(pl.col("ts").max()).collect().item() - timedelta(seconds=period.seconds)
    q = 1 - (period.fraction or 0)
    return lf.select(pl.col("ts").quantile(q, interpolation="lower")).collect().item()


def split_by_time(df: pl.DataFrame, period: Period, at: datetime | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(before, after): sequences whose LAST event falls after the cutoff (`at`, or computed
    from `df`) go after, whole."""
    if period.empty or df.is_empty():
        return df, df.clear()
    at = cutoff(df.lazy(), period) if at is None else at
    is_late = pl.col("ts").max().over("seq") > at
    return df.filter(~is_late), df.filter(is_late)


def restrict_to_vocabulary(
    df: pl.DataFrame, vocab: pl.Series, cfg: PrepareConfig
) -> tuple[pl.DataFrame, dict[str, int]]:
    """GRU4Rec's protocol for test/valid: drop events on unseen items, then short sequences."""
    n0, s0 = df.height, df["seq"].n_unique()
    df = df.filter(pl.col("item").is_in(vocab.implode()))
    n1 = df.height
    if cfg.dedupe_consecutive:
        df = drop_consecutive_repeats(df)
    df = df.filter(pl.len().over("seq") >= cfg.min_session_length)
    return df, {
        "events_on_unseen_items": n0 - n1,
        "events_in_short_sequences": n1 - df.height,
        "sequences_dropped": s0 - df["seq"].n_unique(),
    }


def item_table(train: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Dense item index: most frequent in training first, ties by original id."""
    counts = (
        train.lazy()
        .group_by("item")
        .agg(count=pl.len())
        .sort(["count", "item"], descending=[True, False])
        .collect(engine="streaming")
    )
    return counts.with_row_index("idx").select(
        pl.col("idx").cast(pl.Int32), pl.col("item").alias("item_id"), pl.col("count").cast(pl.Int64)
    )


def sequence_numbers(lf: pl.LazyFrame) -> pl.DataFrame:
    """(seq, new_seq): sequences renumbered 0, 1, ... by start time (ties by old number)."""
    return (
        lf.group_by("seq")
        .agg(start=pl.col("ts").min())
        .sort(["start", "seq"])
        .with_row_index("new_seq")
        .select("seq", pl.col("new_seq").cast(pl.Int64))
        .collect(engine="streaming")
    )


def encode(df: pl.DataFrame, items: pl.DataFrame, starts: pl.DataFrame | None = None) -> pl.DataFrame:
    """Original item ids -> dense `item` index; sequences renumbered by start time (`starts`
    from `sequence_numbers` over the whole split, or computed from `df`). Rows end sorted by
    (seq, ts, original row)."""
    mapping = items.select(pl.col("item_id").alias("item"), pl.col("idx"))
    df = df.join(mapping, on="item", how="left")
    starts = sequence_numbers(df.lazy()) if starts is None else starts
    extra = [c for c in ("user", "session", "event", "value") if c in df.columns]
    return (
        df.join(starts, on="seq")
        .sort(["new_seq", "ts", "_row"])
        .select(pl.col("new_seq").alias("seq"), pl.col("idx").alias("item"), "ts", *extra)
    )


# ---------------------------------------------------------------------------- the whole job


@dataclass(frozen=True)
class PrepareResult:
    out_dir: Path
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _split_stats(lf: pl.LazyFrame) -> dict[str, Any]:
    row = (
        lf.select(
            events=pl.len(),
            sequences=pl.col("seq").n_unique(),
            items=pl.col("item").n_unique(),
            time_min=pl.col("ts").min(),
            time_max=pl.col("ts").max(),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    if not row["events"]:
        return {"events": 0, "sequences": 0, "targets": 0, "items": 0, "time_min": None, "time_max": None}
    return {
        **row,
        "targets": row["events"] - row["sequences"],
        "time_min": row["time_min"].isoformat(),
        "time_max": row["time_max"].isoformat(),
    }


def split_targets(stats: dict[str, Any]) -> int:
    """Target events of a split's manifest entry (manifests before 2026-12 lack the field)."""
    return stats.get("targets", stats["events"] - stats["sequences"])


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


def filter_events(lf: pl.LazyFrame, cfg: PrepareConfig) -> pl.LazyFrame:
    """--events and --min-value (applied while reading, before anything is held in memory)."""
    if cfg.events:
        if cfg.event_col is None:
            raise DataError("--events needs an event-type column; pass --event-col")
        lf = lf.filter(pl.col("event").cast(pl.String).is_in(list(cfg.events)))
    if cfg.min_value is not None:
        if cfg.value_col is None:
            raise DataError("--min-value needs a value column; pass --value-col")
        lf = lf.filter(pl.col("value") >= cfg.min_value)
    return lf


def clean_events(df: pl.DataFrame, cfg: PrepareConfig, stages: dict[str, Any], first_seq: int = 0) -> pl.DataFrame:
    """Parse check, nulls, exact duplicates, sessionization (sequence numbers from
    `first_seq`), repeat collapsing, truncation. Adds each step's row count to `stages`."""

    def count(name: str, frame: pl.DataFrame) -> None:
        stages[name] = stages.get(name, 0) + frame.height

    count("events_read", df)
    required = ["item", "ts", *sequence_keys(cfg)]
    df = check_times(df, cfg).drop_nulls(required)
    count("after_dropping_nulls", df)
    df = df.unique(subset=[c for c in df.columns if c != "_row"], keep="first", maintain_order=True)
    count("after_dropping_exact_duplicates", df)
    df = sessionize(df.lazy(), cfg).collect().with_columns(pl.col("seq") + first_seq)
    if cfg.dedupe_consecutive:
        df = drop_consecutive_repeats(df)
        count("after_collapsing_repeats", df)
    if cfg.max_length:
        df = keep_most_recent(df, cfg.max_length)
        count("after_truncating_long_sequences", df)
    return df


def keep_most_recent(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """The last n events of each sequence (rows sorted by seq, ts)."""
    return df.filter(pl.int_range(pl.len()).over("seq") >= pl.len().over("seq") - n)


def split_leave_one_out(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(train, valid, test): each sequence without its last two events, without its last one,
    and whole. Evaluation then scores only the last event of valid and test sequences."""
    from_end = pl.len().over("seq") - 1 - pl.int_range(pl.len()).over("seq")
    return df.filter(from_end >= 2), df.filter(from_end >= 1), df


# Input bytes (as uncompressed text) per bucket of the out-of-core pipeline. A bucket is cleaned
# in memory at roughly 200 bytes per event at the peak; 256 MiB of CSV is about 10M events, so
# prepare's memory stays near 2 GiB whatever the size of the whole log.
BUCKET_BYTES = 256 << 20


def auto_buckets(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        # Compressed text and Parquet hold several times their size in events.
        factor = 4 if _compression(path) or detect_format(path) == "parquet" else 1
        total += path.stat().st_size * factor
    return max(1, -(-total // BUCKET_BYTES))


def _partition(lf: pl.LazyFrame, cfg: PrepareConfig, n_buckets: int, root: Path) -> list[list[Path]]:
    """Stream the events to Parquet, hashed by sequence key into buckets (one streaming pass):
    a user's or session's events all land in one bucket, so buckets are cleaned independently."""
    root.mkdir(parents=True)
    if n_buckets == 1:
        lf.sink_parquet(root / "00000.parquet")
        return [[root / "00000.parquet"]]
    bucket = pl.col(sequence_keys(cfg)[0]).hash(seed=0) % n_buckets
    lf.with_columns(_bucket=bucket).sink_parquet(pl.PartitionBy(root, key="_bucket", include_key=False))
    dirs = [root / f"_bucket={b}" for b in range(n_buckets)]
    return [sorted(d.glob("*.parquet")) for d in dirs if d.is_dir()]


def _clean_parts(lf: pl.LazyFrame, cfg: PrepareConfig, n_buckets: int, root: Path, stages: dict) -> list[Path]:
    """Filtered, cleaned, sessionized events as one Parquet part per bucket."""
    sources = _partition(filter_events(lf, cfg), cfg, n_buckets, root / "raw")
    (root / "clean").mkdir()
    stages.setdefault("events_read", 0)
    parts = []
    for b, files in enumerate(sources):
        # Sorted by row so that which of two exact duplicates is kept does not depend on buckets.
        df = pl.read_parquet(files, hive_partitioning=False).sort("_row")
        path = root / "clean" / f"{b:05d}.parquet"
        clean_events(df, cfg, stages, first_seq=b << 40).write_parquet(path)
        parts.append(path)
    shutil.rmtree(root / "raw")
    return parts


def _map_parts(
    parts: list[Path], roots: Sequence[Path], fn: Callable[[pl.DataFrame], tuple[pl.DataFrame, ...]]
) -> list[list[Path]]:
    """Apply `fn` to each part; its i-th output frame goes to roots[i]. Returns the new parts."""
    for root in roots:
        root.mkdir(parents=True)
    out: list[list[Path]] = [[] for _ in roots]
    for path in parts:
        for i, (root, df) in enumerate(zip(roots, fn(pl.read_parquet(path)), strict=True)):
            df.write_parquet(root / path.name)
            out[i].append(root / path.name)
    return out


def _rows(parts: list[Path]) -> int:
    return pl.scan_parquet(parts).select(pl.len()).collect().item() if parts else 0


def _restrict_parts(
    parts: list[Path], vocab: pl.Series, cfg: PrepareConfig, root: Path
) -> tuple[list[Path], dict[str, int]]:
    totals: dict[str, int] = {}

    def one(df: pl.DataFrame) -> tuple[pl.DataFrame]:
        df, counts = restrict_to_vocabulary(df, vocab, cfg)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        return (df,)

    (out,) = _map_parts(parts, [root], one)
    return out, {
        k: totals.get(k, 0) for k in ("events_on_unseen_items", "events_in_short_sequences", "sequences_dropped")
    }


def _write_encoded(parts: list[Path], items: pl.DataFrame, root: Path, out: Path) -> None:
    """Encode each part, then merge the parts (each sorted by the new sequence number) into one
    file in a streaming k-way merge: no step holds the whole split."""
    starts = sequence_numbers(pl.scan_parquet(parts)) if parts else pl.DataFrame(schema={"seq": pl.Int64})

    def one(df: pl.DataFrame) -> tuple[pl.DataFrame]:
        if df.is_empty():
            return (encode(df, items),)
        mine = starts.filter(pl.col("seq").is_between(df["seq"].min(), df["seq"].max()))
        return (encode(df, items, mine),)

    (encoded,) = _map_parts(parts, [root], one)
    frames = [pl.scan_parquet(p).set_sorted("seq") for p in encoded]
    merged = functools.reduce(lambda a, b: a.merge_sorted(b, key="seq"), frames)
    merged.sink_parquet(out)


def build_splits(
    lf: pl.LazyFrame,
    cfg: PrepareConfig,
    given: dict[str, pl.LazyFrame] | None = None,
    *,
    out: Path,
    buckets: int = 1,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Canonical events -> out/{train,valid,test}.parquet; returns (item table, stage counts).

    Out of core: events are hashed by sequence key into `buckets` Parquet parts, each cleaned
    in memory on its own; the global steps (item support, time cutoffs, the vocabulary, the
    numbering of sequences by start time) read all parts in streaming queries. The result does
    not depend on the number of buckets.

    `given` may hold the user's own "test" and/or "valid" events (e.g. another tool's split);
    they replace the time split for that part and get the same cleaning and vocabulary rule,
    but no support filtering, so results stay comparable with numbers published on them.
    """
    given = given or {}
    work = out / "_work"
    stages: dict[str, Any] = {}
    parts = _clean_parts(lf, cfg, buckets, work / "events", stages)
    rounds = filter_until_stable(parts, cfg) if parts and cfg.filters_items else 0
    stages["after_filtering"] = _rows(parts)
    stages["filter_rounds"] = rounds
    if not stages["after_filtering"]:
        raise DataError(
            "no events left after filtering "
            f"({', '.join(f'{k}={v}' for k, v in stages.items())}); lower --min-item-support "
            "or check the sequence columns"
        )

    span = time_span(parts)
    stages["time_span"] = [t.isoformat() for t in span]

    def by_time(src: list[Path], period: Period, name: str) -> tuple[list[Path], list[Path]]:
        at = cutoff(pl.scan_parquet(src), period) if not period.empty and _rows(src) else None
        before, after = _map_parts(
            src, [work / f"{name}-before", work / f"{name}-after"], lambda df: split_by_time(df, period, at)
        )
        return before, after

    def auto(src: list[Path], name: str, chosen: Period) -> tuple[list[Path], list[Path], str]:
        """The time split of `src`; with the automatic rule, the fallback when the first leaves
        too small a split or nothing before it."""
        rule = AUTO_SPLIT[0]
        before, after = by_time(src, chosen, name)
        if (cfg.split if name == "test" else cfg.valid) != "auto":
            return before, after, ""
        targets, n_seqs = split_size(after)
        nothing_before = not _rows(before)
        if targets >= MIN_TARGETS and n_seqs >= MIN_SEQUENCES and not nothing_before:
            return before, after, rule
        rule = AUTO_SPLIT[1]
        before, after = by_time(src, parse_split(rule), f"{name}-fallback")
        what = "test" if name == "test" else "validation"
        stages[f"{name}_split_note"] = (
            f"the last 7 days hold {targets:,} {what} targets in {n_seqs:,} sequences"
            + (", with nothing before them" if nothing_before else "")
            + f" (data spans {_span_text(span)}), so the {what} split is the last 10% of events in time"
        )
        return before, after, rule

    if cfg.leave_one_out:
        train, valid, test = _map_parts(parts, [work / s for s in SPLITS], split_leave_one_out)
        stages["split_rule"] = {"test": "loo", "valid": "loo"}
    else:
        rules = {}
        if "test" in given:
            rest, test = parts, _clean_parts(given["test"], cfg, 1, work / "given-test", {})
            rules["test"] = "given file"
        else:
            rest, test, rules["test"] = auto(parts, "test", cfg.test_period)
        if "valid" in given:
            train, valid = rest, _clean_parts(given["valid"], cfg, 1, work / "given-valid", {})
            rules["valid"] = "given file"
        else:
            train, valid, rules["valid"] = auto(rest, "valid", cfg.valid_period)
        stages["split_rule"] = {k: v or (cfg.split if k == "test" else cfg.valid) for k, v in rules.items()}
    if not _rows(train):
        raise DataError(
            f"the test split ({stages['split_rule']['test']}) and validation split ({stages['split_rule']['valid']}) "
            f"leave no training sequences; the data spans {_span_text(span)}"
            + _latest_note(parts, span)
            + ". Use shorter periods, e.g. --split time:0.1 --valid 0.1"
        )
    items = item_table(pl.scan_parquet(train))
    vocab = items["item_id"]
    test, stages["test_cleaning"] = _restrict_parts(test, vocab, cfg, work / "test-known")
    valid, stages["valid_cleaning"] = _restrict_parts(valid, vocab, cfg, work / "valid-known")
    if not _rows(test):
        raise DataError(
            f"the test split ({stages['split_rule']['test']}) leaves no test sequences of length >= "
            f"{cfg.min_session_length} on items seen in training; the data spans {_span_text(span)}"
            + _latest_note(parts, span)
            + ". Use a longer period, e.g. --split time:0.2"
        )
    targets, _ = split_size(test)
    if targets < TINY_TEST_TARGETS and not cfg.allow_tiny_test:
        raise DataError(
            f"the test split ({stages['split_rule']['test']}) holds only {targets} target events: its metrics would "
            f"be noise. The data spans {_span_text(span)}{_latest_note(parts, span)}. Use a longer period "
            "(e.g. --split time:0.2), or pass --allow-tiny-test"
        )
    for name, part in zip(SPLITS, (train, valid, test), strict=True):
        _write_encoded(part, items, work / f"{name}-encoded", out / f"{name}.parquet")
    shutil.rmtree(work)
    return items, stages


def describe_inputs(asked: PrepareConfig, cfg: PrepareConfig) -> dict[str, Any]:
    """How each column and the time unit were decided: by an option, by the preset, or guessed
    (a recognised column name; the unit from the magnitude of the times)."""
    preset = PRESETS.get(asked.preset or "", {})

    def how(key: str) -> str:
        if getattr(asked, key) in (None, "auto"):
            return "guessed from the magnitude" if key == "time_unit" else "recognised name"
        return "preset" if preset.get(key) == getattr(asked, key) else "option"

    columns = {
        key.removesuffix("_col"): {"column": getattr(cfg, key), "how": how(key)}
        for key in _FLAGS
        if getattr(cfg, key) is not None
    }
    if cfg.session_col is not None:
        sequences = "given sessions (session column)"
    elif cfg.session_gap is None:
        sequences = "each user's whole history"
    else:
        sequences = f"a user's events cut where {cfg.session_gap / 60:g} minutes pass without an event"
    return {"columns": columns, "time_unit": {"unit": cfg.time_unit, "how": how("time_unit")}, "sequences": sequences}


def time_span(parts: list[Path]) -> tuple[datetime, datetime]:
    row = pl.scan_parquet(parts).select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")).collect()
    return row["a"][0], row["b"][0]


def _span_text(span: tuple[datetime, datetime]) -> str:
    days = (span[1] - span[0]).total_seconds() / 86400
    return f"{span[0]:%Y-%m-%d %H:%M} to {span[1]:%Y-%m-%d %H:%M} ({days:,.1f} days)"


def _latest_note(parts: list[Path], span: tuple[datetime, datetime]) -> str:
    """Names a far-future outlier, which makes every time split look empty."""
    top = pl.scan_parquet(parts).select(pl.col("ts").unique().top_k(2)).collect()["ts"].sort()
    if len(top) == 2 and (top[1] - top[0]).total_seconds() > 365 * 86400:
        return f"; its latest time {top[1]} is over a year after the next ({top[0]}): check that row"
    return ""


def split_size(parts: list[Path]) -> tuple[int, int]:
    """(targets, sequences) of a split held in parts."""
    if not parts:
        return 0, 0
    st = _split_stats(pl.scan_parquet(parts))
    return st["targets"], st["sequences"]


def prepare(
    inputs: Sequence[str],
    out_dir: Path,
    cfg: PrepareConfig,
    *,
    force: bool = False,
    given: dict[str, Sequence[str]] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Run the whole ETL and write the data directory atomically (temp dir, then rename).

    `given` maps "test"/"valid" to the user's own split files, used instead of the time split.
    """
    if out_dir.exists() and not force:
        raise RunDirError(f"{out_dir} already exists; pass --force to replace it")
    note = on_stage or (lambda _msg: None)
    given_files = {k: v for k, v in (given or {}).items() if v}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with ExitStack() as stack:
            paths = stack.enter_context(materialized_inputs(inputs))
            given_paths = {k: stack.enter_context(materialized_inputs(v)) for k, v in given_files.items()}
            note("reading events")
            asked = cfg
            lf, cfg = scan_events(paths, cfg)
            given_lfs = {k: scan_events(v, cfg)[0] for k, v in given_paths.items()}
            buckets = cfg.buckets or auto_buckets(paths)
            try:
                items, stages = build_splits(lf, cfg, given_lfs, out=tmp, buckets=buckets)
            except pl.exceptions.PolarsError as exc:
                # Lazy scans fail only when collected: e.g. an id column that is numeric in the first
                # 10,000 rows and text later, or a malformed row.
                first = str(exc).strip().splitlines()[0]
                raise DataError(
                    f"cannot read {', '.join(map(str, paths))}: {first}. If a column mixes numbers and text, "
                    "make it consistent (or convert the file to Parquet with explicit types)"
                ) from None
            roles = [("train", paths)] + [(k, v) for k, v in given_paths.items()]
            input_info = [
                {
                    "role": role,
                    "path": "-" if q.name.startswith("rnnrec-stdin-") else str(q.resolve()),
                    "bytes": q.stat().st_size,
                    "sha256": _sha256(q),
                }
                for role, resolved in roles
                for q in resolved
            ]
        manifest = {
            "rnnrec_version": __version__,
            "polars_version": pl.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": input_info,
            "config": to_dict(cfg),
            "recognised": describe_inputs(asked, cfg),
            "buckets": buckets,
            "stages": stages,
            "splits": {name: _split_stats(pl.scan_parquet(tmp / f"{name}.parquet")) for name in SPLITS},
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
        manifest["warnings"] += split_warnings(manifest)
        if cfg.item_features:
            note("joining item features")
            table, spec = build_item_features(
                Path(cfg.item_features), cfg.item_key or "item_id", items, categorical=cfg.item_categorical,
                numeric=cfg.item_numeric, vector=cfg.item_vector, sep=cfg.item_sep,
            )  # fmt: skip
            table.write_parquet(tmp / ITEM_FEATURES)
            manifest["item_features"] = spec
        note("writing")
        items.write_parquet(tmp / ITEMS)
        save_json(tmp / MANIFEST, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out_dir=out_dir, manifest=manifest)


# ---------------------------------------------------------------------------- prepared data


@dataclass(frozen=True)
class Sequences:
    """Sequences packed end to end: items[offsets[i]:offsets[i+1]] is sequence i, in time order.

    items: <int32>[n_events]; offsets: <int64>[n_sequences + 1]; values: <float32>[n_events],
    the value attached to each event (rating, price, ...), when read; events: <int32>[n_events],
    each event's type as an index into a vocabulary (-1 = not in it), when read.
    """

    items: np.ndarray
    offsets: np.ndarray
    values: np.ndarray | None = None
    events: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_targets(self) -> int:
        return int(np.maximum(self.lengths - 1, 0).sum())

    @staticmethod
    def from_lists(seqs: Sequence[Sequence[int]]) -> Sequences:
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        items = np.concatenate([np.asarray(s, np.int32) for s in seqs]) if seqs else np.zeros(0, np.int32)
        return Sequences(items=items, offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def is_data_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def load_manifest(data_dir: Path) -> dict[str, Any]:
    if not is_data_dir(data_dir):
        raise DataError(f"{data_dir} is not a prepared data directory (no {MANIFEST}); run `rnnrec prepare` first")
    return load_json(data_dir / MANIFEST)


# Rows decoded per step when reading prepared splits: memory stays at the packed int32 items
# (plus one batch) however large the split.
READ_BATCH_ROWS = 1 << 22


def _split_path(data_dir: Path, split: str) -> Path:
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path} is missing; re-run `rnnrec prepare`")
    return path


def _runs(path: Path, columns: list[str]) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    """Stream the split in row batches, with each row's sequence number (0, 1, ... in file order;
    a sequence is a run of equal `seq` values)."""
    n_runs, prev = 0, None
    for df in pl.scan_parquet(path).select(columns).collect_batches(chunk_size=READ_BATCH_ROWS):
        if not df.height:
            continue
        seq = df["seq"].to_numpy()
        new = np.empty(len(seq), bool)
        new[0] = prev is None or seq[0] != prev
        new[1:] = seq[1:] != seq[:-1]
        run = n_runs - 1 + np.cumsum(new)
        n_runs, prev = int(run[-1]) + 1, seq[-1]
        yield df, run


def read_lengths(data_dir: Path, split: str) -> np.ndarray:
    """<int64>[n_sequences] events per sequence, reading only the `seq` column."""
    counts = np.zeros(0, np.int64)
    for _, run in _runs(_split_path(data_dir, split), ["seq"]):
        part = np.bincount(run)
        counts = np.concatenate([counts, np.zeros(max(0, len(part) - len(counts)), np.int64)])
        counts[: len(part)] += part
    return counts


def event_types(data_dir: Path) -> tuple[str, ...]:
    """The event types of the training split, sorted (the vocabulary of event-type models)."""
    path = _split_path(data_dir, "train")
    if "event" not in pl.read_parquet_schema(path):
        raise DataError(f"{path} has no event-type column; prepare the data with --event-col (or --preset otto)")
    types = pl.scan_parquet(path).select(pl.col("event").cast(pl.String).drop_nulls().unique()).collect()
    return tuple(sorted(types["event"].to_list()))


def read_sequences(
    data_dir: Path,
    split: str,
    wanted: np.ndarray | None = None,
    *,
    values: bool = False,
    events: Sequence[str] | None = None,
) -> Sequences:
    """A split's sequences, packed; with `wanted` (<bool>[n_sequences]) only those sequences, in
    file order (how one process of a multi-host run reads just its share); with `values` the
    value column too; with `events` (a vocabulary) each event's type index (-1 = not in it)."""
    path = _split_path(data_dir, split)
    columns = ["seq", "item"]
    schema = pl.read_parquet_schema(path)
    if values:
        if "value" not in schema:
            raise DataError(f"{path} has no value column; prepare the data with --value-col (e.g. --value-col rating)")
        columns.append("value")
    codes: dict[str, int] = {}
    if events is not None:
        if "event" not in schema:
            raise DataError(f"{path} has no event-type column; prepare the data with --event-col")
        columns.append("event")
        codes = {name: i for i, name in enumerate(events)}
    parts: list[np.ndarray] = []
    value_parts: list[np.ndarray] = []
    event_parts: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    n, last = 0, -1
    for df, run in _runs(path, columns):
        keep = wanted[run] if wanted is not None else slice(None)
        items, run = df["item"].to_numpy().astype(np.int32)[keep], run[keep]
        if values:
            value_parts.append(df["value"].cast(pl.Float32).fill_null(np.nan).to_numpy()[keep])
        if events is not None:
            ev = df["event"].cast(pl.String).replace_strict(codes, default=-1, return_dtype=pl.Int32)
            event_parts.append(ev.to_numpy()[keep])
        if not len(run):
            continue
        new = np.r_[run[0] != last, run[1:] != run[:-1]]
        starts.append(n + np.flatnonzero(new))
        parts.append(items)
        n, last = n + len(run), int(run[-1])
    items = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    first = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    vals = (np.concatenate(value_parts) if value_parts else np.zeros(0, np.float32)) if values else None
    evs = None
    if events is not None:
        evs = np.concatenate(event_parts).astype(np.int32) if event_parts else np.zeros(0, np.int32)
    return Sequences(items=items, offsets=np.r_[first, n].astype(np.int64), values=vals, events=evs)


def read_items(data_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(data_dir / ITEMS)


def iter_stdin_blocks(cfg: PrepareConfig, rows: int, stream: Any = None) -> Iterator[pl.DataFrame]:
    """Raw rows from stdin in blocks of about `rows` lines, parsed as soon as each block arrives.

    CSV/TSV (separator sniffed from the first lines unless given) and JSON lines (also OTTO's
    nested format) stream; Parquet must come from a file.
    """
    stream = stream if stream is not None else sys.stdin.buffer
    fmt = cfg.format if cfg.format != "auto" else "csv"
    if fmt == "parquet":
        raise DataError("Parquet cannot be streamed from stdin; pass the file path instead")
    first = stream.readline()
    if not first:
        return
    is_json = fmt in ("jsonl", "otto") or first.lstrip().startswith(b"{")
    header = b"" if is_json or not cfg.header else first
    pending = [] if header else [first]
    sep = cfg.sep or _sniff_text(first.decode("utf-8", errors="replace"))

    def parse(lines: list[bytes]) -> pl.DataFrame:
        payload = io.BytesIO(header + b"".join(lines))
        try:
            if is_json:
                df = pl.read_ndjson(payload)
                return _flatten_otto(df.lazy(), Path("<stdin>")).collect() if fmt == "otto" else df
            double_colon = sep == "::"
            df = pl.read_csv(
                payload,
                separator=":" if double_colon else sep,
                has_header=bool(header) and not double_colon,
                infer_schema_length=None,
            )
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"cannot parse stdin: {str(exc).strip().splitlines()[0]}") from None
        if double_colon:
            df = df.select(df.columns[::2])
        if not header or double_colon:
            given = list(cfg.columns)[: df.width]
            df = df.rename(dict(zip(df.columns, given + df.columns[len(given) :], strict=True)))
        return df

    for line in stream:
        pending.append(line)
        if len(pending) >= rows:
            yield parse(pending)
            pending = []
    if pending:
        yield parse(pending)


def _sniff_text(line: str) -> str:
    if "::" in line:
        return "::"
    counts = {sep: line.count(sep) for sep in _SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else ","
