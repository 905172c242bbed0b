"""A run's further seeds (`train --seeds 0,1,2`): the same settings trained again with each seed,
so that evaluate can say how far a result moves with the seed alone.

The run's own model is its first seed; every further seed is a complete run of its own in
seeds/seed-<s>/ (config.json, checkpoints, metrics.jsonl, the vocabulary), which `evaluate`,
`predict` and `report` also open on their own. The run is marked complete only once every seed
is: an interrupted run continues (`train --resume RUN`) with the seed it was training, from its
last checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from rnnrec_cli import rundir
from rnnrec_cli.config import RunConfig
from rnnrec_cli.rundir import RunDir

SEEDS_DIR = "seeds"


def seed_path(run_path: Path, seed: int) -> Path:
    return run_path / SEEDS_DIR / f"seed-{seed}"


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """The config of one further seed: the run's own with that seed, and its data directory as
    seen from seeds/seed-<s>/ (a relative one stays relative: the run may still move)."""
    data = Path(cfg.data_dir)
    data_dir = str(data if data.is_absolute() else Path("..", "..", data))
    train = dataclasses.replace(cfg.train, seed=seed, more_seeds=())
    return dataclasses.replace(cfg, data_dir=data_dir, train=train)


def train_seeds(
    cfg: RunConfig,
    run: RunDir,
    fit_one: Callable[[RunConfig, RunDir, bool], object],
    on_seed: Callable[[int, Path, bool], None] | None = None,
) -> None:
    """Train each further seed of `run` that is not complete yet: from its last checkpoint when
    it has one, else from the start (what an interrupted start left is cleared first).
    `fit_one(cfg, run, resume)` trains one; `on_seed(seed, path, resumed)` is told before each."""
    for seed in cfg.train.more_seeds:
        sub = RunDir(seed_path(run.path, seed))
        if sub.complete:
            continue
        resume = sub.config.is_file() and sub.checkpoint("last").is_file()
        sub_cfg = seed_config(cfg, seed)
        if resume:
            sub_cfg = rundir.load_config(sub)
        else:
            shutil.rmtree(sub.path, ignore_errors=True)
            sub.checkpoints.mkdir(parents=True)
            rundir.save_config(sub, sub_cfg)
            rundir.save_data_files(sub, rundir.data_dir(sub, sub_cfg))
        if on_seed is not None:
            on_seed(seed, sub.path, resume)
        fit_one(sub_cfg, sub, resume)


def seed_runs(run: RunDir, cfg: RunConfig) -> Iterator[tuple[int, RunDir | None]]:
    """Each further seed of the run and its run directory, opened (its id pinned); None for a
    seed not trained to a best checkpoint yet."""
    for seed in cfg.train.more_seeds:
        path = seed_path(run.path, seed)
        ready = (path / rundir.CONFIG).is_file() and RunDir(path).checkpoint("best").is_file()
        yield seed, rundir.open_run(path) if ready else None
