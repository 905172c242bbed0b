"""The report layer: one self-contained HTML page of runs and studies."""
