"""The dry run an operator reads first: ETA per route, samples, send times and warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loa.campaigns.regions import KNOWN_CODES
from loa.campaigns.service import Campaigns
from loa.cap.provinces import PROVINCES

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def settings(make_settings: Any) -> Any:
    return make_settings(
        routes={
            "sms-a": {"adapter": "null", "rate": 10, "unit": "messages"},
            "sms-b": {"adapter": "null", "rate": 4},  # parts a second
        },
        channels={"sms": {"default": "sms-b", "carriers": {"viettel": "sms-a"}}},
    )


def write_plan(path: Path, extra: str = "", template: str = "Tiem vac-xin, {{ name }}") -> Path:
    path.write_text(
        f'name = "dry"\nlane = "normal"\nchannels = ["sms"]\n{extra}'
        f"[templates]\nsms = {template!r}\n",
        encoding="utf-8",
    )
    return path


def write_people(path: Path, rows: list[str], header: str = "phone,name,region") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_the_known_region_codes_are_the_provinces_codes() -> None:
    assert {code for province in PROVINCES for code in province.codes} == KNOWN_CODES


async def test_eta_per_route_samples_masked_and_region_warnings(settings, redis_client, tmp_path):
    rows = [f"096{n:07d},An {n},79" for n in range(20)]  # Viettel: sms-a, 10 messages/s
    rows += [f"091{n:07d},Binh,hn" for n in range(6)]  # Vinaphone: sms-b, 4 parts/s
    rows += [f"092000000{n},Chi,99" for n in range(2)]
    plan = write_plan(tmp_path / "p.toml", '[audience]\nregions = ["79", "HN", "99", "48"]\n')
    report = await Campaigns(settings, redis_client).validate(
        plan, write_people(tmp_path / "a.csv", rows)
    )
    data = report.to_json()
    assert data["queued"] == 28 and not data["problems"]
    assert data["eta_s"] == {"sms-a": 2.0, "sms-b": 2.0}
    assert data["samples"] == {"sms/vi": {"to": "+8496*****00", "body": "Tiem vac-xin, An 0"}}
    assert "8 recipients have a region code that is no province's: 99, HN" in data["warnings"]
    assert "audience.regions: nobody in the audience has region '48'" in data["warnings"]
    assert not any("'79'" in warning for warning in data["warnings"])


async def test_rules_that_match_nobody_warn_and_a_missing_rule_column_is_an_error(
    settings, redis_client, tmp_path
):
    people = write_people(tmp_path / "a.csv", ["0961234567,An,79,x"], "phone,name,region,tags")
    campaigns = Campaigns(settings, redis_client)
    nobody = write_plan(tmp_path / "p.toml", '[audience]\ntags = ["elderly"]\n')
    report = await campaigns.validate(nobody, people)
    assert "the audience rules (tags, where) match nobody in the audience" in report.warnings
    missing = write_plan(tmp_path / "q.toml", '[audience]\nwhere = { district = ["1"] }\n')
    report = await campaigns.validate(missing, people)
    assert report.problems == [
        "audience rules read the column 'district', which the audience does not have"
    ]


async def test_send_times_are_counted_by_when_they_go(settings, redis_client, tmp_path):
    now = datetime.now(UTC)
    soon = (now + timedelta(hours=1)).isoformat(timespec="minutes")  # today or just after
    dates = [(now + timedelta(days=d)).date().isoformat() for d in (-2, 3, 5, 20, 40)]
    # past due, 7 days, 7 days, later, after expiry; and `soon`: today or the next 7 days
    rows = [f"096123456{n},An,79,{due}" for n, due in enumerate([soon, *dates])]
    people = write_people(tmp_path / "a.csv", rows, "phone,name,region,due")
    plan = write_plan(tmp_path / "p.toml", '[schedule]\nsend_at = "due"\nexpires = "30d"\n')
    report = await Campaigns(settings, redis_client).validate(plan, people)
    times = report.to_json()["send_times"]
    assert times["past_due"] == 1 and times["after_expiry"] == 1
    assert times.get("today", 0) + times["next_7_days"] == 3 and times["later"] == 1
    assert any("will never be sent" in warning for warning in report.warnings)
