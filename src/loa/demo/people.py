"""A synthetic national audience, written to CSV a row at a time, and what it must yield."""

from __future__ import annotations

import bisect
import csv
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loa.demo.country import (
    CARRIERS,
    EMERGENCY_PROVINCE,
    FAMILY_NAMES,
    GIVEN_NAMES,
    MIDDLE_NAMES,
    PROVINCES,
    ZALO_ROUTE,
    Carrier,
    Province,
    route_of,
)

COLUMNS = ("phone", "name", "region", "province", "zalo_id", "lang")
# A multiplier coprime with 10**7: n -> n * STRIDE mod 10**7 visits every subscriber number of
# a prefix once, so numbers are unique without remembering the ones handed out.
STRIDE = 7_654_321
SUBSCRIBERS = 10**7
MALFORMED_KINDS = ("too short", "letters in number", "empty", "extra field")

HasZalo = Callable[[str], bool]  # "84..." -> whether Zalo knows the number
Silent = Callable[[str], bool]  # "84..." -> whether Zalo leaves the alert undelivered there


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of the audience with each trait."""

    zalo: float = 0.55  # people with a zalo_id column filled
    malformed: float = 0.002  # rows with a broken phone or a broken line
    opted_out: float = 0.004  # people already on the opt-out list
    english: float = 0.15  # people whose `lang` is en (visitors, expatriates); the rest vi


@dataclass
class Facts:
    """What the generated file holds, and what a correct run must do with it."""

    path: Path
    rows: int = 0
    malformed: list[int] = field(default_factory=list)  # line numbers
    opted_out: list[str] = field(default_factory=list)  # E.164, on the list before the run
    replier_line: int = 2  # the citizen who will answer STOP
    replier_phone: str = ""
    replier_carrier: str = ""
    advisory: Counter[str] = field(default_factory=Counter)  # route -> messages tried there
    emergency: Counter[str] = field(default_factory=Counter)
    no_account: int = 0  # Zalo ids Zalo does not know: fallback to SMS
    with_zalo: int = 0
    emergency_people: int = 0  # people of the flood alert's province it must reach
    emergency_no_account: int = 0  # of them: a Zalo id Zalo does not know, so SMS at once
    emergency_silent: int = 0  # of them: accepted by Zalo, never delivered, so SMS later
    emergency_languages: Counter[str] = field(default_factory=Counter)  # lang -> people
    emergency_later: Counter[str] = field(default_factory=Counter)  # route -> SMS after silence
    emergency_sms_first: Counter[str] = field(default_factory=Counter)  # route -> no Zalo id

    @property
    def advisory_people(self) -> int:
        """People the advisory must reach (one outcome each)."""
        return sum(self.advisory.values()) - self.no_account

    @property
    def emergency_zalo_delivered(self) -> int:
        """The alert's Zalo messages Zalo delivers (and posts a delivered event for)."""
        return self.emergency[ZALO_ROUTE] - self.emergency_no_account - self.emergency_silent


