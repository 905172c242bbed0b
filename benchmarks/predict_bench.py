"""Prediction throughput in sessions/s: top-20 after the last event, and --generate 10 with
greedy and beam-5 search, over a 50k-item catalogue.

Usage: python benchmarks/predict_bench.py [--items 50000] [--sessions 20000] [--modes top-20,greedy,beam]

Random parameters and random sessions of 2-20 events; times `predict.recommend` (the jitted
batch scoring the CLI uses) after one warm-up batch per mode.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from rnnrec_cli.config import ModelConfig
from rnnrec_cli.evaluation.recommend import recommend
from rnnrec_cli.model import network
from rnnrec_cli.options import PredictOptions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--sessions", type=int, default=20_000)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--modes", default="top-20,greedy,beam", help="which of top-20, greedy, beam to time")
    args = p.parse_args()
    cfg = ModelConfig(layers=(args.hidden,))
    params = network.init_params(cfg, args.items, jax.random.key(0))
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, args.items, rng.integers(2, 21), dtype=np.int32) for _ in range(args.sessions)]
    allowed = np.ones(args.items, bool)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.items:,} items, {args.sessions:,} sessions")
    modes = {
        "top-20": ("top-20", PredictOptions(k=20)),
        "greedy": ("generate 10 greedy", PredictOptions(generate=10)),
        "beam": ("generate 10 beam 5", PredictOptions(generate=10, strategy="beam", beams=5, batch_size=64)),
    }
    for mode in args.modes.split(","):
        if mode not in modes:
            p.error(f"--modes: {mode!r} is not one of {', '.join(modes)}")
        name, opts = modes[mode]
        recommend(params, cfg, seqs[: opts.batch_size * 2], opts, allowed)  # compile every length bucket seen
        recommend(params, cfg, seqs[:2000], opts, allowed)
        t0 = time.perf_counter()
        recommend(params, cfg, seqs, opts, allowed)
        dt = time.perf_counter() - t0
        print(f"{name:>20}: {len(seqs) / dt:>9,.0f} sessions/s", flush=True)


if __name__ == "__main__":
    main()
