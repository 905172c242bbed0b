"""The commands that build things: prepare, train and tune."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from rnnrec_cli import allocator
from rnnrec_cli.cli import data_flags, model_flags, render, render_tune
from rnnrec_cli.cli import flags as o
from rnnrec_cli.cli import tune_flags as t
from rnnrec_cli.cli.boundary import handle_errors, interrupted
from rnnrec_cli.cli.render import err
from rnnrec_cli.config import ModelConfig, PrepareConfig, TrainConfig
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.rundir import CONFIG
from rnnrec_cli.training.space import describe


@handle_errors
@data_flags.with_data_options
def prepare(
    events: Annotated[
        list[str], typer.Argument(help="Event log file(s) (CSV/TSV/Parquet/JSONL, gzip ok), or - for stdin.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to create.")],
    data_options: Mapping[str, Any] = data_flags.SHARED,
    no_header: data_flags.NoHeader = False,
    columns: data_flags.Columns = None,
    time_offset_col: data_flags.TimeOffsetCol = None,
    time_offset_unit: data_flags.TimeOffsetUnit = None,
    max_length: data_flags.MaxLength = None,
    events_filter: data_flags.EventsFilter = None,
    min_value: data_flags.MinValue = None,
    buckets: data_flags.Buckets = None,
    item_features: data_flags.ItemFeatures = None,
    item_key: data_flags.ItemKey = None,
    item_categorical: data_flags.ItemCategorical = None,
    item_numeric: data_flags.ItemNumeric = None,
    item_vector: data_flags.ItemVector = None,
    item_sep: data_flags.ItemSep = None,
    force: o.Force = False,
    quiet: o.Quiet = False,
) -> None:
    """Turn a raw event log into train/valid/test sequences with dense item ids."""
    from rnnrec_cli.data.prepare import prepare as run_prepare

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


@handle_errors
@data_flags.with_data_options
@model_flags.with_run_options
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
    data_options: Mapping[str, Any] = data_flags.SHARED,
    run_options: Mapping[str, Any] = model_flags.SHARED_RUN,
    tasks: model_flags.Tasks = None,
    task_weights: model_flags.TaskWeights = None,
    value_loss: model_flags.ValueLoss = None,
    huber_delta: model_flags.HuberDelta = None,
    value_input: model_flags.ValueInput = None,
    event_input: model_flags.EventInput = None,
    event_dim: model_flags.EventDim = None,
    item_features: model_flags.UseItemFeatures = None,
    feature_dim: model_flags.FeatureDim = None,
    feature_output: model_flags.FeatureOutput = None,
    target_weighting: model_flags.TargetWeighting = None,
    seeds: model_flags.Seeds = None,
    patience: model_flags.Patience = None,
    monitor: model_flags.Monitor = None,
    devices: model_flags.TrainDevices = None,
    shard_items: model_flags.ShardItems = None,
    prefetch: model_flags.Prefetch = None,
    narrow_tail: model_flags.NarrowTail = None,
    coordinator: model_flags.Coordinator = None,
    num_processes: model_flags.NumProcesses = None,
    process_id: model_flags.ProcessId = None,
    force: o.Force = False,
    quiet: o.Quiet = False,
) -> None:
    """Train a recurrent next-item model; prints the run directory as the last stdout line."""
    flags = dict(locals())
    flags.update(flags.pop("run_options"))
    flags.update(_seed_flags(flags.pop("seeds"), flags["seed"], coordinator))
    # A resumed run reads its own config back later; only its loss is needed here.
    configs = o.run_configs(config, flags) if resume is None else (ModelConfig(), TrainConfig())
    allocator.for_training(_resumed_loss(resume) if resume is not None else configs[1].loss)
    from rnnrec_cli.data.sequences import is_data_dir
    from rnnrec_cli.model import parallel
    from rnnrec_cli.training.session import Started, train_run

    parallel.init_distributed(coordinator, num_processes, process_id)
    leader = parallel.is_leader()
    quiet = quiet or not leader
    if quiet:
        # -q: warnings and errors only (the loop's progress notes are info).
        logging.getLogger("rnnrec_cli").setLevel(logging.WARNING)
    prep_cfg, split_files, prepared = None, None, False
    if resume is None:
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
        prep_cfg = o.make(PrepareConfig, prep_values)
    model_cfg, train_cfg = configs
    started: list[Started] = []
    epoch_line = render.epoch_line

    def on_start(s: Started) -> None:
        spinner.close()
        started.append(s)
        if s.prepared and not quiet:
            err.print(render.prepare_summary(s.manifest, s.run.path / "data"))
        render.warn(s.manifest.get("warnings", []) if leader else [])
        if not quiet:
            err.print(render.training_header(s.cfg, s.run.final_path, s.resumed))
            if s.run.replaces is not None:
                err.print(f"Building the new run in {s.run.path}; it replaces {s.run.final_path} once trained")
        spinner.close()

    spinner = ExitStack()
    spinner.enter_context(render.status("preparing data", quiet or resume is not None or prepared))
    try:
        with render.training_progress(quiet) as on_progress:
            done = train_run(
                data or [], out, model_cfg, train_cfg, prepare_cfg=prep_cfg, given=split_files,
                item_features=item_features, force=force, resume=resume, write=leader, on_start=on_start,
                on_progress=on_progress, on_epoch=None if quiet else lambda r: err.print(epoch_line(r, started[0].cfg)),
                on_seed=None if quiet else lambda seed, path, again: err.print(
                    f"{'Resuming' if again else 'Training'} seed {seed} with the same settings -> {path}"),
            )  # fmt: skip
    except KeyboardInterrupt:
        if started and started[0].run.checkpoint("last").is_file():
            interrupted(f"interrupted; continue where it stopped with: rnnrec train --resume {started[0].run.path}")
        interrupted("interrupted before the first checkpoint; nothing was kept, start again")
    finally:
        spinner.close()
    final = done.path
    if leader:
        if not quiet:
            err.print(
                f"Wrote {final}: checkpoints/best.msgpack, metrics.jsonl, learning_curve.png. "
                f"Next: rnnrec evaluate {final}"
            )
        typer.echo(str(final))


def _resumed_loss(run: Path) -> str:
    """The loss in a run's saved config; the default when it cannot be read (resuming reports
    what is wrong with the run later)."""
    try:
        loss = json.loads((run / CONFIG).read_text())["train"]["loss"]
    except (OSError, ValueError, KeyError, TypeError):
        return TrainConfig().loss
    return loss if isinstance(loss, str) else TrainConfig().loss


def _seed_flags(seeds: str | None, seed: int | None, coordinator: str | None) -> dict[str, Any]:
    """--seeds 0,1,2 as the run's seed (the first) and its further seeds."""
    if seeds is None:
        return {}
    first, *more = o.given({"seeds": seeds})["seeds"] or [None]
    if first is None:
        raise typer.BadParameter("give at least one seed, e.g. 0,1,2", param_hint="--seeds")
    if seed is not None and seed != first:
        raise typer.BadParameter(f"--seed {seed} differs from the first of --seeds {seeds}; give one",
                                 param_hint="--seed")  # fmt: skip
    if coordinator is not None and more:
        raise typer.BadParameter("a multi-process run trains one seed; train each seed as its own run",
                                 param_hint="--seeds")  # fmt: skip
    return {"seed": first, "more_seeds": tuple(more)}


