"""Appointments on real Redis: allocation order, capacity under concurrency, reruns, replies."""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import APPROVER, OPERATOR, read_sink, running, until
from loa.access.audit import AuditLog
from loa.appointments import Appointments
from loa.appointments.inputs import minutes
from loa.appointments.ledger import Ledger
from loa.appointments.provinces import PROVINCES, province_code
from loa.appointments.replies import reply_action
from loa.campaigns.service import Campaigns
from loa.demo.country import PROVINCES as DEMO_PROVINCES
from loa.engine.connection import RedisClient, connect
from loa.engine.events import EventWriter
from loa.engine.keys import shard_keys
from loa.engine.metrics import Metrics
from loa.errors import AppointmentError, AudienceError
from loa.message import Inbound
from loa.settings import Settings

pytestmark = pytest.mark.anyio

DAY = date(2031, 3, 3)  # sessions are on and after it: always in the future for these tests
SITES_HEADER = ["site_id", "name", "province", "address", "date", "start", "end", "capacity"]
PEOPLE_HEADER = ["phone", "priority_group", "registered_at", "site_id", "province", "name"]


@pytest.fixture
def redis_url(service_or_cluster_url: str) -> str:
    return service_or_cluster_url


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Settings:
    sink = tmp_path / "sink"
    route = {"adapter": "file", "options": {"path": str(sink / "{route}-{pid}.jsonl")}}
    return make_settings(  # type: ignore[no-any-return]
        routes={"sms": route},
        channels={"sms": {"default": "sms"}},
        api={"approval_threshold": 50},
    )


def number(n: int) -> str:
    """A Vietnamese mobile as people type it."""
    return f"0912{n:06d}"


def e164(n: int) -> str:
    return f"+84912{n:06d}"


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[str(cell) for cell in row] for row in rows])
    return path


def site_rows(sessions: list[tuple[str, str, int, str, int]]) -> list[list[Any]]:
    """(site, province, day offset, start, capacity) -> rows of a sites file with sessions,
    each session three hours long."""
    return [
        [
            site,
            f"Trạm Y tế {site}",
            province,
            f"{site} Lê Lợi",
            DAY + timedelta(days=offset),
            start,
            f"{int(start[:2]) + 3:02d}{start[2:]}",
            capacity,
        ]
        for site, province, offset, start, capacity in sessions
    ]


def person(n: int, group: int, minute: int, site: str = "", province: str = "") -> list[Any]:
    registered = datetime(2030, 11, 1, 8, 0) + timedelta(minutes=minute)
    return [number(n), group, registered.isoformat(), site, province, f"Người {n}"]


