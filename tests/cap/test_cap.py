"""CAP 1.2 in: reading hostile XML safely, the standard's rules, the mapping to a campaign, and
Alert, Update and Cancel end to end on real Redis and a real worker, from the CLI and the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from helpers import APPROVER, OPERATOR, REPO, read_sink, running, until
from loa.access.audit import AuditLog
from loa.access.identity import Role, program
from loa.api import create_app
from loa.campaigns.plan import Plan
from loa.campaigns.service import Campaigns
from loa.campaigns.templates import CompiledTemplates, LanguageTemplates, RenderedMessage
from loa.cap.mapping import lane_of, literal, plan_mapping, to_toml
from loa.cap.model import Info
from loa.cap.parse import MAX_BYTES, parse_alert
from loa.cap.provinces import near, province
from loa.cap.service import CapIntake, Submitted, check_alert, index_key
from loa.engine.connection import RedisClient, connect
from loa.errors import CapError
from loa.message import Lane
from loa.settings import CapZaloSettings, Settings

pytestmark = pytest.mark.anyio

ROOT = REPO
EXAMPLES = ROOT / "examples" / "cap"
NS = "urn:oasis:names:tc:emergency:cap:1.2"
TEST_NUMBERS = ["0912000001", "0912000002"]
FIRST_SENT = datetime(2026, 12, 4, 7, 0, tzinfo=timezone(timedelta(hours=7)))  # flood-alert.xml
CAP_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{2}:\d{2}")
SECRET = "TOPSECRET-4711"

# phone, region, lang: Da Nang (48, and 49 as before 2025), Quang Ngai (51), Ha Noi (01)
PEOPLE = [
    ("0961000001", "48", "vi"),
    ("0961000002", "48", "vi"),
    ("0961000003", "48", ""),
    ("0961000004", "48", "en"),
    ("0961000005", "48", "EN-us"),
    ("0961000006", "48", "fr"),
    ("0961000007", "49", "en"),
    ("0961000008", "49", "vi"),
    ("0961000009", "51", "vi"),
    ("0961000010", "51", "vi"),
    ("0961000011", "51", "en"),
    ("0961000012", "01", "vi"),
    ("0961000013", "01", "en"),
    ("0961000014", "01", ""),
]
FLOOD = {p for p, region, _ in PEOPLE if region in ("48", "49")}  # 8 people
UPDATE = {p for p, region, _ in PEOPLE if region in ("48", "49", "51")}  # 11 people
ENGLISH = {p for p, _, lang in PEOPLE if lang.lower().startswith("en")}


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


def e164(phone: str) -> str:
    return "+84" + phone[1:]


# one shift for the whole run, so an Update's <references> name the alert's <sent> exactly
SHIFT = timedelta(seconds=int((datetime.now(UTC) - FIRST_SENT).total_seconds()) - 60)


def fresh(name: str, shift: timedelta = SHIFT) -> bytes:
    """An example alert with every time moved so the flood alert was sent a minute ago."""
    text = (EXAMPLES / f"{name}.xml").read_text(encoding="utf-8")

    def moved(match: re.Match[str]) -> str:
        return (datetime.fromisoformat(match[0]) + shift).isoformat(timespec="seconds")

    return CAP_TIME.sub(moved, text).encode()


def alert_xml(body: str, head: str = "") -> bytes:
    """A small alert around `body` (the elements after <alert>'s own), with `head` before it."""
    return (f'{head}<alert xmlns="{NS}">{body}</alert>').encode()


BASIC = (
    "<identifier>X-1</identifier><sender>a@b.vn</sender>"
    "<sent>2026-12-04T07:00:00+07:00</sent><status>Actual</status>"
    "<msgType>Alert</msgType><scope>Public</scope>"
)
INFO = (
    "<info><category>Met</category><event>Flood</event><urgency>Immediate</urgency>"
    "<severity>Extreme</severity><certainty>Observed</certainty>"
    "<headline>Flood</headline><area><areaDesc>Da Nang</areaDesc>"
    "<geocode><valueName>VN-PROVINCE</valueName><value>48</value></geocode></area></info>"
)


def problems_of(data: bytes) -> list[str]:
    with pytest.raises(CapError) as caught:
        check_alert(data, Settings())
    for line in caught.value.problems:
        assert "\n" not in line
    return caught.value.problems


# --- the examples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "msg_type", "lane", "languages", "provinces"),
    [
        ("flood-alert", "Alert", "emergency", ["vi", "en"], ["48"]),
        ("flood-update", "Update", "emergency", ["vi", "en"], ["48", "51"]),
        ("flood-cancel", "Cancel", None, [], []),
        ("heat-advisory", "Alert", "normal", ["vi"], ["01", "24", "25", "33"]),
        ("typhoon-exercise", "Alert", "emergency", ["vi", "en"], ["42", "44"]),
    ],
)
def test_the_examples_are_valid_and_map_as_documented(name, msg_type, lane, languages, provinces):
    summary = check_alert(fresh(name), Settings()).summary()
    assert (summary["msgType"], summary["lane"]) == (msg_type, lane)
    assert (summary["languages"], summary["provinces"]) == (languages, provinces)


def test_validate_json_prints_what_the_alert_does(tmp_path):
    done = loa("cap", "validate", EXAMPLES / "flood-alert.xml", "--json")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["valid"] is True
    assert {k: summary[k] for k in ("identifier", "msgType", "status", "lane")} == {
        "identifier": "VN-NCHMF-2026-1204-0007",
        "msgType": "Alert",
        "status": "Actual",
        "lane": "emergency",
    }
    assert (summary["languages"], summary["provinces"]) == (["vi", "en"], ["48"])
    plain = loa("cap", "validate", EXAMPLES / "flood-alert.xml")
    assert plain.returncode == 0
    assert "provinces: 48 Đà Nẵng" in plain.stdout


