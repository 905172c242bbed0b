"""The training step's building blocks that exist for speed: each must equal the plain form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnrec_cli.data.batches import Batch
from rnnrec_cli.model import network, step


def _batch(inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, negatives: np.ndarray) -> Batch:
    return Batch(
        inputs=jnp.asarray(inputs, jnp.int32),
        targets=jnp.asarray(targets, jnp.int32),
        mask=jnp.asarray(mask),
        negatives=jnp.asarray(negatives, jnp.int32),
    )


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(1, 40),
    steps=st.integers(1, 4),
    width=st.integers(1, 4),
    n_neg=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_touched_rows_marks_and_sort_agree_and_renumber_every_id(
    n_items: int, steps: int, width: int, n_neg: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, n_items, (steps, width))
    targets = rng.integers(0, n_items, (steps, width))
    mask = rng.random((steps, width)) < 0.7
    batch = _batch(inputs, targets, mask, rng.integers(0, n_items, n_neg))
    results = []
    for ratio in (10**9, 0):  # the dense marks, then the sort
        old = step.DENSE_MARK_RATIO
        step.DENSE_MARK_RATIO = ratio
        try:
            results.append(jax.jit(step.touched_rows, static_argnums=1)(batch, n_items))
        finally:
            step.DENSE_MARK_RATIO = old
    (rows_a, local_a), (rows_b, local_b) = results
    np.testing.assert_array_equal(rows_a, rows_b)
    for field in ("inputs", "targets", "negatives"):
        np.testing.assert_array_equal(getattr(local_a, field), getattr(local_b, field))
    rows = np.asarray(rows_a)
    touched = np.unique(np.r_[inputs[mask], targets[mask], np.asarray(batch.negatives)])
    np.testing.assert_array_equal(rows[: len(touched)], touched)
    assert (rows[len(touched) :] == n_items).all()
    # Every real id is renumbered to its row; padding steps point past the touched rows.
    for field, ids in (("inputs", inputs), ("targets", targets)):
        local = np.asarray(getattr(local_a, field))
        np.testing.assert_array_equal(rows[local[mask]], ids[mask])
        assert (local[~mask] == len(touched)).all()
    np.testing.assert_array_equal(rows[np.asarray(local_a.negatives)], np.asarray(batch.negatives))


def test_dropout_mask_keeps_the_asked_share_is_seeded_and_uncorrelated() -> None:
    key = jax.random.key(7)
    mask = np.asarray(network._keep_mask(key, 0.3, (50, 40, 100)))
    assert mask.shape == (50, 40, 100) and mask.dtype == bool
    assert abs(mask.mean() - 0.7) < 0.01
    np.testing.assert_array_equal(mask, np.asarray(network._keep_mask(key, 0.3, (50, 40, 100))))
    other = np.asarray(network._keep_mask(jax.random.fold_in(key, 1), 0.3, (50, 40, 100)))
    a, b = mask.ravel().astype(float), other.ravel().astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02  # another key, other masks
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.02  # neighbours independent
    assert abs(np.corrcoef(a[:-100], a[100:])[0, 1]) < 0.02  # the next hidden unit's step
    assert network._keep_mask(key, 0.0, (3,)) is None and network._keep_mask(None, 0.5, (3,)) is None
    assert np.asarray(network._keep_mask(key, 1.0, (1000,))).sum() == 0


@pytest.mark.parametrize("shape", [(7, 5, 3), (64, 2048, 101)])
def test_scores_with_column_terms_match_the_plain_form_and_its_gradient(shape: tuple[int, int, int]) -> None:
    rows, cols, dim = shape
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(rows, dim)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(cols, dim)), jnp.float32)
    column = jnp.asarray(rng.normal(size=(cols,)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(rows, cols)), jnp.float32)

    def fast(h: jax.Array, w: jax.Array, c: jax.Array) -> jax.Array:
        return jnp.sum(step._with_column_terms(h, w, c) * g)

    def plain(h: jax.Array, w: jax.Array, c: jax.Array) -> jax.Array:
        return jnp.sum((h @ w.T + c) * g)

    np.testing.assert_allclose(step._with_column_terms(h, w, column), h @ w.T + column, rtol=1e-5, atol=1e-4)
    got = jax.jit(jax.grad(fast, (0, 1, 2)))(h, w, column)
    for a, b in zip(got, jax.grad(plain, (0, 1, 2))(h, w, column), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
