from pathlib import Path

import pytest

from rnnrec_cli.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.validation import from_dict, parse_duration, parse_period, parse_split, to_dict


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("7d", 604800), ("45", 45), ("1.5h", 5400), ("2w", 1209600)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="--session-gap 'soon' is not a duration"):
        parse_duration("soon", "--session-gap")


def test_periods() -> None:
    assert parse_period("0.1", "--valid").fraction == 0.1
    assert parse_period("7d", "--valid").seconds == 604800
    assert parse_period("0", "--valid").empty
    assert parse_split("time:3d").seconds == 3 * 86400
    with pytest.raises(ConfigError, match="time:DURATION"):
        parse_split("random:0.2")
    with pytest.raises(ConfigError, match="fraction"):
        parse_period("5", "--valid")


def test_validation_names_the_option() -> None:
    with pytest.raises(ConfigError, match="--cell 'transformer'"):
        ModelConfig(cell="transformer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--dropout-hidden"):
        ModelConfig(dropout_hidden=1.0)
    with pytest.raises(ConfigError, match="--min-session-length"):
        PrepareConfig(min_session_length=1)
    with pytest.raises(ConfigError, match="--monitor"):
        TrainConfig(monitor="loss")


def test_round_trip_and_unknown_keys() -> None:
    cfg = RunConfig(data_dir="d", n_items=5, model=ModelConfig(layers=(8, 4)), train=TrainConfig(lr=0.3))
    again = from_dict(RunConfig, to_dict(cfg))
    assert again == cfg
    assert hash(again) == hash(cfg)  # hashable: usable as a jit static argument
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(RunConfig, {**to_dict(cfg), "colour": "blue"})


def test_tied_embedding_width() -> None:
    assert ModelConfig(layers=(32,)).embedding_dim == 32
    assert ModelConfig(layers=(32,), embedding=16).embedding_dim == 16


def test_task_defaults_and_given_split_rules() -> None:
    from rnnrec_cli.config import VALUE_TASK_DEFAULTS, PrepareConfig, task_train_defaults
    from rnnrec_cli.rules import AS_GIVEN

    value = ModelConfig(tasks=("value",))
    assert task_train_defaults(value) == {**VALUE_TASK_DEFAULTS, "monitor": "rmse"}
    # A chosen optimiser keeps its own defaults, not half of Adam's.
    assert task_train_defaults(value, {"optimizer"}) == {"monitor": "rmse"}
    assert task_train_defaults(ModelConfig(tasks=("event-type",))) == {"monitor": "accuracy"}
    assert task_train_defaults(ModelConfig()) == {}
    # A given split filters nothing, unless a flag asks for it.
    assert not PrepareConfig(**AS_GIVEN).filters_items
    assert PrepareConfig(**{**AS_GIVEN, "min_session_length": 3}).filters_items
    assert PrepareConfig(**{**AS_GIVEN, "min_item_support": 5}).filters_items


def test_the_shipped_gru4rec_config_holds_the_official_defaults() -> None:
    """configs/gru4rec-defaults.json: GRU4Rec's published default settings (100 units, CE without
    log-Q, batch 64, no dropout, lr 0.05, no momentum, 2,048 samples at alpha 0.5, tied
    embedding, 10 epochs), trained one event per step; what the flags leave alone stays."""
    from rnnrec_cli.cli.flags import run_configs

    model, train = run_configs(Path(__file__).parent.parent / "configs" / "gru4rec-defaults.json", {"epochs": 2})
    assert (model.cell, model.layers, model.embedding, model.dropout_embed, model.dropout_hidden) == (
        "gru", (100,), 0, 0.0, 0.0)  # fmt: skip
    assert (train.loss, train.logq, train.batch_size, train.bptt, train.lr, train.momentum) == (
        "ce", 0.0, 64, 1, 0.05, 0.0)  # fmt: skip
    assert (train.n_sample, train.sample_alpha, train.optimizer, train.epochs) == (2048, 0.5, "adagrad", 2)
