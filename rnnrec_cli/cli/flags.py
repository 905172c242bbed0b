"""The command-line options, shared as `Annotated` aliases, and their turning into configs.

A flag that sets a config field has that field's name and defaults to None ("not given"); its
help shows the dataclass default, so each default is written once, in config.py or options.py.
Only the flags a user gave reach the configs (`given`), over any --config file and preset.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from rnnrec_cli.config import ModelConfig, PrepareConfig, TrainConfig, task_train_defaults
from rnnrec_cli.data.presets import PRESETS, resolve
from rnnrec_cli.errors import ConfigError, OptionError
from rnnrec_cli.files import load_json
from rnnrec_cli.options import EvalOptions, PredictOptions
from rnnrec_cli.validation import check_types, json_type, parse_duration

F = TypeVar("F", bound=Callable[..., Any])
DATA, FEATURES, MODEL, LOSS, OPTIMISATION, RUN, SCALE = (
    "Data", "Item features", "Model", "Loss", "Optimisation", "Run", "Scale",
)  # fmt: skip


def shared_options(options: Mapping[str, Any], placeholder: str, defaults: Mapping[str, Any] | None = None) -> Any:
    """A decorator giving a command a set of options declared once for several commands: Typer
    sees them in the command's signature where its `placeholder` parameter stands, and the
    command receives them together as that one dict (each default None unless in `defaults`)."""

    def decorate(fn: F) -> F:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())
        at = next(i for i, p in enumerate(own) if p.name == placeholder)
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=(defaults or {}).get(name), annotation=kind)
            for name, kind in options.items()
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[:at] + shared + own[at + 1 :]]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            group = {name: kwargs.pop(name) for name in options}
            return fn(**kwargs, **{placeholder: group})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return command  # type: ignore[return-value]

    return decorate


def _default_text(cls: type, name: str) -> str:
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if spec.default is not dataclasses.MISSING:
        value = spec.default
    else:
        assert spec.default_factory is not dataclasses.MISSING  # every config field has a default or a factory
        value = spec.default_factory()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def opt(help_text: str, panel: str | None = None, field: tuple[type, str] | None = None, *names: str) -> Any:
    """An option under `panel` whose help names the config field's default."""
    if field is not None:
        help_text = f"{help_text} \\[default: {_default_text(*field)}]"
    return typer.Option(*names, help=help_text, rich_help_panel=panel, show_default=False)


# ---------------------------------------------------------------------------- shared

Force = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Preset = Annotated[
    str | None,
    opt(f"Column mapping and defaults for a public dataset: {', '.join(PRESETS)}.", DATA),
]
Devices = Annotated[int | None, opt("Devices to split the sequences over (0 = all visible).", SCALE)]

# ---------------------------------------------------------------------------- evaluate


def _e(help_text: str, name: str, *names: str) -> Any:
    return opt(help_text, None, (EvalOptions, name), *names)


EvalSplit = Annotated[str | None, _e("test or valid.", "split")]
Ks = Annotated[str | None, _e("Cut-offs, e.g. 1,5,10,20.", "ks", "--k")]
Ties = Annotated[str | None, _e("conservative, optimistic or median.", "ties")]
Baselines = Annotated[str | None, _e("Comma list of pop, spop, markov, iknn, sknn; or all, or none.", "baselines")]
LastOnly = Annotated[bool | None, _e("Score only the last event of each sequence.", "last_only", "--last-only")]
ExcludeSeen = Annotated[
    bool | None, _e("Remove items seen earlier in the sequence from the ranking.", "exclude_seen", "--exclude-seen")
]
Repeat = Annotated[
    str | None,
    _e(
        "Raise the model's scores of items the sequence already holds by WEIGHT x the row's score sd x log(1 + "
        "times seen): run (the weight training chose, see train --repeat-holdout), off, a weight (e.g. 2; 1000 "
        "puts them first) or auto (chosen now on the validation split). Baselines are not boosted.",
        "repeat",
    ),
]
Sampled = Annotated[
    int | None, _e("Also report sampled metrics against N random items (not comparable).", "n_sampled", "--sampled")
]
Knn = Annotated[int | None, _e("Neighbours for sknn.", "knn")]
KnnSample = Annotated[int | None, _e("Most recent candidate sessions sknn considers.", "knn_sample")]
Bootstrap = Annotated[int | None, _e("Bootstrap resamples for confidence intervals.", "n_boot", "--bootstrap")]
TargetEvents = Annotated[
    str | None,
    _e(
        "Score only next-item targets of these event types, e.g. order ('which items will be bought').",
        "target_events",
    ),
]
EvalName = Annotated[
    str | None,
    opt("Name of this evaluation, kept in eval/NAME/. \\[default: from the options; 'default' for the defaults]"),
]
EvalForce = Annotated[
    bool, typer.Option("--force", help="Replace an evaluation of the same --name made with other options.")
]
ShowEval = Annotated[
    str | None, typer.Option("--eval", help="The evaluation to show (default: 'default', or a run's only one).")
]
CompareEval = Annotated[
    str | None,
    typer.Option(
        "--eval",
        help="The evaluation to compare (default: 'default', or the one the runs share), or one per run, in order "
        "(e.g. --eval default,repeat-off: a run given twice, with and without the repeat boost).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")]

