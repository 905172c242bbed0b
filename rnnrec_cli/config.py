"""Frozen, validated configuration saved with the data and the runs; each default written once.

PrepareConfig goes into a data directory's manifest, RunConfig (ModelConfig + TrainConfig) into
a run's config.json; the options of one command's work (evaluate, scoring, predict) are in
options.py. The CLI shows these defaults in --help and passes only the flags a user gave.
Precedence (resolved once, in the CLI): dataclass defaults < preset < --config file < flags.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from rnnrec_cli.errors import ConfigError
from rnnrec_cli.rules import AUTO_SPLIT, HEADLINE_K
from rnnrec_cli.validation import (
    Period,
    _check_probability,
    check_choice,
    check_finite,
    check_positive,
    parse_period,
    parse_split,
)

Cell = Literal["gru", "lstm", "rnn"]
Optimizer = Literal["adagrad", "adam", "adamw", "sgd"]
Loss = Literal["ce", "bpr-max", "top1-max"]
Schedule = Literal["constant", "cosine", "linear"]
TimeUnit = Literal["auto", "s", "ms", "us", "ns"]
InputFormat = Literal["auto", "csv", "parquet", "jsonl", "otto"]
Ties = Literal["conservative", "optimistic", "median"]
Task = Literal["next-item", "value", "event-type"]
ValueLoss = Literal["mse", "huber"]


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """How a raw event log becomes train/valid/test sequences."""

    preset: str | None = None
    format: InputFormat = "auto"
    sep: str | None = None
    # Text encoding of CSV/JSON inputs (any Python codec name); other encodings are read via UTF-8.
    encoding: str = "utf-8"
    # Files without a header row get these column names (default column_1, column_2, ...).
    header: bool = True
    columns: tuple[str, ...] = ()
    user_col: str | None = None
    session_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    event_col: str | None = None
    value_col: str | None = None
    time_unit: TimeUnit = "auto"
    # A column of positions that order each sequence's events when the log has no times (e.g. 0, 1,
    # 2, ... within each session): events are ordered by it, and no time split can be made.
    order_col: str | None = None
    # A column naming each row's split, used as given like --test/--valid files; "none" ignores
    # a column that would be recognised by its name (split, set, fold).
    split_col: str | None = None
    # Its values for train, valid and test, in that order (default: SPLIT_VALUES).
    split_values: tuple[str, ...] = ()
    # A date (or time) column plus an offset column, e.g. Diginetica's eventdate + timeframe (ms).
    time_offset_col: str | None = None
    time_offset_unit: TimeUnit = "ms"
    # Seconds of inactivity that start a new session; None = each user's whole history is one
    # sequence. Ignored when session_col is given.
    session_gap: float | None = 1800.0
    events: tuple[str, ...] = ()
    min_value: float | None = None
    dedupe_consecutive: bool = True
    # Keep only the most recent N events of each sequence (0 = no limit).
    max_length: int = 0
    min_item_support: int = 5
    min_session_length: int = 2
    # "auto": the last 7 days, unless that leaves a split too small to measure anything (fewer
    # than MIN_TARGETS targets or MIN_SEQUENCES sequences) or no training data; then the last 10%
    # of events in time (AUTO_FALLBACK). The choice is printed and recorded in the manifest.
    split: str = "auto"
    valid: str = "auto"
    # A test split with fewer than TINY_TEST_TARGETS targets is an error unless this is set.
    allow_tiny_test: bool = False
    # Parts the log is hashed into (by user/session) and cleaned one at a time, which bounds
    # memory for logs larger than RAM; 0 = from the input size. Results do not depend on it.
    buckets: int = 0
    # Item side features joined to the catalogue (see features.py): a CSV/Parquet file keyed by
    # item id; columns picked automatically unless named.
    item_features: str | None = None
    item_key: str | None = None
    item_categorical: tuple[str, ...] = ()
    item_numeric: tuple[str, ...] = ()
    item_vector: str | None = None
    item_sep: str = "|"

    def __post_init__(self) -> None:
        check_choice("--format", self.format, InputFormat)
        check_choice("--time-unit", self.time_unit, TimeUnit)
        check_finite(self)
        if self.columns and self.header and self.preset is None:
            # (A preset may name the columns of its header-less variant, e.g. MovieLens .dat files.)
            raise ConfigError("--columns names the columns of a file without a header row; add --no-header")
        try:
            "x".encode(self.encoding)  # a text encoding: codecs.lookup alone accepts rot13, base64 ...
        except LookupError:
            raise ConfigError(
                f"--encoding {self.encoding!r} is not a known text encoding; use e.g. utf-8, latin-1 or cp1252"
            ) from None
        if self.sep is not None and len(self.sep) != 1 and self.sep != "::":
            raise ConfigError(f"--sep must be one character (or '::'), got {self.sep!r}")
        if self.time_offset_unit == "auto":
            raise ConfigError("--time-offset-unit must be s, ms, us or ns")
        check_positive("--max-length", self.max_length, allow_zero=True)
        if self.session_gap is not None:
            check_positive("--session-gap", self.session_gap)
        check_positive("--min-item-support", self.min_item_support)
        check_positive("--buckets", self.buckets, allow_zero=True)
        if self.min_session_length < 2:
            raise ConfigError(f"--min-session-length must be >= 2 (a sequence of one event has no next item to "
                              f"predict), got {self.min_session_length}")  # fmt: skip
        if self.split_values and (
            len(self.split_values) != 3 or len(set(self.split_values)) != 3 or not all(self.split_values)
        ):
            raise ConfigError(
                f"--split-values needs three distinct names for train, valid and test, e.g. train,valid,test; "
                f"got {','.join(self.split_values)}"
            )
        if self.split not in ("loo", "auto"):
            parse_split(self.split)
        if self.valid != "auto":
            parse_period(self.valid, "--valid")

    @property
    def leave_one_out(self) -> bool:
        return self.split == "loo"

    @property
    def global_cutoff(self) -> bool:
        """Whether a time split cuts every sequence at one cutoff (events before it are context
        only) instead of moving sequences whole: for user histories, which span years, so that a
        whole history ending after the cutoff would make targets of events long before it.
        Sessions (given, or cut by an inactivity gap) keep GRU4Rec's whole-session rule."""
        return self.session_col is None and self.session_gap is None and not self.leave_one_out

    @property
    def filters_items(self) -> bool:
        """Whether the support/length filter changes anything beyond short sequences: with
        support 1 and repeats kept, training sequences stay as given (one event long included,
        which trains nothing but keeps its items in the catalogue)."""
        return self.min_item_support > 1 or self.dedupe_consecutive or self.min_session_length > 2

    @property
    def test_period(self) -> Period:
        return parse_split(AUTO_SPLIT[0] if self.split == "auto" else self.split)

    @property
    def valid_period(self) -> Period:
        return parse_period(AUTO_SPLIT[0].removeprefix("time:") if self.valid == "auto" else self.valid, "--valid")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    cell: Cell = "gru"
    layers: tuple[int, ...] = (224,)
    # 0 = "constrained" embedding (GRU4Rec's default): one item matrix is both the input
    # embedding and the output weights, so its width is the last layer's size.
    embedding: int = 0
    dropout_embed: float = 0.5
    dropout_hidden: float = 0.05
    # What the network predicts: the next item, and/or the value of the next event (rating,
    # price, dwell time) given its item; one shared recurrent body, one head per task.
    tasks: tuple[str, ...] = ("next-item",)
    # With the value task: the current event's value (standardised) is fed in beside its item,
    # and predictions are de-standardised with the training split's mean and std.
    value_input: bool = True
    value_mean: float = 0.0
    value_std: float = 1.0
    # The training split's event types (click, cart, order...): the classes of the event-type
    # head, and the vocabulary of event_input, which feeds an embedding of each event's type
    # (event_dim wide) beside its item.
    event_types: tuple[str, ...] = ()
    event_input: bool = False
    event_dim: int = 8
    # Item side features (from `prepare --item-features`): the pooled feature vector
    # (feature_dim wide) is fed beside each input item, and with feature_output added (mapped to
    # the hidden size) to each item's output vector, so items with little data lean on features.
    item_features: bool = False
    feature_codes: int = 0
    feature_numeric: int = 0
    feature_dim: int = 16
    feature_output: bool = False

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("--cell", self.cell, Cell)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"--task needs distinct tasks of next-item, value, event-type: {','.join(self.tasks)}")
        for task in self.tasks:
            check_choice("--task", task, Task)
        check_positive("value std", self.value_std)
        check_positive("--event-dim", self.event_dim)
        check_positive("--feature-dim", self.feature_dim)
        if not self.layers or any(n <= 0 for n in self.layers):
            raise ConfigError(f"--layers must be positive sizes like 100 or 256,128, got {self.layers}")
        check_positive("--embedding", self.embedding, allow_zero=True)
        _check_probability("--dropout-embed", self.dropout_embed)
        _check_probability("--dropout-hidden", self.dropout_hidden)

    @property
    def tied(self) -> bool:
        return self.embedding == 0

    @property
    def predicts_items(self) -> bool:
        return "next-item" in self.tasks

    @property
    def predicts_values(self) -> bool:
        return "value" in self.tasks

    @property
    def predicts_events(self) -> bool:
        return "event-type" in self.tasks

    @property
    def takes_values(self) -> bool:
        return self.predicts_values and self.value_input

    @property
    def input_dim(self) -> int:
        """Width of the first cell's input: the item embedding, plus the value and the event
        type's embedding when they are fed."""
        extra = (self.event_dim if self.event_input else 0) + (self.feature_dim if self.item_features else 0)
        return self.embedding_dim + int(self.takes_values) + extra

    @property
    def embedding_dim(self) -> int:
        return self.layers[-1] if self.tied else self.embedding


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 80
    # Steps of truncated back-propagation; the hidden state carries over between chunks.
    bptt: int = 10
    # Shuffle sequence order each epoch (seeded); off = by start time, as GRU4Rec does.
    shuffle: bool = False
    # BPR-max with ELU 0.5, bpreg 1.95 and lr 0.03: ahead of CE (lr 0.05) on Tmall, RetailRocket
    # and #nowplaying over seeds, and steadier than at lr 0.05 (docs/benchmarks.md, defaults).
    loss: Loss = "bpr-max"
    # Next-item targets weighted by (training count)^-beta, normalised per chunk (0 = unweighted):
    # shifts the model towards rare items, for the sparsity/imbalance trade-off.
    target_weighting: float = 0.0
    # Weight of each task's loss, in the order of model.tasks (empty = 1 each).
    task_weights: tuple[float, ...] = ()
    value_loss: ValueLoss = "mse"
    # Huber's transition point, in standard deviations of the value.
    huber_delta: float = 1.0
    # Output layer: the chunk's own targets plus n_sample items shared by the chunk, drawn with
    # probability ~ support^sample_alpha. full_softmax scores every item instead (exact CE).
    n_sample: int = 2048
    sample_alpha: float = 0.4
    full_softmax: bool = False
    # Log-Q correction for CE with sampled columns, 0..1 (1 = full correction); CE only.
    logq: float = 1.0
    # BPR-max score regularisation and the ELU applied to scores before BPR-max (0 = linear).
    bpreg: float = 1.95
    elu: float = 0.5
    optimizer: Optimizer = "adagrad"
    lr: float = 0.03
    lr_schedule: Schedule = "constant"
    momentum: float = 0.4
    clip_norm: float = 0.0
    seed: int = 0
    # Further seeds (`train --seeds 0,1,2` sets seed 0 and these 1, 2): the same settings trained
    # again with each, into seeds/seed-<s>/ of the run; evaluate reports their mean and spread.
    more_seeds: tuple[int, ...] = ()
    # Early stopping: stop after this many epochs without improvement of `monitor` (0 = never).
    patience: int = 0
    monitor: str = f"mrr@{HEADLINE_K}"
    # Sequences the evaluation recurrence runs side by side (fewer when a split has fewer); the
    # targets are then scored in batches of their own (scoring.SCORE_ROWS).
    eval_batch_size: int = 256
    # Validate on at most this many sequences, a seeded random subset (0 = the whole split):
    # full-catalogue ranking of a large validation split can cost more than the epoch.
    valid_sample: int = 0
    # Seconds between mid-epoch checkpoints for --resume (0 = only at epoch ends).
    checkpoint_every: float = 120.0
    # Devices the session-parallel batch is split over (0 = every visible device, on every
    # process of a multi-host run); shard_items also splits the item tables by rows.
    devices: int = 0
    shard_items: bool = False
    # Chunks prepared ahead by a background thread while the device runs the current one.
    prefetch: int = 2
    # Run the end of each epoch, where the longest sequences outlast the others, on a batch
    # halved as slots run dry (GRU4Rec's batch shrinks there) instead of computing idle slots.
    narrow_tail: bool = True
    # The repeat boost's weight (evaluation.repeats) is chosen after training on the validation
    # split, or without one before the last epoch on this share of the earliest training
    # sequences, which sit out every epoch but the last (training.holdout). 0 = no boost.
    repeat_holdout: float = 0.05

    def __post_init__(self) -> None:
        check_finite(self)
        check_positive("--seed", self.seed, allow_zero=True)
        for s in self.more_seeds:
            check_positive("--seeds", s, allow_zero=True)
        if len({self.seed, *self.more_seeds}) != 1 + len(self.more_seeds):
            raise ConfigError(f"--seeds must differ from each other, got {(self.seed, *self.more_seeds)}")
        check_choice("--loss", self.loss, Loss)
        check_choice("--value-loss", self.value_loss, ValueLoss)
        check_positive("--target-weighting", self.target_weighting, allow_zero=True)
        check_positive("--huber-delta", self.huber_delta)
        if any(w < 0 for w in self.task_weights):
            raise ConfigError(f"--task-weights must be >= 0, got {self.task_weights}")
        check_choice("--optimizer", self.optimizer, Optimizer)
        check_choice("--lr-schedule", self.lr_schedule, Schedule)
        check_positive("--epochs", self.epochs)
        check_positive("--batch-size", self.batch_size)
        check_positive("--bptt", self.bptt)
        check_positive("--n-sample", self.n_sample, allow_zero=True)
        check_positive("--sample-alpha", self.sample_alpha, allow_zero=True)
        if not 0 <= self.logq <= 1:
            raise ConfigError(f"--logq must be in [0, 1], got {self.logq}")
        if self.full_softmax and self.loss != "ce":
            raise ConfigError(f"--full-softmax applies to --loss ce only, not {self.loss}; add --loss ce")
        check_positive("--bpreg", self.bpreg, allow_zero=True)
        check_positive("--elu", self.elu, allow_zero=True)
        check_positive("--lr", self.lr)
        check_positive("--momentum", self.momentum, allow_zero=True)
        check_positive("--clip-norm", self.clip_norm, allow_zero=True)
        check_positive("--patience", self.patience, allow_zero=True)
        check_positive("--eval-batch-size", self.eval_batch_size)
        check_positive("--valid-sample", self.valid_sample, allow_zero=True)
        check_positive("--checkpoint-every", self.checkpoint_every, allow_zero=True)
        check_positive("--devices", self.devices, allow_zero=True)
        check_positive("--prefetch", self.prefetch, allow_zero=True)
        if not 0 <= self.repeat_holdout <= 0.5:
            raise ConfigError(f"--repeat-holdout must be in [0, 0.5] (a share of the training sequences), got "
                              f"{self.repeat_holdout}")  # fmt: skip
        if not re.fullmatch(r"(recall|mrr)@\d+|rmse|mae|accuracy", self.monitor):
            raise ConfigError(
                f"--monitor {self.monitor!r} must look like mrr@20 or recall@20, or be rmse, mae or accuracy"
            )

    @property
    def valid_ks(self) -> tuple[int, ...]:
        """Cut-offs of the validation metrics: the monitor's and the headline one."""
        k = int(self.monitor.split("@")[1]) if "@" in self.monitor else HEADLINE_K
        return tuple(sorted({k, HEADLINE_K}))


