import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.data.columns import check_times, resolve_columns
from rnnrec_cli.data.ingest import RECBOLE_TYPES, scan_events, sniff_separator, untyped_names
from rnnrec_cli.data.prepare import prepare
from rnnrec_cli.data.sequences import read_items, read_sequences, scored_mask
from rnnrec_cli.data.splits import build_splits, filter_until_stable
from rnnrec_cli.data.transforms import (
    cutoff,
    drop_consecutive_repeats,
    encode,
    item_table,
    sessionize,
    split_at_cutoff,
    split_by_time,
)
from rnnrec_cli.errors import DataError, RunDirError

from .conftest import REPO, cli_ok, synthetic_log


def _events(rows: list[tuple], cols: tuple[str, ...] = ("user", "item", "ts")) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=list(cols), orient="row")
    return df.with_columns(pl.from_epoch("ts", time_unit="s").cast(pl.Datetime("us"))).with_row_index("_row")


def test_sessionize_by_gap_and_whole_user() -> None:
    df = _events([("a", 1, 0), ("a", 2, 60), ("a", 3, 10_000), ("b", 1, 30), ("b", 2, 50)])
    gap = sessionize(df.lazy(), PrepareConfig(user_col="user", session_gap=1800)).collect()
    assert gap["seq"].to_list() == [1, 1, 2, 3, 3]
    whole = sessionize(df.lazy(), PrepareConfig(user_col="user", session_gap=None)).collect()
    assert whole["seq"].to_list() == [1, 1, 1, 2, 2]


def test_sessionize_breaks_time_ties_by_row_order() -> None:
    df = _events([("a", 5, 100), ("a", 6, 100), ("a", 7, 100)])
    out = sessionize(df.lazy(), PrepareConfig(user_col="user")).collect()
    assert out["item"].to_list() == [5, 6, 7]


def test_drop_consecutive_repeats_respects_sequence_boundaries() -> None:
    df = pl.DataFrame({"seq": [1, 1, 1, 2, 2], "item": [4, 4, 5, 5, 5]})
    assert drop_consecutive_repeats(df)["item"].to_list() == [4, 5, 5]


def test_filter_iterates_until_stable_and_counts_support_across_parts(tmp_path: Path) -> None:
    # Items 3 and 9 appear once: dropping them leaves sequence 2 empty. Items 1 and 2 reach a
    # support of 2 only when both parts are counted; with 3 they drop in round two.
    parts = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    pl.DataFrame({"seq": [1, 1, 2, 2], "item": [1, 2, 3, 9]}).write_parquet(parts[0])
    pl.DataFrame({"seq": [3, 3], "item": [1, 2]}).write_parquet(parts[1])
    rounds = filter_until_stable(parts, PrepareConfig(min_item_support=2))
    assert pl.read_parquet(parts)["item"].to_list() == [1, 2, 1, 2]
    assert rounds == 1
    assert filter_until_stable(parts, PrepareConfig(min_item_support=3)) == 1
    assert pl.read_parquet(parts).is_empty()


def test_split_moves_whole_sequences_by_last_event() -> None:
    df = pl.DataFrame(
        {
            "seq": [1, 1, 2, 2, 3, 3],
            "item": [1, 2, 1, 2, 1, 2],
            "ts": [datetime(2024, 1, d) for d in (1, 2, 3, 9, 8, 9)],
        }
    )
    cfg = PrepareConfig(user_col="u", split="time:2d")
    before, after = split_by_time(df, cfg.test_period)
    assert sorted(after["seq"].unique().to_list()) == [2, 3]
    assert before["seq"].unique().to_list() == [1]


def test_sniff_separator(tmp_path: Path) -> None:
    for sep in (",", "\t", ";"):
        p = tmp_path / "x.csv"
        p.write_text(sep.join(["a", "b", "c"]) + "\n" + sep.join(["1", "2", "3"]) + "\n")
        assert sniff_separator(p) == sep


