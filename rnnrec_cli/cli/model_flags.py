"""The model and training options of `train` and `tune`, each named after its config field,
with the field's default shown in --help; the shared set is declared once."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from rnnrec_cli.cli.flags import LOSS, MODEL, OPTIMISATION, RUN, SCALE, opt, shared_options
from rnnrec_cli.config import ModelConfig, TrainConfig

# ---------------------------------------------------------------------------- model and training


def _m(help_text: str, name: str, panel: str = MODEL, *names: str) -> Any:
    return opt(help_text, panel, (ModelConfig, name), *names)


def _t(help_text: str, name: str, panel: str, *names: str) -> Any:
    return opt(help_text, panel, (TrainConfig, name), *names)


Cell = Annotated[str | None, _m("gru, lstm or rnn.", "cell")]
Layers = Annotated[str | None, _m("Hidden sizes of the stacked layers, e.g. 100 or 256,128.", "layers")]
Embedding = Annotated[int | None, _m("Input embedding size; 0 = tied to the output (constrained).", "embedding")]
DropoutEmbed = Annotated[float | None, _m("Dropout on the input embedding.", "dropout_embed")]
DropoutHidden = Annotated[float | None, _m("Dropout on each layer's output.", "dropout_hidden")]
Tasks = Annotated[
    str | None,
    _m(
        "What to predict: next-item, value, event-type, or several (e.g. next-item,event-type): one network, "
        "one head each.",
        "tasks",
        MODEL,
        "--task",
    ),
]
TaskWeights = Annotated[str | None, _t("Loss weight per task, in --task order, e.g. 1,0.5.", "task_weights", MODEL)]
ValueLoss = Annotated[str | None, _t("Value task loss: mse or huber.", "value_loss", MODEL)]
HuberDelta = Annotated[float | None, _t("Huber transition point, in standard deviations.", "huber_delta", MODEL)]
ValueInput = Annotated[bool | None, _m("Value task: feed each event's value beside its item.", "value_input")]
EventInput = Annotated[
    bool | None, _m("Feed an embedding of each event's type (click, cart, order...) beside its item.", "event_input")
]
EventDim = Annotated[int | None, _m("Width of the event-type embedding.", "event_dim")]
UseItemFeatures = Annotated[
    bool | None,
    opt(
        "Feed the data's item side features (from prepare --item-features). \\[default: when present]",
        MODEL,
        None,
        "--item-features/--no-item-features",
    ),
]
FeatureDim = Annotated[int | None, _m("Width of the pooled item feature vector.", "feature_dim")]
FeatureOutput = Annotated[
    bool | None, _m("Also add the item features to the output item vectors (helps rare items).", "feature_output")
]
Loss = Annotated[str | None, _t("ce, bpr-max or top1-max.", "loss", LOSS)]
TargetWeighting = Annotated[
    str | None,
    _t("Weight next-item targets by popularity^-beta: inverse-pop^0.5 (or 0.5); 0 = off.", "target_weighting", LOSS),
]
NSample = Annotated[int | None, _t("Extra negatives shared by each chunk (0 = in-batch only).", "n_sample", LOSS)]
SampleAlpha = Annotated[float | None, _t("Negatives drawn with probability ~ support^alpha.", "sample_alpha", LOSS)]
FullSoftmax = Annotated[
    bool | None, _t("Score every item in the loss (exact CE; small catalogues).", "full_softmax", LOSS)
]
LogQ = Annotated[float | None, _t("Log-Q correction strength for CE, 0..1.", "logq", LOSS)]
BprReg = Annotated[float | None, _t("BPR-max score regularisation.", "bpreg", LOSS)]
Elu = Annotated[float | None, _t("ELU parameter applied to scores before BPR-max (0 = linear).", "elu", LOSS)]
Epochs = Annotated[int | None, _t("Training epochs.", "epochs", OPTIMISATION)]
BatchSize = Annotated[int | None, _t("Session-parallel slots per mini-batch.", "batch_size", OPTIMISATION)]
Bptt = Annotated[int | None, _t("Steps per truncated back-propagation chunk.", "bptt", OPTIMISATION)]
Shuffle = Annotated[
    bool | None, _t("Shuffle sequences each epoch (--no-shuffle: by start time).", "shuffle", OPTIMISATION)
]
Optimizer = Annotated[str | None, _t("adagrad, adam, adamw or sgd.", "optimizer", OPTIMISATION)]
Lr = Annotated[float | None, _t("Learning rate.", "lr", OPTIMISATION)]
LrSchedule = Annotated[
    str | None, _t("constant, cosine or linear decay to 0 over the run.", "lr_schedule", OPTIMISATION)
]
Momentum = Annotated[float | None, _t("Momentum (adagrad, sgd).", "momentum", OPTIMISATION)]
ClipNorm = Annotated[float | None, _t("Clip gradients to this global norm (0 = off).", "clip_norm", OPTIMISATION)]
Seed = Annotated[int | None, _t("Random seed (initialisation, order, negatives, dropout).", "seed", OPTIMISATION)]
Seeds = Annotated[
    str | None,
    opt(
        "Train the same settings once per seed, e.g. 0,1,2: the run's model is the first, the others go to "
        "seeds/seed-<s>/, and evaluate reports their mean and spread. [default: one seed, --seed]",
        OPTIMISATION,
    ),
]
Patience = Annotated[
    int | None, _t("Stop after this many epochs without improvement (0 = off).", "patience", OPTIMISATION)
]
Monitor = Annotated[str | None, _t("Validation metric for the best checkpoint, e.g. mrr@20.", "monitor", OPTIMISATION)]
CheckpointEvery = Annotated[
    float | None, _t("Seconds between mid-epoch checkpoints (0 = epoch ends).", "checkpoint_every", RUN)
]
ValidSample = Annotated[
    int | None, _t("Validate on at most N sequences, a seeded subset (0 = all).", "valid_sample", RUN)
]
TrainDevices = Annotated[
    int | None, _t("Devices to split the batch over (0 = all visible, every process).", "devices", SCALE)
]
ShardItems = Annotated[bool | None, _t("Also split the item tables over the devices by rows.", "shard_items", SCALE)]
Prefetch = Annotated[int | None, _t("Chunks assembled ahead in a background thread (0 = off).", "prefetch", SCALE)]
RepeatHoldout = Annotated[
    float | None,
    _t(
        "Share of the earliest training sequences held out of every epoch but the last, to choose the repeat "
        "boost's weight on before it (the validation split instead, if the data has one; 0 = no boost).",
        "repeat_holdout",
        RUN,
    ),
]
NarrowTail = Annotated[
    bool | None,
    _t("Run each epoch's end on a batch halved as slots run dry (off: full width).", "narrow_tail", SCALE),
]
Coordinator = Annotated[
    str | None, opt("Multi-process run: process 0's HOST:PORT, or 'auto' to read the cluster's environment.", SCALE)
]
NumProcesses = Annotated[int | None, opt("Multi-process run: number of processes.", SCALE)]
ProcessId = Annotated[int | None, opt("Multi-process run: this process's index (0 writes).", SCALE)]


# The model and training options `train` and `tune` share, declared once (tune searches over
# some of them; the task, feature and scale-out options are train's alone).
SHARED_RUN_OPTIONS: dict[str, Any] = {
    "cell": Cell,
    "layers": Layers,
    "embedding": Embedding,
    "dropout_embed": DropoutEmbed,
    "dropout_hidden": DropoutHidden,
    "loss": Loss,
    "n_sample": NSample,
    "sample_alpha": SampleAlpha,
    "full_softmax": FullSoftmax,
    "logq": LogQ,
    "bpreg": BprReg,
    "elu": Elu,
    "epochs": Epochs,
    "batch_size": BatchSize,
    "bptt": Bptt,
    "shuffle": Shuffle,
    "optimizer": Optimizer,
    "lr": Lr,
    "lr_schedule": LrSchedule,
    "momentum": Momentum,
    "clip_norm": ClipNorm,
    "seed": Seed,
    "checkpoint_every": CheckpointEvery,
    "valid_sample": ValidSample,
    "repeat_holdout": RepeatHoldout,
}
# Stands for the dict `with_run_options` passes.
SHARED_RUN: Mapping[str, Any] = MappingProxyType({})
with_run_options = shared_options(SHARED_RUN_OPTIONS, "run_options")
