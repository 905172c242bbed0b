"""The recurrent next-item model as pure functions over a parameter pytree.

Flax linen cells define the parameters (`init_params`: their names and initialisers), which are
a plain dict that jit, optax and msgpack checkpoints handle directly. `run` computes the cells
itself, fused (see `_fused_weights`): per layer, the input products of all T steps are one matrix
product before the scan, and each step does one recurrent product. Every
table with a row per item sits under params["items"] (embedding, bias, and the output kernel
when untied): the one subtree that sharding splits by rows. Item side features are constants,
not parameters: they are passed explicitly (`features`, see features.read_item_features).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnrec_cli.config import ModelConfig

if TYPE_CHECKING:
    from rnnrec_cli.data.batches import Batch

Params = dict[str, Any]
Carry = tuple[Any, ...]
# {"codes": <int32>[N, M] (-1 pads), "numeric": <float32>[N, K]}, or None without features.
Features = dict[str, jax.Array] | None

# Time steps per scan iteration. Unrolling the default 10 steps took GRU 224 x 80 from 34 to 27 ms
# a chunk on 2026-12-06 but gained nothing measurable on 2026-12-07, at twice the compile time: kept at
# 1 (docs/design.md). The XLA crash once blamed on it was the process running out of memory
# mappings (see rnnrec_cli/compiled.py).
SCAN_UNROLL = 1


def make_cells(cfg: ModelConfig) -> list[nn.Module]:
    match cfg.cell:
        case "gru":
            return [nn.GRUCell(features=n) for n in cfg.layers]
        case "lstm":
            return [nn.OptimizedLSTMCell(features=n) for n in cfg.layers]
        case "rnn":
            return [nn.SimpleCell(features=n) for n in cfg.layers]


def _glorot_uniform(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    # GRU4Rec's item-matrix initialisation: uniform in +-sqrt(6 / (fan_in + fan_out)).
    bound = (6.0 / (shape[0] + shape[1])) ** 0.5
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def zero_carry(cfg: ModelConfig, batch: int) -> Carry:
    """All-zero hidden state for a batch: one entry per layer ((c, h) for LSTM)."""
    out: list[jax.Array | tuple[jax.Array, jax.Array]] = []
    for n in cfg.layers:
        # Separate buffers for c and h: the train step donates the carry.
        if cfg.cell == "lstm":
            out.append((jnp.zeros((batch, n), jnp.float32), jnp.zeros((batch, n), jnp.float32)))
        else:
            out.append(jnp.zeros((batch, n), jnp.float32))
    return tuple(out)


def resize_carry(carry: Carry, width: int) -> Carry:
    """The hidden state of the first `width` slots: cut (the slots after them have run dry), or
    padded with zeros (checkpoints always hold the full batch)."""

    def one(x: jax.Array) -> jax.Array:
        n = x.shape[0]
        return x[:width] if width <= n else jnp.pad(x, ((0, width - n), (0, 0)))

    return jax.tree.map(one, carry)


def carry_width(carry: Carry) -> int:
    return int(jax.tree.leaves(carry)[0].shape[0])


def init_params(cfg: ModelConfig, n_items: int, key: jax.Array) -> Params:
    k_emb, k_out, *k_cells = jax.random.split(key, 2 + len(cfg.layers))
    items = {
        "embedding": _glorot_uniform(k_emb, (n_items, cfg.embedding_dim)),
        "bias": jnp.zeros((n_items,), jnp.float32),
    }
    if not cfg.tied:
        items["kernel"] = _glorot_uniform(k_out, (n_items, cfg.layers[-1]))
    params: Params = {"items": items, "cells": []}
    in_dim = cfg.input_dim
    carry = zero_carry(cfg, 1)
    for cell, k, c in zip(make_cells(cfg), k_cells, carry, strict=True):
        params["cells"].append(cell.init(k, c, jnp.zeros((1, in_dim)))["params"])
        in_dim = cell.features
    if cfg.item_features:
        k_f = jax.random.split(jax.random.fold_in(key, 4), 3)
        # The last row stands for "no value" and is masked out of the pooling.
        params["feature_embedding"] = _glorot_uniform(k_f[0], (cfg.feature_codes + 1, cfg.feature_dim))
        if cfg.feature_numeric:
            params["feature_proj"] = _glorot_uniform(k_f[1], (cfg.feature_numeric, cfg.feature_dim))
        if cfg.feature_output:
            params["feature_out"] = _glorot_uniform(
                k_f[2], (cfg.feature_dim, cfg.embedding_dim if not cfg.tied else cfg.layers[-1])
            )
    if cfg.event_input:
        # One extra row for event types unknown to the vocabulary (and padding).
        k_ev = jax.random.fold_in(key, 2)
        params["event_embedding"] = _glorot_uniform(k_ev, (len(cfg.event_types) + 1, cfg.event_dim))
    if cfg.predicts_events:
        k_head = jax.random.fold_in(key, 3)
        params["event_head"] = {
            "w": _glorot_uniform(k_head, (cfg.layers[-1], len(cfg.event_types))),
            "b": jnp.zeros((len(cfg.event_types),), jnp.float32),
        }
    if cfg.predicts_values:
        # One hidden layer over [state, embedding of the item whose value is asked].
        k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
        width = cfg.layers[-1]
        params["value_head"] = {
            "w1": _glorot_uniform(k1, (width + cfg.embedding_dim, width)),
            "b1": jnp.zeros((width,), jnp.float32),
            "w2": _glorot_uniform(k2, (width, 1)),
            "b2": jnp.zeros((1,), jnp.float32),
        }
    return params


def _hidden_of(cfg: ModelConfig, carry: Any) -> jax.Array:
    return carry[1] if cfg.cell == "lstm" else carry


def _with_hidden(cfg: ModelConfig, carry: Any, h: jax.Array) -> Any:
    return (carry[0], h) if cfg.cell == "lstm" else h


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    keep = _keep_mask(key, rate, x.shape)
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


def run(
    params: Params,
    cfg: ModelConfig,
    carry: Carry,
    batch: Batch,
    dropout_key: jax.Array | None = None,
    features: Features = None,
) -> tuple[Carry, jax.Array]:
    """Run the stacked cells over T steps.

    Args:
      carry: hidden state from the previous chunk (see `zero_carry`), batch B.
      batch: reads inputs <int32>[T, B] (items), reset <bool>[T, B] (zero that slot's state
        before the step: a new sequence starts), and, when the model takes them,
        input_values <float32>[T, B] (fed standardised beside the embedding; NaN reads as 0)
        and input_events <int32>[T, B] (types, -1 = unknown, embedded beside the item).
      dropout_key: None at evaluation; otherwise dropout on the embedding and each layer output.
        As in GRU4Rec, the dropped-out output is the state carried to the next step.
      features: the item side-feature tables, when cfg.item_features.

    Returns:
      (carry after the last step, <float32>[T, B, H_last] top-layer outputs).
    """
    inputs, reset, input_values, input_events = batch.inputs, batch.reset, batch.input_values, batch.input_events
    n_keys = len(cfg.layers) + 1
    keys = jax.random.split(dropout_key, n_keys) if dropout_key is not None else [None] * n_keys
    x = _dropout(params["items"]["embedding"][inputs], cfg.dropout_embed, keys[0])  # [T, B, E]
    if cfg.takes_values:
        if input_values is None:
            raise ValueError("this model takes the input events' values (input_values)")
        x = jnp.concatenate([x, jnp.nan_to_num((input_values - cfg.value_mean) / cfg.value_std)[..., None]], -1)
    if cfg.event_input:
        if input_events is None:
            raise ValueError("this model takes the input events' types (input_events)")
        n_types = len(cfg.event_types)
        types = jnp.where((input_events >= 0) & (input_events < n_types), input_events, n_types)
        x = jnp.concatenate([x, params["event_embedding"][types]], axis=-1)
    if cfg.item_features:
        x = jnp.concatenate([x, pooled(params, _require(features), inputs)], axis=-1)
    new = []
    for p, c, key in zip(params["cells"], carry, keys[1:], strict=True):
        c, x = _layer(cfg, p, c, x, reset, key)
        new.append(c)
    return tuple(new), x


def _layer(
    cfg: ModelConfig, p: Params, carry: Any, x: jax.Array, reset: jax.Array, key: jax.Array | None
) -> tuple[Any, jax.Array]:
    """One layer over T steps: (its carry after the last step, <float32>[T, B, H] outputs)."""
    w_in, b_in, w_rec, b_rec = _fused_weights(cfg, p)
    projected = x @ w_in + b_in  # [T, B, gates * H]: every step's input product at once
    width = w_rec.shape[0]
    keep = _keep_mask(key, cfg.dropout_hidden, (*reset.shape, width))

    def step(c: Any, xs: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[Any, jax.Array]:
        xp, r, k = xs
        c = jax.tree.map(lambda a: jnp.where(r[:, None], 0.0, a), c)
        c, y = _cell_step(cfg, c, xp, w_rec, b_rec)
        if keep is not None:
            # As in GRU4Rec, the dropped-out output is the state carried to the next step.
            y = jnp.where(k, y / (1.0 - cfg.dropout_hidden), 0.0)
        return _with_hidden(cfg, c, y), y

    xs = (projected, reset, keep if keep is not None else jnp.zeros(reset.shape, bool))
    return jax.lax.scan(step, carry, xs, unroll=SCAN_UNROLL)


def _fused_weights(cfg: ModelConfig, p: Params) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One layer's flax parameters as (input kernel [D, G*H], input bias [G*H], recurrent kernel
    [H, G*H], recurrent bias [G*H]), the G gates side by side. For LSTM and the simple cell every
    bias adds to the pre-activation, so it goes with the input; GRU keeps its candidate gate's
    recurrent bias apart, since the reset gate multiplies it."""
    match cfg.cell:
        case "gru":
            w_in = jnp.concatenate([p[f"i{g}"]["kernel"] for g in "rzn"], axis=1)
            b_in = jnp.concatenate([p[f"i{g}"]["bias"] for g in "rzn"])
            w_rec = jnp.concatenate([p[f"h{g}"]["kernel"] for g in "rzn"], axis=1)
            zeros = jnp.zeros_like(p["hn"]["bias"])
            return w_in, b_in, w_rec, jnp.concatenate([zeros, zeros, p["hn"]["bias"]])
        case "lstm":
            w_in = jnp.concatenate([p[f"i{g}"]["kernel"] for g in "ifgo"], axis=1)
            b_in = jnp.concatenate([p[f"h{g}"]["bias"] for g in "ifgo"])
            w_rec = jnp.concatenate([p[f"h{g}"]["kernel"] for g in "ifgo"], axis=1)
            return w_in, b_in, w_rec, jnp.zeros_like(b_in)
        case "rnn":
            return p["i"]["kernel"], p["i"]["bias"], p["h"]["kernel"], jnp.zeros_like(p["i"]["bias"])


