"""A study's storage and the directory it belongs to: the storage URL (STUDY_DIR/study.db by
default, recorded relative to the directory so a moved study continues), the study id that binds
the directory to its study in the storage, new trial directories, and what Optuna and its
database raise: every failure one StorageError line, every warning one log line."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnrec_cli import files
from rnnrec_cli.errors import ConfigError, RunDirError, StorageError, first_line
from rnnrec_cli.options import TuneOptions

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

CLAIM = "study.json"  # which study (name, storage, id) the directory belongs to
DB = "study.db"
TRIALS = "trials"
FINALISTS = "finalists"  # the best trials trained for the final epochs (training.finalists)
ID_ATTR = "study_id"  # the study's user attr holding the id that study.json holds too
SETTINGS_ATTR = "settings"  # the study's user attr holding its space, fixed settings and metric, in one write
ADOPT_WAIT_S = 5.0  # how long a worker waits for the id of a study another worker just created

# ---------------------------------------------------------------------------- the URL


def storage_url(opts: TuneOptions, out: Path) -> str:
    return opts.storage or f"sqlite:///{out.resolve() / DB}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def _sqlite(url: str) -> tuple[bool, Path | None]:
    """(is SQLite, its database file); the file is None in memory or for a `file:` URI."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return False, None
    if parsed.get_backend_name() != "sqlite":
        return False, None
    db = parsed.database or ""
    if db in ("", ":memory:") or db.startswith("file:"):
        return True, None
    path = Path(db).absolute()
    # The directory resolved, the file itself not: a link there is refused, never followed.
    return True, path.parent.resolve() / path.name


def missing_file(url: str) -> bool:
    """A SQLite database file that does not exist (opening it would create it)."""
    _, path = _sqlite(url)
    return path is not None and not path.exists() and not path.is_symlink()


def in_memory(url: str) -> bool:
    """A SQLite database that lives in this process only (each connection its own)."""
    is_sqlite, path = _sqlite(url)
    return is_sqlite and path is None and "file:" not in url


def reference(url: str, out: Path) -> str:
    """How study.json records the storage: a SQLite file inside the study directory relative to
    it (the directory may move), anything else as its URL without the password."""
    _, path = _sqlite(url)
    if path is not None and path.is_relative_to(out.resolve()):
        return str(path.relative_to(out.resolve()))
    return shown_url(url)


def _made_with(claim: dict[str, Any], out: Path) -> str:
    ref = str(claim.get("storage", "?"))
    return ref if "://" in ref or ref == "?" else f"sqlite:///{out.resolve() / ref}"


# ---------------------------------------------------------------------------- the directory


def check_links(out: Path, url: str) -> None:
    """STUDY_DIR/study.db, trials/ and finalists/ are the directory's own: a link would share them
    with another study (and a moved directory would still write through it)."""
    _, path = _sqlite(url)
    db = out / DB
    if path is not None and path == out.resolve() / DB and db.is_symlink():
        raise StorageError(
            f"{db} is a symbolic link; a study's database is not opened through a link. Replace the link with "
            "the file (or give the file with --storage sqlite:///PATH), or use a new -o"
        )
    for name in (TRIALS, FINALISTS):
        if (out / name).is_symlink():
            raise RunDirError(
                f"{out / name} is a symbolic link; run directories are not written through a link. Replace it "
                "with a directory, or use a new -o"
            )


def read_claim(out: Path) -> dict[str, Any] | None:
    """study.json, checked; None for a new directory."""
    path = out / CLAIM
    if not path.exists() and not path.is_symlink():
        return None
    claim = files.load_json(path)
    bad = [k for k in ("study", "storage", "id") if k in claim and not isinstance(claim[k], str)]
    if "study" not in claim or bad:
        raise ConfigError(
            f"{path} is not a study.json rnnrec wrote (it needs the strings 'study', 'storage' and 'id'); "
            "restore it, or use a new -o"
        )
    return claim


def check_claim(claim: dict[str, Any] | None, out: Path, name: str, url: str) -> None:
    """The directory holds study `name`; a study.json of an older rnnrec (no id) names its
    storage, which must be this one (a study.db inside the directory is, wherever it moved)."""
    if claim is None:
        return
    if claim["study"] != name:
        raise ConfigError(
            f"{out} holds study {claim['study']!r}, not {name!r}; leave out --study to continue it, or use "
            "another -o for another study"
        )
    _, path = _sqlite(url)
    inside = path is not None and path == out.resolve() / DB
    if "id" not in claim and not inside and claim.get("storage") != reference(url, out):
        raise ConfigError(
            f"{out} holds study {name!r} in {claim.get('storage')}, not in {shown_url(url)}; give --storage "
            "the storage it was made with, or use another -o for another study"
        )


