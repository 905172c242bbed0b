"""The Python API: prepare, train, evaluate, recommend, compare and report from a notebook.

Each function computes and returns a value; files are written only where an argument says so
(`out=`, `save=True`) or by an explicit method (`Prepared.save`, `EvalResult.save`). Errors are
`RnnrecError`s naming the field or argument at fault. The command line calls these same library
functions, so a call here and the matching command do the same thing.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli.api.boundary import library
from rnnrec_cli.api.inputs import Events, materialize, session_frame
from rnnrec_cli.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig, task_train_defaults
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.options import CompareOptions, EvalOptions, PredictOptions, TuneOptions

if TYPE_CHECKING:
    import polars as pl

    from rnnrec_cli.evaluation.compare import Comparison
    from rnnrec_cli.evaluation.results import EvalResult
    from rnnrec_cli.training.fit import EpochReport
    from rnnrec_cli.training.search import Searched

PathLike = str | Path


@dataclass(frozen=True)
class Prepared:
    """A prepared data directory: train/valid/test sequences with dense item ids, and the
    manifest that records every transformation. `path` is where it lives; data prepared without
    `out=` lives in a temporary directory until `save` puts it somewhere lasting."""

    path: Path
    manifest: dict[str, Any]
    temporary: bool = False
    _holder: Any = field(default=None, repr=False, compare=False)

    def save(self, path: PathLike, *, force: bool = False) -> Prepared:
        """Copy the data directory to `path` (whole, or not at all) and return it there."""
        from rnnrec_cli.files import refuse_to_replace, replace_dir, temp_dir

        target = Path(path)
        refuse_to_replace(target, force, "pass force=True to replace it")
        tmp = temp_dir(target)
        try:
            shutil.copytree(self.path, tmp, dirs_exist_ok=True)
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Prepared(target, self.manifest)

    def read(self, split: str = "train") -> pl.DataFrame:
        """One split's events as a table: sequence id, dense item id and the columns kept."""
        import polars as pl

        from rnnrec_cli.data.sequences import SPLITS

        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        return pl.read_parquet(self.path / f"{split}.parquet")


@dataclass(frozen=True)
class Run:
    """A trained run directory: its config and the per-epoch training records."""

    path: Path
    config: RunConfig
    history: tuple[dict[str, Any], ...] = ()


@library
def prepare(
    events: Events,
    *,
    out: PathLike | None = None,
    preset: str | None = None,
    test: Events | None = None,
    valid: Events | str | None = None,
    force: bool = False,
    **fields: Any,
) -> Prepared:
    """Clean and split an event log exactly as `rnnrec prepare` does.

    `events`, `test` and `valid` are paths or DataFrames. Settings resolve as on the command
    line: PrepareConfig's defaults < `preset` < the given-split rule (a `test` split is used as
    given: repeats kept, every item kept, no validation cut) < `fields` (PrepareConfig's field
    names, e.g. `session_gap=1800.0`, `min_item_support=1`). A `valid` string that is not a file
    is a period (`valid="7d"`). Written to `out` when given, else to a temporary directory.
    """
    from rnnrec_cli.data.prepare import prepare as run_prepare
    from rnnrec_cli.data.presets import resolve
    from rnnrec_cli.files import load_json

    holder = Path(tempfile.mkdtemp(prefix="rnnrec-"))
    try:
        given: dict[str, list[str]] = {}
        if test is not None:
            given["test"] = materialize(test, holder, "test")
        if valid is not None:
            if isinstance(valid, str) and not Path(valid).is_file():
                fields = {**fields, "valid": valid}
            else:
                given["valid"] = materialize(valid, holder, "valid")
                fields = {"valid": "0", **fields}
        inputs = materialize(events, holder, "events")
        tables = [p for p in [*inputs, *(q for v in given.values() for q in v)] if p.startswith(str(holder))]
        if tables:
            fields = {"format": "parquet", **fields}  # the tables were written as Parquet
        values = resolve(fields, preset=preset, given_test=bool(given.get("test")))
        cfg = PrepareConfig(**values)
        target = Path(out) if out is not None else holder / "data"
        run_prepare(inputs, target, cfg, force=force, given=given)
        manifest = load_json(target / "manifest.json")  # as saved: JSON types, like a data dir read back
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    if out is not None:
        shutil.rmtree(holder, ignore_errors=True)
        return Prepared(target, manifest)
    return Prepared(target, manifest, temporary=True, _holder=_Cleanup(holder))


