"""Running the real command line from benchmark scripts, in this process (no interpreter and JAX
start-up per call; compiled functions are reused across calls)."""

from __future__ import annotations

import contextlib
import io
import sys


def rnnrec(*args: str) -> str:
    """`rnnrec ARGS` as the command line runs it; exits with its error line if it fails. Returns
    what it wrote to stdout."""
    import typer

    from rnnrec_cli.cli.app import app

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = typer.main.get_command(app).main(list(args), prog_name="rnnrec", standalone_mode=False)
        except SystemExit as exc:  # a usage error still exits, as on the command line
            code = exc.code
    if code:
        sys.exit(f"rnnrec {' '.join(args)} failed: {err.getvalue()[-1500:]}")
    return out.getvalue()
