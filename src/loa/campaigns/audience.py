"""Streaming audience reader: CSV, JSONL and Parquet files of any size, one row at a time.

An audience can hold 100 million rows, so nothing here loads a file whole: text is read in
chunks of `CHUNK_BYTES`, Parquet in batches of `PARQUET_BATCH` rows, and memory stays flat
whatever the file's size (DESIGN.md, invariant 3). For Parquet it is bounded by the file's
largest row group, which pyarrow must decode a column chunk at a time.

Iterating an `Audience` yields `Row` or `BadRow` items. A malformed row is a `BadRow` with its
line number and the reason, and reading goes on with the next line (invariant 6). Only
problems with the whole file (missing, empty, binary, no `phone` column, duplicate columns,
unreadable Parquet) raise `AudienceError`, when the audience is opened.

Line numbers:

- CSV and JSONL: the 1-based physical line of the file where the row starts (a CSV header
  is line 1; a quoted field spanning lines still reports the line where its row starts).
- Parquet has no lines: `line` is the row number as a spreadsheet shows it, with a virtual
  header row 1, so the first row is 2, exactly as in the CSV the file was most likely made
  from.

Formats:

- CSV: UTF-8 with or without a BOM; the header line names the columns and says the
  delimiter (comma, semicolon or tab, whichever it holds most of); fields may be quoted,
  with doubled quotes inside and newlines too. A row whose quoting is broken is reported on
  its first line and reading goes on from the next line, so a stray opening quote costs
  one row, not every row up to the next quote.
- JSONL: one object per line; the first object's keys name the columns, a row's missing keys
  are "", and keys that are not columns are ignored. Numbers become text (84912345678.0
  becomes "84912345678"), true/false "true"/"false"; arrays and objects make a bad row.
- Parquet: every column becomes text the same way; lists, structs and maps make a bad row.

Column names are lower-cased and stripped; a value longer than MAX_FIELD characters makes a
bad row. Values are the raw text of each cell, always `str`; a missing or null value is "". Cells
that look like spreadsheet formulas (`=HYPERLINK(...)`, `+1`, `-1`, `@x`) are kept verbatim:
loa never evaluates them, and whoever exports audience data or reports to a spreadsheet must
escape them there.

Resuming: every item carries `offset` (for CSV and JSONL the byte offset just after it, for
Parquet the number of rows read) and `last_line`; pass `item.checkpoint` as
`open_audience(..., resume=...)` to continue right after that item without reading what
came before. `skip_rows=n` instead skips the first n items by reading past them.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import operator
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import orjson

from loa.errors import AudienceError

Format = Literal["csv", "jsonl", "parquet"]

MAX_FIELD = 65536  # characters in one value; longer is a BadRow, so one cell cannot eat memory
CHUNK_BYTES = 1 << 18  # text is read this much at a time
PARQUET_BATCH = 8192  # rows per Parquet batch
MAX_HEADER_BYTES = 1 << 20  # a first line longer than this is not a header
MAX_COLUMNS = 1024  # a person is a phone and some fields: thousands of columns are an attack
MAX_ROW_BYTES = 1 << 20  # bytes one CSV row may hold, however wide the header
MAX_JSON_LINE = MAX_ROW_BYTES  # bytes in one JSONL line
SCAN_JSON_LINES = 100  # non-blank JSONL lines searched for the first object, which names columns

EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}

# Leading bytes of files that operators upload by mistake, for a clearer refusal than "not UTF-8".
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "gzip-compressed; decompress it first"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one); export it as CSV UTF-8"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office document; export it as CSV UTF-8"),
    (b"PAR1", "a Parquet file; name it .parquet or pass format='parquet'"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8"),
)
_BOM = b"\xef\xbb\xbf"
_QUOTED = re.compile(r'"[^"]*"')

# Stands in for a line that is not text (told apart by identity: decoding never returns it).
# It holds a quote, so the CSV hot path, which only looks for quotes, passes it on.
_BAD_LINE = '"(not text)'
_UNCLOSED = "quoted field never closed"
_FIELD_TOO_LONG = f"field longer than {MAX_FIELD} characters"


def _too_long(cap: int) -> str:
    # Past the cap a row is not held to be parsed, but by the cap's arithmetic (see
    # _CsvParser) it has a field over MAX_FIELD characters, or too many fields, or a quoted
    # field that ran on because its closing quote is missing.
    return (
        f"row longer than {cap:,} bytes: a field longer than {MAX_FIELD} characters,"
        " too many fields, or a quoted field never closed"
    )


@dataclass(slots=True)
class Row:
    """One good row: `fields` maps every column to its raw text."""

    line: int
    fields: dict[str, str]
    offset: int = 0  # where the next item starts: bytes (CSV, JSONL) or rows read (Parquet)
    last_line: int = 0  # the row's last line: more than `line` when a quoted field spans lines

    @property
    def checkpoint(self) -> tuple[int, int]:
        """The `resume=` value that continues right after this row."""
        return (self.offset, self.last_line)


@dataclass(slots=True)
class BadRow:
    """A row that cannot be used: where it is and why. Reading goes on after it."""

    line: int
    reason: str
    offset: int = 0
    last_line: int = 0

    @property
    def checkpoint(self) -> tuple[int, int]:
        """The `resume=` value that continues right after this row."""
        return (self.offset, self.last_line)


Item = Row | BadRow


@dataclass(slots=True)
class _Cursor:
    """Where a text reader stands: bytes and lines done, and items still to skip."""

    offset: int
    line: int
    skip: int


class Audience:
    """An opened audience file: its columns, and its rows when iterated.

    Each iteration reads the file again from the start point given to `open_audience`.
    """

    def __init__(
        self,
        path: Path,
        format: Format,
        columns: list[str],
        items: Callable[[], Iterator[Item]],
    ) -> None:
        self.path = path
        self.format: Format = format
        self.columns = columns
        self._items = items

    def __iter__(self) -> Iterator[Item]:
        return self._items()

    def __repr__(self) -> str:
        return f"Audience({str(self.path)!r}, format={self.format!r}, columns={self.columns!r})"


def open_audience(
    path: str | os.PathLike[str],
    *,
    format: Format | None = None,
    required: Sequence[str] = ("phone",),
    skip_rows: int = 0,
    resume: tuple[int, int] | None = None,
) -> Audience:
    """Open an audience file, check its columns, and return it ready to iterate.

    `format` defaults to the one the extension names (see `EXTENSIONS`). `required` columns
    must all be present. `resume` is an item's `checkpoint`; `skip_rows` then skips that
    many more items. Raises AudienceError when the file as a whole cannot be used.
    """
    path = Path(path)
    fmt = format or _infer_format(path)
    if fmt not in ("csv", "jsonl", "parquet"):
        raise AudienceError(f"{path}: unknown format {fmt!r}; expected csv, jsonl or parquet")
    if skip_rows < 0:
        raise AudienceError(f"{path}: skip_rows must not be negative, not {skip_rows}")
    _check_file(path)
    if fmt == "csv":
        return _open_csv(path, required, skip_rows, resume)
    if fmt == "jsonl":
        return _open_jsonl(path, required, skip_rows, resume)
    return _open_parquet(path, required, skip_rows, resume)


# --- whole-file checks -------------------------------------------------------------------


def _infer_format(path: Path) -> Format:
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(EXTENSIONS)
        raise AudienceError(
            f"{path}: cannot tell the format from the extension {path.suffix!r} (known: {known});"
            " pass format='csv', 'jsonl' or 'parquet'"
        )
    return fmt


def _check_file(path: Path) -> None:
    """Refuse a missing file, a directory, an unreadable or an empty file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudienceError(f"{path}: no such file") from None
    except OSError as error:
        raise AudienceError(f"{path}: cannot read it: {error.strerror}") from None
    if path.is_dir():
        raise AudienceError(f"{path}: is a directory, not an audience file")
    if not os.access(path, os.R_OK):
        raise AudienceError(f"{path}: cannot read it: permission denied")
    if size == 0:
        raise AudienceError(f"{path}: the file is empty")