class _Numbers:
    """Unique mobile numbers by carrier and prefix, drawn with the carriers' market shares."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cumulative = list(itertools.accumulate(c.share for c in CARRIERS))
        self.issued: Counter[str] = Counter()
        self.offsets = {p: rng.randrange(SUBSCRIBERS) for c in CARRIERS for p in c.prefixes}

    def carrier(self) -> Carrier:
        draw = self.rng.random() * self.cumulative[-1]
        return CARRIERS[bisect.bisect_right(self.cumulative, draw)]

    def number(self, carrier: Carrier) -> str:
        """A national number (0 + 9 digits) nobody else in the file has."""
        prefix = self.rng.choice(carrier.prefixes)
        serial = self.issued[prefix]
        self.issued[prefix] += 1
        return f"{prefix}{(serial * STRIDE + self.offsets[prefix]) % SUBSCRIBERS:07d}"


def _written(national: str, rng: random.Random) -> str:
    """The number as people type it into spreadsheets: mostly 0..., sometimes otherwise."""
    draw = rng.random()
    if draw < 0.85:
        return national
    if draw < 0.92:
        return "84" + national[1:]
    if draw < 0.96:
        rest = national[1:]
        return f"+84 {rest[:3]} {rest[3:6]} {rest[6:]}"
    return f"{national[:4]}.{national[4:7]}.{national[7:]}"


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FAMILY_NAMES)} {rng.choice(MIDDLE_NAMES)} {rng.choice(GIVEN_NAMES)}"


def _malformed(kind: int, row: list[str]) -> list[str]:
    """A broken copy of a row: a phone loa must refuse, or a line with a field too many."""
    phone = row[0]
    if kind == 0:
        return [phone[:6], *row[1:]]
    if kind == 1:
        return [phone[:3] + "O" + phone[4:], *row[1:]]
    if kind == 2:
        return ["", *row[1:]]
    return [*row, "?"]


class _Writer:
    """Writes the rows and keeps the facts; one instance per file."""

    def __init__(
        self, facts: Facts, mix: Mix, has_zalo: HasZalo, silent: Silent, seed: int
    ) -> None:
        self.facts = facts
        self.mix = mix
        self.has_zalo = has_zalo
        self.silent = silent
        self.rng = random.Random(seed)
        self.numbers = _Numbers(self.rng)
        self.provinces_at = list(itertools.accumulate(p.millions for p in PROVINCES))
        self.malformed_kind = itertools.cycle(range(len(MALFORMED_KINDS)))

    def province(self) -> Province:
        draw = self.rng.random() * self.provinces_at[-1]
        return PROVINCES[bisect.bisect_right(self.provinces_at, draw)]

    def row(self, line: int) -> list[str]:
        """The row of one line, its facts counted."""
        rng, facts = self.rng, self.facts
        replier = line == facts.replier_line
        carrier = CARRIERS[0] if replier else self.numbers.carrier()
        national = self.numbers.number(carrier)
        province = self.province()
        while replier and province.code == EMERGENCY_PROVINCE:
            province = self.province()
        zalo = not replier and rng.random() < self.mix.zalo
        lang = "en" if rng.random() < self.mix.english else "vi"
        row = [
            _written(national, rng),
            _name(rng),
            province.code,
            province.name,
            f"{rng.getrandbits(60):d}" if zalo else "",
            lang,
        ]
        if not replier and rng.random() < self.mix.malformed:
            facts.malformed.append(line)
            return _malformed(next(self.malformed_kind), row)
        e164 = "+84" + national[1:]
        if replier:
            facts.replier_phone, facts.replier_carrier = e164, carrier.name
        elif rng.random() < self.mix.opted_out:
            facts.opted_out.append(e164)
            return row
        self._count(carrier, province, zalo, e164)
        if province.code == EMERGENCY_PROVINCE:
            self._count_alert(route_of(carrier), zalo, e164, lang)
        return row

    def _count_alert(self, route: str, zalo: bool, e164: str, lang: str) -> None:
        """The flood alert goes by Zalo to whoever has a Zalo id, by SMS to the rest, and by
        SMS too to whom Zalo does not know, or leaves undelivered past fallback_after."""
        facts = self.facts
        facts.emergency_people += 1
        facts.emergency_languages[lang] += 1
        if not zalo:
            facts.emergency[route] += 1
            facts.emergency_sms_first[route] += 1
            return
        facts.emergency[ZALO_ROUTE] += 1
        if not self.has_zalo(e164[1:]):
            facts.emergency_no_account += 1
            facts.emergency[route] += 1
        elif self.silent(e164[1:]):
            facts.emergency_silent += 1
            facts.emergency[route] += 1
            facts.emergency_later[route] += 1

    def _count(self, carrier: Carrier, province: Province, zalo: bool, e164: str) -> None:
        facts, route = self.facts, route_of(carrier)
        if zalo:
            facts.with_zalo += 1
            facts.advisory[ZALO_ROUTE] += 1
            if self.has_zalo(e164[1:]):
                return
            facts.no_account += 1
        facts.advisory[route] += 1


def write_audience(
    path: Path,
    people: int,
    has_zalo: HasZalo,
    seed: int = 2026,
    mix: Mix | None = None,
    silent: Silent = lambda phone: False,
) -> Facts:
    """Write `people` rows (a few of them malformed) to `path` as CSV; return their facts.

    Streamed: the rows go to the file as they are made; only the counters, the malformed line
    numbers and the opt-out list (a fraction of a percent) stay in memory.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = Facts(path=path)
    writer = _Writer(facts, mix or Mix(), has_zalo, silent, seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(COLUMNS)
        for line in range(2, people + 2):  # the header is line 1
            out.writerow(writer.row(line))
    facts.rows = people
    return facts
