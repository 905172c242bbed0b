"""The `rnnrec` command line: thin Typer commands over the library modules.

The only module that imports typer/rich or exits the process. stdout carries data only (run
paths, JSON, predictions); everything for people goes to stderr.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, Group
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from rnnrec_cli import __version__
from rnnrec_cli.config import (
    AS_GIVEN,
    MIN_TARGETS,
    TINY_TEST_TARGETS,
    ModelConfig,
    PrepareConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    load_json,
    parse_duration,
    task_train_defaults,
)
from rnnrec_cli.errors import ConfigError, RnnrecError

if TYPE_CHECKING:
    from rnnrec_cli.train import Progress

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Next-item recommendation with recurrent neural networks: prepare, train, evaluate, predict.",
)
# Logs and CI read stderr from a file or pipe: whole lines there, never wrapped at 80 columns.
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=1000, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _error_line(message: str) -> None:
    err.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _error_line(message)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Expected failures -> one `Error:` line and exit 1; a closed stdout pipe -> quiet exit 0."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RnnrecError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            # `rnnrec predict ... | head`: the reader left; that is not an error. (Polars' CSV
            # writer reports it as a plain OSError naming the broken pipe.)
            if not (isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE or "Broken pipe" in str(exc)):
                raise
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            _interrupted("interrupted")

    return wrapper  # type: ignore[return-value]


def _interrupted(message: str) -> NoReturn:
    """Ctrl-C: say so and leave at once with 130. A normal interpreter shutdown can run into
    work XLA still has in flight and crash; everything written is complete already (atomic)."""
    _error_line(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("jax", "absl", "flax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rnnrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _setup_logging(verbose)


# ---------------------------------------------------------------------------- shared options

Force = Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Preset = Annotated[
    str | None,
    typer.Option(
        help="Column mapping and defaults for a public dataset: movielens, otto, diginetica, retailrocket, "
        "yoochoose, amazon, gru4rec.",
        rich_help_panel="Data",
    ),
]


def _preset_values(preset: str | None) -> dict[str, Any]:
    from rnnrec_cli.data import PRESETS

    if preset is None:
        return {}
    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}", param_hint="--preset")
    return {"preset": preset, **PRESETS[preset]}


def _gap(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    if text.lower() in ("none", "off", "0"):
        return {"session_gap": None}
    return {"session_gap": parse_duration(text, "--session-gap")}


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _make(cls: type, values: dict[str, Any], where: str) -> Any:
    try:
        return from_dict(cls, values, where)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextmanager
def _progress(quiet: bool) -> Iterator[Progress]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=err,
        redirect_stdout=False,
        redirect_stderr=False,
        disable=quiet,
        transient=True,
    )
    with progress:
        yield progress


# ---------------------------------------------------------------------------- prepare


def _prepare_summary(manifest: dict[str, Any], out_dir: Path) -> Group:
    """What prepare decided and what came out: columns and how each was found, the sequence and
    split rules, the time span, and the counts per split."""
    from rnnrec_cli.data import split_targets

    rec = manifest.get("recognised", {})
    st = manifest["stages"]
    lines = []
    if rec:
        cols = ", ".join(f"{role} = {c['column']!r} ({c['how']})" for role, c in rec["columns"].items())
        unit = rec["time_unit"]
        unit_text = "text or dates" if unit["unit"] == "auto" else f"unix {unit['unit']} ({unit['how']})"
        lines.append(f"columns: {cols}; times: {unit_text}")
        lines.append(f"sequences: {rec['sequences']}")
    if "time_span" in st:
        a, b = st["time_span"]
        lines.append(f"time span: {a[:16].replace('T', ' ')} to {b[:16].replace('T', ' ')}")
    rules = st.get("split_rule")
    if rules:
        lines.append(f"split: test = {rules['test']}, validation = {rules['valid']}")
    for name in ("test", "valid"):
        if f"{name}_split_note" in st:
            lines.append(f"note: {st[f'{name}_split_note']}")
    steps = [(k.removeprefix("after_").replace("_", " "), v) for k, v in st.items() if k.startswith("after_")]
    lines.append(
        f"events: {st['events_read']:,} read"
        + "".join(f" -> {v:,} after {k}" for k, v in steps)
        + f" ({st['filter_rounds']} extra filter rounds)"
    )
    for split in ("test", "valid"):
        c = st.get(f"{split}_cleaning", {})
        if any(c.values()):
            lines.append(
                f"{split}: removed {c['events_on_unseen_items']:,} events on items not in training, "
                f"{c['sequences_dropped']:,} sequences left too short"
            )
    table = Table(title=f"Prepared {out_dir} ({manifest['n_items']:,} items)", title_justify="left")
    for col in ("split", "events", "sequences", "targets", "items", "from", "to"):
        table.add_column(col, justify="left" if col in ("split", "from", "to") else "right")
    for name, sp in manifest["splits"].items():
        targets = split_targets(sp)
        table.add_row(
            name,
            f"{sp['events']:,}",
            f"{sp['sequences']:,}",
            f"{targets:,}",
            f"{sp['items']:,}",
            (sp["time_min"] or "-")[:10],
            (sp["time_max"] or "-")[:10],
        )
    return Group(Text("\n".join(lines)), table)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]Warning:[/] {warning}")


# Options of `prepare` that `train` also takes when it is given raw event files.
DATA = "Data"
Format = Annotated[str | None, typer.Option(help="auto, csv, parquet, jsonl or otto.", rich_help_panel=DATA)]
Sep = Annotated[
    str | None, typer.Option(help="CSV separator (default: sniffed); '::' works too.", rich_help_panel=DATA)
]
UserCol = Annotated[str | None, typer.Option(help="User id column.", rich_help_panel=DATA)]
SessionCol = Annotated[str | None, typer.Option(help="Session id column (sessions given).", rich_help_panel=DATA)]
ItemCol = Annotated[str | None, typer.Option(help="Item id column.", rich_help_panel=DATA)]
TimeCol = Annotated[str | None, typer.Option(help="Timestamp column.", rich_help_panel=DATA)]
EventCol = Annotated[str | None, typer.Option(help="Event type column.", rich_help_panel=DATA)]
ValueCol = Annotated[str | None, typer.Option(help="Value column (rating, price, ...).", rich_help_panel=DATA)]
TimeUnit = Annotated[
    str | None,
    typer.Option(
        help="Unit of numeric times: s, ms, us or ns. \\[default: guessed from the magnitude]", rich_help_panel=DATA
    ),
]
SessionGap = Annotated[
    str | None,
    typer.Option(
        help="Inactivity gap that starts a new session (30m, 1h), or 'none' for whole user histories. "
        "\\[default: 30m; ignored when sessions are given]",
        rich_help_panel=DATA,
    ),
]
KeepRepeats = Annotated[
    bool | None,
    typer.Option(
        "--keep-repeats/--collapse-repeats",
        help="Keep consecutive repeats of the same item. \\[default: collapse, except for a given split]",
        rich_help_panel=DATA,
    ),
]
MinItemSupport = Annotated[
    int | None,
    typer.Option(
        help=f"Minimum events per item (iterated with --min-session-length). "
        f"\\[default: {PrepareConfig.min_item_support}; 1 for a given split]",
        rich_help_panel=DATA,
    ),
]
MinSessionLength = Annotated[
    int | None,
    typer.Option(
        help=f"Minimum events per sequence. \\[default: {PrepareConfig.min_session_length}]", rich_help_panel=DATA
    ),
]
Split = Annotated[
    str | None,
    typer.Option(
        help="Test split: time:7d (sequences ending in the last 7 days), time:0.1 (last 10% of events in "
        "time), or loo (leave-one-out: each sequence's last event; leaks the timeline). "
        "\\[default: auto = time:7d, or time:0.1 when 7 days leave too small a split]",
        rich_help_panel=DATA,
    ),
]
Valid = Annotated[
    str | None,
    typer.Option(
        help="Validation cut from the end of training: 7d, 0.1, or 0 for none; or a FILE with your own "
        "validation events. \\[default: auto, like --split; 0 for a given split]",
        rich_help_panel=DATA,
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


def _flag_names(values: dict[str, Any], given: dict[str, list[str]]) -> list[str]:
    """The command-line flags behind PrepareConfig values, for messages."""
    named = {"dedupe_consecutive": "--keep-repeats/--collapse-repeats", "session_gap": "--session-gap"}
    flags = {named.get(k, "--" + k.replace("_", "-")) for k in values}
    return sorted(flags | {f"--{k}" for k, v in given.items() if v})


def _prepare_values(
    preset: str | None,
    test: list[str] | None,
    valid: str | None,
    session_gap: str | None,
    keep_repeats: bool | None,
    allow_tiny_test: bool,
    **flags: Any,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """PrepareConfig values (defaults < preset < given-split rule < flags) and the given splits."""
    given: dict[str, list[str]] = {"test": list(test or [])}
    if valid is not None and Path(valid).is_file():
        given["valid"] = [valid]
        valid = "0"
    values = {
        **_preset_values(preset),
        # A test split the user brings is kept as given unless a flag says otherwise.
        **(AS_GIVEN if given["test"] else {}),
        **_gap(session_gap),
        **_given(valid=valid, **flags),
    }
    if keep_repeats is not None:
        values["dedupe_consecutive"] = not keep_repeats
    if allow_tiny_test:
        values["allow_tiny_test"] = True
    return values, given


@app.command()
@handle_errors
def prepare(
    events: Annotated[
        list[str], typer.Argument(help="Event log file(s) (CSV/TSV/Parquet/JSONL, gzip ok), or - for stdin.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to create.")],
    preset: Preset = None,
    format: Format = None,
    sep: Sep = None,
    no_header: Annotated[
        bool, typer.Option("--no-header", help="The CSV has no header row.", rich_help_panel=DATA)
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(help="Names for header-less columns, e.g. session,ts,item.", rich_help_panel=DATA),
    ] = None,
    user_col: UserCol = None,
    session_col: SessionCol = None,
    item_col: ItemCol = None,
    time_col: TimeCol = None,
    event_col: EventCol = None,
    value_col: ValueCol = None,
    time_unit: TimeUnit = None,
    time_offset_col: Annotated[
        str | None,
        typer.Option(help="Offset added to the time column (e.g. Diginetica's timeframe).", rich_help_panel=DATA),
    ] = None,
    time_offset_unit: Annotated[
        str | None, typer.Option(help="s, ms, us or ns for --time-offset-col. \\[default: ms]", rich_help_panel=DATA)
    ] = None,
    session_gap: SessionGap = None,
    split: Split = None,
    valid: Valid = None,
    test: Test = None,
    allow_tiny_test: AllowTinyTest = False,
    keep_repeats: KeepRepeats = None,
    min_item_support: MinItemSupport = None,
    min_session_length: MinSessionLength = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Keep the most recent N events of each sequence. \\[default: no limit]", rich_help_panel=DATA
        ),
    ] = None,
    events_filter: Annotated[
        str | None,
        typer.Option("--events", help="Keep only these event types, e.g. view,click.", rich_help_panel=DATA),
    ] = None,
    min_value: Annotated[
        float | None, typer.Option(help="Keep events with value >= this (e.g. ratings).", rich_help_panel=DATA)
    ] = None,
    buckets: Annotated[
        int | None,
        typer.Option(
            help="Parts cleaned one at a time to bound memory (same result). \\[default: 0 = from the input size]",
            rich_help_panel="Scale",
        ),
    ] = None,
    item_features: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="CSV/Parquet of item attributes to join to the catalogue (e.g. movies.csv).",
            rich_help_panel="Item features",
        ),
    ] = None,
    item_key: Annotated[
        str | None,
        typer.Option(help="Item id column of --item-features. \\[default: item_id]", rich_help_panel="Item features"),
    ] = None,
    item_categorical: Annotated[
        str | None,
        typer.Option(
            help="Categorical feature columns (multi-valued with --item-sep), e.g. genres.",
            rich_help_panel="Item features",
        ),
    ] = None,
    item_numeric: Annotated[
        str | None, typer.Option(help="Numeric feature columns, e.g. price.", rich_help_panel="Item features")
    ] = None,
    item_vector: Annotated[
        str | None,
        typer.Option(
            help="A Parquet list column holding a dense vector per item (text/image embedding).",
            rich_help_panel="Item features",
        ),
    ] = None,
    item_sep: Annotated[
        str | None,
        typer.Option(help="Separator of multi-valued categories. \\[default: |]", rich_help_panel="Item features"),
    ] = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Turn a raw event log into train/valid/test sequences with dense item ids."""
    from rnnrec_cli.data import prepare as run_prepare

    values, given = _prepare_values(
        preset, test, valid, session_gap, keep_repeats, allow_tiny_test,
        format=format, sep=sep, user_col=user_col, session_col=session_col, item_col=item_col, time_col=time_col,
        event_col=event_col, value_col=value_col, time_unit=time_unit, min_value=min_value,
        time_offset_col=time_offset_col, time_offset_unit=time_offset_unit, max_length=max_length,
        min_item_support=min_item_support, min_session_length=min_session_length, buckets=buckets,
        item_features=item_features, item_key=item_key,
        item_categorical=_parse_list(item_categorical, str, "--item-categorical"),
        item_numeric=_parse_list(item_numeric, str, "--item-numeric"), item_vector=item_vector, item_sep=item_sep,
        split=split,
    )  # fmt: skip
    if events_filter:
        values["events"] = tuple(e.strip() for e in events_filter.split(",") if e.strip())
    if no_header:
        values["header"] = False
    if columns:
        values["columns"] = tuple(x.strip() for x in columns.split(","))
    cfg = _make(PrepareConfig, values, "prepare options")
    with err.status("preparing data", spinner="dots") if not quiet else _nullcontext():
        result = run_prepare(events, out, cfg, force=force, given=given)
    if not quiet:
        err.print(_prepare_summary(result.manifest, out))
    _warn(result.manifest["warnings"])
    if not quiet:
        err.print(f"Next: rnnrec train {out} -o runs/NAME")
    typer.echo(str(out))


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


