"""Item side features: joining attributes to the catalogue, and models that read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.data.features import build_item_features, read_item_features
from rnnrec_cli.errors import DataError

from .conftest import cli_ok

runner = CliRunner()
TINY = ["--layers", "32", "--epochs", "3", "--batch-size", "16", "--bptt", "4", "-q"]

_ok = cli_ok


def test_features_are_detected_encoded_and_aligned(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "sku,title,tags,price\n"
        "10,Red shoe,shoes|red,20\n"
        "11,Blue shoe,shoes| blue,40\n"
        "12,Red hat,hats|red,\n"
        "99,Not in catalogue,hats,10\n"
    )
    items = pl.DataFrame({"idx": [0, 1, 2, 3], "item_id": [11, 10, 12, 13]})
    _, spec = build_item_features(path, "sku", items)
    # Automatic: text columns with few values are categories (a title too, in a file this small).
    assert [c["column"] for c in spec["categorical"]] == ["title", "tags"]
    assert [c["column"] for c in spec["numeric"]] == ["price"]
    table, spec = build_item_features(path, "sku", items, categorical=("tags",), numeric=("price",))
    assert spec["n_codes"] == 4 and spec["n_numeric"] == 1 and spec["items_with_features"] == 3
    vocab = ["blue", "hats", "red", "shoes"]  # sorted; offsets start at 0
    codes = [sorted(vocab[c] for c in row) for row in table["codes"].to_list()]
    assert codes == [["blue", "shoes"], ["red", "shoes"], ["hats", "red"], []]
    price = np.array([r[0] for r in table["numeric"].to_list()])
    # Standardised over the catalogue's known prices (40, 20); missing ones read as the mean (0).
    np.testing.assert_allclose(price, [1.0, -1.0, 0.0, 0.0], rtol=1e-5)
    assert table["has_features"].to_list() == [True, True, True, False]
    with pytest.raises(DataError, match="no column 'id'"):
        build_item_features(path, "id", items)


def test_dense_vectors_from_parquet(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    pl.DataFrame({"item_id": [1, 2], "emb": [[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]]}).write_parquet(path)
    items = pl.DataFrame({"idx": [0, 1], "item_id": [2, 1]})
    table, spec = build_item_features(path, "item_id", items)
    assert spec["vector"] == {"column": "emb", "dim": 3} and spec["n_codes"] == 0
    table.write_parquet(tmp_path / "item_features.parquet")
    got = read_item_features(tmp_path)
    assert got is not None and got["numeric"].shape == (2, 3) and got["codes"].shape[0] == 2
    np.testing.assert_allclose(got["numeric"][1], [0.5, -1.0, 2.0])


def _category_log(tmp: Path, n_items: int = 60, n_cats: int = 6) -> tuple[Path, Path]:
    """Sessions that stay inside one category; item ids scattered over categories."""
    rng = np.random.default_rng(0)
    cat = rng.integers(0, n_cats, n_items)
    rows, t = [], 1_700_000_000
    for u in range(120):
        c = int(rng.integers(n_cats))
        members = np.flatnonzero(cat == c)
        for _ in range(int(rng.integers(4, 9))):
            rows.append((f"u{u}", int(rng.choice(members)), t))
            t += 60
        t += 7200
    log = tmp / "events.csv"
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").write_csv(log)
    feats = tmp / "items.csv"
    pl.DataFrame({"item_id": np.arange(n_items), "category": [f"c{c}" for c in cat]}).write_csv(feats)
    return log, feats


@pytest.mark.slow
def test_models_with_item_features_end_to_end(tmp_path: Path) -> None:
    log, feats = _category_log(tmp_path)
    data = tmp_path / "data"
    _ok(
        ["prepare", str(log), "-o", str(data), "--item-features", str(feats), "--split", "time:0.2",
         "--valid", "0.1", "--min-item-support", "1", "-q"]
    )  # fmt: skip
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["item_features"]["categorical"][0]["column"] == "category"
    run = tmp_path / "run"
    _ok(["train", str(data), "-o", str(run), "--feature-output", *TINY])
    cfg = json.loads((run / "config.json").read_text())["model"]
    assert cfg["item_features"] and cfg["feature_output"] and cfg["feature_codes"] == 6
    assert (run / "item_features.parquet").is_file()
    result = json.loads(_ok(["evaluate", str(run), "--json", "-q", "--baselines", "pop"]))
    assert result["metrics"]["recall@20"] > result["baselines"]["pop"]["recall@20"]
    recs = pl.read_csv(_ok(["predict", str(run), str(log), "-k", "3", "-q"]).encode())
    assert recs.height == 3 * recs["session_id"].n_unique()

    plain = tmp_path / "plain"
    _ok(["train", str(data), "-o", str(plain), "--no-item-features", *TINY])
    assert not json.loads((plain / "config.json").read_text())["model"]["item_features"]


def test_feature_options_need_features(tmp_path: Path) -> None:
    log, _ = _category_log(tmp_path)
    data = tmp_path / "data"
    _ok(["prepare", str(log), "-o", str(data), "--split", "time:0.2", "--valid", "0.1", "-q"])
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), "--item-features", *TINY])
    assert res.exit_code == 1 and "--item-features FILE" in res.output
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), "--feature-output", *TINY])
    assert res.exit_code != 0 and "--feature-output needs item features" in res.output
