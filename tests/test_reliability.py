"""Bad input and faults, as a hostile user or a full disk would bring them.

The corpus: each case sets up a workspace (events, a prepared data directory, a finished run,
earlier predictions), breaks something, runs one command, and checks the exit code, exactly one
`Error:` line, no traceback, and that nothing in the workspace changed (nothing lost, nothing
half-written left behind). The fault tests kill -9 writers mid-way, fill a disk, and plant links.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app

from .conftest import prepare_synthetic, synthetic_log

# End to end: bad input, crashes and signals against the real command line.
pytestmark = pytest.mark.slow

TINY = ["--layers", "16", "--epochs", "2", "--batch-size", "16", "--bptt", "4", "-q"]
runner = CliRunner()


def _cli(args: list[str], stdin: bytes | str | None = None):
    return runner.invoke(app, args, input=stdin)


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root: its mode and content hash (links: their target). Lock files
    record who owns a directory, not data, and are left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name == ".lock":
            continue
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = (0, "-> " + os.readlink(p))
        elif p.is_dir():
            out[rel] = (p.stat().st_mode, "dir")
        else:
            out[rel] = (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """events.csv, data/ (prepared), run/ (trained, evaluated), recs.csv (predicted)."""
    root = tmp_path_factory.mktemp("reliability-base")
    prepare_synthetic(root)
    for args in (
        ["train", str(root / "data"), "-o", str(root / "run"), "--seed", "0", *TINY],
        ["predict", str(root / "run"), str(root / "events.csv"), "-o", str(root / "recs.csv"), "-k", "3", "-q"],
        ["train", str(root / "data"), "-o", str(root / "run2"), "--seed", "1", "--cell", "lstm", *TINY],
        ["evaluate", str(root / "run"), "-q", "--bootstrap", "100"],
        ["evaluate", str(root / "run2"), "-q", "--bootstrap", "100"],
    ):
        result = _cli(args)
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Path:
    work = tmp_path / "ws"
    shutil.copytree(base, work, symlinks=True)
    # config.json names the data directory by its absolute path: point it at this copy.
    for run in ("run", "run2"):
        cfg = json.loads((work / run / "config.json").read_text())
        cfg["data_dir"] = str(work / "data")
        (work / run / "config.json").write_text(json.dumps(cfg))
    return work


def _write(rel: str, content: bytes | str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def _edit_json(rel: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = ws / rel
        values = json.loads(path.read_text())
        new = change(values)
        path.write_text(json.dumps(values if new is None else new))

    return setup


def _truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = ws / rel
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return setup


def _symlink(rel: str, target: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        (ws / rel).symlink_to(target)

    return setup


def _both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        for step in steps:
            step(ws)

    return setup


RANDOM = bytes(range(256)) * 8 + b"\x00\x01garbage\x00"
LATIN1 = "user_id,item_id,timestamp\n" + "".join(
    f"u{u},caf\xe9{i % 3},{1_700_000_000 + 60 * i}\n" for u in range(3) for i in range(6)
)
MIXED_UNITS = "user_id,item_id,timestamp\n" + "".join(
    f"u{u},{i % 7},{(1_700_000_000 + 60 * i) * (1000 if u % 2 else 1)}\n" for u in range(20) for i in range(8)
)
FAR_FUTURE = (
    "user_id,item_id,timestamp\n"
    + "".join(f"u{u},{i % 7},{1_700_000_000 + 86400 * 3 * u + 60 * i}\n" for u in range(20) for i in range(8))
    + "u0,3,253402300000\nu0,4,253402300060\n"
)
DUPLICATE = "user_id,item_id,item_id,timestamp\nu1,1,2,1700000000\nu1,2,3,1700000060\n"


def _corrupt_gzip() -> bytes:
    import gzip

    good = gzip.compress(("user_id,item_id,timestamp\n" + "u1,1,1700000000\n" * 5000).encode())
    return good[:40] + bytes(b ^ 0x5A for b in good[40:80]) + good[80:]


def _rewrite_items(ws: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    path = ws / "run" / "items.parquet"
    change(pl.read_parquet(path)).write_parquet(path)


def _rewrite_ranks(ws: Path, change, rows: int | None = None) -> None:
    path = ws / "run2" / "eval" / "default" / "test_ranks.parquet"
    table = pl.read_parquet(path)
    if change is not None:
        table = table.with_columns(change(pl.col("lstm")).alias("lstm"))
    table.head(rows if rows is not None else table.height).write_parquet(path)


def _rows_of_unit(scale: int) -> str:
    return "".join(
        f"u{u},{i % 7},{(1_700_000_000 + 86400 * u + 60 * i) * scale}\n" for u in range(30) for i in range(8)
    )


# (id, setup, args with {ws} for the workspace, stdin, exit code)
CASES: list[tuple[str, Callable[[Path], None] | None, list[str], bytes | str | None, int]] = [
    # -- the filesystem
    ("prepare-out-under-a-file", None, ["prepare", "{ws}/events.csv", "-o", "{ws}/recs.csv/data"], None, 1),
    ("prepare-out-is-a-file", None, ["prepare", "{ws}/events.csv", "-o", "{ws}/recs.csv", "--force"], None, 1),
    ("train-out-is-a-file", None, ["train", "{ws}/data", "-o", "{ws}/recs.csv", *TINY], None, 1),
    (
        "predict-out-is-a-directory",
        None,
        ["predict", "{ws}/run", "{ws}/events.csv", "-o", "{ws}/data", "--force"],
        None,
        1,
    ),
    (
        "predict-out-under-a-file",
        None,
        ["predict", "{ws}/run", "{ws}/events.csv", "-o", "{ws}/recs.csv/x.csv"],
        None,
        1,
    ),
    ("predict-out-exists", None, ["predict", "{ws}/run", "{ws}/events.csv", "-o", "{ws}/recs.csv"], None, 1),
    (
        "predict-out-dangling-link",
        _symlink("dangling.csv", "/nonexistent/x.csv"),
        ["predict", "{ws}/run", "{ws}/events.csv", "-o", "{ws}/dangling.csv"],
        None,
        1,
    ),
    ("input-symlink-loop", _symlink("loop.csv", "loop.csv"), ["prepare", "{ws}/loop.csv", "-o", "{ws}/d2"], None, 1),
    ("input-is-a-directory", None, ["prepare", "{ws}/run", "-o", "{ws}/d2"], None, 1),
    (
        "evaluate-eval-dir-is-a-file",
        _both(lambda w: shutil.rmtree(w / "run" / "eval", ignore_errors=True), _write("run/eval", "not a directory")),
        ["evaluate", "{ws}/run", "-q"],
        None,
        1,
    ),
    # -- damaged or foreign files
    (
        "truncated-train-parquet",
        _truncate("data/train.parquet"),
        ["train", "{ws}/data", "-o", "{ws}/r2", *TINY],
        None,
        1,
    ),
    (
        "random-test-parquet",
        _write("data/test.parquet", RANDOM),
        ["evaluate", "{ws}/data", "--baselines", "pop", "-q"],
        None,
        1,
    ),
    (
        "random-items-parquet",
        _write("data/items.parquet", RANDOM),
        ["train", "{ws}/data", "-o", "{ws}/r2", *TINY],
        None,
        1,
    ),
    ("random-checkpoint", _write("run/checkpoints/best.msgpack", RANDOM), ["evaluate", "{ws}/run", "-q"], None, 1),
    (
        "truncated-checkpoint",
        _truncate("run/checkpoints/best.msgpack"),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "checkpoint-of-another-catalogue",
        _edit_json("run/config.json", lambda c: c.update(n_items=10)),
        ["evaluate", "{ws}/run", "-q"],
        None,
        1,
    ),
    (
        "checkpoint-of-another-model",
        _edit_json("run/config.json", lambda c: c["model"].update(layers=[8])),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "resume-checkpoint-of-another-model",
        _both(
            _edit_json("run/config.json", lambda c: c["model"].update(layers=[8])),
            lambda w: (w / "run" / "COMPLETE").unlink(),
        ),
        ["train", "--resume", "{ws}/run", "-q"],
        None,
        1,
    ),
    # -- JSON the tool reads
    (
        "config-json-n-items-string",
        _edit_json("run/config.json", lambda c: c.update(n_items="38")),
        ["evaluate", "{ws}/run", "-q"],
        None,
        1,
    ),
    (
        "config-json-model-string",
        _edit_json("run/config.json", lambda c: c.update(model="gru")),
        ["evaluate", "{ws}/run", "-q"],
        None,
        1,
    ),
    ("config-json-not-json", _write("run/config.json", "{not json"), ["evaluate", "{ws}/run", "-q"], None, 1),
    (
        "config-json-not-utf8",
        _write("run/config.json", b'{"n_items": "\xff\xfe"}'),
        ["evaluate", "{ws}/run", "-q"],
        None,
        1,
    ),
    (
        "config-json-array",
        _write("run/config.json", "[1, 2]"),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "manifest-n-items-string",
        _edit_json("data/manifest.json", lambda m: m.update(n_items="38")),
        ["train", "{ws}/data", "-o", "{ws}/r2", *TINY],
        None,
        1,
    ),
    ("manifest-array", _write("data/manifest.json", "[]"), ["train", "{ws}/data", "-o", "{ws}/r2", *TINY], None, 1),
    (
        "manifest-config-bad-type",
        _edit_json("data/manifest.json", lambda m: m["config"].update(min_item_support="5")),
        ["evaluate", "{ws}/data", "--baselines", "pop", "-q"],
        None,
        1,
    ),
    (
        "run-data-manifest-damaged",
        _write("run/data_manifest.json", '{"n_items": 40'),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "user-config-array",
        _write("c.json", "[]"),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-model-string",
        _write("c.json", '{"model": "gru"}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-epochs-float",
        _write("c.json", '{"train": {"epochs": 1.5}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-epochs-string",
        _write("c.json", '{"train": {"epochs": "1"}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-layers-text",
        _write("c.json", '{"model": {"layers": ["a"]}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-unknown-key",
        _write("c.json", '{"train": {"epochz": 3}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-not-utf8",
        _write("c.json", b'{"train": {"lr": "\xe9"}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    # -- text the tool reads
    (
        "events-not-utf8",
        _write("latin.csv", LATIN1.encode("latin-1")),
        ["prepare", "{ws}/latin.csv", "-o", "{ws}/d2"],
        None,
        1,
    ),
    (
        "predict-file-not-utf8",
        _write("latin.csv", LATIN1.encode("latin-1")),
        ["predict", "{ws}/run", "{ws}/latin.csv", "-q"],
        None,
        1,
    ),
    ("predict-stdin-not-utf8", None, ["predict", "{ws}/run", "-", "-q"], LATIN1.encode("latin-1"), 1),
    ("unknown-encoding", None, ["prepare", "{ws}/events.csv", "-o", "{ws}/d2", "--encoding", "klingon"], None, 2),
    ("binary-garbage-events", _write("garbage.csv", RANDOM), ["prepare", "{ws}/garbage.csv", "-o", "{ws}/d2"], None, 1),
    ("empty-file", _write("empty.csv", ""), ["prepare", "{ws}/empty.csv", "-o", "{ws}/d2"], None, 1),
    (
        "header-only",
        _write("head.csv", "user_id,item_id,timestamp\n"),
        ["prepare", "{ws}/head.csv", "-o", "{ws}/d2"],
        None,
        1,
    ),
    ("empty-stdin", None, ["prepare", "-", "-o", "{ws}/d2"], b"", 1),
    ("duplicate-columns", _write("dup.csv", DUPLICATE), ["prepare", "{ws}/dup.csv", "-o", "{ws}/d2"], None, 1),
    ("duplicate-columns-predict", _write("dup.csv", DUPLICATE), ["predict", "{ws}/run", "{ws}/dup.csv", "-q"], None, 1),
    # -- times
    ("time-units-mixed", _write("mixed.csv", MIXED_UNITS), ["prepare", "{ws}/mixed.csv", "-o", "{ws}/d2"], None, 1),
    (
        "time-far-future-guessed",
        _write("future.csv", FAR_FUTURE),
        ["prepare", "{ws}/future.csv", "-o", "{ws}/d2"],
        None,
        1,
    ),
    (
        "time-far-future-in-split",
        _write("future.csv", FAR_FUTURE),
        ["prepare", "{ws}/future.csv", "-o", "{ws}/d2", "--time-unit", "s", "--split", "time:7d", "--valid", "7d"],
        None,
        1,
    ),
    # -- replacing: the old output must survive a failed replacement
    (
        "train-force-fails-keeps-old-run",
        _write("empty.csv", ""),
        ["train", "{ws}/empty.csv", "-o", "{ws}/run", "--force", *TINY],
        None,
        1,
    ),
    (
        "prepare-force-fails-keeps-old-data",
        _write("head.csv", "user_id,item_id,timestamp\n"),
        ["prepare", "{ws}/head.csv", "-o", "{ws}/data", "--force"],
        None,
        1,
    ),
    (
        "predict-force-fails-keeps-old-recs",
        _write("dup.csv", DUPLICATE),
        ["predict", "{ws}/run", "{ws}/dup.csv", "-o", "{ws}/recs.csv", "--force", "-q"],
        None,
        1,
    ),
    # -- run directories
    ("evaluate-not-a-run", None, ["evaluate", "{ws}/recs.csv"], None, 1),
    (
        "predict-run-without-checkpoint",
        lambda w: (w / "run" / "checkpoints" / "best.msgpack").unlink(),
        ["predict", "{ws}/run", "{ws}/events.csv"],
        None,
        1,
    ),
    ("train-force-over-its-own-data", None, ["train", "{ws}/run/data", "-o", "{ws}/run", "--force", *TINY], None, 1),
    # -- found by a hostile run of ~300 more cases
    (
        "prepare-out-dangling-link",
        _symlink("gone", "/nonexistent/data"),
        ["prepare", "{ws}/events.csv", "-o", "{ws}/gone"],
        None,
        1,
    ),
    (
        "corrupt-gzip",
        lambda w: (w / "bad.csv.gz").write_bytes(_corrupt_gzip()),
        ["prepare", "{ws}/bad.csv.gz", "-o", "{ws}/d2"],
        None,
        1,
    ),
    ("encoding-not-text", None, ["prepare", "{ws}/events.csv", "-o", "{ws}/d2", "--encoding", "rot13"], None, 2),
    ("seed-negative", None, ["train", "{ws}/data", "-o", "{ws}/r2", "--seed", "-1", *TINY], None, 2),
    ("lr-nan", None, ["train", "{ws}/data", "-o", "{ws}/r2", "--lr", "nan", *TINY], None, 2),
    ("clip-norm-inf", None, ["train", "{ws}/data", "-o", "{ws}/r2", "--clip-norm", "inf", *TINY], None, 2),
    (
        "temperature-nan",
        None,
        ["predict", "{ws}/run", "{ws}/events.csv", "--generate", "3", "--strategy", "sample", "--temperature", "nan"],
        None,
        2,
    ),
    ("columns-without-no-header", None, ["prepare", "{ws}/events.csv", "-o", "{ws}/d2", "--columns", "a,b,c"], None, 2),
    (
        "user-config-nan",
        _write("c.json", '{"train": {"lr": NaN}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-duplicate-key",
        _write("c.json", '{"train": {"epochs": 2}, "train": {"epochs": 3}}'),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    (
        "user-config-deeply-nested",
        _write("c.json", "[" * 100_000 + "]" * 100_000),
        ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "{ws}/c.json"],
        None,
        1,
    ),
    ("user-config-endless-device", None, ["train", "{ws}/data", "-o", "{ws}/r2", "--config", "/dev/zero"], None, 1),
    (
        "run-items-truncated",
        _truncate("run/items.parquet", 0.3),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "run-items-rows-missing",
        lambda w: _rewrite_items(w, lambda v: v.head(30)),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "run-items-duplicate-ids",
        lambda w: _rewrite_items(w, lambda v: v.with_columns(item_id=v["item_id"].first())),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "run-items-shifted",
        lambda w: _rewrite_items(w, lambda v: v.with_columns(idx=v["idx"] + 100)),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "list-item-column",
        lambda w: pl.DataFrame({"user_id": ["a", "a"], "item_id": [["x"], ["y"]], "timestamp": [1, 2]}).write_parquet(
            w / "lists.parquet"
        ),
        ["prepare", "{ws}/lists.parquet", "-o", "{ws}/d2"],
        None,
        1,
    ),
    ("predict-mixed-units", _write("mixed.csv", MIXED_UNITS), ["predict", "{ws}/run", "{ws}/mixed.csv", "-q"], None, 1),
    (
        "given-valid-in-other-unit",
        _both(
            _write("s.csv", MIXED_UNITS.split("\n", 1)[0] + "\n" + _rows_of_unit(1)),
            _write("ms.csv", MIXED_UNITS.split("\n", 1)[0] + "\n" + _rows_of_unit(1000)),
        ),
        ["prepare", "{ws}/s.csv", "--valid", "{ws}/ms.csv", "--split", "time:0.2", "-o", "{ws}/d2"],
        None,
        1,
    ),
    ("input-empty-device", None, ["prepare", "/dev/null", "-o", "{ws}/d2"], None, 1),
    # -- report and compare: what they read back is checked (found by a second hostile run)
    ("evaluate-bootstrap-huge", None, ["evaluate", "{ws}/run", "--bootstrap", "99999999999999999999"], None, 2),
    ("compare-bootstrap-huge", None, ["compare", "{ws}/run", "{ws}/run2", "--bootstrap", "99999999999"], None, 2),
    ("compare-one-run", None, ["compare", "{ws}/run"], None, 2),
    ("compare-same-run-twice", None, ["compare", "{ws}/run", "{ws}/run/"], None, 2),
    ("compare-bad-metric", None, ["compare", "{ws}/run", "{ws}/run2", "--metric", "auc"], None, 2),
    (
        "compare-other-protocol",
        lambda w: _cli(
            ["evaluate", str(w / "run2"), "--exclude-seen", "--name", "default", "--force", "-q", "--bootstrap", "100"]
        ),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    ("compare-data-dir", None, ["compare", "{ws}/run", "{ws}/data"], None, 1),
    ("compare-config-array", _write("run/config.json", "[]"), ["compare", "{ws}/run", "{ws}/run2"], None, 1),
    (
        "compare-split-edited",
        _edit_json("run/eval/default/test.json", lambda r: r.update(split="valid")),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "compare-ranks-nan",
        lambda w: _rewrite_ranks(w, lambda c: c * float("nan")),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "compare-ranks-negative",
        lambda w: _rewrite_ranks(w, lambda c: c * 0 - 7),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "compare-ranks-half",
        lambda w: _rewrite_ranks(w, lambda c: c * 0 + 0.5),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "compare-ranks-beyond-catalogue",
        lambda w: _rewrite_ranks(w, lambda c: c * 0 + 1e6),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "compare-ranks-list-column",
        lambda w: _rewrite_ranks(w, lambda c: c.cast(pl.String).str.split(".")),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "compare-ranks-rows-missing",
        lambda w: _rewrite_ranks(w, None, rows=10),
        ["compare", "{ws}/run", "{ws}/run2"],
        None,
        1,
    ),
    (
        "report-ci-junk",
        _edit_json("run/eval/default/test.json", lambda r: r.update(ci="junk")),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-metric-out-of-range",
        _edit_json("run/eval/default/test.json", lambda r: r["metrics"].update({"recall@20": 3})),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-metric-text",
        _edit_json("run/eval/default/test.json", lambda r: r["metrics"].update({"mrr@20": "abc"})),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-metrics-missing",
        _edit_json("run/eval/default/test.json", lambda r: r.update(metrics=None)),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-negative-count",
        _edit_json("run/eval/default/test.json", lambda r: r.update(n_events=-5)),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-breakdown-text",
        _edit_json(
            "run/eval/default/test.json", lambda r: r.update(breakdown={"position": {"gru": {"1": {"n": "x"}}}})
        ),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-metrics-line-text",
        lambda w: (w / "run" / "metrics.jsonl").open("a").write('{"epoch": "<b>x</b>", "seconds": 1}\n'),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-metrics-duplicate-key",
        lambda w: (w / "run" / "metrics.jsonl").open("a").write('{"epoch": 3, "epoch": 4}\n{"epoch": 5}\n'),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-manifest-inputs-text",
        _edit_json("run/data_manifest.json", lambda m: m.update(inputs="x")),
        ["report", "{ws}/run"],
        None,
        1,
    ),
    (
        "report-study-without-numbers",
        _write("study/trials.csv", "trial,value\n0,nan\n"),
        ["report", "{ws}/study"],
        None,
        1,
    ),
    (
        "report-study-bad-value",
        _write("study/trials.csv", "number,state,value\n0,COMPLETE,abc\n"),
        ["report", "{ws}/study"],
        None,
        1,
    ),
    ("report-out-existing-file", None, ["report", "{ws}/run", "-o", "{ws}/recs.csv"], None, 1),
    (
        "report-out-dangling-link",
        _symlink("gone.html", "/nonexistent/x.html"),
        ["report", "{ws}/run", "-o", "{ws}/gone.html"],
        None,
        1,
    ),
    ("report-not-a-run", None, ["report", "{ws}/data"], None, 1),
    (
        "predict-items-null-id",
        lambda w: _rewrite_items(
            w, lambda v: v.with_columns(item_id=pl.when(v["idx"] == 3).then(None).otherwise(v["item_id"]))
        ),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "predict-items-negative-count",
        lambda w: _rewrite_items(w, lambda v: v.with_columns(count=-v["count"])),
        ["predict", "{ws}/run", "{ws}/events.csv", "-q"],
        None,
        1,
    ),
    (
        "predict-temperature-without-generate",
        None,
        ["predict", "{ws}/run", "{ws}/events.csv", "--temperature", "0.5"],
        None,
        2,
    ),
    ("resume-a-finished-run", None, ["train", "--resume", "{ws}/run"], None, 1),
    (
        "metrics-damaged-mid-file",
        _both(
            _write("run/metrics.jsonl", '{"epoch": 1}\nnot json\n{"epoch": 2}\n'),
            lambda w: (w / "run" / "COMPLETE").unlink(),
        ),
        ["evaluate", "{ws}/run", "-q"],
        None,
        1,
    ),
]


def assert_one_error(result, code: int) -> str:
    """Exit code `code`, one `Error: ...` line (usage errors too, exit 2: no usage box), no
    traceback, no raw control bytes. Returns that line."""
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out and "unexpected" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "\x00" not in out and "╭" not in out and "Usage:" not in out, out
    lines = [ln for ln in out.splitlines() if "Error: " in ln]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    return lines[0]


@pytest.mark.parametrize(("setup", "args", "stdin", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_corpus(ws: Path, setup, args: list[str], stdin, code: int) -> None:
    if setup is not None:
        setup(ws)
    before = _snapshot(ws)
    result = _cli([a.replace("{ws}", str(ws)) for a in args], stdin)
    assert_one_error(result, code)
    assert _snapshot(ws) == before


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


# ---------------------------------------------------------------------------- faults


def _rnnrec(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnrec_cli", *args], capture_output=True, text=True, timeout=600, **kw
    )


def _spawn(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnrec_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
    )


def _temps(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.rnnrec-*"))


def _kill_when(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240, sig: int = signal.SIGKILL
) -> None:
    """Send `sig` (kill -9 unless told) as soon as `ready()` holds (it must, before the process ends)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the process ended before the moment to signal it"
        assert time.monotonic() < deadline, "timed out waiting for the moment to signal it"
        time.sleep(0.02)
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait()


