"""predict's IO shell: input sequences in, rows in the original item ids out (recommend.py
holds the jitted cores).

Three outputs: the top-K after the last event of each sequence, the top-K after every event
(--every-position), or a generated continuation (--generate N: greedy, beam search or sampling).
A file input is read whole; stdin is read and answered block by block, so output flows before the
input ends (sessions must then be contiguous in the input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rnnrec_cli import compiled
from rnnrec_cli.config import ModelConfig, PrepareConfig
from rnnrec_cli.data.columns import NO_COLUMN, canonicalize, check_times
from rnnrec_cli.data.ingest import iter_stdin_blocks, materialized_inputs, read_failure, scan_events
from rnnrec_cli.data.sequences import check_manifest
from rnnrec_cli.data.transforms import drop_consecutive_repeats, sessionize
from rnnrec_cli.errors import ConfigError, DataError, OptionError
from rnnrec_cli.evaluation.recommend import left_padded, recommend, values_after_jit, values_every_jit
from rnnrec_cli.evaluation.repeat_fit import read_choice
from rnnrec_cli.files import load_json
from rnnrec_cli.model import network
from rnnrec_cli.model.weights import restore_model
from rnnrec_cli.options import PredictOptions
from rnnrec_cli.rundir import RunDir, check_pinned, load_config, read_vocabulary
from rnnrec_cli.validation import check_types, from_dict


@dataclass
class PredictStats:
    """Counts for the stderr summary; filled while predictions stream out."""

    n_events: int = 0
    n_sequences: int = 0
    unknown_events: int = 0
    empty_sequences: int = 0
    repeated_keys: int = 0
    # The repeat boost's weight the lists were made with (0 = none).
    repeat: float = 0.0
    # CSV cells (ids) that start like a spreadsheet formula; quoted when `safe_csv`.
    formula_cells: int = 0
    # Lists with fewer recommendations than asked (-k, or --generate steps).
    short_lists: int = 0
    _emitted: set[Any] = field(default_factory=set, repr=False)


def run_prepare_config(run: RunDir, overrides: dict[str, Any], unset: Collection[str] = ()) -> PrepareConfig:
    """The column mapping and sessionization the run was trained with, plus explicit overrides;
    the fields in `unset` go back to None (e.g. columns that input held in memory lacks)."""
    manifest = check_manifest(load_json(run.data_manifest), run.data_manifest)
    stored = from_dict(PrepareConfig, manifest["config"], where=str(run.data_manifest))
    values = {k: v for k, v in overrides.items() if v is not None} | dict.fromkeys(unset)
    if overrides.get("header") and not stored.header:
        values["columns"] = ()  # --header on a run prepared without one: the input's header names its columns
    if overrides.get("columns") and values.get("header", stored.header):
        # (A preset's run may keep --columns for its header-less variant: prepare's check lets it pass.)
        raise OptionError("--columns names the columns of input without a header row; add --no-header")
    # Histories to predict from have no split: a split column of the training log is not needed.
    values["split_col"] = NO_COLUMN
    unit = manifest.get("recognised", {}).get("time_unit", {})
    if isinstance(unit, dict) and unit.get("how") == "guessed from the magnitude":
        # Guessed for the training data, so guessed (and checked for mixed units) again here.
        values["time_unit"] = "auto"
    # The stored config is valid (checked above): what is refused now is an option's value.
    try:
        check_types(PrepareConfig, values, "options")
        return dataclasses.replace(stored, **values)
    except ConfigError as exc:
        raise OptionError(str(exc)) from None


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


def _short_lists(rows: pl.DataFrame, n_keys: int, opts: PredictOptions) -> int:
    """Lists (per sequence, or per position) with fewer rows than asked: every other item was
    seen, excluded or not among the allowed ones."""
    want = opts.generate or opts.k
    by = ["session_id", "position"] if opts.every_position else ["session_id"]
    counts = rows.group_by(by).len()
    short = int((counts["len"] < want).sum())
    return short if opts.every_position else short + max(n_keys - counts.height, 0)


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


def check_catalogue(opts: PredictOptions, n_items: int) -> None:
    """Lists and beams longer than the catalogue cannot be filled (JAX's top-k needs k <= items)."""
    if opts.generate == 0 and opts.k > n_items:
        raise OptionError(f"-k {opts.k} is larger than the catalogue ({n_items} items); use -k {n_items} or less")
    if opts.generate and opts.strategy == "beam" and opts.beams > n_items:
        raise OptionError(
            f"--beams {opts.beams} is larger than the catalogue ({n_items} items); use --beams {n_items} or less"
        )


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
    unset: Collection[str] = (),
) -> Iterator[pl.DataFrame]:
    """Yield recommendation rows block by block (see the module docstring for the three modes)."""
    # Once, not per block: the blocks reuse a bounded set of programs (bucketed lengths).
    compiled.make_room()
    cfg = load_config(run)
    pcfg = run_prepare_config(run, overrides or {}, unset)
    vocab = read_vocabulary(run, cfg.n_items)
    check_catalogue(opts, cfg.n_items)
    allowed = np.ones(cfg.n_items, bool)
    if include is not None:
        allowed, _ = read_item_list(include, vocab)
        if not allowed.any():
            raise DataError(f"no item in {include} is known to the model; check the ids")
    if exclude is not None:
        allowed &= ~read_item_list(exclude, vocab)[0]
    params, features, _ = restore_model(run, cfg)
    check_pinned(run)  # the vocabulary and the weights above are the same run's
    if opts.repeat == "run":
        # The weight training chose, for the lists it was chosen for: the session's own items kept.
        applies = not opts.exclude_seen and not opts.generate and opts.task == "next-item"
        choice = read_choice(run.path) if applies and cfg.model.predicts_items else None
        opts = dataclasses.replace(opts, repeat=float(choice["weight"]) if choice else 0.0)
    stats.repeat = float(opts.repeat)
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
            yield _value_rows(params, cfg.model, block, nonempty, opts, vocab["item_id"], candidates, features)
            continue
        results: list[Any] = [None] * len(seqs)
        if nonempty:
            sub_vals = [vals[i] for i in nonempty] if vals is not None else None
            sub_evs = [evs[i] for i in nonempty] if evs is not None else None
            recs = recommend(params, cfg.model, [seqs[i] for i in nonempty], opts, allowed, sub_vals, sub_evs, features)
            for i, r in zip(nonempty, recs, strict=True):
                results[i] = r
        if not opts.fallback:
            keep = [i for i in range(len(seqs)) if results[i] is not None]
            keys, results = [keys[i] for i in keep], [results[i] for i in keep]
        rows = _rows(keys, results, opts, vocab["item_id"], pop, allowed)
        stats.short_lists += _short_lists(rows, len(keys), opts)
        yield rows


def read_candidates(path: Path, vocab: pl.DataFrame, stats: PredictStats) -> dict[str, np.ndarray]:
    """(sequence key, item id) pairs from a CSV with a header -> {key as text: item indices};
    pairs with items unknown to the model are skipped and counted."""
    try:
        df = pl.read_csv(path, infer_schema=False, glob=False)
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
    params: network.Params,
    cfg: ModelConfig,
    block: _Block,
    nonempty: list[int],
    opts: PredictOptions,
    vocab_ids: pl.Series,
    candidates: dict[str, np.ndarray] | None,
    features: dict[str, np.ndarray] | None,
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
        x = left_padded(seqs, idx, b, vals, block.evs)
        length = x.inputs.shape[0]
        if candidates is None:
            pred = np.asarray(values_every_jit(params, x, features, cfg=cfg))
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
        pred = np.asarray(values_after_jit(params, x, grid, features, cfg=cfg))
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
        with materialized_inputs(inputs, pcfg.encoding) as paths:
            lf, pc = scan_events(paths, pcfg, time_optional=True)
            try:
                df = lf.collect()
            except pl.exceptions.PolarsError as exc:
                raise read_failure(exc, paths) from None
            yield check_times(df, pc), pc
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
