import dataclasses
import itertools
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data.batches import Batch
from rnnrec_cli.data.sequences import Sequences, positions
from rnnrec_cli.evaluation import scoring
from rnnrec_cli.evaluation.baselines import baseline_scores
from rnnrec_cli.evaluation.metrics import beyond_accuracy, bootstrap_ci, gini, paired_bootstrap, per_sequence_sums
from rnnrec_cli.evaluation.scoring import model_ranks, model_scores
from rnnrec_cli.evaluation.topk import TOP_K_GROUP, top_k
from rnnrec_cli.model import network
from rnnrec_cli.options import ScoreOptions

N_ITEMS = 15
SEQS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 1], [2], [3, 3, 4], [5, 6, 5, 7, 6]]


def _setup():
    cfg = RunConfig(data_dir="x", n_items=N_ITEMS, model=ModelConfig(layers=(6,)), train=TrainConfig(eval_batch_size=3))
    params = network.init_params(cfg.model, cfg.n_items, jax.random.key(4))
    return cfg, params


def _numpy_reference(params, cfg: RunConfig, seqs_list, ties: str, exclude_seen: bool = False):
    """Each sequence alone from a zero state; score every next item against all items."""
    ranks, tops = [], []
    for s in seqs_list:
        carry = network.zero_carry(cfg.model, 1)
        for i, (cur, nxt) in enumerate(itertools.pairwise(s)):
            carry, h = network.run(params, cfg.model, carry, Batch(np.array([[cur]]), reset=np.zeros((1, 1), bool)))
            scores = np.asarray(network.scores(params, cfg.model, h[0, 0]), np.float64)
            seen = set(s[: i + 1])
            if exclude_seen:
                if nxt in seen:
                    ranks.append(np.inf)
                    tops.append(None)
                    continue
                scores[list(seen)] = -np.inf
            t = scores[nxt]
            higher, tied = (scores > t).sum(), (scores == t).sum() - 1
            ranks.append(higher + 1 + (tied if ties == "conservative" else 0))
            tops.append(np.argsort(-scores, kind="stable")[:3].tolist())
    return ranks, tops


@pytest.mark.parametrize("exclude_seen", [False, True])
@pytest.mark.parametrize("block", [4, 1000])
def test_model_scores_equal_a_slow_reference(exclude_seen: bool, block: int) -> None:
    cfg, params = _setup()
    seqs = Sequences.from_lists(SEQS)
    opts = ScoreOptions(k=3, exclude_seen=exclude_seen, item_block=block)
    got = model_scores(params, cfg, seqs, opts)
    ranks, tops = _numpy_reference(params, cfg, SEQS, "conservative", exclude_seen)
    assert len(got.ranks) == len(ranks) == seqs.n_targets
    assert got.ranks.tolist() == [float(r) for r in ranks]  # same values, in sequence order
    for mine, ref in zip(got.topk.tolist(), tops, strict=True):
        if ref is not None:
            assert mine == ref
    assert positions(seqs).target.tolist() == [t for s in SEQS for t in s[1:]]


def test_only_marked_targets_are_scored_and_score_the_same() -> None:
    cfg, params = _setup()
    seqs = Sequences.from_lists(SEQS)
    full = model_scores(params, cfg, seqs, ScoreOptions(k=3))
    marked = np.random.default_rng(0).random(len(seqs.items)) < 0.5
    part = model_scores(params, cfg, dataclasses.replace(seqs, scored=marked), ScoreOptions(k=3))
    keep = marked[positions(seqs).end]
    assert keep.any() and not keep.all()
    assert part.ranks[keep].tolist() == full.ranks[keep].tolist()
    assert part.topk[keep].tolist() == full.topk[keep].tolist()
    assert (part.ranks[~keep] == 0).all()  # context: fed, never scored


def test_model_ranks_for_validation_match() -> None:
    cfg, params = _setup()
    seqs = Sequences.from_lists(SEQS)
    assert model_ranks(params, cfg, seqs).tolist() == [
        float(r) for r in _numpy_reference(params, cfg, SEQS, "conservative")[0]
    ]