def _big_log(path: Path, users: int = 20_000) -> Path:
    synthetic_log(n_users=users, n_items=500, sessions_per_user=3).write_csv(path)
    return path


def test_kill_9_during_prepare_force_keeps_the_old_data(ws: Path) -> None:
    before = _snapshot(ws / "data")
    proc = _spawn("prepare", str(_big_log(ws / "big.csv")), "-o", str(ws / "data"), "--force", "-q")
    _kill_when(proc, lambda: bool(_temps(ws, "data")))
    assert _snapshot(ws / "data") == before
    assert _temps(ws, "data"), "the killed run should have left its temporary directory"
    done = _rnnrec("prepare", str(ws / "events.csv"), "-o", str(ws / "data"), "--force", "-q")
    assert done.returncode == 0, done.stderr
    assert not _temps(ws, "data"), "the next run removes what the killed one left"


def test_kill_9_during_train_force_keeps_the_old_run(ws: Path) -> None:
    before = _snapshot(ws / "run")
    # More epochs than it can finish before the kill, however fast tiny epochs get.
    proc = _spawn("train", str(ws / "data"), "-o", str(ws / "run"), "--force", *TINY[:-3], "--epochs", "1000000", "-q")
    _kill_when(proc, lambda: any((t / "checkpoints" / "last.msgpack").is_file() for t in _temps(ws, "run")))
    assert _snapshot(ws / "run") == before
    done = _rnnrec("train", str(ws / "data"), "-o", str(ws / "run"), "--force", *TINY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(ws / "run")
    assert not _temps(ws, "run")
    assert (ws / "run" / "COMPLETE").is_file() and _snapshot(ws / "run") != before
    assert _rnnrec("evaluate", str(ws / "run"), "-q").returncode == 0


def test_train_force_on_raw_events_moves_its_data_with_the_run(ws: Path) -> None:
    """The replacement prepares into its own (temporary) directory; once it takes the run's
    place, its config still finds that data."""
    done = _rnnrec("train", str(ws / "events.csv"), "-o", str(ws / "run"), "--force", "--split", "time:0.2", *TINY)
    assert done.returncode == 0, done.stderr
    assert json.loads((ws / "run" / "config.json").read_text())["data_dir"] == "data"
    assert (ws / "run" / "data" / "train.parquet").is_file()
    assert _rnnrec("evaluate", str(ws / "run"), "-q").returncode == 0


def test_kill_9_during_predict_keeps_the_old_file(ws: Path) -> None:
    old = (ws / "recs.csv").read_bytes()
    big = _big_log(ws / "big.csv", users=40_000)
    proc = _spawn("predict", str(ws / "run"), str(big), "-o", str(ws / "recs.csv"), "--force", "--block-rows", "1000")
    _kill_when(proc, lambda: any(t.stat().st_size > 0 for t in _temps(ws, "recs.csv")))
    assert (ws / "recs.csv").read_bytes() == old
    assert _temps(ws, "recs.csv")
    done = _rnnrec("predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(ws / "recs.csv"), "--force", "-q")
    assert done.returncode == 0, done.stderr
    assert not _temps(ws, "recs.csv")


def test_a_failed_new_run_leaves_no_directory(ws: Path) -> None:
    result = _cli(["train", str(ws / "events.csv"), "-o", str(ws / "new"), "--min-item-support", "100000", *TINY])
    assert_one_error(result, 1)
    assert not (ws / "new").exists()


@pytest.fixture
def full_disk(tmp_path: Path):
    """A tmpfs with about 12 KiB free (root only: mounting needs it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        filler = mnt / "filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        with open(filler, "r+b") as f:
            f.truncate(filler.stat().st_size - 12 * 1024)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_one_line_and_leaves_nothing(ws: Path, full_disk: Path) -> None:
    before = _snapshot(full_disk)
    big = _big_log(ws / "big.csv", users=2_000)
    for args in (
        ["prepare", str(big), "-o", str(full_disk / "data")],
        ["predict", str(ws / "run"), str(big), "-o", str(full_disk / "recs.csv")],
        ["train", str(ws / "data"), "-o", str(full_disk / "run"), *TINY],
    ):
        line = assert_one_error(_cli(args), 1)
        assert "No space left on device" in line, line
        assert _snapshot(full_disk) == before, args


def test_read_only_filesystem_is_one_line(ws: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        for args in (
            ["prepare", str(ws / "events.csv"), "-o", str(ro / "data")],
            ["predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(ro / "recs.csv")],
        ):
            line = assert_one_error(_cli(args), 1)
            assert "Read-only file system" in line and "write somewhere else" in line, line
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_planted_links_are_never_written_through(ws: Path) -> None:
    victim = ws / "victim.txt"
    victim.write_text("precious")
    for name in ("recs.csv.tmp", ".recs.csv.tmp", ".recs.csv.rnnrec-tmp"):
        (ws / name).symlink_to(victim)
    (ws / "link.csv").symlink_to(victim)
    assert (
        _cli(
            ["predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(ws / "recs.csv"), "--force", "-q"]
        ).exit_code
        == 0
    )
    # -o naming a link: the link itself is replaced by the new file, never its target.
    assert (
        _cli(
            ["predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(ws / "link.csv"), "--force", "-q"]
        ).exit_code
        == 0
    )
    assert victim.read_text() == "precious"
    assert not (ws / "link.csv").is_symlink() and (ws / "link.csv").read_text().startswith("session_id")
    assert all((ws / n).is_symlink() for n in ("recs.csv.tmp", ".recs.csv.tmp", ".recs.csv.rnnrec-tmp"))


def test_stale_temporaries_of_dead_processes_are_removed(ws: Path) -> None:
    from rnnrec_cli.files import _HOST

    dead = 2**22 + 12345  # above the kernel's default pid_max: never a live process
    stale = ws / f".recs.csv.rnnrec-{_HOST}-{dead}-x1y2.tmp"
    live = ws / f".recs.csv.rnnrec-{_HOST}-1-x1y2.tmp"  # pid 1 is alive: another writer's
    other_host = ws / f".recs.csv.rnnrec-elsewhere-{dead}-x1y2.tmp"
    for p in (stale, live, other_host):
        p.write_text("partial")
    stale_dir = ws / f".data.rnnrec-{_HOST}-{dead}-abc.tmp"
    stale_dir.mkdir()
    (stale_dir / "train.parquet").write_text("partial")
    assert (
        _cli(
            ["predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(ws / "recs.csv"), "--force", "-q"]
        ).exit_code
        == 0
    )
    assert (
        _cli(
            ["prepare", str(ws / "events.csv"), "-o", str(ws / "data"), "--force", "--split", "time:0.2", "-q"]
        ).exit_code
        == 0
    )
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other_host.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_umask_permissions(ws: Path, umask: int) -> None:
    def run(*args: str) -> None:
        done = _rnnrec(*args, umask=umask)
        assert done.returncode == 0, done.stderr

    run("prepare", str(ws / "events.csv"), "-o", str(ws / "d2"), "--split", "time:0.2", "-q")
    run("train", str(ws / "events.csv"), "-o", str(ws / "run"), "--force", "--split", "time:0.2", *TINY)
    run("predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(ws / "r2.csv"), "-q")
    for path in (ws / "d2", ws / "run", ws / "run" / "data", ws / "run" / "checkpoints"):
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, path
    for path in (
        ws / "d2" / "manifest.json",
        ws / "run" / "config.json",
        ws / "r2.csv",
        ws / "run" / "checkpoints" / "best.msgpack",
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_paths_with_pattern_characters_are_read_as_given(ws: Path) -> None:
    """`[`, `*` and `?` in a path are characters, not patterns: the file itself is read, alone."""
    shutil.copytree(ws / "run", ws / "run[1]")
    shutil.copy(ws / "events.csv", ws / "ev[1]*.csv")
    (ws / "ev[1]X.csv").write_text("user_id,item_id,timestamp\nzz,999,1700000000\n")
    done = _cli(["prepare", str(ws / "ev[1]*.csv"), "-o", str(ws / "d[2]"), "--split", "time:0.2", "-q"])
    assert done.exit_code == 0, done.output
    assert json.loads((ws / "d[2]" / "manifest.json").read_text())["n_items"] == 40  # not item 999
    for args in (["predict", str(ws / "run[1]"), str(ws / "ev[1]*.csv"), "-q"], ["report", str(ws / "run[1]")],
                 ["compare", str(ws / "run[1]"), str(ws / "run2")], ["evaluate", str(ws / "d[2]"), "--baselines", "pop", "-q"]):  # fmt: skip
        result = _cli(args)
        assert result.exit_code == 0, (args, result.output)


def test_devices_and_pipes_are_written_into_never_replaced(ws: Path) -> None:
    result = _cli(["predict", str(ws / "run"), str(ws / "events.csv"), "-o", "/dev/null", "--force", "-q"])
    assert result.exit_code == 0, result.output
    assert Path("/dev/null").is_char_device()
    fifo = ws / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    assert _cli(["predict", str(ws / "run"), str(ws / "events.csv"), "-o", str(fifo), "-k", "2", "-q"]).exit_code == 0
    assert reader.communicate(timeout=60)[0].startswith(b"session_id,rank,item_id")
    assert fifo.is_fifo()


def test_inputs_from_pipes_and_with_byte_order_marks(ws: Path) -> None:
    text = (ws / "events.csv").read_text()
    (ws / "utf16.csv").write_bytes(text.encode("utf-16"))  # with its BOM
    (ws / "bom.csv").write_bytes(codecs.BOM_UTF8 + text.encode())
    for name in ("utf16.csv", "bom.csv"):
        done = _cli(["prepare", str(ws / name), "-o", str(ws / f"d-{name}"), "--split", "time:0.2", "-q"])
        assert done.exit_code == 0, (name, done.output)
        assert json.loads((ws / f"d-{name}" / "manifest.json").read_text())["n_items"] == 40
    piped = _rnnrec("prepare", "/dev/stdin", "-o", str(ws / "d-pipe"), "--split", "time:0.2", "-q", input=text)
    assert piped.returncode == 0, piped.stderr


def test_dropped_rows_and_a_test_file_equal_to_training_are_warned(ws: Path) -> None:
    lines = (ws / "events.csv").read_text().splitlines()
    short = [ln if i % 7 or not i else ln.rsplit(",", 1)[0] + "," for i, ln in enumerate(lines)]
    (ws / "short.csv").write_text("\n".join(short) + "\n")
    result = _cli(["prepare", str(ws / "short.csv"), "-o", str(ws / "d2"), "--split", "time:0.2"])
    assert result.exit_code == 0 and "lack an id or a time" in result.output, result.output
    result = _cli(["prepare", str(ws / "events.csv"), "--test", str(ws / "events.csv"), "-o", str(ws / "d3")])
    assert result.exit_code == 0 and "same content as a training input" in result.output, result.output


def test_quiet_resume_prints_nothing_but_the_run(ws: Path) -> None:
    (ws / "run" / "COMPLETE").unlink()
    done = _rnnrec("train", "--resume", str(ws / "run"), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and done.stdout.strip() == str(ws / "run")


def test_unfinished_run_warns_on_evaluate_and_predict(ws: Path) -> None:
    (ws / "run" / "COMPLETE").unlink()
    for args in (["evaluate", str(ws / "run"), "-q"], ["predict", str(ws / "run"), str(ws / "events.csv"), "-q"]):
        result = _cli(args)
        assert result.exit_code == 0, result.output
        assert "did not finish training" in result.output and "from epoch 2" in result.output, result.output


def test_formula_cells_warn_and_safe_csv_quotes_them(ws: Path) -> None:
    events = pl.read_csv(ws / "events.csv").with_columns(user_id=pl.lit("=HYPERLINK(") + pl.col("user_id") + ")")
    events.write_csv(ws / "evil.csv")
    result = _cli(["predict", str(ws / "run"), str(ws / "evil.csv"), "-k", "2"])
    assert result.exit_code == 0 and "--safe-csv" in result.output
    assert "\n=HYPERLINK(" in result.stdout
    safe = _cli(["predict", str(ws / "run"), str(ws / "evil.csv"), "-k", "2", "--safe-csv", "-q"])
    assert safe.exit_code == 0
    rows = pl.read_csv(safe.stdout.encode())
    assert rows["session_id"].str.starts_with("'=HYPERLINK(").all()


def test_encoding_reads_latin1_events(ws: Path) -> None:
    log = synthetic_log(n_users=60, n_items=40).with_columns(item_id=pl.lit("café") + pl.col("item_id").cast(pl.String))
    (ws / "latin.csv").write_bytes(log.write_csv().encode("latin-1"))
    done = _cli(
        ["prepare", str(ws / "latin.csv"), "-o", str(ws / "d2"), "--encoding", "latin-1", "--split", "time:0.2", "-q"]
    )
    assert done.exit_code == 0, done.output
    items = pl.read_parquet(ws / "d2" / "items.parquet")["item_id"]
    assert items.str.starts_with("café").all()
    assert json.loads((ws / "d2" / "manifest.json").read_text())["config"]["encoding"] == "latin-1"


# ---------------------------------------------------------------------------- SIGTERM


def _terminate_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> str:
    """SIGTERM the process as soon as `ready()` holds; returns its stderr once it has ended."""
    _kill_when(proc, ready, sig=signal.SIGTERM)
    return proc.communicate(timeout=120)[1]


def test_sigterm_stops_train_like_ctrl_c_with_exit_143(ws: Path) -> None:
    """A scheduler's or `timeout`'s SIGTERM: after a checkpoint the run is kept and the message
    names the resume command; before one, nothing is left to block the same command."""
    # More epochs than it can finish before the signal, however fast tiny epochs get.
    args = ["train", str(ws / "data"), "--layers", "16", "--batch-size", "16", "--bptt", "4", "--epochs", "1000000"]
    run = ws / "run-kept"
    proc = subprocess.Popen([sys.executable, "-m", "rnnrec_cli", *args, "-o", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    err = _terminate_when(proc, lambda: (run / "checkpoints" / "last.msgpack").is_file())
    assert proc.returncode == 143, err
    assert f"Error: terminated (SIGTERM); continue where it stopped with: rnnrec train --resume {run}" in err
    assert (run / "checkpoints" / "last.msgpack").is_file() and not (run / "COMPLETE").exists()

    fresh = ws / "run-fresh"
    proc = subprocess.Popen([sys.executable, "-m", "rnnrec_cli", *args, "-o", str(fresh)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    err = _terminate_when(proc, lambda: (fresh / "config.json").is_file())
    assert proc.returncode == 143, err
    assert "Error: terminated (SIGTERM) before the first checkpoint; nothing was kept" in err
    assert not fresh.exists()
