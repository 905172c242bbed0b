"""Write a realistic synthetic event log: user_id,item_id,timestamp (unix seconds) CSV.

Usage: python benchmarks/make_synthetic.py --events 10000000 --out /tmp/events-10m.csv

- item popularity follows a Zipf law inside Zipf-popular categories;
- session lengths follow a power law (most sessions are 2-5 events, a few are hundreds);
- a user has several sessions, hours to days apart; events inside a session are 10 s to 5 min
  apart, over a 60-day window;
- structure an RNN can learn: within a session, with probability 0.5 the next item is the
  successor of the current one in its category (a browsing path), else a new draw from the
  session's category.

Generated and written in chunks of about a million sessions, so 100M events need little memory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

DAY = 86_400
START = 1_700_000_000


def make_chunk(rng: np.random.Generator, n_sessions: int, n_users: int, n_items: int, n_cats: int) -> pl.DataFrame:
    lengths = np.minimum(rng.zipf(2.2, n_sessions) + 1, 500)
    n = int(lengths.sum())
    first = np.cumsum(lengths) - lengths
    sess = np.repeat(np.arange(n_sessions), lengths)
    pos = np.arange(n) - first[sess]
    per_cat = n_items // n_cats
    cat = (rng.zipf(1.3, n_sessions) - 1) % n_cats
    draw = (rng.zipf(1.2, n) - 1) % per_cat
    # Browsing paths: runs of "follow" steps continue from the last fresh draw.
    follow = (rng.random(n) < 0.5) & (pos > 0)
    anchor_idx = np.maximum.accumulate(np.where(follow, 0, np.arange(n)))
    local = (draw[anchor_idx] + (np.arange(n) - anchor_idx)) % per_cat
    item = cat[sess] * per_cat + local
    user = rng.integers(0, n_users, n_sessions)
    start = START + rng.integers(0, 60 * DAY, n_sessions)
    gaps = rng.integers(10, 300, n)
    gaps[first] = 0
    ts = start[sess] + (np.cumsum(gaps) - np.cumsum(gaps)[first][sess])
    return pl.DataFrame({"user_id": user[sess], "item_id": item, "timestamp": ts})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--categories", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if not 0 < args.categories <= args.items:
        # Items are split evenly over the categories: fewer items than categories leaves none.
        p.error(f"--categories must be between 1 and --items ({args.items}), got {args.categories}")
    rng = np.random.default_rng(args.seed)
    n_users = max(1, args.events // 40)
    t0 = time.perf_counter()
    written = 0
    with open(args.out, "wb") as f:
        while written < args.events:
            chunk = make_chunk(rng, 1_000_000, n_users, args.items, args.categories)
            chunk = chunk.head(args.events - written)
            chunk.write_csv(f, include_header=written == 0)
            written += chunk.height
    size = args.out.stat().st_size / 2**20
    print(f"wrote {written:,} events ({size:,.0f} MiB) to {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
