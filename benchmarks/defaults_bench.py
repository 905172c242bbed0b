"""Candidate defaults on real session datasets with a given test split (GRU4Rec's TSV format).

For each dataset DIR (holding train.tsv[.gz] and test.tsv[.gz]) and each candidate (extra
`rnnrec train` flags, each naming its loss and rate), the pipeline a user runs:

    rnnrec prepare DIR/train.tsv --test DIR/test.tsv --preset gru4rec -o WORK/data-NAME
    rnnrec train WORK/data-NAME -o WORK/runs/NAME-CANDIDATE-sSEED --epochs E --seed SEED FLAGS
    rnnrec evaluate WORK/runs/NAME-CANDIDATE-sSEED --baselines none

then a table of test Recall@20 and MRR@20 (the mean over --seeds and, with several, their
range), the training seconds, and for each metric the candidate that wins on most datasets.
Finished runs are kept in WORK and not trained again, so an interrupted study continues.

    python benchmarks/defaults_bench.py --data ../shared/data/retailrocket-sessions \\
        ../shared/data/nowplaying-sessions ../shared/data/tmall-sessions --seeds 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from _cli import rnnrec

# Each candidate names its loss and rate, so a figure does not move when the defaults do.
# E is today's defaults; A was the defaults until 2026-12-06.
_CE = ["--loss", "ce", "--lr", "0.05"]
_BPR_MAX = ["--loss", "bpr-max", "--elu", "0.5", "--bpreg", "1.95"]
CANDIDATES: dict[str, list[str]] = {
    "A-ce": _CE,
    "B-ce-bptt1": [*_CE, "--bptt", "1"],
    "C-ce-noembdrop": [*_CE, "--dropout-embed", "0"],
    "D-bprmax-lr05": [*_BPR_MAX, "--lr", "0.05"],
    "E-bprmax-lr03": [*_BPR_MAX, "--lr", "0.03"],
}
METRICS = ("recall@20", "mrr@20")


def _split_file(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.tsv", folder / f"{name}.tsv.gz"):
        if candidate.is_file():
            return candidate
    sys.exit(f"{folder} has no {name}.tsv or {name}.tsv.gz")


def _tiny(work: Path) -> list[Path]:
    """Two tiny session datasets in GRU4Rec's format (for the test of this script)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for name in ("tiny-a", "tiny-b"):
        folder = work / "source" / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, sessions, start in (("train", 120, 0), ("test", 30, 1000)):
            rows = ["SessionId\tItemId\tTime"]
            for s in range(start, start + sessions):
                item = int(rng.integers(30))
                for p in range(int(rng.integers(2, 7))):
                    rows.append(f"{s}\t{item}\t{s * 100 + p}")
                    item = (item + 1) % 30
            (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        out.append(folder)
    return out


def run_one(data: Path, run: Path, epochs: int, seed: int, flags: list[str], extra: list[str]) -> dict[str, float]:
    result = run / "eval" / "default" / "test.json"
    if not result.is_file():
        t0 = time.perf_counter()
        rnnrec("train", str(data), "-o", str(run), "--epochs", str(epochs), "--seed", str(seed), "-q", "--force",
               *extra, *flags)  # fmt: skip
        seconds = time.perf_counter() - t0
        rnnrec("evaluate", str(run), "--baselines", "none", "--bootstrap", "200", "-q", "--force")
        (run / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
    metrics = json.loads(result.read_text())["metrics"]
    seconds_file = run / "train_seconds.txt"
    seconds = float(seconds_file.read_text()) if seconds_file.is_file() else float("nan")
    return {**{m: metrics[m] for m in METRICS}, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", type=Path, default=[], help="dataset folders (train.tsv, test.tsv)")
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument("--workdir", type=Path, default=Path("defaults-bench"))
    parser.add_argument("--quick", action="store_true", help="two tiny synthetic datasets, 1 epoch, GRU 16")
    args = parser.parse_args()
    work = args.workdir
    folders, extra, epochs = args.data, [], args.epochs
    if args.quick:
        folders, extra, epochs = _tiny(work), ["--layers", "16", "--batch-size", "16", "--n-sample", "32"], 1
    if not folders:
        parser.error("give --data FOLDER ... (or --quick)")
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for folder in folders:
        name = folder.name.removesuffix("-sessions")
        data = work / f"data-{name}"
        if not (data / "manifest.json").is_file():
            shutil.rmtree(data, ignore_errors=True)
            rnnrec("prepare", str(_split_file(folder, "train")), "--test", str(_split_file(folder, "test")),
                   "--preset", "gru4rec", "-o", str(data), "-q")  # fmt: skip
        for cand in args.candidates:
            for seed in args.seeds:
                run = work / "runs" / f"{name}-{cand}-s{seed}"
                rows.setdefault((name, cand), []).append(run_one(data, run, epochs, seed, CANDIDATES[cand], extra))

    print(f"| dataset | candidate | flags | {' | '.join(METRICS)} | train s |")
    print("|---|---|---|" + "---|" * (len(METRICS) + 1))
    for (name, cand), results in rows.items():
        cells = []
        for m in METRICS:
            values = [r[m] for r in results]
            spread = f" ({min(values):.4f}-{max(values):.4f})" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.4f}{spread}")
        seconds = statistics.mean(r["seconds"] for r in results)
        flags = " ".join(CANDIDATES[cand]) or "(defaults)"
        print(f"| {name} | {cand} | {flags} | {' | '.join(cells)} | {seconds:.0f} |")
    datasets = list(dict.fromkeys(name for name, _ in rows))
    for m in METRICS:
        wins = Counter(
            max(args.candidates, key=lambda c, n=n: statistics.mean(r[m] for r in rows[(n, c)])) for n in datasets
        )
        counted = ", ".join(f"{c} ({k} of {len(datasets)})" for c, k in wins.most_common())
        print(f"{m}: best on most datasets: {counted}")


if __name__ == "__main__":
    main()