def read_schedule(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return {row["phone"]: row for row in csv.DictReader(handle)}


async def check_ledger(ledger: Ledger) -> dict[str, str]:
    """The ledger is exact: every session's places taken are the people holding it, never over
    its capacity; the lists of sessions with room and of who waits agree with the records;
    the per-group counters agree with the people. Returns phone -> session held."""
    sessions = {s.id: s for s in await ledger.sessions()}
    phones = [entry.partition("|")[2] for entry in await ledger.orders()]
    people = [p for p in await ledger.people(phones) if p is not None]
    held = {p.phone: p.session for p in people if p.holds}
    holders = Counter(held.values())
    for session in sessions.values():
        assert session.booked == holders[session.id] <= session.capacity, session
        room = session.booked < session.capacity
        for key in (f"free:s:{session.site}", f"free:p:{session.province}"):
            listed = await ledger.redis.zscore(ledger.key(key), session.id) is not None
            assert listed == room, (key, session)
    assert set(holders) <= set(sessions)
    waiting = {p.phone for p in people if p.state == "waiting"}
    listed = {entry.partition("|")[2] for entry in await ledger.waiting()}
    assert listed == waiting
    for p in people:
        if p.state == "waiting":
            member = f"{p.order}|{p.phone}"
            assert (
                await ledger.redis.zscore(ledger.key(f"wait:{p.kind}:{p.preference}"), member)
                is not None
            )
    counted = await ledger.counts()
    for group in {p.group for p in people} | set(counted):
        mine = [p for p in people if p.group == group]
        expected = {
            "placed": sum(p.holds for p in mine),
            "confirmed": sum(p.state == "confirmed" for p in mine),
            "waiting": sum(p.state == "waiting" for p in mine),
            "cancelled": sum(p.state == "cancelled" for p in mine),
        }
        assert counted.get(group, dict.fromkeys(expected, 0)) == expected, group
    return held


def test_provinces_are_the_34_of_2025() -> None:
    assert set(PROVINCES) == {p.code for p in DEMO_PROVINCES}
    assert len(PROVINCES) == 34
    assert province_code("1") == province_code("01") == province_code("Hà Nội") == "01"
    assert province_code(" ha noi ") == "01"
    assert province_code("TP. Hồ Chí Minh") == province_code("thanh pho ho chi minh") == "79"
    assert province_code("Thanh Hoa") == "38"
    for unknown in ("99", "", "Hoa", "13", "Hà Tây"):
        assert province_code(unknown) is None, unknown


@pytest.mark.parametrize(
    ("reply", "action"),
    [
        ("1", "confirm"),
        ("Có", "confirm"),
        ("xác nhận.", "confirm"),
        (" 2 ", "release"),
        ("KHÔNG", "release"),
        ("Hủy lịch", "release"),
        ("Hủy", None),  # an opt-out keyword: never an answer to an appointment
        ("đổi", "move"),
        ("Đổi lịch!", "move"),
        ("3", None),
        ("toi bi sot", None),
    ],
)
def test_reply_keywords(reply: str, action: str | None) -> None:
    assert reply_action(reply) == action


async def test_strict_order_earliest_session_and_reasons(settings, redis_client, tmp_path):
    sites = write_csv(
        tmp_path / "sites.csv",
        SITES_HEADER,
        site_rows(
            [
                ("A", "79", 0, "08:00", 2),
                ("A", "79", 1, "08:00", 1),
                ("B", "79", 0, "07:00", 1),  # earlier than A's first: province people go here
                ("C", "01", 0, "08:00", 0),  # a site that takes nobody
            ]
        ),
    )
    people = write_csv(
        tmp_path / "people.csv",
        PEOPLE_HEADER,
        [
            person(1, 2, 5, site="A"),  # group 2: after every group 1
            person(2, 1, 60, site="A"),
            person(3, 1, 30, province="79"),  # first of all: B's 07:00
            person(4, 1, 90, site="A"),
            person(5, 1, 120, site="A"),  # A is full on both days by then
            person(6, 3, 0, province="Hà Nội"),  # a site there, but no place
            person(7, 1, 0, province="48"),  # no site in Da Nang
            person(8, 1, 0, site="Z"),  # no such site
            person(9, 2, 0, province="79"),  # group 2, earlier registered than 1: after 1's
        ],
    )
    schedule = tmp_path / "schedule.csv"
    report = await Appointments(settings, redis_client).allocate(
        "order", sites, people, first=DAY, output=schedule
    )
    rows = read_schedule(schedule)
    assert list(rows) == [e164(n) for n in (7, 8, 3, 2, 4, 5, 9, 1, 6)], "in placing order"
    assert rows[e164(3)]["site_id"] == "B" and rows[e164(3)]["start"] == "07:00"
    assert (rows[e164(2)]["site_id"], rows[e164(2)]["date"]) == ("A", str(DAY))
    assert (rows[e164(4)]["site_id"], rows[e164(4)]["date"]) == ("A", str(DAY))
    assert (rows[e164(5)]["date"], rows[e164(5)]["start"]) == (str(DAY + timedelta(1)), "08:00")
    waiting = {phone: row["reason"] for phone, row in rows.items() if row["status"] == "waiting"}
    assert waiting == {
        e164(1): "no session left",
        e164(9): "no session left",
        e164(6): "no session left",
        e164(7): "no site in province",
        e164(8): "no such site",
    }
    first = rows[e164(2)]
    assert first["appointment.site_name"] == "Trạm Y tế A"
    assert first["appointment.address"] == "A Lê Lợi"
    assert (first["appointment.date"], first["appointment.start"], first["end"]) == (
        str(DAY),
        "08:00",
        "11:00",
    )
    assert (first["new"], first["name"], first["registered_at"]) == (
        "yes",
        "Người 2",
        "2030-11-01T09:00:00+07:00",
    )
    assert (first["preferred_site_id"], rows[e164(3)]["preferred_province"]) == ("A", "79")
    assert (report.people["placed"], report.people["waiting"]) == (4, 5)
    summary = report.to_json()
    assert summary["by_group"] == {
        "1": {"placed": 4, "confirmed": 0, "waiting": 2, "cancelled": 0},
        "2": {"placed": 0, "confirmed": 0, "waiting": 2, "cancelled": 0},
        "3": {"placed": 0, "confirmed": 0, "waiting": 1, "cancelled": 0},
    }
    assert summary["by_site"]["A"] == {"capacity": 3, "booked": 3, "free": 0}
    assert summary["by_site"]["C"] == {"capacity": 0, "booked": 0, "free": 0}
    await check_ledger(Ledger(redis_client, settings.namespace, "order"))


async def test_horizon_bounds_the_sessions(settings, redis_client, tmp_path):
    sites = write_csv(
        tmp_path / "s.csv",
        SITES_HEADER,
        site_rows([("A", "79", 0, "08:00", 1), ("A", "79", 5, "08:00", 1)]),
    )
    people = write_csv(
        tmp_path / "p.csv", PEOPLE_HEADER, [person(n, 1, n, site="A") for n in range(3)]
    )
    appointments = Appointments(settings, redis_client)
    report = await appointments.allocate(
        "window", sites, people, first=DAY + timedelta(1), last=DAY + timedelta(5)
    )
    assert (report.people["placed"], report.people["waiting"]) == (1, 2), "day 0 is before it"
    with pytest.raises(AppointmentError, match=r"ends .* before it starts"):
        await appointments.allocate("window", sites, people, first=DAY, last=DAY - timedelta(1))


async def test_hostile_input_is_refused_row_by_row(settings, redis_client, tmp_path):
    sites = write_csv(
        tmp_path / "sites.csv",
        SITES_HEADER,
        [
            ["A", "Trạm A", "79", "x", str(DAY), "08:00", "11:00", "3"],
            ["A", "Trạm A", "79", "x", str(DAY), "08:00", "11:00", "3"],  # the same session
            ["B", "Trạm B", "99", "x", str(DAY), "08:00", "11:00", "3"],  # no province 99
            ["C", "Trạm C", "01", "x", str(DAY), "08:00", "11:00", "-2"],
            ["C", "Trạm C", "01", "x", str(DAY), "09:00", "11:00", "many"],
            ["C", "Trạm C", "01", "x", str(DAY), "10:00", "09:00", "1"],
            ["C", "Trạm C", "01", "x", "31/02/2031", "10:00", "11:00", "1"],
            ["C", "Trạm C", "01", "x", str(DAY), "25:00", "26:00", "1"],
            ["C", "Other name", "01", "x", str(DAY), "13:00", "14:00", "1"],
            ["D|x", "Trạm D", "01", "x", str(DAY), "13:00", "14:00", "1"],
            ["E", "Trạm E", "01", "x", str(DAY), "13:00", "14:00", "0"],  # closed: kept
            ["F", "Trạm F", "01", "x", "", "", "", ""],  # a site without sessions
            ["", "Trạm", "01", "x", str(DAY), "13:00", "14:00", "1"],
        ],
    )
    people = write_csv(
        tmp_path / "people.csv",
        PEOPLE_HEADER,
        [
            person(1, 1, 0, site="A"),
            person(1, 1, 5, site="A"),  # the same phone again
            ["0912 abc", 1, "2030-11-01", "A", "", "x"],
            [number(2), 0, "2030-11-01", "A", "", "x"],
            [number(3), "first", "2030-11-01", "A", "", "x"],
            [number(4), 1, "yesterday", "A", "", "x"],
            [number(5), 1, "2030-11-01", "", "", "x"],
            [number(6), 1, "2030-11-01", "", "Atlantis", "x"],
            [number(7), 1, "2030-11-01", "", "E", "x"],  # a province that is not one
            [number(8), 1, "01/11/2030", "", "1", "Tám"],  # Ha Noi, as a spreadsheet writes it
        ],
    )
    report = await Appointments(settings, redis_client).allocate(
        "hostile", sites, people, first=DAY
    )
    reasons = {(Path(r.file).name, r.line): r.reason for r in report.refused}
    assert reasons == {
        ("sites.csv", 3): "session A|2031-03-03|08:00 is given twice (first on line 2)",
        ("sites.csv", 4): "unknown province '99': expected one of the 34 province codes",
        ("sites.csv", 5): "capacity -2 is negative",
        ("sites.csv", 6): "capacity 'many' is not a whole number",
        ("sites.csv", 7): "end 09:00 is not after start 10:00",
        ("sites.csv", 8): "date '31/02/2031' is not a date (write 2026-12-10 or 10/12/2026)",
        ("sites.csv", 9): "start: '25:00' is not a time of day; hours go to 23, minutes to 59",
        ("sites.csv", 10): "site 'C' is given differently on line 5",
        ("sites.csv", 11): "site_id holds '|' or a control character",
        ("sites.csv", 14): "site_id is empty",
        ("people.csv", 3): "phone given twice (first on line 2)",
        ("people.csv", 4): "phone: letters in number",
        ("people.csv", 5): "priority_group '0' is not a whole number from 1 to 999",
        ("people.csv", 6): "priority_group 'first' is not a whole number from 1 to 999",
        ("people.csv", 7): "registered_at 'yesterday' is not a date (write 2026-12-24, "
        "24/12/2026 or a date-time like 2026-12-24T14:30)",
        ("people.csv", 8): "no site_id or province: say where the person wants to go",
        ("people.csv", 9): "unknown province 'Atlantis': expected one of the 34 codes",
        ("people.csv", 10): "unknown province 'E': expected one of the 34 codes",
    }
    assert report.refused_count == len(reasons)
    assert (report.sites["new"], report.sessions["new"]) == (4, 2), "A, C, E, F; A and E's"
    assert (report.people["placed"], report.people["waiting"]) == (1, 1)
    assert report.waiting == Counter({"no_session": 1}), "Ha Noi's only session takes nobody"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["phone", "priority_group", "site_id"], "no 'registered_at' column"),
        (["phone", "priority_group", "registered_at"], "no 'site_id' or 'province' column"),
        (["phone", "priority_group", "registered_at", "site_id", "status"], "'status'"),
        (["phone", "priority_group", "registered_at", "site_id", "appointment.date"], "rename"),
    ],
)
async def test_unusable_files_change_nothing(settings, redis_client, tmp_path, header, message):
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 1)]))
    people = write_csv(tmp_path / "p.csv", header, [[number(1)] + ["1"] * (len(header) - 1)])
    appointments = Appointments(settings, redis_client)
    with pytest.raises(AudienceError, match=message):
        await appointments.allocate("broken", sites, people, first=DAY)
    assert await appointments.drives() == [], "nothing was recorded"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AudienceError, match="empty"):
        await appointments.allocate("broken", empty, people, first=DAY)


