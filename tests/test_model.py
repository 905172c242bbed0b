import itertools

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_cli.config import ModelConfig
from rnnrec_cli.data.batches import Batch, session_parallel
from rnnrec_cli.data.sequences import Sequences
from rnnrec_cli.model import network

from .conftest import stacked


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("embedding", [0, 6])
def test_shapes(cell: str, embedding: int) -> None:
    cfg = ModelConfig(cell=cell, layers=(8, 5), embedding=embedding)
    params = network.init_params(cfg, 11, jax.random.key(0))
    inputs = jnp.zeros((4, 3), jnp.int32)
    _carry, hidden = network.run(params, cfg, network.zero_carry(cfg, 3), Batch(inputs, reset=jnp.zeros((4, 3), bool)))
    assert hidden.shape == (4, 3, 5)
    assert network.scores(params, cfg, hidden).shape == (4, 3, 11)
    assert ("kernel" in params["items"]) == (embedding != 0)
    assert params["items"]["embedding"].shape == (11, 5 if embedding == 0 else 6)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_packed_stream_with_resets_equals_each_sequence_alone(cell: str) -> None:
    """The hidden state is reset exactly where a new sequence starts, and only there."""
    cfg = ModelConfig(cell=cell, layers=(7,))
    params = network.init_params(cfg, 20, jax.random.key(1))
    seqs_list = [[1, 2, 3, 4], [5, 6], [7, 8, 9], [10, 11, 12, 13, 14], [3, 2]]
    seqs = Sequences.from_lists(seqs_list)
    stream = session_parallel(seqs, batch_size=2, bptt=3)
    carry = network.zero_carry(cfg, 2)
    packed = []
    for chunk in stream.chunks():
        carry, h = network.run(params, cfg, carry, chunk)
        packed.append(np.asarray(h))
    packed = np.concatenate(packed)
    alone = {}
    for s in seqs_list:
        _, h = network.run(
            params,
            cfg,
            network.zero_carry(cfg, 1),
            Batch(jnp.array(s[:-1])[:, None], reset=jnp.zeros((len(s) - 1, 1), bool)),
        )
        alone[tuple(s[:-1])] = np.asarray(h[:, 0])
    stream = stacked(stream)
    for b in range(2):
        steps = np.flatnonzero(stream.mask[:, b])
        starts = [t for t in steps if stream.reset[t, b]] + [steps[-1] + 1]
        for lo, hi in itertools.pairwise(starts):
            key = tuple(int(x) for x in stream.inputs[lo:hi, b])
            np.testing.assert_allclose(packed[lo:hi, b], alone[key], rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training() -> None:
    cfg = ModelConfig(layers=(16,), dropout_embed=0.5, dropout_hidden=0.5)
    params = network.init_params(cfg, 10, jax.random.key(0))
    args = (params, cfg, network.zero_carry(cfg, 2), Batch(jnp.ones((3, 2), jnp.int32), reset=jnp.zeros((3, 2), bool)))
    _, a = network.run(*args)
    _, b = network.run(*args)
    _, c = network.run(*args, dropout_key=jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert (np.asarray(c) == 0).mean() > 0.3  # about half of the outputs dropped


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_fused_cells_match_flax_cells(cell: str) -> None:
    """The fused recurrence (input products hoisted out of the scan, one recurrent product per
    step) computes flax's own cells, with resets and a carried-in state."""
    cfg = ModelConfig(cell=cell, layers=(7, 5), embedding=4, dropout_embed=0.0, dropout_hidden=0.0)
    params = network.init_params(cfg, 12, jax.random.key(2))
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.integers(0, 12, (6, 3)), jnp.int32)
    reset = jnp.asarray(rng.random((6, 3)) < 0.3)
    carry = jax.tree.map(lambda a: a + 0.3, network.zero_carry(cfg, 3))
    got_carry, got = network.run(params, cfg, carry, Batch(inputs, reset=reset))
    cells = {"gru": flax_nn.GRUCell, "lstm": flax_nn.OptimizedLSTMCell, "rnn": flax_nn.SimpleCell}[cell]
    c, outs = carry, []
    for t in range(inputs.shape[0]):
        c = jax.tree.map(lambda a, r=reset[t]: jnp.where(r[:, None], 0.0, a), c)
        x = params["items"]["embedding"][inputs[t]]
        new = []
        for width, p, layer_c in zip(cfg.layers, params["cells"], c, strict=True):
            layer_c, x = cells(features=width).apply({"params": p}, layer_c, x)
            new.append(layer_c)
        c = tuple(new)
        outs.append(x)
    np.testing.assert_allclose(got, jnp.stack(outs), rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got_carry, c)
