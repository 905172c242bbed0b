"""Training as one call: start a run (or reopen one to resume), fit it, and leave nothing
half-made behind: a run that fails is removed, one interrupted after a checkpoint is kept for
`--resume`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnrec_cli import locks, rundir
from rnnrec_cli.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig
from rnnrec_cli.errors import interrupt_in
from rnnrec_cli.rundir import RunDir
from rnnrec_cli.seeds import train_seeds
from rnnrec_cli.training.fit import EpochReport, Progress, fit
from rnnrec_cli.training.start import start_run


@dataclass(frozen=True)
class Started:
    """What a run starts from, for the caller to show before training begins."""

    run: RunDir
    cfg: RunConfig
    resumed: bool
    # The data manifest when raw event files were prepared into the run (else empty).
    manifest: dict[str, Any]
    prepared: bool


@dataclass(frozen=True)
class TrainedRun:
    path: Path  # the finished run directory
    cfg: RunConfig
    epochs: list[EpochReport]


def train_run(
    data: Sequence[str],
    out: Path | None,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    prepare_cfg: PrepareConfig | None = None,
    given: dict[str, list[str]] | None = None,
    item_features: bool | None = None,
    force: bool = False,
    resume: Path | None = None,
    write: bool = True,
    on_start: Callable[[Started], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_seed: Callable[[int, Path, bool], None] | None = None,
) -> TrainedRun:
    """Train `data` (a prepared directory or raw event files) into `out`, or continue the run
    at `resume`; a run with further seeds (train.more_seeds) trains them next, each told to
    `on_seed(seed, path, resumed)` first, and is complete once they all are. Without `write`
    (processes other than 0 of a multi-process run) nothing is written. KeyboardInterrupt
    propagates once the run is cleaned up: kept when it has a last checkpoint to resume from,
    removed when not."""
    try:
        return _train_run(
            data, out, model_cfg, train_cfg, prepare_cfg=prepare_cfg, given=given, item_features=item_features,
            force=force, resume=resume, write=write, on_start=on_start, on_progress=on_progress, on_epoch=on_epoch,
            on_seed=on_seed,
        )  # fmt: skip
    except BaseException as exc:
        stop = interrupt_in(exc)
        if stop is None or stop is exc:
            raise
        raise stop from None  # the run is cleaned up already, as for any failure


def _train_run(
    data: Sequence[str],
    out: Path | None,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    prepare_cfg: PrepareConfig | None,
    given: dict[str, list[str]] | None,
    item_features: bool | None,
    force: bool,
    resume: Path | None,
    write: bool,
    on_start: Callable[[Started], None] | None,
    on_progress: Callable[[Progress], None] | None,
    on_epoch: Callable[[EpochReport], None] | None,
    on_seed: Callable[[int, Path, bool], None] | None,
) -> TrainedRun:
    if resume is not None:
        # Every process reads the run directory (a shared filesystem); only process 0 writes.
        run = rundir.open_for_resume(resume)
        if write:
            locks.acquire(resume, "train --resume")
            try:
                run = rundir.open_for_resume(resume)  # again, as its owner: it may have changed meanwhile
                cfg = rundir.load_config(run)
                rundir.check_data(run, cfg)
            except BaseException:
                locks.release(resume)
                raise
        else:
            cfg = rundir.load_config(run)
        started = Started(run, cfg, True, {}, False)
    else:
        begun = start_run(
            data, out, model_cfg, train_cfg, prepare_cfg=prepare_cfg, given=given,
            item_features=item_features, force=force, write=write,
        )  # fmt: skip
        started = Started(begun.run, begun.cfg, False, begun.manifest, begun.prepared)
    run = started.run
    final = run.final_path  # read before training: finishing removes the marker it comes from
    try:
        if on_start is not None:
            on_start(started)
        more = started.cfg.train.more_seeds
        epochs = fit(started.cfg, run, resume=started.resumed, finish=not more, on_progress=on_progress,
                     on_epoch=on_epoch)  # fmt: skip
        if more:
            train_seeds(started.cfg, run, lambda c, r, again: fit(c, r, resume=again, on_progress=on_progress,
                        on_epoch=on_epoch), on_seed)  # fmt: skip
            rundir.finish(run)
    except KeyboardInterrupt:
        if write and not run.checkpoint("last").is_file():
            rundir.discard_failed(run)
        raise
    except BaseException:
        if write:
            rundir.discard_failed(run)
        raise
    finally:
        # The run's lock (taken by rundir.create, or above for --resume) ends with training, and
        # so does the one on the run a --force run replaced.
        rundir.release(run, final)
    return TrainedRun(final, started.cfg, epochs)
