"""The plan file: a good plan loads, the examples load, and every wrong plan names its key."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from helpers import REPO
from loa.campaigns.plan import Plan, load_plan
from loa.campaigns.schedule import SendAt
from loa.campaigns.templates import CompiledTemplates
from loa.engine.quiet import QuietHours
from loa.errors import ConfigError, PlanError
from loa.message import Lane

EXAMPLES = REPO / "examples"
HCM = ZoneInfo("Asia/Ho_Chi_Minh")

GOOD = """\
name = "Cảnh báo Zika: TP. Hồ Chí Minh"
lane = "High"
channels = ["zalo", "SMS", "email", "fcm"]
sms_ascii = true

[templates]
sms = "Bo Y te: {{ name }} oi, phong chong Zika."
email = { subject = "Cảnh báo Zika", body = "Kính gửi {{ name }},\\n..." }
zalo = { template_id = 248613, data = { name = "{{ name }}", hotline = "1900 9095" } }
fcm = { title = "Zika", body = "{{ name }} ơi, ..." }

[audience]
regions = ["79", "hn"]
tags = ["Pregnant", "children"]
where = { district = ["760", 769], priority_group = 1 }

[schedule]
start = 2026-07-15T09:00:00+07:00
expires = "1d12h"
timezone = "Asia/Ho_Chi_Minh"
quiet_hours = "21:00-07:00"
send_at = "due_date - 3d at 08:00"

[limits]
rate = 250.5
frequency_cap = "7d"
"""

MINIMAL = """\
name = "Nhắc lịch tiêm"
lane = "normal"
channels = ["sms"]

[templates]
sms = "Chào {{ name }}"

