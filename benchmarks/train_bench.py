"""Training speed: the jitted step alone, and the whole `rnnrec train` epoch a user waits for.

Usage:
  python benchmarks/train_bench.py [--sizes 100x64,224x80] [--items 50000] [--events 300000]
  python benchmarks/train_bench.py --data DATA_DIR      (e.g. the prepared RetailRocket split)
  python benchmarks/train_bench.py --quick              (tiny sizes: checks the script runs)

- step: `train_step` alone after compilation, on a synthetic session log (Zipf item popularity,
  sessions of 2-20 events), batches prepared beforehand;
- epoch: `train.fit` for 2 epochs on a prepared data directory (the synthetic log written as one,
  or --data), as `rnnrec train` runs it: events/s of the second epoch, which excludes validation
  and compilation, then the compile and validation seconds.

Achieved GFLOP/s count XLA's own estimate of the step's floating-point work (`cost_analysis`),
taken of the step compiled with its time scan unrolled (of the rolled loop XLA counts one step).
"of peak" sets them against cores x clock x FP32 FLOP/cycle (see `peak_gflops`, or
--peak-gflops); "of dense" against the rate a large dense product reaches on this machine (a
2048 x 2048 float32 matrix product in XLA, measured at the start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rnnrec_cli import allocator

# As `rnnrec train` does for the same loss, before any library starts a thread (see
# rnnrec_cli.allocator): a thread that allocated before keeps an arena of its own, which XLA's
# threads could share. Read from the command line ahead of argparse for that reason.
allocator.for_training(next((loss for loss in allocator.LARGE_STEP_LOSSES if loss in sys.argv), "ce"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from rnnrec_cli import rundir  # noqa: E402
from rnnrec_cli.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig  # noqa: E402
from rnnrec_cli.data.batches import Batch, session_parallel  # noqa: E402
from rnnrec_cli.data.prepare import prepare  # noqa: E402
from rnnrec_cli.data.sequences import Sequences, load_manifest  # noqa: E402
from rnnrec_cli.model import network  # noqa: E402
from rnnrec_cli.model.step import init_state, item_stats, make_optimizer, train_step  # noqa: E402
from rnnrec_cli.training.fit import fit  # noqa: E402


def synthetic_sequences(n_items: int, n_events: int, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.zipf(1.8, size=n_events // 3) + 1, 20)
    lengths = lengths[np.cumsum(lengths) <= n_events]
    items = (rng.zipf(1.2, size=int(lengths.sum())) - 1) % n_items
    return Sequences(items=items.astype(np.int32), offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64))


def cpuinfo() -> str:
    return Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""


def peak_gflops(info: str) -> tuple[float, str]:
    """(GFLOP/s, how): cores x clock (GHz) x FP32 FLOP per cycle: 64 with AVX-512 (two 16-wide
    FMA units), except on AMD's family 25 (Zen 3 and 4), whose two FMA units are 8 wide and run
    AVX-512 in halves, and on CPUs without AVX-512: 32."""
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if "MHz" in line]
    flags = next((line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    family = next((line.split(":")[1].strip() for line in info.splitlines() if line.startswith("cpu family")), "")
    amd_256 = "AuthenticAMD" in info and family == "25"
    per_cycle = 64 if "avx512f" in flags and not amd_256 else 32
    cores, ghz = os.cpu_count() or 1, max(mhz) / 1000 if mhz else 2.0
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of XLA's own [n, n] x [n, n] float32 product, the best of `repeats`: the rate
    this machine's dense products reach, to set the step's against."""
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_bench(cfg: RunConfig, seqs: Sequences, n_chunks: int) -> tuple[float, float, float]:
    """(events/s, compile s, GFLOP per chunk) of the step alone."""
    tx = make_optimizer(cfg.train)
    state = init_state(cfg, tx)
    step = jax.jit(partial(train_step, cfg=cfg, tx=tx), donate_argnums=(0, 1))
    stream = session_parallel(seqs, cfg.train.batch_size, cfg.train.bptt)
    rng = np.random.default_rng(0)
    batches: list[Batch] = [
        c._replace(target_pos=None, negatives=rng.integers(0, cfg.n_items, cfg.train.n_sample, dtype=np.int32))
        for _, c in zip(range(n_chunks + 1), stream.chunks(), strict=False)
    ]
    carry = network.zero_carry(cfg.model, cfg.train.batch_size)
    stats = item_stats(np.ones(cfg.n_items), cfg.train.sample_alpha)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = step.lower(state, carry, batches[0], stats, key).compile()
    compile_s = time.perf_counter() - t0
    flops = _chunk_flops(cfg, tx, (state, carry, batches[0], stats, key))
    state, carry, m = compiled(state, carry, batches[0], stats, key)
    jax.block_until_ready(m)
    events = sum(int(b.mask.sum()) for b in batches[1:])
    t0 = time.perf_counter()
    for b in batches[1:]:
        state, carry, m = compiled(state, carry, b, stats, key)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    return events / seconds, compile_s, flops / 1e9 * len(batches[1:]) / seconds