# --- hostile and broken XML -----------------------------------------------------------------


def test_xxe_is_refused_and_the_file_it_names_never_echoed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    head = f'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    data = alert_xml(BASIC.replace("X-1", "&xxe;"), head)
    assert problems_of(data) == [
        "alert: the document has a DOCTYPE (a DTD): refused, as CAP needs none and loa reads "
        "no entities"
    ]
    path = tmp_path / "xxe.xml"
    path.write_bytes(data)
    done = loa("cap", "validate", path, "--json")
    assert done.returncode == 1
    assert SECRET not in done.stdout + done.stderr
    assert str(secret) not in done.stdout + done.stderr
    assert orjson.loads(done.stdout)["problems"][0].startswith("alert: the document has a DOCTYPE")


def test_entity_expansion_and_external_dtds_are_refused_unread():
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10 if n else "lol"}">' for n in range(10))
    bomb = alert_xml(BASIC.replace("X-1", "&l9;"), f"<!DOCTYPE alert [{laughs}]>")
    assert "DOCTYPE" in problems_of(bomb)[0]
    external = alert_xml(BASIC, '<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">')
    assert "DOCTYPE" in problems_of(external)[0]
    undeclared = alert_xml(BASIC.replace("X-1", "&nope;"))
    [problem] = problems_of(undeclared)
    assert problem.startswith("alert: not well-formed XML (undefined entity")


def test_a_50_mb_document_is_refused_before_it_is_parsed(tmp_path):
    huge = b"<" * (50 << 20)
    with pytest.raises(CapError) as caught:
        parse_alert(huge)
    assert (caught.value.code, caught.value.status) == ("too_large", 413)
    path = tmp_path / "huge.xml"
    with path.open("wb") as handle:
        handle.truncate(50 << 20)  # sparse: the command reads just past the limit
    done = loa("cap", "validate", path)
    assert done.returncode == 1
    assert f"larger than {MAX_BYTES:,} bytes" in done.stderr


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            BASIC.encode().join(
                [b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1">', b"</alert>"]
            ),
            "alert: namespace 'urn:oasis:names:tc:emergency:cap:1.1'; a CAP 1.2 alert is in "
            f"namespace {NS}",
        ),
        (
            b"<alert>" + BASIC.encode() + b"</alert>",
            f"alert: no namespace; a CAP 1.2 alert is in namespace {NS}",
        ),
        (b"<feed/>", "feed: the root element must be <alert> (CAP 1.2)"),
        (b"", "alert: the document is empty"),
    ],
)
def test_wrong_documents_say_what_they_are(data, expected):
    assert problems_of(data) == [expected]


def test_every_problem_is_named_by_its_path():
    body = (
        BASIC.replace("<identifier>X-1</identifier>", "")
        .replace("2026-12-04T07:00:00+07:00", "2026-12-04T07:00:00Z")
        .replace("<msgType>Alert", "<msgType>Update")
        .replace("<scope>Public", "<scope>Restricted")
        + INFO.replace("Immediate", "Now")
        .replace("<category>Met</category>", "<category>Met</category><category>Weather</category>")
        .replace("<headline>Flood</headline>", "<expires>2026-13-40T00:00:00+07:00</expires>")
        .replace("</area>", "<polygon>16.0,108.0 16.1,108.1 16.0,108.2</polygon></area>")
        + "<info><language>vi</language><event>Lũ</event><severity>Extreme</severity>"
        "<urgency>Immediate</urgency><certainty>Observed</certainty><colour>red</colour></info>"
    )
    assert problems_of(alert_xml(body)) == [
        "alert/identifier: is missing (required)",
        "alert/sent: '2026-12-04T07:00:00Z' is not a CAP date-time: write it like "
        "2026-11-22T14:30:00+07:00 (an offset is required; Z is not allowed)",
        "alert/restriction: is required when scope is Restricted",
        "alert/references: is required for msgType Update (sender,identifier,sent)",
        "alert/info[1]/category[2]: 'Weather' is not one of Geo, Met, Safety, Security, Rescue, "
        "Fire, Health, Env, Transport, Infra, CBRNE, Other",
        "alert/info[1]/urgency: 'Now' is not one of Immediate, Expected, Future, Past, Unknown",
        "alert/info[1]/expires: '2026-13-40T00:00:00+07:00' is not a real date and time",
        "alert/info[1]/area[1]/polygon[1]: is out of order: it comes before <geocode>",
        "alert/info[1]/area[1]/polygon[1]: has 3 points; a polygon needs at least 4",
        "alert/info[2]/urgency: is out of order: it comes before <severity>",
        "alert/info[2]/colour: is not an element of CAP 1.2 here",
        "alert/info[2]/category[1]: is missing (required)",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("<sent>2026-12-04T07:00:00+07:00", "<sent>2026-12-04T07:00:00"),
            "alert/sent: '2026-12-04T07:00:00' is not a CAP date-time",
        ),
        (
            ("<sent>2026-12-04T07:00:00+07:00", "<sent>4 Dec 2026"),
            "alert/sent: '4 Dec 2026' is not a CAP date-time",
        ),
        (
            ("<identifier>X-1", "<identifier>X 1"),
            "alert/identifier: must not contain spaces, commas, '<' or '&'",
        ),
        (
            (
                "<identifier>X-1</identifier>",
                "<identifier>X-1</identifier><identifier>2</identifier>",
            ),
            "alert/identifier: appears more than once",
        ),
        (
            ("<identifier>X-1</identifier>", "<identifier><b>X</b></identifier>"),
            "alert/identifier: has elements inside; expected text",
        ),
        (
            ("<status>Actual", "<status>actual"),
            "alert/status: 'actual' is not one of Actual, Exercise, System, Test, Draft",
        ),
        (
            ("<scope>Public</scope>", "<scope>Public</scope><references>a@b,X-0</references>"),
            "alert/references[1]: 'a@b,X-0' is not sender,identifier,sent",
        ),
    ],
)
def test_one_clear_line_per_problem(change, expected):
    problems = problems_of(alert_xml(BASIC.replace(*change) + INFO))
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_areas_and_their_shapes_are_checked():
    area = INFO.replace(
        "<geocode><valueName>VN-PROVINCE</valueName><value>48</value></geocode>",
        "<polygon>16.0,108.0 16.1,108.1 16.0,108.2 16.2,108.0</polygon>"
        "<circle>16.0,108.0</circle><circle>95,108 5</circle>",
    )
    assert problems_of(alert_xml(BASIC + area)) == [
        "alert/info[1]/area[1]/polygon[1]: is not closed: its first and last points differ",
        "alert/info[1]/area[1]/circle[1]: '16.0,108.0' is not 'latitude,longitude radius-in-km'",
        "alert/info[1]/area[1]/circle[2]: '95,108' is off the globe (latitude, then longitude)",
    ]
    assert problems_of(alert_xml(BASIC + INFO.replace("<value>48", "<value>99"))) == [
        "alert/info[1]/area[1]/geocode[1]/value: '99' is not a province code (two digits, e.g. "
        "01 Hà Nội, 48 Đà Nẵng, 79 TP. Hồ Chí Minh)",
    ]
    unknown = INFO.replace("VN-PROVINCE", "FIPS6")
    assert problems_of(alert_xml(BASIC + unknown)) == [
        "alert/info[1]/area[1]: loa cannot tell which provinces it covers: give a <geocode> "
        "VN-PROVINCE with a province code, a <polygon> or a <circle>"
    ]
    bangkok = INFO.replace(
        "<geocode><valueName>VN-PROVINCE</valueName><value>48</value></geocode>",
        "<circle>13.75,100.5 10</circle>",
    )
    assert problems_of(alert_xml(BASIC + bangkok)) == [
        "alert/info[1]/area[1]: covers no province of Viet Nam"
    ]
    many = INFO.replace(
        "<geocode><valueName>VN-PROVINCE</valueName><value>48</value></geocode>",
        "<circle>16.0,108.0 1</circle>" * 501,
    )
    assert problems_of(alert_xml(BASIC + many)) == [
        "alert: 501 polygons and circles; loa maps at most 500 per alert"
    ]
    private = BASIC.replace("<scope>Public", "<scope>Private") + "<addresses>x</addresses>"
    assert problems_of(alert_xml(private + INFO)) == [
        "alert/scope: loa sends only Public alerts; this is Private"
    ]


