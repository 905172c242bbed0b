import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rnnrec_cli.evaluation.baselines import lexicographic_ranks
from rnnrec_cli.evaluation.metrics import parse_ks, rank_with_ties, summarize


def test_ranks_with_ties_by_hand() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0]])
    targets = np.array([0, 3])
    flat = np.zeros(4)
    # Row 0: one item above (0.9), one tied (0.5). Row 1: everything tied.
    assert lexicographic_ranks(scores, flat, targets, "conservative").tolist() == [3, 4]
    assert lexicographic_ranks(scores, flat, targets, "optimistic").tolist() == [2, 1]
    assert lexicographic_ranks(scores, flat, targets, "median").tolist() == [2.5, 2.5]
    assert rank_with_ties(jnp.array(2), jnp.array(3), "median") == 4.5


def test_summarize_by_hand() -> None:
    out = summarize(np.array([1, 2, 5, 30]), (1, 5, 20))
    assert out["recall@1"] == 0.25
    assert out["recall@5"] == 0.75
    assert out["recall@20"] == 0.75
    assert np.isclose(out["mrr@5"], (1 + 0.5 + 0.2) / 4)
    assert np.isclose(out["ndcg@5"], (1 + 1 / np.log2(3) + 1 / np.log2(6)) / 4)
    # rank == K is a hit (the `rank < N` off-by-one is a known bug in other tools).
    assert summarize(np.array([20]), (20,))["recall@20"] == 1.0


def test_parse_ks() -> None:
    assert parse_ks("20,1, 5") == (1, 5, 20)


@given(st.lists(st.floats(1, 500), min_size=1, max_size=50), st.lists(st.integers(1, 100), min_size=2, max_size=5))
def test_metric_properties(ranks: list[float], ks: list[int]) -> None:
    ks = sorted(set(ks))
    out = summarize(np.array(ranks), ks)
    recalls = [out[f"recall@{k}"] for k in ks]
    assert all(0 <= r <= 1 for r in recalls)
    assert recalls == sorted(recalls)
    for k in ks:
        assert out[f"mrr@{k}"] <= out[f"recall@{k}"] + 1e-12
        assert 0 <= out[f"ndcg@{k}"] <= 1


def test_p_text_never_prints_a_zero_p_value() -> None:
    from rnnrec_cli.evaluation.metrics import p_text

    assert p_text(0.0) == "p < 0.001"
    assert p_text(0.0009) == "p < 0.001"
    assert p_text(0.001) == "p = 0.001"
    assert p_text(0.4421) == "p = 0.442"
    assert p_text(1.0) == "p = 1.000"
