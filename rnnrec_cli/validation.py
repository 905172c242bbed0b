"""Parsing and checking configuration values: durations, split rules, choices, JSON types, and
building frozen config dataclasses from JSON-like values (unknown keys refused)."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args

from rnnrec_cli.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str) -> float:
    """'30m' -> 1800.0 seconds. A bare number means seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{what} {text!r} is not a duration; use e.g. 45s, 30m, 1h, 7d or 2w")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]


@dataclass(frozen=True)
class Period:
    """The final stretch of time that a split takes: a duration, or a fraction of the time range."""

    seconds: float | None = None
    fraction: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.seconds or self.fraction)


def parse_period(text: str, what: str) -> Period:
    """'7d' -> the last 7 days; '0.1' -> the last 10% of the time range; '0' -> nothing."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return Period(seconds=parse_duration(text, what))
    if value == 0:
        return Period()
    if 0 < value < 1:
        return Period(fraction=value)
    raise ConfigError(
        f"{what} {text!r}: a bare number must be a fraction in (0, 1), or 0 for none; "
        "for a duration add a unit, e.g. 7d"
    )


def parse_split(text: str) -> Period:
    kind, _, arg = text.partition(":")
    if kind != "time" or not arg:
        raise ConfigError(
            f"--split {text!r} is not supported; use time:DURATION (e.g. time:7d) or time:FRACTION (e.g. time:0.1)"
        )
    period = parse_period(arg, "--split")
    if period.empty:
        raise ConfigError(f"--split {text!r} leaves no test data; use e.g. time:7d")
    return period


def check_choice(name: str, value: Any, literal: Any) -> None:
    choices = get_args(literal)
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of: {', '.join(map(str, choices))}")


def check_finite(cfg: Any) -> None:
    """Every float of a config (also inside tuples) is a number: NaN and infinity are not
    settings, they only surface later as a diverged loss or an empty output."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {v}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_probability(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


def json_type(value: Any) -> str:
    """How JSON calls a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return "an array" if isinstance(value, list | tuple) else "an object"


def _type_error(hint: Any, value: Any) -> str | None:
    """Why `value` (from JSON) does not fit the annotation `hint`; None when it does. Strict:
    1.5 is not an int, "1" is not a number, and true is not a number."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        reasons = [_type_error(a, value) for a in args]
        return None if any(r is None for r in reasons) else next(r for r in reasons if r)
    if hint is type(None):
        return None if value is None else "null"
    if origin is Literal:
        return None if value in args else f"one of {', '.join(map(repr, args))}"
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return "an array"
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        hints = [inner] * len(value) if inner is not None else list(args)
        if len(hints) != len(value):
            return f"an array of {len(hints)}"
        bad = [r for h, v in zip(hints, value, strict=True) if (r := _type_error(h, v))]
        return f"an array whose items are each {bad[0]}" if bad else None
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, dict) else "an object"
    return None


def check_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Each value's JSON type against the field's annotation, naming the key and the type wanted."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key, value in values.items():
        wanted = _type_error(hints[key], value)
        if wanted is not None:
            raise ConfigError(f"{where}: {key!r} must be {wanted}, not {json_type(value)}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    check_types(cls, values, where)
    out = {}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        sub = hints.get(key)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = _build(sub, value, f"{where} [{key}]")
        out[key] = value
    try:
        return cls(**out)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ConfigError as exc:
        # A value the config refuses names the file it was read from (an inner section's does).
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build a config dataclass from JSON-like values, rejecting unknown keys."""
    return _build(cls, values, where)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
