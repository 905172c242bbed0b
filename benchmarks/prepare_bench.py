"""Wall time and peak memory of `rnnrec prepare` on synthetic logs of given sizes.

Usage: python benchmarks/prepare_bench.py --events 10000000 [--events 100000000] [--workdir /tmp/rnnrec-bench]

Generates each log once (benchmarks/make_synthetic.py), then runs the real command under
/usr/bin/time -v (peak RSS of the process) with a 30-minute inactivity gap and the default
filters and time split.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, action="append", default=None)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rnnrec-bench"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'events':>12} {'CSV MiB':>8} {'wall s':>7} {'peak RSS GiB':>12}  result")
    for n in args.events or [10_000_000]:
        log = args.workdir / f"events-{n}.csv"
        if not log.exists():
            subprocess.run([sys.executable, HERE / "make_synthetic.py", "--events", str(n), "--out", log], check=True)
        out = args.workdir / f"data-{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "rnnrec_cli", "prepare", str(log), "-o", str(out), "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        peak = int(rss.group(1)) / 2**20 if rss else float("nan")
        result = "ok" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1][:80]
        print(f"{n:>12,} {log.stat().st_size / 2**20:>8,.0f} {wall:>7.1f} {peak:>12.2f}  {result}", flush=True)


if __name__ == "__main__":
    main()
