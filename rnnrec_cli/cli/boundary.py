"""The error boundary of every command: one `Error:` line and an exit code, never a traceback;
Click's usage errors in the same one line (exit 2), and the libraries' warnings as `Warning:` lines.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import typer
from typer.exceptions import TyperException

from rnnrec_cli.cli import render
from rnnrec_cli.errors import OptionError, RnnrecError, Terminated, describe, first_line, interrupt_in

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """The error boundary: every failure -> one `Error:` line and a non-zero exit, never a
    traceback. A bad option value exits 2, expected failures exit 1, a closed stdout pipe exits 0
    quietly, and anything unforeseen exits 70 with a line saying it is a bug (the traceback only
    with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except RnnrecError as exc:
            render.error_line(str(exc))
            raise typer.Exit(2 if isinstance(exc, OptionError) else 1) from None
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


def usage_error(exc: TyperException) -> int:
    """What Click (and the commands' `typer.BadParameter`) reject, as one `Error:` line like any
    other failure, not Rich's boxed usage text; returns the exit code (2 for a usage error)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `rnnrec`: the help is shown already
        return exc.exit_code
    if isinstance(exc, typer.BadParameter) and exc.param is None and exc.param_hint is None:
        message = exc.message  # rnnrec's own: it names the option already
    else:
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if not isinstance(exc, typer.BadParameter) and ctx is not None:
            message = f"{message.rstrip('.')}; see `{ctx.command_path} --help`"
    render.error_line(message)
    return exc.exit_code


@contextmanager
def library_warnings() -> Iterator[None]:
    """Warnings that JAX, Polars or matplotlib raise: one `Warning:` line each, naming the
    library, instead of Python's two lines with a site-packages path and source line."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        parts = Path(filename).parts
        at = max((i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")), default=-1)
        # The library: where the warning was raised, else (stacklevel pointing at rnnrec's own
        # code) the module of its category, such as polars.exceptions.
        source = parts[at + 1].removesuffix(".py") if 0 <= at < len(parts) - 1 else category.__module__.split(".")[0]
        text = " ".join(str(message).split())
        render.warn([text if source in ("builtins", "rnnrec_cli", "warnings") else f"{source}: {text}"])

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


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
    """SIGTERM stops a command the way Ctrl-C does (see errors.Terminated). Python drops an
    exception raised inside a garbage-collector callback (JAX registers one), so the signal is
    sent again in 5 s: a command that is still running then is stopped by the second one."""
    import signal
    import threading

    timer = threading.Timer(5.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    raise Terminated()
