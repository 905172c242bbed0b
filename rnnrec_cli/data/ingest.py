"""Reading raw event logs: formats, compression, presets, column and time resolution.

Every input path (files, globs, stdin) ends in one LazyFrame with canonical columns (`user` or
`session`, `item`, `ts` as naive-UTC Datetime[us], optional `event`, `value`) and `_row`, the
original row number. CSV options are decided once (`csv_options`, `name_columns`) for files and
for stdin alike.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import gzip
import io
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from rnnrec_cli.config import PrepareConfig
from rnnrec_cli.data.columns import canonicalize
from rnnrec_cli.errors import DataError, RnnrecError, alias, errno_in, first_line, os_error_text, unalias

_SEPARATORS = (",", "\t", ";", "|")
# RecBole's atomic files type every header name (`item_id:token`); these are its types.
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")

# ---------------------------------------------------------------------------- reading raw logs


_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def compression(path: Path) -> str | None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP):
        return "gzip"
    if magic == _ZSTD:
        return "zstd"
    return None


def _head_text(path: Path, n_bytes: int = 65536) -> str:
    try:
        match compression(path):
            case "gzip":
                with gzip.open(path, "rb") as f:
                    raw = f.read(n_bytes)
            case "zstd":
                raw = _zstd_head(path, n_bytes)
            case _:
                with open(path, "rb") as f:
                    raw = f.read(n_bytes)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}; is the compressed file damaged?") from None
    return raw.decode("utf-8", errors="replace")


def _zstd_head(path: Path, n_bytes: int) -> bytes:
    # Polars decompresses zstd itself; for sniffing, read a small eager sample through it.
    try:
        df = pl.read_csv(
            path, has_header=False, n_rows=50, separator="\x1f", infer_schema=False, truncate_ragged_lines=True,
            glob=False,
        )  # fmt: skip
    except pl.exceptions.PolarsError as exc:
        raise OSError(str(exc).splitlines()[0]) from None
    return "\n".join(df.to_series(0).to_list()).encode()[:n_bytes]


def detect_format(path: Path) -> str:
    name = _plain_name(path)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def sniff_separator(path: Path) -> str:
    """The separator of a CSV file: a tab for RecBole's atomic `.inter` files (their format
    says so), else from its first lines (see `sniff_text`)."""
    if _plain_name(path).endswith(".inter"):
        return "\t"
    return sniff_text(_head_text(path), str(path))


def _plain_name(path: Path) -> str:
    return path.name.lower().removesuffix(".gz").removesuffix(".zst").removesuffix(".zstd")


def sniff_text(text: str, source: str = "stdin") -> str:
    """The candidate separator that splits the header and first rows most consistently."""
    lines = [ln for ln in text.splitlines()[:20] if ln.strip()]
    if not lines:
        raise DataError(f"{source} is empty")
    if "::" in lines[0]:
        return "::"  # MovieLens 1M/10M .dat files
    best, best_score = ",", -1
    for sep in _SEPARATORS:
        counts = [ln.count(sep) for ln in lines[:-1] or lines]
        if counts[0] == 0:
            continue
        score = counts[0] * 10 + (10 if len(set(counts)) == 1 else 0)
        if score > best_score:
            best, best_score = sep, score
    return best


def csv_options(sep: str, header: bool) -> dict[str, Any]:
    """Polars CSV reader options for `sep` ('::' is read as ':' with empty columns between)."""
    double_colon = sep == "::"
    return {"separator": ":" if double_colon else sep, "has_header": header and not double_colon}


def name_columns(names: list[str], sep: str, cfg: PrepareConfig) -> dict[str, str] | list[str]:
    """Columns to keep ('::' leaves empty ones between the fields) and, for files without a
    header, their names from cfg.columns: a list to select, then a renaming."""
    kept = names[::2] if sep == "::" else names
    if cfg.header and sep != "::":
        return untyped_names(kept) or kept
    given = list(cfg.columns)[: len(kept)]
    return dict(zip(kept, given + kept[len(given) :], strict=True))


def untyped_names(names: Sequence[str]) -> dict[str, str]:
    """{name: name without its type} for a RecBole atomic header (every name `name:type`, e.g.
    `session_id:token`, with a type of RECBOLE_TYPES), so the usual names are recognised; {}
    for any other header, or when dropping the types would make two names equal."""
    parts = [n.rpartition(":") for n in names]
    if not names or any(not base or kind not in RECBOLE_TYPES for base, _, kind in parts):
        return {}
    plain = [base for base, _, _ in parts]
    return dict(zip(names, plain, strict=True)) if len(set(plain)) == len(plain) else {}


def typed_header(path: Path, cfg: PrepareConfig) -> bool:
    """Whether a CSV input's header row is a RecBole typed one (`untyped_names` drops the
    types while reading; this says so for the manifest)."""
    fmt = cfg.format if cfg.format != "auto" else detect_format(path)
    if fmt != "csv" or not cfg.header:
        return False
    first = _head_text(path).partition("\n")[0].rstrip("\r")
    sep = cfg.sep or sniff_separator(path)
    return bool(untyped_names([n.strip().strip('"') for n in first.split(sep)]))


def _named(frame: Any, sep: str, cfg: PrepareConfig) -> Any:
    """A LazyFrame or DataFrame with the columns `name_columns` decides."""
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    spec = name_columns(names, sep, cfg)
    return frame.select(list(spec)).rename(spec) if isinstance(spec, dict) else frame.select(spec)


def _scan_one(path: Path, cfg: PrepareConfig) -> pl.LazyFrame:
    fmt = cfg.format if cfg.format != "auto" else detect_format(path)
    compressed = compression(path)
    try:
        if fmt == "parquet":
            return pl.scan_parquet(path, glob=False)
        if fmt in ("jsonl", "otto"):
            lf = pl.read_ndjson(path).lazy() if compressed or _has_glob(path) else pl.scan_ndjson(path)
            return _flatten_otto(lf, path) if fmt == "otto" else lf
        return _scan_csv(path, cfg, compressed)
    except (pl.exceptions.PolarsError, OSError, EOFError, zlib.error) as exc:
        message = first_line(exc)
        raise DataError(f"cannot read {path} as {fmt}: {message}{encoding_hint(message)}") from None


def _scan_csv(path: Path, cfg: PrepareConfig, compressed: str | None) -> pl.LazyFrame:
    sep = cfg.sep or sniff_separator(path)
    options = {**csv_options(sep, cfg.header), "infer_schema_length": 10000}
    # Polars decompresses only in its eager reader.
    lf = pl.read_csv(path, **options, glob=False).lazy() if compressed else pl.scan_csv(path, **options, glob=False)
    return _named(lf, sep, cfg)


def _has_glob(path: Path) -> bool:
    """Polars' ndjson scan reads `*?[` in a path as a pattern (and has no switch for it)."""
    return any(ch in str(path) for ch in "*?[")


