import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnrec_cli.data.batches import Stream, assign_slots, chunk_widths, longest_first, session_parallel
from rnnrec_cli.data.sequences import Sequences

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
    # The second slot frees first (seq1 has one pair), so it takes seq2; the first then takes
    # seq3. Slots are numbered by when they run dry, latest first: the second slot becomes 0.
    assert _pairs_per_slot(stream, 1) == [(1, 2, True), (2, 3, False), (10, 11, True)]
    assert _pairs_per_slot(stream, 0) == [(4, 5, True), (6, 7, True), (7, 8, False), (8, 9, False)]
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


@settings(deadline=None, max_examples=80)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=60),
    st.integers(1, 40),
    st.integers(1, 5),
    st.sampled_from([1, 2, 4]),
)
def test_narrowed_tail_drops_only_idle_slots(lengths, batch, bptt, devices) -> None:
    batch *= devices
    seqs = Sequences.from_lists([list(range(n)) for n in lengths])
    full = session_parallel(seqs, batch, bptt)
    widths = chunk_widths(full.plan, bptt, devices, narrowest=2, min_chunks=1)
    narrow = Stream(full.plan, full.items, full.first, bptt, full.slots, widths=widths)
    running = [int(full.chunk(k).mask.any(axis=0).sum()) for k in range(full.n_chunks)]
    assert all(w % devices == 0 and w <= batch for w in widths.tolist())
    assert list(widths) == sorted(widths, reverse=True)
    for k in range(full.n_chunks):
        a, b = full.chunk(k), narrow.chunk(k)
        w = int(widths[k])
        # The running slots are a prefix, every one of them is kept, and about half at most are
        # idle (above the narrowest width, up to the device multiple).
        assert not a.mask[:, w:].any() and not a.mask[:, running[k] :].any()
        assert w == batch or w <= max(2 * running[k], 2 * max(2, devices)) + devices
        for x, y in zip(a, b, strict=True):
            if x is not None:
                assert np.array_equal(x[:, :w], y)


def test_narrowed_tail_halves_the_batch() -> None:
    # One long sequence outlasts seven short ones: the tail runs on the narrowest width.
    seqs = Sequences.from_lists([list(range(40))] + [[1, 2, 3]] * 7)
    stream = session_parallel(seqs, 8, 4)
    assert chunk_widths(stream.plan, 4, narrowest=2, min_chunks=1).tolist() == [8] + [2] * 9
    assert chunk_widths(stream.plan, 4, narrowest=4, min_chunks=1).tolist() == [8] + [4] * 9
    assert chunk_widths(stream.plan, 4, multiple=8, narrowest=2, min_chunks=1).tolist() == [8] * 10
    # A width too few chunks would use is not worth its compilation.
    assert chunk_widths(stream.plan, 4, narrowest=2, min_chunks=10).tolist() == [8] * 10
