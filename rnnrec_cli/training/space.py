"""The tuner's search space: the parameters it may search, the default space per loss, a space
file read and checked, and each trial's suggested settings applied to the configs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli import files
from rnnrec_cli.config import ModelConfig, TrainConfig
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.validation import to_dict

if TYPE_CHECKING:
    import optuna


# ---------------------------------------------------------------------------- search space

# What a space may search: the config field behind each name, and whether it is an integer.
# `layers` is one layer's size (GRU4Rec tunes a single layer); a model flag such as
# `--layers 256,128` fixes it instead.
PARAMS: dict[str, tuple[type, bool]] = {
    "layers": (ModelConfig, True),
    "embedding": (ModelConfig, True),
    "dropout_embed": (ModelConfig, False),
    "dropout_hidden": (ModelConfig, False),
    "batch_size": (TrainConfig, True),
    "bptt": (TrainConfig, True),
    "n_sample": (TrainConfig, True),
    "lr": (TrainConfig, False),
    "momentum": (TrainConfig, False),
    "sample_alpha": (TrainConfig, False),
    "logq": (TrainConfig, False),
    "bpreg": (TrainConfig, False),
    "elu": (TrainConfig, False),
    "loss": (TrainConfig, False),
}
# Parameters of one loss: a trial suggests them only when it trains that loss (a conditional
# space), and a study of one fixed loss leaves the others' out.
FOR_LOSS = {"logq": "ce", "bpreg": "bpr-max", "elu": "bpr-max"}
LOSSES = ("ce", "bpr-max", "top1-max")

# The ranges of GRU4Rec's published Optuna search (Hidasi & Czapp 2023; REFERENCE.md), on the
# grids its parameter files use, so best.json holds round values. The loss decides which
# loss-specific parameters join: log-Q for cross-entropy, the score regulariser and ELU for BPR-max.
_COMMON: dict[str, Any] = {
    "layers": {"low": 64, "high": 512, "step": 32},
    "batch_size": {"low": 32, "high": 256, "step": 16},
    "dropout_embed": {"low": 0.0, "high": 0.5, "step": 0.05},
    "dropout_hidden": {"low": 0.0, "high": 0.7, "step": 0.05},
    "lr": {"low": 0.01, "high": 0.25, "step": 0.005},
    "momentum": {"low": 0.0, "high": 0.9, "step": 0.05},
    "sample_alpha": {"low": 0.0, "high": 1.0, "step": 0.1},
    # 0 = the constrained (tied) embedding, GRU4Rec's default and usually best; else a separate one.
    "embedding": {"choices": [0, 64, 128, 256]},
}
_CE = {"logq": {"choices": [0.0, 1.0]}}
_BPR_MAX = {"bpreg": {"low": 0.0, "high": 2.0, "step": 0.05}, "elu": {"choices": [0.0, 0.5, 1.0]}}
SPACES: dict[str, dict[str, Any]] = {
    "ce": {**_COMMON, **_CE},
    "bpr-max": {**_COMMON, **_BPR_MAX},
    # The loss searched too (unless --loss fixes it), each with its own parameters.
    "auto": {**_COMMON, "loss": {"choices": ["ce", "bpr-max"]}, **_CE, **_BPR_MAX},
}


@dataclass(frozen=True)
class Dim:
    """One searched parameter: a range (`low`..`high`, optional `step` or `log`), `choices`,
    or a fixed `value`."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    value: Any = None

    def to_json(self) -> Any:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        if self.low is None:
            return self.value
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out

    def values(self) -> list[Any]:
        """The extreme values this dimension can take (to check them against the configs)."""
        if self.choices is not None:
            return list(self.choices)
        return [self.value] if self.low is None else [self.low, self.high]