def _flatten_otto(lf: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    names = lf.collect_schema().names()
    if "events" not in names:
        raise DataError(
            f"{path} is not OTTO's nested format: no 'events' list (found: {', '.join(names)}). "
            "Drop --preset otto / --format otto for flat JSON lines."
        )
    return lf.explode("events").unnest("events")


@contextmanager
def materialized_inputs(paths: Sequence[str], encoding: str = "utf-8") -> Iterator[list[Path]]:
    """Yield real file paths. '-' (stdin) and pipes or devices (`<(zcat log.gz)`) are spooled to
    temporary files for lazy scanning; text in another encoding (`encoding`, or the one a
    byte-order mark declares) is transcoded to UTF-8, which is all Polars reads. Messages name
    such temporaries as the user knows them ('standard input', the original path)."""
    temps: list[Path] = []
    labels: dict[Path, str] = {}

    def spool(source: Any, name: str, label: str, text_encoding: str | None = None) -> Path:
        fd, tmp_name = tempfile.mkstemp(prefix=f"rnnrec-{name}-")
        tmp = Path(tmp_name)
        temps.append(tmp)
        labels[tmp] = label
        alias(tmp_name, label)
        with open(fd, "wb") as f:
            if text_encoding is None:
                shutil.copyfileobj(source, f)
            else:
                text = io.TextIOWrapper(source, encoding=text_encoding, newline="")
                while block := text.read(1 << 20):
                    f.write(block.encode("utf-8"))
        if not tmp.stat().st_size:
            hint = "pipe events into it, or give a file" if label == "standard input" else "check where it comes from"
            raise DataError(f"{label} is empty: {hint}")
        return tmp

    out: list[Path] = []
    try:
        for p in paths:
            if p == "-":
                if any(label == "standard input" for label in labels.values()):
                    raise DataError("'-' (stdin) may be given only once")
                out.append(spool(sys.stdin.buffer, "stdin", "standard input"))
            elif any(ch in p for ch in "*?[") and not Path(p).exists():
                matches = sorted(Path(m) for m in glob.glob(p))
                files = [m for m in matches if m.is_file()]
                if not files:
                    raise DataError(f"no input file matches {p}")
                out.extend(files)
            else:
                out.append(_input_file(Path(p), spool))
        transcoded = []
        for q in out:
            enc = _bom_encoding(q) or encoding
            if is_utf8(enc) or detect_format(q) == "parquet":
                transcoded.append(q)
                continue
            opener = gzip.open if compression(q) == "gzip" else open
            with opener(q, "rb") as f:
                transcoded.append(spool(f, "text", labels.get(q, str(q)), enc))
        yield transcoded
    finally:
        for tmp in temps:
            unalias(str(tmp))
            tmp.unlink(missing_ok=True)


def _input_file(path: Path, spool: Callable[..., Path]) -> Path:
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an event file; give the file(s) inside it")
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path} is a symbolic link to nothing (or a loop of links); fix the link")
    if not path.exists():
        raise DataError(f"input file {path} does not exist")
    if not path.is_file():  # a pipe or device: read once, like stdin
        with open(path, "rb") as f:
            return spool(f, "pipe", str(path))
    return path


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _bom_encoding(path: Path) -> str | None:
    """The encoding a byte-order mark at the start of a text file declares (it wins over
    --encoding: the mark is unambiguous)."""
    if compression(path) is not None:
        return None
    with open(path, "rb") as f:
        head = f.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), None)


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def encoding_hint(message: str) -> str:
    """The fix for text Polars could not decode (it reads UTF-8 only)."""
    if "utf-8" in message.lower() or "utf8" in message.lower():
        return "; it is not UTF-8 text: pass --encoding latin-1 (or cp1252, or the file's encoding), or convert it"
    return ""


