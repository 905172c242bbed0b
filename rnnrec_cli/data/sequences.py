"""The prepared-data contract: a data directory's splits as packed `Sequences`, its manifest,
item table, and where the targets of a split are.

Everything downstream of `prepare` (batches, training, scoring, baselines, evaluation) reads
data through this module, never through the ETL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rnnrec_cli.errors import DataError, reading
from rnnrec_cli.files import load_json

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
ITEMS = "items.parquet"


def split_targets(stats: dict[str, Any]) -> int:
    """Target events of a split's manifest entry (manifests before 2026-12 lack the field)."""
    return stats.get("targets", stats["events"] - stats["sequences"])


@dataclass(frozen=True)
class Sequences:
    """Sequences packed end to end: items[offsets[i]:offsets[i+1]] is sequence i, in time order.

    items: <int32>[n_events]; offsets: <int64>[n_sequences + 1]; values: <float32>[n_events],
    the value attached to each event (rating, price, ...), when read; events: <int32>[n_events],
    each event's type as an index into a vocabulary (-1 = not in it), when read; scored:
    <bool>[n_events], which events are targets, in a split cut at one cutoff whose earlier events
    are context only (None: every event but a sequence's first).
    """

    items: np.ndarray
    offsets: np.ndarray
    values: np.ndarray | None = None
    events: np.ndarray | None = None
    scored: np.ndarray | None = None

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
    return check_manifest(load_json(data_dir / MANIFEST), data_dir / MANIFEST)


_SPLIT_COUNTS = ("events", "sequences", "targets", "items")