def _check_text(path: Path, head: bytes, what: str) -> str:
    """Decode a file's first line, refusing binary files with a reason an operator can act on.

    `head` may stop inside a long line, and so inside a character: only bytes that can never
    be UTF-8 count against it.
    """
    problem = None
    nul = head.find(b"\x00")
    if nul >= 0:
        problem = f"NUL byte at byte {nul + 1} of line 1"
    else:
        try:
            text: str = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError as error:
            problem = f"line 1 is not UTF-8 text at byte {error.start + 1}"
    if problem is None:
        return text
    for magic, kind in _MAGIC:  # only now: a CSV header may well start with "PAR1" or "%PDF"
        if head.startswith(magic):
            raise AudienceError(f"{path}: not {what}: the file is {kind}")
    raise AudienceError(f"{path}: not {what}: {problem}")


def _normalise_columns(path: Path, names: Sequence[str], required: Sequence[str]) -> list[str]:
    """Lower-case and strip column names; refuse blank, duplicate or missing required ones."""
    if len(names) > MAX_COLUMNS:
        raise AudienceError(f"{path}: {len(names):,} columns; at most {MAX_COLUMNS:,} are read")
    columns = [name.strip().lower() for name in names]
    for number, column in enumerate(columns, 1):
        if not column:
            raise AudienceError(f"{path}: column {number} has no name")
    seen: dict[str, int] = {}
    for number, column in enumerate(columns, 1):
        if column in seen:
            raise AudienceError(
                f"{path}: duplicate column {column!r} (columns {seen[column]} and {number})"
            )
        seen[column] = number
    missing = [name.strip().lower() for name in required if name.strip().lower() not in seen]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise AudienceError(f"{path}: no {listed} {noun}; columns are: {', '.join(columns)}")
    return columns


