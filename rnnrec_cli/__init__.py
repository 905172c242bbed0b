"""rnnrec: offline next-item recommendation experiments with recurrent neural networks."""

__version__ = "0.1.0"
