"""Losses against brute-force per-row references written straight from the papers' formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data.batches import Batch, sample_negatives, sampling_distribution
from rnnrec_cli.model import losses, network
from rnnrec_cli.model.step import chunk_loss, item_stats

M, S = 4, 3  # rows, sampled columns


def _sig(x):
    return 1 / (1 + jnp.exp(-x))


def _reference(logits, own, valid, kind, bpreg=0.5, elu=0.0, correction=None):
    """Row by row, column by column: no masks, no vectorisation."""
    rows = []
    for i in range(logits.shape[0]):
        r = logits[i]
        if correction is not None:
            r = r - correction[i]
        if kind != "ce" and elu > 0:
            r = jnp.where(r > 0, r, elu * (jnp.exp(r) - 1))
        t = int(own[i])
        cols = [j for j in range(logits.shape[1]) if valid[i, j]]
        negs = [j for j in cols if j != t]
        if kind == "ce":
            rows.append(-r[t] + jnp.log(sum(jnp.exp(r[j]) for j in cols)))
            continue
        z = sum(jnp.exp(r[j]) for j in negs)
        s = {j: jnp.exp(r[j]) / z for j in negs}
        if kind == "bpr-max":
            rows.append(
                -jnp.log(sum(s[j] * _sig(r[t] - r[j]) for j in negs)) + bpreg * sum(s[j] * r[j] ** 2 for j in negs)
            )
        else:
            rows.append(sum(s[j] * (_sig(r[j] - r[t]) + _sig(r[j] ** 2)) for j in negs))
    return jnp.stack(rows)


# Two steps of a batch of 2 plus 3 sampled columns; the second slot is padding at step 2.
OWN = jnp.array([0, 1, 0, 1])
VALID = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 0, 1, 1, 1]], bool)
ROW_MASK = jnp.array([True, True, True, False])


@pytest.mark.parametrize(("kind", "elu"), [("ce", 0.0), ("bpr-max", 0.0), ("bpr-max", 1.0), ("top1-max", 0.0)])
def test_loss_and_gradient_match_brute_force(kind: str, elu: float) -> None:
    logits = jax.random.normal(jax.random.key(0), (M, 2 + S))

    def fast(x):
        match kind:
            case "ce":
                per = losses.cross_entropy(x, OWN, VALID)
            case "bpr-max":
                per = losses.bpr_max(x, OWN, VALID, 0.5, elu)
            case _:
                per = losses.top1_max(x, OWN, VALID)
        return jnp.sum(jnp.where(ROW_MASK, per, 0.0))

    def slow(x):
        per = _reference(x, OWN, VALID, kind, elu=elu)
        return jnp.sum(jnp.where(ROW_MASK, per, 0.0))

    np.testing.assert_allclose(fast(logits), slow(logits), rtol=1e-5)
    g_fast, g_slow = jax.grad(fast)(logits), jax.grad(slow)(logits)
    np.testing.assert_allclose(g_fast, g_slow, rtol=1e-4, atol=1e-6)
    # The padding slot's target column gets no gradient at step 2: it is no negative there.
    assert not np.asarray(g_fast[2:, 1]).any()


def test_logq_correction_matches_reference() -> None:
    logits = jax.random.normal(jax.random.key(1), (M, 2 + S))
    corr = jax.random.normal(jax.random.key(2), (M, 2 + S))
    fast = losses.cross_entropy(logits, OWN, VALID, corr)
    slow = _reference(logits, OWN, VALID, "ce", correction=corr)
    np.testing.assert_allclose(fast[ROW_MASK], slow[ROW_MASK], rtol=1e-5)
    assert np.isfinite(np.asarray(fast)).all()


def test_bpr_max_softmax_excludes_the_target() -> None:
    # Raising the target's own score must lower the loss; if the target were inside the softmax
    # the weight would shift onto it and the loss could rise.
    logits = jnp.zeros((1, 3))
    own, valid = jnp.array([0]), jnp.ones((1, 3), bool)
    low = losses.bpr_max(logits, own, valid, 0.0)
    high = losses.bpr_max(logits.at[0, 0].set(5.0), own, valid, 0.0)
    assert float(high[0]) < float(low[0])
    np.testing.assert_allclose(low, [-np.log(0.5)], rtol=1e-6)


def test_sampled_chunk_loss_uses_same_step_targets_and_shared_negatives() -> None:
    """The sampled output layer equals CE computed from the full scores, sliced by hand."""
    cfg = RunConfig(
        data_dir="-",
        n_items=9,
        model=ModelConfig(layers=(5,)),
        train=TrainConfig(loss="ce", logq=1.0, n_sample=2, batch_size=2),
    )
    params = network.init_params(cfg.model, 9, jax.random.key(3))
    inputs = jnp.array([[1, 2], [3, 4]])
    targets = jnp.array([[2, 5], [4, 6]])
    mask = jnp.array([[True, True], [True, False]])
    batch = Batch(inputs, targets, mask, jnp.array([[True, True], [False, False]]), jnp.array([7, 2], jnp.int32))
    counts = np.arange(1, 10)
    loss, (_, n) = chunk_loss(params, cfg, network.zero_carry(cfg.model, 2), batch, item_stats(counts, 0.5), None)
    _, hidden = network.run(params, cfg.model, network.zero_carry(cfg.model, 2), Batch(inputs, reset=batch.reset))
    full = np.asarray(network.scores(params, cfg.model, hidden), np.float64)  # [T, B, N]
    # GRU4Rec's log-Q: log(count) for in-batch targets, alpha * log(count) for samples.
    p = counts.astype(np.float64)
    q = counts**0.5
    expected = []
    for t in range(2):
        step_cols = [int(c) for c, m in zip(targets[t], mask[t], strict=True) if m]
        for b in range(2):
            if not mask[t, b]:
                continue
            cols = [(c, np.log(p[c])) for c in step_cols] + [(c, np.log(q[c])) for c in (7, 2)]
            r = np.array([full[t, b, c] - corr for c, corr in cols])
            own = full[t, b, targets[t, b]] - np.log(p[targets[t, b]])
            expected.append(np.log(np.exp(r).sum()) - own)
    assert int(n) == 3
    # Each step's summed losses over the nominal batch size (2), summed over the steps: the
    # half-empty second step weighs half, as in GRU4Rec's per-step batch mean.
    np.testing.assert_allclose(float(loss), np.sum(expected) / 2, rtol=1e-5)


def test_negatives_follow_support_to_the_alpha() -> None:
    counts = np.array([1, 4, 16, 0])
    probs = sampling_distribution(counts, 0.5)
    np.testing.assert_allclose(probs, [1 / 7, 2 / 7, 4 / 7, 0])
    draws = sample_negatives(np.cumsum(probs), 50 * 400, np.random.default_rng(0))
    assert draws.shape == (20000,) and draws.dtype == np.int32
    freq = np.bincount(draws.ravel(), minlength=4) / draws.size
    np.testing.assert_allclose(freq, probs, atol=0.01)
    assert (sampling_distribution(counts[:3], 0.0) == 1 / 3).all()


def test_target_weighting_is_a_popularity_weighted_mean() -> None:
    from rnnrec_cli.model.step import _next_item_loss

    counts = np.array([1, 100, 4, 9, 16, 25, 36, 49, 64])
    stats = item_stats(counts, 0.5)
    inputs = jnp.array([[1, 2], [3, 4]])
    batch = Batch(
        inputs, jnp.array([[2, 5], [4, 1]]), jnp.array([[True, True], [True, False]]),
        jnp.array([[True, True], [False, False]]), jnp.array([7, 2], jnp.int32),
    )  # fmt: skip
    cfg = RunConfig(
        data_dir="-", n_items=9, model=ModelConfig(layers=(5,)), train=TrainConfig(target_weighting=0.5, batch_size=2)
    )
    params = network.init_params(cfg.model, 9, jax.random.key(3))
    loss, _ = chunk_loss(params, cfg, network.zero_carry(cfg.model, 2), batch, stats, None)
    _, hidden = network.run(params, cfg.model, network.zero_carry(cfg.model, 2), Batch(inputs, reset=batch.reset))
    per_row = np.asarray(_next_item_loss(params, cfg, hidden, batch, stats))
    w = counts[np.asarray(batch.targets).ravel()] ** -0.5 * np.asarray(batch.mask).ravel()
    m = np.asarray(batch.mask).ravel()
    # Weights normalised to mean 1 over the chunk's 3 targets; the sum over the batch size 2.
    np.testing.assert_allclose(float(loss), (w * per_row).sum() / w.sum() * m.sum() / 2, rtol=1e-5)
    # Unweighted, the same rows sum plainly.
    plain = dataclasses_replace(cfg, target_weighting=0.0)
    loss0, _ = chunk_loss(params, plain, network.zero_carry(cfg.model, 2), batch, stats, None)
    np.testing.assert_allclose(float(loss0), per_row[m].sum() / 2, rtol=1e-5)


def dataclasses_replace(cfg: RunConfig, **train) -> RunConfig:
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def test_split_cross_entropy_equals_the_joined_matrix() -> None:
    """CE from per-block log-sum-exps equals CE over the joined [in-batch | sampled] columns,
    with padding columns and the log-Q correction."""
    rng = np.random.default_rng(3)
    n_steps, batch, n_sample = 3, 4, 5
    in_batch = jnp.asarray(rng.normal(size=(n_steps, batch, batch)), jnp.float32)
    sampled = jnp.asarray(rng.normal(size=(n_steps * batch, n_sample)), jnp.float32)
    mask = jnp.asarray(rng.random((n_steps, batch)) < 0.7)
    corr_in = jnp.asarray(rng.normal(size=(n_steps, batch)), jnp.float32)
    corr_s = jnp.asarray(rng.normal(size=n_sample), jnp.float32)
    got = losses.split_cross_entropy(in_batch, sampled, mask, corr_in, corr_s)
    logits = jnp.concatenate([in_batch.reshape(-1, batch), sampled], axis=1)
    valid = jnp.concatenate(
        [jnp.broadcast_to(mask[:, None, :], (n_steps, batch, batch)).reshape(-1, batch),
         jnp.ones((n_steps * batch, n_sample), bool)], axis=1,
    )  # fmt: skip
    correction = jnp.concatenate(
        [jnp.broadcast_to(corr_in[:, None, :], (n_steps, batch, batch)).reshape(-1, batch),
         jnp.broadcast_to(corr_s[None, :], sampled.shape)], axis=1,
    )  # fmt: skip
    want = losses.cross_entropy(logits, jnp.tile(jnp.arange(batch), n_steps), valid, correction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("elu", "n_sample", "scale"), [(0.0, 5, 1.0), (0.5, 5, 3.0), (1.0, 0, 1.0), (0.5, 7, 30.0)])
def test_split_bpr_max_equals_the_joined_matrix(elu: float, n_sample: int, scale: float) -> None:
    """BPR-max from per-block sums under one shared softmax equals BPR-max over the joined
    [in-batch | sampled] columns, in value and gradient, with padding columns, without sampled
    columns and with scores large enough to overflow an unshifted exponential."""
    rng = np.random.default_rng(int(10 * elu) + n_sample)
    n_steps, batch = 3, 4
    in_batch = jnp.asarray(scale * rng.normal(size=(n_steps, batch, batch)), jnp.float32)
    sampled = jnp.asarray(scale * rng.normal(size=(n_steps * batch, n_sample)), jnp.float32)
    mask = jnp.asarray(rng.random((n_steps, batch)) < 0.7).at[0].set(False)  # a step with no in-batch negative

    def joined(in_batch: jax.Array, sampled: jax.Array) -> jax.Array:
        logits = jnp.concatenate([in_batch.reshape(-1, batch), sampled], axis=1)
        valid = jnp.concatenate(
            [jnp.broadcast_to(mask[:, None, :], (n_steps, batch, batch)).reshape(-1, batch),
             jnp.ones((n_steps * batch, n_sample), bool)], axis=1,
        )  # fmt: skip
        return losses.bpr_max(logits, jnp.tile(jnp.arange(batch), n_steps), valid, 1.5, elu)

    def split(in_batch: jax.Array, sampled: jax.Array) -> jax.Array:
        return losses.split_bpr_max(in_batch, sampled, mask, 1.5, elu)

    np.testing.assert_allclose(
        split(in_batch, sampled), joined(in_batch, sampled), rtol=2e-5, atol=2e-5, equal_nan=False
    )
    weights = jnp.asarray(rng.random(n_steps * batch), jnp.float32)
    grads = [jax.grad(lambda a, b, f=f: (f(a, b) * weights).sum(), argnums=(0, 1))(in_batch, sampled)
             for f in (split, joined)]  # fmt: skip
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, equal_nan=False)
