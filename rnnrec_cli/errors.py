"""Expected failures, and the one place that turns any failure into one readable line.

The CLI turns each `RnnrecError` into one `Error: ...` line and exit code 1 (an `OptionError`,
a value given on the command line, exit 2 like Click's own usage errors); `describe` does the
same for what the libraries raise (filesystem errors, undecodable text, damaged Parquet or
msgpack files, a device out of memory), so no command shows a traceback for a user's file or disk.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager


class RnnrecError(Exception):
    """Base class: a failure caused by the user's data, options or run directory."""


class DataError(RnnrecError):
    """The input events or a prepared data directory cannot be used as they are."""


class ConfigError(RnnrecError):
    """An option or config value is invalid."""


class OptionError(ConfigError):
    """A value given on the command line (an option or argument, or its Python API parameter) is
    invalid, alone or for this run or data: a usage error, exit 2. Values read back from a run's
    or data directory's own files are plain ConfigErrors naming the file (exit 1)."""


class RunDirError(RnnrecError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingDiverged(RnnrecError):
    """The loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, a batch scheduler, `docker stop`): stopped exactly as Ctrl-C stops a
    command (a resumable run is kept, a run with nothing to resume is removed), exit status 143."""


def interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM inside `exc`: itself, or the one a Rust library (Polars) turned into
    a panic because it arrived while the library ran a Python callback."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    if type(exc).__name__ == "PanicException":
        text = str(exc)
        if "Terminated" in text:
            return Terminated()
        if "KeyboardInterrupt" in text:
            return KeyboardInterrupt()
    return None


class StorageError(RnnrecError):
    """A tuning study's database cannot be reached or used."""


# What to do about each filesystem error, by errno.
_FIXES = {
    errno.ENOSPC: "free some space on that filesystem, or write somewhere else",
    errno.EDQUOT: "free some of your quota, or write somewhere else",
    errno.EROFS: "the filesystem is read-only; write somewhere else (-o)",
    errno.EACCES: "check the permissions of that path, or write somewhere else",
    errno.EPERM: "check the permissions of that path, or write somewhere else",
    errno.ENOTDIR: "a part of that path is a file, not a directory; fix the path",
    errno.EISDIR: "that is a directory; give a file path",
    errno.ENOTEMPTY: "that directory is not empty; give another path",
    errno.EEXIST: "a file of that name is in the way; remove it or give another path",
    errno.ELOOP: "it is a loop of symbolic links; remove or fix the link",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EIO: "the device reported an input/output error; check the disk",
}
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")
_ALIASES: dict[str, str] = {}


def alias(path: str, name: str) -> None:
    """Name an internal path (the spool file of standard input) the way the user knows it."""
    _ALIASES[path] = name


def unalias(path: str) -> None:
    _ALIASES.pop(path, None)


def escape(text: str, limit: int = 400) -> str:
    """One printable line: control characters, NUL and undecodable bytes shown as escapes, long
    text cut, so a binary file's bytes never reach the terminal raw."""
    for path, name in _ALIASES.items():
        text = text.replace(path, name)
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def os_error_text(exc: OSError, doing: str = "") -> str:
    """'PATH: No space left on device; free some space ...' for any OSError."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    problem = exc.strerror or str(exc)
    fix = _FIXES.get(exc.errno or 0, "")
    where = f"{doing} {paths}" if doing and paths else doing or paths
    return "; ".join(part for part in (f"{where}: {problem}" if where else problem, fix) if part)


def errno_in(message: str) -> int | None:
    """The errno that a library (Polars, Rust) reports only inside its message text."""
    m = _OS_ERROR_TEXT.search(message)
    return int(m.group(1)) if m else None


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe(exc: BaseException) -> str | None:
    """One line for a failure the libraries raise about the user's files or machine; None if it
    is not one."""
    if isinstance(exc, OSError):
        return os_error_text(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"the text is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "pass --encoding latin-1 (or cp1252, or the file's encoding), or convert it to UTF-8"
        )
    code = errno_in(str(exc))
    if code is not None:
        return os_error_text(OSError(code, _strerror(code)))
    # XLA's allocator failing (by name: importing jax here would make every command slow to start).
    if type(exc).__name__ in _XLA_ERRORS and "RESOURCE_EXHAUSTED" in str(exc):
        return (
            f"the device ran out of memory ({first_line(exc)}); lower --batch-size (or the model's size), "
            "or use a device with more memory"
        )
    return None


_XLA_ERRORS = ("JaxRuntimeError", "XlaRuntimeError")


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


@contextmanager
def reading(path: object, fix: str = "prepare the data again with `rnnrec prepare`") -> Iterator[None]:
    """Name `path` in whatever reading it raises: a damaged Parquet or msgpack file, text in
    another encoding, a filesystem error without a file name."""
    try:
        yield
    except RnnrecError:
        raise
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        if exc.errno is None:
            raise DataError(f"cannot read {path}: {first_line(exc)}; {fix}") from None
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {describe(exc)}") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        raise DataError(
            f"cannot read {path} ({first_line(exc)}): it is damaged or not the file expected; {fix}"
        ) from None