# ---------------------------------------------------------------------------- predict


def _p(help_text: str, name: str, *names: str) -> Any:
    return opt(help_text, None, (PredictOptions, name), *names)


# predict's --format is its output's, so the input's (prepare's --format) is --input-format.
_FORMATS = "auto, csv, parquet, jsonl or otto."


def _data(help_text: str, name: str | None = None, *names: str) -> Any:
    return opt(help_text, DATA, (PrepareConfig, name) if name else None, *names)


InputFormat = Annotated[str | None, _data(f"Input format: {_FORMATS} \\[default: the run's]", None, "--input-format")]
K = Annotated[int | None, _p("Recommendations per sequence (or per position).", "k", "-k")]
OutFormat = Annotated[str | None, _p("csv, jsonl or parquet.", "format", "--format")]
PredictExcludeSeen = Annotated[
    bool | None, _p("Leave out items already in the session.", "exclude_seen", "--exclude-seen/--include-seen")
]
PredictRepeat = Annotated[
    str | None,
    _p(
        "Raise the scores of the session's own items by WEIGHT x the row's score sd x log(1 + times seen), as "
        "`evaluate --repeat` does: run (the weight training chose; applied with --include-seen), off, or a "
        "weight (needs --include-seen).",
        "repeat",
    ),
]
EveryPosition = Annotated[
    bool | None, _p("Recommend after every event, not only the last.", "every_position", "--every-position")
]
Fallback = Annotated[
    bool | None, _p("Popular items for sessions with no known item.", "fallback", "--fallback/--no-fallback")
]
SafeCsv = Annotated[
    bool | None,
    _p(
        "Prefix ids that start with = + - @ (spreadsheet formulas) with ' in CSV output; by default ids stay exact.",
        "safe_csv",
        "--safe-csv",
    ),
]
PredictTask = Annotated[
    str | None,
    _p(
        "next-item (recommendations) or value: each event's value predicted from the events before it "
        "(session_id,position,item_id,value,predicted_value), or with --candidates each listed item's value.",
        "task",
    ),
]
Generate = Annotated[int | None, _p("Generate a continuation of N items instead of a top-K.", "generate")]
Strategy = Annotated[str | None, _p("greedy, beam or sample (with --generate).", "strategy")]
Beams = Annotated[int | None, _p("Beam width for --strategy beam.", "beams")]
Temperature = Annotated[float | None, _p("Softmax temperature for --strategy sample.", "temperature")]
PredictSeed = Annotated[int | None, _p("Random seed for --strategy sample.", "seed")]
PredictBatch = Annotated[int | None, _p("Sequences scored per batch.", "batch_size")]
BlockRows = Annotated[int | None, _p("Rows of stdin read per block.", "block_rows")]


def item_list(help_text: str) -> Any:
    return typer.Option(exists=True, dir_okay=False, metavar="FILE", help=help_text)


# ---------------------------------------------------------------------------- values


def _items(kind: Callable[[str], Any], what: str) -> Callable[[str, str], tuple]:
    def parse(text: str, flag: str) -> tuple:
        try:
            return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not {what}", param_hint=flag) from None

    return parse


