"""The jitted cores of predict: top-K after the last event or after every event, generated
continuations (greedy, beam search, sampling) and predicted values, over batches of whole
sequences right-aligned in [L, B] arrays. Pure functions; predict.py is their IO shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_cli.config import ModelConfig
from rnnrec_cli.data.batches import Batch
from rnnrec_cli.evaluation import repeats
from rnnrec_cli.evaluation.topk import TOP_K_GROUP, pad_catalogue
from rnnrec_cli.evaluation.topk import top_k as top_k_of
from rnnrec_cli.model import network
from rnnrec_cli.options import PredictOptions, Strategy

_MIN_LEN = 8


def _run(
    params: network.Params, cfg: ModelConfig, x: Batch, features: network.Features
) -> tuple[network.Carry, jax.Array]:
    """Run the model over a right-aligned batch of whole sequences (see `_left_padded`)."""
    return network.run(params, cfg, network.zero_carry(cfg, x.inputs.shape[1]), x, None, features)


def _seen_mask(inputs: jax.Array, valid: jax.Array, n_items: int, counts: bool = False) -> jax.Array:
    """<bool>[B, N]: items in each (left-padded) column of `inputs`; with `counts`, <float32>
    times each occurs (a bool is a quarter of the memory at a million items)."""
    batch = inputs.shape[1]
    cols = jnp.where(valid, inputs, n_items)
    rows = jnp.broadcast_to(jnp.arange(batch)[None, :], inputs.shape)
    if counts:
        return jnp.zeros((batch, n_items), jnp.float32).at[rows, cols].add(1.0, mode="drop")
    return jnp.zeros((batch, n_items), bool).at[rows, cols].set(True, mode="drop")


def _scores(
    h: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    allowed: jax.Array,
    counts: jax.Array | None,
    cov: jax.Array,
    repeat: float,
) -> jax.Array:
    """<float32>[B, N'] scores over the padded catalogue (-inf outside `allowed`), raised by the
    repeat boost when `repeat` (see evaluation.repeats; `counts`: times each item was seen)."""
    s = h @ kernel.T + bias
    if repeat:
        assert counts is not None
        s = s + repeats.dense_boost(counts, repeats.score_sd(h, cov), repeat)
    return jnp.where(allowed[None, :], s, -jnp.inf)


def _layer(
    params: network.Params, cfg: ModelConfig, features: network.Features, allowed: jax.Array, repeat: float
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The output layer padded to whole top-k groups, `allowed` padded alike, and, with the
    repeat boost, the catalogue's score covariance (of the real items)."""
    kernel, bias = network.output_layer(params, cfg, features)
    cov = repeats.catalogue_cov(kernel, bias) if repeat else jnp.zeros((1, 1))
    kernel, bias = pad_catalogue(kernel, bias, TOP_K_GROUP)
    return kernel, bias, jnp.pad(allowed, (0, kernel.shape[0] - allowed.shape[0])), cov


def top_k(
    params: network.Params,
    x: Batch,
    allowed: jax.Array,
    features: network.Features,
    *,
    cfg: ModelConfig,
    k: int,
    exclude_seen: bool,
    repeat: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Top-k after each sequence: (<float32>[B, k] scores, <int32>[B, k] items); after every
    event, see `top_k_window`.

    allowed: <bool>[N] candidate items. repeat: the repeat boost's weight (0 = none).
    """
    # Scores over the catalogue padded to whole groups of the two-pass top-k (padding: -inf).
    kernel, bias, allowed, cov = _layer(params, cfg, features, allowed, repeat)
    # --repeat and --exclude-seen never meet (options refuse it): the one asked for is computed.
    seen = _seen_mask(x.inputs, x.mask, kernel.shape[0], counts=bool(repeat)) if exclude_seen or repeat else None
    carry, _ = _run(params, cfg, x, features)
    scores = _scores(network.last_hidden(cfg, carry), kernel, bias, allowed, seen, cov, repeat)
    if seen is not None and exclude_seen:
        scores = jnp.where(seen, -jnp.inf, scores)
    return top_k_of(scores, k)


def top_k_window(
    params: network.Params,
    x: Batch,
    allowed: jax.Array,
    features: network.Features,
    carry: network.Carry,
    seen: jax.Array | None,
    *,
    cfg: ModelConfig,
    k: int,
    exclude_seen: bool,
    repeat: float = 0.0,
) -> tuple[network.Carry, jax.Array, jax.Array, jax.Array]:
    """Top-k after every event of one window of T steps, from the state `carry` and the items
    `seen` so far ([B, N'] over the padded catalogue, <float32> times seen with the repeat
    boost, else <bool>; None: a batch's first window): (carry, seen, <float32>[T, B, k] scores,
    <int32>[T, B, k] items), the first two to pass on to the next window."""
    kernel, bias, allowed, cov = _layer(params, cfg, features, allowed, repeat)
    n_cols = kernel.shape[0]
    batch = x.inputs.shape[1]
    carry, hidden = network.run(params, cfg, carry, x, None, features)
    rows = jnp.arange(batch)

    def step(seen: jax.Array, xs: tuple[jax.Array, jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, tuple]:
        h, x, r, v = xs
        seen = jnp.where(r[:, None], jnp.zeros((), seen.dtype), seen)
        at = seen.at[rows, jnp.where(v, x, n_cols)]
        seen = at.add(1.0, mode="drop") if repeat else at.set(True, mode="drop")
        s = _scores(h, kernel, bias, allowed, seen, cov, repeat)
        if exclude_seen:
            s = jnp.where(seen > 0, -jnp.inf, s)
        return seen, top_k_of(s, k)

    # Counts for the boost; without it, flags (a quarter of the memory at a million items).
    kind = jnp.float32 if repeat else bool
    start: jax.Array = jnp.zeros((batch, n_cols), kind) if seen is None else seen
    end, (scores, items) = jax.lax.scan(step, start, (hidden, x.inputs, x.reset, x.mask))
    return carry, end, scores, items


def generate(
    params: network.Params,
    x: Batch,
    allowed: jax.Array,
    features: network.Features,
    key: jax.Array,
    *,
    cfg: ModelConfig,
    n_steps: int,
    strategy: Strategy,
    beams: int,
    temperature: float,
    exclude_seen: bool,
) -> tuple[jax.Array, jax.Array]:
    """Roll the model forward, feeding its own choice back: (<int32>[B, n], <float32>[B, n]).

    Scores are each chosen item's log-probability under the model's softmax over the allowed
    (and, with exclude_seen, unseen and not yet generated) items. Beam search keeps `beams`
    continuations by total log-probability and returns the best one. Generated events have no
    value or type: models that take them see the training mean and the unknown type.
    """
    batch = x.inputs.shape[1]
    carry, _ = _run(params, cfg, x, features)
    n_items = network.n_items(params)
    blocked = ~allowed[None, :] | (_seen_mask(x.inputs, x.mask, n_items) if exclude_seen else False)
    blocked = jnp.broadcast_to(blocked, (batch, n_items))

    def log_probs(carry: network.Carry, blocked: jax.Array) -> jax.Array:
        s = network.scores(params, cfg, network.last_hidden(cfg, carry), features) / temperature
        return jax.nn.log_softmax(jnp.where(blocked, -jnp.inf, s), axis=-1)

    def feed(carry: network.Carry, items: jax.Array) -> network.Carry:
        shape = (1, items.shape[0])
        step = Batch(
            items[None, :],
            reset=jnp.zeros(shape, bool),
            input_values=jnp.full(shape, jnp.nan),
            input_events=jnp.full(shape, -1, jnp.int32),
        )
        carry, _ = network.run(params, cfg, carry, step, None, features)
        return carry

    def block_item(blocked: jax.Array, items: jax.Array) -> jax.Array:
        if not exclude_seen:
            return blocked
        return blocked.at[jnp.arange(items.shape[0]), items].set(True)

    if strategy in ("greedy", "sample"):

        def step(state: tuple, k: jax.Array) -> tuple[tuple, tuple[jax.Array, jax.Array]]:
            carry, blocked = state
            lp = log_probs(carry, blocked)
            items = jnp.argmax(lp, axis=-1) if strategy == "greedy" else jax.random.categorical(k, lp, axis=-1)
            items = items.astype(jnp.int32)
            score = jnp.take_along_axis(lp, items[:, None], axis=1)[:, 0]
            return (feed(carry, items), block_item(blocked, items)), (items, score)

        _, (items, scores) = jax.lax.scan(step, (carry, blocked), jax.random.split(key, n_steps))
        return items.T, scores.T

    # Beam search: state for batch * beams rows; the first step expands from one row per sequence.
    w = beams
    lp0 = log_probs(carry, blocked)
    total, first = jax.lax.top_k(lp0, w)  # [B, W]
    rep = lambda x: jnp.repeat(x, w, axis=0)  # noqa: E731
    carry = feed(jax.tree.map(rep, carry), first.reshape(-1))
    blocked = block_item(rep(blocked), first.reshape(-1))
    hist_items = jnp.zeros((batch, w, n_steps), jnp.int32).at[:, :, 0].set(first)
    hist_scores = jnp.zeros((batch, w, n_steps)).at[:, :, 0].set(total)

    def beam_step(state: tuple, t: jax.Array) -> tuple[tuple, None]:
        carry, blocked, total, hist_items, hist_scores = state
        lp = log_probs(carry, blocked).reshape(batch, w, n_items)
        cand = (total[:, :, None] + lp).reshape(batch, w * n_items)
        total, flat = jax.lax.top_k(cand, w)  # [B, W]
        src, items = flat // n_items, (flat % n_items).astype(jnp.int32)
        step_lp = jnp.take_along_axis(lp.reshape(batch, w * n_items), flat, axis=1)
        rows = (jnp.arange(batch)[:, None] * w + src).reshape(-1)
        carry = feed(jax.tree.map(lambda x: x[rows], carry), items.reshape(-1))
        blocked = block_item(blocked[rows], items.reshape(-1))
        hist_items = jnp.take_along_axis(hist_items, src[:, :, None], axis=1).at[:, :, t].set(items)
        hist_scores = jnp.take_along_axis(hist_scores, src[:, :, None], axis=1).at[:, :, t].set(step_lp)
        return (carry, blocked, total, hist_items, hist_scores), None

    state = (carry, blocked, total, hist_items, hist_scores)
    (_, _, total, hist_items, hist_scores), _ = jax.lax.scan(beam_step, state, jnp.arange(1, n_steps))
    return hist_items[:, 0], hist_scores[:, 0]


def values_every(params: network.Params, x: Batch, features: network.Features, *, cfg: ModelConfig) -> jax.Array:
    """<float32>[L, B] each event's value predicted from the events before it (NaN for the
    first event of a sequence and for padding)."""
    _, hidden = _run(params, cfg, x, features)
    pred = network.predicted_values(params, cfg, hidden[:-1], x.inputs[1:])
    pred = jnp.where(x.mask[:-1] & x.mask[1:] & ~x.reset[1:], pred, jnp.nan)
    return jnp.concatenate([jnp.full((1, x.inputs.shape[1]), jnp.nan), pred])


def values_after(
    params: network.Params, x: Batch, candidates: jax.Array, features: network.Features, *, cfg: ModelConfig
) -> jax.Array:
    """<float32>[B, C] the value of each candidate item <int32>[B, C] after the whole sequence."""
    h = network.last_hidden(cfg, _run(params, cfg, x, features)[0])
    return network.predicted_values(
        params, cfg, jnp.broadcast_to(h[:, None, :], (*candidates.shape, h.shape[-1])), candidates
    )


values_every_jit = jax.jit(values_every, static_argnames=("cfg",))
values_after_jit = jax.jit(values_after, static_argnames=("cfg",))
_top_k = jax.jit(top_k, static_argnames=("cfg", "k", "exclude_seen", "repeat"))
_top_k_window = jax.jit(top_k_window, static_argnames=("cfg", "k", "exclude_seen", "repeat"))
_generate = jax.jit(generate, static_argnames=("cfg", "n_steps", "strategy", "beams", "temperature", "exclude_seen"))


# ---------------------------------------------------------------------------- batching

# Every-position predictions run over windows of this many events, the state and the seen items
# passed from one window to the next, so memory is bounded by the window and the batch's width,
# not by the longest session.
WINDOW = 256


def _every_position(
    params: network.Params,
    cfg: ModelConfig,
    seqs: Sequence[np.ndarray],
    idx: np.ndarray,
    opts: PredictOptions,
    allowed: np.ndarray,
    vals: Sequence[np.ndarray] | None,
    evs: Sequence[np.ndarray] | None,
    features: dict[str, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """<int32>[L, W, k] items and <float32>[L, W, k] scores after each event of the sequences
    `idx`, right-aligned. W: the batch's width, a power of two up to --batch-size, so a few long
    sessions are not padded to a full batch of them."""
    width = min(opts.batch_size, _bucket(len(idx)))
    x = left_padded(seqs, idx, width, vals, evs)
    length = x.inputs.shape[0]
    window = min(length, WINDOW)  # both powers of two: the windows tile the batch
    carry, seen = network.zero_carry(cfg, width), None
    items, scores = [], []
    for t0 in range(0, length, window):
        part = Batch(*(None if a is None else a[t0 : t0 + window] for a in x))
        carry, seen, s, i = _top_k_window(
            params, part, allowed, features, carry, seen, cfg=cfg, k=opts.k, exclude_seen=opts.exclude_seen,
            repeat=opts.boost_weight,
        )  # fmt: skip
        items.append(np.asarray(i))
        scores.append(np.asarray(s))
    return np.concatenate(items), np.concatenate(scores)


def _bucket(n: int) -> int:
    return max(_MIN_LEN, 1 << (n - 1).bit_length())


def left_padded(
    seqs: Sequence[np.ndarray],
    idx: np.ndarray,
    batch: int,
    vals: Sequence[np.ndarray] | None = None,
    evs: Sequence[np.ndarray] | None = None,
) -> Batch:
    """The sequences `idx` (with their values and types when given) right-aligned in [L, B]
    arrays: reset marks each sequence's first event, so the padding before it never reaches the
    state; mask marks real events; values are NaN and types -1 where unknown."""
    length = _bucket(max(len(seqs[i]) for i in idx))
    inputs = np.zeros((length, batch), np.int32)
    reset = np.zeros((length, batch), bool)
    valid = np.zeros((length, batch), bool)
    values = np.full((length, batch), np.nan, np.float32)
    events = np.full((length, batch), -1, np.int32)
    for col, i in enumerate(idx):
        s = seqs[i]
        inputs[length - len(s) :, col] = s
        valid[length - len(s) :, col] = True
        reset[length - len(s), col] = True
        if vals is not None:
            values[length - len(s) :, col] = vals[i]
        if evs is not None:
            events[length - len(s) :, col] = evs[i]
    return Batch(inputs, mask=valid, reset=reset, input_values=values, input_events=events)


def recommend(
    params: network.Params,
    cfg: ModelConfig,
    seqs: Sequence[np.ndarray],
    opts: PredictOptions,
    allowed: np.ndarray,
    vals: Sequence[np.ndarray] | None = None,
    evs: Sequence[np.ndarray] | None = None,
    features: dict[str, np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per non-empty index sequence: (items, scores) arrays.

    Shapes: [k] for the top-k after the last event, [len, k] with every_position, [n] with generate.
    `vals`, `evs`: the events' values and type indices, for models that take them.
    """
    out: list[Any] = [None] * len(seqs)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    key = jax.random.key(opts.seed)
    b = opts.batch_size
    for lo in range(0, len(seqs), b):
        idx = order[lo : lo + b]
        if opts.every_position:
            items, scores = _every_position(params, cfg, seqs, idx, opts, allowed, vals, evs, features)
            for col, i in enumerate(idx):
                n = len(seqs[i])
                out[i] = (items[len(items) - n :, col], scores[len(items) - n :, col])
            continue
        x = left_padded(seqs, idx, b, vals, evs)
        if opts.generate:
            key, sub = jax.random.split(key)
            items, scores = _generate(
                params, x, allowed, features, sub, cfg=cfg, n_steps=opts.generate,
                strategy=opts.strategy, beams=opts.beams, temperature=opts.temperature,
                exclude_seen=opts.exclude_seen,
            )  # fmt: skip
        else:
            scores, items = _top_k(
                params,
                x,
                allowed,
                features,
                cfg=cfg,
                k=opts.k,
                exclude_seen=opts.exclude_seen,
                repeat=opts.boost_weight,
            )
        items, scores = np.asarray(items), np.asarray(scores)
        for col, i in enumerate(idx):
            out[i] = (items[col], scores[col])
    return out
