"""An audience as column batches: each batch its good rows' raw text per column, and its bad rows.

The columnar planner reads an audience here instead of row by row. A CSV chunk of plain lines
(no quote, no NUL, valid UTF-8: nearly every chunk of a real file) is split by pyarrow in a
few vectorised calls; any other chunk, and JSONL and Parquet files, go through the row reader
of `loa.campaigns.audience` and are turned into columns afterwards, so every row is read,
refused and numbered exactly as the row reader does (a property test holds them together).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from loa.campaigns.audience import (
    MAX_FIELD,
    BadRow,
    Item,
    TextChunk,
    csv_chunks,
    open_audience,
)

CHUNK_BYTES = 1 << 21  # CSV bytes split at a time: tens of thousands of rows
ITEM_ROWS = 16_384  # rows of the row reader turned into one batch


@dataclass(slots=True)
class Columns:
    """One batch of an audience: good rows as columns of raw text, and the bad rows.

    A CSV batch keeps its rows split into fields and takes a column out only when it is asked
    for: most plans read the phone and region columns alone.
    """

    lines: Any  # numpy int64: the line of each good row
    names: list[str]  # the audience's columns
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), in line order
    checkpoint: tuple[int, int] | None = None  # resume point after this batch
    fields: dict[str, Any] = field(default_factory=dict)  # column -> pyarrow strings, taken
    split: Any = None  # pyarrow list<string>: each good row's fields, when not taken yet

    @property
    def rows(self) -> int:
        """Rows in the batch, good and bad (blank lines are no rows)."""
        return len(self.lines) + len(self.bad)

    def get(self, name: str) -> Any:
        """A column's values (pyarrow strings, one per good row), or None without the column."""
        found = self.fields.get(name)
        if found is None and self.split is not None and name in self.names:
            found = self.fields[name] = pc.list_element(self.split, self.names.index(name))
        return found

    def column(self, name: str) -> Any:
        """A column's values, or "" for each row when the audience has no such column."""
        found = self.get(name)
        if found is None:
            return pa.array([""] * len(self.lines), pa.string())
        return found


def read_columns(
    path: Path, resume: tuple[int, int] | None = None, rows: int = ITEM_ROWS
) -> Iterator[Columns]:
    """The audience's batches from `resume` on (any format `open_audience` reads), of about
    `rows` rows at most (a planner checkpoints between batches, never inside one)."""
    audience = open_audience(path, resume=resume)
    if audience.format != "csv":
        return _from_items(audience.columns, iter(audience), min(rows, ITEM_ROWS))
    splitter = _Splitter(audience.columns)
    size = max(64, min(CHUNK_BYTES, rows * 32))  # 32 bytes: a short row
    columns, delimiter, chunks = csv_chunks(path, resume, splitter.split, size)
    splitter.delimiter = delimiter
    return _batches(columns, chunks)


def _batches(columns: list[str], chunks: Iterator[Columns | list[Item]]) -> Iterator[Columns]:
    for chunk in chunks:
        if isinstance(chunk, Columns):
            yield chunk
        elif chunk:
            yield _columns_of(columns, chunk)


def _from_items(columns: list[str], items: Iterator[Item], rows: int) -> Iterator[Columns]:
    while batch := list(itertools.islice(items, rows)):
        yield _columns_of(columns, batch)


def _columns_of(columns: list[str], items: list[Item]) -> Columns:
    """Items of the row reader as one batch."""
    lines: list[int] = []
    values: list[list[str]] = [[] for _ in columns]
    bad: list[tuple[int, str]] = []
    for item in items:
        if isinstance(item, BadRow):
            bad.append((item.line, item.reason))
            continue
        lines.append(item.line)
        for index, name in enumerate(columns):
            values[index].append(item.fields[name])
    fields = {name: pa.array(v, pa.string()) for name, v in zip(columns, values, strict=True)}
    return Columns(np.array(lines, np.int64), columns, bad, items[-1].checkpoint, fields)


class _Splitter:
    """Splits a chunk of plain CSV lines into columns, or declines it (None)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.width = len(columns)
        self.delimiter = ","

    def split(self, chunk: TextChunk) -> Columns | None:
        data = chunk.data
        if b'"' in data or b"\x00" in data:
            return None
        try:  # arrow checks the UTF-8 far faster than bytes.decode
            text = pa.array([data], pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            return None
        lines = pc.split_pattern(text, "\n").flatten()
        if data.endswith(b"\n"):
            lines = lines.slice(0, len(lines) - 1)
        if b"\r" in data:  # a CRLF file: each line loses one carriage return, as the row reader
            lines = pc.replace_substring_regex(lines, "\r$", "")
        return self._columns(chunk, lines)

    def _columns(self, chunk: TextChunk, lines: Any) -> Columns | None:
        split = pc.split_pattern(lines, self.delimiter)
        width = pc.list_value_length(split).to_numpy(zero_copy_only=False)
        length = pc.utf8_length(lines).to_numpy(zero_copy_only=False)
        numbers = np.arange(chunk.first_line, chunk.first_line + len(lines), dtype=np.int64)
        good = (width == self.width) & (length > 0) & (length <= MAX_FIELD)
        wrong = (width != self.width) & (length > 0)
        if np.any(~good & ~wrong & (length > 0)):
            return None  # a long line of the right width: the row reader looks at its fields
        bad = [
            (int(line), f"expected {self.width} fields, found {int(found)}")
            for line, found in zip(numbers[wrong], width[wrong], strict=True)
        ]
        if not good.all():
            split = split.filter(pa.array(good))
        end = chunk.offset + len(chunk.data)
        last = chunk.first_line + len(lines) - 1
        return Columns(numbers[good], self.columns, bad, (end, last), split=split)
