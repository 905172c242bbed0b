"""The data layer: reading event logs, cleaning and splitting them into sequences, and batching them."""