def _check_resume(path: Path, resume: tuple[int, int], start: int) -> None:
    """A resume offset must fall at the start of a line within the data, or at its end."""
    offset, line = resume
    size = path.stat().st_size
    if not start <= offset <= size or line < 0:
        raise AudienceError(f"{path}: resume point {resume} is outside the data")
    if start < offset < size:
        with path.open("rb") as file:
            file.seek(offset - 1)
            if file.read(1) != b"\n":
                raise AudienceError(f"{path}: resume offset {offset} is not at a line's start")


# --- text files: chunks of whole lines ---------------------------------------------------

# A chunk processor parses the whole lines in buf[:end] into items and says how many bytes and
# lines it finished; what it leaves (a quoted field that goes on past `end`) comes back with
# more. Items come back a chunk at a time: one list per chunk and one `chain` on top cost
# far less per row than a generator at each level.
_Process = Callable[[bytes, int, bool, _Cursor], tuple[list[Item], int, int]]
_T = TypeVar("_T")


def _text_items(
    path: Path, cursor: _Cursor, cap: int, too_long: str, process: _Process
) -> Iterator[Item]:
    """The items of a text file from `cursor` on."""
    chunks: Iterator[list[Item]] = _read_text(path, cursor, cap, too_long, process)
    return itertools.chain.from_iterable(chunks)