def test_column_guessing_and_missing_column_message() -> None:
    cfg = resolve_columns(PrepareConfig(), ["SessionId", "ItemId", "Time"], "x.tsv")
    assert (cfg.session_col, cfg.item_col, cfg.time_col) == ("SessionId", "ItemId", "Time")
    with pytest.raises(DataError, match=r"column 'product' not in x.csv \(found: user, thing, ts\)\. Pass --item-col"):
        resolve_columns(PrepareConfig(item_col="product"), ["user", "thing", "ts"], "x.csv")
    with pytest.raises(DataError, match=r"no item column found in x\.csv"):
        resolve_columns(PrepareConfig(), ["user", "thing", "ts"], "x.csv")


def test_time_units_detected(tmp_path: Path) -> None:
    for scale, unit in ((1, "s"), (1000, "ms"), (1_000_000, "us")):
        p = tmp_path / f"t{unit}.csv"
        pl.DataFrame(
            {"user_id": [1, 1], "item_id": [1, 2], "ts": [1_700_000_000 * scale, 1_700_000_060 * scale]}
        ).write_csv(p)
        lf, _ = scan_events([p], PrepareConfig())
        assert lf.collect()["ts"].to_list() == [datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 22, 14, 20)]


def test_iso_strings_and_tab_separator(tmp_path: Path) -> None:
    p = tmp_path / "e.tsv"
    p.write_text("SessionId\tItemId\tTime\ns1\tA\t2024-05-01T10:00:00\ns1\tB\t2024-05-01T10:01:00Z\n")
    lf, cfg = scan_events([p], PrepareConfig())
    df = lf.collect()
    assert cfg.session_col == "SessionId"
    assert df["ts"].to_list() == [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 10, 1)]


def test_prepare_writes_data_dir_and_refuses_overwrite(log_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = prepare([str(log_csv)], out, PrepareConfig(split="time:0.2", valid="0.2"))
    assert {p.name for p in out.iterdir()} == {
        "train.parquet",
        "valid.parquet",
        "test.parquet",
        "items.parquet",
        "manifest.json",
    }
    m = result
    assert m["config"]["user_col"] == "user_id" and m["inputs"][0]["sha256"]
    assert m["splits"]["test"]["events"] > 0 and m["splits"]["valid"]["events"] > 0
    items = read_items(out)
    assert items["idx"].to_list() == list(range(items.height))
    assert items["count"].is_sorted(descending=True)
    for split in ("train", "valid", "test"):
        seqs = read_sequences(out, split)
        assert seqs.items.max() < items.height
        assert (seqs.lengths >= 2).all()
    with pytest.raises(RunDirError, match="already exists; pass --force"):
        prepare([str(log_csv)], out, PrepareConfig())
    prepare([str(log_csv)], out, PrepareConfig(split="time:0.3"), force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]  # no temp dirs left


def test_prepare_fails_cleanly_when_nothing_survives(log_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    with pytest.raises(DataError, match="no events left after filtering"):
        prepare([str(log_csv)], out, PrepareConfig(min_item_support=10_000))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [log_csv]


def test_movielens_preset_on_bundled_data(tmp_path: Path) -> None:
    from rnnrec_cli.data.presets import PRESETS

    src = pl.read_csv(REPO / "datasets/ml-latest-small/ratings.csv", n_rows=20000)
    p = tmp_path / "ratings.csv"
    src.write_csv(p)
    result = prepare([str(p)], tmp_path / "ml", PrepareConfig(preset="movielens", **PRESETS["movielens"]))
    assert result["stages"]["events_read"] == 20000
    assert result["splits"]["test"]["sequences"] > 0


def test_otto_preset_on_bundled_sample(tmp_path: Path) -> None:
    from rnnrec_cli.data.presets import PRESETS

    cfg = PrepareConfig(
        **{**PRESETS["otto"], "min_item_support": 1, "split": "time:0.2", "valid": "0", "allow_tiny_test": True}
    )
    lf, resolved = scan_events([REPO / "datasets/otto-sample/train.jsonl"], cfg)
    df = lf.collect()
    assert set(df["event"].unique()) == {"clicks", "carts", "orders"}
    assert df["session"].n_unique() == 20
    items, _ = build_splits(lf, resolved, out=tmp_path)
    assert pl.read_parquet(tmp_path / "test.parquet").height > 0 and items.height > 0


# ------------------------------------------------------------------ property tests

_rows = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 6), st.integers(0, 20_000)),
    min_size=1,
    max_size=60,
)