def _dim(name: str, spec: Any, where: str) -> Dim:
    """A `Dim` from its JSON form, checked: known keys, numbers, a non-empty range."""
    if name == "loss":
        choices = spec.get("choices") if isinstance(spec, dict) and set(spec) == {"choices"} else [spec]
        if not isinstance(choices, list) or not choices or any(c not in LOSSES for c in choices):
            raise ConfigError(f'{where}: loss must be one of {", ".join(LOSSES)} or {{"choices": [...]}} of them')
        return Dim(name, choices=tuple(choices)) if isinstance(spec, dict) else Dim(name, value=spec)
    is_int = PARAMS[name][1]
    kind = "an integer" if is_int else "a number"

    def number(key: str, x: Any) -> float:
        ok = isinstance(x, int) if is_int else isinstance(x, int | float)
        if isinstance(x, bool) or not ok:
            raise ConfigError(f"{where}: {name}.{key} must be {kind}, got {x!r}")
        return x

    if not isinstance(spec, dict):
        number("value", spec)
        return Dim(name, value=spec)
    unknown = sorted(set(spec) - {"low", "high", "step", "log", "choices"})
    if unknown:
        raise ConfigError(f"{where}: {name} has unknown key(s) {', '.join(unknown)}; use low/high/step/log or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {name}.choices must be a non-empty list (and alone), got {choices!r}")
        return Dim(name, choices=tuple(number("choices", c) for c in choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: {name} needs low and high (or choices)")
    low, high = number("low", spec["low"]), number("high", spec["high"])
    if low > high:
        raise ConfigError(f"{where}: {name} has an empty range (low {low} > high {high})")
    step, log = spec.get("step"), spec.get("log", False)
    if step is not None and number("step", step) <= 0:
        raise ConfigError(f"{where}: {name}.step must be > 0, got {step}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {name}.log must be true or false, got {log!r}")
    if log and (step is not None or low <= 0):
        raise ConfigError(f"{where}: {name} with log needs low > 0 and no step")
    return Dim(name, low=low, high=high, step=step, log=log)


def load_space(loss: str, file: Path | None) -> dict[str, Any]:
    """The space's JSON form: the shipped space of `loss` (`auto`: the loss searched too), with
    a --space FILE's changes.

    The file is `{"params": {NAME: SPEC or null, ...}}`, optionally with `"base": "auto"`,
    `"ce"`, `"bpr-max"` or `"none"` (default: the shipped space of --loss, or `auto`). Its
    entries replace the base's, null drops one from the search; with base "none" the file's
    params are the space."""
    if file is None:
        return dict(SPACES.get(loss, SPACES["ce"]))
    where = f"--space {file}"
    values = files.load_json(file)
    if not isinstance(values, dict) or not set(values) <= {"base", "params"} or "params" not in values:
        raise ConfigError(f'{where}: expected {{"params": {{...}}}} and optionally "base" (ce, bpr-max or none)')
    base = values.get("base", loss)
    if base not in (*SPACES, "none"):
        raise ConfigError(f"{where}: base {base!r} is not one of: {', '.join(SPACES)}, none")
    if not isinstance(values["params"], dict):
        raise ConfigError(f"{where}: params must be an object of NAME: SPEC")
    space = {} if base == "none" else dict(SPACES[base])
    for name, spec in values["params"].items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = spec
    return space


def parse_space(space: Mapping[str, Any], where: str) -> list[Dim]:
    """Checked dimensions of a space's JSON form; names not in PARAMS are an error."""
    unknown = sorted(set(space) - set(PARAMS))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; searchable: {', '.join(PARAMS)}")
    return [_dim(name, spec, where) for name, spec in space.items()]


def apply(model: ModelConfig, train: TrainConfig, params: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The configs with a trial's parameter values; raises ConfigError for an invalid value."""
    changes: dict[type, dict[str, Any]] = {ModelConfig: {}, TrainConfig: {}}
    for name, value in params.items():
        changes[PARAMS[name][0]][name] = (int(value),) if name == "layers" else value
    return dataclasses.replace(model, **changes[ModelConfig]), dataclasses.replace(train, **changes[TrainConfig])


def check_space(dims: list[Dim], model: ModelConfig, train: TrainConfig, where: str) -> None:
    """Every extreme value of every dimension must make a valid config (e.g. dropout < 1)."""
    for dim in dims:
        for value in dim.values():
            try:
                apply(model, train, {dim.name: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: {dim.name} = {value!r} is invalid: {exc}") from None


def suggest(trial: optuna.Trial, dims: list[Dim]) -> dict[str, Any]:
    """The trial's value of every dimension; the loss first, then only its own parameters."""
    out: dict[str, Any] = {}
    for d in sorted(dims, key=lambda d: d.name != "loss"):
        if d.name in FOR_LOSS and "loss" in out and out["loss"] != FOR_LOSS[d.name]:
            continue
        if d.choices is not None:
            out[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.low is None:
            out[d.name] = d.value
        else:
            assert d.high is not None  # a range has both ends (`_dim`)
            if PARAMS[d.name][1]:
                out[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
            else:
                value = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
                # Grid values as written (0.15, not 0.15000000000000002) for best.json.
                out[d.name] = round(value, 10)
    return out


def baseline(model: ModelConfig, train: TrainConfig, dims: list[Dim]) -> dict[str, Any]:
    """The searched parameters' values in the given configs (the defaults, or the --config
    file's and flags'): trial 0 trains them, so a study's best is never worse on validation than
    what it started from. A value the space does not offer (a --space FILE's narrower range) is
    left to the sampler."""
    out: dict[str, Any] = {}
    for d in dims:
        if (d.low is None and d.choices is None) or FOR_LOSS.get(d.name, train.loss) != train.loss:
            continue
        value = (
            model.layers[0]
            if d.name == "layers"
            else getattr(model if PARAMS[d.name][0] is ModelConfig else train, d.name)
        )
        inside = value in d.choices if d.choices is not None else d.low <= value <= d.high  # type: ignore[operator]
        if inside:
            out[d.name] = value
    return out


def describe(loss: str) -> str:
    """The shipped space of `loss` in words, for help and docs: 'layers 64-512 (step 32), ...'."""

    def words(name: str, spec: dict[str, Any]) -> str:
        if "choices" in spec:
            return f"{name} one of {', '.join(map(str, spec['choices']))}"
        return f"{name} {spec['low']}-{spec['high']} (step {spec['step']})"

    space = SPACES[loss]
    parts = [words(n, spec) for n, spec in space.items() if n not in FOR_LOSS]
    for each in dict.fromkeys(FOR_LOSS.values()):
        own = [words(n, spec) for n, spec in space.items() if FOR_LOSS.get(n) == each]
        if own:
            parts.append(f"with {each}: {', '.join(own)}")
    return "; ".join(parts)


def fixed_settings(model: ModelConfig, train: TrainConfig, dims: list[Dim]) -> dict[str, Any]:
    """The settings every trial shares (what is not searched), as JSON: a study must not mix
    trials of different epochs, cells or data. Fields that change no result (checkpoint
    timing, devices, prefetch, the narrowed tail) are left out, so a worker may set them its own way."""
    searched = {d.name for d in dims}
    io_only = {"checkpoint_every", "devices", "shard_items", "prefetch", "narrow_tail", "eval_batch_size"}
    out = {f"model.{k}": v for k, v in to_dict(model).items() if k not in searched}
    out |= {f"train.{k}": v for k, v in to_dict(train).items() if k not in searched | io_only}
    return json.loads(json.dumps(out))


def without(space: dict[str, Any], fixed: set[str], loss: str) -> dict[str, Any]:
    """The space less the parameters that flags fix (`--layers 100` trains every trial with 100),
    and, when the loss is not searched, the other losses' parameters."""
    kept = {k: v for k, v in space.items() if k not in fixed}
    if "loss" not in kept:
        kept = {k: v for k, v in kept.items() if FOR_LOSS.get(k, loss) == loss}
    return kept
