"""Item side features: attributes joined to the catalogue by `prepare`, fed to the model beside
the item embedding (and optionally into the output item vectors).

Stored per data directory as item_features.parquet, one row per item index: `codes` (the item's
categorical values, e.g. its genres, as indices into one shared vocabulary) and `numeric`
(standardised numbers and dense vectors made elsewhere, e.g. text or image embeddings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rnnrec_cli.errors import DataError

ITEM_FEATURES = "item_features.parquet"
# A text column with more distinct values than this is an identifier or free text (a title), not
# a category, and is left out unless named with --item-categorical.
MAX_AUTO_CATEGORIES = 1000


def _read_table(path: Path) -> pl.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path, glob=False)
        return pl.read_csv(
            path, separator="\t" if path.suffix in (".tsv", ".tab") else ",", infer_schema_length=10000, glob=False
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read item features {path}: {str(exc).strip().splitlines()[0]}") from None


def build_item_features(
    path: Path,
    key: str,
    items: pl.DataFrame,
    *,
    categorical: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
    vector: str | None = None,
    sep: str = "|",
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Join the attributes in `path` (keyed by `key`, the item id) to the catalogue `items`
    (idx, item_id). Without explicit columns: text columns are categorical (multi-valued when
    they contain `sep`) if they have at most MAX_AUTO_CATEGORIES values, numeric columns numeric,
    list columns dense vectors. Returns (the per-index table, a spec for the manifest)."""
    table = _read_table(path)
    if key not in table.columns:
        raise DataError(f"{path} has no column {key!r} (found: {', '.join(table.columns)}); pass --item-key")
    for col in (*categorical, *numeric, *([vector] if vector else [])):
        if col not in table.columns:
            raise DataError(f"{path} has no column {col!r} (found: {', '.join(table.columns)})")
    skipped: list[str] = []
    if not (categorical or numeric or vector):
        cats, nums, vecs = [], [], []
        for col, dtype in table.schema.items():
            if col == key:
                continue
            if dtype.is_numeric():
                nums.append(col)
            elif isinstance(dtype, pl.List | pl.Array):
                vecs.append(col)
            elif dtype == pl.String and _n_categories(table[col], sep) <= MAX_AUTO_CATEGORIES:
                cats.append(col)
            else:
                skipped.append(col)
        categorical, numeric, vector = tuple(cats), tuple(nums), (vecs[0] if vecs else None)
        skipped += vecs[1:]
    if not (categorical or numeric or vector):
        raise DataError(f"{path}: no usable feature column; name them with --item-categorical/--item-numeric")
    ids = items.select("idx", pl.col("item_id").cast(pl.String).alias("_key"))
    table = table.with_columns(pl.col(key).cast(pl.String).alias("_key")).unique("_key", keep="first")
    joined = ids.join(table, on="_key", how="left", maintain_order="left").sort("idx")
    has = joined["_key"].is_in(table["_key"].implode())
    spec: dict[str, Any] = {"file": str(path.resolve()), "key": key, "categorical": [], "numeric": [], "vector": None}
    code_lists: list[pl.Series] = []
    offset = 0
    for col in categorical:
        values = joined[col].cast(pl.String).str.split(sep).list.eval(pl.element().str.strip_chars()).list.drop_nulls()
        vocab = sorted({v for vs in values.to_list() if vs for v in vs if v})
        lookup = {v: offset + i for i, v in enumerate(vocab)}
        code_lists.append(values.list.eval(pl.element().replace_strict(lookup, default=None, return_dtype=pl.Int32)))
        spec["categorical"].append({"column": col, "values": len(vocab), "offset": offset})
        offset += len(vocab)
    columns: list[np.ndarray] = []
    for col in numeric:
        x = joined[col].cast(pl.Float64).to_numpy()
        finite = np.isfinite(x)
        mean = float(x[finite].mean()) if finite.any() else 0.0
        std = float(x[finite].std()) if finite.any() else 1.0
        std = std if std > 0 else 1.0
        columns.append(np.where(finite, (x - mean) / std, 0.0))
        spec["numeric"].append({"column": col, "mean": mean, "std": std})
    if vector:
        rows = joined[vector].to_list()
        dim = max((len(r) for r in rows if r is not None), default=0)
        mat = np.zeros((len(rows), dim))
        for i, r in enumerate(rows):
            if r is not None and len(r) == dim:
                mat[i] = r
        columns.extend(mat.T)
        spec["vector"] = {"column": vector, "dim": dim}
    codes = [
        [c for part in parts for c in (part or []) if c is not None]
        for parts in zip(*(s.to_list() for s in code_lists), strict=True)
    ] if code_lists else [[] for _ in range(joined.height)]  # fmt: skip
    numeric_rows = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((joined.height, 0), np.float32)
    out = pl.DataFrame(
        {
            "idx": joined["idx"],
            "codes": pl.Series(codes, dtype=pl.List(pl.Int32)),
            "numeric": pl.Series(list(numeric_rows), dtype=pl.List(pl.Float32)),
            "has_features": has,
        }
    )
    spec.update(
        n_codes=offset,
        n_numeric=numeric_rows.shape[1],
        items_with_features=int(has.sum()),
        skipped_columns=skipped,
    )
    return out, spec


def _n_categories(col: pl.Series, sep: str) -> int:
    return col.drop_nulls().str.split(sep).explode().str.strip_chars().n_unique()


def read_item_features(directory: Path) -> dict[str, np.ndarray] | None:
    """{"codes": <int32>[N, M] (-1 pads), "numeric": <float32>[N, K]} from a data or run
    directory, or None when it has no item features."""
    path = directory / ITEM_FEATURES
    if not path.is_file():
        return None
    df = pl.read_parquet(path, glob=False).sort("idx")
    lists = df["codes"].to_list()
    width = max(1, max((len(c) for c in lists), default=0))
    codes = np.full((len(lists), width), -1, np.int32)
    for i, c in enumerate(lists):
        codes[i, : len(c)] = c
    rows = df["numeric"].to_list()
    numeric = np.asarray(rows, np.float32).reshape(df.height, len(rows[0]) if rows else 0)
    return {"codes": codes, "numeric": numeric}