# Training defaults of a model that ranks no items. Adagrad at GRU4Rec's learning rate drives a
# dense value regression into divergence (MovieLens ratings: training loss 31, 6, 37, 41); Adam
# with clipping converges and beats the item-mean baseline untuned (README, "Beyond next-item").
VALUE_TASK_DEFAULTS: dict[str, Any] = {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "clip_norm": 1.0}


def task_train_defaults(model: ModelConfig, given: Collection[str] = ()) -> dict[str, Any]:
    """TrainConfig values that replace the class defaults for this model's tasks. `given`: the
    train keys set by flags or --config, which override these; a chosen optimiser keeps its own
    class defaults rather than half of Adam's."""
    if model.predicts_items:
        return {}
    if model.predicts_values:
        return {**({} if "optimizer" in given else VALUE_TASK_DEFAULTS), "monitor": "rmse"}
    return {"monitor": "accuracy"}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything needed to rebuild a run's model: saved as config.json before training starts."""

    data_dir: str
    n_items: int
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        tasks, tc = self.model.tasks, self.train
        if tc.task_weights and len(tc.task_weights) != len(tasks):
            raise ConfigError(f"--task-weights needs one weight per task ({', '.join(tasks)}), got {tc.task_weights}")
        if tc.monitor in ("rmse", "mae") and not self.model.predicts_values:
            raise ConfigError(f"--monitor {tc.monitor} needs the value task (--task value)")
        if tc.monitor == "accuracy" and not self.model.predicts_events:
            raise ConfigError("--monitor accuracy needs the event-type task (--task event-type)")
        if tc.monitor not in ("rmse", "mae", "accuracy") and not self.model.predicts_items:
            raise ConfigError(f"--monitor {tc.monitor} needs the next-item task; use --monitor rmse, mae or accuracy")
        if self.model.feature_output and not self.model.item_features:
            raise ConfigError("--feature-output needs item features (prepare the data with --item-features)")
        if (self.model.predicts_events or self.model.event_input) and not self.model.event_types:
            raise ConfigError("the event-type task and --event-input need the data's event types")

    def task_weight(self, task: str) -> float:
        w = self.train.task_weights
        return w[self.model.tasks.index(task)] if w else 1.0