def test_provinces_by_code_shape_and_former_code():
    assert province("49").code == "48", "Quang Nam merged into Da Nang in 2025"
    assert province("1").code == "01"
    assert province("99") is None
    # towns near provincial borders: the nearest province, and its neighbour when close
    for (lat, lon), code in [
        ((18.67, 105.68), "40"),  # Vinh, Nghe An, near Ha Tinh
        ((10.95, 106.82), "75"),  # Bien Hoa, Dong Nai, next to Ho Chi Minh City
        ((11.94, 108.44), "68"),  # Da Lat, Lam Dong
        ((16.82, 107.10), "44"),  # Dong Ha, Quang Tri, near Hue
    ]:
        assert code in near((lat, lon)), (lat, lon)
    assert near((13.75, 100.5)) == set(), "Bangkok is not in Viet Nam"
    coastal = INFO.replace(
        "<geocode><valueName>VN-PROVINCE</valueName><value>48</value></geocode>",
        # a strip along the coast from Hue to Quang Ngai: every province it runs through
        "<polygon>16.6,107.5 15.0,108.9 14.95,108.85 16.55,107.45 16.6,107.5</polygon>",
    )
    summary = check_alert(alert_xml(BASIC + coastal), Settings()).summary()
    assert {"46", "48", "51"} <= set(summary["provinces"]) <= {"44", "46", "48", "51", "52"}


# --- the mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "urgency", "certainty", "lane"),
    [
        ("Extreme", "Immediate", "Observed", Lane.EMERGENCY),
        ("Severe", "Expected", "Likely", Lane.EMERGENCY),
        ("Extreme", "Immediate", "Unlikely", Lane.HIGH),
        ("Extreme", "Future", "Likely", Lane.HIGH),
        ("Moderate", "Immediate", "Observed", Lane.HIGH),
        ("Moderate", "Expected", "Likely", Lane.NORMAL),
        ("Minor", "Past", "Unknown", Lane.NORMAL),
    ],
)
def test_severity_and_urgency_choose_the_lane(severity, urgency, certainty, lane):
    info = Info("vi", ("Met",), "Flood", urgency, severity, certainty)
    assert lane_of(info) is lane


def test_cap_text_is_sent_verbatim_never_run_as_a_template():
    hostile = 'Lũ {{ 7 * 7 }} {% for x in "ab" %}x{% endfor %} {# hi #} "quoted" \\ back'
    data = alert_xml(
        BASIC + INFO.replace("<headline>Flood</headline>", f"<headline>{hostile}</headline>")
    )
    mapped = check_alert(data, Settings())
    plan = plan_mapping(mapped, ["sms", "email"], by_language=False, sms_ascii=False, zalo=None)
    assert literal("{x}") == '{{ "{" }}x}'
    text = to_toml(plan)
    compiled = CompiledTemplates.compile(Plan.from_mapping(plan))
    assert compiled.render("sms", {}).body == hostile
    assert compiled.render("email", {}).subject == hostile
    assert "49" not in compiled.render("sms", {}).body
    assert Plan.from_mapping(plan) == Plan.from_mapping(tomllib.loads(text))


