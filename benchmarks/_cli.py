"""Running the real command line from benchmark scripts."""

from __future__ import annotations

import subprocess
import sys


def rnnrec(*args: str) -> str:
    """`python -m rnnrec_cli ARGS`; exits with its stderr's tail if it fails. Returns stdout."""
    proc = subprocess.run([sys.executable, "-m", "rnnrec_cli", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"rnnrec {' '.join(args)} failed: {proc.stderr[-1500:]}")
    return proc.stdout