def _cell_step(
    cfg: ModelConfig, carry: Any, xp: jax.Array, w_rec: jax.Array, b_rec: jax.Array
) -> tuple[Any, jax.Array]:
    """One step of one layer from its projected input `xp` <float32>[B, G*H]: flax's GRUCell,
    OptimizedLSTMCell and SimpleCell, with the recurrent products fused into one."""
    h = _hidden_of(cfg, carry)
    hp = h @ w_rec + b_rec
    match cfg.cell:
        case "gru":
            xr, xz, xn = jnp.split(xp, 3, axis=-1)
            hr, hz, hn = jnp.split(hp, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            new = (1.0 - z) * jnp.tanh(xn + r * hn) + z * h
            return new, new
        case "lstm":
            i, f, g, o = jnp.split(xp + hp, 4, axis=-1)
            c = jax.nn.sigmoid(f) * carry[0] + jax.nn.sigmoid(i) * jnp.tanh(g)
            new = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (c, new), new
        case "rnn":
            new = jnp.tanh(xp + hp)
            return new, new


def _keep_mask(key: jax.Array | None, rate: float, shape: tuple[int, ...]) -> jax.Array | None:
    """Dropout's keep mask, each entry kept with probability 1 - rate (None when nothing is
    dropped).

    The bits are a counter hashed with the key (MurmurHash3's 32-bit finaliser, twice), not
    jax.random's generator: on CPU that cost about 7 ns an entry, 0.9 ms of a 12 ms step at
    GRU 100 x 64, where the hash costs a few integer operations an entry. A fixed key gives
    fixed masks, so training stays deterministic; entries are uncorrelated enough for dropout
    (the finaliser is a bijection with full avalanche)."""
    if key is None or rate == 0.0:
        return None
    words = jax.random.key_data(key).ravel()  # a typed key: train_step wraps raw key data
    k0, k1 = words[0].astype(jnp.uint32), words[-1].astype(jnp.uint32)
    count = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _fmix32(_fmix32(count * jnp.uint32(0x9E3779B9) + k0) ^ k1)
    return bits < jnp.uint32(min(round((1.0 - rate) * 2.0**32), 2**32 - 1))


def _fmix32(x: jax.Array) -> jax.Array:
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _require(features: Features) -> dict[str, jax.Array]:
    if features is None:
        raise ValueError("this model reads item features: pass `features`")
    return features


def pooled(params: Params, table: dict[str, jax.Array], ids: jax.Array) -> jax.Array:
    """<float32>[..., D] the feature vector of items `ids`: the mean of their categorical
    values' embeddings plus a linear map of their numeric features."""
    codes = table["codes"][ids]  # [..., M]
    emb = params["feature_embedding"]
    valid = codes >= 0
    vecs = emb[jnp.where(valid, codes, emb.shape[0] - 1)] * valid[..., None]
    out = vecs.sum(-2) / jnp.maximum(valid.sum(-1, keepdims=True), 1)
    if "feature_proj" in params:
        out = out + table["numeric"][ids] @ params["feature_proj"]
    return out


def n_items(params: Params) -> int:
    """Rows of the item tables (padded rows included when they are split over devices)."""
    return params["items"]["bias"].shape[0]


def output_layer(params: Params, cfg: ModelConfig, features: Features = None) -> tuple[jax.Array, jax.Array]:
    """(<float32>[N, H] item output weights, <float32>[N] bias); tied to the embedding by default."""
    items = params["items"]
    kernel = items["embedding"] if cfg.tied else items["kernel"]
    if cfg.feature_output:
        # Items described by features get part of their output vector from them.
        ids = jnp.arange(kernel.shape[0])
        kernel = kernel + pooled(params, _require(features), ids) @ params["feature_out"]
    return kernel, items["bias"]


def scores(params: Params, cfg: ModelConfig, hidden: jax.Array, features: Features = None) -> jax.Array:
    """<float32>[..., H] hidden states -> <float32>[..., N] scores over the full catalogue."""
    kernel, bias = output_layer(params, cfg, features)
    return hidden @ kernel.T + bias


def standardised_values(params: Params, hidden: jax.Array, items: jax.Array) -> jax.Array:
    """The value head: <float32>[...] predicted value of `items` <int32>[...] after the states
    `hidden` <float32>[..., H], in standard deviations from the training mean."""
    head = params["value_head"]
    x = jnp.concatenate([hidden, params["items"]["embedding"][items]], axis=-1)
    return (jax.nn.relu(x @ head["w1"] + head["b1"]) @ head["w2"] + head["b2"])[..., 0]


def event_logits(params: Params, hidden: jax.Array) -> jax.Array:
    """The event-type head: <float32>[..., n_types] scores of the next event's type."""
    return hidden @ params["event_head"]["w"] + params["event_head"]["b"]


def predicted_values(params: Params, cfg: ModelConfig, hidden: jax.Array, items: jax.Array) -> jax.Array:
    """The value head in the data's units."""
    return cfg.value_mean + cfg.value_std * standardised_values(params, hidden, items)


def last_hidden(cfg: ModelConfig, carry: Carry) -> jax.Array:
    return _hidden_of(cfg, carry[-1])