def check_manifest(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """The keys rnnrec reads from a data manifest, with their types; a hand-edited or damaged one
    is one error naming the key, not a crash later."""
    from rnnrec_cli.config import PrepareConfig
    from rnnrec_cli.files import format_version
    from rnnrec_cli.validation import from_dict, json_type

    fix = "prepare the data again with `rnnrec prepare`"
    format_version(manifest, path, fix)
    n_items = manifest.get("n_items")
    if not isinstance(n_items, int) or isinstance(n_items, bool) or n_items < 1:
        raise DataError(f"{path}: 'n_items' must be a positive integer, not {json_type(n_items)}; {fix}")
    if not isinstance(manifest.get("config"), dict):
        raise DataError(f"{path}: 'config' must be an object, not {json_type(manifest.get('config'))}; {fix}")
    from_dict(PrepareConfig, manifest["config"], where=f"{path} [config]")
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        raise DataError(f"{path}: 'splits' must be an object, not {json_type(splits)}; {fix}")
    for name, stats in splits.items():
        bad = not isinstance(stats, dict) or any(
            not isinstance(stats.get(k, 0), int) or isinstance(stats.get(k, 0), bool) for k in _SPLIT_COUNTS
        )
        if bad or any(stats.get(k, 0) < 0 for k in _SPLIT_COUNTS):
            raise DataError(f"{path}: 'splits' [{name}] must hold counts ({', '.join(_SPLIT_COUNTS)}); {fix}")
        if not all(isinstance(stats.get(k), str | None) for k in ("time_min", "time_max")):
            raise DataError(f"{path}: 'splits' [{name}] time_min/time_max must be timestamps (text); {fix}")
    inputs = manifest.get("inputs", [])
    if not isinstance(inputs, list) or not all(
        isinstance(i, dict) and isinstance(i.get("path", ""), str) for i in inputs
    ):
        raise DataError(f"{path}: 'inputs' must be an array of objects, each with a 'path' (text); {fix}")
    stages = manifest.get("stages", {})
    rule = stages.get("split_rule", {}) if isinstance(stages, dict) else None
    if not isinstance(rule, dict) or not all(isinstance(v, str | None) for v in rule.values()):
        raise DataError(f"{path}: 'stages' must be an object whose 'split_rule' maps splits to rules (text); {fix}")
    for key in ("created", "rnnrec_version", "polars_version"):
        if not isinstance(manifest.get(key, ""), str):
            raise DataError(f"{path}: {key!r} must be text, not {json_type(manifest[key])}; {fix}")
    for key in ("warnings",):
        if not isinstance(manifest.get(key, []), list):
            raise DataError(f"{path}: {key!r} must be an array, not {json_type(manifest[key])}; {fix}")
    return manifest


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
    with reading(path):
        for df in pl.scan_parquet(path, glob=False).select(columns).collect_batches(chunk_size=READ_BATCH_ROWS):
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
    if "event" not in _schema(path):
        raise DataError(f"{path} has no event-type column; prepare the data with --event-col (or --preset otto)")
    with reading(path):
        types = (
            pl.scan_parquet(path, glob=False).select(pl.col("event").cast(pl.String).drop_nulls().unique()).collect()
        )
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
    schema = _schema(path)
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
    marked = "target" in schema
    if marked:
        columns.append("target")
    parts: list[np.ndarray] = []
    value_parts: list[np.ndarray] = []
    event_parts: list[np.ndarray] = []
    scored_parts: list[np.ndarray] = []
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
        if marked:
            scored_parts.append(df["target"].fill_null(False).to_numpy()[keep])
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
    scored = (np.concatenate(scored_parts).astype(bool) if scored_parts else np.zeros(0, bool)) if marked else None
    return Sequences(items=items, offsets=np.r_[first, n].astype(np.int64), values=vals, events=evs, scored=scored)


def _schema(path: Path) -> dict[str, Any]:
    with reading(path):
        return dict(pl.scan_parquet(path, glob=False).collect_schema())


def read_items(data_dir: Path) -> pl.DataFrame:
    with reading(data_dir / ITEMS):
        return pl.read_parquet(data_dir / ITEMS, glob=False)


def item_counts(data_dir: Path) -> np.ndarray:
    """<int64>[n_items] training events per item index."""
    return read_items(data_dir).sort("idx")["count"].to_numpy()


def is_leave_one_out(data_dir: Path) -> bool:
    return load_manifest(data_dir).get("config", {}).get("split") == "loo"


# ---------------------------------------------------------------------------- targets of a split


@dataclass(frozen=True)
class Positions:
    """Every target of a split, in sequence order: the sequence it belongs to, the current (last
    seen) item, the target item, and its prefix `items[start:end]` (`end` is the target's index
    in the packed items)."""

    seq: np.ndarray
    current: np.ndarray
    target: np.ndarray
    start: np.ndarray
    end: np.ndarray


def positions(seqs: Sequences) -> Positions:
    """Every event but the first of each sequence is a target, predicted from those before it."""
    lengths = seqs.lengths
    n = np.maximum(lengths - 1, 0)
    seq = np.repeat(np.arange(len(seqs)), n)
    first = np.repeat(seqs.offsets[:-1], n)
    end = first + 1 + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    return Positions(seq=seq, current=seqs.items[end - 1], target=seqs.items[end], start=first, end=end)


def scored_mask(seqs: Sequences) -> np.ndarray:
    """<bool>[n_targets]: the target is scored (sequence order); in a split with context, only
    the events after its cutoff are."""
    if seqs.scored is None:
        return np.ones(seqs.n_targets, bool)
    return seqs.scored[positions(seqs).end]


def last_target_mask(seqs: Sequences) -> np.ndarray:
    """<bool>[n_targets]: the target is the last event of its sequence (sequence order)."""
    pos = positions(seqs)
    return pos.end == seqs.offsets[1:][pos.seq] - 1


def validation_targets(seqs: Sequences, leave_one_out: bool) -> np.ndarray | None:
    """The validation targets that are scored: the last of each sequence (leave-one-out), the
    events after the cutoff (a split with context), or all (None)."""
    if leave_one_out:
        return last_target_mask(seqs)
    return None if seqs.scored is None else scored_mask(seqs)
