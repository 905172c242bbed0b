"""The training layer: the epoch loop, its checkpoints and resumption, and the hyperparameter tuner."""
