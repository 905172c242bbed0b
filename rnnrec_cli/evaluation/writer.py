"""Writing predictions: CSV, Parquet or JSON lines to a file (atomically) or stdout, with
spreadsheet-formula cells neutralised on request."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from rnnrec_cli.errors import DataError
from rnnrec_cli.evaluation.predict import PredictStats
from rnnrec_cli.files import atomic_write, is_special


def write_predictions(
    frames: Iterable[pl.DataFrame], out: str, fmt: str, *, safe_csv: bool = False, stats: PredictStats | None = None
) -> None:
    """Stream CSV/JSONL frames as they come, to stdout ('-') or to a file that appears only when
    complete; Parquet needs a file and is written at the end."""
    if fmt == "parquet":
        if out == "-":
            raise DataError("--format parquet needs a file: pass -o FILE")
        frames = list(frames)
        with atomic_write(Path(out)) as tmp:
            (pl.concat(frames) if frames else pl.DataFrame()).write_parquet(tmp)
        return
    stats = stats if stats is not None else PredictStats()
    if out == "-":
        _write_stream(frames, sys.stdout.buffer, fmt, safe_csv, stats)
        return
    if is_special(Path(out)):  # /dev/null, a named pipe: a stream, never replaced
        with open(out, "wb") as target:
            _write_stream(frames, target, fmt, safe_csv, stats)
        return
    with atomic_write(Path(out)) as tmp, open(tmp, "wb") as target:
        _write_stream(frames, target, fmt, safe_csv, stats)


# What a spreadsheet reads as the start of a formula (OWASP: CSV injection).
_FORMULA_START = r"^[=+\-@\t\r]"


def _neutralised(df: pl.DataFrame, safe: bool, stats: PredictStats) -> pl.DataFrame:
    text = [c for c, t in df.schema.items() if t == pl.String]
    if not text:
        return df
    risky = {c: pl.col(c).str.contains(_FORMULA_START).fill_null(False) for c in text}
    stats.formula_cells += int(df.select(pl.sum_horizontal(*(r.sum() for r in risky.values()))).item())
    if not safe:
        return df
    return df.with_columns(
        pl.when(r).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c) for c, r in risky.items()
    )


def _write_stream(frames: Iterable[pl.DataFrame], target: Any, fmt: str, safe_csv: bool, stats: PredictStats) -> None:
    first = True
    for df in frames:
        if fmt == "csv":
            _neutralised(df, safe_csv, stats).write_csv(target, include_header=first)
        else:
            df.write_ndjson(target)
        first = False
        target.flush()
    if first and fmt == "csv":  # no input rows: still write the header
        target.write(b"session_id,rank,item_id,score,fallback\n")