[schedule]
start = 2026-12-01T08:00:00+07:00
"""


def write(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message, "one line per error message"
    return message


def replaced(old: str, new: str, base: str = MINIMAL) -> str:
    assert old in base, old
    return base.replace(old, new)


# --- a good plan -------------------------------------------------------------------------


def test_good_plan_loads(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.name == "Cảnh báo Zika: TP. Hồ Chí Minh"
    assert plan.lane is Lane.HIGH
    assert plan.channels == ["zalo", "sms", "email", "fcm"]
    assert plan.sms_ascii is True

    templates = plan.templates
    assert templates.sms == "Bo Y te: {{ name }} oi, phong chong Zika."
    assert templates.email is not None
    assert templates.email.subject == "Cảnh báo Zika"
    assert templates.email.body == "Kính gửi {{ name }},\n..."
    assert templates.zalo is not None
    assert templates.zalo.template_id == "248613"
    assert templates.zalo.data == {"name": "{{ name }}", "hotline": "1900 9095"}
    assert templates.fcm is not None
    assert (templates.fcm.title, templates.fcm.body) == ("Zika", "{{ name }} ơi, ...")

    audience = plan.audience
    assert audience.regions == frozenset({"79", "HN"})
    assert audience.tags == frozenset({"pregnant", "children"})
    assert audience.where == {"district": {"760", "769"}, "priority_group": {"1"}}
    assert audience.columns == {"region", "tags", "district", "priority_group"}

    schedule = plan.schedule
    assert schedule.start == datetime(2026, 7, 15, 2, 0, tzinfo=UTC)
    assert schedule.expires == timedelta(days=1, hours=12)
    assert schedule.tz is HCM
    assert schedule.quiet_hours == QuietHours(time(21), time(7), HCM)
    assert schedule.send_at == SendAt.parse("due_date - 3d at 08:00")
    assert schedule.send_at is not None
    assert schedule.send_at.column == "due_date"

    assert plan.limits.rate == 250.5
    assert plan.limits.frequency_cap == timedelta(days=7)


def test_defaults(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MINIMAL))
    assert plan.sms_ascii is False
    assert (plan.templates.email, plan.templates.zalo, plan.templates.fcm) == (None, None, None)
    assert plan.audience.regions is None
    assert plan.audience.tags is None
    assert plan.audience.where == {}
    assert plan.audience.columns == frozenset()
    assert plan.schedule.timezone == "Asia/Ho_Chi_Minh"
    assert plan.schedule.expires is None
    assert plan.schedule.quiet_hours is None
    assert plan.schedule.send_at is None
    assert (plan.limits.rate, plan.limits.frequency_cap) == (None, None)
    assert not plan.holds_for_quiet_hours


@pytest.mark.parametrize(
    "start",
    [
        '"2026-12-01T08:00:00+07:00"',
        '"2026-12-01 01:00:00Z"',
        "2026-12-01T01:00:00Z",
        "2026-12-01T08:00:00.000+07:00",
    ],
)
def test_start_forms(tmp_path: Path, start: str) -> None:
    text = replaced("start = 2026-12-01T08:00:00+07:00", f"start = {start}")
    assert load_plan(write(tmp_path, text)).schedule.start == datetime(
        2026, 12, 1, 1, 0, tzinfo=UTC
    )


def test_expires(tmp_path: Path) -> None:
    absolute = replaced("+07:00\n", "+07:00\nexpires = 2026-12-03T08:00:00+07:00\n")
    schedule = load_plan(write(tmp_path, absolute)).schedule
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert schedule.expires_at(later) == datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
    assert schedule.starts_at(later) == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)

    relative = replaced("+07:00\n", '+07:00\nexpires = "48h"\n')
    schedule = load_plan(write(tmp_path, relative)).schedule
    assert schedule.expires_at(later) == datetime(2026, 12, 3, 1, 0, tzinfo=UTC)

    # without a start, the campaign starts when launched and a duration counts from then
    on_launch = replaced("start = 2026-12-01T08:00:00+07:00", 'expires = "6h"')
    schedule = load_plan(write(tmp_path, on_launch)).schedule
    launched = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert schedule.start is None
    assert schedule.starts_at(launched) == launched
    assert schedule.expires_at(launched) == launched + timedelta(hours=6)
    assert load_plan(write(tmp_path, MINIMAL)).schedule.expires_at(launched) is None


def test_lane_and_quiet_hours(tmp_path: Path) -> None:
    quiet = replaced("+07:00\n", '+07:00\nquiet_hours = "21:00-07:00"\n')
    at_night = datetime(2026, 12, 1, 22, 30, tzinfo=HCM)
    morning = datetime(2026, 12, 2, 7, 0, tzinfo=HCM)
    for lane in ("high", "normal", "bulk"):
        plan = load_plan(write(tmp_path, quiet.replace('"normal"', f'"{lane}"')))
        assert plan.lane is Lane.parse(lane)
        assert plan.holds_for_quiet_hours
        assert plan.hold_until(at_night) == morning
        assert plan.hold_until(morning) is None
    emergency = load_plan(write(tmp_path, quiet.replace('"normal"', '"emergency"')))
    assert emergency.lane is Lane.EMERGENCY
    assert not emergency.holds_for_quiet_hours
    assert emergency.hold_until(at_night) is None


def test_audience_matches(tmp_path: Path) -> None:
    audience = load_plan(write(tmp_path, GOOD)).audience
    row = {"region": " 79 ", "tags": "elderly; Pregnant", "district": "769", "priority_group": "1"}
    assert audience.matches(row)
    assert audience.matches({**row, "region": "hn", "tags": "children,elderly"})
    assert not audience.matches({**row, "region": "01"})
    assert not audience.matches({**row, "tags": "elderly"})
    assert not audience.matches({**row, "tags": ""})
    assert not audience.matches({**row, "district": "770"})
    assert not audience.matches({**row, "priority_group": "2"})
    assert not audience.matches({key: value for key, value in row.items() if key != "region"})
    everyone = load_plan(write(tmp_path, MINIMAL)).audience
    assert everyone.matches({})


def test_plan_round_trips(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD))
    assert Plan.model_validate(plan.model_dump(mode="json")) == plan
    assert Plan.model_validate_json(plan.model_dump_json()) == plan
    assert plan.model_dump(mode="json")["lane"] == "high"


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.plan.toml"))


def test_the_examples_are_there() -> None:
    names = {path.name for path in EXAMPLE_FILES}
    assert {
        "covid-advice.plan.toml",
        "zika-hcmc.plan.toml",
        "vaccination-reminder.plan.toml",
        "emergency-flood.plan.toml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.name)
def test_examples_load(path: Path) -> None:
    plan = load_plan(path)
    compiled = CompiledTemplates.compile(plan)
    fields = dict.fromkeys(compiled.fields_used(), "Quận 1")
    fields["due_date"] = "24/12/2026"
    for channel in plan.channels:
        compiled.render(channel, fields)


def test_example_details() -> None:
    covid = load_plan(EXAMPLES / "covid-advice.plan.toml")
    assert (covid.lane, covid.channels, covid.sms_ascii) == (Lane.NORMAL, ["sms"], True)
    assert covid.audience.columns == frozenset()
    zika = load_plan(EXAMPLES / "zika-hcmc.plan.toml")
    assert (zika.lane, zika.channels, zika.audience.regions) == (
        Lane.HIGH,
        ["zalo", "sms"],
        frozenset({"79"}),
    )
    assert zika.holds_for_quiet_hours
    vaccination = load_plan(EXAMPLES / "vaccination-reminder.plan.toml")
    assert vaccination.lane is Lane.BULK
    assert vaccination.schedule.send_at == SendAt.parse("due_date - 3d at 08:00")
    assert vaccination.limits.frequency_cap is not None
    flood = load_plan(EXAMPLES / "emergency-flood.plan.toml")
    assert flood.lane is Lane.EMERGENCY
    assert flood.schedule.expires == timedelta(hours=6)
    assert not flood.holds_for_quiet_hours


# --- wrong plans ---------------------------------------------------------------------------

WRONG = [
    pytest.param(
        replaced('name = "Nhắc lịch tiêm"\n', ""), ["name: Field required"], id="missing-name"
    ),
    pytest.param(
        replaced('"Nhắc lịch tiêm"', f'"{"x" * 201}"'),
        ["name: String should have at most 200 characters"],
        id="long-name",
    ),
    pytest.param(replaced('"Nhắc lịch tiêm"', '"   "'), ["name: is blank"], id="blank-name"),
    pytest.param(replaced('"Nhắc lịch tiêm"', "5"), ["name: Input should be a valid string"]),
    pytest.param(
        replaced('"normal"', '"urgent"'),
        ["lane: unknown lane 'urgent'; expected one of emergency, high, normal, bulk"],
        id="bad-lane",
    ),
    pytest.param(replaced('"normal"', "1"), ["lane: expected one of emergency"], id="lane-number"),
    pytest.param(replaced('lane = "normal"\n', ""), ["lane: Field required"], id="no-lane"),
    pytest.param(
        replaced('["sms"]', '["sms", "telegram"]'),
        ["channels.1: unknown channel; expected one of sms, zalo, fcm, email (got 'telegram')"],
        id="unknown-channel",
    ),
    pytest.param(
        replaced('["sms"]', '["smss"]'), ["channels.0: unknown channel", "did you mean 'sms'?"]
    ),
    pytest.param(replaced('["sms"]', "[]"), ["channels: needs at least one channel"]),
    pytest.param(replaced('["sms"]', '"sms"'), ["channels: expected a list"], id="channels-text"),
    pytest.param(
        replaced('["sms"]', '["sms", "SMS"]'),
        ["channels: 'sms' is listed more than once"],
        id="duplicate-channel",
    ),
    pytest.param(
        replaced('["sms"]', '["sms", "zalo"]'),
        ["templates.zalo: missing; channels lists 'zalo' but it has no template"],
        id="template-missing",
    ),
    pytest.param(
        replaced('sms = "Chào {{ name }}"', 'email = { subject = "a", body = "b" }'),
        ["templates.sms: missing", "templates.email: given but 'email' is not in channels"],
        id="template-for-other-channel",
    ),
    pytest.param(
        replaced('"Chào {{ name }}"', '"Chào\\n{{ name }"'),
        ["templates.sms: template error on line 2: unexpected '}'"],
        id="template-syntax",
    ),
    pytest.param(
        replaced('"Chào {{ name }}"', '"{{ name|shout }}"'),
        ["templates.sms: template error on line 1: No filter named 'shout'"],
        id="template-unknown-filter",
    ),
    pytest.param(replaced('"Chào {{ name }}"', '"  "'), ["templates.sms: is empty"]),
    pytest.param(
        replaced('["sms"]', '["zalo"]').replace(
            'sms = "Chào {{ name }}"', 'zalo = { data = { name = "{{ name" } }'
        ),
        ["templates.zalo.template_id: Field required", "templates.zalo.data.name: template error"],
        id="zalo-template",
    ),
    pytest.param(
        replaced('"Chào {{ name }}"', '"hi"\nemail = { subjet = "a", body = "b" }').replace(
            '["sms"]', '["sms", "email"]'
        ),
        ["templates.email.subjet: unknown key (did you mean 'subject'?)"],
        id="unknown-key-in-optional-table",
    ),
    pytest.param(
        replaced("T08:00:00+07:00", "T08:00:00"),
        ["schedule.start: needs a time zone, e.g. 2026-12-01T08:00:00+07:00 (got '2026-12-01T08"],
        id="naive-start",
    ),
    pytest.param(
        replaced("2026-12-01T08:00:00+07:00", '"2026-12-01 08:00"'),
        ["schedule.start: needs a time zone, e.g. 2026-12-01T08:00:00+07:00"],
        id="naive-start-text",
    ),
    pytest.param(
        replaced("2026-12-01T08:00:00+07:00", "2026-12-01"),
        ["schedule.start: needs a date, a time and a time zone"],
        id="date-start",
    ),
    pytest.param(
        replaced("2026-12-01T08:00:00+07:00", '"next monday"'),
        ["schedule.start: expected a date-time like 2026-12-01T08:00:00+07:00"],
    ),
    pytest.param(
        replaced("+07:00\n", "+07:00\nexpires = 2026-12-01T00:59:00Z\n"),
        ["schedule.expires: must be after schedule.start (2026-12-01T08:00:00+07:00)"],
        id="expires-before-start",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nexpires = "2026-12-01T08:00:00+07:00"\n'),
        ["schedule.expires: must be after schedule.start"],
        id="expires-at-start",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nexpires = "2 days"\n'),
        ["schedule.expires: unknown unit 'days'"],
        id="bad-duration",
    ),
    pytest.param(
        replaced("+07:00\n", "+07:00\nexpires = 2026-12-03T08:00:00\n"),
        ["schedule.expires: needs a time zone"],
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\ntimezone = "Asia/Saigon City"\n'),
        ["schedule.timezone: unknown time zone 'Asia/Saigon City'"],
        id="bad-timezone",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nquiet_hours = "00:00-00:00"\n'),
        ["schedule.quiet_hours: '00:00-00:00' starts and ends at the same time"],
        id="empty-quiet-hours",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nquiet_hours = "9pm-7am"\n'),
        ["schedule.quiet_hours: '9pm' is not a time of day"],
        id="bad-quiet-hours",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nsend_at = "due_date * 3"\n'),
        ["schedule.send_at: 'due_date * 3' is not a send time; expected '<column>"],
        id="bad-send-at",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nsend_at = "due_date - 3 days"\n'),
        ["schedule.send_at: 'due_date - 3 days': unknown unit 'days'"],
        id="bad-send-at-duration",
    ),
    pytest.param(
        replaced("+07:00\n", '+07:00\nstrat = 1\nquiet_hour = "21:00-07:00"\n'),
        [
            "schedule.strat: unknown key (did you mean 'start'?)",
            "schedule.quiet_hour: unknown key (did you mean 'quiet_hours'?)",
        ],
        id="unknown-schedule-keys",
    ),
    pytest.param(
        replaced("channels", "chanels"),
        ["chanels: unknown key (did you mean 'channels'?)", "channels: Field required"],
        id="unknown-key",
    ),
    pytest.param(
        MINIMAL + "[audiance]\nregions = ['79']\n",
        ["audiance: unknown key (did you mean 'audience'?)"],
        id="unknown-table",
    ),
    pytest.param(
        replaced('["sms"]', '["sms"]\nsms_ascii = "yes"'),
        ["sms_ascii: Input should be a valid boolean (got 'yes')"],
        id="bool-as-text",
    ),
    pytest.param(
        replaced('["sms"]', '["sms"]\nsms_ascii = 1'),
        ["sms_ascii: Input should be a valid boolean (got 1)"],
        id="bool-as-number",
    ),
    pytest.param(
        MINIMAL + "[audience]\nregions = [79, 1]\n",
        ["audience.regions.0: write each code as text in quotes", "audience.regions.1"],
        id="region-numbers",
    ),
    pytest.param(
        MINIMAL + "[audience]\nregions = []\n",
        ["audience.regions: an empty list matches nobody"],
        id="no-regions",
    ),
    pytest.param(
        MINIMAL + '[audience]\nregions = "79"\n',
        ["audience.regions: expected a list"],
        id="regions-text",
    ),
    pytest.param(
        MINIMAL + '[audience]\ntags = ["a", ""]\n',
        ["audience.tags.1: expected a non-empty tag"],
        id="empty-tag",
    ),
    pytest.param(
        MINIMAL + "[audience]\nwhere = { group = [], vip = true, x = 1.5 }\n",
        [
            "audience.where.group: an empty list matches nobody",
            "audience.where.vip: expected text or a whole number",
            "audience.where.x: expected text or a whole number",
        ],
        id="bad-where",
    ),
    pytest.param(
        MINIMAL + "[limits]\nrate = 0\n",
        ["limits.rate: Input should be greater than 0 (got 0)"],
        id="zero-rate",
    ),
    pytest.param(
        MINIMAL + '[limits]\nrate = "fast"\n',
        ["limits.rate: Input should be a valid number"],
        id="rate-text",
    ),
    pytest.param(
        MINIMAL + "[limits]\nrate = true\n",
        ["limits.rate: expected a number, not true/false"],
        id="rate-bool",
    ),
    pytest.param(
        MINIMAL + "[limits]\nfrequency_cap = 7\n",
        ["limits.frequency_cap: expected a duration like '48h' or '3d' (in quotes)"],
        id="cap-number",
    ),
    pytest.param(
        MINIMAL + '[limits]\nfrequency_cap = "7"\n',
        ["limits.frequency_cap: '7' is not a duration"],
        id="cap-no-unit",
    ),
    pytest.param(
        replaced('["sms"]\n', '["sms"]\nschedule = 5\n').replace("[schedule]", "[schedul]"),
        ["schedule: Input should be a valid dictionary", "schedul: unknown key"],
        id="table-as-number",
    ),
]


@pytest.mark.parametrize(("text", "expected"), WRONG)
def test_wrong_plans(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = refused(tmp_path, text)
    for fragment in expected:
        assert fragment in message, message


def test_all_problems_in_one_message(tmp_path: Path) -> None:
    text = replaced('"normal"', '"urgent"').replace("+07:00", "")
    message = refused(tmp_path, text)
    assert "lane: unknown lane 'urgent'" in message
    assert "; schedule.start: needs a time zone" in message


def test_plan_error_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_plan(write(tmp_path, replaced('"normal"', '"urgent"')))
    with pytest.raises(PlanError, match=r"^campaign 7: lane: unknown lane"):
        Plan.from_mapping({"name": "x", "lane": "x", "channels": ["sms"]}, source="campaign 7")


# --- files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"plan file .*nothing\.toml does not exist"):
        load_plan(tmp_path / "nothing.toml")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="is a directory"):
        load_plan(tmp_path)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "x"\nlane = "normal"\nchannels = "sms\n')
    with pytest.raises(PlanError, match=r"is not valid TOML: .*line 3") as caught:
        load_plan(path)
    assert str(path) in str(caught.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_bytes('name = "Café"\n'.encode("latin-1"))
    with pytest.raises(PlanError, match="is not UTF-8 text"):
        load_plan(path)


# --- fallback on silence and on failure ---------------------------------------------------

ZALO_SMS = """\
name = "Cảnh báo lũ"
lane = "emergency"
channels = ["zalo", "sms"]
{policy}
[templates]
sms = "Canh bao lu"
zalo = {{ template_id = "1", data = {{}} }}
"""


def test_fallback_after_for_one_channel_or_every_one_with_receipts(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ZALO_SMS.format(policy='fallback_after = { zalo = "10m" }')))
    assert plan.fallback_after == {"zalo": timedelta(minutes=10)}
    assert plan.fallback_on_failure is True
    every = load_plan(write(tmp_path, ZALO_SMS.format(policy='fallback_after = "90s"')))
    assert every.fallback_after == {"zalo": timedelta(seconds=90)}, "not sms: it is the last"
    assert Plan.model_validate(every.model_dump(mode="json")) == every
    off = load_plan(write(tmp_path, ZALO_SMS.format(policy="fallback_on_failure = false")))
    assert (off.fallback_after, off.fallback_on_failure) == ({}, False)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ('fallback_after = { sms = "10m" }', "fallback_after.sms: 'sms' is the last channel"),
        ('fallback_after = { email = "10m" }', "no delivery receipts come from email"),
        ('fallback_after = { fcm = "1m" }', "only zalo and sms can wait"),
        ('fallback_after = { zalo = "0s" }', "fallback_after.zalo: '0s' is zero"),
        ('fallback_after = { zalo = "4d" }', "zalo: 4d is out of range; give 1s to 3d"),
        ("fallback_after = 10", 'expected a duration like "10m"'),
        ('fallback_after = { zalo = "ten" }', "fallback_after.zalo: 'ten' is not a duration"),
        ('fallback_on_failure = "no"', "fallback_on_failure: Input should be a valid boolean"),
        ('channels = ["sms"]\nfallback_after = "5m"', "fallback_after: no channel can wait"),
    ],
)
def test_wrong_fallback_policies(tmp_path: Path, policy: str, expected: str) -> None:
    text = ZALO_SMS.format(policy=policy)
    if policy.startswith("channels"):  # replaces the plan's channels
        text = text.replace('channels = ["zalo", "sms"]\n', "").replace("zalo = {", "# zalo = {")
    message = refused(tmp_path, text)
    assert expected in message, message
