"""The ETL's transforms: pure functions of Polars frames, no files.

Per-sequence steps (sessionize, collapse repeats, truncate, split) take and return a DataFrame
holding whole sequences (one out-of-core part, see prepare.py and splits.py); global steps (item support, time
cutoffs, the item table, sequence numbering) read a LazyFrame over every part and collect it
with the streaming engine.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.data.columns import check_times
from rnnrec_cli.errors import DataError
from rnnrec_cli.validation import Period


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
    is_late = _late(df, at)
    return df.filter(~is_late), df.filter(is_late)


def split_at_cutoff(df: pl.DataFrame, period: Period, at: datetime | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(before, after) at one cutoff for every sequence (the global time split of user histories).

    `before` holds every event up to the cutoff, so the early part of a history that goes on
    past it still trains. `after` holds each sequence with an event past the cutoff, whole:
    its earlier events are context fed to the network, and only the events past the cutoff are
    targets (`target`; never a sequence's first event, which has nothing to predict it from).
    Every target is then later than every event in `before`.
    """
    if period.empty or df.is_empty():
        return df, df.clear().with_columns(target=pl.lit(False))
    at = cutoff(df.lazy(), period) if at is None else at
    later = pl.col("ts") > at
    after = df.filter(_late(df, at)).with_columns(target=later & _not_first())
    return df.filter(~later), after


def _not_first() -> pl.Expr:
    """Whether a row is not its sequence's first (rows of a sequence together, in time order)."""
    return pl.int_range(pl.len()).over("seq") > 0


def _late(df: pl.DataFrame, at: datetime) -> pl.Series | pl.Expr:
    """Whether each row's sequence ends after `at`. Cleaned parts hold each sequence's rows
    together, in increasing `seq`: then one pass over the runs of `seq` finds each sequence's
    last time (a fifth of the window expression's cost); otherwise the window expression."""
    if not df["seq"].is_sorted() or df["ts"].null_count():
        return pl.col("ts").max().over("seq") > at
    seq, ts = df["seq"].to_numpy(), df["ts"].to_numpy()
    ends = np.flatnonzero(np.r_[seq[1:] != seq[:-1], True])
    starts = np.r_[0, ends[:-1] + 1]
    last = np.maximum.reduceat(ts, starts)
    return pl.Series(np.repeat(last > np.datetime64(at, "us"), ends - starts + 1))


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
    n2 = df.height
    if "target" in df.columns:
        # A dropped first event leaves a new first event, which has nothing to predict it from;
        # a sequence left with context only is scored nowhere.
        df = df.with_columns(target=pl.col("target") & _not_first()).filter(pl.col("target").any().over("seq"))
    return df, {
        "events_on_unseen_items": n0 - n1,
        "events_in_short_sequences": n1 - n2,
        "events_in_sequences_without_targets": n2 - df.height,
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
    extra = [c for c in ("user", "session", "event", "value", "target") if c in df.columns]
    return (
        df.join(starts, on="seq")
        .sort(["new_seq", "ts", "_row"])
        .select(pl.col("new_seq").alias("seq"), pl.col("idx").alias("item"), "ts", *extra)
    )


def split_stats(lf: pl.LazyFrame) -> dict[str, Any]:
    """Counts and time range of a split. A split with context (a `target` column, see
    `split_at_cutoff`) counts only its marked targets, and adds the time range of those."""
    marked = "target" in lf.collect_schema().names()
    extra = (
        {
            "targets": pl.col("target").sum(),
            "target_time_min": pl.col("ts").filter(pl.col("target")).min(),
            "target_time_max": pl.col("ts").filter(pl.col("target")).max(),
        }
        if marked
        else {}
    )
    row = (
        lf.select(
            events=pl.len(),
            sequences=pl.col("seq").n_unique(),
            items=pl.col("item").n_unique(),
            time_min=pl.col("ts").min(),
            time_max=pl.col("ts").max(),
            **extra,
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    if not row["events"]:
        return {"events": 0, "sequences": 0, "targets": 0, "items": 0, "time_min": None, "time_max": None}
    times = {k: row[k].isoformat() if row[k] is not None else None for k in row if k.endswith(("_min", "_max"))}
    return {
        **row,
        "targets": int(row["targets"]) if marked else row["events"] - row["sequences"],
        **times,
    }


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
    # "first" keeps the earliest row of each duplicate group whatever the output order, which
    # sessionize sorts anyway.
    df = df.unique(subset=[c for c in df.columns if c != "_row"], keep="first", maintain_order=False)
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
