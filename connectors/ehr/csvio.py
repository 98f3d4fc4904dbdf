"""Reading CSV text and ZIP sets, with no knowledge of columns: decoding (BOM, fallback
encoding), delimiter sniffing, tables with a header row, and the reproducible ZIP that packs a
folder of CSVs into one document. :mod:`connectors.ehr.csvfmt` (mapping profiles) and
:mod:`connectors.ehr.synthea` build on it.

Errors name positions and column headers only, never cell values.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.ehr import limits
from connectors.ehr.base import ParseError

DELIMITERS = (",", ";", "\t", "|")
MAX_ZIP_MEMBERS = 1000  # a Synthea set has ~20 tables
_RATIO_FLOOR = 1024 * 1024  # members smaller than this unpack to little whatever their ratio
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Profile:
    """A loaded, checked CSV mapping profile (see :func:`connectors.ehr.csvfmt.load_profile`).
    ``columns`` holds normalized-header alternatives. It lives here, below both the row reader
    (:mod:`connectors.ehr.csvfmt`) and the Synthea reader, so neither imports the other."""

    name: str
    format: str = "rows"  # rows | synthea
    delimiter: str = "auto"
    encoding: str = "utf-8"
    fallback_encoding: str = "cp1252"
    header_row: int = 1
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    constants: Mapping[str, str] = field(default_factory=dict)
    diagnoses_separator: str = "auto"
    modifiers_separator: str = "auto"
    pointers_default: str = "row"  # row | none
    decimal: str = "."  # "," for exports that write 1.234,50
    raw: Mapping[str, Any] = field(default_factory=dict)  # the whole TOML (format-specific tables)

    @property
    def source_system(self) -> str:
        return self.constants.get("source_system", "")


def norm_header(text: str) -> str:
    """Header matching ignores case and all whitespace (and a stray BOM / NBSP)."""
    return "".join(text.replace("\ufeff", "").split()).casefold()


def decode(data: bytes, *, encoding: str = "utf-8", fallback: str = "cp1252", what: str = "file") -> str:
    """Bytes -> text: BOMs honoured (UTF-8, UTF-16), then ``encoding``, then ``fallback``.

    NUL bytes mean a binary file (XLSX, PDF, UTF-16 without BOM): refuse it rather than
    produce garbage rows, and say how to export properly.
    """
    if data.startswith(codecs.BOM_UTF8):
        try:
            text = data[3:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"{what} starts with a UTF-8 byte order mark but is not valid UTF-8 "
                             f"(first bad byte at offset {exc.start + 3}); re-export it as UTF-8") from exc
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"{what} has a UTF-16 byte order mark but is not valid UTF-16; "
                             "re-export it as UTF-8 CSV") from exc
    else:
        if data.startswith(b"PK\x03\x04"):
            raise ParseError(f"{what} is a ZIP archive (an .xlsx workbook or a zipped export), not CSV text; "
                             "save it as CSV, or use the CSV profile 'synthea' for a Synthea CSV set")
        if b"\x00" in data:
            raise ParseError(f"{what} contains NUL bytes, so it is binary (a spreadsheet, PDF or UTF-16 text "
                             "without a byte order mark), not CSV text; export it as CSV (UTF-8)")
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            if not fallback:
                raise ParseError(f"{what} is not valid {encoding} (first bad byte at offset {exc.start}); "
                                 "re-export it as UTF-8 or set the profile's encoding") from exc
            try:
                text = data.decode(fallback)
            except UnicodeDecodeError as exc2:
                raise ParseError(f"{what} is neither {encoding} nor {fallback} text (first bad byte at offset "
                                 f"{exc2.start}); re-export it as UTF-8 or set the profile's encoding") from exc2
    if "\x00" in text:
        raise ParseError(f"{what} contains NUL characters, so it is not CSV text; export it as CSV (UTF-8)")
    return text.lstrip("\ufeff")


def sniff_delimiter(text: str) -> str:
    """Pick among , ; TAB | the one that splits the first records most, consistently.

    Quote-aware (it parses a few records with each candidate), so a quoted ``"Smith, John"``
    in a semicolon file does not vote for the comma.
    """
    head = text[:65536]
    best, best_score = ",", (-1, -1)
    for d in DELIMITERS:
        counts = []
        try:
            for rec in csv.reader(io.StringIO(head, newline=""), delimiter=d):
                if rec and "".join(rec).strip():
                    counts.append(len(rec))
                if len(counts) >= 6:
                    break
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        consistent = sum(1 for c in counts[1:-1] if c == counts[0])  # last may be cut mid-record
        score = (consistent, counts[0])
        if score > best_score:
            best, best_score = d, score
    return best


@dataclass
class Table:
    """A header plus data records, each with the line number where it starts."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    header_line: int


