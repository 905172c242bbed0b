"""Whether a stored evaluation still describes its run: the same run, the same best checkpoint,
the same data. Each result records what it scored (`EvalResult.provenance`); report and compare
say when a result is stale rather than show an earlier model's numbers as the run's."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from rnnrec_cli import rundir
from rnnrec_cli.rundir import RunDir


@functools.lru_cache(maxsize=64)
def _hash(path: str, mtime_ns: int, size: int) -> str:
    # Keyed by the file's modification time and size: a checkpoint rewritten since is hashed again.
    return rundir.sha256(Path(path))


def file_hash(path: Path) -> str | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return _hash(str(path), st.st_mtime_ns, st.st_size)


def _best_epoch(run: RunDir) -> int | None:
    improved = [r["epoch"] for r in rundir.read_metrics(run) if r.get("best", True)]
    return improved[-1] if improved else None


def stale_notes(run: RunDir, result: dict[str, Any], where: Path | str) -> list[str]:
    """What no longer holds of the stored result at `where` (empty when it all holds, and for a
    result written before results recorded what they scored)."""
    prov = result.get("provenance")
    if not isinstance(prov, dict):
        return []
    again = f"evaluate it again (rnnrec evaluate {run.path})"
    made_for = prov.get("run_id")
    if isinstance(made_for, str) and made_for and made_for != rundir.run_id(run):
        return [f"{where} was made for another run (its run_id differs from {run.config}'s): {again}"]
    notes = []
    checkpoint = prov.get("checkpoint")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("sha256"), str):
        name = str(checkpoint.get("name") or "best")
        if file_hash(run.checkpoint(name)) != checkpoint["sha256"]:
            epoch = checkpoint.get("epoch")
            scored = f"the {name} checkpoint of epoch {epoch}" if isinstance(epoch, int) else f"an earlier {name}"
            now = _best_epoch(run)
            # The epoch as metrics.jsonl tells it: said only when it tells something new.
            since = f" (the run's best epoch is now {now})" if now is not None and now != epoch else ""
            changed = f"the run's {name} checkpoint has changed since{since}"
            notes.append(f"{where} is stale: it scored {scored}, and {changed}; {again}")
    data = prov.get("data_manifest_sha256")
    if isinstance(data, str) and run.data_manifest.is_file() and file_hash(run.data_manifest) != data:
        notes.append(f"{where} scored other data than {run.path} was trained on (its data manifest differs); {again}")
    return notes
