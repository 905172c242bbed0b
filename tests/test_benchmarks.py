"""Every benchmark script runs, once, at a tiny size and in this process: no timing is asserted,
this only keeps the scripts from rotting as the code they measure changes."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
from pathlib import Path

import pytest

from .conftest import REPO

BENCH = REPO / "benchmarks"


def _run(tmp_path: Path, script: str, *args: str) -> str:
    """The script as `python benchmarks/SCRIPT ARGS` runs it, but in this process: no interpreter
    and JAX start-up per script."""
    argv, cwd, path = sys.argv, os.getcwd(), list(sys.path)
    out = io.StringIO()
    try:
        sys.argv = [str(BENCH / script), *args]
        sys.path.insert(0, str(BENCH))
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(BENCH / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path
        os.chdir(cwd)
    return out.getvalue()


CASES = {
    "make_synthetic": ("make_synthetic.py", "--events", "3000", "--items", "200", "--categories", "10", "--out", "e.csv"),
    "train_bench": ("train_bench.py", "--quick"),
    "train_bench_bprmax": ("train_bench.py", "--quick", "--loss", "bpr-max"),
    "eval_bench": ("eval_bench.py", "--items", "300", "--events", "300", "--hidden", "16", "--exclude-seen",
                   "--repeat", "2", "--choice"),
    "predict_bench": ("predict_bench.py", "--items", "300", "--sessions", "100", "--hidden", "16"),
    "prepare_bench": ("prepare_bench.py", "--events", "3000", "--workdir", "pb"),
    "scale_bench devices": ("scale_bench.py", "devices", "--events", "3000", "--layers", "8", "--batch", "8", "--workdir", "sc"),
    "event_bench": ("event_bench.py", "--users", "60", "--items", "40", "--epochs", "1", "--layers", "16", "--workdir", "ev"),
    "features_bench": ("features_bench.py", "--quick", "--epochs", "1", "--layers", "16", "--workdir", "fb"),
    "defaults_bench": ("defaults_bench.py", "--quick", "--candidates", "A-ce", "E-bprmax-lr03", "--workdir", "db"),
    "repeat_bench": ("repeat_bench.py", "--quick", "--betas", "0,1000"),
    "movielens_split": ("movielens_split.py", str(REPO / "datasets" / "ml-latest-small" / "ratings.csv"), "-o", "ml"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_benchmark_runs(tmp_path: Path, case: str) -> None:
    out = _run(tmp_path, *CASES[case])
    assert out.strip(), "a benchmark prints its numbers"


def test_every_benchmark_script_is_run_here() -> None:
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {args[0] for args in CASES.values()}


def test_movielens_split_trains_on_the_users_who_finished_first(tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.csv"
    # Users 1-10; user u's last rating at time 100 - u, so users 10, 9, ... finish first.
    rows = [f"{u},{u * 10 + k},4.0,{100 - u - 5 + k}" for u in range(1, 11) for k in range(6)]
    ratings.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    out = _run(tmp_path, "movielens_split.py", str(ratings), "-o", "split", "--share", "0.8")
    assert "8 users" in out and "2 users" in out
    train = (tmp_path / "split" / "train.tsv").read_text().splitlines()
    test = (tmp_path / "split" / "test.tsv").read_text().splitlines()
    assert train[0] == test[0] == "SessionId\tItemId\tTime"
    assert {int(line.split("\t")[0]) for line in test[1:]} == {1, 2}
    assert {int(line.split("\t")[0]) for line in train[1:]} == set(range(3, 11))
    assert len(train) - 1 == 8 * 6 and len(test) - 1 == 2 * 6
