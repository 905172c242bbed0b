"""rnnrec: offline next-item recommendation experiments with recurrent neural networks.

    import rnnrec_cli as rr
    data = rr.prepare("events.csv", out="data")
    run = rr.train(data, out="runs/gru", model=rr.ModelConfig(layers=(100,)))
    print(rr.evaluate(run).table())
    recs = rr.recommend(run, [["a", "b"]], k=10)

Importing the package is light: JAX and Polars load when a function first needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562), so `import rnnrec_cli`
# and `rnnrec --help` stay fast.
_EXPORTS = {
    "prepare": "rnnrec_cli.api",
    "train": "rnnrec_cli.api",
    "resume": "rnnrec_cli.api",
    "open_run": "rnnrec_cli.api",
    "evaluate": "rnnrec_cli.api",
    "recommend": "rnnrec_cli.api",
    "compare": "rnnrec_cli.api",
    "report": "rnnrec_cli.api",
    "tune": "rnnrec_cli.api",
    "Prepared": "rnnrec_cli.api",
    "Run": "rnnrec_cli.api",
    "PrepareConfig": "rnnrec_cli.config",
    "ModelConfig": "rnnrec_cli.config",
    "TrainConfig": "rnnrec_cli.config",
    "RunConfig": "rnnrec_cli.config",
    "EvalOptions": "rnnrec_cli.options",
    "PredictOptions": "rnnrec_cli.options",
    "CompareOptions": "rnnrec_cli.options",
    "TuneOptions": "rnnrec_cli.options",
    "EvalResult": "rnnrec_cli.evaluation.results",
    "Comparison": "rnnrec_cli.evaluation.compare",
    "EpochReport": "rnnrec_cli.training.fit",
    "RnnrecError": "rnnrec_cli.errors",
    "ConfigError": "rnnrec_cli.errors",
    "DataError": "rnnrec_cli.errors",
    "RunDirError": "rnnrec_cli.errors",
}

__all__ = [
    "CompareOptions",
    "Comparison",
    "ConfigError",
    "DataError",
    "EpochReport",
    "EvalOptions",
    "EvalResult",
    "ModelConfig",
    "PredictOptions",
    "PrepareConfig",
    "Prepared",
    "RnnrecError",
    "Run",
    "RunConfig",
    "RunDirError",
    "TrainConfig",
    "TuneOptions",
    "__version__",
    "compare",
    "evaluate",
    "open_run",
    "prepare",
    "recommend",
    "report",
    "resume",
    "train",
    "tune",
]

if TYPE_CHECKING:
    from rnnrec_cli.api import (
        Prepared,
        Run,
        compare,
        evaluate,
        open_run,
        prepare,
        recommend,
        report,
        resume,
        train,
        tune,
    )
    from rnnrec_cli.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig
    from rnnrec_cli.errors import ConfigError, DataError, RnnrecError, RunDirError
    from rnnrec_cli.evaluation.compare import Comparison
    from rnnrec_cli.evaluation.results import EvalResult
    from rnnrec_cli.options import CompareOptions, EvalOptions, PredictOptions, TuneOptions
    from rnnrec_cli.training.fit import EpochReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnnrec_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
