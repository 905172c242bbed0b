"""Baselines on tiny logs with answers worked out by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnrec_cli.data.sequences import Sequences, positions
from rnnrec_cli.evaluation.baselines import baseline_scores, lexicographic_ranks
from rnnrec_cli.options import ScoreOptions

N = 6


def baseline_ranks(name, train, test, counts, ties="conservative", **kw):
    return baseline_scores(name, train, test, counts, ScoreOptions(ties=ties, k=1), **kw).ranks


def _counts(train: Sequences) -> np.ndarray:
    return np.bincount(train.items, minlength=N)


def test_positions_follow_sequence_order() -> None:
    seqs = Sequences.from_lists([[1, 2, 3], [4], [5, 0]])
    pos = positions(seqs)
    assert pos.current.tolist() == [1, 2, 5]
    assert pos.target.tolist() == seqs.items[pos.end].tolist() == [2, 3, 0]
    assert (pos.end - pos.start).tolist() == [1, 2, 1]  # prefix lengths


def test_lexicographic_ranks_by_hand() -> None:
    primary = np.array([[1.0, 1.0, 0.0, 1.0]])
    secondary = np.array([5.0, 3.0, 9.0, 3.0])
    # Target 1: item 0 beats it on the tie-breaker; item 3 ties it fully.
    assert lexicographic_ranks(primary, secondary, np.array([1]), "conservative").tolist() == [3]
    assert lexicographic_ranks(primary, secondary, np.array([1]), "optimistic").tolist() == [2]
    assert lexicographic_ranks(primary, secondary, np.array([1]), "median").tolist() == [2.5]


def test_markov_and_pop_fallback() -> None:
    train = Sequences.from_lists([[1, 2], [1, 2], [1, 3], [4, 4], [4, 5], [5, 0]])
    test = Sequences.from_lists([[1, 2], [1, 3], [1, 5], [0, 4]])
    # counts: 0:1 1:3 2:2 3:1 4:3 5:2. After 1: 2 (twice), 3 (once), then by popularity 4, 5, ...
    ranks = baseline_ranks("markov", train, test, _counts(train))
    # 1->5: unseen transition; above it: 2, 3 (transitions), then 1 and 4 (pop 3 > 2): rank 5.
    # 0->4: no transitions from 0 at all: pure popularity, 4 ties with 1 (count 3) -> rank 2.
    assert ranks.tolist() == [1, 2, 5, 2]


def test_spop_counts_the_prefix() -> None:
    train = Sequences.from_lists([[1, 2], [1, 2], [3, 4]])
    test = Sequences.from_lists([[5, 0, 5, 0, 3]])
    ranks = baseline_ranks("spop", train, test, _counts(train))
    # targets 0, 5, 0, 3 after prefixes [5], [5,0], [5,0,5], [5,0,5,0]
    # prefix [5]: target 0 (count 0, pop 0): above it 5 (prefix), 1, 2 (pop 2), 3, 4 (pop 1); ties with nothing else
    # prefix [5,0,5,0]: target 3 below 5, 0 (prefix), 1, 2 (pop 2), tied with 4 (pop 1): rank 6
    assert ranks.tolist() == [6, 2, 2, 6]


def test_iknn_cosine_by_hand() -> None:
    train = Sequences.from_lists([[1, 2], [1, 2, 3], [1, 3], [4, 5]])
    test = Sequences.from_lists([[1, 2], [1, 3], [2, 3]])
    ranks = baseline_ranks("iknn", train, test, _counts(train))
    # sessions: 1 in 3, 2 in 2, 3 in 2. cos(1,2) = 2/sqrt(3*2) = cos(1,3); cos(2,3) = 1/2.
    # After 1: 2 and 3 tie on similarity and on popularity (2 each): conservative rank 2 for both.
    # After 2: 1 (0.816) above 3 (0.5): rank 2.
    assert ranks.tolist() == [2, 2, 2]


def test_sknn_by_hand() -> None:
    train = Sequences.from_lists([[1, 2, 3], [1, 4], [2, 5, 0]])
    test = Sequences.from_lists([[1, 2, 3]])
    counts = np.array([1, 2, 2, 1, 1, 1])
    ranks = baseline_ranks("sknn", train, test, counts, k=2, sample=10)
    # Prefix {1}: neighbours s0 (1/sqrt(3)) and s1 (1/sqrt(2)); scores 1:.58+.71, 4:.71, 2,3:.58.
    # Target 2 ties with 3 on score, beats it on popularity: above it 1, 4 -> rank 3.
    # Prefix {1,2}: s0 sim 2/sqrt(6)=.82, s1 1/2, s2 1/sqrt(6)=.41: top-2 = s0, s1;
    # 3 scores .82, below 1 (1.32), 2 (.82, pop 2 > 1): rank 3.
    assert ranks.tolist() == [3, 3]
    # With k=1 only s0 votes after {1,2}: 1, 2, 3 tie on .82, 1 and 2 beat 3 on popularity.
    assert baseline_ranks("sknn", train, test, counts, k=1, sample=10).tolist()[1] == 3


def test_sknn_sample_keeps_the_most_recent_sessions() -> None:
    # Item 1 occurs in sessions 0..3; with sample=1 only session 3 (the latest) may vote.
    train = Sequences.from_lists([[1, 2], [1, 2], [1, 2], [1, 3]])
    test = Sequences.from_lists([[1, 3]])
    counts = np.array([0, 4, 3, 1, 0, 0])
    assert baseline_ranks("sknn", train, test, counts, k=5, sample=1).tolist() == [2]  # only 1 above 3
    assert baseline_ranks("sknn", train, test, counts, k=5, sample=10).tolist() == [3]


@pytest.mark.parametrize("name", ["pop", "spop", "markov", "iknn", "sknn"])
def test_shapes_and_bounds(name: str) -> None:
    rng = np.random.default_rng(0)
    train = Sequences.from_lists([list(rng.integers(0, N, rng.integers(2, 6))) for _ in range(30)])
    test = Sequences.from_lists([list(rng.integers(0, N, rng.integers(1, 6))) for _ in range(10)])
    ranks = baseline_ranks(name, train, test, np.maximum(_counts(train), 1))
    assert len(ranks) == test.n_targets
    assert ranks.min() >= 1 and ranks.max() <= N


@settings(deadline=None, max_examples=40)
@given(st.lists(st.floats(-3, 3, width=32, allow_subnormal=False), min_size=N, max_size=N), st.integers(0, N - 1))
def test_lexicographic_ranks_with_flat_secondary_equal_plain_ranks(scores: list[float], target: int) -> None:
    primary = np.array([scores], np.float32)
    s = primary[0]
    higher, tied = int((s > s[target]).sum()), int((s == s[target]).sum()) - 1
    plain = {"conservative": higher + tied + 1, "optimistic": higher + 1, "median": higher + tied / 2 + 1}
    for ties, want in plain.items():
        lex = lexicographic_ranks(primary, np.zeros(N), np.array([target]), ties)
        assert lex.tolist() == [want]


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.lists(st.integers(0, N - 1), min_size=2, max_size=6), min_size=1, max_size=8),
    st.lists(st.lists(st.integers(0, N - 1), min_size=2, max_size=6), min_size=1, max_size=5),
    st.sampled_from(["pop", "spop", "markov", "iknn", "sknn"]),
    st.booleans(),
    st.sampled_from(["conservative", "optimistic", "median"]),
)
def test_sparse_scoring_equals_the_dense_comparison(train_l, test_l, name, exclude_seen, ties) -> None:
    """Ranks, sampled ranks and top-k from the sparse scores equal those of the dense
    (score, count) comparison over the whole catalogue, seen items excluded or not."""
    from rnnrec_cli.evaluation.baselines import _prefix_matrix, _Scorer, sort_keys

    train, test = Sequences.from_lists(train_l), Sequences.from_lists(test_l)
    counts = _counts(train)
    opts = ScoreOptions(ties=ties, k=3, exclude_seen=exclude_seen, n_sampled=4)
    got = baseline_scores(name, train, test, counts, opts, k=2, sample=3, seed=1)
    pos = positions(test)
    block = slice(0, len(pos.target))
    dense = _Scorer(name, train, N, 2, 3)(test, pos, block).toarray().astype(np.float32)
    seen = _prefix_matrix(test, pos, block, N).toarray() > 0
    if exclude_seen:
        dense[seen] = -np.inf
    keys = sort_keys(dense, counts)
    want = lexicographic_ranks(dense, counts, pos.target, ties)
    if exclude_seen:
        want[seen[np.arange(len(pos.target)), pos.target]] = np.inf
    np.testing.assert_array_equal(got.ranks, want)
    negatives = np.random.default_rng(1).integers(0, N, (len(pos.target), 4))
    own = keys[np.arange(len(pos.target)), pos.target][:, None]
    np.testing.assert_array_equal(got.sampled, 1 + (np.take_along_axis(keys, negatives, 1) >= own).sum(1))
    best = -np.sort(-keys.astype(np.float64), axis=1)[:, :3]  # the 3 largest keys per row
    np.testing.assert_array_equal(np.take_along_axis(keys, got.topk.astype(np.int64), 1).astype(np.float64), best)
