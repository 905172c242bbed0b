"""Who owns a run or study directory now: one writer at a time, named to anyone it keeps out.

Every command that writes into a run or study (train, train --resume, evaluate, tune) holds an
exclusive `flock` on DIR/.lock for as long as it works there, and writes its host, pid, start
time and command into that file. The kernel drops the lock when its owner dies however it
dies (kill -9 included), so a lock is never stale and never needs breaking by hand; on NFS, Linux
emulates flock with byte-range locks, which the server holds for the client. Readers (predict,
evaluate's "did not finish" warning) ask `owner()` to tell a run being trained now from one whose
training was interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rnnrec_cli.errors import RunDirError

LOCK = ".lock"
# A reader holds a shared lock for a moment to ask whether anyone owns the directory; a writer
# that meets one retries this long before it calls the directory busy.
_RETRY_S = 2.0


class BusyError(RunDirError):
    """Another live process owns the directory."""


@dataclass(frozen=True)
class Owner:
    """The process that holds a directory's lock (fields empty when its record is unreadable)."""

    command: str = ""
    pid: int = 0
    host: str = ""
    since: str = ""

    def __str__(self) -> str:
        if not self.pid:
            return "another rnnrec process"
        return f"`rnnrec {self.command}` (pid {self.pid} on {self.host}, since {self.since})"


@dataclass
class _Held:
    fd: int
    depth: int


# Locks this process holds, by directory: a command that holds its run's lock calls library code
# that takes it again (the CLI's evaluate, then `EvalResult.save`), and flock would refuse the
# second open file description of the same process.
_HELD: dict[str, _Held] = {}


def _key(directory: Path) -> str:
    return os.path.realpath(directory)


def _open(directory: Path, flags: int) -> int:
    """DIR/.lock, never through a link planted there."""
    path = directory / LOCK
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError:
        if path.is_symlink():
            raise RunDirError(
                f"{path} is a symbolic link; rnnrec never follows links inside a run: remove it"
            ) from None
        raise


def _read_owner(fd: int) -> Owner:
    try:
        values = json.loads(os.pread(fd, 4096, 0).decode())
        return Owner(str(values["command"]), int(values["pid"]), str(values["host"]), str(values["since"]))
    except (ValueError, KeyError, TypeError, OSError):
        return Owner()


def acquire(directory: Path, command: str) -> None:
    """Own `directory` (it must exist) for `command`, or raise BusyError naming its live owner."""
    key = _key(directory)
    if key in _HELD:
        _HELD[key].depth += 1
        return
    fd = _open(directory, os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + _RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            owner = _read_owner(fd)
            os.close(fd)
            raise BusyError(
                f"{directory} is in use by {owner}; wait for it to finish (or stop it), then run this again"
            ) from None
    since = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    record = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode() + b"\n", 0)
    _HELD[key] = _Held(fd, 1)


def release(directory: Path) -> None:
    key = _key(directory)
    held = _HELD.get(key)
    if held is None:
        return
    held.depth -= 1
    if held.depth == 0:
        del _HELD[key]
        _give_up(held.fd)


def _give_up(fd: int) -> None:
    # Emptied first: a lock file that names someone names its owner now (or a killed one).
    with contextlib.suppress(OSError):  # its filesystem went read-only meanwhile
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor drops the flock


@contextmanager
def holding(directory: Path, command: str) -> Iterator[None]:
    acquire(directory, command)
    try:
        yield
    finally:
        release(directory)


def owner(directory: Path) -> Owner | None:
    """The live process that owns `directory` now, or None (this process counts as none)."""
    if _key(directory) in _HELD:
        return None
    try:
        fd = _open(directory, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        found = _read_owner(fd)
        os.close(fd)
        return found
    os.close(fd)
    return None
