"""The `rnnrec` command line: each command parses its options, calls one library function and
renders the result.

The cli package is the only one that exits the process and the only one that imports typer or
rich: the options (flags.py, data_flags.py, model_flags.py), the commands (run_commands.py,
result_commands.py), their error boundary (boundary.py) and what people see (render.py).
Library modules (Polars, JAX) are imported inside the commands, so `rnnrec --help` stays fast.
stdout carries data only (run paths, JSON, predictions); everything for people goes to stderr.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from typer.core import TyperGroup

from rnnrec_cli import __version__
from rnnrec_cli.cli import flags
from rnnrec_cli.cli.boundary import library_warnings, on_sigterm, usage_error
from rnnrec_cli.cli.render import err
from rnnrec_cli.cli.result_commands import compare, evaluate, predict, report
from rnnrec_cli.cli.run_commands import prepare, train, tune


class _Rnnrec(TyperGroup):
    """The `rnnrec` group: a usage error (a bad option value, an unknown option) is one `Error:`
    line and exit 2 like every other failure, and the libraries' warnings are `Warning:` lines."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        with library_warnings():
            try:
                # Not standalone: Click returns the exit code, or raises what it would print.
                code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
            except typer.TyperException as exc:
                code = usage_error(exc)
            except typer.Abort:
                code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Rnnrec,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Next-item recommendation with recurrent neural networks: prepare, train, evaluate, predict, tune.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rnnrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("jax", "absl", "flax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


for _command in (prepare, train, evaluate, predict, report, compare, tune):
    app.command()(_command)


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    flags.readable_metavars(typer.main.get_command(app))(prog_name="rnnrec")


if __name__ == "__main__":
    main()
