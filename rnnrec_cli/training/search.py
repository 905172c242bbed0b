"""A tuning study as one call: check the data, build the search space (the loss's shipped space
or a file, less the settings fixed by the caller), open or continue the study, run its trials,
and write its results and plots."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli.config import ModelConfig, TrainConfig
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.options import TuneOptions
from rnnrec_cli.training.finalists import Finalist, train_finalists
from rnnrec_cli.training.space import baseline, check_space, fixed_settings, load_space, parse_space, without
from rnnrec_cli.training.storage import guard, storage_url
from rnnrec_cli.training.trials import top_rows, write_plots
from rnnrec_cli.training.tune import TrialEvent, check_data, open_study, run_study

if TYPE_CHECKING:
    import optuna

    from rnnrec_cli.training.fit import Progress


@dataclass(frozen=True)
class Searched:
    """A finished (or budget-limited) study: its best trials, what its plots say, and best.json."""

    study: optuna.Study
    top: list[dict[str, Any]]
    notes: list[str]
    best: Path
    # The trials trained again for the final epochs, in the order trained (empty: finalists 0).
    finalists: list[Finalist] = field(default_factory=list)


def search(
    data: Path,
    out: Path,
    model: ModelConfig,
    train: TrainConfig,
    opts: TuneOptions,
    *,
    space_file: Path | None = None,
    fixed: Collection[str] = (),
    on_open: Callable[[optuna.Study, TuneOptions, dict[str, Any]], None] | None = None,
    on_trial: Callable[[TrialEvent], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_finalist: Callable[[Finalist, bool], None] | None = None,
) -> Searched:
    """Search `model`/`train` settings on `data`'s validation split into the study directory
    `out`. `fixed`: the config fields the caller set, left out of the space. The sampler's seed
    is the trials' training seed (`train.seed`). `on_open` sees the study before its first trial.
    Then the finalists (`opts.finalists` best trials and trial 0) train for the final epochs
    and best.json is the best of them on validation."""
    check_data(data)
    if train.more_seeds:
        raise ConfigError("tune trains each trial with one seed; drop more_seeds from --config (train the best "
                          "settings with `rnnrec train --config best.json --seeds 0,1,2` instead)")  # fmt: skip
    opts = dataclasses.replace(opts, seed=train.seed)
    where = f"--space {space_file or 'shipped'}"
    # The loss is searched (with each loss's own parameters) unless the caller fixed it.
    base = train.loss if "loss" in fixed else "auto"
    dims = parse_space(without(load_space(base, space_file), set(fixed), train.loss), where)
    check_space(dims, model, train, where)
    searched = {d.name: d.to_json() for d in dims}
    with guard(storage_url(opts, out)):
        study = open_study(opts, out, searched, fixed_settings(model, train, dims))
        if on_open is not None:
            on_open(study, opts, searched)
        if not study.get_trials(deepcopy=False):
            # Trial 0 trains the settings the search starts from: its best can only beat them.
            study.enqueue_trial(baseline(model, train, dims), user_attrs={"baseline": True}, skip_if_exists=True)
        run_study(data, out, model, train, dims, opts, study, on_trial=on_trial, on_progress=on_progress)
        notes = write_plots(study, out)
        final = train_finalists(data, out, model, train, opts, study, on_finalist=on_finalist, on_progress=on_progress)
        return Searched(study, top_rows(study), notes, out / "best.json", final)
