"""The commands that read runs: evaluate, predict, report and compare."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from rnnrec_cli.cli import data_flags, render, render_compare
from rnnrec_cli.cli import flags as o
from rnnrec_cli.cli.boundary import handle_errors
from rnnrec_cli.cli.render import err
from rnnrec_cli.errors import RnnrecError
from rnnrec_cli.options import CompareOptions, EvalOptions, PredictOptions


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
    repeat: o.Repeat = None,
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
    from rnnrec_cli import locks, rundir
    from rnnrec_cli.data.sequences import is_data_dir
    from rnnrec_cli.evaluation.evaluate import evaluate as run_evaluate

    if is_data_dir(target):
        run, data_dir = None, target
        if not opts.baselines:
            raise typer.BadParameter(
                "a data directory has no model: name --baselines to evaluate", param_hint="--baselines"
            )
    else:
        run = rundir.open_run(target)
        data_dir = rundir.data_dir(run, rundir.load_config(run))
    if opts.n_sampled:
        render.warn(
            [f"sampled metrics (target vs {opts.n_sampled} random items) are not comparable with full-ranking numbers"]
        )
    # The run's owner from the start: a run being trained (or evaluated) elsewhere is refused
    # before the work, not after it.
    with locks.holding(run.path, "evaluate") if run is not None else contextlib.nullcontext():
        if run is not None:
            render.warn(rundir.unfinished(run))
        with render.status(f"evaluating on {opts.split}", quiet) as status:
            result = run_evaluate(
                data_dir, opts, run=run, on_stage=lambda msg: status.update(f"{opts.split}: {msg}") if status else None
            )
            if run is not None:
                result = result.save(force=force)
    if not quiet:
        render.evaluation(result)
    render.warn(render.few_targets(result))
    render.notes(result.notes)
    if run is not None and not quiet:
        err.print(render.evaluation_written(run.path, result))
    if as_json:
        typer.echo(json.dumps(result.to_json()))


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
    repeat: o.PredictRepeat = None,
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
    sep: data_flags.Sep = None,
    no_header: data_flags.NoHeader = None,
    columns: data_flags.Columns = None,
    encoding: data_flags.Encoding = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    quiet: o.Quiet = False,
) -> None:
    """Recommendations for each session in EVENTS, in original ids: session_id,rank,item_id,score,fallback."""
    opts = o.make(PredictOptions, o.given(locals(), PredictOptions))
    from rnnrec_cli.evaluation.predict import PredictStats
    from rnnrec_cli.evaluation.predict import predict as run_predict
    from rnnrec_cli.evaluation.writer import write_predictions
    from rnnrec_cli.files import is_special, refuse_to_replace
    from rnnrec_cli.rules import AS_GIVEN
    from rnnrec_cli.rundir import open_run, unfinished

    if candidates is not None and opts.task != "value":
        raise typer.BadParameter("--candidates goes with --task value", param_hint="--candidates")
    if opts.format == "parquet" and out == "-":
        raise typer.BadParameter("parquet needs a file: pass -o FILE", param_hint="--format")
    run = open_run(run_dir)
    if out != "-" and not is_special(Path(out)):
        refuse_to_replace(Path(out), force)  # devices and pipes are written into, never replaced
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
    from rnnrec_cli.files import atomic_write, exists, is_special
    from rnnrec_cli.reporting.build import build_report

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
    if is_special(target):
        # A device or pipe (`-o /dev/null`, a named pipe): written into as a stream, never replaced.
        with open(target, "w", encoding="utf-8") as stream:
            stream.write(html)
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


@handle_errors
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more evaluated runs; each later one is paired with the first.")
    ],
    metric: Annotated[
        str | None, o.opt("The metric to test: recall@K, mrr@K or ndcg@K.", None, (CompareOptions, "metric"))
    ] = None,
    split: Annotated[str | None, o.opt("The evaluated split: test or valid.", None, (CompareOptions, "split"))] = None,
    n_boot: Annotated[
        int | None, o.opt("Bootstrap resamples (100 to 100,000).", None, (CompareOptions, "n_boot"), "--bootstrap")
    ] = None,
    seed: Annotated[int | None, o.opt("Seed of the bootstrap.", None, (CompareOptions, "seed"))] = None,
    evaluation: o.CompareEval = None,
    as_json: o.AsJson = False,
) -> None:
    """Paired bootstrap of runs evaluated on the same targets: each run's metrics at K and its
    difference from the first run, with a 95% interval and a two-sided p-value."""
    from rnnrec_cli.evaluation.compare import compare_runs

    given = o.given(dict(metric=metric, split=split, n_boot=n_boot, seed=seed, evaluation=evaluation))
    result = compare_runs(runs, o.make(CompareOptions, given))
    render.notes(result.notes)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    err.print(render_compare.comparison(result))
