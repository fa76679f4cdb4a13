"""A template's {{ field }} slots filled a column at a time, exactly as row by row.

Each distinct cell of a slot's column is checked (missing when empty or blank) and folded once;
the texts are joined by arrow in one call. A template whose text could begin or end with a
cell is left to the row renderer, whose final strip would then depend on the cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from loa.campaigns.sandbox import MAX_TEXT
from loa.campaigns.templates import Slots


def fillable(slots: Slots) -> bool:
    """Whether the text begins and ends with template text that is not blank."""
    first, last = slots.pieces[0], slots.pieces[-1]
    return bool(first and last and not first[0].isspace() and not last[-1].isspace())


def fill(slots: Slots, columns: list[Any]) -> tuple[Any, Any]:
    """Each row's text (pyarrow strings) and its reason to be invalid (a numpy array of
    objects, None where it is not); `columns` holds each slot's cells, in slot order."""
    rows = len(columns[0])
    reasons = np.full(rows, None, object)
    parts: list[Any] = [pa.scalar(piece, pa.string()) for piece in slots.pieces]
    for (index, name), cells in zip(slots.slots, columns, strict=True):
        parts[index], missing = _filled(slots, cells)
        reasons[missing & (reasons == None)] = slots.missing(name)  # noqa: E711 (numpy)
    texts = pc.binary_join_element_wise(*parts, "")
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False)
    for row in np.flatnonzero((lengths > MAX_TEXT) & (reasons == None)).tolist():  # noqa: E711
        reasons[row] = slots.too_long(int(lengths[row]))
    return texts, reasons


def _filled(slots: Slots, cells: Any) -> tuple[Any, Any]:
    """A slot's values per row, and a mask of the rows where it is missing."""
    encoded = pc.dictionary_encode(cells)
    values = [slots.value(cell) for cell in encoded.dictionary.to_pylist()]
    missing = np.array([value is None for value in values] or [False], bool)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    filled = pa.array([value or "" for value in values], pa.string())
    column = pa.DictionaryArray.from_arrays(encoded.indices, filled).cast(pa.string())
    return column, missing[indices]