async def test_rerun_changes_nobody_and_incremental_runs_place_only_the_new(
    settings, redis_client, tmp_path
):
    appointments = Appointments(settings, redis_client)
    sessions = [("A", "79", 0, "08:00", 2), ("B", "79", 0, "09:00", 2)]
    sites = write_csv(tmp_path / "s1.csv", SITES_HEADER, site_rows(sessions))
    first_people = [person(n, 2, n, province="79") for n in range(6)]
    people = write_csv(tmp_path / "p1.csv", PEOPLE_HEADER, first_people)
    one = await appointments.allocate("grow", sites, people, first=DAY, output=tmp_path / "1.csv")
    assert (one.people["placed"], one.people["waiting"]) == (4, 2)
    before = read_schedule(tmp_path / "1.csv")

    again = await appointments.allocate("grow", sites, people, first=DAY, output=tmp_path / "2.csv")
    assert (again.people["placed"], again.people["kept"], again.people["waiting"]) == (0, 4, 2)
    after = read_schedule(tmp_path / "2.csv")
    assert {p: {**r, "new": ""} for p, r in after.items()} == {
        p: {**r, "new": ""} for p, r in before.items()
    }, "a second run changes nobody"
    assert not any(row["new"] for row in after.values())

    # more sessions, and new registrants, one of them of a higher group
    more = write_csv(
        tmp_path / "s2.csv", SITES_HEADER, site_rows([*sessions, ("A", "79", 1, "08:00", 3)])
    )
    newcomers = [person(10, 1, 500, site="A"), person(11, 3, 0, site="A")]
    grown = write_csv(tmp_path / "p2.csv", PEOPLE_HEADER, first_people + newcomers)
    three = await appointments.allocate("grow", more, grown, first=DAY, output=tmp_path / "3.csv")
    assert three.sessions == Counter({"same": 2, "new": 1})
    assert (three.people["placed"], three.people["kept"], three.people["waiting"]) == (3, 4, 1)
    rows = read_schedule(tmp_path / "3.csv")
    for phone, row in before.items():
        if row["status"] == "placed":
            assert (rows[phone]["site_id"], rows[phone]["date"], rows[phone]["start"]) == (
                row["site_id"],
                row["date"],
                row["start"],
            ), "whoever was placed keeps their place"
    new_day = str(DAY + timedelta(1))
    placed_now = {p for p, r in rows.items() if r["new"] == "yes"}
    assert placed_now == {e164(10), e164(4), e164(5)}, "group 1 first, then who waited"
    assert {rows[p]["date"] for p in placed_now} == {new_day}
    assert rows[e164(11)]["status"] == "waiting", "group 3 comes last"

    # a file of only the newcomers still leaves everyone else as they are
    alone = write_csv(tmp_path / "p3.csv", PEOPLE_HEADER, [person(12, 1, 0, site="B")])
    four = await appointments.allocate("grow", more, alone, first=DAY, output=tmp_path / "4.csv")
    assert four.people["waiting"] == 2, "the newcomer and group 3's, tried again"
    assert len(read_schedule(tmp_path / "4.csv")) == 9
    held = await check_ledger(Ledger(redis_client, settings.namespace, "grow"))
    assert len(held) == 7