def test_sampled_ranks_are_never_worse_than_full_ranks() -> None:
    cfg, params = _setup()
    seqs = Sequences.from_lists(SEQS)
    got = model_scores(params, cfg, seqs, ScoreOptions(k=3, n_sampled=4))
    assert (got.sampled >= 1).all() and (got.sampled <= 5).all()
    assert (got.sampled <= got.ranks + 4).all()


def test_baseline_exclude_seen() -> None:
    train = Sequences.from_lists([[1, 2, 1, 2], [1, 3]])
    test = Sequences.from_lists([[1, 2, 1]])
    counts = np.array([1, 3, 2, 1, 1])
    plain = baseline_scores("markov", train, test, counts, ScoreOptions(k=2))
    excl = baseline_scores("markov", train, test, counts, ScoreOptions(k=2, exclude_seen=True))
    # 1->2: 2 (twice) leads. 2->1: repeat of a seen item: a miss once seen items are excluded.
    assert plain.ranks.tolist() == [1, 1]
    assert excl.ranks.tolist()[0] == 1 and np.isinf(excl.ranks[1])
    assert 1 not in excl.topk[0] and excl.topk[0][0] == 2


def test_gini_and_beyond_accuracy_by_hand() -> None:
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)
    counts = np.array([10.0, 5, 1, 1, 1])
    topk = np.array([[0, 1], [0, 2]])
    out = beyond_accuracy(topk, counts, [1, 2])
    assert out["coverage@1"] == 0.2 and out["coverage@2"] == 0.6
    assert out["pop@1"] == 1.0 and out["pop@2"] == pytest.approx((10 + 5 + 10 + 1) / 4 / 10)
    assert out["tail@2"] == 0.5  # head = the top 20% = item 0