def read_table(text: str, *, delimiter: str = "auto", header_row: int = 1, what: str = "file",
               max_rows: int = limits.DEFAULT.max_rows) -> Table:
    """Text -> :class:`Table`. Blank lines and all-empty rows are skipped; trailing empty
    header cells (a trailing delimiter) are dropped. Handles CRLF, CR, quoted newlines.
    More than ``max_rows`` data rows: refused as soon as the limit is passed (ingest.max_rows)."""
    if not text.strip():
        raise ParseError(f"{what} is empty")
    if delimiter == "auto":
        head = text
        for _ in range(header_row - 1):  # sniff from the header row: title lines may not be delimited
            head = head.lstrip("\r\n").split("\n", 1)[-1] if "\n" in head else ""
        delimiter = sniff_delimiter(head or text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    header: list[str] | None = None
    header_line = 0
    seen = 0
    rows: list[tuple[int, list[str]]] = []
    append = rows.append
    prev = 0
    try:
        for rec in reader:
            start = prev + 1
            prev = reader.line_num
            if not rec or not (rec[0].strip() or "".join(rec).strip()):
                continue
            if header is None:
                seen += 1
                if seen == header_row:
                    header = rec
                    header_line = start
                    while header and not header[-1].strip():
                        header.pop()
                continue
            append((start, rec))
            if len(rows) > max_rows:
                raise ParseError(f"{what} has more than {max_rows:,} data rows, over the limit per file "
                                 "(ingest.max_rows); split the export into smaller files")
    except csv.Error as exc:
        raise ParseError(f"{what}: the record starting at line {prev + 1} cannot be read as CSV ({exc}); "
                         "check that row's quotes") from exc
    if header is None:
        raise ParseError(f"{what} has fewer than {header_row} non-blank rows, so it has no header row "
                         f"(the profile says the header is row {header_row})")
    return Table(header=header, rows=rows, header_line=header_line)


def column_index(header: list[str]) -> dict[str, int]:
    """Normalized header -> first position. A duplicated header maps to -1 (ambiguous)."""
    idx: dict[str, int] = {}
    for i, h in enumerate(header):
        n = norm_header(h)
        if not n:
            continue
        idx[n] = -1 if n in idx else i
    return idx


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects that form no cycles.

    A large file allocates hundreds of thousands of lists/dataclasses; the collector would walk
    them over and over (40% of parse time, measured) and can free nothing.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def pack_directory(path: Path, *, only: Iterable[str] | None = None) -> bytes:
    """The ``*.csv`` files of ``path`` (not recursive) as one ZIP document.

    Deterministic — names sorted, fixed timestamps and permissions, fixed compression — so
    the same folder always has the same sha256 and a second ingest is a no-op duplicate.
    ``only`` limits it to those file names (e.g. the tables the Synthea reader uses, which
    keeps observations.csv and friends out of the store).
    """
    path = Path(path)
    wanted = {n.lower() for n in only} if only is not None else None
    files = sorted(
        (f for f in path.iterdir()
         if f.is_file() and f.suffix.lower() == ".csv" and not f.name.startswith(".")
         and (wanted is None or f.name.lower() in wanted)),
        key=lambda f: f.name,
    )
    if not files:
        raise ParseError(f"folder {path} has no .csv files to read")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            info = zipfile.ZipInfo(f.name, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, f.read_bytes(), compresslevel=6)
    return buf.getvalue()


def iter_zip_tables(data: bytes, budgets: limits.Budgets = limits.DEFAULT,
                    ) -> Iterator[tuple[str, zipfile.ZipFile, zipfile.ZipInfo]]:
    """(lower-case base name, archive, member) for each CSV member; guards size, ratio,
    encryption and duplicates before anything is unpacked.

    The checks use the sizes the archive declares; :mod:`zipfile` never inflates a member past
    its declared size (it stops there and fails the CRC check), so a lying header cannot unpack
    more than was checked."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ParseError(f"the file starts like a ZIP archive but cannot be opened ({type(exc).__name__}); "
                         "pack the folder again") from exc
    if len(members) > MAX_ZIP_MEMBERS:
        raise ParseError(f"the ZIP holds {len(members):,} files, over the limit of {MAX_ZIP_MEMBERS:,}; "
                         "pack only the tables needed")
    total = sum(m.file_size for m in members)
    if total > budgets.max_unpacked_bytes:
        raise ParseError(f"the ZIP unpacks to {total / limits.MIB:,.0f} MiB, over the {budgets.max_unpacked_mb:g} MiB "
                         "limit (ingest.max_unpacked_mb); pack only the tables needed")
    for m in members:
        if m.flag_bits & 0x1:
            raise ParseError("the ZIP is password-protected (encrypted), so it cannot be read; pack the "
                             "export again without a password")
        if m.file_size > _RATIO_FLOOR and m.file_size > budgets.max_zip_ratio * max(m.compress_size, 1):
            raise ParseError(f"a file in the ZIP unpacks to {m.file_size / max(m.compress_size, 1):,.0f} times its "
                             f"packed size, over the limit of {budgets.max_zip_ratio:g} (ingest.max_zip_ratio); "
                             "exports are not that repetitive - this looks like a ZIP bomb")
    seen: set[str] = set()
    for m in members:
        if m.is_dir() or "__MACOSX" in m.filename:
            continue
        base = m.filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
        if not base.endswith(".csv") or base.startswith("."):
            continue
        if base in seen:
            raise ParseError(f"the ZIP holds {base} more than once (in different folders); keep one")
        seen.add(base)
        yield base, zf, m