async def test_capacity_changes_never_take_places_back(settings, redis_client, tmp_path):
    appointments = Appointments(settings, redis_client)
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 3)]))
    people = write_csv(
        tmp_path / "p.csv", PEOPLE_HEADER, [person(n, 1, n, site="A") for n in range(5)]
    )
    await appointments.allocate("cap", sites, people, first=DAY)
    lower = write_csv(tmp_path / "l.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 2)]))
    report = await appointments.allocate("cap", lower, people, first=DAY)
    assert report.sessions == Counter({"refused": 1})
    assert report.refused[0].reason == "capacity 2 is below the 3 places already booked"
    higher = write_csv(tmp_path / "h.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 4)]))
    report = await appointments.allocate("cap", higher, people, first=DAY)
    assert (report.sessions["changed"], report.people["placed"], report.people["waiting"]) == (
        1,
        1,
        1,
    )
    moved = write_csv(tmp_path / "m.csv", SITES_HEADER, site_rows([("A", "01", 1, "08:00", 4)]))
    report = await appointments.allocate("cap", moved, people, first=DAY)
    assert report.refused[0].reason == "site 'A' is in province 79 since an earlier run"
    assert report.sessions["refused"] == 1, "its sessions are refused with it"
    await check_ledger(Ledger(redis_client, settings.namespace, "cap"))


async def test_two_allocations_at_once_never_exceed_capacity(settings, redis_url, tmp_path):
    sessions = [(site, "79", day, "08:00", 7) for site in "AB" for day in range(3)]
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows(sessions))  # 42 places
    one = write_csv(
        tmp_path / "1.csv",
        PEOPLE_HEADER,
        [person(n, 1 + n % 3, n, province="79") for n in range(60)],
    )
    two = write_csv(  # 20 of the same people, 40 others, some wanting one site
        tmp_path / "2.csv",
        PEOPLE_HEADER,
        [person(n, 1 + n % 2, n, site="A" if n % 4 else "", province="79") for n in range(40, 100)],
    )
    clients = [connect(redis_url), connect(redis_url)]
    try:
        reports = await asyncio.gather(
            Appointments(settings, clients[0]).allocate("race", sites, one, first=DAY),
            Appointments(settings, clients[1]).allocate("race", sites, two, first=DAY),
        )
        ledger = Ledger(clients[0], settings.namespace, "race")
        held = await check_ledger(ledger)
    finally:
        for client in clients:
            await client.aclose()
    assert len(held) == 42, "every place taken, none twice"
    assert sum(r.people["placed"] for r in reports) == 42


async def test_releases_during_an_allocation_keep_the_ledger_exact(settings, redis_url, tmp_path):
    sessions = [("A", "79", day, "08:00", 5) for day in range(4)]
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows(sessions))  # 20 places
    first = write_csv(
        tmp_path / "1.csv", PEOPLE_HEADER, [person(n, 1, n, site="A") for n in range(30)]
    )
    second = write_csv(
        tmp_path / "2.csv", PEOPLE_HEADER, [person(n, 2, n, province="79") for n in range(30, 70)]
    )
    clients = [connect(redis_url) for _ in range(3)]
    try:
        a, b, c = (Appointments(settings, client) for client in clients)
        await a.allocate("churn", sites, first, first=DAY)
        releases = [b.change("churn", "release", number(n), OPERATOR) for n in range(0, 20, 2)]
        moves = [c.change("churn", "move", number(n), OPERATOR) for n in range(1, 20, 4)]
        results = await asyncio.gather(
            a.allocate("churn", sites, second, first=DAY), *releases, *moves
        )
        held = await check_ledger(Ledger(clients[0], settings.namespace, "churn"))
    finally:
        for client in clients:
            await client.aclose()
    outcomes = Counter(r.outcome for r in results[1:])  # type: ignore[union-attr]
    assert outcomes["released"] == 10
    assert len(held) == 20, "every place given back went to someone waiting"
    assert not {e164(n) for n in range(0, 20, 2)} & set(held), "who gave theirs back has none"


async def inbound(settings: Settings, client: RedisClient, replies: list[tuple[int, str]]) -> None:
    """Replies as a carrier's SMSC delivers them: through the worker's event writer."""
    writer = EventWriter(client, settings.namespace, settings.events, Metrics())
    for n, message in replies:
        writer.inbound(Inbound(route="sms", sender=f"84912{n:06d}", text=message))
    await writer.drained()


async def test_replies_confirm_release_move_once_and_refill_in_order(
    settings, redis_client, tmp_path
):
    await inbound(settings, redis_client, [(1, "1")])  # before the drive: not for it
    sessions = [("A", "79", 0, "08:00", 2), ("A", "79", 1, "08:00", 1), ("B", "79", 0, "08:00", 1)]
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows(sessions))
    people = write_csv(
        tmp_path / "p.csv",
        PEOPLE_HEADER,
        [
            person(1, 1, 0, site="A"),
            person(2, 1, 1, site="A"),
            person(3, 1, 2, site="A"),  # A's second day
            person(4, 1, 3, site="B"),
            person(5, 2, 0, site="A"),  # waits for A
            person(6, 1, 9, province="79"),  # waits for any site of 79: ahead of 5 (group 1)
            person(7, 3, 0, site="B"),  # waits for B
        ],
    )
    appointments = Appointments(settings, redis_client)
    await appointments.allocate("replies", sites, people, first=DAY)
    await inbound(
        settings,
        redis_client,
        [
            (1, "Xác nhận"),  # confirms A day 0
            (2, "Hủy lịch"),  # gives A day 0 back: 6 (group 1, province 79) gets it before 5
            (3, "1"),
            (3, "Đổi"),  # A day 1 is the last session of A: nowhere to move
            (4, "DOI"),  # B has no later session either
            (99, "2"),  # not in the drive
            (5, "toi muon hoi"),  # not an answer: the hotline's
            (7, "không"),  # withdraws from the wait
        ],
    )
    report = await appointments.apply_replies("replies", OPERATOR)
    assert report.read == 8
    assert report.outcomes == Counter(
        {"confirmed": 2, "released": 1, "no_other": 2, "withdrawn": 1}
    )
    assert report.notified == [e164(6)], "placed from the wait: to be told"
    rows = read_schedule(Path(report.changes_file))
    assert list(rows) == [e164(6)]
    assert (rows[e164(6)]["site_id"], rows[e164(6)]["date"]) == ("A", str(DAY))
    again = await appointments.apply_replies("replies", OPERATOR)
    assert (again.read, again.outcomes) == (0, Counter()), "each reply applies once"

    schedule = tmp_path / "now.csv"
    await appointments.write_schedule("replies", schedule)
    now = read_schedule(schedule)
    assert now[e164(1)]["confirmed"] == "yes"
    assert (now[e164(2)]["status"], now[e164(2)]["reason"]) == ("cancelled", "cancelled")
    assert (now[e164(7)]["status"], now[e164(5)]["status"]) == ("cancelled", "waiting")

    # a freed place with a later session at the site: DOI moves there, the place goes on
    more = write_csv(
        tmp_path / "more.csv", SITES_HEADER, site_rows([*sessions, ("A", "79", 2, "08:00", 1)])
    )
    await appointments.allocate("replies", more, people, first=DAY)  # 5 takes A day 2
    await appointments.change("replies", "release", number(5), OPERATOR)
    await inbound(settings, redis_client, [(3, "doi lich")])
    moved = await appointments.apply_replies("replies", OPERATOR)
    assert moved.outcomes == Counter({"moved": 1})
    assert moved.notified == [e164(3)]
    history = await appointments.history("replies")
    events = [(h["e"], h["p"]) for h in history if h["e"] in ("moved", "reallocated", "released")]
    assert events == [
        ("released", e164(2)),
        ("reallocated", e164(6)),
        ("released", e164(5)),
        ("moved", e164(3)),
    ]
    assert history[-1]["f"] == f"A|{DAY + timedelta(1)}|08:00"
    held = await check_ledger(Ledger(redis_client, settings.namespace, "replies"))
    assert held[e164(3)] == f"A|{DAY + timedelta(2)}|08:00"