class ByLanguage:
    """A plan's templates rendered as the planner does: in the language of the `lang` field."""

    def __init__(self, plan: Plan) -> None:
        self.languages = LanguageTemplates(plan)

    def render(self, channel: str, fields: dict[str, str]) -> RenderedMessage:
        language = self.languages.language_of(fields.get("lang"))
        return self.languages.by_language[language].render(channel, fields)


def test_each_person_reads_their_language_and_the_rest_the_default():
    mapped = check_alert(fresh("flood-alert"), Settings())
    plan = plan_mapping(mapped, ["sms", "fcm"], by_language=True, sms_ascii=True, zalo=None)
    assert (plan["language"], sorted(plan["templates"])) == ("vi", ["en", "fcm", "sms"])
    compiled = ByLanguage(Plan.from_mapping(plan))
    english = "National Centre for Hydro-Meteorological Forecasting: Flash floods"
    vietnamese = "Trung tam Du bao KTTV Quoc gia: Lu quet va sat lo dat tai Da Nang."
    for fields, start in [
        ({"lang": "en"}, english),
        ({"lang": "EN_us"}, english),
        ({"lang": "vi"}, vietnamese),
        ({"lang": ""}, vietnamese),
        ({"lang": "fr"}, vietnamese),
        ({}, vietnamese),
    ]:
        assert compiled.render("sms", fields).body.startswith(start), fields
    assert compiled.render("fcm", {"lang": "en"}).title == "Flash floods and landslides in Da Nang"
    assert plan["audience"] == {"regions": ["48", "49"]}, "former codes match older audiences"
    assert plan["lane"] == "emergency"
    assert plan["schedule"]["expires"] == mapped.expires.isoformat()


def test_the_senders_own_sms_text_is_used():
    mapped = check_alert(fresh("heat-advisory"), Settings())
    assert mapped.texts["vi"].sms.startswith("Bo Y te: nang nong 39-41 do C tai Ha Noi")


def test_every_channel_gets_its_own_text_in_each_language():
    mapped = check_alert(fresh("flood-alert"), Settings())
    data = {"title": "headline", "todo": "instruction", "hotline": "contact"}
    zalo = CapZaloSettings(template_id="248700", data=data)
    channels = ["zalo", "sms", "fcm", "email"]
    plan = plan_mapping(mapped, channels, by_language=True, sms_ascii=False, zalo=zalo)
    assert Plan.from_mapping(plan) == Plan.from_mapping(tomllib.loads(to_toml(plan)))
    compiled = ByLanguage(Plan.from_mapping(plan))
    english = compiled.render("zalo", {"lang": "en"})
    assert (english.template_id, dict(english.data)) == (
        "248700",
        {
            "title": "Flash floods and landslides in Da Nang",
            "todo": "Move to high ground now and keep away from rivers and streams. "
            "Emergency: 115.",
            "hotline": "-",  # the English <info> has no <contact>: never an empty parameter
        },
    )
    assert compiled.render("zalo", {}).data["hotline"] == "Đường dây nóng 1900 6677"
    push = compiled.render("fcm", {"lang": "vi"})
    assert push.title == "Lũ quét và sạt lở đất tại Đà Nẵng"
    assert push.body.startswith("Mưa rất to trên 300 mm") and push.body.endswith("Cấp cứu: 115.")
    mail = compiled.render("email", {"lang": "en"})
    assert "Area: Da Nang City (with former Quang Nam province)" in mail.body
    assert f"Expires: {mapped.expires.isoformat()}" in mail.body
    assert "Khu vực: TP. Đà Nẵng (gồm tỉnh Quảng Nam cũ)" in compiled.render("email", {}).body
    assert compiled.render("sms", {}).body.startswith("Trung tâm Dự báo KTTV Quốc gia: Lũ quét")


def test_cap_fallback_after_waits_on_every_channel_but_the_last():
    mapped = check_alert(fresh("flood-alert"), Settings())
    zalo = CapZaloSettings(template_id="248700", data={"title": "headline"})
    waits = {"zalo": "5m", "sms": "10m"}
    plan = plan_mapping(
        mapped, ["zalo", "sms"], by_language=True, sms_ascii=True, zalo=zalo, fallback_after=waits
    )
    assert plan["fallback_after"] == {"zalo": "5m"}, "SMS is the last channel: nothing after it"
    assert Plan.from_mapping(plan).fallback_after == {"zalo": timedelta(minutes=5)}
    assert Plan.from_mapping(tomllib.loads(to_toml(plan))) == Plan.from_mapping(plan)
    alone = plan_mapping(mapped, ["sms"], by_language=False, sms_ascii=True, zalo=None)
    assert "fallback_after" not in alone


# --- submitting: Alert, Update, Cancel on Redis and a worker ---------------------------------


def write_people(path: Path, with_lang: bool = True) -> Path:
    header = "phone,name,region" + (",lang" if with_lang else "")
    rows = [
        f"{phone},Người {n},{region}" + (f",{lang}" if with_lang else "")
        for n, (phone, region, lang) in enumerate(PEOPLE)
    ]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def settings(make_settings, tmp_path) -> Settings:
    route = {"adapter": "file", "options": {"path": str(tmp_path / "sink" / "{route}-{pid}.jsonl")}}
    return make_settings(
        routes={"sms": route},
        channels={"sms": {"default": "sms"}},
        api={"test_numbers": TEST_NUMBERS},
        cap={"audience": str(write_people(tmp_path / "people.csv")), "channels": ["sms"]},
    )


