"""The data options of `prepare` and `train` (columns, sessions, splits, filters, item
features), each named after its PrepareConfig field and declared once."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

import typer

from rnnrec_cli.cli.flags import _FORMATS, DATA, FEATURES, SCALE, Preset, _data, opt, shared_options
from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.rules import TINY_TEST_TARGETS

# ---------------------------------------------------------------------------- data (prepare, train)

Format = Annotated[str | None, _data(_FORMATS, "format")]
Sep = Annotated[str | None, _data("CSV separator ('\\t' or tab for a tab; '::' works too). \\[default: sniffed]")]
Encoding = Annotated[str | None, _data("Text encoding of CSV/JSON inputs, e.g. latin-1 or cp1252.")]
UserCol = Annotated[str | None, _data("User id column.")]
SessionCol = Annotated[str | None, _data("Session id column (sessions given).")]
ItemCol = Annotated[str | None, _data("Item id column.")]
TimeCol = Annotated[str | None, _data("Timestamp column.")]
EventCol = Annotated[str | None, _data("Event type column.")]
ValueCol = Annotated[str | None, _data("Value column (rating, price, ...).")]
TimeUnit = Annotated[str | None, _data("Unit of numeric times: s, ms, us or ns. \\[default: from the magnitude]")]
OrderCol = Annotated[
    str | None,
    _data("A column of positions (0, 1, 2, ...) that orders each sequence's events, for logs without times."),
]
SplitCol = Annotated[
    str | None,
    _data(
        "Column naming each row's split (train/valid/test), used as given like --test; 'none' ignores a "
        "column named split, set or fold. \\[default: such a column, when present]"
    ),
]
SplitValues = Annotated[
    str | None, _data("The split column's values for train, valid and test, e.g. tr,va,te.", None, "--split-values")
]


def _minutes(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds / 60:g}m"


SessionGap = Annotated[
    str | None,
    _data(
        "Inactivity gap that starts a new session (30m, 1h), or 'none' for whole user histories. "
        f"\\[default: {_minutes(PrepareConfig.session_gap)}; ignored when sessions are given]"
    ),
]
KeepRepeats = Annotated[
    bool | None,
    _data(
        "Keep consecutive repeats of the same item. \\[default: collapse, except for a given split]",
        None,
        "--keep-repeats/--collapse-repeats",
    ),
]
MinItemSupport = Annotated[
    int | None,
    _data(
        f"Minimum events per item (iterated with --min-session-length). "
        f"\\[default: {PrepareConfig.min_item_support}; 1 for a given split]"
    ),
]
MinSessionLength = Annotated[int | None, _data("Minimum events per sequence.", "min_session_length")]
Split = Annotated[
    str | None,
    _data(
        "Test split: time:7d (sequences ending in the last 7 days), time:0.1 (last 10% of events in "
        "time), or loo (leave-one-out: each sequence's last event; leaks the timeline). "
        "\\[default: auto = time:7d, or time:0.1 when 7 days leave too small a split]"
    ),
]
Valid = Annotated[
    str | None,
    _data(
        "Validation cut from the end of training: 7d, 0.1, or 0 for none; or a FILE with your own "
        "validation events. \\[default: auto, like --split; 0 for a given split]"
    ),
]
Test = Annotated[
    list[str] | None,
    typer.Option(
        metavar="FILE",
        help="Your own test events (e.g. a published split) instead of --split, used as given; repeatable.",
        rich_help_panel=DATA,
    ),
]
AllowTinyTest = Annotated[
    bool,
    typer.Option(
        "--allow-tiny-test",
        help=f"Accept a test split with fewer than {TINY_TEST_TARGETS} targets.",
        rich_help_panel=DATA,
    ),
]
# prepare only
NoHeader = Annotated[
    bool | None,
    typer.Option(
        "--no-header/--header",
        help="Whether the CSV has a header row. \\[default: it has; predict: as the run's data]",
        rich_help_panel=DATA,
        show_default=False,
    ),
]
Columns = Annotated[str | None, _data("Names for header-less columns, e.g. session,ts,item.")]
TimeOffsetCol = Annotated[str | None, _data("Offset added to the time column (e.g. Diginetica's timeframe).")]
TimeOffsetUnit = Annotated[str | None, _data("s, ms, us or ns for --time-offset-col.", "time_offset_unit")]
MaxLength = Annotated[int | None, _data("Keep the most recent N events of each sequence (0 = all).", "max_length")]
EventsFilter = Annotated[str | None, _data("Keep only these event types, e.g. view,click.", None, "--events")]
MinValue = Annotated[float | None, _data("Keep events with value >= this (e.g. ratings).")]
Buckets = Annotated[
    int | None, opt("Parts cleaned one at a time to bound memory (same result; 0 = from the input size).", SCALE)
]
ItemFeatures = Annotated[
    str | None,
    typer.Option(
        metavar="FILE",
        help="CSV/Parquet of item attributes to join to the catalogue (e.g. movies.csv).",
        rich_help_panel=FEATURES,
    ),
]
ItemKey = Annotated[str | None, opt("Item id column of --item-features. \\[default: item_id]", FEATURES)]
ItemCategorical = Annotated[
    str | None, opt("Categorical feature columns (multi-valued with --item-sep), e.g. genres.", FEATURES)
]
ItemNumeric = Annotated[str | None, opt("Numeric feature columns, e.g. price.", FEATURES)]
ItemVector = Annotated[str | None, opt("A Parquet list column holding a dense vector per item.", FEATURES)]
ItemSep = Annotated[str | None, opt("Separator of multi-valued categories.", FEATURES, (PrepareConfig, "item_sep"))]

# The options of `prepare` that `train` also takes (for raw event files), by parameter name.
SHARED_DATA_OPTIONS: dict[str, Any] = {
    "preset": Preset, "format": Format, "sep": Sep, "encoding": Encoding, "user_col": UserCol,
    "session_col": SessionCol, "item_col": ItemCol, "time_col": TimeCol, "event_col": EventCol, "value_col": ValueCol,
    "time_unit": TimeUnit, "order_col": OrderCol, "split_col": SplitCol, "split_values": SplitValues,
    "session_gap": SessionGap, "split": Split, "valid": Valid, "test": Test, "allow_tiny_test": AllowTinyTest,
    "keep_repeats": KeepRepeats, "min_item_support": MinItemSupport, "min_session_length": MinSessionLength,
}  # fmt: skip


# Stands for the dict `with_data_options` passes.
SHARED: Mapping[str, Any] = MappingProxyType({})


# The data options `prepare` and `train` share, declared once.
with_data_options = shared_options(SHARED_DATA_OPTIONS, "data_options", {"allow_tiny_test": False})
