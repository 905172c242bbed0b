"""Evaluation throughput: full-catalogue ranks + top-20 (target events/s) for the model, and the
baselines' time on a prepared log.

Usage: python benchmarks/eval_bench.py [--items 50000,1000000] [--events 100000] [--exclude-seen]
       [--repeat WEIGHT] [--choice] [--data DATA_DIR]

The model part uses random parameters (speed does not depend on training) and random sequences
of 2-20 events. --exclude-seen times the protocol that removes each sequence's earlier items
from its ranking too, interleaved with the plain one, and --repeat W the repeat boost at weight
W (evaluate --repeat W; random sequences hold few repeats, but the boost's work does not depend
on how many). --choice times training's choice of the repeat weight (its 8 weights scored in one
pass, against each alone). With --data it also times every baseline
on that data directory's test split (e.g. one prepared from benchmarks/make_synthetic.py
--events 1000000).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import numpy as np

from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data.sequences import Sequences, read_items, read_sequences
from rnnrec_cli.evaluation.baselines import BASELINES, baseline_scores
from rnnrec_cli.evaluation.repeats import GRID
from rnnrec_cli.evaluation.scoring import model_scores
from rnnrec_cli.model import network
from rnnrec_cli.options import ScoreOptions


def random_sequences(n_items: int, n_targets: int, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 21, size=n_targets)
    lengths = lengths[np.cumsum(lengths - 1) <= n_targets]
    items = rng.integers(0, n_items, int(lengths.sum()), dtype=np.int32)
    return Sequences(items=items, offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64))


def _protocols(params: network.Params, cfg: RunConfig, args: argparse.Namespace) -> list[tuple[str, Callable]]:
    """What to time: (name, a function of the sequences), the plain protocol first."""

    def one(opts: ScoreOptions, weights: tuple[float, ...] = ()) -> Callable[[Sequences], object]:
        return partial(model_scores, params, cfg, opts=opts, weights=weights)

    out = [("all items", one(ScoreOptions(k=20)))]
    out += [("exclude-seen", one(ScoreOptions(k=20, exclude_seen=True)))] if args.exclude_seen else []
    out += [(f"repeat {args.repeat:g}", one(ScoreOptions(k=20, repeat=args.repeat)))] if args.repeat else []
    if args.choice:
        # Training's choice of the repeat weight: the grid's ranks in one pass over the catalogue,
        # against scoring each weight alone (as before 2026-12-06).
        alone = [one(ScoreOptions(k=0, repeat=b)) for b in GRID]
        out += [("choice 1 pass", one(ScoreOptions(k=0), GRID))]
        out += [("choice 8 pass", lambda s: [f(s) for f in alone])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", default="50000,1000000")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--exclude-seen", action="store_true", help="also time --exclude-seen (interleaved)")
    p.add_argument("--repeat", type=float, default=0.0, help="also time the repeat boost at this weight (interleaved)")
    p.add_argument("--choice", action="store_true", help="also time choosing the repeat weight (its 8 weights)")
    p.add_argument("--data", type=Path)
    args = p.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"{'items':>9} {'protocol':>13} {'targets':>8} {'events/s':>9} {'compile+first s':>15}")
    for n_items in map(int, args.items.split(",")):
        cfg = RunConfig(data_dir="-", n_items=n_items, model=ModelConfig(layers=(args.hidden,)), train=TrainConfig())
        params = network.init_params(cfg.model, n_items, jax.random.key(0))
        warm = random_sequences(n_items, 2_000, seed=1)
        seqs = random_sequences(n_items, args.events)

        protocols = _protocols(params, cfg, args)
        for shown, run in protocols:
            t0 = time.perf_counter()
            run(warm)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            run(seqs)
            dt = time.perf_counter() - t0
            print(f"{n_items:>9,} {shown:>13} {seqs.n_targets:>8,} {seqs.n_targets / dt:>9,.0f} {first:>15.1f}",
                  flush=True)  # fmt: skip
    if args.data:
        train, test = read_sequences(args.data, "train"), read_sequences(args.data, "test")
        counts = read_items(args.data).sort("idx")["count"].to_numpy()
        print(f"\nbaselines on {args.data}: {len(train.items):,} training events, {test.n_targets:,} test targets")
        for name in BASELINES:
            t0 = time.perf_counter()
            baseline_scores(name, train, test, counts, ScoreOptions(k=20))
            print(f"{name:>8} {time.perf_counter() - t0:7.1f} s", flush=True)


if __name__ == "__main__":
    main()