PLAN = (
    'name = "Lịch tiêm"\nlane = "high"\nchannels = ["sms"]\nsms_ascii = true\n[templates]\n'
    'sms = "Bo Y te: {{ name }} tiem ngay {{ appointment.date }} luc {{ appointment.start }} '
    'tai {{ appointment.site_name }}. Tra loi 1 xac nhan, 2 huy, DOI doi lich."\n'
    '[audience]\nwhere = { status = "placed" }\n'
)


async def test_the_schedule_is_a_campaign_audience(settings, redis_client, tmp_path):
    sessions = [("A", "79", 0, "08:00", 3), ("B", "01", 2, "13:30", 2)]
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows(sessions))
    people = write_csv(
        tmp_path / "p.csv",
        PEOPLE_HEADER,
        [person(n, 1, n, site="A") for n in range(5)]
        + [person(n, 1, n, province="01") for n in range(5, 7)],
    )
    schedule = tmp_path / "schedule.csv"
    await Appointments(settings, redis_client).allocate(
        "notice", sites, people, first=DAY, output=schedule
    )
    plan = tmp_path / "notice.toml"
    plan.write_text(PLAN, encoding="utf-8")
    reminder = tmp_path / "reminder.toml"
    reminder.write_text(
        PLAN.replace(
            "[audience]", '[schedule]\nsend_at = "appointment.date - 1d at 08:00"\n[audience]'
        ),
        encoding="utf-8",
    )
    campaigns = Campaigns(settings, redis_client)
    dry = await campaigns.validate(plan, schedule)
    assert (dry.queued, dry.filtered, dry.invalid, dry.problems) == (5, 2, 0, [])

    campaign = await campaigns.create(plan, schedule, OPERATOR)
    await campaigns.approve(campaign.id, APPROVER)
    await campaigns.launch(campaign.id)
    async with running(settings, redis_client):
        await until(lambda: _sent(campaigns, campaign.id, 5), 30, "five appointments sent")
    bodies = {line["to"]: line["body"] for line in read_sink(tmp_path / "sink")}
    assert bodies[e164(0)] == (
        f"Bo Y te: Nguoi 0 tiem ngay {DAY} luc 08:00 tai Tram Y te A. "
        "Tra loi 1 xac nhan, 2 huy, DOI doi lich."
    )
    assert bodies[e164(5)].startswith(f"Bo Y te: Nguoi 5 tiem ngay {DAY + timedelta(2)} luc 13:30")
    assert len(bodies) == 5, "the waiting are not messaged"

    later = await campaigns.create(reminder, schedule, OPERATOR)
    await campaigns.approve(later.id, APPROVER)
    await campaigns.launch(later.id)
    due: list[float] = []
    for keys in shard_keys(settings.namespace, "sms", settings.route("sms").shards):
        for delayed in keys.delayed_sets():
            for _, score in await redis_client.zrange(delayed, 0, -1, withscores=True):
                due.append(score)
    eve = datetime(DAY.year, DAY.month, DAY.day, 1, 0, tzinfo=UTC) - timedelta(days=1)
    expected = {eve.timestamp() * 1000, (eve + timedelta(days=2)).timestamp() * 1000}
    assert set(due) == expected, "the day before each appointment, 08:00 in Viet Nam"


async def _sent(campaigns: Campaigns, campaign_id: str, count: int) -> bool:
    return int((await campaigns.status(campaign_id))["sent"]) >= count


async def test_replies_send_the_new_appointments_through_a_campaign(
    settings, redis_client, tmp_path
):
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 2)]))
    people = write_csv(
        tmp_path / "p.csv", PEOPLE_HEADER, [person(n, 1, n, site="A") for n in range(4)]
    )
    appointments = Appointments(settings, redis_client)
    await appointments.allocate("send", sites, people, first=DAY)
    await inbound(settings, redis_client, [(0, "2"), (1, "HUY LICH")])
    plan = tmp_path / "notice.toml"
    plan.write_text(PLAN, encoding="utf-8")
    report = await appointments.apply_replies("send", OPERATOR, plan=plan)
    assert report.notified == [e164(2), e164(3)]
    assert report.campaign_state == "running"
    async with running(settings, redis_client):
        await until(
            lambda: _sent(Campaigns(settings, redis_client), report.campaign, 2),
            30,
            "the two new appointments",
        )
    assert {line["to"] for line in read_sink(tmp_path / "sink")} == {e164(2), e164(3)}
    audit = [e.action for e in await AuditLog(redis_client, settings.namespace).read()]
    assert audit[:3] == ["campaign.launch", "campaign.approve", "campaign.create"]


async def test_operator_changes_and_unknown_drives(settings, redis_client, tmp_path):
    appointments = Appointments(settings, redis_client)
    with pytest.raises(AppointmentError, match="no appointments drive 'nowhere'"):
        await appointments.summary("nowhere")
    with pytest.raises(AppointmentError, match="not a drive name"):
        await appointments.summary("Bad Name!")
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 1)]))
    people = write_csv(tmp_path / "p.csv", PEOPLE_HEADER, [person(1, 1, 0, site="A")])
    await appointments.allocate("ops", sites, people, first=DAY)
    with pytest.raises(AppointmentError, match="not a phone number: letters"):
        await appointments.change("ops", "confirm", "abc", OPERATOR)
    assert (await appointments.change("ops", "confirm", number(2), OPERATOR)).outcome == "unknown"
    assert (await appointments.change("ops", "confirm", number(1), OPERATOR)).outcome == "confirmed"
    assert (await appointments.change("ops", "release", number(1), OPERATOR)).outcome == "released"
    assert (await appointments.change("ops", "confirm", number(1), OPERATOR)).outcome == "cancelled"
    last = (await appointments.history("ops"))[-1]
    assert (last["e"], last["by"]) == ("released", OPERATOR.person)
    assert await appointments.drives() == ["ops"]


