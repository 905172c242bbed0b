"""Files written whole or not at all: atomic writes and directory replacement, temporary
siblings and their clean-up, strict JSON (no NaN, no duplicate keys, bounded size), and the
format version of what rnnrec writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli.errors import ConfigError, RunDirError
from rnnrec_cli.validation import json_type

if TYPE_CHECKING:
    pass


@contextmanager
def atomic_write(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes.
    `suffix` keeps an extension that a writer reads the format from (e.g. '.png').

    The temporary file is created exclusively under a random name (never through a link planted
    at a predictable one), with the mode the umask gives a new file; leftovers of killed
    processes are removed first (`clean_stale`)."""
    if is_special(path):
        raise RunDirError(f"{path} is a device, pipe or socket, not a file rnnrec may replace; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=f"{TEMP_SUFFIX}{suffix}")
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def is_special(path: Path) -> bool:
    """A device, pipe or socket: written into as a stream, never replaced."""
    return path.exists() and not path.is_file() and not path.is_dir()


def exists(path: Path) -> bool:
    """Something is at `path`: a dangling link or a loop of links counts (it would be replaced)."""
    return path.exists() or path.is_symlink()


# Temporaries are named `.<target>.rnnrec-<host>-<pid>-<random>.tmp...`: exclusive, unguessable,
# and telling which process made them, so a later run can remove those of dead processes.
def refuse_to_replace(path: Path, force: bool, how: str = "pass --force to replace it") -> None:
    """The rule for every output: one that exists is replaced only when asked (`force`), and then
    only once its replacement is complete (atomic_write, replace_dir)."""
    if exists(path) and not force:
        raise RunDirError(f"{path} already exists; {how}")


TEMP_SUFFIX = ".tmp"
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.rnnrec-{_HOST}-{os.getpid()}-"


def temp_dir(path: Path) -> Path:
    """A new empty directory beside `path` (for building `path` before it replaces anything),
    with the mode the umask gives (mkdtemp's 0700 would survive the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


def alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (a temporary's or a trial's owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: Path) -> None:
    """Remove temporaries for `path` that a process on this host left when it was killed."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.rnnrec-{re.escape(_HOST)}-(\d+)-.*\{TEMP_SUFFIX}")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is not thread-safe.
_UMASK = _read_umask()


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete directory `new` in place of `target`: the old one is moved aside, not
    deleted, until the new one is in place."""
    if not target.exists() and not target.is_symlink():
        new.rename(target)
        return
    trash = temp_dir(target)
    target.rename(trash / "old")
    try:
        new.rename(target)
    except BaseException:
        (trash / "old").rename(target)
        raise
    shutil.rmtree(trash, ignore_errors=True)


# The layout of what rnnrec writes (config.json, manifest.json, checkpoints). Readers key their
# compatibility code on it: a file without one was written before versions (0); a newer one is
# refused rather than misread.
FORMAT_VERSION = 1


def format_version(values: dict[str, Any], path: Path | str, fix: str) -> int:
    """The format version recorded in `values` (0 when absent), refusing a newer or malformed one."""
    version = values.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise RunDirError(f"{path}: 'format_version' must be a non-negative integer, not {json_type(version)}; {fix}")
    if version > FORMAT_VERSION:
        raise RunDirError(
            f"{path} was written by a newer rnnrec (format {version}; this one reads up to {FORMAT_VERSION}); "
            "upgrade rnnrec"
        )
    return version


MAX_JSON_BYTES = 64 << 20


def _not_a_number(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number; give a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


def save_json(path: Path, values: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")


def load_json(path: Path, *, finite: bool = True) -> dict[str, Any]:
    """A JSON object from `path`; anything else is one clear error naming the file. With
    `finite` (configs, manifests) NaN and Infinity are refused; results may hold NaN."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file; give a JSON file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ConfigError(f"{path} is over {MAX_JSON_BYTES >> 20} MiB: not a config or manifest rnnrec wrote")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        constants: dict[str, Any] = {"parse_constant": _not_a_number} if finite else {}
        values = json.loads(text, object_pairs_hook=_unique_keys, **constants)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a config or manifest") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a JSON object ({{...}}), not {json_type(values)}")
    return values
