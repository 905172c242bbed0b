"""The command-line options, shared as `Annotated` aliases, and their turning into configs.

A flag that sets a config field has that field's name and defaults to None ("not given"); its
help shows the dataclass default, so each default is written once, in config.py or options.py.
Only the flags a user gave reach the configs (`given`), over any --config file and preset.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import typer

from rnnrec_cli.config import (
    AS_GIVEN,
    TINY_TEST_TARGETS,
    ModelConfig,
    PrepareConfig,
    TrainConfig,
    check_types,
    json_type,
    parse_duration,
    task_train_defaults,
)
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.options import EvalOptions, PredictOptions
from rnnrec_cli.presets import PRESETS
from rnnrec_cli.rundir import load_json

F = TypeVar("F", bound=Callable[..., Any])
DATA, FEATURES, MODEL, LOSS, OPTIMISATION, RUN, SCALE = (
    "Data", "Item features", "Model", "Loss", "Optimisation", "Run", "Scale",
)  # fmt: skip


def _default_text(cls: type, name: str) -> str:
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    value = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
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


def _data(help_text: str, name: str | None = None, *names: str) -> Any:
    return opt(help_text, DATA, (PrepareConfig, name) if name else None, *names)


# ---------------------------------------------------------------------------- shared

Force = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Preset = Annotated[
    str | None,
    opt(f"Column mapping and defaults for a public dataset: {', '.join(PRESETS)}.", DATA),
]
Devices = Annotated[int | None, opt("Devices to split the sequences over (0 = all visible).", SCALE)]

# ---------------------------------------------------------------------------- data (prepare, train)

_FORMATS = "auto, csv, parquet, jsonl or otto."
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
SessionGap = Annotated[
    str | None,
    _data(
        "Inactivity gap that starts a new session (30m, 1h), or 'none' for whole user histories. "
        "\\[default: 30m; ignored when sessions are given]"
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


def with_data_options(fn: F) -> F:
    """Give a command the data options that `prepare` and `train` share, declared once: Typer
    sees them in the command's signature where its `data_options` parameter stands, and the
    command receives them together as that one dict."""
    own = list(inspect.signature(fn, eval_str=True).parameters.values())
    at = next(i for i, p in enumerate(own) if p.name == "data_options")
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False if alias is AllowTinyTest else None,
                          annotation=alias)
        for name, alias in SHARED_DATA_OPTIONS.items()
    ]  # fmt: skip
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[:at] + shared + own[at + 1 :]]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        data = {name: kwargs.pop(name) for name in SHARED_DATA_OPTIONS}
        return fn(**kwargs, data_options=data)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command  # type: ignore[return-value]


# ---------------------------------------------------------------------------- model and training


def _m(help_text: str, name: str, panel: str = MODEL, *names: str) -> Any:
    return opt(help_text, panel, (ModelConfig, name), *names)


def _t(help_text: str, name: str, panel: str, *names: str) -> Any:
    return opt(help_text, panel, (TrainConfig, name), *names)


Cell = Annotated[str | None, _m("gru, lstm or rnn.", "cell")]
Layers = Annotated[str | None, _m("Hidden sizes of the stacked layers, e.g. 100 or 256,128.", "layers")]
Embedding = Annotated[int | None, _m("Input embedding size; 0 = tied to the output (constrained).", "embedding")]
DropoutEmbed = Annotated[float | None, _m("Dropout on the input embedding.", "dropout_embed")]
DropoutHidden = Annotated[float | None, _m("Dropout on each layer's output.", "dropout_hidden")]
Tasks = Annotated[
    str | None,
    _m(
        "What to predict: next-item, value, event-type, or several (e.g. next-item,event-type): one network, "
        "one head each.",
        "tasks",
        MODEL,
        "--task",
    ),
]
TaskWeights = Annotated[str | None, _t("Loss weight per task, in --task order, e.g. 1,0.5.", "task_weights", MODEL)]
ValueLoss = Annotated[str | None, _t("Value task loss: mse or huber.", "value_loss", MODEL)]
HuberDelta = Annotated[float | None, _t("Huber transition point, in standard deviations.", "huber_delta", MODEL)]
ValueInput = Annotated[bool | None, _m("Value task: feed each event's value beside its item.", "value_input")]
EventInput = Annotated[
    bool | None, _m("Feed an embedding of each event's type (click, cart, order...) beside its item.", "event_input")
]
EventDim = Annotated[int | None, _m("Width of the event-type embedding.", "event_dim")]
UseItemFeatures = Annotated[
    bool | None,
    opt(
        "Feed the data's item side features (from prepare --item-features). \\[default: when present]",
        MODEL,
        None,
        "--item-features/--no-item-features",
    ),
]
FeatureDim = Annotated[int | None, _m("Width of the pooled item feature vector.", "feature_dim")]
FeatureOutput = Annotated[
    bool | None, _m("Also add the item features to the output item vectors (helps rare items).", "feature_output")
]
Loss = Annotated[str | None, _t("ce, bpr-max or top1-max.", "loss", LOSS)]
TargetWeighting = Annotated[
    str | None,
    _t("Weight next-item targets by popularity^-beta: inverse-pop^0.5 (or 0.5); 0 = off.", "target_weighting", LOSS),
]
NSample = Annotated[int | None, _t("Extra negatives shared by each chunk (0 = in-batch only).", "n_sample", LOSS)]
SampleAlpha = Annotated[float | None, _t("Negatives drawn with probability ~ support^alpha.", "sample_alpha", LOSS)]
FullSoftmax = Annotated[
    bool | None, _t("Score every item in the loss (exact CE; small catalogues).", "full_softmax", LOSS)
]
LogQ = Annotated[float | None, _t("Log-Q correction strength for CE, 0..1.", "logq", LOSS)]
BprReg = Annotated[float | None, _t("BPR-max score regularisation.", "bpreg", LOSS)]
Elu = Annotated[float | None, _t("ELU parameter applied to scores before BPR-max (0 = linear).", "elu", LOSS)]
Epochs = Annotated[int | None, _t("Training epochs.", "epochs", OPTIMISATION)]
BatchSize = Annotated[int | None, _t("Session-parallel slots per mini-batch.", "batch_size", OPTIMISATION)]
Bptt = Annotated[int | None, _t("Steps per truncated back-propagation chunk.", "bptt", OPTIMISATION)]
Shuffle = Annotated[
    bool | None, _t("Shuffle sequences each epoch (--no-shuffle: by start time).", "shuffle", OPTIMISATION)
]
Optimizer = Annotated[str | None, _t("adagrad, adam, adamw or sgd.", "optimizer", OPTIMISATION)]
Lr = Annotated[float | None, _t("Learning rate.", "lr", OPTIMISATION)]
LrSchedule = Annotated[
    str | None, _t("constant, cosine or linear decay to 0 over the run.", "lr_schedule", OPTIMISATION)
]
Momentum = Annotated[float | None, _t("Momentum (adagrad, sgd).", "momentum", OPTIMISATION)]
ClipNorm = Annotated[float | None, _t("Clip gradients to this global norm (0 = off).", "clip_norm", OPTIMISATION)]
Seed = Annotated[int | None, _t("Random seed (initialisation, order, negatives, dropout).", "seed", OPTIMISATION)]
Patience = Annotated[
    int | None, _t("Stop after this many epochs without improvement (0 = off).", "patience", OPTIMISATION)
]
Monitor = Annotated[str | None, _t("Validation metric for the best checkpoint, e.g. mrr@20.", "monitor", OPTIMISATION)]
CheckpointEvery = Annotated[
    float | None, _t("Seconds between mid-epoch checkpoints (0 = epoch ends).", "checkpoint_every", RUN)
]
ValidSample = Annotated[
    int | None, _t("Validate on at most N sequences, a seeded subset (0 = all).", "valid_sample", RUN)
]
TrainDevices = Annotated[
    int | None, _t("Devices to split the batch over (0 = all visible, every process).", "devices", SCALE)
]
ShardItems = Annotated[bool | None, _t("Also split the item tables over the devices by rows.", "shard_items", SCALE)]
Prefetch = Annotated[int | None, _t("Chunks assembled ahead in a background thread (0 = off).", "prefetch", SCALE)]
NarrowTail = Annotated[
    bool | None,
    _t("Run each epoch's end on a batch halved as slots run dry (off: full width).", "narrow_tail", SCALE),
]
Coordinator = Annotated[
    str | None, opt("Multi-process run: process 0's HOST:PORT, or 'auto' to read the cluster's environment.", SCALE)
]
NumProcesses = Annotated[int | None, opt("Multi-process run: number of processes.", SCALE)]
ProcessId = Annotated[int | None, opt("Multi-process run: this process's index (0 writes).", SCALE)]

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
AsJson = Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")]

# ---------------------------------------------------------------------------- predict


def _p(help_text: str, name: str, *names: str) -> Any:
    return opt(help_text, None, (PredictOptions, name), *names)


# predict's --format is its output's, so the input's (prepare's --format) is --input-format.
InputFormat = Annotated[str | None, _data(f"Input format: {_FORMATS} \\[default: the run's]", None, "--input-format")]
K = Annotated[int | None, _p("Recommendations per sequence (or per position).", "k", "-k")]
OutFormat = Annotated[str | None, _p("csv, jsonl or parquet.", "format", "--format")]
PredictExcludeSeen = Annotated[
    bool | None, _p("Leave out items already in the session.", "exclude_seen", "--exclude-seen/--include-seen")
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


def make(cls: type, values: dict[str, Any]) -> Any:
    """The config from these values; an invalid one is a usage error (exit 2)."""
    try:
        return cls(**values)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


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
    values = {
        **preset_values(flags.pop("preset", None)),
        # A test split the user brings is kept as given unless a flag says otherwise.
        **(AS_GIVEN if split_files["test"] else {}),
    }
    gap = flags.pop("session_gap", None)
    if gap is not None:
        values["session_gap"] = None if gap.lower() in ("none", "off", "0") else parse_duration(gap, "--session-gap")
    keep_repeats = flags.pop("keep_repeats", None)
    if keep_repeats is not None:
        values["dedupe_consecutive"] = not keep_repeats
    if flags.pop("no_header", False):
        values["header"] = False
    if flags.pop("allow_tiny_test", False):
        values["allow_tiny_test"] = True
    values.update(given(flags, PrepareConfig))
    return values, split_files


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
    unknown = set(file_values) - {"model", "train"}
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


# ---------------------------------------------------------------------------- tune

TUNE = "Search"
Trials = Annotated[
    int | None, opt("Finished trials the study should hold (a rerun continues it). \\[default: 100]", TUNE)
]
Timeout = Annotated[
    str | None, opt("Start no trial after this long (e.g. 45m, 2h); the running one finishes. \\[default: none]", TUNE)
]
Metric = Annotated[str | None, opt("Validation metric to maximise: mrr@K or recall@K. \\[default: mrr@20]", TUNE)]
SpaceFile = Annotated[
    Path | None,
    typer.Option(
        "--space",
        exists=True,
        dir_okay=False,
        metavar="FILE",
        help='JSON {"params": {NAME: {"low", "high", "step"|"log"} or {"choices": [...]} or null}, "base": '
        '"ce"|"bpr-max"|"none"}: changes the shipped space of --loss (null drops a parameter; base none replaces it).',
        rich_help_panel=TUNE,
    ),
]
Storage = Annotated[
    str | None,
    opt(
        "SQLAlchemy URL of the study's database, e.g. postgresql://user:pw@host/db for several workers. "
        "\\[default: sqlite in STUDY_DIR/study.db]",
        TUNE,
    ),
]
StudyName = Annotated[
    str | None, opt("Study name in the storage. \\[default: the name of STUDY_DIR]", TUNE, None, "--study")
]
Pruning = Annotated[
    bool | None,
    opt("Stop trials whose epoch metric is below the median of earlier trials. \\[default: on]", TUNE, None,
        "--pruning/--no-pruning"),
]  # fmt: skip
PruneAfter = Annotated[int | None, opt("Finished trials before pruning starts. \\[default: 3]", TUNE)]
