"""The evaluation layer: metrics, full-catalogue scoring, baselines, evaluate, compare, recommend, predict."""