def bind(study: optuna.Study, created: bool, claim: dict[str, Any] | None, out: Path, url: str) -> str:
    """The study's id, the same in the storage and in study.json: a new study gets one, a study
    of an older rnnrec is given one, and a directory bound to another study (an emptied or
    replaced database, an in-memory one run again) is refused."""
    mine = claim.get("id") if claim else None
    theirs = study.user_attrs.get(ID_ATTR)
    if created:
        theirs = uuid.uuid4().hex
        study.set_user_attr(ID_ATTR, theirs)
    elif theirs is None and mine is None:
        theirs = _adopt(study)
    if mine is not None and theirs != mine:
        what = "without its id" if theirs is None else f"of another id ({theirs[:8]})"
        raise StorageError(mismatch(out, claim or {}, url, f"holds a study {study.study_name!r} {what}"))
    assert theirs is not None
    new = {"study": study.study_name, "storage": reference(url, out), "id": theirs}
    if claim != new:
        files.save_json(out / CLAIM, new)
    return theirs


def mismatch(out: Path, claim: dict[str, Any], url: str, found: str) -> str:
    """Why STUDY_DIR and the storage do not belong together, and what to do."""
    made = _made_with(claim, out)
    if in_memory(made):
        fix = "an in-memory study ends with its command, so use a new -o for a new study"
    elif made == shown_url(url):
        fix = "restore that database (the study was made in it), or use a new -o for a new study"
    else:
        fix = f"give the storage it was made in (--storage {made}), or use a new -o for a new study"
    return (
        f"{out} belongs to study {claim['study']!r} (id {str(claim.get('id'))[:8]}), but {shown_url(url)} {found} "
        f"(an emptied or replaced database, or an in-memory one); {fix}"
    )


def _adopt(study: optuna.Study) -> str:
    """The id of a study this worker did not create: another worker that just created it records
    its settings and then its id at once, so wait for them; a study with trials or an older
    rnnrec's settings already is an older rnnrec's, given an id now."""
    deadline = time.monotonic() + ADOPT_WAIT_S
    while True:
        attrs = study.user_attrs
        if ID_ATTR in attrs:
            return str(attrs[ID_ATTR])
        if set(attrs) - {SETTINGS_ATTR} or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    new = uuid.uuid4().hex
    study.set_user_attr(ID_ATTR, new)
    return new


def new_trial_dir(out: Path, number: int) -> Path:
    """STUDY_DIR/trials/NNNN, created now. Trial numbers are new to the study, so one that
    exists holds a trial of another study: it is never replaced."""
    path = out / TRIALS / f"{number:04d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise RunDirError(
            f"trial directory {path} already exists, but trial {number} is new to this study: it is another "
            f"study's trial. Move {out / TRIALS} away (or use a new -o), then run the same command again"
        ) from None
    return path


# ---------------------------------------------------------------------------- what Optuna raises

# What to do about the database's common complaints (SQLite's words), by a part of the reason.
_FIXES = (
    ("disk is full", "free some space on that filesystem, then run the same command to continue the study"),
    ("readonly", "make the database and its directory writable, then run the same command to continue"),
    ("read-only", "make the database and its directory writable, then run the same command to continue"),
    ("not a database", "it is damaged or not a study database; restore it, or use a new -o for a new study"),
    ("malformed", "it is damaged; restore it from a copy, or use a new -o for a new study"),
    ("unable to open", "check that its directory exists and is writable"),
    ("locked", "another process holds it; for several workers use PostgreSQL (--storage postgresql://...)"),
)


def failure(url: str, exc: BaseException) -> str:
    """One line for a storage failure: the database's own reason (Optuna wraps it in a
    StorageInternalError whose text is generic), the URL without its password, and a fix."""
    from sqlalchemy.exc import ArgumentError

    if isinstance(exc, ArgumentError):
        return f"--storage {shown_url(url)} is not a database URL ({first_line(exc)})"
    cause: BaseException = exc
    while getattr(cause, "orig", None) is None and cause.__cause__ is not None:
        cause = cause.__cause__
    reason = shown_url(first_line(getattr(cause, "orig", None) or cause))
    fix = next((f for key, f in _FIXES if key in reason.lower()), "check it, then run the same command to continue")
    return f"cannot use the study storage {shown_url(url)}: {reason}; {fix}"


def _storage_types() -> tuple[type[BaseException], ...]:
    import optuna
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, sqlite3.Error


@contextmanager
def guard(url: str) -> Iterator[None]:
    """Around everything a study does: a database failure (disk full, read-only, damaged, gone),
    here or in Optuna's heartbeat thread, is one StorageError line, never a traceback; Optuna's
    warnings are one log line each, its ExperimentalWarning (the heartbeat, used on purpose) none."""
    import optuna

    types = _storage_types()
    previous = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        # The main thread meets the same database soon and stops with the error line.
        if isinstance(args.exc_value, types):
            log.warning("%s (in the heartbeat)", failure(url, args.exc_value))
            return
        previous(args)

    threading.excepthook = thread_hook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.showwarning = _one_line
            yield
    except types as exc:
        raise StorageError(failure(url, exc)) from None
    finally:
        threading.excepthook = previous


def _one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """A library's warning without its source path (site-packages) or source line."""
    log.warning("%s: %s", category.__name__, first_line(Exception(str(message))))