class _Cleanup:
    """Removes a temporary directory when the last object holding it goes away."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __del__(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@library
def train(
    data: Prepared | PathLike,
    *,
    out: PathLike | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    force: bool = False,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Run:
    """Train a model on prepared data, as `rnnrec train DATA -o OUT` does; returns the run.

    The run directory is written (it holds the checkpoints); without `out` it goes to
    runs/<cell>-<time>. `seed` overrides `train.seed`; `seeds` (as `--seeds 0,1,2`) trains the
    same settings once per seed, the run's model being the first, and `evaluate` then reports
    their mean and spread. An unfinished run leaves nothing behind unless it checkpointed, in
    which case `resume(path)` continues it exactly.
    """
    from rnnrec_cli.config import task_train_defaults
    from rnnrec_cli.training.session import train_run

    if isinstance(data, Prepared):
        if data.temporary:
            raise ConfigError("train needs data that lasts: call prepared.save(PATH) first, or prepare(..., out=PATH)")
        data = data.path
    model = model or ModelConfig()
    if train is None:
        train = TrainConfig(**task_train_defaults(model))
    if seed is not None:
        train = dataclasses.replace(train, seed=seed)
    if seeds:
        if seed is not None and seed != seeds[0]:
            raise ConfigError(f"seed={seed} differs from the first of seeds={list(seeds)}; give one")
        train = dataclasses.replace(train, seed=seeds[0], more_seeds=tuple(seeds[1:]))
    done = train_run([str(data)], Path(out) if out is not None else None, model, train, force=force, on_epoch=on_epoch)
    return _run(done.path)


@library
def resume(run: Run | PathLike, *, on_epoch: Callable[[EpochReport], None] | None = None) -> Run:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped."""
    from rnnrec_cli.training.session import train_run

    done = train_run([], None, ModelConfig(), TrainConfig(), resume=_path(run), on_epoch=on_epoch)
    return _run(done.path)


def _path(run: Run | PathLike) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def _run(path: Path) -> Run:
    from rnnrec_cli import rundir

    opened = rundir.open_run(path)
    return Run(opened.path, rundir.load_config(opened), tuple(rundir.read_metrics(opened)))


@library
def open_run(path: PathLike) -> Run:
    """A finished run directory, read back."""
    return _run(Path(path))


@library
def evaluate(
    run: Run | Prepared | PathLike,
    *,
    options: EvalOptions | None = None,
    save: bool = False,
    force: bool = False,
    **fields: Any,
) -> EvalResult:
    """Full-catalogue next-item evaluation of a run's best checkpoint beside the baselines, as
    `rnnrec evaluate` computes it. `fields` are EvalOptions' (e.g. `split="valid"`, `ks=(20,)`,
    `baselines=("pop",)`). Nothing is written unless `save=True` (or `result.save()` later);
    given prepared data instead of a run, only the baselines are evaluated."""
    from rnnrec_cli import rundir
    from rnnrec_cli.data.sequences import is_data_dir
    from rnnrec_cli.evaluation.evaluate import evaluate as run_evaluate

    opts = dataclasses.replace(options or EvalOptions(), **fields) if fields else options or EvalOptions()
    path = run.path if isinstance(run, (Run, Prepared)) else Path(run)
    if is_data_dir(path):
        if save:
            raise ConfigError("save=True needs a run; the results of data alone are returned, not written")
        return run_evaluate(path, opts)
    opened = rundir.open_run(path)
    result = run_evaluate(rundir.data_dir(opened, rundir.load_config(opened)), opts, run=opened)
    return result.save(force=force) if save else result


