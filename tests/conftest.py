"""Shared fixtures: tiny synthetic event logs with structure an RNN can learn."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

# Pin Rich's rendering so CLI output does not depend on the terminal running the tests.
os.environ.setdefault("COLUMNS", "200")
os.environ["NO_COLOR"] = "1"
os.environ["TERM"] = "dumb"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same tiny models again and again (in-process, in xdist workers and in the CLI
# subprocesses they start): one compilation cache for the whole session, shared through the
# environment, makes the suite about a third faster. It only skips recompiling identical programs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="rnnrec-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

REPO = Path(__file__).resolve().parent.parent


def synthetic_log(
    n_users: int = 60,
    n_items: int = 40,
    sessions_per_user: int = 4,
    seed: int = 0,
    follow: float = 0.9,
) -> pl.DataFrame:
    """Users with sessions 1 h apart; within a session the next item is (item + 1) mod n_items
    with probability `follow`, else random. Timestamps are unix seconds, 60 s apart in a session.
    """
    rng = np.random.default_rng(seed)
    rows = []
    t = 1_700_000_000
    for u in range(n_users):
        for _ in range(sessions_per_user):
            length = int(rng.integers(3, 9))
            item = int(rng.integers(n_items))
            for _ in range(length):
                rows.append((f"u{u}", item, t))
                t += 60
                item = (item + 1) % n_items if rng.random() < follow else int(rng.integers(n_items))
            t += 3600 * 2
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


@pytest.fixture
def log_csv(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv"
    synthetic_log().write_csv(path)
    return path


def write_data_dir(path: Path, splits: dict[str, list[list[int]]], n_items: int) -> Path:
    """A minimal prepared data directory from index sequences (what `rnnrec prepare` writes)."""
    path.mkdir(parents=True, exist_ok=True)
    for split, part in splits.items():
        pl.DataFrame(
            {"seq": [i for i, s in enumerate(part) for _ in s], "item": [x for s in part for x in s]},
            schema={"seq": pl.Int64, "item": pl.Int32},
        ).write_parquet(path / f"{split}.parquet")
    counts = np.bincount([x for s in splits["train"] for x in s], minlength=n_items)
    pl.DataFrame(
        {"idx": np.arange(n_items, dtype=np.int32), "item_id": np.arange(n_items), "count": np.maximum(counts, 1)}
    ).write_parquet(path / "items.parquet")
    (path / "manifest.json").write_text(json.dumps({"n_items": n_items, "config": {}}))
    return path


def cli_ok(args: list[str], **kw) -> str:
    """Run the CLI in-process; fail the test with its output unless it exits 0. Returns stdout."""
    from typer.testing import CliRunner

    from rnnrec_cli.cli.app import app

    result = CliRunner().invoke(app, args, **kw)
    assert result.exit_code == 0, result.output
    return result.stdout


def prepare_synthetic(folder: Path, n_users: int = 60, n_items: int = 40) -> Path:
    """events.csv (synthetic_log) and data/ prepared from it in `folder`: the last 20% of the time
    as test, the 10% before as validation. Returns the data directory."""
    synthetic_log(n_users=n_users, n_items=n_items).write_csv(folder / "events.csv")
    args = ["prepare", str(folder / "events.csv"), "-o", str(folder / "data"), "--split", "time:0.2", "--valid", "0.1"]
    cli_ok([*args, "-q"])
    return folder / "data"


def stacked(stream):
    """Every chunk of a stream stacked: [n_steps, B] arrays (small data only)."""
    from rnnrec_cli.data.batches import Batch

    parts = [stream.chunk(k) for k in range(stream.n_chunks)]
    fields = zip(*parts, strict=True)
    return Batch(*(None if x[0] is None else np.concatenate(x) for x in fields))


def pairs_in_slots(stream) -> int:
    """Real (input, target) pairs in the stream's slots, from its layout."""
    p, slots = stream.plan, stream.slots
    return int(p.n_pairs[(p.slot >= slots.start) & (p.slot < slots.stop)].sum())