@settings(deadline=None, max_examples=60)
@given(_rows, st.sampled_from([None, 600.0, 3600.0]))
def test_sessionize_keeps_every_event_once_in_time_order(rows: list[tuple], gap: float | None) -> None:
    df = _events(rows)
    out = sessionize(df.lazy(), PrepareConfig(user_col="user", session_gap=gap)).collect()
    assert sorted(out["_row"].to_list()) == list(range(len(rows)))
    for _, g in out.group_by("seq"):
        assert g["ts"].is_sorted() and g["user"].n_unique() == 1
    if gap is not None:
        gaps = out.group_by("seq").agg(d=pl.col("ts").diff().max())
        assert all(d is None or d.total_seconds() <= gap for d in gaps["d"].to_list())


@settings(deadline=None, max_examples=60)
@given(_rows, st.sampled_from(["time:3000s", "time:0.3", "time:1d"]))
def test_split_never_lets_a_sequence_straddle_the_boundary(rows: list[tuple], split: str) -> None:
    df = sessionize(_events(rows).lazy(), PrepareConfig(user_col="user", session_gap=3600)).collect()
    period = PrepareConfig(split=split).test_period
    before, after = split_by_time(df, period)
    assert before.height + after.height == df.height
    assert not set(before["seq"]) & set(after["seq"])
    if before.height and after.height:
        # Every training sequence ended before every test sequence's last event.
        assert before["ts"].max() < after.group_by("seq").agg(pl.col("ts").max())["ts"].min()


