"""The compiled programs a process keeps: `make_room` drops them, and the memory mappings they
hold, past its share of the kernel's limit; runs in one process that drop them train, evaluate
and predict exactly as runs that do not."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.serialization import msgpack_restore

from rnnrec_cli import compiled

from .conftest import cli_ok, prepare_synthetic

pytestmark = pytest.mark.skipif(compiled.map_limit() is None, reason="no /proc/sys/vm/max_map_count (not Linux)")


def test_make_room_drops_the_compiled_programs_and_their_mappings_past_its_share() -> None:
    f = jax.jit(lambda x, n: x * n + jnp.sin(x) ** n, static_argnums=1)
    before = compiled.map_count()
    for n in range(40):
        f(jnp.ones(8), n).block_until_ready()
    grown = compiled.map_count()
    assert before is not None and grown is not None and grown > before  # each program maps its code
    assert not compiled.make_room(share=1.0) and f._cache_size() == 40
    assert compiled.make_room(share=0.0)
    after = compiled.map_count()
    assert f._cache_size() == 0 and after is not None and after < grown


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_runs_that_drop_the_compiled_programs_train_evaluate_and_predict_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = prepare_synthetic(tmp_path)
    tiny = ["--layers", "16", "--epochs", "2", "--batch-size", "8", "--bptt", "4", "--seed", "3", "-q"]
    results, drops = {}, []
    clear = jax.clear_caches
    monkeypatch.setattr(jax, "clear_caches", lambda: (drops.append(1), clear()))
    # 1.0: none drops them (however many this worker's earlier tests left); 0.0: every train,
    # evaluate and predict drops them first.
    for share in (1.0, 0.0):
        monkeypatch.setattr(compiled, "MAPS_SHARE", share)
        drops.clear()
        run = tmp_path / f"run-{share}"
        cli_ok(["train", str(data), "-o", str(run), *tiny])
        result = json.loads(cli_ok(["evaluate", str(run), "--json", "-q"]))
        recs = cli_ok(["predict", str(run), str(tmp_path / "events.csv"), "-k", "5", "-q"])
        losses = [(m["epoch"], m["train/loss"], m["valid/mrr@20"], m["valid/recall@20"]) for m in _metrics(run)]
        assert len(drops) == (0 if share else 3)  # train, evaluate, predict
        best = msgpack_restore((run / "checkpoints" / "best.msgpack").read_bytes())["params"]
        results[share] = (losses, result["metrics"], recs, best)
    (losses, metrics, recs, best), dropped = results[1.0], results[0.0]
    assert len(losses) == 2 and recs.count("\n") > 10
    assert (losses, metrics, recs) == dropped[:3]
    # The checkpoints differ only in the run id each names.
    assert jax.tree.all(jax.tree.map(np.array_equal, best, dropped[3]))