@library
def tune(
    data: Prepared | PathLike,
    *,
    out: PathLike,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    options: TuneOptions | None = None,
    space: PathLike | None = None,
    fixed: Collection[str] = (),
    **fields: Any,
) -> Searched:
    """An Optuna search of training settings on the data's validation split, as `rnnrec tune`:
    each trial is a run in `out`/trials/; then the best trials and trial 0 train again for the
    final epochs (`finalists=2`, in `out`/finalists/) and the best of them at that length goes
    to `out`/best.json. `model` and `train` are every trial's base; `fixed` names the fields of
    theirs the search leaves alone; `space` is a search-space file; `fields` are TuneOptions'
    (e.g. `trials=20`)."""
    from rnnrec_cli.training.search import search

    model = model or ModelConfig()
    train = train or TrainConfig(**task_train_defaults(model))
    opts = dataclasses.replace(options or TuneOptions(), **fields)
    train = dataclasses.replace(train, monitor=opts.metric)  # trials are chosen on the study's metric
    path = data.path if isinstance(data, Prepared) else Path(data)
    return search(path, Path(out), model, train, opts, space_file=Path(space) if space else None, fixed=fixed)


@library
def recommend(
    run: Run | PathLike,
    sessions: Any,
    *,
    k: int = PredictOptions.k,
    options: PredictOptions | None = None,
    columns: Mapping[str, str] | None = None,
    **fields: Any,
) -> pl.DataFrame:
    """Top-`k` recommendations after each session, as `rnnrec predict` writes them
    (session_id, rank, item_id, score, fallback), for sessions in memory: a list of item-id
    lists, a {session id: item ids} mapping, or an event DataFrame in the run's columns
    (`columns` maps PrepareConfig's column fields to others, e.g. {"item_col": "sku"}).
    `fields` are PredictOptions' (e.g. `exclude_seen=True`, `every_position=True`)."""
    import polars as pl

    from rnnrec_cli import rundir
    from rnnrec_cli.evaluation.predict import PredictStats
    from rnnrec_cli.evaluation.predict import predict as run_predict

    opts = dataclasses.replace(options or PredictOptions(), k=k, **fields)
    opened = rundir.open_run(_path(run))
    frame, unset = session_frame(sessions, opened.path, rundir.load_config(opened))
    if not isinstance(frame, pl.DataFrame):
        frame = pl.from_pandas(frame)
    with tempfile.TemporaryDirectory(prefix="rnnrec-") as tmp:
        path = Path(tmp) / "sessions.parquet"
        frame.write_parquet(path)
        overrides = {"format": "parquet", **(columns or {})}
        blocks = list(run_predict(opened, [str(path)], opts, PredictStats(), overrides=overrides, unset=unset))
    return pl.concat(blocks, how="vertical_relaxed") if blocks else pl.DataFrame()


@library
def compare(runs: Sequence[Run | PathLike], *, options: CompareOptions | None = None, **fields: Any) -> Comparison:
    """Paired bootstrap of evaluated runs on the targets they share, as `rnnrec compare`.
    `fields` are CompareOptions' (e.g. `metric="recall@20"`, `evaluation="exclude-seen"`)."""
    from rnnrec_cli.evaluation.compare import compare_runs

    opts = dataclasses.replace(options or CompareOptions(), **fields)
    return compare_runs([_path(r) for r in runs], opts)


@library
def report(runs: Sequence[Run | PathLike], *, out: PathLike | None = None, evaluation: str | None = None) -> str:
    """The self-contained HTML report of runs or studies, as `rnnrec report`; written to `out`
    (atomically) when given, and returned."""
    from rnnrec_cli.files import atomic_write
    from rnnrec_cli.reporting.build import build_report

    html, _notes = build_report([_path(r) for r in runs], evaluation)
    if out is not None:
        with atomic_write(Path(out)) as tmp:
            tmp.write_text(html, encoding="utf-8")
    return html
