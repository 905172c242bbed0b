"""The repeat boost: its pieces by hand and by property, and the scorer and predict's dense
top-K against a slow reference."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data.batches import Batch
from rnnrec_cli.data.sequences import Sequences
from rnnrec_cli.errors import ConfigError
from rnnrec_cli.evaluation import repeats
from rnnrec_cli.evaluation.scoring import model_scores
from rnnrec_cli.model import network
from rnnrec_cli.options import ScoreOptions


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(-1, 6), min_size=1, max_size=12), min_size=1, max_size=6))
def test_an_items_increments_add_up_to_log_one_plus_its_count(rows: list[list[int]]) -> None:
    width = max(map(len, rows))
    seen = np.array([r + [-1] * (width - len(r)) for r in rows], np.int32)
    inc = repeats.occurrence_increments(seen)
    assert inc.shape == seen.shape
    assert (inc[seen < 0] == 0).all()
    for row, row_inc in zip(seen, inc, strict=True):
        for item in set(row[row >= 0].tolist()):
            want = np.log1p(np.count_nonzero(row == item))
            assert np.isclose(row_inc[row == item].sum(), want, rtol=1e-6)


def test_score_sd_equals_the_sd_of_the_scores() -> None:
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(300, 5)), rng.normal(size=300)
    h = rng.normal(size=(4, 5))
    got = repeats.score_sd(
        h.astype(np.float32), repeats.catalogue_cov(kernel.astype(np.float32), bias.astype(np.float32))
    )
    assert np.allclose(got, (h @ kernel.T + bias).std(axis=1), rtol=1e-4)


def _boosted_reference(params, cfg: RunConfig, lists, beta: float, k: int):
    """Each sequence alone, every target ranked (conservative ties) against the whole catalogue
    with the boost added by hand, in float64."""
    kernel, bias = (np.asarray(x, np.float64) for x in network.output_layer(params, cfg.model))
    ranks, tops = [], []
    for s in lists:
        _, h = network.run(
            params, cfg.model, network.zero_carry(cfg.model, 1),
            Batch(np.array(s)[:-1, None], reset=np.zeros((len(s) - 1, 1), bool)),
        )  # fmt: skip
        scores = np.asarray(h[:, 0], np.float64) @ kernel.T + bias
        for i, (row, t) in enumerate(zip(scores, s[1:], strict=True)):
            counts = np.bincount(s[: i + 1], minlength=len(row))
            row = row + beta * row.std() * np.log1p(counts)
            ranks.append(float((row > row[t]).sum() + (row == row[t]).sum()))
            tops.append(np.argsort(-row, kind="stable")[:k].tolist())
    return ranks, tops


@pytest.mark.parametrize(("beta", "block", "n_items"), [(0.7, 1000, 40), (2.5, 16, 40), (1000.0, 1000, 3072)])
def test_boosted_ranks_and_top_k_equal_a_slow_reference(beta: float, block: int, n_items: int) -> None:
    cfg = RunConfig(data_dir="x", n_items=n_items, model=ModelConfig(layers=(6,)), train=TrainConfig(eval_batch_size=8))
    params = network.init_params(cfg.model, n_items, jax.random.key(2))
    rng = np.random.default_rng(5)
    # Sessions that repeat their own items, some of them many times.
    lists = [rng.choice(rng.integers(0, n_items, 4), size=int(rng.integers(2, 14))).tolist() for _ in range(30)]
    got = model_scores(params, cfg, Sequences.from_lists(lists), ScoreOptions(k=5, item_block=block, repeat=beta))
    ranks, tops = _boosted_reference(params, cfg, lists, beta, 5)
    assert got.ranks.tolist() == ranks
    assert got.topk.tolist() == tops
    plain = model_scores(params, cfg, Sequences.from_lists(lists), ScoreOptions(k=5, item_block=block))
    assert np.mean(got.ranks) < np.mean(plain.ranks)  # repeated targets move up


@pytest.mark.parametrize(("block", "n_items"), [(16, 40), (1000, 3072)])
def test_one_pass_over_the_weights_ranks_as_each_weight_alone(block: int, n_items: int) -> None:
    """The choice scores every weight of the grid in one pass: each weight's ranks are those of
    scoring it alone, and of the float64 reference."""
    cfg = RunConfig(data_dir="x", n_items=n_items, model=ModelConfig(layers=(6,)), train=TrainConfig(eval_batch_size=8))
    params = network.init_params(cfg.model, n_items, jax.random.key(3))
    rng = np.random.default_rng(6)
    lists = [rng.choice(rng.integers(0, n_items, 4), size=int(rng.integers(2, 14))).tolist() for _ in range(30)]
    seqs = Sequences.from_lists(lists)
    together = model_scores(params, cfg, seqs, ScoreOptions(k=0, item_block=block), weights=repeats.GRID)
    assert together.grid is not None and together.grid.shape == (len(repeats.GRID), seqs.n_targets)
    for beta, ranks in zip(repeats.GRID, together.grid, strict=True):
        alone = model_scores(params, cfg, seqs, ScoreOptions(k=0, item_block=block, repeat=beta))
        assert ranks.tolist() == alone.ranks.tolist()
    assert together.grid[3].tolist() == _boosted_reference(params, cfg, lists, repeats.GRID[3], 1)[0]
    assert together.ranks.tolist() == together.grid[0].tolist()


def test_repeat_refuses_what_it_cannot_mean() -> None:
    with pytest.raises(ConfigError, match="--exclude-seen"):
        ScoreOptions(repeat=1.0, exclude_seen=True)
    with pytest.raises(ConfigError, match="--n-sampled"):
        ScoreOptions(repeat=1.0, n_sampled=100)
    with pytest.raises(ConfigError, match="--repeat must be >= 0"):
        ScoreOptions(repeat=-1.0)


def _repeating(rng: np.random.Generator, n: int, n_items: int) -> list[list[int]]:
    """Sessions that each go back and forth over three random items of their own."""
    return [rng.choice(rng.integers(0, n_items, 3), size=8).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def repeat_run(tmp_path_factory: pytest.TempPathFactory):
    from .conftest import cli_ok, write_data_dir

    tmp = tmp_path_factory.mktemp("repeat")
    rng = np.random.default_rng(0)
    splits = {s: _repeating(rng, n, 300) for s, n in (("train", 300), ("valid", 60), ("test", 60))}
    data = write_data_dir(tmp / "data", splits, 300)
    run = tmp / "run"
    cli_ok(["train", str(data), "-o", str(run), "--layers", "8", "--epochs", "1", "--batch-size", "16", "-q"])
    return run


@pytest.mark.slow
def test_evaluate_repeat_auto_chooses_the_weight_on_validation_and_records_it(repeat_run) -> None:
    import json

    from .conftest import cli_ok

    plain = json.loads(cli_ok(["evaluate", str(repeat_run), "--baselines", "spop", "--repeat", "off", "--json", "-q"]))
    auto = json.loads(cli_ok(["evaluate", str(repeat_run), "--baselines", "spop", "--repeat", "auto", "--json", "-q"]))
    # Training chose the weight the same way, on the same split and model: the default evaluation
    # applies it.
    default = json.loads(cli_ok(["evaluate", str(repeat_run), "--baselines", "spop", "--json", "-q"]))
    assert default["metrics"] == auto["metrics"] and default["protocol"]["repeat"]["chosen_on"] == "valid"
    assert default["protocol"]["repeat"]["weight"] == auto["protocol"]["repeat"]["weight"]
    repeat = auto["protocol"]["repeat"]
    assert repeat["chosen_on"] == "valid" and [r["weight"] for r in repeat["grid"]] == list(repeats.GRID)
    best = max(repeat["grid"], key=lambda r: r["mrr@20"])
    assert repeat["weight"] == best["weight"] > 0
    # The boost is the model's: the baseline's numbers do not move, the model's rise to session
    # popularity's level or above (the targets are the session's own items, the GRU knows none).
    assert auto["baselines"] == plain["baselines"]
    assert auto["metrics"]["mrr@20"] > plain["metrics"]["mrr@20"] + 0.1
    assert auto["metrics"]["mrr@20"] >= auto["baselines"]["spop"]["mrr@20"] - 0.02
    assert (repeat_run / "eval" / "repeat-auto" / "test.json").is_file()
    fixed = json.loads(cli_ok(["evaluate", str(repeat_run), "--baselines", "none", "--repeat", str(repeat["weight"]),
                               "--json", "-q"]))  # fmt: skip
    assert fixed["metrics"]["mrr@20"] == auto["metrics"]["mrr@20"]
    assert fixed["protocol"]["repeat"] == {"weight": repeat["weight"], "chosen_on": None}


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["--repeat", "-1"], ["--repeat", "lots"], ["--repeat", "auto", "--exclude-seen"], ["--repeat", "auto", "--split",
     "valid"], ["--repeat", "auto", "--sampled", "10"]],
)  # fmt: skip
def test_bad_repeat_options_are_one_line_errors(repeat_run, args: list[str]) -> None:
    from typer.testing import CliRunner

    from rnnrec_cli.cli.app import app

    result = CliRunner().invoke(app, ["evaluate", str(repeat_run), *args])
    assert result.exit_code != 0 and "--repeat" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_repeat_auto_without_a_validation_split_says_how_to_get_one(tmp_path) -> None:
    from typer.testing import CliRunner

    from rnnrec_cli.cli.app import app

    from .conftest import cli_ok, write_data_dir

    rng = np.random.default_rng(1)
    data = write_data_dir(
        tmp_path / "data", {s: _repeating(rng, 40 * (s != "valid"), 50) for s in ("train", "valid", "test")}, 50
    )
    run = tmp_path / "run"
    cli_ok(["train", str(data), "-o", str(run), "--layers", "4", "--epochs", "1", "--batch-size", "8", "-q"])
    result = CliRunner().invoke(app, ["evaluate", str(run), "--repeat", "auto"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--repeat auto" in result.output and "--valid" in result.output


@pytest.mark.slow
def test_the_library_takes_the_repeat_boost(repeat_run) -> None:
    import rnnrec_cli as rr

    result = rr.evaluate(repeat_run, repeat="auto", baselines=())
    assert result.protocol["repeat"]["chosen_on"] == "valid" and result.protocol["repeat"]["weight"] > 0
    recs = rr.recommend(repeat_run, {"s": [7, 8, 7, 9]}, k=3, exclude_seen=False, repeat=1000.0)
    # The session's own items first, the one seen twice ahead of those seen once.
    assert recs["item_id"][0] == 7 and set(recs["item_id"].to_list()) == {7, 8, 9}


def test_one_weight_has_one_spelling_and_bad_python_values_are_config_errors() -> None:
    from rnnrec_cli.options import EvalOptions, PredictOptions

    assert {EvalOptions(repeat=r).repeat for r in ("2", "2.0", "2e0", 2, 2.0)} == {"2"}
    assert EvalOptions(repeat="0").repeat == EvalOptions(repeat=0.0).repeat == "off"
    assert PredictOptions(repeat="2", exclude_seen=False).repeat == 2.0
    for bad in (None, True, "lots", -1, float("nan")):
        with pytest.raises(ConfigError, match="--repeat"):
            EvalOptions(repeat=bad)  # type: ignore[arg-type]
    for bad in ("auto", True, None):
        with pytest.raises(ConfigError, match="--repeat"):
            PredictOptions(repeat=bad, exclude_seen=False)  # type: ignore[arg-type]
    # "run" (the default) is resolved from the run, so it never clashes with other options.
    assert PredictOptions().repeat == "run" and PredictOptions(generate=3).boost_weight == 0.0
    assert EvalOptions(exclude_seen=True).repeat == "run"


@pytest.mark.slow
def test_runs_boosted_by_auto_pair_in_compare_whatever_weights_they_chose(repeat_run, tmp_path) -> None:
    from .conftest import cli_ok

    other = tmp_path / "other"
    data = str(repeat_run.parent / "data")
    cli_ok(["train", data, "-o", str(other), "--layers", "8", "--epochs", "1", "--batch-size", "16", "--seed", "1",
            "-q"])  # fmt: skip
    for run in (repeat_run, other):
        cli_ok(["evaluate", str(run), "--baselines", "none", "--repeat", "auto", "-q"])
    out = cli_ok(["compare", str(repeat_run), str(other), "--eval", "repeat-auto", "--json"])
    assert "mrr@20" in out


def test_the_table_title_says_which_weight_and_what_validation_said() -> None:
    grid = [{"weight": w, "recall@20": 0.2, "mrr@20": m} for w, m in ((0.0, 0.0959), (0.5, 0.0932), (1000.0, 0.0704))]
    assert repeats.describe(None, "gru") == ""
    none = repeats.describe({"weight": 0.0, "chosen_on": "valid", "grid": grid}, "gru")
    assert "no repeat boost" in none and "0.0959" in none and "weight 0.5: 0.0932" in none
    some = repeats.describe({"weight": 1000.0, "chosen_on": "valid", "grid": grid}, "gru")
    assert "raised by 1000 sd" in some and "0.0959 without, 0.0704 with" in some
    assert "chosen" not in repeats.describe({"weight": 2.0, "chosen_on": None}, "gru")