@settings(deadline=None, max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.one_of(st.integers(-5, 5).map(str), st.text("xyz", min_size=1, max_size=3)),
            st.integers(0, 100),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_item_ids_round_trip(rows: list[tuple]) -> None:
    df = pl.DataFrame(rows, schema=["seq", "item", "ts"], orient="row", schema_overrides={"seq": pl.Int64})
    df = df.with_columns(pl.from_epoch("ts").cast(pl.Datetime("us"))).with_row_index("_row")
    items = item_table(df)
    encoded = encode(df, items)
    decoded = encoded.join(items, left_on="item", right_on="idx").sort("seq", "ts", maintain_order=True)
    original = df.sort("seq", "ts", "_row")
    assert sorted(decoded["item_id"].to_list()) == sorted(original["item"].to_list())
    assert encoded.height == df.height and encoded["item"].max() < items.height
    assert items["item_id"].n_unique() == items.height


def test_build_splits_keeps_test_out_of_train(log_csv: Path, tmp_path: Path) -> None:
    lf, cfg = scan_events([log_csv], PrepareConfig(split="time:0.2", valid="0.1"))
    items, stages = build_splits(lf, cfg, out=tmp_path)
    train, valid, test = (pl.read_parquet(tmp_path / f"{s}.parquet") for s in ("train", "valid", "test"))
    # Sequences are renumbered per split, so compare by (user, first time).
    key = lambda d: set(d.group_by("seq").agg(pl.col("user").first(), pl.col("ts").min()).select("user", "ts").rows())  # noqa: E731
    assert not key(train) & key(test) and not key(train) & key(valid) and not key(valid) & key(test)
    assert train["ts"].max() < test.group_by("seq").agg(pl.col("ts").max())["ts"].min()
    assert test["item"].max() < items.height and stages["filter_rounds"] >= 0


def test_unparseable_time_names_the_value_and_row(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,time\nu,1,2024-05-01T10:00:00\nu,2,yesterday\n")
    with pytest.raises(DataError, match=r"cannot parse time 'yesterday' in column 'time' \(data row 2\)"):
        prepare([str(p)], tmp_path / "d", PrepareConfig())
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ presets on their real formats

FIXTURES = Path(__file__).parent / "fixtures"


def _scan_preset(name: str, file: str, **over) -> tuple[pl.DataFrame, PrepareConfig]:
    from rnnrec_cli.data.presets import PRESETS

    lf, cfg = scan_events([FIXTURES / file], PrepareConfig(**{"preset": name, **PRESETS[name], **over}))
    return check_times(lf.collect(), cfg), cfg


def test_preset_diginetica_date_plus_offset() -> None:
    df, _ = _scan_preset("diginetica", "diginetica-train-item-views.csv")
    first = df.filter(pl.col("session") == 1).sort("ts")
    assert first["item"].to_list() == [9654, 32118, 81766, 31331]  # ordered by timeframe
    assert first["ts"][0] == datetime(2016, 5, 9, 0, 1, 15, 848000)


def test_preset_retailrocket_events_and_sessions() -> None:
    df, cfg = _scan_preset("retailrocket", "retailrocket-events.csv", events=("view",))
    assert set(df["event"]) == {"view", "addtocart", "transaction"}  # filter applies later
    assert df["ts"].min() == datetime(2015, 6, 2, 5, 2, 12, 117000)
    out = sessionize(df.lazy(), cfg).collect()
    # visitor 257597: three events within seconds, then one 2.4 h later -> two sessions.
    assert out.filter(pl.col("user") == 257597)["seq"].n_unique() == 2


def test_preset_yoochoose_headerless_iso() -> None:
    df, _ = _scan_preset("yoochoose", "yoochoose-clicks.dat")
    assert df.height == 10 and df["session"].n_unique() == 3
    assert df["ts"][0] == datetime(2014, 4, 7, 10, 51, 9, 277000)


def test_preset_amazon_json_lines() -> None:
    df, cfg = _scan_preset("amazon", "amazon-reviews.jsonl")
    assert cfg.user_col == "reviewerID" and df["item"].dtype == pl.String
    assert df["value"].to_list() == [5.0, 4.0, 3.0, 5.0]


def test_preset_movielens_reads_double_colon_dat() -> None:
    df, _ = _scan_preset("movielens", "movielens-ratings.dat")
    assert df.columns == ["_row", "user", "item", "ts", "value"]
    assert df["item"].to_list() == [1193, 661, 914, 1193, 661]
    assert df["value"].to_list() == [5, 3, 3, 4, 5]


def test_preset_gru4rec_tsv() -> None:
    df, cfg = _scan_preset("gru4rec", "gru4rec.tsv")
    assert cfg.session_col == "SessionId" and df["item"].to_list() == [10, 11, 10, 12]


# ------------------------------------------------------------------ other inputs and splits


def test_gzip_zstd_glob_and_truncated_gzip(log_csv: Path, tmp_path: Path) -> None:
    import gzip as gz

    raw = log_csv.read_bytes()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.csv.gz").write_bytes(gz.compress(raw))
    pl.read_csv(log_csv).write_csv(logs / "b.csv")
    base = prepare([str(log_csv)], tmp_path / "plain", PrepareConfig(split="time:0.2"))["splits"]
    zipped = prepare([str(logs / "a.csv.gz")], tmp_path / "gz", PrepareConfig(split="time:0.2"))
    assert zipped["splits"] == base
    both = prepare([str(logs / "*.csv*")], tmp_path / "glob", PrepareConfig(split="time:0.2"))
    assert len(both["inputs"]) == 2 and both["stages"]["events_read"] == 2 * zipped["stages"]["events_read"]
    (tmp_path / "bad.csv.gz").write_bytes(gz.compress(raw)[:200])
    with pytest.raises(DataError, match=r"cannot read .*bad\.csv\.gz"):
        prepare([str(tmp_path / "bad.csv.gz")], tmp_path / "bad", PrepareConfig())
    with pytest.raises(DataError, match="no input file matches"):
        prepare([str(tmp_path / "*.tsv")], tmp_path / "none", PrepareConfig())


def test_zstd_input(log_csv: Path, tmp_path: Path) -> None:
    zstd = pytest.importorskip("zstandard")
    (tmp_path / "e.csv.zst").write_bytes(zstd.ZstdCompressor().compress(log_csv.read_bytes()))
    got = prepare([str(tmp_path / "e.csv.zst")], tmp_path / "z", PrepareConfig(split="time:0.2"))
    assert got["stages"]["events_read"] == pl.read_csv(log_csv).height


def test_max_length_keeps_the_most_recent_events() -> None:
    df = pl.DataFrame({"seq": [1, 1, 1, 1, 2, 2], "item": [1, 2, 3, 4, 5, 6]})
    from rnnrec_cli.data.transforms import keep_most_recent

    assert keep_most_recent(df, 2)["item"].to_list() == [3, 4, 5, 6]


def test_leave_one_out_split(log_csv: Path, tmp_path: Path) -> None:
    out = prepare([str(log_csv)], tmp_path / "loo", PrepareConfig(session_gap=None, split="loo"))
    m = out
    assert m["warnings"] and "leave-one-out" in m["warnings"][0]
    train, valid, test = (read_sequences(tmp_path / "loo", s) for s in ("train", "valid", "test"))
    # Every user is in all three; each split is one event longer than the previous.
    assert len(train) == len(valid) == len(test)
    assert (valid.lengths == train.lengths + 1).all() and (test.lengths == valid.lengths + 1).all()


@pytest.mark.parametrize(
    "options",
    [{"split": "time:0.2", "valid": "0.1"}, {"split": "loo"}, {"session_gap": None, "max_length": 5}],
    ids=["time", "loo", "histories"],
)
def test_bucketed_prepare_gives_the_same_data_whatever_the_bucket_count(tmp_path: Path, options: dict) -> None:
    log = tmp_path / "events.csv"
    synthetic_log(n_users=80, seed=3).write_csv(log)
    results = {}
    for n in (1, 3, 7):
        out = tmp_path / f"b{n}"
        results[n] = prepare([str(log)], out, PrepareConfig(min_item_support=2, buckets=n, **options))
        assert not any(p.name.startswith("_") for p in out.iterdir())  # the work area is gone
    for n in (3, 7):
        assert results[n]["stages"] == results[1]["stages"] and results[n]["splits"] == results[1]["splits"]
        for name in ("train", "valid", "test", "items"):
            a, b = (
                pl.read_parquet(tmp_path / "b1" / f"{name}.parquet"),
                pl.read_parquet(tmp_path / f"b{n}" / f"{name}.parquet"),
            )
            assert a.equals(b), (n, name)


def _tsv(path: Path, rows: list[tuple[int, int, int]]) -> Path:
    path.write_text("SessionId\tItemId\tTime\n" + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in rows))
    return path


def test_given_split_is_used_exactly_as_given(tmp_path: Path) -> None:
    """A published split keeps its repeats, its rare items and its whole training file; only
    test events on items unknown to training go, as in GRU4Rec's evaluation, and are counted."""
    train = [
        (1, 10, 100), (1, 10, 101), (1, 11, 102),  # a repeat
        (2, 12, 200), (2, 13, 201),  # item 13 seen once: support 1
        (3, 14, 300),  # one event: no training pair, but 14 is a training item
        (4, 11, 400), (4, 12, 401), (4, 12, 402), (4, 10, 403),
    ]  # fmt: skip
    test = [
        (5, 10, 500), (5, 10, 501), (5, 99, 502), (5, 13, 503),  # 99 unknown: dropped
        (6, 14, 600), (6, 98, 601),  # only one known event left: no target
        (7, 12, 700), (7, 11, 701),
    ]  # fmt: skip
    tr, te = _tsv(tmp_path / "train.tsv", train), _tsv(tmp_path / "test.tsv", test)
    for extra in ([], ["--preset", "gru4rec"]):
        out = tmp_path / f"data{len(extra)}"
        cli_ok(["prepare", str(tr), "--test", str(te), "--sep", "\t", "--session-col", "SessionId",
                "--item-col", "ItemId", "--time-col", "Time", "-o", str(out), "--allow-tiny-test", *extra])  # fmt: skip
        m = json.loads((out / "manifest.json").read_text())
        assert m["n_items"] == 5  # every training item, 13 and 14 included
        assert m["splits"]["train"]["events"] == len(train)
        assert m["splits"]["valid"]["events"] == 0
        assert m["stages"]["test_cleaning"]["events_on_unseen_items"] == 2
        # Targets the official evaluation scores: known events after the first of each session.
        seqs = read_sequences(out, "test")
        assert seqs.n_targets == 2 + 1
        items = pl.read_parquet(out / "items.parquet").sort("idx")["item_id"].to_list()
        assert [[items[i] for i in s] for s in np.split(seqs.items, seqs.offsets[1:-1])] == [[10, 10, 13], [12, 11]]
    # Explicit flags still win over the given-split defaults.
    out = tmp_path / "collapsed"
    cli_ok(["prepare", str(tr), "--test", str(te), "--preset", "gru4rec", "--collapse-repeats", "-o", str(out),
            "--allow-tiny-test"])  # fmt: skip
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["dedupe_consecutive"] is True
    # Two repeats collapsed, and the one-event session goes with the sequence-length filter.
    assert m["splits"]["train"]["events"] == len(train) - 3


# ------------------------------------------------------------------ one cutoff for user histories


@settings(deadline=None, max_examples=60)
@given(_rows, st.sampled_from(["time:3000s", "time:0.3", "time:1d"]))
def test_global_cutoff_scores_only_events_after_it(rows: list[tuple], split: str) -> None:
    df = sessionize(_events(rows).lazy(), PrepareConfig(user_col="user", session_gap=None)).collect()
    period = PrepareConfig(split=split).test_period
    before, after = split_at_cutoff(df, period)
    at = cutoff(df.lazy(), period)
    # Training keeps every event up to the cutoff; the test split holds the sequences that go on
    # past it, whole, and only events past it are targets (never a sequence's first).
    assert sorted(before["_row"]) == sorted(df.filter(pl.col("ts") <= at)["_row"])
    assert set(after["seq"]) == set(df.filter(pl.col("ts") > at)["seq"])
    assert after.height == df.filter(pl.col("seq").is_in(after["seq"].implode())).height
    first = pl.int_range(pl.len()).over("seq") == 0
    expected = after.select((pl.col("ts") > at) & ~first)["ts"]
    assert after["target"].to_list() == expected.to_list()
    if before.height and after["target"].any():
        assert after.filter("target")["ts"].min() > before["ts"].max()


def test_histories_get_one_cutoff_and_keep_their_past_as_context(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    # Every user active over the whole timeline, one event a day: histories that straddle cutoffs.
    rows = [(f"u{u}", (u + 3 * j) % 17, 1_700_000_000 + j * 86400 + u * 60) for u in range(40) for j in range(15)]
    pl.DataFrame(rows, schema=["user", "item", "ts"], orient="row").write_csv(log)
    m = prepare([str(log)], tmp_path / "d", PrepareConfig(session_gap=None, split="time:0.2", valid="0.1"))
    assert "one cutoff for every user history" in m["stages"]["split_scheme"]
    train, valid, test = (pl.read_parquet(tmp_path / "d" / f"{s}.parquet") for s in ("train", "valid", "test"))
    assert "target" not in train.columns
    for later, earlier in ((test, train), (test, valid), (valid, train)):
        assert later.filter("target")["ts"].min() > earlier["ts"].max()
    # Test users' earlier events are context there and training data here (same users).
    assert (~test["target"]).sum() > 0 and set(test["user"]) & set(train["user"])
    for name, split in (("test", test), ("valid", valid)):
        seqs = read_sequences(tmp_path / "d", name)
        assert seqs.scored is not None and int(scored_mask(seqs).sum()) == m["splits"][name]["targets"]
        assert m["splits"][name]["targets"] == int(split["target"].sum())
        assert m["splits"][name]["target_time_min"] > m["splits"]["train"]["time_max"]
        # A sequence's first event is never a target.
        assert not split.group_by("seq", maintain_order=True).agg(pl.col("target").first())["target"].any()


def test_sessions_keep_the_whole_session_rule(log_csv: Path, tmp_path: Path) -> None:
    m = prepare([str(log_csv)], tmp_path / "s", PrepareConfig(split="time:0.2", valid="0.1"))
    assert "split_scheme" not in m["stages"]
    test = pl.read_parquet(tmp_path / "s" / "test.parquet")
    assert "target" not in test.columns
    assert m["splits"]["test"]["targets"] == m["splits"]["test"]["events"] - m["splits"]["test"]["sequences"]


# ------------------------------------------------------------------ split and order columns


def _srgnn(path: Path, split: bool = True, values: tuple[str, str] = ("train", "test")) -> Path:
    """An SR-GNN-style log: the 'timestamp' is the position inside a session (0, 1, 2, ...)."""
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp" + (",split" if split else "")]
    for s in range(120):
        first = int(rng.integers(12))
        for p in range(int(rng.integers(2, 7))):
            lines.append(f"{s},{(first + p) % 12},{p}" + (f",{values[s >= 90]}" if split else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_split_column_gives_the_split_it_names_as_given(tmp_path: Path) -> None:
    src = _srgnn(tmp_path / "events.csv")
    raw = pl.read_csv(src)
    cli_ok(["prepare", str(src), "-o", str(tmp_path / "d"), "-q"])
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["recognised"]["columns"]["split"] == {"column": "split", "how": "recognised name"}
    assert m["stages"]["split_rule"] == {"test": "split column 'split'", "valid": "0"}
    # As given: every row of each split, repeats and rare items kept, no validation cut.
    assert m["splits"]["train"]["events"] == raw.filter(pl.col("split") == "train").height
    assert m["splits"]["test"]["events"] == raw.filter(pl.col("split") == "test").height
    assert m["splits"]["valid"]["events"] == 0
    assert m["config"]["min_item_support"] == 1 and not m["config"]["dedupe_consecutive"]
    # Positions are read as an order, with a note: never a 1970 time split.
    assert "restart at 0" in m["stages"]["order_note"] and m["recognised"]["time_unit"]["unit"] == "order"
    test = read_sequences(tmp_path / "d", "test")
    items = read_items(tmp_path / "d").sort("idx")["item_id"].to_list()
    first = raw.filter(pl.col("split") == "test").group_by("user_id", maintain_order=True).agg("item_id")
    assert [items[i] for i in test.items[: test.offsets[1]]] == first["item_id"][0].to_list()


def test_split_values_and_bad_split_values(tmp_path: Path) -> None:
    src = _srgnn(tmp_path / "events.csv", values=("tr", "te"))
    result = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "split column 'split'" in result.output and "'tr'" in result.output and "--split-values" in result.output
    out = cli_ok(["prepare", str(src), "-o", str(tmp_path / "d"), "--split-values", "tr,va,te", "-q"])
    assert out.strip() == str(tmp_path / "d")
    result = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "y"), "--split-values", "a,b"])
    assert result.exit_code == 2 and "three distinct names" in result.output
    # An explicit --split-col with another split is a conflict; --split-col none ignores the column.
    result = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "z"), "--split-col", "split",
                                      "--split", "time:0.1"])  # fmt: skip
    assert result.exit_code == 1 and "both give the test split" in result.output


