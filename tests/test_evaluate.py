import itertools

import jax
import numpy as np

from rnnrec_cli import model
from rnnrec_cli.config import ModelConfig, RunConfig, TrainConfig
from rnnrec_cli.data import Sequences
from rnnrec_cli.evaluate import model_ranks, target_items


def _numpy_reference(params, cfg: RunConfig, seqs_list, ties: str) -> list[float]:
    """Each sequence alone from a zero state; score every next item against all items."""
    out = []
    for s in seqs_list:
        carry = model.zero_carry(cfg.model, 1)
        for cur, nxt in itertools.pairwise(s):
            carry, h = model.run(params, cfg.model, carry, np.array([[cur]]), np.zeros((1, 1), bool))
            scores = np.asarray(model.scores(params, cfg.model, h[0, 0]))
            t = scores[nxt]
            higher, tied = (scores > t).sum(), (scores == t).sum() - 1
            out.append(higher + 1 + (tied if ties == "conservative" else 0))
    return out


def test_model_ranks_equal_a_slow_reference() -> None:
    cfg = RunConfig(data_dir="x", n_items=15, model=ModelConfig(layers=(6,)), train=TrainConfig(eval_batch_size=3))
    params = model.init_params(cfg.model, cfg.n_items, jax.random.key(4))
    seqs_list = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 1], [2], [3, 3, 4]]
    seqs = Sequences.from_lists(seqs_list)
    ranks = model_ranks(params, cfg, seqs)
    expected = _numpy_reference(params, cfg, seqs_list, "conservative")
    assert len(ranks) == len(expected) == seqs.n_targets
    assert ranks.tolist() == [float(r) for r in expected]  # same values, in sequence order
    assert target_items(seqs).tolist() == [t for s in seqs_list for t in s[1:]]
