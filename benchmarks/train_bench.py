"""Training throughput: events/s of the jitted train step after compilation, and compile time.

Usage: python benchmarks/train_bench.py [--items 50000] [--hidden 100,224] [--batch 64,256]

Builds a synthetic session log (Zipf item popularity, sessions of 2-20 events) in memory and
times `train_step` alone on its session-parallel stream, the way `rnnrec train` runs it.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import numpy as np

from rnnrec_cli import model
from rnnrec_cli.batches import session_parallel
from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data import Sequences
from rnnrec_cli.train import init_state, make_optimizer, train_step


def synthetic_sequences(n_items: int, n_events: int, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.zipf(1.8, size=n_events // 3) + 1, 20)
    lengths = lengths[np.cumsum(lengths) <= n_events]
    items = (rng.zipf(1.2, size=int(lengths.sum())) - 1) % n_items
    return Sequences(items=items.astype(np.int32), offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64))


def bench(cfg: RunConfig, seqs: Sequences, max_chunks: int) -> tuple[float, float]:
    tx = make_optimizer(cfg.train)
    state = init_state(cfg, tx)
    step = jax.jit(partial(train_step, cfg=cfg, tx=tx), donate_argnums=(0, 1))
    stream = session_parallel(seqs, cfg.train.batch_size, cfg.train.bptt)
    chunks = [c.as_tuple() for _, c in zip(range(max_chunks + 1), stream.chunks(), strict=False)]
    carry = model.zero_carry(cfg.model, cfg.train.batch_size)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    state, carry, m = step(state, carry, chunks[0], key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    events = 0
    t0 = time.perf_counter()
    for c in chunks[1:]:
        state, carry, m = step(state, carry, c, key)
        events += int(c[2].sum())
    jax.block_until_ready(state)
    return events / (time.perf_counter() - t0), compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--hidden", default="100,224")
    p.add_argument("--batch", default="64,256")
    p.add_argument("--bptt", type=int, default=10)
    p.add_argument("--chunks", type=int, default=30, help="timed chunks per setting")
    args = p.parse_args()
    seqs = synthetic_sequences(args.items, args.events)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.items:,} items; full-softmax CE")
    print(f"{'hidden':>6} {'batch':>5} {'events/s':>10} {'compile s':>9}")
    for h in map(int, args.hidden.split(",")):
        for b in map(int, args.batch.split(",")):
            cfg = RunConfig(
                data_dir="-",
                n_items=args.items,
                model=ModelConfig(layers=(h,)),
                train=TrainConfig(batch_size=b, bptt=args.bptt),
            )
            eps, comp = bench(cfg, seqs, args.chunks)
            print(f"{h:>6} {b:>5} {eps:>10,.0f} {comp:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
