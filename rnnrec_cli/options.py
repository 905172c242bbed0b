"""Options of one command's work, frozen and validated; each default written once.

EvalOptions (evaluate), ScoreOptions (what scoring computes per target) and PredictOptions
(predict). Unlike config.py's configs they are not saved with data or runs: they shape one call.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from rnnrec_cli.config import Ties
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.rules import HEADLINE_K
from rnnrec_cli.validation import check_choice, check_finite, check_positive

Split = Literal["test", "valid"]
# Resamples beyond this change an interval's bounds by less than they vary between seeds.
MAX_BOOTSTRAP = 100_000
Strategy = Literal["greedy", "beam", "sample"]
PredictTask = Literal["next-item", "value"]
OutputFormat = Literal["csv", "jsonl", "parquet"]
# An evaluation's name is a folder under eval/: one path part, no hidden or option-like names.
EVAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def repeat_weight(value: object) -> float | None:
    """`--repeat` as a weight: 0 for off, None for what is not a weight >= 0 (auto too). Numbers
    are taken as given (the Python API), strings as the command line writes them."""
    if value == "off":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        beta = float(value)
    except ValueError:
        return None
    return beta if math.isfinite(beta) and beta >= 0 else None


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What `evaluate` scores and reports."""

    split: Split = "test"
    ks: tuple[int, ...] = (1, 5, 10, HEADLINE_K)
    ties: Ties = "conservative"
    last_only: bool = False
    exclude_seen: bool = False
    # Also rank the target against this many random items (not comparable with full ranking).
    n_sampled: int = 0
    baselines: tuple[str, ...] = ("pop", "spop", "markov", "iknn", "sknn")
    # sknn: neighbours, and the most recent candidate sessions it considers.
    knn: int = 100
    knn_sample: int = 500
    n_boot: int = 1000
    seed: int = 0
    # Local devices the sequences are split over (0 = all).
    devices: int = 0
    # Score next-item targets of these event types only (e.g. ("order",): "what will be bought").
    target_events: tuple[str, ...] = ()
    # The evaluation's name (eval/<name>/); None: derived from the options (evaluate.eval_name).
    name: str | None = None
    # The repeat boost of the model's scores (see evaluation.repeats): "run" (the weight training
    # chose, see training.holdout; none if it chose none), "off", a weight beta, or "auto" (beta
    # chosen now on the validation split).
    repeat: str = "run"

    def __post_init__(self) -> None:
        check_finite(self)
        check_positive("--seed", self.seed, allow_zero=True)
        check_choice("--split", self.split, Split)
        if self.name is not None and not EVAL_NAME.match(self.name):
            raise ConfigError(
                f"--name {self.name!r} is not an evaluation name: use 1 to 64 letters, digits, '-' and '_', "
                "starting with a letter or digit (e.g. exclude-seen)"
            )
        check_choice("--ties", self.ties, Ties)
        if self.repeat not in ("auto", "run") and self.repeat_weight is None:
            raise ConfigError(f"--repeat takes run, off, auto or a weight >= 0 (e.g. 2), got {self.repeat!r}")
        if self.repeat not in ("auto", "run"):
            # One spelling per protocol: 2, 2.0 and 2e0 are "2", and a weight of 0 is "off".
            weight = self.repeat_weight
            object.__setattr__(self, "repeat", f"{weight:g}" if weight else "off")
        if self.repeat == "auto" and self.split == "valid":
            raise ConfigError(
                "--repeat auto chooses the weight on the validation split, so on --split valid it would score the "
                "targets it was chosen on: give the weight instead (e.g. --repeat 2)"
            )
        if self.repeat not in ("off", "run") and (self.exclude_seen or self.n_sampled):
            raise ConfigError("--repeat raises the items seen earlier and ranks the full catalogue only: "
                              "drop --exclude-seen and --sampled")  # fmt: skip
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"--k needs positive cut-offs like 1,5,10,20, got {self.ks}")
        unknown = [b for b in self.baselines if b not in EvalOptions.baselines]
        if unknown:
            raise ConfigError(
                f"--baselines: unknown {', '.join(unknown)}; choose from "
                f"{', '.join(EvalOptions.baselines)}, all or none"
            )
        check_positive("--sampled", self.n_sampled, allow_zero=True)
        check_positive("--knn", self.knn)
        check_positive("--knn-sample", self.knn_sample)
        check_positive("--bootstrap", self.n_boot)
        if self.n_boot > MAX_BOOTSTRAP:
            raise ConfigError(f"--bootstrap {self.n_boot} is more resamples than useful; use at most {MAX_BOOTSTRAP:,}")
        check_positive("--devices", self.devices, allow_zero=True)

    @property
    def repeat_weight(self) -> float | None:
        """The repeat boost's weight: 0 for off, None for auto and run (and for what is neither)."""
        return repeat_weight(self.repeat)