def test_positions_without_a_split_are_refused_not_read_as_1970(tmp_path: Path) -> None:
    src = _srgnn(tmp_path / "events.csv", split=False)
    result = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and not (tmp_path / "x").exists()
    assert "restart at 0" in result.output and "--order-col timestamp" in result.output
    assert "--time-unit" in result.output
    # Leave-one-out needs no time; --order-col says what the column is.
    cli_ok(["prepare", str(src), "-o", str(tmp_path / "d"), "--split", "loo", "--order-col", "timestamp", "-q"])
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["recognised"]["columns"]["order"] == {"column": "timestamp", "how": "option"}
    # --time-unit says they are times: a time split is made as asked.
    cli_ok(["prepare", str(src), "-o", str(tmp_path / "t"), "--time-unit", "s", "--split", "time:0.5",
            "--valid", "0", "--allow-tiny-test", "-q"])  # fmt: skip


# ------------------------------------------------------------------ RecBole atomic files, header-less input

_names = st.text("abcdefghij_", min_size=1, max_size=8)


@settings(deadline=None, max_examples=100)
@given(st.lists(st.tuples(_names, st.sampled_from(RECBOLE_TYPES)), min_size=1, max_size=6), st.data())
def test_recbole_types_are_dropped_only_from_a_whole_typed_header(columns: list[tuple], data: st.DataObject) -> None:
    names = [f"{base}:{kind}" for base, kind in columns]
    bases = [base for base, _ in columns]
    plain = untyped_names(names)
    if len(set(bases)) == len(bases):
        assert plain == dict(zip(names, bases, strict=True))
    else:  # two columns would get one name: the header stays as it is
        assert plain == {}
    # One name without a recognised type and it is not RecBole's header: nothing changes.
    at = data.draw(st.integers(0, len(names) - 1))
    other = data.draw(st.sampled_from(["", ":date", ":Token", ":token:x"]))
    assert untyped_names([*names[:at], bases[at] + other, *names[at + 1 :]]) == {}