def test_bootstrap_interval_contains_the_estimate_and_paired_test() -> None:
    rng = np.random.default_rng(0)
    seq = np.repeat(np.arange(200), 5)
    good = rng.integers(1, 5, seq.size).astype(float)
    bad = good + 10
    sums_g, names = per_sequence_sums(good, seq, 200, [20])
    sums_b, _ = per_sequence_sums(bad, seq, 200, [20])
    n = np.full(200, 5.0)
    ci = bootstrap_ci(sums_g, n, 500)
    point = sums_g.sum(0) / n.sum()
    assert ((ci[:, 0] <= point) & (point <= ci[:, 1])).all()
    diff, diff_ci, p = paired_bootstrap(sums_g, sums_b, n, 500)
    mrr = names.index("mrr@20")
    assert diff[mrr] > 0 and diff_ci[mrr, 0] > 0 and p[mrr] < 0.01
    same = paired_bootstrap(sums_g, sums_g, n, 200)
    assert same[0][mrr] == 0 and same[2][mrr] == 1.0


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_model_scores_over_several_calls_and_grouped_top_k_equal_a_reference(
    exclude_seen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More targets than one scoring call holds, a catalogue wide enough for the two-pass top-k,
    and fewer slots than sequences; every target ranked against the full catalogue. With
    exclude_seen, a seen-item budget small enough to force one batch per call."""
    monkeypatch.setattr(scoring, "SEEN_ENTRIES", scoring.SCORE_ROWS * 32)
    n_items, length = 3072, 30  # 24 groups of 128: the two-pass top-k for k = 5
    cfg = RunConfig(
        data_dir="x", n_items=n_items, model=ModelConfig(layers=(8,)), train=TrainConfig(eval_batch_size=16)
    )
    params = network.init_params(cfg.model, n_items, jax.random.key(7))
    rng = np.random.default_rng(3)
    # Repeats within a sequence, so some targets were seen before.
    lists = [rng.integers(0, 200 if i % 2 else n_items, length).tolist() for i in range(80)]
    got = model_scores(params, cfg, Sequences.from_lists(lists), ScoreOptions(k=5, exclude_seen=exclude_seen))
    kernel, bias = network.output_layer(params, cfg.model)
    want_ranks, want_top = [], []
    for s in lists:
        _, h = network.run(
            params,
            cfg.model,
            network.zero_carry(cfg.model, 1),
            Batch(np.array(s)[:-1, None], reset=np.zeros((length - 1, 1), bool)),
        )
        scores = np.array(h[:, 0] @ kernel.T + bias)
        for i, (row, t) in enumerate(zip(scores, s[1:], strict=True)):
            if exclude_seen:
                row[s[: i + 1]] = -np.inf
                if t in s[: i + 1]:
                    want_ranks.append(np.inf)
                    want_top.append(None)
                    continue
            want_ranks.append(float((row > row[t]).sum() + (row == row[t]).sum()))
            want_top.append(np.argsort(-row, kind="stable")[:5].tolist())
    assert got.ranks.tolist() == want_ranks
    assert exclude_seen == any(np.isinf(want_ranks))
    assert [g for g, w in zip(got.topk.tolist(), want_top, strict=True) if w is not None] == [
        w for w in want_top if w is not None
    ]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN inputs, on purpose
@settings(max_examples=60, deadline=None)
@given(
    groups=st.integers(1, 12),
    short=st.sampled_from([0, 0, 0, 77]),  # whole groups take the two-pass path
    k=st.integers(1, 3),
    rows=st.integers(1, 4),
    levels=st.integers(1, 4),
    special=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_two_pass_top_k_equals_lax_top_k(
    groups: int, short: int, k: int, rows: int, levels: int, special: bool, seed: int
) -> None:
    """Values (bit for bit), indices and tie order (lower index first), with few distinct
    values, -inf, both zeros, NaN of either sign, and rows that do not fill whole groups."""
    rng = np.random.default_rng(seed)
    s = rng.integers(1, levels + 1, (rows, max(k, groups * TOP_K_GROUP - short))).astype(np.float32)
    s[rng.random(s.shape) < 0.3] = -np.inf
    if special:
        values = np.array([0.0, -0.0, np.nan, -np.nan, np.inf], np.float32)
        pick = rng.random(s.shape) < 0.02
        s[pick] = rng.choice(values, int(pick.sum()))
    want = jax.lax.top_k(s, k)
    got = top_k(s, k)
    np.testing.assert_array_equal(np.asarray(got[0]).view(np.int32), np.asarray(want[0]).view(np.int32))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


@pytest.mark.slow
def test_a_split_with_context_scores_only_its_targets_for_model_baselines_and_validation(tmp_path) -> None:
    """User histories cut at one cutoff: the model and every baseline score exactly the events
    after it (the manifest's count), with the earlier events fed as context."""
    import json

    import polars as pl

    from rnnrec_cli.data.sequences import read_sequences, scored_mask, validation_targets
    from rnnrec_cli.evaluation.evaluate import evaluate
    from rnnrec_cli.options import EvalOptions
    from rnnrec_cli.rundir import RunDir, read_metrics

    from .conftest import cli_ok

    rows = [(f"u{u}", (u + 3 * j) % 17, 1_700_000_000 + j * 86400 + u * 60) for u in range(40) for j in range(15)]
    pl.DataFrame(rows, schema=["user", "item", "ts"], orient="row").write_csv(tmp_path / "events.csv")
    data, run = tmp_path / "data", tmp_path / "run"
    cli_ok(["prepare", str(tmp_path / "events.csv"), "-o", str(data), "--session-gap", "none",
            "--split", "time:0.2", "--valid", "0.1", "-q"])  # fmt: skip
    manifest = json.loads((data / "manifest.json").read_text())
    test = read_sequences(data, "test")
    assert 0 < manifest["splits"]["test"]["targets"] < test.n_targets  # context is not scored
    valid = read_sequences(data, "valid")
    mask = validation_targets(valid, leave_one_out=False)
    assert mask is not None and int(mask.sum()) == manifest["splits"]["valid"]["targets"]
    cli_ok(["train", str(data), "-o", str(run), "--layers", "8", "--epochs", "1", "--batch-size", "8", "-q"])
    assert "valid/mrr@20" in read_metrics(RunDir(run))[-1]
    result = evaluate(data, EvalOptions(baselines=("pop", "markov", "sknn"), n_boot=10), run=RunDir(run))
    assert result.n_events == manifest["splits"]["test"]["targets"] == int(scored_mask(test).sum())
    assert set(result.baselines) == {"pop", "markov", "sknn"}


# ---------------------------------------------------------------------------- named evaluations


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory):
    from .conftest import cli_ok, synthetic_log

    tmp = tmp_path_factory.mktemp("named")
    synthetic_log(n_users=60, n_items=40).write_csv(tmp / "events.csv")
    cli_ok(["prepare", str(tmp / "events.csv"), "-o", str(tmp / "data"), "--split", "time:0.2", "--valid", "0.1", "-q"])
    cli_ok(["train", str(tmp / "data"), "-o", str(tmp / "run"), "--layers", "8", "--epochs", "1", "--batch-size",
            "16", "--bptt", "4", "-q"])  # fmt: skip
    return tmp / "run"


def _evaluate(run, *args: str):
    from typer.testing import CliRunner

    from rnnrec_cli.cli.app import app

    return CliRunner().invoke(app, ["evaluate", str(run), "--bootstrap", "100", *args])


def _stored(run, name: str = "default", split: str = "test") -> dict:
    import json

    return json.loads((run / "eval" / name / f"{split}.json").read_text())


def test_eval_names_from_the_options() -> None:
    from rnnrec_cli.evaluation.results import eval_name
    from rnnrec_cli.options import EvalOptions

    assert eval_name(EvalOptions()) == "default"
    # What is computed (baselines), the split, the bootstrap and the devices are no protocol.
    assert eval_name(EvalOptions(baselines=(), split="valid", n_boot=100, devices=1)) == "default"
    assert eval_name(EvalOptions(exclude_seen=True, ks=(5, 10))) == "exclude-seen_k5-10"
    assert eval_name(EvalOptions(n_sampled=100)) == "sampled100"
    assert eval_name(EvalOptions(target_events=("add to cart",), knn=50)) == "events-addtocart_knn50"
    assert eval_name(EvalOptions(exclude_seen=True, name="mine")) == "mine"
    assert [eval_name(EvalOptions(repeat=r)) for r in ("auto", "2", "0.5", "off", "0")] == [
        "repeat-auto", "repeat-2", "repeat-0_5", "repeat-off", "repeat-off"
    ]  # fmt: skip
    long = eval_name(EvalOptions(target_events=tuple(f"type{i}" for i in range(20))))
    assert len(long) <= 64 and long != eval_name(EvalOptions(target_events=tuple(f"type{i}" for i in range(21))))


@pytest.mark.slow
def test_two_protocols_keep_both_results_and_a_narrower_rerun_keeps_the_baselines(small_run) -> None:
    import polars as pl

    first = _evaluate(small_run)
    assert first.exit_code == 0, first.output
    assert "Warning" not in first.stderr and "note:" not in first.stderr, first.stderr
    assert "evaluation 'default'" in first.stderr
    full = _stored(small_run)
    assert full["name"] == "default" and set(full["baselines"]) == {"pop", "spop", "markov", "iknn", "sknn"}

    other = _evaluate(small_run, "--exclude-seen", "--baselines", "pop", "--json")
    assert other.exit_code == 0, other.output
    assert '"name": "exclude-seen"' in other.stdout
    assert _stored(small_run, "exclude-seen")["options"]["exclude_seen"] is True
    assert _stored(small_run) == full  # the default protocol's result is untouched

    narrower = _evaluate(small_run, "--baselines", "none")
    assert narrower.exit_code == 0, narrower.output
    assert "kept pop, spop, markov, iknn, sknn" in narrower.stderr and "Warning" not in narrower.stderr
    merged = _stored(small_run)
    assert merged["baselines"] == full["baselines"] and merged["kept"] == list(full["baselines"])
    assert set(merged["ci"]) == set(full["ci"]) and merged["paired"]["against"] == full["paired"]["against"]
    assert merged["paired"]["p"] == full["paired"]["p"]  # same ranks, same resamples: the same test
    ranks = pl.read_parquet(small_run / "eval" / "default" / "test_ranks.parquet")
    assert {"gru", *full["baselines"]} <= set(ranks.columns)
    assert len((small_run / "eval" / "default" / "test.csv").read_text().splitlines()) == 1 + 6
    # A recomputed baseline replaces its earlier numbers; the others stay.
    again = _evaluate(small_run, "--baselines", "pop")
    assert again.exit_code == 0, again.output
    assert _stored(small_run)["kept"] == ["spop", "markov", "iknn", "sknn"]


@pytest.mark.slow
def test_another_protocol_under_a_taken_name_is_refused_unless_forced(small_run) -> None:
    if not (small_run / "eval" / "default" / "test.json").is_file():
        assert _evaluate(small_run, "--baselines", "pop").exit_code == 0
    before = _stored(small_run)
    refused = _evaluate(small_run, "--exclude-seen", "--name", "default", "--baselines", "pop")
    assert refused.exit_code == 1, refused.output
    assert "Error:" in refused.output and "--force" in refused.output and "--exclude-seen" in refused.output
    assert "Traceback" not in refused.output and _stored(small_run) == before
    forced = _evaluate(small_run, "--exclude-seen", "--name", "default", "--baselines", "pop", "--force")
    assert forced.exit_code == 0, forced.output
    assert "replaced evaluation 'default'" in forced.stderr
    assert _stored(small_run)["options"]["exclude_seen"] is True and set(_stored(small_run)["baselines"]) == {"pop"}
    # Back to the default protocol for the other tests of this module.
    assert _evaluate(small_run, "--name", "default", "--force").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["../x", "a/b", "-x", ".hidden", "x" * 65, ""])
