"""The fixed rules of an experiment: the automatic split, the smallest splits worth reporting,
the headline cut-off, and how a split the user gives is treated."""

from __future__ import annotations

from typing import Any

# The automatic split: the first rule, or the second when the first leaves a split smaller than
# MIN_TARGETS targets / MIN_SEQUENCES sequences (e.g. 20k MovieLens rows spanning years hold 2
# sequences in their last 7 days; a 7-day click log has nothing before its last 7 days).
AUTO_SPLIT = ("time:7d", "time:0.1")


# Below these a split's metrics are noise: prepare, train and evaluate warn.
MIN_TARGETS = 100


MIN_SEQUENCES = 10


# Below this a test split is an error unless --allow-tiny-test.
TINY_TEST_TARGETS = 10


# The cut-off of the field's headline numbers (Recall@20, MRR@20): always reported in
# validation, the default top-K of predict and the largest default cut-off of evaluate.
HEADLINE_K = 20


# The values of a split column read as train, valid and test, compared lower-cased.
SPLIT_VALUES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training", "trn"),
    "valid": ("valid", "validation", "val", "dev", "development"),
    "test": ("test", "testing", "tst", "eval"),
}


# A split the user gives (--test FILE, or GRU4Rec's own format) is used as given: published
# numbers are measured on it exactly, repeats included (the easiest targets), with every
# training item in the catalogue and no validation period cut out of the training file.
# Explicit flags still win (e.g. --valid 1d).
AS_GIVEN: dict[str, Any] = {"dedupe_consecutive": False, "min_item_support": 1, "valid": "0"}
