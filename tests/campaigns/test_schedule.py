"""Durations, quiet hours (across midnight and DST changes) and per-recipient send times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from loa.campaigns.schedule import SendAt, SendAtError, format_duration, parse_duration
from loa.engine.quiet import QuietHours, localize, zone

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = ZoneInfo("Europe/Berlin")


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("48h", timedelta(hours=48)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        (" 2w3d4h5m6s ", timedelta(weeks=2, days=3, hours=4, minutes=5, seconds=6)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is not a duration"),
        ("12", "is not a duration"),
        ("h", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("-3d", "is not a duration"),
        ("5x", "unknown unit 'x'"),
        ("2 days", "unknown unit 'days'"),
        ("48H", "unknown unit 'H'"),
        ("1h1d", "largest first"),
        ("1h2h", "largest first"),
        ("0h", "is zero"),
        ("99999w", "longer than ten years"),
        (48, "in quotes"),
    ],
)
def test_bad_durations(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=1, hours=12)) == "1d12h"
    assert format_duration(timedelta(days=14)) == "2w"
    assert format_duration(timedelta(0)) == "0s"


def test_zone() -> None:
    assert zone("Asia/Ho_Chi_Minh") is HCM
    for bad in ("Mars/Olympus", "", "../etc/passwd", "Asia/"):
        with pytest.raises(ValueError, match="time zone"):
            zone(bad)


# --- quiet hours ---------------------------------------------------------------------------


def test_quiet_hours_parse() -> None:
    quiet = QuietHours.parse("21:00-07:00")
    assert (quiet.start, quiet.end, quiet.tz) == (time(21), time(7), HCM)
    assert quiet.wraps_midnight
    assert str(quiet) == "21:00-07:00"
    lunch = QuietHours.parse(" 9:00 \u2013 13:30 ", "Europe/Berlin")
    assert (lunch.start, lunch.end, lunch.tz, lunch.wraps_midnight) == (
        time(9),
        time(13, 30),
        BERLIN,
        False,
    )
    assert QuietHours.parse("22:00-24:00").end == time(0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("00:00-00:00", "same time"),
        ("07:00-07:00", "same time"),
        ("21:00", "not a window"),
        ("21-7", "not a time of day"),
        ("25:00-07:00", "hours go to 23"),
        ("21:60-07:00", "minutes to 59"),
        ("24:00-07:00", "hours go to 23"),
        ("nights", "not a window"),
        (2100, "in quotes"),
    ],
)
def test_bad_quiet_hours(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        QuietHours.parse(text)


@pytest.mark.parametrize(
    ("clock", "quiet"),
    [
        (time(20, 59, 59), False),
        (time(21, 0), True),
        (time(23, 59), True),
        (time(0, 0), True),
        (time(6, 59, 59), True),
        (time(7, 0), False),
        (time(12, 0), False),
    ],
)
def test_quiet_hours_wrap_midnight(clock: time, quiet: bool) -> None:
    hours = QuietHours.parse("21:00-07:00")
    moment = datetime.combine(datetime(2026, 12, 1), clock, tzinfo=HCM)
    assert hours.contains(moment) is quiet
    # the same instant written in another zone is read on the plan's clock
    assert hours.contains(moment.astimezone(UTC)) is quiet


def test_quiet_hours_without_wrap() -> None:
    lunch = QuietHours.parse("12:00-13:30")
    assert not lunch.contains(datetime(2026, 5, 1, 11, 59, tzinfo=HCM))
    assert lunch.contains(datetime(2026, 5, 1, 12, 0, tzinfo=HCM))
    assert lunch.contains(datetime(2026, 5, 1, 13, 29, tzinfo=HCM))
    assert not lunch.contains(datetime(2026, 5, 1, 13, 30, tzinfo=HCM))
    at = datetime(2026, 5, 1, 12, 15, tzinfo=HCM)
    assert lunch.next_end(at) == datetime(2026, 5, 1, 13, 30, tzinfo=HCM)


def test_next_end() -> None:
    quiet = QuietHours.parse("21:00-07:00")
    evening = datetime(2026, 12, 1, 22, 15, tzinfo=HCM)
    assert quiet.next_end(evening) == datetime(2026, 12, 2, 7, 0, tzinfo=HCM)
    small_hours = datetime(2026, 12, 2, 3, 0, tzinfo=HCM)
    assert quiet.next_end(small_hours) == datetime(2026, 12, 2, 7, 0, tzinfo=HCM)
    # given in UTC (15:15 UTC is 22:15 in Vietnam), answered in the plan's zone
    resumed = quiet.next_end(evening.astimezone(UTC))
    assert resumed == datetime(2026, 12, 2, 7, 0, tzinfo=HCM)
    assert resumed.tzinfo is UTC  # instants in UTC: exact arithmetic whatever the zone
    # outside quiet hours sending may go on at once
    noon = datetime(2026, 12, 2, 12, 0, tzinfo=HCM)
    assert quiet.next_end(noon) == noon
    assert quiet.next_end(noon).tzinfo is UTC


def test_naive_moments_are_refused() -> None:
    quiet = QuietHours.parse("21:00-07:00")
    with pytest.raises(ValueError, match="no time zone"):
        quiet.contains(datetime(2026, 12, 1, 22, 0))
    with pytest.raises(ValueError, match="no time zone"):
        quiet.next_end(datetime(2026, 12, 1, 22, 0))


def test_quiet_hours_over_a_dst_change() -> None:
    quiet = QuietHours.parse("22:00-06:00", "Europe/Berlin")
    # clocks go forward on 29 March 2026: the night is an hour shorter
    spring = datetime(2026, 3, 28, 23, 0, tzinfo=BERLIN)
    resume = quiet.next_end(spring)
    assert resume == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)  # 06:00 CEST
    assert resume.astimezone(BERLIN).utcoffset() == timedelta(hours=2)
    assert resume - spring == timedelta(hours=6)
    # clocks go back on 25 October 2026: an hour longer
    autumn = datetime(2026, 10, 24, 23, 0, tzinfo=BERLIN)
    resume = quiet.next_end(autumn)
    assert resume == datetime(2026, 10, 25, 5, 0, tzinfo=UTC)  # 06:00 CET
    assert resume - autumn == timedelta(hours=8)
    # quiet hours are wall-clock hours, summer and winter alike
    assert quiet.contains(datetime(2026, 7, 1, 20, 30, tzinfo=UTC))  # 22:30 CEST
    assert not quiet.contains(datetime(2026, 1, 1, 20, 30, tzinfo=UTC))  # 21:30 CET


def test_quiet_hours_ending_in_a_skipped_hour() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026 (02:00 CET jumps to 03:00 CEST)
    quiet = QuietHours.parse("01:00-02:30", "Europe/Berlin")
    inside = datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN)
    assert quiet.contains(inside)
    resume = quiet.next_end(inside)
    assert resume == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # the change itself: 03:00 CEST
    assert not quiet.contains(resume)
    assert quiet.contains(resume - timedelta(seconds=1))


def test_quiet_hours_ending_in_a_repeated_hour() -> None:
    # 02:00-03:00 happens twice in Berlin on 25 October 2026
    quiet = QuietHours.parse("01:00-02:30", "Europe/Berlin")
    first = datetime(2026, 10, 25, 2, 10, tzinfo=BERLIN)  # CEST, 00:10 UTC
    assert quiet.next_end(first) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = datetime(2026, 10, 25, 2, 10, tzinfo=BERLIN, fold=1)  # CET, 01:10 UTC
    assert quiet.contains(second)
    assert quiet.next_end(second) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_localize() -> None:
    assert localize(datetime(2026, 6, 1, 8, 0), HCM) == datetime(2026, 6, 1, 1, 0, tzinfo=UTC)
    # a skipped wall time becomes the end of the gap
    gap = localize(datetime(2026, 3, 29, 2, 30), BERLIN)
    assert gap == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    # a repeated one is its first occurrence
    twice = localize(datetime(2026, 10, 25, 2, 30), BERLIN)
    assert twice == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


# --- send_at -------------------------------------------------------------------------------


def test_send_at_parse() -> None:
    full = SendAt.parse("due_date - 3d at 08:00")
    assert (full.column, full.offset, full.clock) == ("due_date", -timedelta(days=3), time(8))
    assert str(full) == "due_date - 3d at 08:00"
    later = SendAt.parse("appointment+2h")
    assert (later.column, later.offset, later.clock) == ("appointment", timedelta(hours=2), None)
    bare = SendAt.parse("due_date")
    assert (bare.column, bare.offset, bare.clock) == ("due_date", timedelta(0), None)
    clock = SendAt.parse("  due_date   AT 8:30 ")
    assert (clock.column, clock.offset, clock.clock) == ("due_date", timedelta(0), time(8, 30))
    assert SendAt.parse("ngày_hẹn - 1d12h").offset == -timedelta(days=1, hours=12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a send time"),
        ("- 3d", "not a send time"),
        ("due date", "not a send time"),
        ("due_date * 3", "not a send time"),
        ("3d - due_date", "not a send time"),
        ("due_date -", "a duration must follow '-'"),
        ("due_date - 3x", "unknown unit 'x'"),
        ("due_date - 0d", "is zero"),
        ("due_date at 25:00", "hours go to 23"),
        ("due_date at noon", "not a time of day"),
        ("due_date at", "not a send time"),
        (42, "expected an expression"),
    ],
)
def test_bad_send_at(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        SendAt.parse(text)


@pytest.mark.parametrize(
    "value", ["2026-12-24", "24/12/2026", "24-12-2026", "24.12.2026", " 24/12/2026 "]
)
def test_send_at_dates(value: str) -> None:
    send_at = SendAt.parse("due_date - 3d at 08:00")
    when = send_at.resolve({"due_date": value, "name": "Hoa"}, HCM)
    assert when == datetime(2026, 12, 21, 8, 0, tzinfo=HCM)
    assert when == datetime(2026, 12, 21, 1, 0, tzinfo=UTC)
    assert when.tzinfo is UTC


def test_send_at_day_first() -> None:
    # 5/1/2027 is the 5th of January, as Vietnamese spreadsheets write it
    when = SendAt.parse("due_date - 3d at 08:00").resolve({"due_date": "5/1/2027"}, HCM)
    assert when == datetime(2027, 1, 2, 8, 0, tzinfo=HCM)


def test_send_at_bare_date_is_the_start_of_that_day() -> None:
    when = SendAt.parse("due_date").resolve({"due_date": "2026-12-24"}, HCM)
    assert when == datetime(2026, 12, 24, 0, 0, tzinfo=HCM)
    when = SendAt.parse("due_date + 1w").resolve({"due_date": "24/12/2026"}, HCM)
    assert when == datetime(2026, 12, 31, 0, 0, tzinfo=HCM)


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-24T14:30",
        "2026-12-24 14:30:00",
        "24/12/2026 14:30",
        "2026-12-24T07:30:00Z",  # aware: read on the plan's clock (14:30 in Vietnam)
        "2026-12-24T16:30:00+09:00",
    ],
)
def test_send_at_datetimes(value: str) -> None:
    fields = {"appointment": value}
    assert SendAt.parse("appointment - 2h").resolve(fields, HCM) == datetime(
        2026, 12, 24, 12, 30, tzinfo=HCM
    )
    assert SendAt.parse("appointment").resolve(fields, HCM) == datetime(
        2026, 12, 24, 14, 30, tzinfo=HCM
    )
    assert SendAt.parse("appointment - 1d at 19:00").resolve(fields, HCM) == datetime(
        2026, 12, 23, 19, 0, tzinfo=HCM
    )


def test_send_at_is_on_the_wall_clock_across_dst() -> None:
    # three calendar days before, at the same time of day, although the clocks changed between
    when = SendAt.parse("due_date - 3d").resolve({"due_date": "2026-03-31T08:00"}, BERLIN)
    assert when == datetime(2026, 3, 28, 7, 0, tzinfo=UTC)  # 08:00 CET
    # a time that is skipped on the day becomes the end of the gap
    gap = SendAt.parse("due_date - 1d at 02:30").resolve({"due_date": "30/03/2026"}, BERLIN)
    assert gap == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"due_date": "31/02/2026"}, "due_date '31/02/2026' is not a date"),
        ({"due_date": "2026-02-31"}, "due_date '2026-02-31' is not a date"),
        ({"due_date": "24/12/26"}, "due_date '24/12/26' is not a date"),
        ({"due_date": "12/24/2026"}, "due_date '12/24/2026' is not a date"),
        ({"due_date": "hôm qua"}, "due_date 'hôm qua' is not a date"),
        ({"due_date": "  "}, "due_date is empty"),
        ({"name": "Hoa"}, "no 'due_date' column"),
        ({"due_date": "0001-01-02"}, "out of range"),
    ],
)
def test_send_at_bad_rows(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(SendAtError) as caught:
        SendAt.parse("due_date - 3d at 08:00").resolve(fields, HCM)
    assert isinstance(caught.value, ValueError)
    assert reason in str(caught.value)


def test_send_at_reads_a_dotted_column() -> None:
    send_at = SendAt.parse("appointment.date - 1d at 08:00")
    assert (send_at.column, send_at.offset, send_at.clock) == (
        "appointment.date",
        -timedelta(days=1),
        time(8),
    )
    when = send_at.resolve({"appointment.date": "2026-12-10"}, HCM)
    assert when == datetime(2026, 12, 9, 1, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a send time"):
        SendAt.parse("appointment.date.day - 1d")