@dataclass
class Intake:
    cap: CapIntake
    campaigns: Campaigns
    redis: RedisClient
    settings: Settings

    async def submit(self, name: str, by: Any = OPERATOR) -> Submitted:
        return await self.cap.submit(fresh(name), by)

    async def launched(self, name: str) -> str:
        """An alert submitted, approved by a second person and launched (no worker yet)."""
        result = await self.submit(name)
        await self.campaigns.approve(result.campaign, APPROVER)
        await self.campaigns.launch(result.campaign)
        return result.campaign

    async def state(self, campaign_id: str) -> str:
        return str((await self.campaigns.store.get(campaign_id)).state)

    async def settled(self, campaign_id: str) -> bool:
        status = await self.campaigns.status(campaign_id)
        done = status["sent"] + status["cancelled"] + status["failed"]
        return status["state"] in ("done", "cancelled") and done >= status["queued"]


@pytest.fixture
async def intake(settings, redis_client) -> Intake:
    log = AuditLog(redis_client, settings.namespace)
    return Intake(
        CapIntake(settings, redis_client, log),
        Campaigns(settings, redis_client),
        redis_client,
        settings,
    )


def sent(tmp_path: Path) -> dict[str, str]:
    """Phone (E.164) -> the text the worker sent there; each phone at most once."""
    lines = read_sink(tmp_path / "sink")
    bodies = {line["to"]: line["body"] for line in lines}
    assert len(bodies) == len(lines), "nobody is messaged twice"
    return bodies


async def test_an_alert_becomes_a_draft_a_second_person_approves_then_reaches_its_area(
    intake, redis_client, tmp_path
):
    result = await intake.submit("flood-alert")
    assert (result.action, result.state, result.summary["lane"]) == (
        "created",
        "draft",
        "emergency",
    )
    assert result.approval == "emergency lane"
    campaign = await intake.campaigns.store.get(result.campaign)
    assert campaign.fields["lane"] == "emergency"
    assert campaign.fields["cap_identifier"] == "VN-NCHMF-2026-1204-0007"
    index = await redis_client.hgetall(index_key(intake.settings.namespace))
    assert {v.decode() for v in index.values()} == {result.campaign}
    review = await intake.campaigns.review(result.campaign)
    assert (review.total, review.queued, review.filtered) == (14, 8, 6)
    with pytest.raises(Exception, match="second person"):
        await intake.campaigns.approve(result.campaign, program(OPERATOR.person, Role.APPROVER))
    await intake.campaigns.approve(result.campaign, APPROVER)
    await intake.campaigns.launch(result.campaign)
    async with running(intake.settings, redis_client):
        await until(lambda: intake.settled(result.campaign), 30, "the alert to be sent")
    bodies = sent(tmp_path)
    assert set(bodies) == {e164(p) for p in FLOOD}
    for phone in FLOOD:
        english = phone in ENGLISH
        start = "National Centre" if english else "Trung tam Du bao KTTV Quoc gia: Lu quet"
        assert bodies[e164(phone)].startswith(start), phone


async def test_the_same_alert_is_taken_once(intake):
    first = await intake.submit("flood-alert")
    with pytest.raises(CapError) as caught:
        await intake.submit("flood-alert")
    assert (caught.value.code, caught.value.status) == ("duplicate", 409)
    assert f"(campaign {first.campaign})" in str(caught.value)


async def test_an_advisory_still_needs_a_second_person_whatever_its_size(intake):
    result = await intake.submit("heat-advisory")
    assert (result.summary["lane"], result.approval) == ("normal", "CAP alert, status Actual")
    review = await intake.campaigns.review(result.campaign)
    assert review.queued == 3, "Ha Noi's three people"


async def test_an_update_supersedes_a_running_alert_when_it_is_launched(
    intake, redis_client, tmp_path
):
    alert = await intake.launched("flood-alert")
    assert await intake.state(alert) == "running"
    update = await intake.submit("flood-update")
    assert (update.action, update.supersedes, update.cancelled) == ("created", [alert], [])
    assert await intake.state(alert) == "running", "the alert goes on until the update goes out"
    await intake.campaigns.approve(update.campaign, APPROVER)
    await intake.campaigns.launch(update.campaign)
    campaign = await intake.campaigns.store.get(alert)
    assert (str(campaign.state), campaign.fields["superseded_by"]) == ("cancelled", update.campaign)
    async with running(intake.settings, redis_client):
        await until(lambda: intake.settled(update.campaign), 30, "the update to be sent")
        await until(lambda: intake.settled(alert), 30, "the alert's rest to be dropped")
    bodies = sent(tmp_path)
    assert set(bodies) == {e164(p) for p in UPDATE}
    assert not any("sat lo dat" in body or "landslides" in body for body in bodies.values())
    assert all("Quang Ngai" in body for body in bodies.values())
    status = await intake.campaigns.status(alert)
    assert (status["sent"], status["cancelled"]) == (0, len(FLOOD))


async def test_an_update_of_a_draft_replaces_it_at_once(intake):
    alert = await intake.submit("flood-alert")
    update = await intake.submit("flood-update")
    assert (update.cancelled, update.supersedes) == ([alert.campaign], [])
    assert await intake.state(alert.campaign) == "cancelled"


async def test_a_cancel_stops_a_running_alert_at_once(intake, redis_client, tmp_path):
    alert = await intake.launched("flood-alert")
    result = await intake.submit("flood-cancel")
    assert (result.action, result.cancelled) == ("cancelled", [alert])
    assert await intake.state(alert) == "cancelled"
    async with running(intake.settings, redis_client):
        await until(lambda: intake.settled(alert), 30, "the alert's messages to be dropped")
    assert read_sink(tmp_path / "sink") == []
    entries = await AuditLog(redis_client, intake.settings.namespace).read()
    [entry] = [e for e in entries if e.action == "campaign.cancel"]
    assert (entry.campaign, entry.who) == (alert, OPERATOR.person)
    assert entry.detail.startswith("CAP Cancel canhbao@nchmf.gov.vn,VN-NCHMF-2026-1204-0009,")


