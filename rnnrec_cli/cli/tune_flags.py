"""The options of `rnnrec tune`: the study, its budget, its pruning and its final training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnrec_cli.cli.flags import opt
from rnnrec_cli.options import TuneOptions

TUNE = "Search"
Trials = Annotated[
    int | None, opt("Finished trials the study should hold (a rerun continues it).", TUNE, (TuneOptions, "trials"))
]
Timeout = Annotated[
    str | None,
    opt(
        "Start no trial after this long (e.g. 45m, 2h); the running one finishes, then the finalists train. "
        "\\[default: none]",
        TUNE,
    ),
]
Metric = Annotated[str | None, opt("Validation metric to maximise: mrr@K or recall@K.", TUNE, (TuneOptions, "metric"))]
SpaceFile = Annotated[
    Path | None,
    typer.Option(
        "--space",
        exists=True,
        dir_okay=False,
        metavar="FILE",
        help='JSON {"params": {NAME: {"low", "high", "step"|"log"} or {"choices": [...]} or null}, "base": '
        '"auto"|"ce"|"bpr-max"|"none"}: changes the shipped space (null drops a parameter; base none replaces it).',
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
    opt("Stop trials whose epoch metric is below the median of earlier trials.", TUNE, (TuneOptions, "pruning"),
        "--pruning/--no-pruning"),
]  # fmt: skip
Pruner = Annotated[
    str | None,
    opt("median: stop a trial below the median of earlier trials at an epoch; hyperband: Optuna's Hyperband "
        "over epochs (successive halving in several brackets).", TUNE, (TuneOptions, "pruner")),
]  # fmt: skip
PruneAfter = Annotated[
    int | None, opt("Finished trials before median pruning starts.", TUNE, (TuneOptions, "prune_after"))
]
MaxFailed = Annotated[
    int | None, opt("Trials failing in a row that stop the study.", TUNE, (TuneOptions, "max_failed"))
]
FinalEpochs = Annotated[
    int | None, opt("Epochs best.json trains (trials train --epochs). \\[default: 10, or --epochs if more]", TUNE)
]
Finalists = Annotated[
    int | None,
    opt("Best complete trials trained again for --final-epochs, with trial 0, before best.json is chosen on "
        "validation at that length (0: best.json is the best trial after the trials' epochs).", TUNE,
        (TuneOptions, "finalists")),
]  # fmt: skip