@dataclass(frozen=True, kw_only=True)
class ScoreOptions:
    """What scoring computes per target: ties policy, top-K length, seen-item exclusion,
    sampled ranks, the item block of the full-catalogue scan, and the devices."""

    ties: Ties = "conservative"
    # Top-K list length (0 = ranks only, as validation needs).
    k: int = HEADLINE_K
    exclude_seen: bool = False
    n_sampled: int = 0
    # Items scored at once: scores exist one [B, block] block at a time, so memory stays
    # bounded for catalogues of millions of items.
    item_block: int = 32768
    devices: int = 0
    # The repeat boost's weight beta (0 = none; see evaluation.repeats).
    repeat: float = 0.0

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("ties", self.ties, Ties)
        check_positive("k", self.k, allow_zero=True)
        check_positive("item block", self.item_block)
        check_positive("--repeat", self.repeat, allow_zero=True)
        if self.repeat and self.exclude_seen:
            raise ConfigError("--repeat raises the items seen earlier, which --exclude-seen removes: use one of them")
        if self.repeat and self.n_sampled:
            raise ConfigError("--repeat ranks against the full catalogue only: drop --n-sampled")
        if self.item_block >= 1 << 24:
            raise ConfigError("item block must stay below 2**24 items (per-block counts are summed in float32)")


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """What `predict` writes for each input sequence."""

    k: int = HEADLINE_K
    exclude_seen: bool = True
    every_position: bool = False
    fallback: bool = True
    generate: int = 0
    strategy: Strategy = "greedy"
    beams: int = 5
    temperature: float = 1.0
    # "value": the value of each event predicted from the events before it, or of candidate items.
    task: PredictTask = "next-item"
    format: OutputFormat = "csv"
    # Ids are data: exact by default (joins and pipelines need them as given); a warning names
    # formula-leading ones, and this quotes them for spreadsheets (OWASP's CSV-injection advice).
    safe_csv: bool = False
    batch_size: int = 256  # sequences per jitted call
    block_rows: int = 100_000  # stdin rows per block
    seed: int = 0
    # The repeat boost's weight beta (0 = none; see evaluation.repeats), or "run": the weight the
    # run's training chose, where it applies (top-K lists that keep the session's own items).
    repeat: float | str = "run"

    def __post_init__(self) -> None:
        check_finite(self)
        check_positive("--seed", self.seed, allow_zero=True)
        check_positive("-k", self.k)
        weight = None if self.repeat == "run" else repeat_weight(self.repeat)
        if weight is None and self.repeat != "run":
            raise ConfigError(
                f"--repeat takes run, off or a weight >= 0 (e.g. 2), got {self.repeat!r}; `rnnrec evaluate RUN "
                "--repeat auto` chooses one on the validation split and prints it"
            )
        if weight is not None:
            object.__setattr__(self, "repeat", weight)  # the command line passes it as text
        if self.boost_weight and self.exclude_seen:
            raise ConfigError(
                "--repeat raises the session's own items, which predict leaves out by default: add --include-seen "
                "(exclude_seen=False in Python)"
            )
        if self.boost_weight and (self.generate or self.task != "next-item"):
            raise ConfigError(
                "--repeat applies to top-K lists (after the last event or --every-position), "
                "not to --generate or --task value"
            )
        check_positive("--generate", self.generate, allow_zero=True)
        check_positive("--batch-size", self.batch_size)
        check_positive("--block-rows", self.block_rows)
        check_choice("--strategy", self.strategy, Strategy)
        check_choice("--task", self.task, PredictTask)
        check_choice("--format", self.format, OutputFormat)
        check_positive("--beams", self.beams)
        check_positive("--temperature", self.temperature)
        if self.every_position and self.generate:
            raise ConfigError("--every-position and --generate do not combine")
        if not self.generate and (self.strategy != "greedy" or self.temperature != 1.0 or self.beams != 5):
            raise ConfigError("--strategy, --beams and --temperature shape --generate N; add --generate")

    @property
    def boost_weight(self) -> float:
        """The weight asked for (0 for "run", which predict resolves from the run)."""
        return 0.0 if self.repeat == "run" else float(self.repeat)


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """How `rnnrec tune` searches: the study and its budget."""

    trials: int = 100
    # Seconds after which no new trial starts (None = no limit); a running trial finishes.
    timeout: float | None = None
    metric: str = "mrr@20"
    storage: str | None = None
    study: str | None = None
    # TPE's seed (each trial's training seed is TrainConfig.seed, the same for all trials).
    seed: int = 0
    pruning: bool = True
    # median: Optuna's median rule; hyperband: Hyperband over epochs (multi-fidelity).
    pruner: str = "median"
    # Finished trials before the median pruner may stop a trial at an epoch.
    prune_after: int = 3
    # Trials of this worker failing in a row (diverged) that stop the study: the space or the
    # fixed settings do not train, and more trials would only fail the same way.
    max_failed: int = 5
    # Epochs of the training best.json describes (trials train --epochs, a budget): None = the
    # training default, or the trials' epochs when they run longer.
    final_epochs: int | None = None
    # The best complete trials trained again for the final epochs, with trial 0, before best.json
    # is chosen on validation at that length (see training.finalists); 0 = best.json is the best
    # trial as measured after the trials' epochs.
    finalists: int = 2

    def __post_init__(self) -> None:
        if self.finalists < 0:
            raise ConfigError(f"--finalists must be >= 0, got {self.finalists}")
        if self.final_epochs is not None and self.final_epochs <= 0:
            raise ConfigError(f"--final-epochs must be > 0, got {self.final_epochs}")
        if self.trials <= 0:
            raise ConfigError(f"--trials must be > 0, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be > 0, got {self.timeout}")
        if not re.fullmatch(r"(mrr|recall)@[1-9]\d*", self.metric):
            raise ConfigError(
                f"--metric {self.metric!r} is not a validation metric computed each epoch; use mrr@K or recall@K "
                "(e.g. mrr@20)"
            )
        if self.pruner not in ("median", "hyperband"):
            raise ConfigError(f"--pruner must be median or hyperband, got {self.pruner!r}")
        if self.prune_after < 0:
            raise ConfigError(f"--prune-after must be >= 0, got {self.prune_after}")
        if self.max_failed < 1:
            raise ConfigError(f"--max-failed must be > 0, got {self.max_failed}")

    @property
    def startup_trials(self) -> int:
        """Random trials before TPE models the results: GRU4Rec-style searches of 100-200
        trials use Optuna's 10; a short search gets a quarter of its trials, at least 3."""
        return max(3, min(10, self.trials // 4))


@dataclass(frozen=True, kw_only=True)
class CompareOptions:
    """How `rnnrec compare` tests later runs against the first: the metric and split, which
    stored evaluation, and the paired bootstrap's resamples and seed."""

    metric: str = f"mrr@{HEADLINE_K}"
    split: Split = "test"
    # The stored evaluation to compare (None: `default`, else the one the runs share).
    evaluation: str | None = None
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("--split", self.split, Split)
        if self.n_boot < 100 or self.n_boot > MAX_BOOTSTRAP:
            raise ConfigError(f"--bootstrap must be between 100 and {MAX_BOOTSTRAP:,}, got {self.n_boot}")
