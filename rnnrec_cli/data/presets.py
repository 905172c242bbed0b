"""Column mappings and defaults of public datasets (`--preset NAME`): plain data, applied over
the PrepareConfig defaults and under explicit flags."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnnrec_cli.errors import ConfigError
from rnnrec_cli.rules import AS_GIVEN

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


def resolve(fields: Mapping[str, Any], *, preset: str | None = None, given_test: bool = False) -> dict[str, Any]:
    """PrepareConfig values, in one order for the command line and the library: the class
    defaults < the preset < the given-split rule (a test split the user brings is used as given,
    AS_GIVEN) < `fields`, the values set explicitly."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset: unknown {preset!r}; choose from {', '.join(PRESETS)}")
    return {
        **({"preset": preset, **PRESETS[preset]} if preset is not None else {}),
        **(AS_GIVEN if given_test else {}),
        **fields,
    }