async def test_a_cancel_of_an_update_stops_the_alert_it_supersedes_too(intake):
    alert = await intake.launched("flood-alert")
    update = await intake.submit("flood-update")
    cancel = fresh("flood-cancel").replace(
        re.search(rb"canhbao@nchmf.gov.vn,VN-NCHMF-2026-1204-0007,\S+ ", fresh("flood-cancel"))[0],
        b"",
    )
    result = await intake.cap.submit(cancel, OPERATOR)
    assert sorted(result.cancelled) == sorted([alert, update.campaign])


async def test_references_to_unknown_alerts_are_refused(intake):
    with pytest.raises(CapError) as caught:
        await intake.submit("flood-update")
    assert (caught.value.code, caught.value.status) == ("unknown_reference", 409)
    assert str(caught.value).startswith("alert/references: loa has none of the alerts referenced")
    await intake.submit("flood-alert")
    await intake.submit("flood-update")  # refused once, taken when it makes sense


async def test_an_exercise_only_ever_goes_to_the_test_numbers(intake, redis_client, tmp_path):
    result = await intake.submit("typhoon-exercise")
    review = await intake.campaigns.review(result.campaign)
    assert (review.total, review.queued) == (2, 2)
    await intake.campaigns.approve(result.campaign, APPROVER)  # emergency lane: still two people
    await intake.campaigns.launch(result.campaign)
    async with running(intake.settings, redis_client):
        await until(lambda: intake.settled(result.campaign), 30, "the exercise to be sent")
    bodies = sent(tmp_path)
    assert set(bodies) == {e164(n) for n in TEST_NUMBERS}
    assert sorted(bodies.values()) == [
        "[EXERCISE] Cuc Quan ly de dieu va PCTT: Dien tap: bao so 15 do bo Ha Tinh - Quang Tri. "
        "Day la dien tap. Khong can hanh dong.",
        "[EXERCISE] Exercise: typhoon 15 landfall in Ha Tinh - Quang Tri. This is an exercise. "
        "No action needed.",
    ], "each test number reads one language in turn"


async def test_what_cannot_be_sent_is_refused_with_the_reason(intake, settings, redis_client):
    expired = fresh("flood-alert", SHIFT - timedelta(days=2))
    with pytest.raises(CapError, match=r"expired at .*: stale advice is never sent"):
        await intake.cap.submit(expired, OPERATOR)
    no_audience = settings.model_copy(
        update={"cap": settings.cap.model_copy(update={"audience": None})}
    )
    log = AuditLog(redis_client, settings.namespace)
    with pytest.raises(CapError, match=r"cap\.audience: not set"):
        await CapIntake(no_audience, redis_client, log).submit(fresh("flood-alert"), OPERATOR)
    no_tests = settings.model_copy(
        update={"api": settings.api.model_copy(update={"test_numbers": []})}
    )
    with pytest.raises(CapError, match=r"go only to api\.test_numbers: none set"):
        await CapIntake(no_tests, redis_client, log).submit(fresh("typhoon-exercise"), OPERATOR)
    assert await redis_client.hlen(index_key(settings.namespace)) == 0, "a refusal leaves no trace"


async def test_an_ack_is_recorded_and_sends_nothing(intake, redis_client):
    ack = alert_xml(BASIC.replace("<msgType>Alert", "<msgType>Ack"))
    result = await intake.cap.submit(ack, OPERATOR)
    assert (result.action, result.campaign) == ("recorded", "")
    assert await intake.campaigns.store.ids() == []


async def test_without_a_lang_column_everyone_reads_the_default_language(
    intake, settings, tmp_path
):
    write_people(Path(settings.cap.audience), with_lang=False)
    result = await intake.submit("flood-alert")
    plan = (await intake.campaigns.store.get(result.campaign)).fields["plan"]
    assert "National Centre" not in plan and "Trung tâm Dự báo" in plan


# --- the command line -----------------------------------------------------------------------


def loa(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    return subprocess.run(
        [sys.executable, "-m", "loa.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def config(redis_url, namespace, tmp_path) -> Path:
    path = tmp_path / "loa.toml"
    people = write_people(tmp_path / "people.csv")
    path.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\ndata_dir = "{tmp_path}/data"\n'
        f'[routes.sms]\nadapter = "file"\noptions = {{ path = "{tmp_path}/sink.jsonl" }}\n'
        '[channels.sms]\ndefault = "sms"\n'
        f'[cap]\naudience = "{people}"\n',
        encoding="utf-8",
    )
    return path


def test_submit_and_cancel_from_the_command_line(config, tmp_path):
    alert, cancel = tmp_path / "alert.xml", tmp_path / "cancel.xml"
    alert.write_bytes(fresh("flood-alert"))
    cancel.write_bytes(fresh("flood-cancel"))
    done = loa("cap", "submit", alert, "-c", config, "--json")
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert (result["action"], result["state"], result["approval_required"]) == (
        "created",
        "draft",
        True,
    )
    campaign = result["campaign"]
    mine = loa("campaign", "approve", campaign, "-c", config)
    assert mine.returncode == 2 and "second person" in mine.stderr, "the submitter cannot approve"
    again = loa("cap", "submit", alert, "-c", config)
    assert again.returncode == 1
    assert f"was submitted already (campaign {campaign})" in again.stderr
    stopped = loa("cap", "submit", cancel, "-c", config)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"Cancel VN-NCHMF-2026-1204-0009: cancelled {campaign}"
    status = loa("campaign", "status", campaign, "-c", config, "--json")
    assert orjson.loads(status.stdout)["state"] == "cancelled"
    audit = loa("audit", "-c", config, "--json")
    actions = [(e["action"], e["outcome"]) for e in orjson.loads(audit.stdout)]
    assert ("cap.submit", "duplicate") in actions and actions.count(("cap.submit", "ok")) == 2
    assert ("campaign.cancel", "ok") in actions


# --- the API --------------------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: dict[str, str]

    def auth(self, who: str, content_type: str = "application/cap+xml") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", "Content-Type": content_type}


@pytest.fixture
async def api(settings, redis_url) -> AsyncIterator[Api]:
    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        services = app.state.loa.services
        tokens = {}
        for name, role in (("alice", Role.APPROVER), ("bob", Role.APPROVER), ("vic", Role.VIEWER)):
            tokens[name], _ = await services.tokens.create(name, role, program("t", Role.ADMIN))
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4567))
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            yield Api(client, tokens)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