def test_recbole_inter_file_is_prepared_with_recognised_columns(tmp_path: Path) -> None:
    log = synthetic_log(n_users=30).select(
        pl.col("user_id").alias("user_id:token"),
        pl.col("item_id").alias("item_id:token"),
        pl.col("timestamp").cast(pl.Float64).alias("timestamp:float"),
    )
    path = tmp_path / "shop.inter"
    log.write_csv(path, separator="\t")
    manifest = prepare([str(path)], tmp_path / "d", PrepareConfig(split="time:0.2", valid="0"))
    rec = manifest["recognised"]
    assert rec["header"] == "RecBole typed header (name:type): type suffixes dropped"
    assert {k: c["column"] for k, c in rec["columns"].items()} == {
        "user": "user_id",
        "item": "item_id",
        "time": "timestamp",
    }
    assert manifest["stages"]["events_read"] == log.height
    assert rec["time_unit"]["unit"] == "s"
    # A plain header gets no such note.
    log.rename(lambda n: n.split(":")[0]).write_csv(path, separator="\t")
    plain = prepare([str(path)], tmp_path / "f", PrepareConfig(split="time:0.2", valid="0"))
    assert "header" not in plain["recognised"]


def test_headerless_file_is_named_in_the_error_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("1\t214536502\t1396839069\n1\t214536500\t1396839249\n")
    with pytest.raises(DataError) as exc:
        scan_events([path], PrepareConfig(session_col="SessionId", item_col="ItemId", time_col="Time"))
    assert str(exc.value) == (
        f"columns 'SessionId', 'ItemId', 'Time' not in {path}: it has no header row (its first line reads 1, "
        "214536502, 1396839069); add a header naming the columns, or pass --no-header --columns SessionId,ItemId,Time "
        "(in the order of its columns)"
    )
    # Guessing finds nothing either: the same fix, with common names.
    with pytest.raises(DataError, match=r"has no header row .* --no-header --columns user_id,item_id,timestamp"):
        scan_events([path], PrepareConfig())
    lf, cfg = scan_events([path], PrepareConfig(header=False, columns=("SessionId", "ItemId", "Time")))
    assert cfg.session_col == "SessionId" and lf.collect()["item"].to_list() == [214536502, 214536500]
