"""The `rnnrec` command line: each command parses its options, calls one library function and
renders the result.

The only module that exits the process; with cliopts.py (the options) and render.py (what
people see), the only ones that import typer or rich. Library modules (Polars, JAX) are imported
inside the commands, so `rnnrec --help` stays fast. stdout carries data only (run paths, JSON,
predictions); everything for people goes to stderr.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.logging import RichHandler
from typer.exceptions import TyperException

from rnnrec_cli import __version__, render
from rnnrec_cli import cliopts as o
from rnnrec_cli.config import ModelConfig, PrepareConfig, TrainConfig
from rnnrec_cli.errors import RnnrecError, describe, first_line
from rnnrec_cli.options import EvalOptions, PredictOptions
from rnnrec_cli.render import err

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Next-item recommendation with recurrent neural networks: prepare, train, evaluate, predict, tune.",
)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """The error boundary: every failure -> one `Error:` line and a non-zero exit, never a
    traceback. Expected failures exit 1, a closed stdout pipe exits 0 quietly, and anything
    unforeseen exits 70 with a line saying it is a bug (the traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except RnnrecError as exc:
            render.error_line(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _interrupted("interrupted")
        except OSError as exc:
            # `rnnrec predict ... | head`: the reader left; that is not an error. (Polars' CSV
            # writer reports it as a plain OSError naming the broken pipe.)
            if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE or "Broken pipe" in str(exc):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(0) from None
            render.error_line(describe(exc) or str(exc))
            raise typer.Exit(1) from None
        except Exception as exc:
            known = describe(exc)
            if known is not None:
                render.error_line(known)
                raise typer.Exit(1) from None
            logging.getLogger("rnnrec").debug("unexpected failure", exc_info=True)
            render.error_line(
                f"unexpected {type(exc).__name__}: {first_line(exc)}. This is a bug in rnnrec; please "
                "report it with the command that failed (run with -v to see where it happened)"
            )
            raise typer.Exit(70) from None

    return wrapper  # type: ignore[return-value]


def _interrupted(message: str) -> NoReturn:
    """Ctrl-C: say so and leave at once with 130. A normal interpreter shutdown can run into
    work XLA still has in flight and crash; everything written is complete already (atomic)."""
    render.error_line(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("jax", "absl", "flax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
@handle_errors
@o.with_data_options
def prepare(
    events: Annotated[
        list[str], typer.Argument(help="Event log file(s) (CSV/TSV/Parquet/JSONL, gzip ok), or - for stdin.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to create.")],
    data_options: Mapping[str, Any] = o.SHARED,
    no_header: o.NoHeader = False,
    columns: o.Columns = None,
    time_offset_col: o.TimeOffsetCol = None,
    time_offset_unit: o.TimeOffsetUnit = None,
    max_length: o.MaxLength = None,
    events_filter: o.EventsFilter = None,
    min_value: o.MinValue = None,
    buckets: o.Buckets = None,
    item_features: o.ItemFeatures = None,
    item_key: o.ItemKey = None,
    item_categorical: o.ItemCategorical = None,
    item_numeric: o.ItemNumeric = None,
    item_vector: o.ItemVector = None,
    item_sep: o.ItemSep = None,
    force: o.Force = False,
    quiet: o.Quiet = False,
) -> None:
    """Turn a raw event log into train/valid/test sequences with dense item ids."""
    from rnnrec_cli.data import prepare as run_prepare

    own = {k: v for k, v in locals().items() if k not in ("events", "out", "force", "quiet", "data_options")}
    own["events"] = own.pop("events_filter")
    values, split_files = o.prepare_values({**data_options, **own})
    cfg = o.make(PrepareConfig, values)
    with render.status("preparing data", quiet):
        manifest = run_prepare(events, out, cfg, force=force, given=split_files)
    if not quiet:
        err.print(render.prepare_summary(manifest, out))
    render.warn(manifest["warnings"])
    if not quiet:
        err.print(f"Next: rnnrec train {out} -o runs/NAME")
    typer.echo(str(out))


@app.command()
@handle_errors
@o.with_data_options
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
    data_options: Mapping[str, Any] = o.SHARED,
    cell: o.Cell = None,
    layers: o.Layers = None,
    embedding: o.Embedding = None,
    dropout_embed: o.DropoutEmbed = None,
    dropout_hidden: o.DropoutHidden = None,
    tasks: o.Tasks = None,
    task_weights: o.TaskWeights = None,
    value_loss: o.ValueLoss = None,
    huber_delta: o.HuberDelta = None,
    value_input: o.ValueInput = None,
    event_input: o.EventInput = None,
    event_dim: o.EventDim = None,
    item_features: o.UseItemFeatures = None,
    feature_dim: o.FeatureDim = None,
    feature_output: o.FeatureOutput = None,
    loss: o.Loss = None,
    target_weighting: o.TargetWeighting = None,
    n_sample: o.NSample = None,
    sample_alpha: o.SampleAlpha = None,
    full_softmax: o.FullSoftmax = None,
    logq: o.LogQ = None,
    bpreg: o.BprReg = None,
    elu: o.Elu = None,
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = None,
    bptt: o.Bptt = None,
    shuffle: o.Shuffle = None,
    optimizer: o.Optimizer = None,
    lr: o.Lr = None,
    lr_schedule: o.LrSchedule = None,
    momentum: o.Momentum = None,
    clip_norm: o.ClipNorm = None,
    seed: o.Seed = None,
    patience: o.Patience = None,
    monitor: o.Monitor = None,
    checkpoint_every: o.CheckpointEvery = None,
    valid_sample: o.ValidSample = None,
    devices: o.TrainDevices = None,
    shard_items: o.ShardItems = None,
    prefetch: o.Prefetch = None,
    narrow_tail: o.NarrowTail = None,
    coordinator: o.Coordinator = None,
    num_processes: o.NumProcesses = None,
    process_id: o.ProcessId = None,
    force: o.Force = False,
    quiet: o.Quiet = False,
) -> None:
    """Train a recurrent next-item model; prints the run directory as the last stdout line."""
    flags = dict(locals())
    from rnnrec_cli import parallel, rundir
    from rnnrec_cli.sequences import is_data_dir
    from rnnrec_cli.train import fit, start_run

    parallel.init_distributed(coordinator, num_processes, process_id)
    leader = parallel.is_leader()
    quiet = quiet or not leader
    if quiet:
        # -q: warnings and errors only (the loop's progress notes are info).
        logging.getLogger("rnnrec_cli").setLevel(logging.WARNING)
    if resume is not None:
        # Every process reads the run directory (a shared filesystem); only process 0 writes.
        run = rundir.open_for_resume(resume)
        cfg = rundir.load_config(run)
    else:
        if not data:
            raise typer.BadParameter("give a data directory or event file(s), or --resume RUN_DIR", param_hint="DATA")
        prepared = len(data) == 1 and is_data_dir(Path(data[0]))
        if coordinator is not None and (out is None or not prepared):
            raise typer.BadParameter(
                "a multi-process run trains from a prepared data directory (run `rnnrec prepare` first) "
                "into the same --out on every process",
                param_hint="DATA" if out is not None else "--out",
            )
        prep_values, split_files = o.prepare_values(data_options)
        if prepared and (prep_values or any(split_files.values())):
            raise typer.BadParameter(
                f"{data[0]} is already prepared; data options ({', '.join(o.flag_names(prep_values, split_files))}) "
                "apply to raw event files. Prepare again with `rnnrec prepare` to change them",
                param_hint="DATA",
            )
        model_cfg, train_cfg = o.run_configs(config, flags)
        with render.status("preparing data", quiet or prepared):
            started = start_run(
                data, out, model_cfg, train_cfg, prepare_cfg=o.make(PrepareConfig, prep_values),
                given=split_files, item_features=item_features, force=force, write=leader,
            )  # fmt: skip
        if started.prepared and not quiet:
            err.print(render.prepare_summary(started.manifest, started.run.path / "data"))
        render.warn(started.manifest.get("warnings", []) if leader else [])
        run, cfg = started.run, started.cfg
    final = run.final_path
    if not quiet:
        err.print(render.training_header(cfg, final, resume is not None))
        if run.replaces is not None:
            err.print(f"Building the new run in {run.path}; it replaces {final} once training completes")
    try:
        with render.training_progress(quiet) as on_progress:
            fit(cfg, run, resume=resume is not None, on_progress=on_progress,
                on_epoch=None if quiet else lambda r: err.print(render.epoch_line(r, cfg)))  # fmt: skip
    except KeyboardInterrupt:
        if run.checkpoint("last").is_file():
            _interrupted(f"interrupted; continue where it stopped with: rnnrec train --resume {run.path}")
        if leader:
            rundir.discard_failed(run)
        _interrupted("interrupted before the first checkpoint; nothing was kept, start again")
    except BaseException:
        if leader:
            rundir.discard_failed(run)
        raise
    if leader:
        if not quiet:
            err.print(
                f"Wrote {final}: checkpoints/best.msgpack, metrics.jsonl, learning_curve.png. "
                f"Next: rnnrec evaluate {final}"
            )
        typer.echo(str(final))


@app.command()
@handle_errors
def evaluate(
    target: Annotated[
        Path, typer.Argument(help="A run directory (model + baselines) or a prepared data directory (baselines only).")
    ],
    split: o.EvalSplit = None,
    ks: o.Ks = None,
    ties: o.Ties = None,
    baselines: o.Baselines = None,
    last_only: o.LastOnly = None,
    exclude_seen: o.ExcludeSeen = None,
    n_sampled: o.Sampled = None,
    knn: o.Knn = None,
    knn_sample: o.KnnSample = None,
    n_boot: o.Bootstrap = None,
    devices: o.Devices = None,
    target_events: o.TargetEvents = None,
    name: o.EvalName = None,
    force: o.EvalForce = False,
    as_json: o.AsJson = False,
    quiet: o.Quiet = False,
) -> None:
    """Full-catalogue next-item evaluation of the best checkpoint beside simple baselines; each
    protocol keeps its own results in RUN/eval/NAME/."""
    opts = o.make(EvalOptions, o.given(locals(), EvalOptions))
    from rnnrec_cli import rundir
    from rnnrec_cli.evaluate import evaluate as run_evaluate
    from rnnrec_cli.sequences import is_data_dir

    if is_data_dir(target):
        run, data_dir = None, target
        if not opts.baselines:
            raise typer.BadParameter(
                "a data directory has no model: name --baselines to evaluate", param_hint="--baselines"
            )
    else:
        run = rundir.open_run(target)
        data_dir = rundir.data_dir(run, rundir.load_config(run))
        render.warn(rundir.unfinished(run))
    if opts.n_sampled:
        render.warn(
            [f"sampled metrics (target vs {opts.n_sampled} random items) are not comparable with full-ranking numbers"]
        )
    with render.status(f"evaluating on {opts.split}", quiet) as status:
        result = run_evaluate(
            data_dir, opts, run=run, force=force,
            on_stage=lambda msg: status.update(f"{opts.split}: {msg}") if status else None,
        )  # fmt: skip
    if not quiet:
        render.evaluation(result)
    render.warn(render.few_targets(result))
    render.notes(result.notes)
    if run is not None and not quiet:
        err.print(render.evaluation_written(run.path, result))
    if as_json:
        typer.echo(json.dumps(result.to_json()))


@app.command()
@handle_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `rnnrec train`.")],
    events: Annotated[
        list[str] | None,
        typer.Argument(help="Current sessions' events in the training format: file(s), or - for stdin (default)."),
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output file, or - for stdout.")] = "-",
    k: o.K = None,
    format: o.OutFormat = None,
    exclude_seen: o.PredictExcludeSeen = None,
    every_position: o.EveryPosition = None,
    include: Annotated[Path | None, o.item_list("Recommend only these items (one id per line).")] = None,
    exclude: Annotated[Path | None, o.item_list("Never recommend these items (one id per line).")] = None,
    fallback: o.Fallback = None,
    safe_csv: o.SafeCsv = None,
    task: o.PredictTask = None,
    candidates: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="--task value: CSV of (session or user id, item id) pairs, with header."
        ),
    ] = None,
    generate: o.Generate = None,
    strategy: o.Strategy = None,
    beams: o.Beams = None,
    temperature: o.Temperature = None,
    seed: o.PredictSeed = None,
    batch_size: o.PredictBatch = None,
    block_rows: o.BlockRows = None,
    preset: o.Preset = None,
    session_col: Annotated[str | None, typer.Option(help="Override the session column.")] = None,
    user_col: Annotated[str | None, typer.Option(help="Override the user column.")] = None,
    item_col: Annotated[str | None, typer.Option(help="Override the item column.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Override the time column.")] = None,
    value_col: Annotated[str | None, typer.Option(help="Override the value column.")] = None,
    input_format: o.InputFormat = None,
    sep: o.Sep = None,
    no_header: o.NoHeader = None,
    columns: o.Columns = None,
    encoding: o.Encoding = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    quiet: o.Quiet = False,
) -> None:
    """Recommendations for each session in EVENTS, in original ids: session_id,rank,item_id,score,fallback."""
    opts = o.make(PredictOptions, o.given(locals(), PredictOptions))
    from rnnrec_cli.config import AS_GIVEN
    from rnnrec_cli.predict import PredictStats, write_predictions
    from rnnrec_cli.predict import predict as run_predict
    from rnnrec_cli.rundir import exists, is_special, open_run, unfinished

    if candidates is not None and opts.task != "value":
        raise typer.BadParameter("--candidates goes with --task value", param_hint="--candidates")
    if opts.format == "parquet" and out == "-":
        raise typer.BadParameter("parquet needs a file: pass -o FILE", param_hint="--format")
    run = open_run(run_dir)
    if out != "-" and not is_special(Path(out)) and exists(Path(out)) and not force:
        raise RnnrecError(f"{out} already exists; pass --force to overwrite it")
    if out != "-" and Path(out).is_dir():
        raise RnnrecError(f"{out} is a directory; give a file path for -o")
    render.warn(unfinished(run))
    # The preset's column mapping and input format only: how sequences are cleaned is the run's.
    reading = dict(
        session_col=session_col, user_col=user_col, item_col=item_col, time_col=time_col, value_col=value_col,
        format=input_format, sep=sep, columns=columns, encoding=encoding,
        header=None if no_header is None else not no_header,
    )  # fmt: skip
    overrides = {**{k: v for k, v in o.preset_values(preset).items() if k not in AS_GIVEN}, **o.given(reading)}
    stats = PredictStats()
    frames = run_predict(run, events or ["-"], opts, stats, include=include, exclude=exclude,
                         candidates_file=candidates, overrides=overrides)  # fmt: skip
    write_predictions(frames, out, opts.format, safe_csv=opts.safe_csv, stats=stats)
    if not quiet:
        err.print(render.predict_summary(stats, candidates is not None, opts.task == "value" or not opts.fallback))
    render.warn(render.predict_warnings(stats, opts.safe_csv))


@app.command()
@handle_errors
def report(
    paths: Annotated[list[Path], typer.Argument(help="Run directories (or `tune` study directories) to report on.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The HTML file, or - for stdout (default: RUN/report.html for one run, else report.html).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file that is not a report.")] = False,
    evaluation: o.ShowEval = None,
) -> None:
    """One self-contained HTML page (no network needed): what was run, learning curves, test metrics
    with intervals beside the baselines, metric@K curves, breakdowns; several runs side by side."""
    from rnnrec_cli.report import build_report
    from rnnrec_cli.rundir import atomic_write, exists

    for path in paths:
        if not path.is_dir():
            raise RnnrecError(f"{path} is not a run directory; give the directories `rnnrec train` wrote")
    target = out or (paths[0] / "report.html" if len(paths) == 1 else Path("report.html"))
    if target.is_dir():
        raise RnnrecError(f"{target} is a directory; give a file path for -o")
    html, notes = build_report(paths, evaluation)
    render.notes(notes)
    if str(target) == "-":
        typer.echo(html)
        return
    if exists(target) and not force and not _is_report(target):
        raise RnnrecError(f"{target} exists and is not an rnnrec report; pass --force to replace it")
    with atomic_write(target, ".html") as tmp:
        tmp.write_text(html, encoding="utf-8")
    err.print(f"Wrote {target} ({len(html) / 1024:,.0f} KiB); open it in a browser")
    typer.echo(str(target))


def _is_report(path: Path) -> bool:
    """A report this tool wrote earlier (replaced without --force, like a run's own files)."""
    try:
        with open(path, "rb") as f:
            return b"<title>rnnrec report" in f.read(4096)
    except OSError:
        return False


@app.command()
@handle_errors
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more evaluated runs; each later one is paired with the first.")
    ],
    metric: Annotated[str, typer.Option(help="The metric to test: recall@K, mrr@K or ndcg@K.")] = "mrr@20",
    split: Annotated[str, typer.Option(help="The evaluated split: test or valid.")] = "test",
    n_boot: Annotated[int, typer.Option("--bootstrap", min=100, max=100_000, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    evaluation: o.ShowEval = None,
    as_json: o.AsJson = False,
) -> None:
    """Paired bootstrap of runs evaluated on the same targets: each run's metrics at K and its
    difference from the first run, with a 95% interval and a two-sided p-value."""
    from rnnrec_cli.compare import compare_runs

    result = compare_runs(runs, metric, split, n_boot, seed, evaluation)
    render.notes(result.notes)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    err.print(render.comparison(result))


@app.command()
@handle_errors
def tune(
    data: Annotated[Path, typer.Argument(help="A prepared data directory with a validation split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory: trials/, best.json, trials.csv, plots.")],
    trials: o.Trials = None,
    timeout: o.Timeout = None,
    metric: o.Metric = None,
    space: o.SpaceFile = None,
    storage: o.Storage = None,
    study: o.StudyName = None,
    pruning: o.Pruning = None,
    prune_after: o.PruneAfter = None,
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="JSON with 'model' and 'train' sections: every trial's base."),
    ] = None,
    cell: o.Cell = None,
    layers: o.Layers = None,
    embedding: o.Embedding = None,
    dropout_embed: o.DropoutEmbed = None,
    dropout_hidden: o.DropoutHidden = None,
    loss: o.Loss = None,
    n_sample: o.NSample = None,
    sample_alpha: o.SampleAlpha = None,
    full_softmax: o.FullSoftmax = None,
    logq: o.LogQ = None,
    bpreg: o.BprReg = None,
    elu: o.Elu = None,
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = None,
    bptt: o.Bptt = None,
    shuffle: o.Shuffle = None,
    optimizer: o.Optimizer = None,
    lr: o.Lr = None,
    lr_schedule: o.LrSchedule = None,
    momentum: o.Momentum = None,
    clip_norm: o.ClipNorm = None,
    seed: o.Seed = None,
    checkpoint_every: o.CheckpointEvery = None,
    valid_sample: o.ValidSample = None,
    quiet: o.Quiet = False,
) -> None:
    """Search training settings with Optuna (TPE, median pruning); each trial is a run in STUDY_DIR/trials/."""
    flags = dict(locals())
    from rnnrec_cli import tune as t
    from rnnrec_cli.config import parse_duration

    wait = parse_duration(timeout, "--timeout") if timeout else None
    opts = t.TuneOptions(**o.given(dict(trials=trials, metric=metric, storage=storage, study=study, pruning=pruning,
                                        prune_after=prune_after, timeout=wait)))  # fmt: skip
    t.check_data(data)
    model_cfg, train_cfg = o.run_configs(config, {**flags, "monitor": opts.metric})
    opts = dataclasses.replace(opts, seed=train_cfg.seed)  # one --seed: the sampler's and every trial's
    fixed = set(o.given(flags, ModelConfig)) | set(o.given(flags, TrainConfig))
    dims = t.parse_space(t.without(t.load_space(train_cfg.loss, space), fixed), f"--space {space or train_cfg.loss}")
    t.check_space(dims, model_cfg, train_cfg, f"--space {space or train_cfg.loss}")
    searched = {d.name: d.to_json() for d in dims}
    found = t.open_study(opts, out, searched, t.fixed_settings(model_cfg, train_cfg, dims))
    if not quiet:
        err.print(render.tune_header(found, opts, searched, out))
    try:
        with render.tune_progress(quiet, opts.metric) as (on_trial, on_progress):
            t.run_study(data, out, model_cfg, train_cfg, dims, opts, found, on_trial=on_trial, on_progress=on_progress)
    except KeyboardInterrupt:
        _interrupted("interrupted; the running trial is marked failed. Continue the study with the same command")
    notes = t.write_plots(found, out)
    if not quiet:
        err.print(render.tune_table(t.top_rows(found), opts.metric, f"Top trials of study {found.study_name!r}"))
        err.print(render.tune_footer(out, notes))
    typer.echo(str(out / "best.json"))


def main() -> None:
    o.readable_metavars(typer.main.get_command(app))(prog_name="rnnrec")


if __name__ == "__main__":
    main()
