"""The planner benchmark's audience: N Vietnamese mobiles as people type them, in a CSV file.

Row n (0-based) is a pure function of n, so a file of N/10 rows is the head of a file of N rows
and the expected counts (invalid, duplicate, queued) are known without reading the file back:

- the number: one of 256 (two-digit prefix, digit) slots weighted roughly like the market
  (Viettel ~47%, Vinaphone ~22%, MobiFone ~22%, the small carriers ~9%), then six digits from
  a permutation of n, so distinct rows have distinct numbers (up to 256 million rows);
- its spelling: `0912345678` (half), `84912345678` (a quarter), `+84 912 345 678` (a quarter);
- a duplicate (2.5%): rows n % 40 == 17 repeat the number of row n - 997 in another spelling;
- a malformed phone (0.1%): rows n % 1000 == 503, too short, letters, a landline, empty...;
- a malformed CSV row (0.001%): rows n % 100000 == 77776 have two fields, not three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHUNK_ROWS = 200_000  # rows built and written at a time
HEADER = "phone,name,region\n"

# (two-digit prefix, the digits that may follow it): every sub-block libphonenumber knows as a
# valid mobile (089 is only 896-899, 052 only 522/523/528, 055 only 559, 099 not 992)
_BLOCKS = [
    *((p, "0123456789") for p in ["96", "97", "98", "86", "32", "33", "34", "35", "36", "37",
                                   "38", "39"]),  # Viettel
    *((p, "0123456") for p in ["91", "94", "88", "81", "82", "83", "84", "85"]),  # Vinaphone
    ("90", "0123456789"), ("93", "012345678"), ("89", "6789"),  # MobiFone
    *((p, "0123456") for p in ["70", "76", "77", "78", "79"]),
    ("92", "012"), ("56", "012"), ("58", "012"), ("52", "238"),  # Vietnamobile
    ("99", "013"), ("59", "012"), ("87", "012"), ("55", "9"),  # Gmobile, iTel, Reddi
]  # fmt: skip
# (prefix, next digit) pairs: every pair is distinct, so (slot, six digits) never repeats
SLOTS: tuple[str, ...] = tuple(p + d for p, digits in _BLOCKS for d in digits)
assert len(SLOTS) == 256
MAX_ROWS = len(SLOTS) * 1_000_000

DUPLICATE_EVERY, DUPLICATE_AT, DUPLICATE_BACK = 40, 17, 997
MALFORMED_EVERY, MALFORMED_AT = 1000, 503
BAD_CSV_EVERY, BAD_CSV_AT = 100_000, 77_776
MALFORMED = (
    "0912 345",  # too short
    "09123abc78",  # letters
    "",  # empty
    "024 3825 1234",  # a Hanoi landline
    "+84 912 345 678 90",  # too long
    "12345",  # a spreadsheet kept five digits
    "0112345678",  # not a mobile prefix
)

_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
           "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]  # fmt: skip
_MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quốc"]
_GIVEN = ["An", "Bình", "Chi", "Dũng", "Hà", "Hải", "Hương", "Lan", "Linh", "Long", "Mai",
          "Nam", "Phương", "Quân", "Thảo", "Trang", "Tuấn", "Vy", "Khoa", "Yến"]  # fmt: skip
NAMES: tuple[str, ...] = tuple(f"{f} {m} {g}" for f in _FAMILY for m in _MIDDLE for g in _GIVEN)
# province codes, Hanoi and Ho Chi Minh City the most frequent
REGIONS: tuple[str, ...] = (
    *("01", "79", "01", "79", "31", "48", "92", "75", "74", "01", "79"),
    *("26", "38", "40", "46", "52", "56", "66", "77", "89", "91", "96"),
)


def national(n: int) -> str:
    """The 9-digit national number of row `n` before duplicates are applied."""
    slot, k = SLOTS[n & 255], n >> 8
    return slot + str((k * 7_919 + 12_345) % 1_000_000).zfill(6)


def spelled(nat: str, n: int) -> str:
    """`nat` typed one of three ways, chosen by `n`."""
    form = n * 13 % 20
    if form < 10:
        return "0" + nat
    if form < 15:
        return "84" + nat
    return f"+84 {nat[:3]} {nat[3:6]} {nat[6:]}"


def phone(n: int) -> str:
    """The phone cell of row `n`."""
    if n % MALFORMED_EVERY == MALFORMED_AT:
        return MALFORMED[n // MALFORMED_EVERY % len(MALFORMED)]
    if n % DUPLICATE_EVERY == DUPLICATE_AT and n >= DUPLICATE_BACK:
        return spelled(national(n - DUPLICATE_BACK), n)
    return spelled(national(n), n)


def lines(start: int, stop: int) -> str:
    """Rows start..stop-1 as CSV text."""
    names, regions = NAMES, REGIONS
    out = []
    for n in range(start, stop):
        if n % BAD_CSV_EVERY == BAD_CSV_AT:
            out.append(f"{phone(n)},{names[n % len(names)]}\n")
            continue
        out.append(f"{phone(n)},{names[n * 7 % len(names)]},{regions[n * 3 % len(regions)]}\n")
    return "".join(out)


def write_audience(path: Path, count: int) -> int:
    """Write `count` rows (plus the header) to `path`; returns the file's size in bytes."""
    if count > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS:,} distinct numbers, not {count:,}")
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(HEADER)
        for start in range(0, count, CHUNK_ROWS):
            handle.write(lines(start, min(start + CHUNK_ROWS, count)))
    return path.stat().st_size


def phones(count: int) -> list[str]:
    """The phone cells of the first `count` rows (the normalisation peers' sample)."""
    return [phone(n) for n in range(count)]


@dataclass(frozen=True)
class Expected:
    """What planning `count` rows must report."""

    total: int
    invalid: int
    duplicate: int
    queued: int


def _hits(count: int, every: int, at: int, first: int = 0) -> int:
    """How many n in [first, count) have n % every == at."""

    def upto(limit: int) -> int:  # n in [0, limit)
        return max(0, (limit - at + every - 1) // every)

    return upto(count) - upto(first)


def expected(count: int) -> Expected:
    """The report planning `count` generated rows must give (the three kinds never overlap)."""
    malformed = _hits(count, MALFORMED_EVERY, MALFORMED_AT)
    bad_csv = _hits(count, BAD_CSV_EVERY, BAD_CSV_AT)
    # a duplicate's original row is never malformed, never a duplicate and never a bad CSV row
    duplicate = _hits(count, DUPLICATE_EVERY, DUPLICATE_AT, first=DUPLICATE_BACK)
    invalid = malformed + bad_csv
    return Expected(count, invalid, duplicate, count - invalid - duplicate)
