"""Phone cells to numbers as 64-bit integers, a column at a time.

The E.164 number `+84912345678` is the integer 84912345678: what deduplication, partitions and
routing key on. The spellings nearly every cell has (`0912345678`, `84912345678`,
`+84 912 345 678`, `(+84) 912.345.678`: a Vietnamese mobile with the separators
`loa.phone.normalize` drops) are decided by two vectorised regular expressions; every other
cell goes through `normalize` itself, so both paths give the same number or the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from loa.errors import InvalidPhone
from loa.phone import MOBILE_PREFIXES, normalize

VN = 84_000_000_000  # +84 followed by nine digits
_MAX_INPUT = 64  # as loa.phone: a longer cell is refused before any work on it
_SEPARATORS = r"[ .()\-]"
_PREFIXES = pa.array(sorted(MOBILE_PREFIXES), pa.string())


@dataclass(slots=True)
class Numbers:
    """A column of phone cells read: the number of each row (0 where invalid) and why not."""

    values: Any  # numpy int64
    valid: Any  # numpy bool
    reasons: dict[int, str]  # row index -> "phone: <reason>", for the invalid rows


def read_numbers(cells: Any) -> Numbers:
    """The numbers of a pyarrow string column of phone cells."""
    cells = pc.fill_null(cells, "")
    cleaned = _cleaned(cells)
    fast = _fast(cells, cleaned)
    values = np.zeros(len(cells), np.int64)
    if fast.any():
        national = pc.utf8_slice_codeunits(cleaned.filter(pa.array(fast)), -9)
        values[fast] = pc.cast(national, pa.int64()).to_numpy() + VN
    valid = fast.copy()
    reasons: dict[int, str] = {}
    slow = np.flatnonzero(~fast)
    if len(slow):
        raw = cells.take(pa.array(slow)).to_pylist()
        for index, cell in zip(slow.tolist(), raw, strict=True):
            try:
                values[index] = int(normalize(cell)[1:])
                valid[index] = True
            except InvalidPhone as exc:
                reasons[index] = f"phone: {exc}"
    return Numbers(values, valid, reasons)


def _cleaned(cells: Any) -> Any:
    """Cells without separators; only those that are not bare digits are searched for any."""
    spelled = pc.invert(pc.ascii_is_decimal(cells))
    if not pc.any(spelled).as_py():
        return cells
    fixed = pc.replace_substring(cells.filter(spelled), " ", "")  # the commonest separator
    odd = pc.invert(pc.ascii_is_decimal(fixed))
    if pc.any(odd).as_py():  # dots, dashes, brackets, a plus: what is left of them
        fixed = pc.replace_with_mask(
            fixed, odd, pc.replace_substring_regex(fixed.filter(odd), _SEPARATORS, "")
        )
    return pc.replace_with_mask(cells, spelled, fixed)


def _fast(cells: Any, cleaned: Any) -> Any:
    """A mask: the cells that are a Vietnamese mobile in one of the common spellings."""
    short = pc.less_equal(pc.utf8_length(cells), _MAX_INPUT)
    size = pc.binary_length(cleaned)
    head = pc.or_(
        pc.or_(
            pc.and_(pc.equal(size, 10), pc.starts_with(cleaned, "0")),
            pc.and_(pc.equal(size, 11), pc.starts_with(cleaned, "84")),
        ),
        pc.and_(pc.equal(size, 12), pc.starts_with(cleaned, "+84")),
    )
    tail = pc.utf8_slice_codeunits(cleaned, -9)
    mobile = pc.is_in(pc.utf8_slice_codeunits(tail, 0, 2), value_set=_PREFIXES)
    fast = pc.and_(pc.and_(short, head), pc.and_(pc.ascii_is_decimal(tail), mobile))
    return pc.fill_null(fast, False).to_numpy(zero_copy_only=False)


def e164(values: Any) -> list[str]:
    """Numbers back to E.164 text (`+84912345678`)."""
    digits = pc.cast(pa.array(values, pa.int64()), pa.string())
    return pc.utf8_replace_slice(digits, 0, 0, "+").to_pylist()  # type: ignore[no-any-return]
