"""Cleaning and splitting prepared events: repeats, support filtering until stable, the time or
given split, and the encoded train/valid/test tables written in buckets."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.data.ingest import (
    compression,
    detect_format,
)
from rnnrec_cli.data.sequences import SPLITS
from rnnrec_cli.data.transforms import (
    clean_events,
    cutoff,
    encode,
    filter_events,
    filter_round,
    item_table,
    restrict_to_vocabulary,
    sequence_keys,
    sequence_numbers,
    split_at_cutoff,
    split_by_time,
    split_leave_one_out,
    split_stats,
    supported_items,
)
from rnnrec_cli.errors import DataError
from rnnrec_cli.rules import AUTO_SPLIT, MIN_SEQUENCES, MIN_TARGETS, TINY_TEST_TARGETS
from rnnrec_cli.validation import Period, parse_split

Part = Path | pl.DataFrame


def _read(part: Part) -> pl.DataFrame:
    return part if isinstance(part, pl.DataFrame) else pl.read_parquet(part, glob=False)


def _scan(parts: Sequence[Part]) -> pl.LazyFrame:
    frames = [p.lazy() if isinstance(p, pl.DataFrame) else pl.scan_parquet(p, glob=False) for p in parts]
    return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]


def _put(df: pl.DataFrame, path: Path, in_memory: bool) -> Part:
    if in_memory:
        return df
    df.write_parquet(path)
    return path


def filter_until_stable(parts: list[Part], cfg: PrepareConfig) -> int:
    """Item support and sequence length filters, iterated over the parts (files rewritten in
    place, frames replaced in the list) until a round changes nothing. Returns the number of
    rounds that changed something."""
    rounds = 0
    while True:
        supported = supported_items(_scan(parts), cfg.min_item_support)
        changed = False
        for i, part in enumerate(parts):
            df = _read(part)
            out = filter_round(df, supported, cfg)
            if out.height != df.height:
                changed = True
                parts[i] = _put(out, part, False) if isinstance(part, Path) else out
        if not changed:
            return rounds
        rounds += 1


# in memory at roughly 200 bytes per event at the peak; 256 MiB of CSV is about 10M events, so
# prepare's memory stays near 2 GiB whatever the size of the whole log.
BUCKET_BYTES = 256 << 20


def auto_buckets(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        # Compressed text and Parquet hold several times their size in events.
        factor = 4 if compression(path) or detect_format(path) == "parquet" else 1
        total += path.stat().st_size * factor
    return max(1, -(-total // BUCKET_BYTES))


def _partition(lf: pl.LazyFrame, cfg: PrepareConfig, n_buckets: int, root: Path) -> list[list[Path]]:
    """Stream the events to Parquet, hashed by sequence key into buckets (one streaming pass):
    a user's or session's events all land in one bucket, so buckets are cleaned independently."""
    root.mkdir(parents=True)
    bucket = pl.col(sequence_keys(cfg)[0]).hash(seed=0) % n_buckets
    lf.with_columns(_bucket=bucket).sink_parquet(pl.PartitionBy(root, key="_bucket", include_key=False))
    dirs = [root / f"_bucket={b}" for b in range(n_buckets)]
    return [sorted(d.glob("*.parquet")) for d in dirs if d.is_dir()]


def _clean_parts(lf: pl.LazyFrame, cfg: PrepareConfig, n_buckets: int, root: Path, stages: dict) -> list[Part]:
    """Filtered, cleaned, sessionized events as one part per bucket (one bucket: in memory)."""
    stages.setdefault("events_read", 0)
    if n_buckets == 1:
        # Sorted by row so that which of two exact duplicates is kept does not depend on buckets.
        df = filter_events(lf, cfg).collect(engine="streaming").sort("_row")
        return [clean_events(df, cfg, stages)]
    sources = _partition(filter_events(lf, cfg), cfg, n_buckets, root / "raw")
    (root / "clean").mkdir()
    parts: list[Part] = []
    for b, files in enumerate(sources):
        df = pl.read_parquet(files, hive_partitioning=False, glob=False).sort("_row")
        path = root / "clean" / f"{b:05d}.parquet"
        parts.append(_put(clean_events(df, cfg, stages, first_seq=b << 40), path, False))
    shutil.rmtree(root / "raw")
    return parts


def _map_parts(
    parts: list[Part], roots: Sequence[Path], fn: Callable[[pl.DataFrame], tuple[pl.DataFrame, ...]]
) -> list[list[Part]]:
    """Apply `fn` to each part; its i-th output frame goes to roots[i] (or stays in memory,
    as the part came). Returns the new parts."""
    out: list[list[Part]] = [[] for _ in roots]
    for n, part in enumerate(parts):
        in_memory = isinstance(part, pl.DataFrame)
        for i, (root, df) in enumerate(zip(roots, fn(_read(part)), strict=True)):
            root.mkdir(parents=True, exist_ok=True)
            out[i].append(_put(df, root / f"{n:05d}.parquet", in_memory))
    return out


def _rows(parts: list[Part]) -> int:
    return _scan(parts).select(pl.len()).collect().item() if parts else 0


def _restrict_parts(
    parts: list[Part], vocab: pl.Series, cfg: PrepareConfig, root: Path
) -> tuple[list[Part], dict[str, int]]:
    totals: dict[str, int] = {}

    def one(df: pl.DataFrame) -> tuple[pl.DataFrame]:
        df, counts = restrict_to_vocabulary(df, vocab, cfg)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        return (df,)

    (out,) = _map_parts(parts, [root], one)
    return out, {
        k: totals.get(k, 0)
        for k in (
            "events_on_unseen_items",
            "events_in_short_sequences",
            "events_in_sequences_without_targets",
            "sequences_dropped",
        )
    }


def _write_encoded(parts: list[Part], items: pl.DataFrame, root: Path, out: Path) -> None:
    """Encode each part, then merge the parts (each sorted by the new sequence number) into one
    file in a streaming k-way merge: no step holds the whole split."""
    if len(parts) == 1 and isinstance(parts[0], pl.DataFrame):
        encode(parts[0], items).write_parquet(out)
        return
    starts = sequence_numbers(_scan(parts)) if parts else pl.DataFrame(schema={"seq": pl.Int64})

    def one(df: pl.DataFrame) -> tuple[pl.DataFrame]:
        if df.is_empty():
            return (encode(df, items),)
        mine = starts.filter(pl.col("seq").is_between(df["seq"].min(), df["seq"].max()))
        return (encode(df, items, mine),)

    (encoded,) = _map_parts(parts, [root], one)
    frames = [_scan([p]).set_sorted("seq") for p in encoded]
    merged = functools.reduce(lambda a, b: a.merge_sorted(b, key="seq"), frames)
    merged.sink_parquet(out)


def build_splits(
    lf: pl.LazyFrame,
    cfg: PrepareConfig,
    given: dict[str, pl.LazyFrame] | None = None,
    *,
    out: Path,
    buckets: int = 1,
    given_by: str = "given file",
    detect_order: bool = True,
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
    if not stages["events_read"]:
        raise DataError("the input holds no event rows (a header only?); check the file")
    if not stages["after_filtering"]:
        raise DataError(
            "no events left after filtering "
            f"({', '.join(f'{k}={v}' for k, v in stages.items())}); lower --min-item-support "
            "or check the sequence columns"
        )

    span = time_span(parts)
    stages["time_span"] = [t.isoformat() for t in span]
    if cfg.order_col is not None or (detect_order and _starts_at_zero(parts, span)):
        _check_order_split(cfg, given)
        column = cfg.order_col or cfg.time_col
        stages["order_note"] = (
            f"column {column!r} orders each sequence's events (positions, not times): "
            + ("as asked with --order-col" if cfg.order_col else "its values restart at 0 in every sequence")
            + "; no time is used, so no time split is made"
        )

    def by_time(src: list[Part], period: Period, name: str) -> tuple[list[Part], list[Part]]:
        at = cutoff(_scan(src), period) if not period.empty and _rows(src) else None
        split = split_at_cutoff if cfg.global_cutoff else split_by_time
        before, after = _map_parts(
            src, [work / f"{name}-before", work / f"{name}-after"], lambda df: split(df, period, at)
        )
        if at is not None:
            stages[f"{name}_cutoff"] = at.isoformat()
        return before, after

    def auto(src: list[Part], name: str, chosen: Period) -> tuple[list[Part], list[Part], str]:
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
            rules["test"] = given_by
        else:
            rest, test, rules["test"] = auto(parts, "test", cfg.test_period)
        if "valid" in given:
            train, valid = rest, _clean_parts(given["valid"], cfg, 1, work / "given-valid", {})
            rules["valid"] = given_by
        else:
            train, valid, rules["valid"] = auto(rest, "valid", cfg.valid_period)
        stages["split_rule"] = {k: v or (cfg.split if k == "test" else cfg.valid) for k, v in rules.items()}
        if cfg.global_cutoff and set(rules.values()) != {given_by}:
            stages["split_scheme"] = (
                "one cutoff for every user history: the targets of a split are its events after the cutoff, "
                "every earlier event is only context (fed to the network, never scored), so every scored test "
                "target is later than every training event (whole histories span years: moving them whole would "
                "score events from before the training data ends)"
            )
    if not _rows(train):
        raise DataError(
            f"the test split ({stages['split_rule']['test']}) and validation split ({stages['split_rule']['valid']}) "
            f"leave no training sequences; the data spans {_span_text(span)}"
            + _latest_note(parts, span)
            + ". Use shorter periods, e.g. --split time:0.1 --valid 0.1"
        )
    items = item_table(_scan(train))
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
    shutil.rmtree(work, ignore_errors=True)
    return items, stages


_EPOCH = datetime(1970, 1, 1)


def _starts_at_zero(parts: list[Part], span: tuple[datetime, datetime]) -> bool:
    """Whether every sequence (two or more) starts at time 0: its "times" are positions 0, 1, 2,
    ... (an SR-GNN-style file), which no real clock gives."""
    if span[0] != _EPOCH:
        return False
    starts = _scan(parts).group_by("seq").agg(pl.col("ts").min()).collect(engine="streaming")["ts"]
    return len(starts) >= 2 and bool((starts == _EPOCH).all())


def _check_order_split(cfg: PrepareConfig, given: dict[str, pl.LazyFrame]) -> None:
    """Positions order events but say nothing about time: a time split on them would cut at an
    arbitrary position. Refuse, naming the ways out."""
    column = cfg.order_col or cfg.time_col
    if cfg.leave_one_out:
        return
    periods = {"test": ("test", cfg.test_period), "valid": ("validation", cfg.valid_period)}
    timed = [label for key, (label, period) in periods.items() if key not in given and not period.empty]
    if timed:
        what = "positions in each sequence" if cfg.order_col else "positions that restart at 0 in every sequence"
        raise DataError(
            f"column {column!r} holds {what} (0, 1, 2, ...), not times, so a time split ({' and '.join(timed)}) "
            "would be meaningless. Give the split (--split-col NAME, --test FILE, or --split loo, and --valid 0 "
            f"or --valid FILE), and pass --order-col {column}; or pass --time-unit if they really are times"
        )


def time_span(parts: list[Part]) -> tuple[datetime, datetime]:
    row = _scan(parts).select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")).collect()
    return row["a"][0], row["b"][0]


def _span_text(span: tuple[datetime, datetime]) -> str:
    days = (span[1] - span[0]).total_seconds() / 86400
    return f"{span[0]:%Y-%m-%d %H:%M} to {span[1]:%Y-%m-%d %H:%M} ({days:,.1f} days)"


def _latest_note(parts: list[Part], span: tuple[datetime, datetime]) -> str:
    """Names far-future outliers, which make every time split look empty: the latest distinct
    times (up to 100) that come over a year after all earlier ones."""
    top = _scan(parts).select(pl.col("ts").unique().top_k(101)).collect()["ts"].sort()
    if len(top) < 2:
        return ""
    gaps = top.diff().dt.total_seconds().fill_null(0).to_numpy()
    at = int(gaps.argmax())
    if gaps[at] <= 365 * 86400:
        return ""
    late = f"{top[at]}" if at == len(top) - 1 else f"{top[at]} to {top[-1]}"
    return f"; its latest times ({late}) come over a year after all others (which end {top[at - 1]}): check those rows"


def split_size(parts: list[Part]) -> tuple[int, int]:
    """(targets, sequences) of a split held in parts."""
    if not parts:
        return 0, 0
    st = split_stats(_scan(parts))
    return st["targets"], st["sequences"]


# A part of the out-of-core pipeline: a Parquet file, or, when the whole log is one bucket, the
# frame itself (no round trip through files).
