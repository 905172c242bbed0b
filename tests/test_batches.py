import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnrec_cli.batches import assign_slots, longest_first, session_parallel
from rnnrec_cli.sequences import Sequences

from .conftest import pairs_in_slots, stacked


def _pairs_per_slot(stream, b):
    stream = stacked(stream)
    return [
        (int(i), int(t), bool(r))
        for i, t, m, r in zip(
            stream.inputs[:, b], stream.targets[:, b], stream.mask[:, b], stream.reset[:, b], strict=True
        )
        if m
    ]


def test_slots_take_the_next_sequence_when_free() -> None:
    seqs = Sequences.from_lists([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]])
    stream = session_parallel(seqs, batch_size=2, bptt=2)
    # Slot 1 frees first (seq1 has one pair), so it takes seq2; slot 0 then takes seq3.
    assert _pairs_per_slot(stream, 0) == [(1, 2, True), (2, 3, False), (10, 11, True)]
    assert _pairs_per_slot(stream, 1) == [(4, 5, True), (6, 7, True), (7, 8, False), (8, 9, False)]
    assert stacked(stream).inputs.shape == (4, 2) and stream.n_chunks == 2


def test_sequences_of_one_event_are_skipped() -> None:
    seqs = Sequences.from_lists([[1], [2, 3]])
    stream = session_parallel(seqs, batch_size=1, bptt=3)
    whole = stacked(stream)
    assert whole.mask.sum() == 1 and whole.inputs.shape == (3, 1) and pairs_in_slots(stream) == 1


def test_assign_slots_ties_go_to_lowest_slot() -> None:
    slot, start = assign_slots(np.array([2, 2, 1, 1]), 2)
    assert slot.tolist() == [0, 1, 0, 1] and start.tolist() == [0, 0, 2, 2]


def test_longest_first_packs_tightly() -> None:
    seqs = Sequences.from_lists([[1, 2], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3], [1, 2, 3]])
    tight = session_parallel(seqs, 2, 1, longest_first(seqs))
    assert tight.n_chunks == 6  # the longest sequence alone sets the length


@settings(deadline=None, max_examples=80)
@given(
    st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=12), min_size=1, max_size=25),
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(0, 1000),
)
def test_every_pair_appears_once_and_padding_is_never_a_target(seqs_list, batch, bptt, seed) -> None:
    seqs = Sequences.from_lists(seqs_list)
    order = np.random.default_rng(seed).permutation(len(seqs))
    stream = session_parallel(seqs, batch, bptt, order)
    whole = stacked(stream)
    assert whole.inputs.shape[0] % bptt == 0
    assert whole.mask.sum() == seqs.n_targets == pairs_in_slots(stream)
    assert not whole.reset[~whole.mask].any()
    # target_pos points at the target in the packed items
    assert (seqs.items[whole.target_pos[whole.mask]] == whole.targets[whole.mask]).all()
    # Rebuild each slot's sequences from the resets and compare with the input sequences.
    rebuilt = []
    for b in range(batch):
        for i, t, r in _pairs_per_slot(stream, b):
            if r:
                rebuilt.append([i, t])
            else:
                assert rebuilt[-1][-1] == i  # a continuing step feeds the previous target
                rebuilt[-1].append(t)
    assert sorted(rebuilt) == sorted(s for s in seqs_list if len(s) >= 2)
