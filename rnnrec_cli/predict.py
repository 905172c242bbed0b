"""Recommendations for new sequences, in the original item ids of the input.

Three outputs: the top-K after the last event of each sequence, the top-K after every event
(--every-position), or a generated continuation (--generate N: greedy, beam search or sampling).
A file input is read whole; stdin is read and answered block by block, so output flows before the
input ends (sessions must then be contiguous in the input).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from rnnrec_cli import model
from rnnrec_cli.config import ModelConfig, PrepareConfig, from_dict, load_json
from rnnrec_cli.data import (
    canonicalize,
    check_times,
    drop_consecutive_repeats,
    iter_stdin_blocks,
    materialized_inputs,
    scan_events,
    sessionize,
)
from rnnrec_cli.errors import ConfigError, DataError
from rnnrec_cli.evaluate import restore_params
from rnnrec_cli.rundir import RunDir, load_config

Strategy = Literal["greedy", "beam", "sample"]
_MIN_LEN = 8


@dataclass(frozen=True)
class PredictOptions:
    k: int = 20
    exclude_seen: bool = True
    every_position: bool = False
    fallback: bool = True
    generate: int = 0
    strategy: Strategy = "greedy"
    beams: int = 5
    temperature: float = 1.0
    # "value": the value of each event predicted from the events before it, or of candidate items.
    task: Literal["next-item", "value"] = "next-item"
    batch_size: int = 256  # sequences per jitted call
    block_rows: int = 100_000  # stdin rows per block
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.generate < 0 or self.batch_size < 1 or self.block_rows < 1:
            raise ConfigError("-k, --generate, --batch-size and --block-rows must be positive")
        if self.strategy not in ("greedy", "beam", "sample"):
            raise ConfigError(f"--strategy {self.strategy!r} is not greedy, beam or sample")
        if self.beams < 1 or self.temperature <= 0:
            raise ConfigError("--beams must be >= 1 and --temperature > 0")
        if self.task not in ("next-item", "value"):
            raise ConfigError(f"--task {self.task!r} is not next-item or value")


@dataclass
class PredictStats:
    """Counts for the stderr summary; filled while predictions stream out."""

    n_events: int = 0
    n_sequences: int = 0
    unknown_events: int = 0
    empty_sequences: int = 0
    repeated_keys: int = 0
    _emitted: set[Any] = field(default_factory=set, repr=False)


def run_prepare_config(run: RunDir, overrides: dict[str, Any]) -> PrepareConfig:
    """The column mapping and sessionization the run was trained with, plus explicit overrides."""
    manifest = load_json(run.data_manifest)
    values = {**manifest["config"], **{k: v for k, v in overrides.items() if v is not None}}
    return from_dict(PrepareConfig, values, where=str(run.data_manifest))


# ---------------------------------------------------------------------------- jitted cores


class Padded(NamedTuple):
    """A batch of sequences, right-aligned in [L, B] arrays: inputs <int32> items; reset <bool>
    True at each sequence's first event, so the padding before it never reaches the state;
    valid <bool> real events; values <float32> the events' values (NaN = unknown) and events
    <int32> their type indices (-1 = unknown), read only by models that take them."""

    inputs: jax.Array
    reset: jax.Array
    valid: jax.Array
    values: jax.Array
    events: jax.Array


def _run(params: model.Params, cfg: ModelConfig, x: Padded) -> tuple[model.Carry, jax.Array]:
    return model.run(params, cfg, model.zero_carry(cfg, x.inputs.shape[1]), x.inputs, x.reset, None, x.values, x.events)


def _seen_mask(inputs: jax.Array, valid: jax.Array, n_items: int) -> jax.Array:
    """<bool>[B, N]: items in each (left-padded) column of `inputs`."""
    batch = inputs.shape[1]
    cols = jnp.where(valid, inputs, n_items)
    rows = jnp.broadcast_to(jnp.arange(batch)[None, :], inputs.shape)
    return jnp.zeros((batch, n_items), bool).at[rows, cols].set(True, mode="drop")


def top_k_after(
    params: model.Params,
    x: Padded,
    allowed: jax.Array,
    *,
    cfg: ModelConfig,
    k: int,
    exclude_seen: bool,
) -> tuple[jax.Array, jax.Array]:
    """Top-k after each sequence: (<float32>[B, k] scores, <int32>[B, k] items).

    allowed: <bool>[N] candidate items.
    """
    carry, _ = _run(params, cfg, x)
    scores = model.scores(params, cfg, model.last_hidden(cfg, carry))
    scores = jnp.where(allowed[None, :], scores, -jnp.inf)
    if exclude_seen:
        scores = jnp.where(_seen_mask(x.inputs, x.valid, scores.shape[1]), -jnp.inf, scores)
    return jax.lax.top_k(scores, k)


def top_k_every(
    params: model.Params,
    x: Padded,
    allowed: jax.Array,
    *,
    cfg: ModelConfig,
    k: int,
    exclude_seen: bool,
) -> tuple[jax.Array, jax.Array]:
    """Top-k after every event: <float32>[L, B, k] scores, <int32>[L, B, k] items."""
    batch = x.inputs.shape[1]
    _, hidden = _run(params, cfg, x)
    kernel, bias = model.output_layer(params, cfg)
    n_items = kernel.shape[0]
    rows = jnp.arange(batch)

    def step(seen: jax.Array, xs: tuple[jax.Array, jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, tuple]:
        h, x, r, v = xs
        seen = jnp.where(r[:, None], False, seen)
        seen = seen.at[rows, jnp.where(v, x, n_items)].set(True, mode="drop")
        s = jnp.where(allowed[None, :], h @ kernel.T + bias, -jnp.inf)
        if exclude_seen:
            s = jnp.where(seen, -jnp.inf, s)
        return seen, jax.lax.top_k(s, k)

    _, (scores, items) = jax.lax.scan(step, jnp.zeros((batch, n_items), bool), (hidden, x.inputs, x.reset, x.valid))
    return scores, items


def generate(
    params: model.Params,
    x: Padded,
    allowed: jax.Array,
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
    carry, _ = _run(params, cfg, x)
    n_items = params["out_bias"].shape[0]
    blocked = ~allowed[None, :] | (_seen_mask(x.inputs, x.valid, n_items) if exclude_seen else False)
    blocked = jnp.broadcast_to(blocked, (batch, n_items))

    def log_probs(carry: model.Carry, blocked: jax.Array) -> jax.Array:
        s = model.scores(params, cfg, model.last_hidden(cfg, carry)) / temperature
        return jax.nn.log_softmax(jnp.where(blocked, -jnp.inf, s), axis=-1)

    def feed(carry: model.Carry, items: jax.Array) -> model.Carry:
        no_value, no_type = jnp.full((1, items.shape[0]), jnp.nan), jnp.full((1, items.shape[0]), -1, jnp.int32)
        step = (items[None, :], jnp.zeros((1, items.shape[0]), bool))
        carry, _ = model.run(params, cfg, carry, *step, None, no_value, no_type)
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


def values_every(params: model.Params, x: Padded, *, cfg: ModelConfig) -> jax.Array:
    """<float32>[L, B] each event's value predicted from the events before it (NaN for the
    first event of a sequence and for padding)."""
    _, hidden = _run(params, cfg, x)
    pred = model.predicted_values(params, cfg, hidden[:-1], x.inputs[1:])
    pred = jnp.where(x.valid[:-1] & x.valid[1:] & ~x.reset[1:], pred, jnp.nan)
    return jnp.concatenate([jnp.full((1, x.inputs.shape[1]), jnp.nan), pred])


def values_after(params: model.Params, x: Padded, candidates: jax.Array, *, cfg: ModelConfig) -> jax.Array:
    """<float32>[B, C] the value of each candidate item <int32>[B, C] after the whole sequence."""
    h = model.last_hidden(cfg, _run(params, cfg, x)[0])
    return model.predicted_values(
        params, cfg, jnp.broadcast_to(h[:, None, :], (*candidates.shape, h.shape[-1])), candidates
    )


_values_every = jax.jit(values_every, static_argnames=("cfg",))
_values_after = jax.jit(values_after, static_argnames=("cfg",))
_top_k_after = jax.jit(top_k_after, static_argnames=("cfg", "k", "exclude_seen"))
_top_k_every = jax.jit(top_k_every, static_argnames=("cfg", "k", "exclude_seen"))
_generate = jax.jit(generate, static_argnames=("cfg", "n_steps", "strategy", "beams", "temperature", "exclude_seen"))


# ---------------------------------------------------------------------------- batching


def _bucket(n: int) -> int:
    return max(_MIN_LEN, 1 << (n - 1).bit_length())


def _left_padded(
    seqs: Sequence[np.ndarray],
    idx: np.ndarray,
    batch: int,
    vals: Sequence[np.ndarray] | None = None,
    evs: Sequence[np.ndarray] | None = None,
) -> Padded:
    """The sequences `idx` (with their values and types when given) as a `Padded` batch."""
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
    return Padded(inputs, reset, valid, values, events)


def recommend(
    params: model.Params,
    cfg: ModelConfig,
    seqs: Sequence[np.ndarray],
    opts: PredictOptions,
    allowed: np.ndarray,
    vals: Sequence[np.ndarray] | None = None,
    evs: Sequence[np.ndarray] | None = None,
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
        x = _left_padded(seqs, idx, b, vals, evs)
        if opts.generate:
            key, sub = jax.random.split(key)
            items, scores = _generate(
                params, x, allowed, sub, cfg=cfg, n_steps=opts.generate,
                strategy=opts.strategy, beams=opts.beams, temperature=opts.temperature,
                exclude_seen=opts.exclude_seen,
            )  # fmt: skip
        elif opts.every_position:
            scores, items = _top_k_every(params, x, allowed, cfg=cfg, k=opts.k, exclude_seen=opts.exclude_seen)
        else:
            scores, items = _top_k_after(params, x, allowed, cfg=cfg, k=opts.k, exclude_seen=opts.exclude_seen)
        items, scores = np.asarray(items), np.asarray(scores)
        length = x.inputs.shape[0]
        for col, i in enumerate(idx):
            if opts.every_position:
                n = len(seqs[i])
                out[i] = (items[length - n :, col], scores[length - n :, col])
            else:
                out[i] = (items[col], scores[col])
    return out


# ---------------------------------------------------------------------------- IO shell


@dataclass(frozen=True)
class _Block:
    """The sequences of one input block: keys in input order, item index arrays, and (when the
    model reads them) value arrays and event-type index arrays."""

    keys: list
    seqs: list[np.ndarray]
    vals: list[np.ndarray] | None
    evs: list[np.ndarray] | None


def _sequences(
    df: pl.DataFrame,
    pcfg: PrepareConfig,
    vocab: pl.DataFrame,
    stats: PredictStats,
    with_values: bool = False,
    event_types: tuple[str, ...] | None = None,
) -> _Block:
    """Canonical events -> the block's sequences; a user's last session only."""
    if with_values and "value" not in df.columns:
        raise DataError(
            "this model reads each event's value, but the input has no value column; "
            "map it with --value-col (the run was trained with a value column)"
        )
    if event_types is not None and "event" not in df.columns:
        raise DataError(
            "this model reads each event's type, but the input has no event-type column; map it with --event-col"
        )
    key = "session" if pcfg.session_col is not None else "user"
    df = sessionize(df.drop_nulls(["ts", key]).lazy(), pcfg).collect()
    stats.n_events += df.height
    df = df.filter(pl.col("seq") == pl.col("seq").max().over(key))
    item = pl.col("item").cast(vocab["item_id"].dtype, strict=False)
    known = df.with_columns(item=item).join(
        vocab.select(pl.col("item_id").alias("item"), "idx"), on="item", how="inner", maintain_order="left"
    )
    stats.unknown_events += df.height - known.height
    known = known.drop("item").rename({"idx": "item"})
    if pcfg.dedupe_consecutive:
        known = drop_consecutive_repeats(known)
    cols = [pl.col("item")]
    if with_values:
        cols.append(pl.col("value").cast(pl.Float32))
    if event_types is not None:
        codes = {name: i for i, name in enumerate(event_types)}
        cols.append(pl.col("event").cast(pl.String).replace_strict(codes, default=-1, return_dtype=pl.Int32))
    order = df.group_by(key).agg(first=pl.col("_row").min()).sort("first")
    grouped = order.join(known.group_by(key).agg(*cols), on=key, how="left").sort("first")
    seqs = [np.asarray(s if s is not None else [], np.int32) for s in grouped["item"].to_list()]
    vals = evs = None
    if with_values:
        vals = [
            np.asarray([np.nan if x is None else x for x in (v or [])], np.float32) for v in grouped["value"].to_list()
        ]
    if event_types is not None:
        evs = [np.asarray([-1 if x is None else x for x in (v or [])], np.int32) for v in grouped["event"].to_list()]
    return _Block(grouped[key].to_list(), seqs, vals, evs)


def _rows(
    keys: list, results: list, opts: PredictOptions, vocab_ids: pl.Series, pop: np.ndarray, allowed: np.ndarray
) -> pl.DataFrame:
    cols: dict[str, list] = {"session_id": [], "a": [], "b": [], "item": [], "score": [], "fallback": []}
    pop_order = np.argsort(-np.where(allowed, pop, -1), kind="stable")
    for key, res in zip(keys, results, strict=True):
        if res is None:  # no known item: the most popular items, in order (rank), with no model score
            n = opts.generate or opts.k
            items, scores = pop_order[:n], np.where(allowed[pop_order[:n]], np.nan, -np.inf).astype(np.float32)
            items, scores = (items[None], scores[None]) if opts.every_position else (items, scores)
            fb = True
        else:
            (items, scores), fb = res, False
        if opts.every_position:
            for p in range(items.shape[0]):
                _extend(cols, key, p + 1, items[p], scores[p], fb)
        else:
            _extend(cols, key, None, items, scores, fb)
    n = len(cols["item"])
    names = {"a": "position", "b": "step" if opts.generate else "rank"}
    data: dict[str, Any] = {"session_id": cols["session_id"]}
    if opts.every_position:
        data["position"] = pl.Series(cols["a"], dtype=pl.Int32)
    data[names["b"]] = pl.Series(cols["b"], dtype=pl.Int32)
    data["item_id"] = vocab_ids.gather(np.asarray(cols["item"], np.int64)) if n else vocab_ids.clear()
    # A fallback row's score is empty: popularity counts are not model scores.
    data["score"] = pl.Series(cols["score"], dtype=pl.Float32).fill_nan(None)
    data["fallback"] = pl.Series(cols["fallback"], dtype=pl.Boolean)
    out = pl.DataFrame(data)
    # -inf marks items that could not be recommended (all candidates seen or excluded).
    return out.filter(pl.col("score").is_finite() | (pl.col("fallback") & pl.col("score").is_null()))


def _extend(
    cols: dict[str, list], key: Any, position: int | None, items: np.ndarray, scores: np.ndarray, fb: bool
) -> None:
    n = len(items)
    cols["session_id"].extend([key] * n)
    cols["a"].extend([position] * n)
    cols["b"].extend(range(1, n + 1))
    cols["item"].extend(items.tolist())
    cols["score"].extend(scores.tolist())
    cols["fallback"].extend([fb] * n)


def read_item_list(path: Path, vocab: pl.DataFrame) -> tuple[np.ndarray, int]:
    """<bool>[N] of the items listed in a file (one id per line, optional header); unknown count."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise DataError(f"cannot read item list {path}: {exc}") from None
    ids = pl.Series("item_id", lines).cast(vocab["item_id"].dtype, strict=False)
    if lines and ids[0] is None and lines[0].lower() in ("item", "item_id", "itemid", "id"):
        ids, lines = ids[1:], lines[1:]
    found = vocab.join(pl.DataFrame({"item_id": ids}).drop_nulls(), on="item_id", how="semi")["idx"].to_numpy()
    mask = np.zeros(vocab.height, bool)
    mask[found] = True
    return mask, len(lines) - int(mask.sum())