@handle_errors
@model_flags.with_run_options
def tune(
    data: Annotated[Path, typer.Argument(help="A prepared data directory with a validation split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory: trials/, best.json, trials.csv, plots.")],
    trials: t.Trials = None,
    timeout: t.Timeout = None,
    metric: t.Metric = None,
    space: t.SpaceFile = None,
    storage: t.Storage = None,
    study: t.StudyName = None,
    pruning: t.Pruning = None,
    pruner: t.Pruner = None,
    prune_after: t.PruneAfter = None,
    max_failed: t.MaxFailed = None,
    final_epochs: t.FinalEpochs = None,
    finalists: t.Finalists = None,
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="JSON with 'model' and 'train' sections: every trial's base."),
    ] = None,
    run_options: Mapping[str, Any] = model_flags.SHARED_RUN,
    quiet: o.Quiet = False,
) -> None:
    """Search training settings with Optuna; see the docstring set below."""
    flags = dict(locals())
    flags.update(flags.pop("run_options"))
    allocator.for_training(o.run_configs(config, flags)[1].loss)  # trial 0's: the defaults and the flags
    from rnnrec_cli.training.search import search
    from rnnrec_cli.validation import parse_duration

    with o.option_values():
        wait = parse_duration(timeout, "--timeout") if timeout else None
    opts = o.make(TuneOptions, o.given(dict(trials=trials, metric=metric, storage=storage, study=study,
                  pruning=pruning, pruner=pruner, prune_after=prune_after, max_failed=max_failed, timeout=wait,
                  final_epochs=final_epochs, finalists=finalists)))  # fmt: skip
    model_cfg, train_cfg = o.run_configs(config, {**flags, "monitor": opts.metric})
    fixed = set(o.given(flags, ModelConfig)) | set(o.given(flags, TrainConfig))

    def on_open(found: Any, used: TuneOptions, searched: dict[str, Any]) -> None:
        if not quiet:
            err.print(render_tune.tune_header(found, used, searched, out))

    try:
        with render_tune.tune_progress(quiet, opts.metric) as (on_trial, on_progress, on_finalist):
            done = search(data, out, model_cfg, train_cfg, opts, space_file=space, fixed=fixed, on_open=on_open,
                          on_trial=on_trial, on_progress=on_progress, on_finalist=on_finalist)  # fmt: skip
    except KeyboardInterrupt:
        interrupted("interrupted; the running trial is marked failed (a finalist resumes from its checkpoint). "
                    "Continue the study with the same command")  # fmt: skip
    if not quiet:
        err.print(render_tune.tune_table(done.top, opts.metric, f"Top trials of study {done.study.study_name!r}"))
        if done.finalists:
            err.print(render_tune.finalists_table(done.finalists, opts.metric))
        err.print(render_tune.tune_footer(out, done.notes, bool(done.finalists)))
    typer.echo(str(done.best))


tune.__doc__ = (
    "Search training settings with Optuna (TPE; median or Hyperband pruning); each trial is a run in "
    "STUDY_DIR/trials/. "
    "Trial 0 trains the settings given (the defaults and your flags), so the best found is never worse on "
    "validation. Searched unless a flag fixes it (a flag's default below is trial 0's value): "
    f"{describe('auto')}. Then the --finalists best trials and trial 0 train again for --final-epochs, and "
    "best.json holds the settings of the best of them on validation at that length."
)
