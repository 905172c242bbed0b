"""The error boundary of every command: one `Error:` line and an exit code, never a traceback."""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from typer.exceptions import TyperException

from rnnrec_cli.cli import render
from rnnrec_cli.errors import RnnrecError, Terminated, describe, first_line, interrupt_in

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """The error boundary: every failure -> one `Error:` line and a non-zero exit, never a
    traceback. Expected failures exit 1, a closed stdout pipe exits 0 quietly, and anything
    unforeseen exits 70 with a line saying it is a bug (the traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except RnnrecError as exc:
            render.error_line(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            interrupted("interrupted")
        except OSError as exc:
            # `rnnrec predict ... | head`: the reader left; that is not an error. (Polars' CSV
            # writer reports it as a plain OSError naming the broken pipe.)
            if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE or "Broken pipe" in str(exc):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(0) from None
            render.error_line(describe(exc) or str(exc))
            raise typer.Exit(1) from None
        except Exception as exc:
            known = describe(exc)
            if known is not None:
                render.error_line(known)
                raise typer.Exit(1) from None
            logging.getLogger("rnnrec").debug("unexpected failure", exc_info=True)
            render.error_line(
                f"unexpected {type(exc).__name__}: {first_line(exc)}. This is a bug in rnnrec; please "
                "report it with the command that failed (run with -v to see where it happened)"
            )
            raise typer.Exit(70) from None
        except BaseException as exc:
            stop = interrupt_in(exc)
            if stop is None:
                raise
            try:
                raise stop from None
            except KeyboardInterrupt:
                interrupted("interrupted")

    return wrapper  # type: ignore[return-value]


def interrupted(message: str) -> NoReturn:
    """Ctrl-C: say so and leave at once with 130 (SIGTERM: 143, the message saying so). A normal
    interpreter shutdown can run into work XLA still has in flight and crash; everything written
    is complete already (atomic). Called while the interrupt is being handled."""
    code = 130
    if isinstance(sys.exc_info()[1], Terminated):
        message, code = "terminated (SIGTERM)" + message.removeprefix("interrupted"), 143
    render.error_line(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM stops a command the way Ctrl-C does (see errors.Terminated)."""
    raise Terminated()