async def test_the_api_takes_an_alert_a_second_person_approves_and_a_cancel(api):
    created = await api.client.post(
        "/api/v1/cap", content=fresh("flood-alert"), headers=api.auth("alice")
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["action"], body["state"], body["approval_required"]) == ("created", "draft", True)
    assert body["alert"]["provinces"] == ["48"]
    campaign = body["campaign"]
    own = await api.client.post(f"/api/v1/campaigns/{campaign}/approve", headers=api.auth("alice"))
    assert error_of(own)[:2] == (403, "same_person")
    other = await api.client.post(f"/api/v1/campaigns/{campaign}/approve", headers=api.auth("bob"))
    assert other.json()["state"] == "approved"
    launched = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("bob")
    )
    assert launched.status_code in (200, 202)
    cancel = await api.client.post(
        "/api/v1/cap", content=fresh("flood-cancel"), headers=api.auth("bob")
    )
    assert cancel.status_code == 200, cancel.text
    assert (cancel.json()["action"], cancel.json()["cancelled"]) == ("cancelled", [campaign])
    status = await api.client.get(f"/api/v1/campaigns/{campaign}", headers=api.auth("vic"))
    assert status.json()["state"] == "cancelled"
    audit = await api.client.get("/api/v1/audit?limit=100", headers=api.auth("alice"))
    entries = [(e["action"], e["who"], e["campaign"], e["ip"]) for e in audit.json()["items"]]
    assert ("cap.submit", "alice", campaign, "10.1.2.3") in entries
    assert ("campaign.cancel", "bob", campaign, "10.1.2.3") in entries