def _weighting(text: str, flag: str) -> float:
    """'inverse-pop^0.5' or '0.5' -> 0.5."""
    try:
        return float(text.removeprefix("inverse-pop^"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not inverse-pop^BETA (e.g. inverse-pop^0.5) or a number", param_hint=flag
        ) from None


def _separator(text: str, flag: str) -> str:
    """A tab is hard to type in a shell: '\\t' and 'tab' stand for it."""
    return "\t" if text in ("\\t", "tab") else text


def _baselines(text: str, flag: str) -> tuple[str, ...]:
    if text.strip() in ("all", "none", ""):
        return EvalOptions.baselines if text.strip() == "all" else ()
    names = _items(str, "a comma-separated list")(text, flag)
    bad = [n for n in names if n not in EvalOptions.baselines]
    if bad:
        raise typer.BadParameter(
            f"unknown baseline(s) {', '.join(bad)}; choose from {', '.join(EvalOptions.baselines)}, all or none",
            param_hint=flag,
        )
    return names


_LIST = _items(str, "a comma-separated list")
# Flags given as text that fill a tuple or number field, and the flag names messages use.
_PARSERS: dict[str, tuple[Callable[[str, str], Any], str]] = {
    "layers": (_items(int, "a comma-separated list of sizes like 256,128"), "--layers"),
    "tasks": (_LIST, "--task"),
    "task_weights": (_items(float, "a comma-separated list of numbers"), "--task-weights"),
    "seeds": (_items(int, "a comma-separated list of seeds like 0,1,2"), "--seeds"),
    "target_weighting": (_weighting, "--target-weighting"),
    "ks": (_items(int, "a list of positive integers like 1,5,10,20"), "--k"),
    "baselines": (_baselines, "--baselines"),
    "target_events": (_LIST, "--target-events"),
    "columns": (_LIST, "--columns"),
    "sep": (_separator, "--sep"),
    "split_values": (_LIST, "--split-values"),
    "events": (_LIST, "--events"),
    "item_categorical": (_LIST, "--item-categorical"),
    "item_numeric": (_LIST, "--item-numeric"),
}


def given(values: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """The flags a user gave (not None), parsed into field values; with `cls`, only its fields."""
    names = {f.name for f in dataclasses.fields(cls)} if cls is not None else None
    out = {}
    for key, value in values.items():
        if value is None or (names is not None and key not in names):
            continue
        parse = _PARSERS.get(key)
        out[key] = parse[0](value, parse[1]) if parse is not None and isinstance(value, str) else value
    return out


@contextmanager
def option_values() -> Iterator[None]:
    """What is checked inside are values given as options: a ConfigError there is a usage error
    (OptionError, exit 2), not a problem of the data or a run (exit 1)."""
    try:
        yield
    except OptionError:
        raise
    except ConfigError as exc:
        raise OptionError(str(exc)) from None


def make(cls: type, values: dict[str, Any]) -> Any:
    """The config from these values; an invalid one is a usage error (exit 2)."""
    with option_values():
        return cls(**values)


def preset_values(preset: str | None) -> dict[str, Any]:
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}", param_hint="--preset")
    return {"preset": preset, **PRESETS[preset]}


def prepare_values(flags: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """PrepareConfig values (defaults < preset < given-split rule < flags) from the data flags,
    and the user's own split files ({"test": [...], "valid": [...]})."""
    flags = dict(flags)
    split_files: dict[str, list[str]] = {"test": list(flags.pop("test", None) or [])}
    valid = flags.get("valid")
    if valid is not None and Path(valid).is_file():
        split_files["valid"] = [valid]
        flags["valid"] = "0"
    preset = flags.pop("preset", None)
    preset_values(preset)  # an unknown preset is a usage error naming --preset
    values: dict[str, Any] = {}
    gap = flags.pop("session_gap", None)
    if gap is not None:
        with option_values():
            off = gap.lower() in ("none", "off", "0")
            values["session_gap"] = None if off else parse_duration(gap, "--session-gap")
    keep_repeats = flags.pop("keep_repeats", None)
    if keep_repeats is not None:
        values["dedupe_consecutive"] = not keep_repeats
    if flags.pop("no_header", False):
        values["header"] = False
    if flags.pop("allow_tiny_test", False):
        values["allow_tiny_test"] = True
    values.update(given(flags, PrepareConfig))
    return resolve(values, preset=preset, given_test=bool(split_files["test"])), split_files


def flag_names(values: dict[str, Any], split_files: dict[str, list[str]]) -> list[str]:
    """The command-line flags behind PrepareConfig values, for messages."""
    named = {"dedupe_consecutive": "--keep-repeats/--collapse-repeats", "session_gap": "--session-gap"}
    flags = {named.get(k, "--" + k.replace("_", "-")) for k in values}
    return sorted(flags | {f"--{k}" for k, v in split_files.items() if v})


def readable_metavars(command: Any) -> Any:
    """Plain value names in --help (N, NUMBER, TEXT, PATH; nothing for flags) instead of type
    labels such as <list[str]> or <bool>. (Typer vendors its own click: read by name.)"""
    names = {"int": "N", "float": "NUMBER", "Path": "PATH", "list[Path]": "PATH", "bool": ""}
    for sub in getattr(command, "commands", {}).values():
        for param in sub.params:
            if param.metavar is not None:
                continue
            if param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # the argument's name says enough
            else:
                param.metavar = names.get(param.bare_type(), "TEXT")
    return command


def run_configs(config: Path | None, flags: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Model and training configs: defaults < the task's defaults < --config file < flags. What
    is wrong inside the file is a ConfigError naming the file and key (exit 1)."""
    file_values = load_json(config) if config else {}
    # `tuning`: which trial of a study a best.json holds (read by people, not by training).
    unknown = set(file_values) - {"model", "train", "format_version", "tuning"}
    if unknown:
        raise ConfigError(f"{config}: unknown section(s) {', '.join(sorted(unknown))}; use 'model' and 'train'")
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        if not isinstance(file_values.get(section, {}), dict):
            raise ConfigError(f"{config}: {section!r} must be an object, not {json_type(file_values[section])}")
        check_types(cls, file_values.get(section, {}), f"{config} [{section}]")
    from_file = {k: {n: tuple(v) if isinstance(v, list) else v for n, v in file_values.get(k, {}).items()}
                 for k in ("model", "train")}  # fmt: skip
    model_flags = given({k: v for k, v in flags.items() if k != "item_features"}, ModelConfig)
    train_flags = given(flags, TrainConfig)
    model_cfg = make(ModelConfig, {**from_file["model"], **model_flags})
    defaults = task_train_defaults(model_cfg, {*from_file["train"], *train_flags})
    return model_cfg, make(TrainConfig, {**defaults, **from_file["train"], **train_flags})