def read_failure(exc: Exception, sources: Sequence[Path | str], writing: Path | None = None) -> RnnrecError:
    """What a failed (lazy) read means: scans fail only when collected. A filesystem error while
    writing `writing`, text that is not UTF-8, or a row that does not parse (e.g. an id column
    numeric in the first 10,000 rows and text later)."""
    message = first_line(exc)
    code = errno_in(message)
    if code is not None:
        return DataError(os_error_text(OSError(code, os.strerror(code)), f"writing {writing}" if writing else ""))
    inputs = ", ".join(map(str, sources))
    hint = encoding_hint(message)
    if hint:
        return DataError(f"cannot read {inputs}{hint}")
    if any(word in message.lower() for word in ("parse", "cast", "dtype", "type")):
        return DataError(
            f"cannot read {inputs}: {message}. If a column mixes numbers and text, "
            "make it consistent (or convert the file to Parquet with explicit types)"
        )
    return DataError(f"cannot read {inputs}: {message}; check its format (--format, --sep, --no-header)")


def scan_events(
    paths: Sequence[Path], cfg: PrepareConfig, time_optional: bool = False
) -> tuple[pl.LazyFrame, PrepareConfig]:
    """Raw files -> one LazyFrame with canonical columns (user/session, item, ts, event, value).

    Returns the config with column names (and an 'auto' time unit) resolved. `ts` becomes
    Datetime[us] (naive UTC).
    """
    frames = [_scan_one(p, cfg) for p in paths]
    try:
        schemas = [f.collect_schema() for f in frames]
    except pl.exceptions.PolarsError as exc:
        raise read_failure(exc, paths) from None
    names = schemas[0].names()
    source = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"
    for p, s in zip(paths[1:], schemas[1:], strict=True):
        if s.names() != names:
            raise DataError(
                f"{p} has columns {', '.join(s.names())} but {paths[0]} has {', '.join(names)}; "
                "all inputs must share one layout"
            )
    lf = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    try:
        return canonicalize(lf, cfg, source, time_optional)
    except pl.exceptions.PolarsError as exc:
        raise read_failure(exc, paths) from None


def iter_stdin_blocks(cfg: PrepareConfig, rows: int, stream: Any = None) -> Iterator[pl.DataFrame]:
    """Raw rows from stdin in blocks of about `rows` lines, parsed as soon as each block arrives.

    CSV/TSV (separator sniffed from the first lines unless given) and JSON lines (also OTTO's
    nested format) stream; Parquet must come from a file.
    """
    stream = stream if stream is not None else sys.stdin.buffer
    fmt = cfg.format if cfg.format != "auto" else "csv"
    if fmt == "parquet":
        raise DataError("Parquet cannot be streamed from stdin; pass the file path instead")
    if not is_utf8(cfg.encoding):
        stream = (line.encode("utf-8") for line in io.TextIOWrapper(stream, encoding=cfg.encoding, newline=""))
    else:
        stream = iter(stream)
    first = next(stream, b"")
    if not first:
        return
    is_json = fmt in ("jsonl", "otto") or first.lstrip().startswith(b"{")
    header = b"" if is_json or not cfg.header else first
    pending = [] if header else [first]
    sep = cfg.sep or sniff_text(first.decode("utf-8", errors="replace"))

    def parse(lines: list[bytes]) -> pl.DataFrame:
        payload = io.BytesIO(header + b"".join(lines))
        try:
            if is_json:
                df = pl.read_ndjson(payload)
                return _flatten_otto(df.lazy(), Path("<stdin>")).collect() if fmt == "otto" else df
            df = pl.read_csv(payload, **csv_options(sep, bool(header)), infer_schema_length=None)
        except pl.exceptions.PolarsError as exc:
            message = first_line(exc)
            raise DataError(f"cannot parse standard input: {message}{encoding_hint(message)}") from None
        return _named(df, sep, dataclasses.replace(cfg, header=bool(header)))

    for line in stream:
        pending.append(line)
        if len(pending) >= rows:
            yield parse(pending)
            pending = []
    if pending:
        yield parse(pending)