# ---------------------------------------------------------------------------- train


def _default_run_dir(cell: str) -> Path:
    return Path("runs") / f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{cell}"


MODEL, LOSS, OPTIMISATION, RUN, SCALE = "Model", "Loss", "Optimisation", "Run", "Scale"


def _opt(help_text: str, panel: str, field: tuple[type, str] | None = None) -> Any:
    """An option grouped under `panel`, its help naming the config field's default (flags default
    to None so that --config values can be told apart; the default itself lives in config.py)."""
    if field is not None:
        spec = next(f for f in dataclasses.fields(field[0]) if f.name == field[1])
        value = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
        if isinstance(value, tuple):
            value = ",".join(map(str, value)) or "1 each"
        elif isinstance(value, bool):
            value = "on" if value else "off"
        help_text = f"{help_text} \\[default: {value}]"
    return typer.Option(help=help_text, rich_help_panel=panel)


@app.command()
@handle_errors
def train(
    data: Annotated[
        list[str] | None,
        typer.Argument(help="A prepared data directory, or raw event file(s) to prepare with defaults."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<UTC time>-<cell>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the interrupted run in this directory (other options are ignored).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="JSON with 'model' and 'train' sections; flags override it."),
    ] = None,
    preset: Preset = None,
    format: Format = None,
    sep: Sep = None,
    user_col: UserCol = None,
    session_col: SessionCol = None,
    item_col: ItemCol = None,
    time_col: TimeCol = None,
    event_col: EventCol = None,
    value_col: ValueCol = None,
    time_unit: TimeUnit = None,
    session_gap: SessionGap = None,
    split: Split = None,
    valid: Valid = None,
    test: Test = None,
    allow_tiny_test: AllowTinyTest = False,
    keep_repeats: KeepRepeats = None,
    min_item_support: MinItemSupport = None,
    min_session_length: MinSessionLength = None,
    cell: Annotated[str | None, _opt("gru, lstm or rnn.", MODEL, (ModelConfig, "cell"))] = None,
    layers: Annotated[
        str | None, _opt("Hidden sizes of the stacked layers, e.g. 100 or 256,128.", MODEL, (ModelConfig, "layers"))
    ] = None,
    embedding: Annotated[
        int | None,
        _opt("Input embedding size; 0 = tied to the output (constrained).", MODEL, (ModelConfig, "embedding")),
    ] = None,
    dropout_embed: Annotated[
        float | None, _opt("Dropout on the input embedding.", MODEL, (ModelConfig, "dropout_embed"))
    ] = None,
    dropout_hidden: Annotated[
        float | None, _opt("Dropout on each layer's output.", MODEL, (ModelConfig, "dropout_hidden"))
    ] = None,
    task: Annotated[
        str | None,
        _opt(
            "What to predict: next-item, value, event-type, or several (e.g. next-item,event-type): "
            "one network, one head each.",
            MODEL,
            (ModelConfig, "tasks"),
        ),
    ] = None,
    task_weights: Annotated[
        str | None, _opt("Loss weight per task, in --task order, e.g. 1,0.5.", MODEL, (TrainConfig, "task_weights"))
    ] = None,
    value_loss: Annotated[
        str | None, _opt("Value task loss: mse or huber.", MODEL, (TrainConfig, "value_loss"))
    ] = None,
    huber_delta: Annotated[
        float | None, _opt("Huber transition point, in standard deviations.", MODEL, (TrainConfig, "huber_delta"))
    ] = None,
    value_input: Annotated[
        bool | None, _opt("Value task: feed each event's value beside its item.", MODEL, (ModelConfig, "value_input"))
    ] = None,
    event_input: Annotated[
        bool | None,
        _opt(
            "Feed an embedding of each event's type (click, cart, order...) beside its item.",
            MODEL,
            (ModelConfig, "event_input"),
        ),
    ] = None,
    event_dim: Annotated[
        int | None, _opt("Width of the event-type embedding.", MODEL, (ModelConfig, "event_dim"))
    ] = None,
    use_item_features: Annotated[
        bool | None,
        typer.Option(
            "--item-features/--no-item-features",
            help="Feed the data's item side features (from prepare --item-features); default: when present.",
        ),
    ] = None,
    feature_dim: Annotated[
        int | None, _opt("Width of the pooled item feature vector.", MODEL, (ModelConfig, "feature_dim"))
    ] = None,
    feature_output: Annotated[
        bool | None,
        _opt(
            "Also add the item features to the output item vectors (helps rare items).",
            MODEL,
            (ModelConfig, "feature_output"),
        ),
    ] = None,
    loss: Annotated[str | None, _opt("ce, bpr-max or top1-max.", LOSS, (TrainConfig, "loss"))] = None,
    target_weighting: Annotated[
        str | None,
        _opt(
            "Weight next-item targets by popularity^-beta: inverse-pop^0.5 (or just 0.5); 0 = off.",
            LOSS,
            (TrainConfig, "target_weighting"),
        ),
    ] = None,
    n_sample: Annotated[
        int | None, _opt("Extra negatives shared by each chunk (0 = in-batch only).", LOSS, (TrainConfig, "n_sample"))
    ] = None,
    sample_alpha: Annotated[
        float | None, _opt("Negatives drawn with probability ~ support^alpha.", LOSS, (TrainConfig, "sample_alpha"))
    ] = None,
    full_softmax: Annotated[
        bool | None,
        _opt("Score every item in the loss (exact CE; small catalogues).", LOSS, (TrainConfig, "full_softmax")),
    ] = None,
    logq: Annotated[float | None, _opt("Log-Q correction strength for CE, 0..1.", LOSS, (TrainConfig, "logq"))] = None,
    bpreg: Annotated[float | None, _opt("BPR-max score regularisation.", LOSS, (TrainConfig, "bpreg"))] = None,
    elu: Annotated[
        float | None, _opt("ELU parameter applied to scores before BPR-max (0 = linear).", LOSS, (TrainConfig, "elu"))
    ] = None,
    epochs: Annotated[int | None, _opt("Training epochs.", OPTIMISATION, (TrainConfig, "epochs"))] = None,
    batch_size: Annotated[
        int | None, _opt("Session-parallel slots per mini-batch.", OPTIMISATION, (TrainConfig, "batch_size"))
    ] = None,
    bptt: Annotated[
        int | None, _opt("Steps per truncated back-propagation chunk.", OPTIMISATION, (TrainConfig, "bptt"))
    ] = None,
    shuffle: Annotated[
        bool | None,
        _opt("Shuffle sequences each epoch (--no-shuffle: by start time).", OPTIMISATION, (TrainConfig, "shuffle")),
    ] = None,
    optimizer: Annotated[
        str | None, _opt("adagrad, adam, adamw or sgd.", OPTIMISATION, (TrainConfig, "optimizer"))
    ] = None,
    lr: Annotated[float | None, _opt("Learning rate.", OPTIMISATION, (TrainConfig, "lr"))] = None,
    lr_schedule: Annotated[
        str | None,
        _opt("constant, cosine or linear decay to 0 over the run.", OPTIMISATION, (TrainConfig, "lr_schedule")),
    ] = None,
    momentum: Annotated[float | None, _opt("Momentum (adagrad, sgd).", OPTIMISATION, (TrainConfig, "momentum"))] = None,
    clip_norm: Annotated[
        float | None, _opt("Clip gradients to this global norm (0 = off).", OPTIMISATION, (TrainConfig, "clip_norm"))
    ] = None,
    seed: Annotated[
        int | None,
        _opt("Random seed (initialisation, order, negatives, dropout).", OPTIMISATION, (TrainConfig, "seed")),
    ] = None,
    patience: Annotated[
        int | None,
        _opt("Stop after this many epochs without improvement (0 = off).", OPTIMISATION, (TrainConfig, "patience")),
    ] = None,
    monitor: Annotated[
        str | None,
        _opt("Validation metric for the best checkpoint, e.g. mrr@20.", OPTIMISATION, (TrainConfig, "monitor")),
    ] = None,
    checkpoint_every: Annotated[
        float | None,
        _opt("Seconds between mid-epoch checkpoints (0 = epoch ends).", RUN, (TrainConfig, "checkpoint_every")),
    ] = None,
    valid_sample: Annotated[
        int | None,
        _opt("Validate on at most N sequences, a seeded subset (0 = all).", RUN, (TrainConfig, "valid_sample")),
    ] = None,
    devices: Annotated[
        int | None,
        _opt("Devices to split the batch over (0 = all visible, every process).", SCALE, (TrainConfig, "devices")),
    ] = None,
    shard_items: Annotated[
        bool | None, _opt("Also split the item tables over the devices by rows.", SCALE, (TrainConfig, "shard_items"))
    ] = None,
    prefetch: Annotated[
        int | None, _opt("Chunks assembled ahead in a background thread (0 = off).", SCALE, (TrainConfig, "prefetch"))
    ] = None,
    coordinator: Annotated[
        str | None,
        typer.Option(help="Multi-process run: process 0's HOST:PORT, or 'auto' to read the cluster's environment."),
    ] = None,
    num_processes: Annotated[int | None, typer.Option(help="Multi-process run: number of processes.")] = None,
    process_id: Annotated[int | None, typer.Option(help="Multi-process run: this process's index (0 writes).")] = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train a recurrent next-item model; prints the run directory as the last stdout line."""
    from rnnrec_cli import parallel, rundir

    parallel.init_distributed(coordinator, num_processes, process_id)
    leader = parallel.is_leader()
    multi = coordinator is not None
    quiet = quiet or not leader
    if multi and resume is None:
        if out is None:
            raise typer.BadParameter("a multi-process run needs the same --out on every process", param_hint="--out")
        if not (data and len(data) == 1 and Path(data[0]).is_dir()):
            raise typer.BadParameter(
                "a multi-process run trains from a prepared data directory; run `rnnrec prepare` first",
                param_hint="DATA",
            )
    if resume is not None:
        # Every process reads the run directory (a shared filesystem); only process 0 writes.
        run = rundir.open_for_resume(resume)
        cfg = rundir.load_config(run)
    else:
        if not data:
            raise typer.BadParameter("give a data directory or event file(s), or --resume RUN_DIR", param_hint="DATA")
        file_values = load_json(config) if config else {}
        model_flags = _given(
            cell=cell,
            layers=_parse_layers(layers),
            embedding=embedding,
            dropout_embed=dropout_embed,
            dropout_hidden=dropout_hidden,
            tasks=_parse_list(task, str, "--task"),
            value_input=value_input,
            event_input=event_input,
            event_dim=event_dim,
            item_features=use_item_features,
            feature_dim=feature_dim,
            feature_output=feature_output,
        )
        train_flags = _given(
            loss=loss, n_sample=n_sample, sample_alpha=sample_alpha, full_softmax=full_softmax, logq=logq,
            bpreg=bpreg, elu=elu, epochs=epochs, batch_size=batch_size, bptt=bptt, shuffle=shuffle,
            optimizer=optimizer, lr=lr,
            lr_schedule=lr_schedule, momentum=momentum, clip_norm=clip_norm, seed=seed, patience=patience,
            monitor=monitor, checkpoint_every=checkpoint_every, devices=devices, shard_items=shard_items,
            prefetch=prefetch, valid_sample=valid_sample,
            task_weights=_parse_list(task_weights, float, "--task-weights"), value_loss=value_loss,
            huber_delta=huber_delta, target_weighting=_parse_weighting(target_weighting),
        )  # fmt: skip
        prep_values, given = _prepare_values(
            preset, test, valid, session_gap, keep_repeats, allow_tiny_test,
            format=format, sep=sep, user_col=user_col, session_col=session_col, item_col=item_col,
            time_col=time_col, event_col=event_col, value_col=value_col, time_unit=time_unit, split=split,
            min_item_support=min_item_support, min_session_length=min_session_length,
        )  # fmt: skip
        run, cfg = _new_run(
            data, out, prep_values, given, file_values, model_flags, train_flags, force=force, quiet=quiet,
            write=leader,
        )  # fmt: skip
    try:
        _fit_with_progress(cfg, run, resume=resume is not None, quiet=quiet)
    except KeyboardInterrupt:
        if run.checkpoint("last").is_file():
            _interrupted(f"interrupted; continue where it stopped with: rnnrec train --resume {run.path}")
        _interrupted(f"interrupted before the first checkpoint; start again (add --force to reuse {run.path})")
    if leader:
        if not quiet:
            err.print(
                f"Wrote {run.path}: checkpoints/best.msgpack, metrics.jsonl, learning_curve.png. "
                f"Next: rnnrec evaluate {run.path}"
            )
        typer.echo(str(run.path))


def _new_run(
    data: list[str],
    out: Path | None,
    prep_values: dict[str, Any],
    given: dict[str, list[str]],
    file_values: dict[str, Any],
    model_flags: dict[str, Any],
    train_flags: dict[str, Any],
    *,
    force: bool,
    quiet: bool,
    write: bool = True,
) -> tuple[Any, RunConfig]:
    """Resolve the config (defaults < --config < flags), create the run dir, prepare raw data.

    Without `write` (processes other than 0 of a multi-process run) nothing is written: the
    data must be prepared already, and the run directory is process 0's."""
    from rnnrec_cli import data as data_mod
    from rnnrec_cli import rundir

    unknown = set(file_values) - {"model", "train"}
    if unknown:
        raise typer.BadParameter(
            f"unknown section(s) {', '.join(sorted(unknown))}; use 'model' and 'train'", param_hint="--config"
        )
    model_cfg = _make(ModelConfig, {**file_values.get("model", {}), **model_flags}, "model options")
    train_cfg = _make(
        TrainConfig,
        {
            **task_train_defaults(model_cfg, {*file_values.get("train", {}), *train_flags}),
            **file_values.get("train", {}),
            **train_flags,
        },
        "train options",
    )
    first = Path(data[0])
    if len(data) == 1 and first.is_dir() and not data_mod.is_data_dir(first):
        raise data_mod.DataError(
            f"{first} is a directory but not a prepared data directory (no manifest.json); run `rnnrec prepare` first"
        )
    features_given = model_flags.get("item_features", file_values.get("model", {}).get("item_features"))
    if not write:
        if not (len(data) == 1 and data_mod.is_data_dir(first)):
            raise data_mod.DataError("a multi-process run trains from a prepared data directory; run `rnnrec prepare`")
        cfg = _run_config(first.resolve(), model_cfg, train_cfg, features_given)
        return rundir.RunDir(out or _default_run_dir(model_cfg.cell)), cfg
    if len(data) == 1 and data_mod.is_data_dir(first):
        if prep_values or any(given.values()):
            raise typer.BadParameter(
                f"{first} is already prepared; data options ({', '.join(_flag_names(prep_values, given))}) apply "
                "to raw event files. Prepare again with `rnnrec prepare` to change them",
                param_hint="DATA",
            )
        cfg = _run_config(first.resolve(), model_cfg, train_cfg, features_given)
        run = rundir.create(out or _default_run_dir(model_cfg.cell), force=force)
        _warn(data_mod.load_manifest(first).get("warnings", []))
    else:
        prep = _make(PrepareConfig, prep_values, "data options")
        run = rundir.create(out or _default_run_dir(model_cfg.cell), force=force)
        with err.status("preparing data", spinner="dots") if not quiet else _nullcontext():
            result = data_mod.prepare(data, run.path / "data", prep, force=False, given=given)
        if not quiet:
            err.print(_prepare_summary(result.manifest, run.path / "data"))
        _warn(result.manifest["warnings"])
        cfg = _run_config((run.path / "data").resolve(), model_cfg, train_cfg, features_given)
    rundir.save_config(run, cfg)
    rundir.save_data_files(run, Path(cfg.data_dir))
    return run, cfg


def _run_config(
    data_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, features_given: bool | None
) -> RunConfig:
    """The run's config for `data_dir`: catalogue size, the value task's standardisation (from
    the training split), event types, item features (used when the data has them, unless
    `features_given` is False)."""
    import dataclasses

    import numpy as np

    from rnnrec_cli import data as data_mod

    manifest = data_mod.load_manifest(data_dir)
    if model_cfg.predicts_values:
        values = data_mod.read_sequences(data_dir, "train", values=True).values
        assert values is not None
        known = values[~np.isnan(values)]
        if not len(known):
            raise data_mod.DataError(f"{data_dir}: the training split has no values to learn (all missing)")
        std = float(known.std())
        model_cfg = dataclasses.replace(model_cfg, value_mean=float(known.mean()), value_std=std if std > 0 else 1.0)
    if model_cfg.predicts_events or model_cfg.event_input:
        model_cfg = dataclasses.replace(model_cfg, event_types=data_mod.event_types(data_dir))
    spec = manifest.get("item_features")
    if features_given is False or (features_given is None and spec is None):
        model_cfg = dataclasses.replace(model_cfg, item_features=False)
    elif spec is None:
        raise data_mod.DataError(f"{data_dir} has no item features; prepare it with --item-features FILE")
    else:
        model_cfg = dataclasses.replace(
            model_cfg, item_features=True, feature_codes=int(spec["n_codes"]), feature_numeric=int(spec["n_numeric"])
        )
    try:
        return RunConfig(data_dir=str(data_dir), n_items=int(manifest["n_items"]), model=model_cfg, train=train_cfg)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _fit_with_progress(cfg: RunConfig, run: Any, *, resume: bool, quiet: bool) -> None:
    from rnnrec_cli.train import EpochReport, fit

    if not quiet:
        m, t = cfg.model, cfg.train
        heads = []
        if m.predicts_items:
            out = "full softmax" if t.full_softmax else f"{t.n_sample} shared negatives (alpha {t.sample_alpha})"
            heads.append(f"next item: {t.loss} loss over in-batch + {out}")
        if m.predicts_values:
            heads.append(f"value: {t.value_loss}")
        if m.predicts_events:
            heads.append(f"event type: {len(m.event_types)} classes")
        extra = [name for name, on in (("event types", m.event_input), ("item features", m.item_features)) if on]
        err.print(
            f"{'Resuming' if resume else 'Training'} {m.cell.upper()} {list(m.layers)} on {cfg.n_items:,} items"
            + (f" (+ {', '.join(extra)} as input)" if extra else "")
            + f"; {'; '.join(heads)}; {t.optimizer} lr {t.lr} -> {run.path}"
        )

    def on_epoch(r: EpochReport) -> None:
        if quiet:
            return
        val = "  ".join(f"{k} {v:.4f}" for k, v in r.valid.items() if k in ("recall@20", "mrr@20", "rmse", "mae"))
        valid_time = f" + valid {r.valid_seconds:.1f}s" if r.valid else ""
        err.print(
            f"epoch {r.epoch:>3}  loss {r.train_loss:.4f}  {val}  {r.events_per_s:,.0f} ev/s  "
            f"train {r.seconds:.1f}s{valid_time}" + ("  *best" if r.best else "")
        )

    with _progress(quiet) as progress:
        task = progress.add_task("epoch", total=None, stats="")

        def on_progress(p: Progress) -> None:
            stats = f"loss {p.loss:.4f}  {p.events_per_s:,.0f} ev/s" if p.loss is not None else ""
            progress.update(task, description=f"epoch {p.epoch}", completed=p.chunk, total=p.n_chunks, stats=stats)

        fit(cfg, run, resume=resume, on_progress=on_progress, on_epoch=on_epoch)


def _parse_weighting(text: str | None) -> float | None:
    """'inverse-pop^0.5' or '0.5' -> 0.5."""
    if text is None:
        return None
    try:
        return float(text.removeprefix("inverse-pop^"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not inverse-pop^BETA (e.g. inverse-pop^0.5) or a number", param_hint="--target-weighting"
        ) from None


def _parse_list(text: str | None, kind: type, flag: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list", param_hint=flag) from None


def _parse_layers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of sizes like 256,128", param_hint="--layers"
        ) from None


# ---------------------------------------------------------------------------- evaluate


def _results_table(result: dict[str, Any]) -> Group:
    """Metrics as rows and models as columns, so more baselines stay readable in 80 columns."""
    rows = {**({result["model"]: result["metrics"]} if "metrics" in result else {}), **result["baselines"]}
    first = next(iter(rows.values()))
    k_max = max(int(m.split("@")[1]) for m in first)
    shown = [m for m in first if m.startswith(("recall@", "mrr@"))]
    shown.sort(key=lambda m: (m.split("@")[0] != "recall", int(m.split("@")[1])))
    shown += [f"coverage@{k_max}", f"tail@{k_max}"]
    protocol = result["protocol"]
    title = Text(
        f"{result['split']} split: {result['n_events']:,} target events in {result['n_sequences']:,} sequences, "
        f"ranked against all {result['n_items']:,} items, {result['ties']} ties"
        + (", last position only" if protocol["last_only"] else "")
        + (", seen items excluded" if protocol["exclude_seen"] else "")
    )
    table = Table()
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    for m in shown:
        higher_is_better = not m.startswith("pop@")
        best = max(r[m] for r in rows.values()) if higher_is_better else None
        cells = [f"[bold green]{r[m]:.4f}[/]" if r[m] == best else f"{r[m]:.4f}" for r in rows.values()]
        table.add_row(m.replace("recall", "Recall").replace("mrr", "MRR"), *cells)
    notes = []
    key = f"mrr@{k_max}"
    for name in rows:
        lo, hi = result["ci"][name][key]
        notes.append(f"{name} MRR@{k_max} 95% CI [{lo:.4f}, {hi:.4f}]")
    lines = ["; ".join(notes)]
    if "paired" in result:
        p = result["paired"]
        lo, hi = p["ci"][key]
        lines.append(
            f"{result['model']} - {p['against']} (best baseline by {p['chosen_by']}): MRR@{k_max} "
            f"{p['diff'][key]:+.4f} [{lo:+.4f}, {hi:+.4f}], p = {p['p'][key]:.3f} (paired bootstrap over sequences)"
        )
    return Group(title, table, Text("\n".join(lines)))


def _value_table(result: dict[str, Any]) -> Group:
    """Value prediction errors of the model and the value baselines (lower is better)."""
    rows = result["value"]["metrics"]
    n = next(iter(rows.values()))["n"]
    table = Table()
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    for m in ("rmse", "mae"):
        best = min(r[m] for r in rows.values())
        table.add_row(
            m.upper(), *(f"[bold green]{r[m]:.4f}[/]" if r[m] == best else f"{r[m]:.4f}" for r in rows.values())
        )
    return Group(Text(f"{result['split']} split: value of {n:,} target events (lower is better)"), table)


def _event_table(result: dict[str, Any]) -> Group:
    """Next event-type accuracy of the model and two baselines, and the model's per-type scores."""
    ev = result["event_type"]
    acc = Table()
    for name in ev["accuracy"]:
        acc.add_column(name, justify="right")
    acc.add_row(*(f"{v:.4f}" for v in ev["accuracy"].values()))
    per = Table()
    for col in ("type", "support", "precision", "recall"):
        per.add_column(col, justify="right")
    for name, row in ev["per_type"].items():
        per.add_row(name, f"{row['support']:,}", f"{row['precision']:.4f}", f"{row['recall']:.4f}")
    title = Text(f"{result['split']} split: type of {ev['n']:,} next events (accuracy)")
    return Group(title, acc, Text(f"{ev['model']} per type"), per)


def _breakdown_table(result: dict[str, Any], kind: str) -> Table:
    parts = result["breakdown"][kind]
    names = list(parts)
    groups = list(next(iter(parts.values())))
    metric = next(m for m in next(iter(next(iter(parts.values())).values())) if m.startswith("recall@"))
    caption = (
        "head: top 20% of items by training count, mid: next 30%, tail: bottom 50%" if kind == "popularity" else None
    )
    table = Table(title=f"{metric} by {kind} of the target", title_justify="left", caption=caption)
    table.add_column(kind)
    table.add_column("targets", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    for g in groups:
        first = parts[names[0]].get(g, {})
        table.add_row(
            g, f"{first.get('n', 0):,}", *[f"{parts[n].get(g, {}).get(metric, float('nan')):.4f}" for n in names]
        )
    return table


def _parse_baselines(text: str) -> tuple[str, ...]:
    from rnnrec_cli.baselines import BASELINES

    if text.strip() in ("all", ""):
        return BASELINES if text.strip() == "all" else ()
    if text.strip() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise typer.BadParameter(
            f"unknown baseline(s) {', '.join(bad)}; choose from {', '.join(BASELINES)}, all or none",
            param_hint="--baselines",
        )
    return names


@app.command()
@handle_errors
def evaluate(
    target: Annotated[
        Path, typer.Argument(help="A run directory (model + baselines) or a prepared data directory (baselines only).")
    ],
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    k: Annotated[str, typer.Option("--k", help="Cut-offs, e.g. 1,5,10,20.")] = "1,5,10,20",
    ties: Annotated[str, typer.Option(help="conservative, optimistic or median.")] = "conservative",
    baselines: Annotated[
        str, typer.Option(help="Comma list of pop, spop, markov, iknn, sknn; or all, or none.")
    ] = "all",
    last_only: Annotated[bool, typer.Option("--last-only", help="Score only the last event of each sequence.")] = False,
    exclude_seen: Annotated[
        bool, typer.Option("--exclude-seen", help="Remove items seen earlier in the sequence from the ranking.")
    ] = False,
    sampled: Annotated[
        int, typer.Option(help="Also report sampled metrics against N random items (not comparable).")
    ] = 0,
    knn: Annotated[int, typer.Option(help="Neighbours for sknn.")] = 100,
    knn_sample: Annotated[int, typer.Option(help="Most recent candidate sessions sknn considers.")] = 500,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals.")] = 1000,
    devices: Annotated[int, typer.Option(help="Devices to split the sequences over (0 = all visible).")] = 0,
    target_events: Annotated[
        str | None,
        typer.Option(
            help="Score only next-item targets of these event types, e.g. order ('which items will be bought')."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")] = False,
    quiet: Quiet = False,
) -> None:
    """Full-catalogue next-item evaluation of the best checkpoint beside simple baselines."""
    from rnnrec_cli.data import is_data_dir
    from rnnrec_cli.evaluate import EvalOptions
    from rnnrec_cli.evaluate import evaluate as run_evaluate
    from rnnrec_cli.metrics import parse_ks
    from rnnrec_cli.rundir import load_config, open_run

    if split not in ("test", "valid"):
        raise typer.BadParameter(f"{split!r} is not test or valid", param_hint="--split")
    if ties not in ("conservative", "optimistic", "median"):
        raise typer.BadParameter(f"{ties!r} is not conservative, optimistic or median", param_hint="--ties")
    try:
        ks = parse_ks(k)
    except ValueError:
        raise typer.BadParameter(f"{k!r} is not a list of positive integers like 1,5,10,20", param_hint="--k") from None
    for name, value in (
        ("--sampled", sampled),
        ("--knn", knn - 1),
        ("--knn-sample", knn_sample - 1),
        ("--bootstrap", bootstrap - 1),
        ("--devices", devices),
    ):
        if value < 0:
            raise typer.BadParameter("must be positive", param_hint=name)
    opts = EvalOptions(
        split=split, ks=ks, ties=ties, last_only=last_only, exclude_seen=exclude_seen, n_sampled=sampled,  # type: ignore[arg-type]
        baselines=_parse_baselines(baselines), knn=knn, knn_sample=knn_sample, n_boot=bootstrap, devices=devices,
        target_events=_parse_list(target_events, str, "--target-events") or (),
    )  # fmt: skip
    if is_data_dir(target):
        run, data_dir = None, target
        if not opts.baselines:
            raise typer.BadParameter(
                "a data directory has no model: name --baselines to evaluate", param_hint="--baselines"
            )
    else:
        run = open_run(target)
        data_dir = Path(load_config(run).data_dir)
    if sampled:
        _warn([f"sampled metrics (target vs {sampled} random items) are not comparable with full-ranking numbers"])
    with err.status(f"evaluating on {split}", spinner="dots") if not quiet else _nullcontext() as status:

        def on_stage(msg: str) -> None:
            if status is not None:
                status.update(f"{split}: {msg}")

        result = run_evaluate(data_dir, opts, run=run, on_stage=on_stage)
    if not quiet:
        if "ci" in result:
            err.print(_results_table(result))
            err.print(_breakdown_table(result, "position"))
            err.print(_breakdown_table(result, "popularity"))
        if "event" in result.get("breakdown", {}):
            err.print(_breakdown_table(result, "event"))
        if result.get("value"):
            err.print(_value_table(result))
        if result.get("event_type"):
            err.print(_event_table(result))
    n_targets = result["n_events"]
    if n_targets < MIN_TARGETS:
        _warn(
            [
                f"only {n_targets:,} target events were scored on the {split} split: these metrics are mostly "
                f"noise (aim for at least {MIN_TARGETS}; prepare with a longer --split period)"
            ]
        )
    if run is not None and not quiet:
        wrote = [str(p) for p in (run.eval_dir / f"{split}.json", run.eval_dir / f"{split}.csv") if p.is_file()]
        task = result.get("task", "next-item")
        hint = "--task value -o values.csv" if task == "value" else "-o recs.csv"
        err.print(f"Wrote {', '.join(wrote)}. Next: rnnrec predict {run.path} EVENTS {hint}")
    if as_json:
        typer.echo(json.dumps(result))


# ---------------------------------------------------------------------------- predict


@app.command()
@handle_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `rnnrec train`.")],
    events: Annotated[
        list[str] | None,
        typer.Argument(help="Current sessions' events in the training format: file(s), or - for stdin (default)."),
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output file, or - for stdout.")] = "-",
    k: Annotated[int, typer.Option("-k", min=1, help="Recommendations per sequence (or per position).")] = 20,
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "csv",
    exclude_seen: Annotated[
        bool, typer.Option("--exclude-seen/--include-seen", help="Leave out items already in the session.")
    ] = True,
    every_position: Annotated[
        bool, typer.Option("--every-position", help="Recommend after every event, not only the last.")
    ] = False,
    include: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Recommend only these items (one id per line).")
    ] = None,
    exclude: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Never recommend these items (one id per line).")
    ] = None,
    fallback: Annotated[
        bool, typer.Option("--fallback/--no-fallback", help="Popular items for sessions with no known item.")
    ] = True,
    task: Annotated[
        str,
        typer.Option(
            help="next-item (recommendations) or value: each event's value predicted from the events before it "
            "(session_id,position,item_id,value,predicted_value), or with --candidates each listed item's value."
        ),
    ] = "next-item",
    candidates: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="--task value: CSV of (session or user id, item id) pairs, with header."
        ),
    ] = None,
    generate: Annotated[int, typer.Option(min=0, help="Generate a continuation of N items instead of a top-K.")] = 0,
    strategy: Annotated[str, typer.Option(help="greedy, beam or sample (with --generate).")] = "greedy",
    beams: Annotated[int, typer.Option(min=1, help="Beam width for --strategy beam.")] = 5,
    temperature: Annotated[float, typer.Option(help="Softmax temperature for --strategy sample.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed for --strategy sample.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences scored per batch.")] = 256,
    block_rows: Annotated[int, typer.Option(min=1, help="Rows of stdin read per block.")] = 100_000,
    preset: Preset = None,
    session_col: Annotated[str | None, typer.Option(help="Override the session column.")] = None,
    user_col: Annotated[str | None, typer.Option(help="Override the user column.")] = None,
    item_col: Annotated[str | None, typer.Option(help="Override the item column.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Override the time column.")] = None,
    value_col: Annotated[str | None, typer.Option(help="Override the value column.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Recommendations for each session in EVENTS, in original ids: session_id,rank,item_id,score,fallback."""
    from rnnrec_cli.predict import PredictOptions, PredictStats
    from rnnrec_cli.predict import predict as run_predict
    from rnnrec_cli.rundir import open_run

    if fmt not in ("csv", "jsonl", "parquet"):
        raise typer.BadParameter(f"{fmt!r} is not csv, jsonl or parquet", param_hint="--format")
    if every_position and generate:
        raise typer.BadParameter("--every-position and --generate do not combine", param_hint="--generate")
    if candidates is not None and task != "value":
        raise typer.BadParameter("--candidates goes with --task value", param_hint="--candidates")
    try:
        opts = PredictOptions(
            k=k, exclude_seen=exclude_seen, every_position=every_position, fallback=fallback, generate=generate,
            strategy=strategy, beams=beams, temperature=temperature, batch_size=batch_size, block_rows=block_rows,
            seed=seed, task=task,  # type: ignore[arg-type]
        )  # fmt: skip
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    run = open_run(run_dir)
    if out != "-" and Path(out).exists() and not force:
        raise RnnrecError(f"{out} already exists; pass --force to overwrite it")
    # The preset's column mapping only: how sequences are cleaned is the run's.
    overrides = {
        **{k: v for k, v in _preset_values(preset).items() if k not in AS_GIVEN},
        **_given(session_col=session_col, user_col=user_col, item_col=item_col, time_col=time_col, value_col=value_col),
    }
    stats = PredictStats()
    frames = run_predict(
        run, events or ["-"], opts, stats, include=include, exclude=exclude, candidates_file=candidates,
        overrides=overrides,
    )  # fmt: skip
    _write_frames(frames, out, fmt)
    if not quiet:
        err.print(
            f"{stats.n_sequences:,} sequences, {stats.n_events:,} events read; "
            f"{stats.unknown_events:,} {'events or candidate pairs' if candidates else 'events'} "
            "on items unknown to the model skipped; "
            f"{stats.empty_sequences:,} sequences had no known item"
            + (" (left out)" if task == "value" or not fallback else " (popular items given, marked fallback)")
        )
        if stats.repeated_keys:
            _warn(
                [
                    f"{stats.repeated_keys:,} sessions were not contiguous on stdin and got "
                    "recommendations more than once; sort the input by session, or pass it as a file"
                ]
            )


def _write_frames(frames: Any, out: str, fmt: str) -> None:
    """Stream CSV/JSONL frames as they come (stdout or a temp file renamed at the end)."""
    import polars as pl

    if fmt == "parquet":
        if out == "-":
            raise typer.BadParameter("parquet needs a file: pass -o FILE", param_hint="--format")
        frames = list(frames)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        (pl.concat(frames) if frames else pl.DataFrame()).write_parquet(tmp)
        tmp.replace(path)
        return
    target: Any = sys.stdout.buffer if out == "-" else None
    tmp = None
    if target is None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        target = open(tmp, "wb")  # noqa: SIM115 - closed below, renamed only on success
    try:
        first = True
        for df in frames:
            if fmt == "csv":
                df.write_csv(target, include_header=first)
            else:
                df.write_ndjson(target)
            first = False
            target.flush()
        if first and fmt == "csv":  # no input rows: still write the header
            target.write(b"session_id,rank,item_id,score,fallback\n")
    except BaseException:
        if tmp is not None:
            target.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp is not None:
        target.close()
        tmp.replace(Path(out))


def _readable_metavars(command: Any) -> Any:
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


def main() -> None:
    _readable_metavars(typer.main.get_command(app))(prog_name="rnnrec")


if __name__ == "__main__":
    main()