async def test_the_api_refuses_bad_alerts_with_the_reasons(api, tmp_path):
    missing = fresh("flood-alert").replace(b"<identifier>VN-NCHMF-2026-1204-0007</identifier>", b"")
    refused = await api.client.post("/api/v1/cap", content=missing, headers=api.auth("alice"))
    assert error_of(refused) == (422, "invalid_cap", "alert/identifier: is missing (required)")
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    xxe = alert_xml(
        BASIC.replace("X-1", "&xxe;"), f'<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    )
    hostile = await api.client.post("/api/v1/cap", content=xxe, headers=api.auth("alice"))
    status, code, message = error_of(hostile)
    assert (status, code) == (422, "invalid_cap") and SECRET not in hostile.text
    assert "DOCTYPE" in message
    json = await api.client.post(
        "/api/v1/cap", content=fresh("flood-alert"), headers=api.auth("alice", "application/json")
    )
    assert error_of(json)[:2] == (415, "unsupported_media_type")
    big = await api.client.post(
        "/api/v1/cap", content=b" " * (MAX_BYTES + 1), headers=api.auth("alice")
    )
    assert error_of(big)[:2] == (413, "too_large")
    huge = await api.client.post(
        "/api/v1/cap", content=b"<" * (50 << 20), headers=api.auth("alice")
    )
    assert error_of(huge)[:2] == (413, "too_large")
    viewer = await api.client.post(
        "/api/v1/cap", content=fresh("flood-alert"), headers=api.auth("vic")
    )
    assert error_of(viewer)[:2] == (403, "forbidden")


async def test_the_api_validates_without_storing(api):
    checked = await api.client.post(
        "/api/v1/cap/validate", content=fresh("flood-update"), headers=api.auth("alice")
    )
    assert checked.status_code == 200, checked.text
    assert {k: checked.json()[k] for k in ("msgType", "lane", "languages", "provinces")} == {
        "msgType": "Update",
        "lane": "emergency",
        "languages": ["vi", "en"],
        "provinces": ["48", "51"],
    }
    listed = await api.client.get("/api/v1/campaigns", headers=api.auth("vic"))
    assert listed.json() == []


async def test_unset_channels_mean_every_channel_with_a_route(
    make_settings, redis_client, tmp_path
):
    push = {"adapter": "null"}
    settings = make_settings(
        routes={"sms": {"adapter": "null"}, "push": push, "mail": push},
        channels={
            "sms": {"default": "sms"},
            "fcm": {"default": "push"},
            "email": {"default": "mail"},
        },
        cap={"audience": str(write_people(tmp_path / "people.csv"))},
    )
    intake = CapIntake(settings, redis_client, AuditLog(redis_client, settings.namespace))
    result = await intake.submit(fresh("flood-alert"), OPERATOR)
    plan = tomllib.loads(
        (await Campaigns(settings, redis_client).store.get(result.campaign)).fields["plan"]
    )
    assert plan["channels"] == ["sms", "fcm", "email"], "Zalo needs cap.zalo, its template"


# --- signed alerts from named senders --------------------------------------------------------

NCHMF = "canhbao@nchmf.gov.vn"  # the sender of flood-alert.xml


@dataclass(frozen=True)
class Keys:
    """A signing key and its self-signed certificate, both PEM."""

    key: bytes
    cert: bytes


def make_keys(name: str) -> Keys:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Keys(pem_key, cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def nchmf_keys() -> Keys:
    return make_keys("NCHMF")


@pytest.fixture(scope="module")
def forger_keys() -> Keys:
    return make_keys("NCHMF")  # the same name on another key


def signed(data: bytes, keys: Keys) -> bytes:
    """`data` with an enveloped XML signature over the whole alert, the certificate inside."""
    from lxml import etree
    from signxml.signer import XMLSigner

    root = etree.fromstring(data)
    signature = XMLSigner().sign(root, key=keys.key, cert=keys.cert.decode())
    return bytes(etree.tostring(signature))


@pytest.fixture
def signing_settings(make_settings, tmp_path, nchmf_keys) -> Any:
    cert = tmp_path / "nchmf.pem"
    cert.write_bytes(nchmf_keys.cert)
    route = {"adapter": "file", "options": {"path": str(tmp_path / "sink" / "{route}-{pid}.jsonl")}}

    def build(require: bool = True, auto_approve: bool = True) -> Settings:
        return make_settings(
            routes={"sms": route},
            channels={"sms": {"default": "sms"}},
            cap={
                "audience": str(write_people(tmp_path / "people.csv")),
                "channels": ["sms"],
                "require_signature": require,
                "senders": {NCHMF: {"certificate": str(cert), "auto_approve": auto_approve}},
            },
        )

    return build


def signed_intake(settings: Settings, redis_client: RedisClient) -> CapIntake:
    return CapIntake(settings, redis_client, AuditLog(redis_client, settings.namespace))


async def test_a_signed_alert_from_a_named_sender_is_approved_at_once_and_audited(
    signing_settings, redis_client, nchmf_keys
):
    settings = signing_settings()
    result = await signed_intake(settings, redis_client).submit(
        signed(fresh("flood-alert"), nchmf_keys), OPERATOR
    )
    assert (result.action, result.state, result.approval) == ("created", "approved", "")
    assert result.summary["signed_by"] == NCHMF
    campaign = await Campaigns(settings, redis_client).store.get(result.campaign)
    assert campaign.fields["approved_by"] == f"automatic: CAP alert signed by {NCHMF} (cap.senders)"
    entries = await AuditLog(redis_client, settings.namespace).read()
    approvals = [e for e in entries if e.action == "campaign.approve"]
    assert [(e.campaign, e.outcome, e.who) for e in approvals] == [
        (result.campaign, "ok", OPERATOR.person)
    ]
    assert NCHMF in approvals[0].detail


async def test_a_signed_alert_without_auto_approval_still_needs_a_second_person(
    signing_settings, redis_client, nchmf_keys
):
    settings = signing_settings(auto_approve=False)
    result = await signed_intake(settings, redis_client).submit(
        signed(fresh("flood-alert"), nchmf_keys), OPERATOR
    )
    assert (result.state, result.approval, result.summary["signed_by"]) == (
        "draft",
        "emergency lane",
        NCHMF,
    )


def test_an_alert_changed_after_signing_is_refused(signing_settings, nchmf_keys):
    settings = signing_settings()
    original = signed(fresh("flood-alert"), nchmf_keys)
    start, end = original.index(b"<info>"), original.index(b"</info>") + len(b"</info>")
    beside = original[start:end].replace(b"<value>48</value>", b"<value>01</value>")
    for before, after in (
        (b"<value>48</value>", b"<value>01</value>"),  # another province
        (b"<severity>Extreme</severity>", b"<severity>Minor</severity>"),
        (original[start:end], original[start:end] + beside),  # a valid block added beside
    ):
        assert before in original, before
        with pytest.raises(CapError) as caught:
            check_alert(original.replace(before, after, 1), settings)
        assert caught.value.code == "bad_signature", caught.value
        assert str(caught.value).startswith("alert/Signature: does not verify")


def test_a_signature_by_another_key_in_the_senders_name_is_refused(
    signing_settings, forger_keys
):
    settings = signing_settings()
    with pytest.raises(CapError) as caught:
        check_alert(signed(fresh("flood-alert"), forger_keys), settings)
    assert (caught.value.code, caught.value.status) == ("bad_signature", 403)
    assert f"the certificate of {NCHMF!r}" in str(caught.value)


def test_with_signatures_required_unsigned_and_unknown_senders_are_refused(
    signing_settings, nchmf_keys
):
    settings = signing_settings()
    with pytest.raises(CapError) as unsigned:
        check_alert(fresh("flood-alert"), settings)
    assert (unsigned.value.code, unsigned.value.status) == ("unsigned", 403)
    assert str(unsigned.value).startswith("alert/Signature: the alert is unsigned")
    other = fresh("heat-advisory")  # from the ministry of health, not a named sender
    with pytest.raises(CapError) as unknown:
        check_alert(signed(other, nchmf_keys), settings)
    assert str(unknown.value).startswith("alert/sender: 'canhbao@moh.gov.vn' is not a named")
    relaxed = signing_settings(require=False)
    assert check_alert(fresh("flood-alert"), relaxed).signed_by == ""
    assert check_alert(signed(other, nchmf_keys), relaxed).signed_by == "", "unverified"


def test_validate_shows_who_signed(signing_settings, nchmf_keys, tmp_path):
    settings = signing_settings()
    config = tmp_path / "signed.toml"
    cap = settings.cap
    sender = cap.senders[NCHMF]
    config.write_text(
        f'redis_url = "{settings.redis_url}"\n[routes.sms]\nadapter = "null"\n'
        '[channels.sms]\ndefault = "sms"\n'
        f'[cap]\naudience = "{cap.audience}"\nrequire_signature = true\n'
        f'[cap.senders."{NCHMF}"]\ncertificate = "{sender.certificate}"\n',
        encoding="utf-8",
    )
    alert = tmp_path / "signed.xml"
    alert.write_bytes(signed(fresh("flood-alert"), nchmf_keys))
    shown = loa("cap", "validate", alert, "-c", config, "--json")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["signed_by"] == NCHMF
    alert.write_bytes(alert.read_bytes().replace(b"<value>48</value>", b"<value>01</value>"))
    refused = loa("cap", "validate", alert, "-c", config)
    assert refused.returncode != 0
    assert "alert/Signature: does not verify" in refused.stderr