def _chunk_flops(cfg: RunConfig, tx: Any, args: tuple[Any, ...]) -> float:
    """XLA's estimate of one chunk's floating-point work, from the step compiled with its time
    scan unrolled: the estimate counts a loop's body once, so of the rolled program it counts one
    time step's recurrence per chunk, not `bptt` of them (before 2026-12-07 this script did)."""
    rolled = network.SCAN_UNROLL
    network.SCAN_UNROLL = True
    try:
        cost = jax.jit(partial(train_step, cfg=cfg, tx=tx)).lower(*args).compile().cost_analysis()
    finally:
        network.SCAN_UNROLL = rolled
    return float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))


def synthetic_data_dir(seqs: Sequences, root: Path) -> Path:
    """The synthetic sequences as a prepared data directory (the last 10% of time for validation)."""
    lengths = seqs.lengths
    session = np.repeat(np.arange(len(lengths)), lengths)
    # Sessions one after another, a minute between events: start order = file order.
    ts = np.arange(len(seqs.items), dtype=np.int64) * 60 + session * 3600
    csv = root / "events.csv"
    pl.DataFrame({"session_id": session, "item_id": seqs.items, "ts": ts}).write_csv(csv)
    cfg = PrepareConfig(session_col="session_id", split="time:0.05", valid="0.05", min_item_support=1)
    prepare([str(csv)], root / "data", cfg, force=True)
    return root / "data"


def epoch_bench(cfg: RunConfig, root: Path) -> dict[str, float]:
    run = rundir.create(root / f"run-{cfg.model.layers[0]}x{cfg.train.batch_size}", force=True)
    fit(cfg, run)
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    return {
        "events_per_s": records[-1]["train/events_per_s"],
        "compile_s": records[0].get("compile_seconds", float("nan")),
        "valid_s": records[-1]["valid_seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100x64,224x80", help="GRU units x batch size, comma-separated")
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--data", type=Path, help="a prepared data directory for the epoch part")
    p.add_argument("--chunks", type=int, default=60, help="timed chunks of the step alone")
    p.add_argument("--n-sample", type=int, default=2048)
    # CE at lr 0.05 by default: the loss the published figures were measured with (the training
    # default is BPR-max since 2026-12-06); --loss bpr-max times today's defaults.
    p.add_argument("--loss", choices=("ce", "bpr-max"), default="ce")
    p.add_argument("--peak-gflops", type=float, default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.items, args.events, args.chunks, args.n_sample = "16x8", 300, 3000, 3, 32
    info = cpuinfo()
    peak, how = (args.peak_gflops, "given") if args.peak_gflops else peak_gflops(info)
    side = 256 if args.quick else 2048
    dense = matmul_gflops(side)
    cpu = next((line.split(":")[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    seqs = synthetic_sequences(args.items, args.events)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.loss} over in-batch + {args.n_sample} shared "
          f"negatives; bptt 10\n{cpu}; FP32 peak taken as {peak:.0f} GFLOP/s ({how}); "
          f"a {side} x {side} product runs {dense:.0f} GFLOP/s ({dense / peak:.0%} of peak)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rnnrec-train-bench-") as tmp:
        data = args.data or synthetic_data_dir(seqs, Path(tmp))
        n_items = int(load_manifest(data)["n_items"])
        print(f"step: synthetic, {args.items:,} items; epoch: {data if args.data else 'synthetic'}, {n_items:,} items")
        print(f"{'GRU':>4} {'batch':>5} | {'step ev/s':>9} {'GFLOP/s':>7} {'of peak':>7} {'of dense':>8} "
              f"{'compile s':>9} | {'epoch ev/s':>10} {'compile s':>9} {'valid s':>7}")  # fmt: skip
        for size in args.sizes.split(","):
            hidden, batch = map(int, size.split("x"))
            train = TrainConfig(
                batch_size=batch,
                n_sample=args.n_sample,
                epochs=2,
                checkpoint_every=0,
                loss=args.loss,
                # CE at the rate its figures were measured at; BPR-max at the training default.
                lr=0.05 if args.loss == "ce" else TrainConfig.lr,
            )
            step_cfg = RunConfig(data_dir="-", n_items=args.items, model=ModelConfig(layers=(hidden,)), train=train)
            eps, comp, gflops = step_bench(step_cfg, seqs, args.chunks)
            run_cfg = RunConfig(data_dir=str(data), n_items=n_items, model=ModelConfig(layers=(hidden,)), train=train)
            ep = epoch_bench(run_cfg, Path(tmp))
            step_part = f"{eps:>9,.0f} {gflops:>7.1f} {gflops / peak:>7.0%} {gflops / dense:>8.0%} {comp:>9.2f}"
            epoch_part = f"{ep['events_per_s']:>10,.0f} {ep['compile_s']:>9.2f} {ep['valid_s']:>7.2f}"
            print(f"{hidden:>4} {batch:>5} | {step_part} | {epoch_part}", flush=True)


if __name__ == "__main__":
    main()
