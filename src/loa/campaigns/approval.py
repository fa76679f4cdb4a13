"""The two-person rule: which campaigns need a second person's approval before launch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loa.campaigns.audience import BadRow, open_audience
from loa.errors import ConfigError, InvalidPhone
from loa.message import Lane
from loa.phone import normalize

# a file of only test numbers longer than this is no test: it needs approval like any other
TEST_SCAN_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Need:
    """Whether a campaign needs approval, and why (stored with it, shown in its status)."""

    required: bool
    reason: str


def known_test_numbers(numbers: Iterable[str]) -> frozenset[str]:
    """The configured test numbers in E.164; ConfigError names one that is not a number."""
    found = set()
    for number in numbers:
        try:
            found.add(normalize(number))
        except InvalidPhone as exc:
            message = f"api.test_numbers: {number!r} is not a phone number: {exc}"
            raise ConfigError(message) from None
    return frozenset(found)


def assess(lane: Lane, audience: Path, threshold: int, tests: frozenset[str]) -> Need:
    """Read as little of the audience as answers the question (a blocking call: use a thread)."""
    if lane is Lane.EMERGENCY:
        return Need(True, "emergency lane")
    rows, only_tests = _scan(audience, threshold, tests)
    if only_tests:
        return Need(False, "test list")
    if rows > threshold:
        return Need(True, f"more than {threshold} recipients")
    return Need(False, f"at most {threshold} recipients")


def _scan(audience: Path, threshold: int, tests: frozenset[str]) -> tuple[int, bool]:
    """Rows read (at most past the threshold) and whether every one is a test number."""
    rows, only_tests = 0, bool(tests)
    for item in open_audience(audience):
        rows += 1
        if only_tests:
            only_tests = not isinstance(item, BadRow) and _is_test(item.fields, tests)
        if rows > threshold and (not only_tests or rows > TEST_SCAN_ROWS):
            return rows, only_tests and rows <= TEST_SCAN_ROWS
    return rows, only_tests and rows > 0


def _is_test(fields: dict[str, str], tests: frozenset[str]) -> bool:
    try:
        return normalize(fields.get("phone", "")) in tests
    except InvalidPhone:
        return False
