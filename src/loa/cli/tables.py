"""Tables for the terminal that never cut an id or a number.

A table is printed as columns when it fits the terminal's width with every header, id and
number whole (free-text columns, such as a reply's text, may wrap); otherwise each row is
printed as a block of `header: value` lines. Nothing is ever shortened with an ellipsis.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

TEXT_MIN = 12  # a free-text column wraps, but not narrower than this
BORDERS = 3  # a column's padding and rule in rich's default box


def show(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    text: Collection[str] = (),
    console: Console | None = None,
) -> None:
    """Print `rows` under `headers`; columns named in `text` may wrap, no cell is cut."""
    console = console or Console()
    widths = [
        max([cell_len(header), *(cell_len(row[i]) for row in rows)])
        for i, header in enumerate(headers)
    ]
    needed = 1 + sum(
        (min(width, TEXT_MIN) if header in text else width) + BORDERS
        for header, width in zip(headers, widths, strict=True)
    )
    if needed <= console.width:
        console.print(_table(title, headers, rows, widths, text))
    else:
        _blocks(console, title, headers, rows)


def _table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[int],
    text: Collection[str],
) -> Table:
    table = Table(title=title or None)
    for header, width in zip(headers, widths, strict=True):
        if header in text:
            table.add_column(header, overflow="fold", min_width=min(width, TEXT_MIN))
        else:
            table.add_column(header, no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # text as it is: never read as markup
    return table


def _blocks(
    console: Console, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """One `header: value` line a cell, a blank line between rows: for narrow terminals."""
    if title:
        console.print(title, style="bold", soft_wrap=True, markup=False, highlight=False)
    width = max(cell_len(header) for header in headers)
    for row in rows:
        console.print()
        for header, value in zip(headers, row, strict=True):
            line = f"{header.rjust(width)}: {value}"
            console.print(line, soft_wrap=True, markup=False, highlight=False)
