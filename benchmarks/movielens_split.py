"""The MovieLens split the speed comparison with the official GRU4Rec code uses, written in
GRU4Rec's TSV format (SessionId, ItemId, Time; one "session" per user, the whole history).

Users are ordered by their last rating; the first 90% are training, the rest the test. Then:

  python benchmarks/movielens_split.py datasets/ml-latest-small/ratings.csv -o ml-split
  rnnrec prepare ml-split/train.tsv --test ml-split/test.tsv --preset gru4rec -o ml100
  rnnrec train ml100 --layers 100 --batch-size 64 --n-sample 2048 --loss ce --epochs 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def split(ratings: Path, out: Path, share: float = 0.9) -> tuple[int, int]:
    """Write out/train.tsv and out/test.tsv; return (training users, test users)."""
    events = pl.read_csv(ratings).select(
        pl.col("userId").alias("SessionId"), pl.col("movieId").alias("ItemId"), pl.col("timestamp").alias("Time")
    )
    last = events.group_by("SessionId").agg(pl.col("Time").max().alias("last")).sort("last", "SessionId")
    n_train = int(share * last.height)
    in_train = pl.col("SessionId").is_in(last["SessionId"][:n_train].implode())
    out.mkdir(parents=True, exist_ok=True)
    order = ["SessionId", "Time", "ItemId"]
    train = events.filter(in_train).sort(order)
    test = events.filter(~in_train).sort(order)
    train.write_csv(out / "train.tsv", separator="\t")
    test.write_csv(out / "test.tsv", separator="\t")
    return n_train, last.height - n_train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ratings", type=Path, help="MovieLens ratings.csv (userId, movieId, rating, timestamp)")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--share", type=float, default=0.9, help="users in training, by last rating")
    args = p.parse_args()
    n_train, n_test = split(args.ratings, args.out, args.share)
    print(f"{args.out}/train.tsv: {n_train} users; {args.out}/test.tsv: {n_test} users")


if __name__ == "__main__":
    main()