def predict(
    run: RunDir,
    inputs: Sequence[str],
    opts: PredictOptions,
    stats: PredictStats,
    *,
    include: Path | None = None,
    exclude: Path | None = None,
    candidates_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield recommendation rows block by block (see the module docstring for the three modes)."""
    cfg = load_config(run)
    pcfg = run_prepare_config(run, overrides or {})
    vocab = pl.read_parquet(run.items).sort("idx")
    if opts.generate == 0 and opts.k > cfg.n_items:
        raise DataError(f"-k {opts.k} is larger than the catalogue ({cfg.n_items} items); lower -k")
    allowed = np.ones(cfg.n_items, bool)
    if include is not None:
        allowed, _ = read_item_list(include, vocab)
        if not allowed.any():
            raise DataError(f"no item in {include} is known to the model; check the ids")
    if exclude is not None:
        allowed &= ~read_item_list(exclude, vocab)[0]
    params = restore_params(run, cfg)
    pop = vocab["count"].to_numpy()
    takes_values = cfg.model.takes_values
    types = cfg.model.event_types if cfg.model.event_input else None
    candidates = None
    if opts.task == "value":
        if not cfg.model.predicts_values:
            raise DataError(f"{run.path} has no value head; train one with `rnnrec train DATA --task value`")
        if candidates_file is not None:
            candidates = read_candidates(candidates_file, vocab, stats)
    elif not cfg.model.predicts_items:
        raise DataError(f"{run.path} predicts values only; use `rnnrec predict --task value`")
    for df, pc in _canonical_blocks(inputs, pcfg, opts):
        block = _sequences(df, pc, vocab, stats, takes_values or opts.task == "value", types)
        keys, seqs, vals, evs = block.keys, block.seqs, block.vals, block.evs
        repeated = [k for k in keys if k in stats._emitted]
        stats.repeated_keys += len(repeated)
        stats._emitted.update(keys)
        stats.n_sequences += len(keys)
        nonempty = [i for i, s in enumerate(seqs) if len(s)]
        stats.empty_sequences += len(seqs) - len(nonempty)
        if opts.task == "value":
            yield _value_rows(params, cfg.model, block, nonempty, opts, vocab["item_id"], candidates)
            continue
        results: list[Any] = [None] * len(seqs)
        if nonempty:
            sub_vals = [vals[i] for i in nonempty] if vals is not None else None
            sub_evs = [evs[i] for i in nonempty] if evs is not None else None
            recs = recommend(params, cfg.model, [seqs[i] for i in nonempty], opts, allowed, sub_vals, sub_evs)
            for i, r in zip(nonempty, recs, strict=True):
                results[i] = r
        if not opts.fallback:
            keep = [i for i in range(len(seqs)) if results[i] is not None]
            keys, results = [keys[i] for i in keep], [results[i] for i in keep]
        yield _rows(keys, results, opts, vocab["item_id"], pop, allowed)


def read_candidates(path: Path, vocab: pl.DataFrame, stats: PredictStats) -> dict[str, np.ndarray]:
    """(sequence key, item id) pairs from a CSV with a header -> {key as text: item indices};
    pairs with items unknown to the model are skipped and counted."""
    try:
        df = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read candidates {path}: {str(exc).splitlines()[0]}") from None
    if df.width < 2:
        raise DataError(f"{path} needs two columns: the session (or user) id and the item id, with a header")
    pairs = df.select(pl.col(df.columns[0]).alias("key"), pl.col(df.columns[1]).alias("item_id"))
    ids = vocab.select(pl.col("item_id").cast(pl.String), "idx")
    known = pairs.join(ids, on="item_id", how="inner", maintain_order="left")
    stats.unknown_events += pairs.height - known.height
    return {k: g["idx"].to_numpy() for (k,), g in known.group_by("key", maintain_order=True)}


def _value_rows(
    params: model.Params,
    cfg: ModelConfig,
    block: _Block,
    nonempty: list[int],
    opts: PredictOptions,
    vocab_ids: pl.Series,
    candidates: dict[str, np.ndarray] | None,
) -> pl.DataFrame:
    """Without candidates: session_id, position, item_id, value, predicted_value for every
    event (its value predicted from the events before it). With candidates: session_id,
    item_id, predicted_value for each candidate after the whole session."""
    keys, seqs, vals = block.keys, block.seqs, block.vals
    assert vals is not None
    out: dict[str, list] = {"session_id": [], "position": [], "item": [], "value": [], "predicted_value": []}
    order = sorted(nonempty, key=lambda i: len(seqs[i]))
    b = opts.batch_size
    for lo in range(0, len(order), b):
        idx = np.asarray(order[lo : lo + b])
        x = _left_padded(seqs, idx, b, vals, block.evs)
        length = x.inputs.shape[0]
        if candidates is None:
            pred = np.asarray(_values_every(params, x, cfg=cfg))
            for col, i in enumerate(idx):
                n = len(seqs[i])
                out["session_id"].extend([keys[i]] * n)
                out["position"].extend(range(1, n + 1))
                out["item"].extend(seqs[i].tolist())
                out["value"].extend(vals[i].tolist())
                out["predicted_value"].extend(pred[length - n :, col].tolist())
            continue
        cands = [candidates.get(str(keys[i]), np.zeros(0, np.int32)) for i in idx]
        width = max(1, max(len(c) for c in cands))
        grid = np.zeros((b, width), np.int32)
        for col, c in enumerate(cands):
            grid[col, : len(c)] = c
        pred = np.asarray(_values_after(params, x, grid, cfg=cfg))
        for col, (i, c) in enumerate(zip(idx, cands, strict=True)):
            out["session_id"].extend([keys[i]] * len(c))
            out["item"].extend(c.tolist())
            out["predicted_value"].extend(pred[col, : len(c)].tolist())
    item_ids = vocab_ids.gather(np.asarray(out["item"], np.int64)) if out["item"] else vocab_ids.clear()
    data: dict[str, Any] = {"session_id": out["session_id"]}
    if candidates is None:
        data["position"] = pl.Series(out["position"], dtype=pl.Int32)
    data["item_id"] = item_ids
    if candidates is None:
        data["value"] = pl.Series(out["value"], dtype=pl.Float32).fill_nan(None)
    data["predicted_value"] = pl.Series(out["predicted_value"], dtype=pl.Float32).fill_nan(None)
    return pl.DataFrame(data)


def _canonical_blocks(
    inputs: Sequence[str], pcfg: PrepareConfig, opts: PredictOptions
) -> Iterator[tuple[pl.DataFrame, PrepareConfig]]:
    """Files: one block with everything. stdin: blocks as they arrive; the rows of the last
    sequence key of a block wait for the next block, so a contiguous session is never split."""
    if list(inputs) != ["-"]:
        if "-" in inputs:
            raise DataError("give either files or '-' (stdin), not both")
        with materialized_inputs(inputs) as paths:
            lf, pc = scan_events(paths, pcfg, time_optional=True)
            yield check_times(lf.collect(), pc), pc
        return
    key = "session" if pcfg.session_col is not None else "user"
    carry: pl.DataFrame | None = None
    offset = 0
    for raw in iter_stdin_blocks(pcfg, opts.block_rows):
        lf, pc = canonicalize(raw.lazy(), pcfg, "stdin", time_optional=True)
        df = check_times(lf.collect(), pc).with_columns(pl.col("_row") + offset)
        if pc.time_col is None:
            # Row order is the time: count rows across blocks, so a carried session stays first.
            df = df.with_columns(ts=pl.from_epoch(pl.col("_row").cast(pl.Int64), time_unit="us"))
        offset += raw.height
        if carry is not None:
            df = pl.concat([carry, df], how="vertical_relaxed")
        last = df[key][-1]
        carry = df.filter(pl.col(key) == last)
        ready = df.filter(pl.col(key) != last)
        if ready.height:
            yield ready, pc
    if carry is not None and carry.height:
        yield carry, pc
