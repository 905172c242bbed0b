"""What the API accepts as input: paths or tables in memory for event logs, and sessions as
lists of item ids, a {session: items} mapping or a DataFrame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rnnrec_cli.config import RunConfig
from rnnrec_cli.errors import ConfigError

Events = Any


def materialize(events: Events, holder: Path, name: str) -> list[str]:
    """Paths for `events`: paths as given; a table in memory written to Parquet (its column
    types kept) in `holder`."""
    if isinstance(events, (str, Path)):
        return [str(events)]
    if isinstance(events, Sequence) and all(isinstance(e, (str, Path)) for e in events):
        return [str(e) for e in events]
    import polars as pl

    if isinstance(events, pl.LazyFrame):
        events = events.collect()
    if not isinstance(events, pl.DataFrame):
        if type(events).__module__.split(".")[0] != "pandas":
            raise ConfigError(f"{name}: give a path, a list of paths, or a Polars/pandas DataFrame")
        events = pl.from_pandas(events)
    path = holder / f"{name}.parquet"
    events.write_parquet(path)
    return [str(path)]


_COLUMNS = ("user_col", "session_col", "item_col", "time_col", "event_col", "value_col", "order_col", "time_offset_col")


def session_frame(sessions: Any, run: Path, cfg: RunConfig) -> tuple[Any, tuple[str, ...]]:
    """Sessions in memory as a table, and the run's column fields that table lacks. A list of
    item-id lists (each in time order) or a {session id: item ids} mapping becomes a table in
    the run's own column names; a DataFrame is used as given."""
    import polars as pl

    from rnnrec_cli.files import load_json

    if isinstance(sessions, pl.DataFrame) or type(sessions).__module__.split(".")[0] == "pandas":
        return sessions, ()
    if cfg.model.takes_values or cfg.model.event_input:
        raise ConfigError(
            "sessions: this run's model reads each event's value or event type; pass a DataFrame with those columns"
        )
    prepared = load_json(run / "data_manifest.json")["config"]
    key_field = "session_col" if prepared.get("session_col") else "user_col"
    key, item = prepared.get(key_field) or "session_id", prepared.get("item_col") or "item_id"
    pairs = sessions.items() if isinstance(sessions, Mapping) else enumerate(sessions)
    keys, items = [], []
    for k, seq in pairs:
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
            raise ConfigError(f"sessions: session {k!r} must be a list of item ids, not {type(seq).__name__}")
        keys += [str(k)] * len(seq)
        items += [str(i) for i in seq]
    frame = pl.DataFrame({key: keys, item: items}, schema={key: pl.String, item: pl.String})
    return frame, tuple(c for c in _COLUMNS if c not in (key_field, "item_col"))
