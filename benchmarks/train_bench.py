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
from rnnrec_cli.batches import Batch, session_parallel
from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.sequences import Sequences
from rnnrec_cli.step import init_state, item_stats, make_optimizer, train_step


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
    chunks = [c._replace(target_pos=None) for _, c in zip(range(max_chunks + 1), stream.chunks(), strict=False)]
    carry = model.zero_carry(cfg.model, cfg.train.batch_size)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    stats = item_stats(np.ones(cfg.n_items), cfg.train.sample_alpha)
    rng = np.random.default_rng(0)
    negs = rng.integers(0, cfg.n_items, (len(chunks), cfg.train.n_sample), dtype=np.int32)
    batches: list[Batch] = [c._replace(negatives=negs[i]) for i, c in enumerate(chunks)]
    state, carry, m = step(state, carry, batches[0], stats, key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    events = 0
    t0 = time.perf_counter()
    for c in batches[1:]:
        state, carry, m = step(state, carry, c, stats, key)
        events += int(c.mask.sum())
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
    p.add_argument("--unroll", default="1", help="scan unroll factors to compare, e.g. 1,4")
    p.add_argument("--n-sample", type=int, default=2048)
    p.add_argument("--full-softmax", action="store_true")
    args = p.parse_args()
    seqs = synthetic_sequences(args.items, args.events)
    loss = "full-softmax CE" if args.full_softmax else f"CE over in-batch + {args.n_sample} shared negatives"
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.items:,} items; {loss}; bptt {args.bptt}")
    print(f"{'hidden':>6} {'batch':>5} {'unroll':>6} {'events/s':>10} {'compile s':>9}")
    for h in map(int, args.hidden.split(",")):
        for b in map(int, args.batch.split(",")):
            for unroll in map(int, args.unroll.split(",")):
                model.SCAN_UNROLL = unroll
                cfg = RunConfig(
                    data_dir="-",
                    n_items=args.items,
                    model=ModelConfig(layers=(h,)),
                    train=TrainConfig(
                        batch_size=b, bptt=args.bptt, n_sample=args.n_sample, full_softmax=args.full_softmax
                    ),
                )
                eps, comp = bench(cfg, seqs, args.chunks)
                print(f"{h:>6} {b:>5} {unroll:>6} {eps:>10,.0f} {comp:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
