"""What a repeat score would add to a trained run: the session's own items boosted at ranking time.

For each target of a split, the run's full-catalogue scores s (as `rnnrec evaluate` computes
them) are raised by beta * sd(s) * f(item) for the items the session already holds, with f the
indicator (`seen`) or log(1 + times seen) (`count`), and Recall@20 / MRR@20 are recomputed
(conservative ties, as `evaluate`). beta 0 is the run as it is; a large beta ranks the session's
own items first, ordered by f, then by the model.

The beta is chosen on the split itself here, so the best row is an upper bound of what a repeat
score tuned elsewhere could give, not a result: it measures how much of a dataset's signal the
model misses in repeats (Tmall: much; #nowplaying: none). `--split train --last N` scores the
last N training sequences, which the model has trained on.

    python benchmarks/repeat_bench.py RUN [--data DATA] [--split test] [--betas 0,1,2,5,1000]
    python benchmarks/repeat_bench.py --quick      (a tiny synthetic run: checks the script runs)
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rnnrec_cli.data.sequences import Sequences

K = 20


def _last(seqs: Sequences, n: int) -> Sequences:
    """The last `n` sequences of `seqs`, without values, event types or scored marks."""
    k = max(len(seqs) - n, 0)
    off = seqs.offsets
    keep = {f.name: None for f in dataclasses.fields(seqs) if f.name in ("values", "events", "scored")}
    return dataclasses.replace(seqs, items=seqs.items[off[k] :], offsets=off[k:] - off[k], **keep)


def repeat_table(
    run_dir: Path, data: Path | None, split: str, last: int, betas: list[float]
) -> list[tuple[str, float, float, float]]:
    from rnnrec_cli.data.sequences import read_sequences
    from rnnrec_cli.evaluation import scoring
    from rnnrec_cli.model import network
    from rnnrec_cli.model.weights import restore_model
    from rnnrec_cli.rundir import RunDir, data_dir, load_config

    run = RunDir(run_dir)
    cfg = load_config(run)
    params, features, _ = restore_model(run, cfg)
    seqs = read_sequences(data or data_dir(run, cfg), split)
    if last:
        seqs = _last(seqs, last)
    place, batch, p, stream, carry, placed = scoring._placed_stream(params, cfg, seqs, 1, features)
    hidden, where = [], []
    for h, pos in scoring._hidden_rows(place, batch, p, stream, carry, placed, cfg):
        if seqs.scored is not None:
            h, pos = h[seqs.scored[pos]], pos[seqs.scored[pos]]
        hidden.append(h)
        where.append(pos)
    h_all, pos_all = np.concatenate(hidden), np.concatenate(where)
    kernel, bias = (np.asarray(x) for x in network.output_layer(params, cfg.model, placed))
    kernel, bias = kernel[: cfg.n_items], bias[: cfg.n_items]
    first = np.repeat(seqs.offsets[:-1], seqs.lengths)
    sums = {(f, b): [0.0, 0.0] for f in ("seen", "count") for b in betas}
    for i in range(0, len(pos_all), 512):
        pos = pos_all[i : i + 512]
        s = h_all[i : i + 512] @ kernel.T + bias
        rows = np.arange(len(pos))
        counts = np.zeros_like(s)
        for r, p_r in enumerate(pos):
            np.add.at(counts[r], seqs.items[first[p_r] : p_r], 1.0)
        sd = s.std(axis=1, keepdims=True)
        targets = seqs.items[pos]
        for name, f in (("seen", (counts > 0).astype(np.float32)), ("count", np.log1p(counts))):
            for b in betas:
                a = s + b * sd * f
                at = a[rows, targets][:, None]
                rank = 1 + (a > at).sum(1) + (a == at).sum(1) - 1  # conservative ties, as evaluate
                hit = rank <= K
                sums[(name, b)][0] += hit.sum()
                sums[(name, b)][1] += (hit / rank).sum()
    n = max(len(pos_all), 1)
    return [(f, b, r / n, m / n) for (f, b), (r, m) in sums.items()]


def _quick(work: Path) -> Path:
    """A tiny synthetic session log with repeats, prepared and trained for 1 epoch."""
    from _cli import rnnrec

    rng = np.random.default_rng(0)
    work.mkdir(parents=True, exist_ok=True)
    rows = ["SessionId\tItemId\tTime"]
    for s in range(150):
        items = rng.integers(0, 40, 3)
        for p in range(int(rng.integers(2, 8))):
            rows.append(f"{s}\t{int(rng.choice(items))}\t{s * 100 + p}")
    (work / "events.tsv").write_text("\n".join(rows) + "\n")
    rnnrec("prepare", str(work / "events.tsv"), "--preset", "gru4rec", "-o", str(work / "data"), "-q")
    rnnrec("train", str(work / "data"), "-o", str(work / "run"), "--epochs", "1", "--layers", "16",
           "--batch-size", "16", "--n-sample", "16", "-q")  # fmt: skip
    return work / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", type=Path, help="a trained run directory")
    parser.add_argument("--data", type=Path, help="data directory [default: the run's]")
    parser.add_argument("--split", default="test")
    parser.add_argument("--last", type=int, default=0, help="only the last N sequences of the split")
    parser.add_argument(
        "--betas", type=lambda s: [float(x) for x in s.split(",")], default=[0, 0.5, 1, 2, 3, 5, 8, 1000]
    )
    parser.add_argument("--quick", action="store_true", help="a tiny synthetic run, trained here")
    args = parser.parse_args()
    if args.quick:
        args.run = _quick(Path("repeat-bench"))
    if args.run is None:
        parser.error("give a RUN directory (or --quick)")
    table = repeat_table(args.run, args.data, args.split, args.last, args.betas)
    print(f"{args.run}, {args.split} split: the session's own items raised by beta x the row's score sd x f(item)")
    print(f"| f | beta | Recall@{K} | MRR@{K} |")
    print("|---|---|---|---|")
    for f, b, recall, mrr in table:
        print(f"| {f} | {b:g} | {recall:.4f} | {mrr:.4f} |")
    best = max(table, key=lambda row: row[3])
    print(f"best MRR@{K} on this split (an upper bound: beta chosen on it): f {best[0]}, beta {best[1]:g}, "
          f"{best[2]:.4f} / {best[3]:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