def test_allocation_properties(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """For random sites, sessions and registrants: no session over capacity; nobody of a lower
    rank holds a session that an earlier-ranked person who wanted the same place waits for or
    holds a later one than; a rerun changes nobody; releases and allocations at once keep the
    ledger exact."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    site_ids = ["A", "B", "C", "D"]
    provinces = {"A": "79", "B": "79", "C": "01", "D": "48"}
    session_st = st.tuples(
        st.sampled_from(site_ids), st.integers(0, 4), st.integers(7, 16), st.integers(0, 3)
    )
    person_st = st.tuples(
        st.integers(1, 3),
        st.integers(0, 5000),
        st.one_of(
            st.sampled_from([*site_ids, "Z"]).map(lambda s: ("s", s)),
            st.sampled_from(["79", "01", "48", "96"]).map(lambda p: ("p", p)),
        ),
    )

    @hsettings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        sessions=st.lists(session_st, max_size=14, unique_by=lambda s: (s[0], s[1], s[2])),
        people=st.lists(person_st, min_size=1, max_size=40),
        more=st.lists(person_st, max_size=10),
        releases=st.lists(st.integers(0, 39), max_size=6),
    )
    def check(sessions: list[Any], people: list[Any], more: list[Any], releases: list[int]) -> None:
        folder = tmp_path_factory.mktemp("prop")
        asyncio.run(_property(redis_url, folder, provinces, sessions, people, more, releases))

    check()


async def _property(
    redis_url: str,
    folder: Path,
    provinces: dict[str, str],
    sessions: list[Any],
    people: list[Any],
    more: list[Any],
    releases: list[int],
) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings.from_mapping(
        {"redis_url": redis_url, "namespace": namespace, "data_dir": str(folder / "data")}
    )
    rows = [
        [
            site,
            site,
            provinces[site],
            "",
            DAY + timedelta(days=day),
            f"{hour:02d}:00",
            f"{hour + 1:02d}:00",
            capacity,
        ]
        for site, day, hour, capacity in sessions
    ] or [["A", "A", "79", "", "", "", "", ""]]
    sites = write_csv(folder / "sites.csv", SITES_HEADER, rows)

    def registrants(items: list[Any], offset: int) -> list[list[Any]]:
        out = []
        for n, (group, minute, (kind, where)) in enumerate(items, offset):
            out.append(
                person(
                    n,
                    group,
                    minute,
                    site=where if kind == "s" else "",
                    province=where if kind == "p" else "",
                )
            )
        return out

    first_file = write_csv(folder / "p1.csv", PEOPLE_HEADER, registrants(people, 0))
    client = connect(redis_url)
    other = connect(redis_url)
    try:
        appointments = Appointments(settings, client)
        await appointments.allocate("prop", sites, first_file, first=DAY, output=folder / "1.csv")
        ledger = Ledger(client, settings.namespace, "prop")
        await check_ledger(ledger)
        everyone = [
            p
            for p in await ledger.people([e.partition("|")[2] for e in await ledger.orders()])
            if p is not None
        ]
        info = {s.id: s for s in await ledger.sessions()}
        start = {
            sid: minutes(date.fromisoformat(s.day), time.fromisoformat(s.start))
            for sid, s in info.items()
        }

        def wants(who: Any, session_id: str) -> bool:
            session = info[session_id]
            where = session.site if who.kind == "s" else session.province
            return bool(where == who.preference)

        for low in everyone:
            for high in everyone:
                if low.holds and high.order < low.order and wants(high, low.session):
                    # low's session had room when high, placed before, took the earliest
                    assert high.holds, ("waits for what a later one holds", high, low)
                    assert start[high.session] <= start[low.session], (high, low)

        # a rerun changes nobody
        before = read_schedule(folder / "1.csv")
        await appointments.allocate("prop", sites, first_file, first=DAY, output=folder / "2.csv")
        after = read_schedule(folder / "2.csv")
        for phone, row in before.items():
            if row["status"] == "placed":
                assert (after[phone]["site_id"], after[phone]["date"], after[phone]["start"]) == (
                    row["site_id"],
                    row["date"],
                    row["start"],
                )

        # releases while more people are allocated: the ledger stays exact
        second_file = write_csv(folder / "p2.csv", PEOPLE_HEADER, registrants(more, 100))
        others = Appointments(settings, other)
        await asyncio.gather(
            appointments.allocate("prop", sites, second_file, first=DAY),
            *(
                others.change("prop", "release", number(n), OPERATOR)
                for n in releases
                if n < len(people)
            ),
        )
        await check_ledger(ledger)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await other.aclose()


async def test_the_api_allocates_counts_exports_and_changes(settings, redis_url, tmp_path):
    import httpx

    from loa.access.identity import Role
    from loa.api import create_app

    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        ctx = app.state.loa
        token, _ = await ctx.services.tokens.create("op", Role.OPERATOR, APPROVER)
        auth = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            sites = write_csv(
                tmp_path / "s.csv",
                SITES_HEADER[:4],
                [["A", "Trạm A", "79", "1 Lê Lợi"], ["B", "Trạm B", "99", "x"]],
            )
            sessions = write_csv(
                tmp_path / "n.csv",
                ["site_id", "date", "start", "end", "capacity"],
                [["A", str(DAY), "08:00", "11:00", 1], ["Q", str(DAY), "08:00", "11:00", 1]],
            )
            people = write_csv(
                tmp_path / "p.csv",
                PEOPLE_HEADER,
                [person(1, 1, 0, site="A"), person(2, 1, 1, site="A"), ["x", 1, "", "A", "", ""]],
            )
            files = {
                "sites": ("sites.csv", sites.read_bytes(), "text/csv"),
                "sessions": ("sessions.csv", sessions.read_bytes(), "text/csv"),
                "people": ("people.csv", people.read_bytes(), "text/csv"),
            }
            url = f"/api/v1/appointments/web/allocate?from={DAY}"
            made = await client.post(url, files=files, headers=auth)
            assert made.status_code == 200, made.text
            body = made.json()
            assert (body["people"]["placed"], body["people"]["waiting"]) == (1, 1)
            assert {(r["file"], r["line"]) for r in body["refused"]} == {
                ("sites", 3),
                ("sessions", 3),
                ("people", 4),
            }, "parts by name: no path of the server"
            summary = (await client.get("/api/v1/appointments/web", headers=auth)).json()
            assert summary["by_site"] == {"A": {"capacity": 1, "booked": 1, "free": 0}}
            schedule = await client.get("/api/v1/appointments/web/schedule", headers=auth)
            assert schedule.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(schedule.text.splitlines()))
            assert [(r["phone"], r["status"]) for r in rows] == [
                (e164(1), "placed"),
                (e164(2), "waiting"),
            ]
            change = await client.post(
                "/api/v1/appointments/web/changes",
                json={"phone": number(1), "action": "release"},
                headers=auth,
            )
            assert change.json() == {
                "outcome": "released",
                "before": f"A|{DAY}|08:00",
                "after": "",
                "reallocated": True,
            }
            bad = await client.post(
                "/api/v1/appointments/web/changes",
                json={"phone": "not a number", "action": "move"},
                headers=auth,
            )
            assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_address")
            await inbound(settings, ctx.services.redis, [(2, "1")])
            replied = await client.post(
                "/api/v1/appointments/web/replies", json={"plan": PLAN}, headers=auth
            )
            assert replied.json()["outcomes"] == {"confirmed": 1}
            history = (await client.get("/api/v1/appointments/web/history", headers=auth)).json()
            assert [(h["event"], h["phone"]) for h in history][-3:] == [
                ("released", e164(1)),
                ("reallocated", e164(2)),
                ("confirmed", e164(2)),
            ]
            missing = await client.get("/api/v1/appointments/nowhere", headers=auth)
            assert (missing.status_code, missing.json()["error"]["code"]) == (
                404,
                "drive_not_found",
            )
            log = await AuditLog(ctx.services.redis, settings.namespace).read(limit=20)
            actions = [e.action for e in log]
            for action in ("appointments.allocate", "appointments.release", "appointments.replies"):
                assert action in actions
            assert not any("0912" in e.detail or "+8491" in e.detail for e in log)


def loa(*args: str | Path) -> Any:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    return subprocess.run(
        [sys.executable, "-m", "loa.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line(redis_url: str, namespace: str, tmp_path: Path) -> None:
    import orjson

    config = tmp_path / "loa.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\ndata_dir = "{tmp_path}/data"\n',
        encoding="utf-8",
    )
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 1)]))
    people = write_csv(
        tmp_path / "p.csv",
        PEOPLE_HEADER,
        [person(1, 1, 0, site="A"), person(2, 1, 1, site="A"), ["abc", 1, "", "A", "", ""]],
    )
    out = tmp_path / "schedule.csv"
    run = loa("appointments", "allocate", "-s", sites, "-p", people, "-d", "cli", "--from",
              str(DAY), "-o", out, "--json", "-c", config)  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = orjson.loads(run.stdout)
    assert (report["people"]["placed"], report["people"]["waiting"], report["refused_count"]) == (
        1,
        1,
        1,
    )
    assert report["by_session"] == [
        {"site_id": "A", "date": str(DAY), "start": "08:00", "end": "11:00", "capacity": 1,
         "booked": 1, "free": 0}
    ]  # fmt: skip
    assert report["by_group"]["1"] == {"placed": 1, "confirmed": 0, "waiting": 1, "cancelled": 0}
    assert [row["status"] for row in read_schedule(out).values()] == ["placed", "waiting"]
    human = loa("appointments", "allocate", "-s", sites, "-p", people, "-d", "cli", "--from",
                str(DAY), "-c", config)  # fmt: skip
    assert "0 placed now, 1 kept their place, 1 waiting" in " ".join(human.stdout.split())
    assert f"{people}:4: phone: letters in number" in " ".join(human.stdout.split())

    moved = loa("appointments", "release", number(1), "-d", "cli", "-c", config)
    assert moved.stdout.startswith("released"), moved.stderr
    assert "went to the next waiting" in moved.stdout
    status = orjson.loads(loa("appointments", "status", "-d", "cli", "--json", "-c", config).stdout)
    assert status["by_group"]["1"] == {"placed": 1, "confirmed": 0, "waiting": 0, "cancelled": 1}
    history = orjson.loads(
        loa("appointments", "history", "-d", "cli", "--json", "-c", config).stdout
    )
    assert [(h["e"], h["p"]) for h in history][-2:] == [
        ("released", e164(1)),
        ("reallocated", e164(2)),
    ]
    bad = loa("appointments", "allocate", "-s", sites, "-p", sites, "-d", "cli", "-c", config)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0, "one line"
    assert "no 'phone', 'priority_group', 'registered_at' columns" in bad.stderr
    unknown = loa("appointments", "status", "-d", "nope", "-c", config)
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "loa: no appointments drive 'nope'")
    audit = orjson.loads(loa("audit", "--json", "-c", config).stdout)
    actions = [entry["action"] for entry in audit]
    assert actions[:2] == ["appointments.allocate", "appointments.release"]
    assert audit[0]["outcome"] == "invalid_audience"
    assert all(number(1) not in entry["detail"] for entry in audit)


try:
    from test_cluster import SERVER_BINARY, Cluster
    from test_cluster import cluster as cluster  # the three-node cluster, started per module
except ImportError:  # pragma: no cover - the cluster tests' module is always there
    SERVER_BINARY = None


@pytest.mark.skipif(SERVER_BINARY is None, reason="no server binary to start a cluster with")
async def test_drives_on_redis_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """Every key of a drive in one slot: allocation, replies and export run on a cluster, and
    two drives land on different nodes."""
    from redis.asyncio import RedisCluster

    from loa.appointments.ledger import drive_prefix

    namespace = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings.from_mapping(
        {"redis_url": cluster.url, "namespace": namespace, "data_dir": str(tmp_path / "data")}
    )
    client = connect(cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        node: dict[int, str] = {}  # a drive per node, the first two found
        for drive in (f"drive-{n}" for n in range(50)):
            port = cluster.port_of_slot(client.keyslot(drive_prefix(namespace, drive)))
            node.setdefault(port, drive)
        drives = sorted(node.values())[:2]
        appointments = Appointments(settings, client)
        sessions = [("A", "79", 0, "08:00", 2), ("A", "79", 1, "08:00", 2)]
        sites = write_csv(  # places for all 8, and a later one to move to
            tmp_path / "s.csv", SITES_HEADER, site_rows([*sessions, ("A", "79", 2, "08:00", 5)])
        )
        people = write_csv(
            tmp_path / "p.csv", PEOPLE_HEADER, [person(n, 1 + n % 2, n, site="A") for n in range(8)]
        )
        for drive in drives:
            report = await appointments.allocate(
                drive, sites, people, first=DAY, output=tmp_path / f"{drive}.csv"
            )
            assert (report.people["placed"], report.people["waiting"]) == (8, 0)
        await inbound(settings, client, [(0, "2"), (2, "doi")])
        for drive in drives:
            replies = await appointments.apply_replies(drive, OPERATOR)
            assert replies.outcomes == Counter({"released": 1, "moved": 1}), drive
            held = await check_ledger(Ledger(client, namespace, drive))
            assert len(held) == 7
            assert held[e164(2)] == f"A|{DAY + timedelta(2)}|08:00"
        assert sorted(await appointments.drives()) == drives
    finally:
        await client.aclose()


try:
    from test_dashboard_browser import api_thread, make_tokens, sync_api, watch
    from test_dashboard_browser import chromium as chromium  # Chromium, installed if missing
except pytest.skip.Exception:  # pragma: no cover - without playwright the browser test skips
    sync_api = None


@pytest.mark.skipif(sync_api is None, reason="playwright is not installed")
def test_the_dashboard_shows_each_drive(chromium, make_settings, redis_url, namespace, tmp_path):
    from loa.engine.embedded import free_port

    settings = make_settings()
    sites = write_csv(
        tmp_path / "s.csv",
        SITES_HEADER,
        site_rows([("A", "79", 0, "08:00", 2), ("<b>B</b>", "79", 0, "09:00", 3)]),
    )
    people = write_csv(
        tmp_path / "p.csv", PEOPLE_HEADER, [person(n, 1 + n % 2, n, site="A") for n in range(5)]
    )

    async def allocate() -> None:
        client = connect(redis_url)
        try:
            await Appointments(settings, client).allocate("dash", sites, people, first=DAY)
        finally:
            await client.aclose()

    asyncio.run(allocate())
    tokens = make_tokens(redis_url, namespace)
    port = free_port()
    server = api_thread(settings, port)
    server.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
            try:
                problems: list[str] = []
                page = watch(browser.new_context(locale="en-US").new_page(), problems)
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
                page.fill("#token", tokens["viewer"])
                page.click("#login-submit")
                groups = page.locator("#appointment-groups tbody tr")
                sync_api.expect(groups).to_have_count(2, timeout=8000)
                assert groups.nth(0).inner_text().split() == ["dash", "1", "2", "0", "1", "0"]
                assert groups.nth(1).inner_text().split() == ["dash", "2", "0", "0", "2", "0"]
                sites_shown = page.locator("#appointment-sites tbody tr")
                assert sites_shown.nth(0).inner_text().split() == ["dash", "A", "2", "2", "0"]
                assert sites_shown.nth(1).inner_text().split() == [
                    "dash",
                    "<b>B</b>",
                    "3",
                    "0",
                    "3",
                ]
                assert problems == []
            finally:
                browser.close()
    finally:
        server.stop()


def test_the_embedded_default(tmp_path: Path) -> None:
    """No Redis configured: loa starts its own server, and the ledger lives there."""
    import orjson

    config = tmp_path / "loa.toml"
    config.write_text(f'data_dir = "{tmp_path}/data"\n', encoding="utf-8")
    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 1)]))
    people = write_csv(
        tmp_path / "p.csv", PEOPLE_HEADER, [person(1, 1, 0, site="A"), person(2, 1, 1, site="A")]
    )
    args = ["-s", sites, "-p", people, "--from", str(DAY), "--json", "-c", config]
    first = loa("appointments", "allocate", *args)
    assert first.returncode == 0, first.stderr
    assert orjson.loads(first.stdout)["people"] == {
        "placed": 1, "kept": 0, "waiting": 1, "cancelled": 0
    }  # fmt: skip
    again = orjson.loads(loa("appointments", "allocate", *args).stdout)
    assert (again["run"], again["people"]["kept"]) == (2, 1), "the server kept the ledger"
    assert (tmp_path / "data" / "redis").is_dir()


def test_a_bare_huy_is_an_opt_out_never_an_appointment_answer() -> None:
    from loa.appointments.replies import reply_action
    from loa.engine.events import is_optout
    from loa.settings import EventSettings

    keywords = EventSettings().optout_keywords
    for word in ("1", "CO", "2", "KHONG", "HUY LICH", "DOI"):
        assert reply_action(word) is not None and not is_optout(word, keywords), word
    assert reply_action("HUY") is None and is_optout("HUY", keywords)


CHECKIN = (
    'name = "Theo doi"\nlane = "normal"\nchannels = ["sms"]\n[templates]\n'
    'sms = "Ban thay the nao? 1 binh thuong, 2 dau nhe"\n[followup]\nid = "d1"\n'
    'window = "72h"\noptions = [{ code = "1", label = "Binh thuong" }, '
    '{ code = "2", label = "Dau nhe" }]\n'
)


async def test_an_answer_to_a_later_question_is_not_an_appointment_reply(
    settings, redis_client, tmp_path
):
    """A check-in's "2" (sore arm) after the appointment's "1" answers the check-in: the person
    keeps their place, and the follow-up counts the answer."""
    from loa.access.identity import local_principal
    from loa.engine.control import Controls
    from loa.followups.service import Followups
    from loa.message import Message

    sites = write_csv(tmp_path / "s.csv", SITES_HEADER, site_rows([("A", "79", 0, "08:00", 2)]))
    people = write_csv(
        tmp_path / "p.csv", PEOPLE_HEADER, [person(1, 1, 0, site="A"), person(2, 1, 1, site="A")]
    )
    appointments = Appointments(settings, redis_client)
    await appointments.allocate("checkin", sites, people, first=DAY)
    plan = tmp_path / "checkin.toml"
    plan.write_text(CHECKIN, encoding="utf-8")
    audience = write_csv(tmp_path / "a.csv", ["phone"], [[number(1)]])
    checkin = await Campaigns(settings, redis_client).create(plan, audience, local_principal())
    asked = Message("m1", e164(1), "x")
    await Controls(redis_client, settings.namespace).reached(checkin.id, [asked], [0])
    await inbound(settings, redis_client, [(1, "2"), (2, "2")])  # 2 was asked nothing: released
    report = await appointments.apply_replies("checkin", OPERATOR)
    assert report.outcomes == Counter({"released": 1})
    held = await check_ledger(Ledger(redis_client, settings.namespace, "checkin"))
    assert set(held) == {e164(1)}, "the check-in's answer kept the place"
    await Followups(settings, redis_client).sync()
    summary = await Followups(settings, redis_client).summary(checkin.id)
    assert [o["count"] for o in summary["options"]] == [0, 1]