def _read_text(
    path: Path,
    cursor: _Cursor,
    cap: int,
    too_long: str,
    process: Callable[[bytes, int, bool, _Cursor], tuple[_T, int, int]],
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[_T | list[Item]]:
    """Feed a text file to `process` in chunks of whole lines, holding at most ~cap bytes.

    When the unfinished record at the head of the buffer grows past `cap` bytes it is one
    BadRow, and reading restarts on its second line: a stray opening quote thus costs one
    row, not the rest of the file.
    """
    buf = b""
    eof = False
    with path.open("rb") as file:
        file.seek(cursor.offset)
        while True:
            if not eof:
                data = file.read(chunk_bytes)
                eof = not data
                buf = buf + data if buf else data
            end = len(buf) if eof else buf.rfind(b"\n") + 1
            if end:
                items, done_bytes, done_lines = process(buf, end, eof, cursor)
                buf = buf[done_bytes:]
                cursor.offset += done_bytes
                cursor.line += done_lines
                yield items
            if eof and not buf:
                return
            if len(buf) > cap:
                buf, eof = _skip_record(file, buf, cursor)
                if cursor.skip:
                    cursor.skip -= 1
                else:
                    yield [BadRow(cursor.line, too_long, cursor.offset, cursor.line)]


def _skip_record(file: IO[bytes], buf: bytes, cursor: _Cursor) -> tuple[bytes, bool]:
    """Drop the first physical line of the over-long record at the head of `buf`."""
    newline = buf.find(b"\n")
    eof = False
    if newline >= 0:
        skipped, buf = newline + 1, buf[newline + 1 :]
    else:  # one huge physical line: discard it as it is read, never holding it whole
        skipped, buf = len(buf), b""
        while True:
            data = file.read(CHUNK_BYTES)
            if not data:
                eof = True
                break
            newline = data.find(b"\n")
            if newline >= 0:
                skipped, buf = skipped + newline + 1, data[newline + 1 :]
                break
            skipped += len(data)
    cursor.offset += skipped
    cursor.line += 1
    return buf, eof


def _chunk_lines(buf: bytes, end: int, eof: bool) -> tuple[bytes, list[bytes]]:
    """buf[:end] and its physical lines without their newlines.

    Parsers add up line lengths as they go for each item's offset: a running sum costs less
    than decoding the chunk in one go and splitting it twice.
    """
    chunk = buf[:end] if end < len(buf) else buf
    lines = chunk.split(b"\n")
    if not eof or chunk.endswith(b"\n"):
        lines.pop()  # the nothing after the last newline
    return chunk, lines


def _close_chunk(items: list[Item], end: int) -> None:
    """Counting a newline after every line overshoots by one at a file's unterminated end."""
    if items and items[-1].offset > end:
        items[-1].offset = end


def _line_problem(line: bytes) -> str | None:
    """Why one physical line is not text, or None."""
    nul = line.find(b"\x00")
    if nul >= 0:
        return f"NUL byte at byte {nul + 1} of the line"
    try:
        line.decode()
    except UnicodeDecodeError as error:
        return f"not UTF-8 text at byte {error.start + 1} of the line"
    return None


def _dict_maker(columns: list[str]) -> Callable[[Sequence[str]], dict[str, str]]:
    """`lambda values: dict(zip(columns, values))`, three times faster.

    The dict display is compiled for these columns, as collections.namedtuple and dataclasses
    compile their methods; the names enter the source only as repr() literals.
    """
    body = ", ".join(f"{name!r}: values[{index}]" for index, name in enumerate(columns))
    maker: Callable[[Sequence[str]], dict[str, str]] = eval(
        f"lambda values: {{{body}}}", {"__builtins__": {}}
    )
    return maker


# --- CSV -----------------------------------------------------------------------------------


def _open_csv(
    path: Path, required: Sequence[str], skip: int, resume: tuple[int, int] | None
) -> Audience:
    columns, parser, offset, line = _csv_setup(path, required, resume)

    def items() -> Iterator[Item]:
        cursor = _Cursor(offset, line, skip)
        return _text_items(path, cursor, parser.cap, _too_long(parser.cap), parser.process)

    return Audience(path, "csv", columns, items)


def _csv_setup(
    path: Path, required: Sequence[str], resume: tuple[int, int] | None
) -> tuple[list[str], _CsvParser, int, int]:
    """The columns, the parser, and the byte offset and line that reading starts after."""
    with path.open("rb") as file:
        head = file.read(MAX_HEADER_BYTES + 1)
    newline = head.find(b"\n")
    first = head if newline < 0 else head[: newline + 1]
    text = _check_text(path, first.removeprefix(_BOM), "a CSV text file").rstrip("\r\n")
    if len(first) > MAX_HEADER_BYTES:
        raise AudienceError(f"{path}: line 1 is longer than {MAX_HEADER_BYTES} bytes")
    start = len(first)
    if not text.strip():
        raise AudienceError(f"{path}: line 1 is blank; it must name the columns")
    delimiter = _sniff_delimiter(text)
    try:
        names = next(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error as error:
        raise AudienceError(f"{path}: line 1 (the header): {_csv_reason(str(error))}") from None
    columns = _normalise_columns(path, names, required)
    if resume is not None:
        _check_resume(path, resume, start)
    offset, line = resume if resume is not None else (start, 1)
    return columns, _CsvParser(columns, delimiter), offset, line


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Whole lines of a CSV audience that a columnar reader may split itself."""

    data: bytes  # the lines, the last newline included (except at an unterminated end)
    first_line: int  # the line number of the first of them
    offset: int  # the byte offset of the first of them


def csv_chunks(
    path: Path,
    resume: tuple[int, int] | None,
    clean: Callable[[TextChunk], _T | None],
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[list[str], str, Iterator[_T | list[Item]]]:
    """A CSV audience's columns, delimiter and contents chunk by chunk, from `resume` on.

    `clean` is offered each chunk of whole lines first and answers what it made of it, or None
    for a chunk it cannot decide (quotes, carriage returns in fields, bytes that are not
    text): the row parser then makes that chunk's items, exactly as `open_audience` does.
    """
    columns, parser, offset, line = _csv_setup(path, ("phone",), resume)

    def process(buf: bytes, end: int, eof: bool, cursor: _Cursor) -> tuple[Any, int, int]:
        chunk = buf[:end] if end < len(buf) else buf
        lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        made = clean(TextChunk(chunk, cursor.line + 1, cursor.offset)) if chunk else None
        if made is None:
            return parser.process(buf, end, eof, cursor)
        return made, len(chunk), lines

    cursor = _Cursor(offset, line, 0)
    chunks = _read_text(path, cursor, parser.cap, _too_long(parser.cap), process, chunk_bytes)
    return columns, parser.delimiter, chunks


def _sniff_delimiter(header: str) -> str:
    """Comma, semicolon or tab: whichever the header line holds most of, outside quotes."""
    bare = _QUOTED.sub("", header)
    counts = {delimiter: bare.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def _csv_reason(message: str) -> str:
    """The csv module's error, said so that an operator knows what to fix."""
    if message.startswith("field larger than field limit"):
        return _FIELD_TOO_LONG
    if "expected after" in message:
        return "text after a closing quote (a quote inside a quoted field must be doubled)"
    if message.startswith("new-line character seen"):
        return "carriage return inside an unquoted field"
    if message == "unexpected end of data":
        return _UNCLOSED
    return f"malformed CSV: {message}"


class _CsvParser:
    """Turns chunks of CSV lines into items. Quote-free lines (nearly all) are split in one
    C call; lines with a quote go through the csv module, which may pull further lines."""

    def __init__(self, columns: list[str], delimiter: str) -> None:
        self.columns = columns
        self.delimiter = delimiter
        self.width = len(columns)
        self.make = _dict_maker(columns)
        # The longest row whose fields all fit MAX_FIELD: 4 bytes a character, doubled
        # quotes fit in that, plus the quotes and delimiter around each field and a CRLF;
        # and never more than MAX_ROW_BYTES, so a wide header cannot buy a huge row.
        self.cap = min(self.width * (4 * MAX_FIELD + 3) + 2, MAX_ROW_BYTES)

    def process(
        self, buf: bytes, end: int, eof: bool, cursor: _Cursor
    ) -> tuple[list[Item], int, int]:
        """The items of the whole lines in buf[:end] (see `_Process`).

        One long loop on purpose: at hundreds of thousands of rows a second, a function call
        per row would cost a good part of the speed. Only unusual rows leave it.
        """
        chunk, lines = _chunk_lines(buf, end, eof)
        crlf = b"\r" in chunk
        special = crlf or b"\x00" in chunk
        make, width, delimiter, limit = self.make, self.width, self.delimiter, MAX_FIELD
        items: list[Item] = []
        emit = items.append
        line, offset, skip = cursor.line, cursor.offset, cursor.skip
        quoted = _QuotedReader(lines, crlf, delimiter)
        # Lines with quotes are parsed by a csv.reader fed from a deque: all in C. When a
        # quoted field goes on past the line, popleft() on the empty deque raises IndexError
        # out of the reader, and the record is parsed again with the lines it needs.
        pending: deque[str] = deque()
        parse_one = csv.reader(iter(pending.popleft, None), delimiter=delimiter, strict=True)
        rows = enumerate(lines)
        for index, raw in rows:
            line += 1
            offset += len(raw) + 1
            try:  # free in 3.11 unless it raises, which only bad lines do
                text = raw.decode()
            except UnicodeDecodeError:
                text = _BAD_LINE
            else:
                if special:  # this chunk has a carriage return or a NUL somewhere
                    if "\x00" in text:
                        text = _BAD_LINE
                    elif crlf:
                        text = text.removesuffix("\r")
            if '"' not in text:  # the hot path: no quotes, one line, one split
                values = text.split(delimiter)
                if len(values) == width and 0 < len(text) <= limit and not skip:
                    emit(Row(line, make(values), offset, line))
                elif text:  # blank lines are skipped
                    if skip:
                        skip -= 1
                    else:
                        emit(self._bad_split(line, values, offset))
                continue
            if text is not _BAD_LINE:  # one line with quotes: nearly always a whole record
                pending.append(text + "\n")
                try:
                    values = next(parse_one)
                except IndexError:  # a quoted field goes on to the next line
                    pass
                except csv.Error as error:
                    if skip:
                        skip -= 1
                    else:
                        emit(BadRow(line, _csv_reason(str(error)), offset, line))
                    continue
                else:
                    if len(values) == width and len(text) <= limit and not skip:
                        emit(Row(line, make(values), offset, line))
                    elif skip:
                        skip -= 1
                    else:
                        emit(self._bad_split(line, values, offset))
                    continue
            start = offset - len(raw) - 1
            if text is _BAD_LINE:
                item: Item | None = BadRow(line, _line_problem(raw) or "", offset, line)
                used, length = 1, offset - start
            else:
                item, used, length = self._quoted(quoted, index, line, offset, eof)
            if item is None:  # a quoted field goes on past this chunk: come back with more
                cursor.skip = skip
                return items, start - cursor.offset, index
            if skip:
                skip -= 1
            else:
                emit(item)
            for _ in range(used - 1):
                next(rows)
            line += used - 1
            offset = start + length
        cursor.skip = skip
        _close_chunk(items, cursor.offset + len(chunk))
        return items, len(chunk), len(lines)

    def _bad_split(self, line: int, values: list[str], offset: int) -> Item:
        """The item for a one-line record that has the wrong width or a long line."""
        if len(values) != self.width:
            reason = f"expected {self.width} fields, found {len(values)}"
            return BadRow(line, reason, offset, line)
        return self._checked(line, values, offset, line)

    def _checked(self, line: int, values: list[str], offset: int, last: int) -> Item:
        """A Row, unless one of its values is longer than MAX_FIELD."""
        for column, value in zip(self.columns, values, strict=True):
            if len(value) > MAX_FIELD:
                reason = f"field {column!r} longer than {MAX_FIELD} characters"
                return BadRow(line, reason, offset, line)
        return Row(line, self.make(values), offset, last)

    def _quoted(
        self, quoted: _QuotedReader, index: int, line: int, after_first: int, eof: bool
    ) -> tuple[Item | None, int, int]:
        """Parse the record starting at line `index` of the chunk with the csv module.

        Returns the item, how many lines and bytes it used, or None when the record may go
        on past the chunk. A bad record uses only its first line, so that the lines a stray
        quote swallowed are read again as rows of their own.
        """
        values, error, used, length = quoted.parse(index)
        if quoted.ran_out and not eof:
            return None, 0, 0
        first_length = quoted.lengths[0]
        if quoted.broken:
            reason = f"quoted field runs into line {line + quoted.broken}, which is not text"
        elif quoted.ran_out:
            reason = _UNCLOSED
        elif error is not None:
            reason = _csv_reason(error)
            if used > 1 and reason == _FIELD_TOO_LONG:  # most likely a stray opening quote
                reason += " (a quoted field never closed?)"
        elif len(values) != self.width:
            reason = f"expected {self.width} fields, found {len(values)}"
        elif length > self.cap:
            reason = _too_long(self.cap)
        else:
            offset = after_first - first_length + length
            item = self._checked(line, values, offset, line + used - 1)
            if isinstance(item, Row) or used == 1:
                return item, used, length
            reason = item.reason
        return BadRow(line, reason, after_first, line), 1, first_length


class _QuotedReader:
    """A csv.reader over a chunk's lines, started at whichever line the parser points it to."""

    def __init__(self, lines: list[bytes], crlf: bool, delimiter: str) -> None:
        self.lines = lines
        self.crlf = crlf
        self.delimiter = delimiter
        self.position = 0
        self.lengths: list[int] = []  # bytes of each line the last record used, newline included
        self.broken = 0  # how far into the last record a line that is not text came, or 0
        self.ran_out = False  # the last record asked for more lines than the chunk holds
        self.reader = self._start()

    def _start(self) -> Iterator[list[str]]:
        self.ran_out = False
        # strict: text after a closing quote is an error, which stops a stray opening quote
        # from silently merging the rows up to the next quote into one field
        return csv.reader(self._feed(), delimiter=self.delimiter, strict=True)

    def _feed(self) -> Iterator[str]:
        lines = self.lines
        while self.position < len(lines):
            raw = lines[self.position]
            self.lengths.append(len(raw) + 1)
            self.position += 1
            if _line_problem(raw) is not None:
                self.broken = len(self.lengths) - 1
                yield '"\n'  # closes the quoted field: the record ends here, as a bad one
                continue
            text = raw.decode()
            yield (text.removesuffix("\r") if self.crlf else text) + "\n"
        self.ran_out = True

    def parse(self, index: int) -> tuple[list[str], str | None, int, int]:
        """The fields of the record at line `index`, the csv error if any, lines and bytes used."""
        if self.ran_out:  # a finished feed cannot be restarted: take a new reader
            self.reader = self._start()
        self.position = index
        self.lengths = []
        self.broken = 0
        try:
            values, error = next(self.reader), None
        except csv.Error as failure:
            values, error = [], str(failure)
        except StopIteration:  # the feed ended before the record did: ran_out says so
            values, error = [], None
        return values, error, self.position - index, sum(self.lengths)


# --- JSONL ---------------------------------------------------------------------------------


def _open_jsonl(
    path: Path, required: Sequence[str], skip: int, resume: tuple[int, int] | None
) -> Audience:
    keys, start = _first_object(path)
    columns = _normalise_columns(path, keys, required)
    if resume is not None:
        _check_resume(path, resume, start)
    offset, line = resume if resume is not None else (start, 0)
    parser = _JsonParser(keys, columns)
    too_long = f"line longer than {MAX_JSON_LINE} bytes"

    def items() -> Iterator[Item]:
        cursor = _Cursor(offset, line, skip)
        return _text_items(path, cursor, MAX_JSON_LINE, too_long, parser.process)

    return Audience(path, "jsonl", columns, items)


def _first_object(path: Path) -> tuple[list[str], int]:
    """The keys of the file's first JSON object, which name the columns, and where data starts.

    JSONL has no header line, so the first object stands in for one; the lines before it
    are still read as rows (and reported as bad ones).
    """
    with path.open("rb") as file:
        first = file.readline(MAX_JSON_LINE)
        start = len(_BOM) if first.startswith(_BOM) else 0
        _check_text(path, first[start:], "a JSONL text file")
        line, seen = first[start:], 0
        while line and seen < SCAN_JSON_LINES:
            if line.strip():
                seen += 1
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    value = None
                if type(value) is dict:
                    return [str(key) for key in value], start
            line = _next_line(file)
    raise AudienceError(
        f"{path}: no JSON object in its first {SCAN_JSON_LINES} non-blank lines;"
        ' each line must be an object such as {"phone": "+84912345678"}'
    )


def _next_line(file: IO[bytes]) -> bytes:
    """The next line, at most MAX_JSON_LINE bytes of it: the rest of a longer one is dropped."""
    line = file.readline(MAX_JSON_LINE)
    rest = line
    while rest and not rest.endswith(b"\n"):
        rest = file.readline(MAX_JSON_LINE)
    return line


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}


def _picker(keys: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The values of these keys, in order, as a tuple (itemgetter's is not, for one key)."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)
    return lambda value: tuple(value[key] for key in keys)


class _JsonParser:
    """Turns chunks of JSONL lines into items, one orjson call a line."""

    def __init__(self, keys: list[str], columns: list[str]) -> None:
        self.columns = columns
        self.keys = frozenset(keys)
        self.pick = _picker(keys)
        self.make = _dict_maker(columns)
        # Rows written with the first object's keys (nearly all) are read through these pairs
        # without normalising their keys; any other row has its keys normalised first.
        self.pairs = list(zip(keys, columns, strict=True))
        self.plain = [(column, column) for column in columns]

    def process(
        self, buf: bytes, end: int, eof: bool, cursor: _Cursor
    ) -> tuple[list[Item], int, int]:
        chunk, lines = _chunk_lines(buf, end, eof)
        items: list[Item] = []
        emit = items.append
        line, offset, skip = cursor.line, cursor.offset, cursor.skip
        loads, make, limit = orjson.loads, self.make, MAX_FIELD
        pick, width, only_strings = self.pick, len(self.columns), {str}
        for raw in lines:
            line += 1
            offset += len(raw) + 1
            if skip:  # skipping is cheap: only blank lines need telling apart
                if raw.strip():
                    skip -= 1
                continue
            try:
                value = loads(raw)
            except orjson.JSONDecodeError as error:
                if raw.strip():  # blank lines are skipped
                    emit(BadRow(line, _json_problem(raw, error), offset, line))
                continue
            # The usual row: the first object's keys (as many, and all there), string values,
            # a line too short for any value to be over the limit. Anything else, the long way.
            if type(value) is dict and len(value) == width and len(raw) <= limit:
                try:
                    values = pick(value)
                except KeyError:
                    pass
                else:
                    if {*map(type, values)} == only_strings:
                        emit(Row(line, make(values), offset, line))
                        continue
            emit(self._item(value, line, offset))
        cursor.skip = skip
        _close_chunk(items, cursor.offset + len(chunk))
        return items, len(chunk), len(lines)

    def _item(self, value: Any, line: int, offset: int) -> Item:
        if type(value) is not dict:
            kind = _JSON_KINDS.get(type(value), "true, false or null")
            return BadRow(line, f"not a JSON object but {kind}", offset, line)
        pairs = self.pairs
        if value.keys() != self.keys:
            normalised: dict[str, Any] = {}
            for key, field in value.items():
                name = key.strip().lower()
                if name in normalised:
                    return BadRow(line, f"duplicate key {name!r}", offset, line)
                normalised[name] = field
            value, pairs = normalised, self.plain
        fields: dict[str, str] = {}
        for key, column in pairs:
            text = _json_text(value.get(key))
            if text is None:
                return BadRow(line, f"field {column!r} is not a string or number", offset, line)
            if len(text) > MAX_FIELD:
                reason = f"field {column!r} longer than {MAX_FIELD} characters"
                return BadRow(line, reason, offset, line)
            fields[column] = text
        return Row(line, fields, offset, line)


def _json_text(value: Any) -> str | None:
    """A JSON scalar as text; None for arrays and objects, which no template can print."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is int:
        return str(value)
    if kind is float:
        return _number_text(value)
    if kind is bool:
        return "true" if value else "false"
    return None


def _number_text(value: float) -> str:
    """Whole floats without ".0": a phone exported as 84912345678.0 stays 84912345678."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _json_problem(raw: bytes, error: orjson.JSONDecodeError) -> str:
    return _line_problem(raw) or f"not valid JSON: {error}"


# --- Parquet -------------------------------------------------------------------------------


def _arrow() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.compute and pyarrow.parquet, imported only when a Parquet file is read."""
    import pyarrow  # type: ignore[import-untyped]
    import pyarrow.compute  # type: ignore[import-untyped]
    import pyarrow.parquet  # type: ignore[import-untyped]

    return pyarrow, pyarrow.compute, pyarrow.parquet


def _open_parquet(
    path: Path, required: Sequence[str], skip: int, resume: tuple[int, int] | None
) -> Audience:
    pa, _, pq = _arrow()
    try:
        with pq.ParquetFile(path) as parquet:
            names = list(parquet.schema_arrow.names)
            groups = [parquet.metadata.row_group(n).num_rows for n in range(parquet.num_row_groups)]
    except (pa.ArrowException, OSError) as error:
        raise AudienceError(f"{path}: not a Parquet file that can be read: {error}") from None
    columns = _normalise_columns(path, names, required)
    total = sum(groups)
    done = 0
    if resume is not None:
        done, line = resume
        if not 0 <= done <= total or line != done + 1:
            raise AudienceError(f"{path}: resume point {resume} is not a row of this file")

    def items() -> Iterator[Item]:
        return _parquet_items(path, names, columns, groups, done + skip)

    return Audience(path, "parquet", columns, items)


def _parquet_items(
    path: Path, names: list[str], columns: list[str], groups: list[int], start: int
) -> Iterator[Item]:
    """Rows from `start` on, batch by batch; whole row groups before `start` are not read."""
    _, _, pq = _arrow()
    first, index = 0, 0
    while first < len(groups) and index + groups[first] <= start:
        index += groups[first]
        first += 1
    if first == len(groups):
        return
    drop = start - index
    # buffer_size streams each column chunk instead of reading it whole: what stays in memory
    # is bounded by the largest row group (pyarrow's writer default is 1M rows), never more
    with pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False) as parquet:
        batches = parquet.iter_batches(
            batch_size=PARQUET_BATCH, row_groups=range(first, len(groups)), columns=names
        )
        for batch in batches:
            if drop >= batch.num_rows:
                drop -= batch.num_rows
                index += batch.num_rows
                continue
            if drop:
                batch, index, drop = batch.slice(drop), index + drop, 0
            yield from _batch_items(batch, columns, index)
            index += batch.num_rows


def _batch_items(batch: Any, columns: list[str], index: int) -> Iterator[Item]:
    """The items of one record batch whose first row is row `index` (0-based) of the file."""
    texts: list[list[str]] = []
    bad: dict[int, str] = {}
    make = _dict_maker(columns)
    for column, array in zip(columns, batch.columns, strict=True):
        values, problems = _column_texts(array, column)
        texts.append(values)
        for row, reason in problems.items():
            bad.setdefault(row, reason)
    for row, cells in enumerate(zip(*texts, strict=True)):
        done = index + row + 1  # rows read once this one is: its offset
        if bad and row in bad:
            yield BadRow(done + 1, bad[row], done, done + 1)
        else:
            yield Row(done + 1, make(cells), done, done + 1)


def _column_texts(array: Any, column: str) -> tuple[list[str], dict[int, str]]:
    """One column of a batch as text (null → ""), and the rows whose value cannot be text."""
    pa, pc, _ = _arrow()
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _column_texts(array.dictionary_decode(), column)
    if pa.types.is_floating(kind):  # arrow would write 84912345678.0 as 8.4912345678e+10
        return [
            "" if value is None else _number_text(float(value)) for value in array.to_pylist()
        ], {}
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        try:
            array = pc.cast(array, pa.string())
        except pa.ArrowException:
            return _uncastable(array, column)
    values: list[str] = pc.fill_null(array, "").to_pylist()
    problems: dict[int, str] = {}
    if len(array) and (pc.max(pc.utf8_length(array)).as_py() or 0) > MAX_FIELD:
        reason = f"field {column!r} longer than {MAX_FIELD} characters"
        problems = {row: reason for row, value in enumerate(values) if len(value) > MAX_FIELD}
    return values, problems


def _uncastable(array: Any, column: str) -> tuple[list[str], dict[int, str]]:
    """Values arrow cannot cast to text as a whole: binary with some bytes that are not UTF-8
    (the others are kept), lists, structs and maps (which no template can print)."""
    values: list[str] = []
    problems: dict[int, str] = {}
    for row, value in enumerate(array.to_pylist()):
        text = "" if value is None else _bytes_text(value)
        if text is None:
            kind = "UTF-8 text" if isinstance(value, bytes) else "a string or number"
            problems[row] = f"field {column!r} is not {kind}"
            text = ""
        values.append(text)
    return values, problems


def _bytes_text(value: Any) -> str | None:
    if not isinstance(value, bytes) or b"\x00" in value:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None
