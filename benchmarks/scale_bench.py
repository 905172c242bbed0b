"""Scale-out numbers: training events/s over 1, 2, 4 (forced CPU) devices, the input pipeline
alone, and a large end-to-end run (prepare + one epoch) with wall time and peak RSS.

Usage:
  python benchmarks/scale_bench.py devices [--events 1000000] [--layers 100] [--batch 256]
  python benchmarks/scale_bench.py input --data DATA_DIR [--batch 256] [--chunks 2000]
  python benchmarks/scale_bench.py e2e [--events 100000000] [--layers 64] [--batch 512]

`devices` runs the real `rnnrec train` (one epoch, validation on 500 sequences) in a fresh
process per count with XLA_FLAGS=--xla_force_host_platform_device_count=4, and reads the
epoch's training events/s from metrics.jsonl. On a machine with P physical cores a speed-up
above P is impossible: fake CPU devices share the cores. `input` times what the host does per
chunk (slots laid out, items gathered, negatives drawn, arrays placed on the device) without
the train step. Logs are made by benchmarks/make_synthetic.py into --workdir and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def synthetic_data(workdir: Path, events: int) -> Path:
    """A prepared data directory of `events` synthetic events (made once)."""
    log = workdir / f"events-{events}.csv"
    data = workdir / f"data-{events}"
    if not log.exists():
        subprocess.run([sys.executable, HERE / "make_synthetic.py", "--events", str(events), "--out", log], check=True)
    if not (data / "manifest.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "rnnrec_cli", "prepare", str(log), "-o", str(data), "-q"], check=True)
    return data


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, peak RSS GiB, process) of a command run under /usr/bin/time -v."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, int(rss.group(1)) / 2**20 if rss else float("nan"), proc


def train_cmd(data: Path, out: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "rnnrec_cli", "train", str(data), "-o", str(out), "--force", "-q",
        "--epochs", "1", "--layers", args.layers, "--batch-size", str(args.batch), "--valid-sample", "500",
        "--checkpoint-every", "0", "--loss", "ce", "--lr", "0.05", *extra,
    ]  # fmt: skip


def devices(args: argparse.Namespace) -> None:
    data = synthetic_data(args.workdir, args.events)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    print(f"GRU {args.layers}, batch {args.batch}, {args.events:,}-event synthetic log, {os.cpu_count()} CPU cores")
    print(f"{'devices':>7} {'events/s':>10} {'speed-up':>8} {'efficiency':>10} {'epoch s':>8}")
    base = None
    for n in (1, 2, 4):
        out = args.workdir / f"scale-run-{n}"
        timed(train_cmd(data, out, args, "--devices", str(n)), env)
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        eps = record["train/events_per_s"]
        base = base or eps
        print(f"{n:>7} {eps:>10,.0f} {eps / base:>8.2f} {eps / base / n:>10.2f} {record['seconds']:>8.1f}", flush=True)


def input_pipeline(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
    from rnnrec_cli.data.batches import chunk_negatives, epoch_stream, load_train_data, sampling_distribution
    from rnnrec_cli.data.sequences import load_manifest, read_items
    from rnnrec_cli.model.step import make_optimizer
    from rnnrec_cli.training.checkpoint import make_trainer

    data = args.data or synthetic_data(args.workdir, args.events)
    t0 = time.perf_counter()
    train = load_train_data(data)
    read_s = time.perf_counter() - t0
    n_events = int(train.lengths.sum())
    cfg = RunConfig(
        data_dir=str(data),
        n_items=int(load_manifest(data)["n_items"]),
        model=ModelConfig(layers=(int(args.layers),)),
        train=TrainConfig(batch_size=args.batch),
    )
    trainer, _ = make_trainer(cfg, make_optimizer(cfg.train))
    counts = read_items(data).sort("idx")["count"].to_numpy()
    cdf = np.cumsum(sampling_distribution(counts, cfg.train.sample_alpha))
    t0 = time.perf_counter()
    stream = epoch_stream(cfg, train, 1, range(args.batch))
    layout_s = time.perf_counter() - t0
    n = min(args.chunks, stream.n_chunks)
    events = 0
    t0 = time.perf_counter()
    for k in range(n):
        chunk = stream.chunk(k)
        batch = trainer.batch(chunk, chunk_negatives(cfg, cdf, 1, k), args.batch)
        events += int(chunk.mask.sum())
    jax.block_until_ready(batch)
    chunk_s = time.perf_counter() - t0
    print(f"{data}: {n_events:,} training events in {len(train.lengths):,} sequences")
    print(f"read Parquet (seq, item)  {read_s:7.2f} s  {n_events / read_s:>12,.0f} events/s")
    print(f"slot layout               {layout_s:7.2f} s  {n_events / layout_s:>12,.0f} events/s")
    shape = f"{n} x {cfg.train.bptt} x {args.batch}"
    print(f"chunks to device ({shape}) {chunk_s:7.2f} s  {events / chunk_s:>12,.0f} events/s")


def e2e(args: argparse.Namespace) -> None:
    log = args.workdir / f"events-{args.events}.csv"
    if not log.exists():
        subprocess.run(
            [sys.executable, HERE / "make_synthetic.py", "--events", str(args.events), "--out", log], check=True
        )
    data = args.workdir / f"data-{args.events}"
    shutil.rmtree(data, ignore_errors=True)
    print(f"{args.events:,} events ({log.stat().st_size / 2**30:.2f} GiB CSV), GRU {args.layers}, batch {args.batch}")
    wall, rss, _ = timed([sys.executable, "-m", "rnnrec_cli", "prepare", str(log), "-o", str(data), "-q"])
    print(f"prepare            {wall:8.1f} s   peak RSS {rss:6.2f} GiB", flush=True)
    out = args.workdir / f"e2e-run-{args.events}"
    wall, rss, _ = timed(train_cmd(data, out, args, "--n-sample", str(args.n_sample)))
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    print(
        f"train (one epoch)  {wall:8.1f} s   peak RSS {rss:6.2f} GiB   {record['train/events_per_s']:,.0f} events/s, "
        f"epoch loop {record['seconds']:.0f} s, valid mrr@20 {record.get('valid/mrr@20', float('nan')):.4f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["devices", "input", "e2e"])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rnnrec-bench"))
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--data", type=Path, default=None, help="input: a prepared data directory to read")
    p.add_argument("--layers", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--n-sample", type=int, default=2048)
    p.add_argument("--chunks", type=int, default=2000)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    defaults = {"devices": (1_000_000, "100", 256), "input": (10_000_000, "100", 256), "e2e": (100_000_000, "64", 512)}
    events, layers, batch = defaults[args.part]
    args.events, args.layers, args.batch = args.events or events, args.layers or layers, args.batch or batch
    {"devices": devices, "input": input_pipeline, "e2e": e2e}[args.part](args)


if __name__ == "__main__":
    main()