def test_bad_eval_names_are_one_line_usage_errors(small_run, name: str) -> None:
    result = _evaluate(small_run, "--name", name)
    assert result.exit_code == 2, result.output
    assert "--name" in result.output and "Traceback" not in result.output
    assert not (small_run / "x").exists() and not (small_run / "eval" / "x").exists()


@pytest.mark.slow
def test_a_legacy_result_is_read_as_default_and_moved_by_the_next_default_evaluation(small_run, tmp_path) -> None:
    import shutil

    from .conftest import cli_ok

    run = tmp_path / "legacy"
    shutil.copytree(small_run, run)
    shutil.rmtree(run / "eval", ignore_errors=True)  # other tests may have evaluated the shared run
    assert _evaluate(run).exit_code == 0
    for f in (run / "eval" / "default").iterdir():
        f.rename(run / "eval" / f.name)
    (run / "eval" / "default").rmdir()
    legacy = json_of(run / "eval" / "test.json")
    html = tmp_path / "r.html"
    cli_ok(["report", str(run), "-o", str(html)])
    from rnnrec_cli.reporting.build import num

    page = " ".join(re.sub(r"<[^>]+>", " ", html.read_text()).split())
    assert num(legacy["metrics"]["mrr@20"]) in page and "Test metrics of evaluation default" in page
    # A default re-run merges with the legacy result and moves it into eval/default/.
    rerun = _evaluate(run, "--baselines", "pop")
    assert rerun.exit_code == 0, rerun.output
    assert not (run / "eval" / "test.json").exists() and not (run / "eval" / "test_ranks.parquet").exists()
    merged = _stored(run)
    assert set(merged["baselines"]) == set(legacy["baselines"]) and merged["kept"]


def json_of(path) -> dict:
    import json

    return json.loads(path.read_text())
