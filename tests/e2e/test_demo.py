"""`loa demo`, the README's main job: a real run on the embedded default, and its audience."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from loa.campaigns.audience import BadRow, open_audience
from loa.campaigns.carriers import CarrierTable
from loa.campaigns.planner import Report
from loa.demo.config import BATCH, advisory_plan, rates_for
from loa.demo.country import (
    CARRIERS,
    EMERGENCY_PROVINCE,
    FAMILY_NAMES,
    GIVEN_NAMES,
    MIDDLE_NAMES,
    PROVINCES,
    SMS_ROUTES,
    ZALO_ROUTE,
)
from loa.demo.people import Facts, write_audience
from loa.demo.scenario import CampaignRun, State
from loa.demo.simulators import zalo_options
from loa.demo.summary import build
from loa.errors import InvalidPhone
from loa.phone import normalize
from loa.sim.http import HttpSimulator
from loa.sms import analyse, to_ascii

PEOPLE = 5000


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env["LOA_DATA_DIR"] = str(data)
    return env


def _loa(data: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "loa.cli", *args],
        env=_env(data),
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One real run: simulators, worker processes and the embedded server, as a user runs it."""
    data = tmp_path_factory.mktemp("demo") / "data"
    run = _loa(data, "demo", "--people", str(PEOPLE), "--processes", "2", "--json", timeout=150)
    assert run.returncode == 0, run.stderr.decode()[-3000:] + run.stdout.decode()[-3000:]
    return data, orjson.loads(run.stdout.splitlines()[-1])


def test_the_summary_reconciles_with_the_simulators(demo: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo
    wrong = [check for check in summary["checks"] if not check["ok"]]
    assert summary["reconciled"] and summary["receipts_complete"] and not wrong, wrong
    sources = {check["source"] for check in summary["checks"]}
    assert sources == {"smsc", "zalo", "audience"}
    routes = {row["route"]: row for row in summary["routes"]}
    assert set(routes) == {ZALO_ROUTE, *SMS_ROUTES}
    for route in SMS_ROUTES:
        row, sim = routes[route], routes[route]["sim"]
        assert row["sent"] == sim["accepted"] > 0, route
        assert row["delivered"] == sim["receipts_delivered"] > 0, route
        assert row["undelivered"] == sim["receipts_undelivered"] + sim["receipts_expired"], route
        assert sim["binds"] >= 2, "several binds per carrier"
    zalo = routes[ZALO_ROUTE]
    assert zalo["sent"] == zalo["sim"]["accepted"] > 0
    assert zalo["fallback"] == zalo["sim"]["no_account"] > 0


def test_the_summary_cuts_no_count_or_name_on_a_narrow_terminal(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    import io

    from rich.console import Console

    from loa.demo.runner import print_whole
    from loa.demo.view import summary_tables

    _, summary = demo
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    for part in summary_tables(summary):
        print_whole(console, part)
    shown = out.getvalue()
    assert "\N{HORIZONTAL ELLIPSIS}" not in shown, "nothing shortened"
    for campaign in summary["campaigns"].values():
        assert str(campaign["name"]) in shown
        assert f"{campaign['queued']:,}" in shown
    for route in summary["routes"]:
        assert f"{route['sent']:,}" in shown


def test_the_emergency_overtakes_the_advisory(demo: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo
    advisory, alert = summary["campaigns"]["advisory"], summary["campaigns"]["emergency"]
    assert advisory["state"] == alert["state"] == "done"
    assert alert["launched_at_s"] > advisory["launched_at_s"]
    # every person of the alert had their first message before the advisory ended (the alert
    # is done later: it waits fallback_after for Zalo's delivered events, then sends on by SMS)
    assert alert["reached_everyone_at_s"] < advisory["done_at_s"], "the alert overtakes"
    assert alert["reached_everyone_at_s"] <= alert["done_at_s"]
    # each person once, and those Zalo left undelivered once more, by SMS
    assert alert["sent"] == alert["queued"] + alert["fallback_timeout"]
    assert alert["queued"] > 0 and alert["filtered"] > 0
    assert advisory["fallback"] > 0 and advisory["delivered"] > 0 and alert["delivered"] > 0
    # beside the alert, a route sends only the batches its senders already held, and those they
    # take while the planner has not yet queued the alert's next batch for that route
    routes = {row["route"]: row for row in summary["routes"]}
    for route, count in alert["advisory_sms_while_it_ran_by_route"].items():
        senders = routes[route]["senders_per_process"] * summary["processes"]
        assert count <= 2 * senders * BATCH, route


def test_the_flood_alert_is_a_bilingual_cap_file_that_falls_back_on_silence(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    data, summary = demo
    alert = summary["campaigns"]["emergency"]
    assert alert["name"].startswith("CAP Alert: ")
    sent = (data / "demo" / "flood-alert.xml").read_text(encoding="utf-8")
    assert "<language>vi-VN</language>" in sent and "<language>en-US</language>" in sent
    assert set(alert["languages"]) == {"vi", "en"} and alert["languages"]["en"] > 0
    checks = {check["what"]: check for check in summary["checks"]}
    silent = checks["emergency: Zalo silent past fallback_after -> SMS"]
    assert silent["ok"] and silent["loa"] == alert["fallback_timeout"] > 0
    assert checks["zalo-zns: never delivered -> SMS after fallback_after"]["other"] == silent["loa"]
    assert checks["emergency: Zalo delivered events counted"]["ok"]
    assert alert["fallback_failed"] == alert["fallback"] > 0, "no Zalo account: SMS at once"


def test_the_stop_reply_opts_its_sender_out(demo: tuple[Path, dict[str, Any]]) -> None:
    data, summary = demo
    inbound = summary["inbound"]
    assert inbound == {**inbound, "replies": 1, "optouts": 1, "replier_opted_out": True}
    audience = Path(summary["audience"]["path"])
    with audience.open(encoding="utf-8") as handle:
        line = next(itertools.islice(handle, inbound["replier_line"] - 1, None))
    phone = line.split(",", 1)[0]
    config = data / "demo" / "loa.toml"
    check = _loa(data, "suppression", "check", phone, "-c", str(config), timeout=60)
    assert check.returncode == 1 and b"opted out" in check.stdout, check.stderr.decode()


def test_malformed_rows_are_reported_with_their_lines(demo: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo
    audience, advisory = summary["audience"], summary["campaigns"]["advisory"]
    assert advisory["invalid"] == audience["malformed"] > 0
    reported = [row["line"] for row in advisory["invalid_rows"]]
    assert reported[: len(audience["malformed_lines"])] == audience["malformed_lines"]
    assert all(row["reason"] for row in advisory["invalid_rows"])


def test_the_embedded_server_kept_its_data_and_stopped(demo: tuple[Path, dict[str, Any]]) -> None:
    data, _ = demo
    assert (data / "redis" / "appendonlydir").is_dir(), "the embedded server's AOF"
    assert not (data / "redis" / "url").exists(), "the server was stopped"
    assert (data / "demo" / "audience.csv").is_file() and (data / "demo" / "loa.toml").is_file()


def test_the_audience_holds_what_its_facts_say(tmp_path: Path) -> None:
    zalo = HttpSimulator(zalo_options(7, 0))
    facts = write_audience(
        tmp_path / "people.csv", 20_000, zalo.has_zalo, seed=7, silent=zalo.silent
    )
    table = CarrierTable.default()
    phones: set[str] = set()
    bad: list[int] = []
    carriers: dict[str, int] = {}
    regions = {p.code for p in PROVINCES}
    for item in open_audience(facts.path):
        if isinstance(item, BadRow):
            bad.append(item.line)
            continue
        try:
            phone = normalize(item.fields["phone"])
        except InvalidPhone:
            bad.append(item.line)
            continue
        assert item.fields["region"] in regions
        phones.add(phone)
        carrier = table.carrier_of(phone) or "?"
        carriers[carrier] = carriers.get(carrier, 0) + 1
    assert sorted(bad) == facts.malformed and 20 < len(bad) < 80
    assert len(phones) == 20_000 - len(bad), "every number is unique"
    assert set(carriers) == {c.name for c in CARRIERS}
    assert carriers["viettel"] > carriers["vinaphone"] > carriers["vietnamobile"]
    assert facts.replier_phone in phones and facts.replier_carrier == "viettel"
    assert facts.emergency_people > 0 and facts.no_account > 0
    assert facts.emergency_people == sum(facts.emergency_languages.values())
    assert facts.emergency_languages["en"] > 0 and facts.emergency_languages["vi"] > 0
    assert 0 < facts.emergency_silent == sum(facts.emergency_later.values())
    assert sum(facts.emergency_sms_first.values()) < facts.emergency_people
    assert len(facts.opted_out) > 0 and facts.replier_phone not in facts.opted_out
    with facts.path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    replier = rows[facts.replier_line - 1]
    assert replier[2] != EMERGENCY_PROVINCE and replier[4] == "", "an SMS reader, elsewhere"
    assert rows[0][-1] == "lang" and {row[5] for row in rows[1:] if len(row) == 6} == {"vi", "en"}


def test_every_advisory_sms_fits_one_part() -> None:
    template = next(line for line in advisory_plan().splitlines() if line.startswith("sms ="))
    text = template.split('"', 1)[1].rsplit('"', 1)[0]
    longest = max(
        (" ".join(n) for n in itertools.product(FAMILY_NAMES, MIDDLE_NAMES, GIVEN_NAMES)), key=len
    )
    body = text.replace("{{ name }}", to_ascii(longest))
    assert analyse(body).parts == 1, "one receipt per message: the SMSC counts parts"


def _consistent_run(tmp_path: Path) -> tuple[State, dict[str, Any]]:
    """A finished run whose simulators saw exactly what loa counted."""
    facts = Facts(path=tmp_path / "people.csv", rows=10, malformed=[5], opted_out=["+84912345678"])
    facts.advisory.update({ZALO_ROUTE: 4, "sms-viettel": 3})
    facts.no_account = 1
    facts.emergency.update({"sms-viettel": 1})
    facts.emergency_people = 1
    state = State(facts, replier_opted_out=True, receipts_complete=True)
    state.replies = [{"optout": "1"}]
    state.advisory = CampaignRun("advisory", id="a", report=Report(invalid=1, suppressed=1))
    state.advisory.status = {
        "queued": 6,
        "finished": 6,
        "fallback": 1,
        "by_route": {
            ZALO_ROUTE: {"accepted": 3, "fallback": 1},
            "sms-viettel": {"accepted": 3, "delivered": 3},
        },
    }
    state.emergency = CampaignRun("emergency", id="e")
    state.emergency.status = {
        "queued": 1,
        "finished": 1,
        "by_route": {"sms-viettel": {"accepted": 1, "undelivered": 1}},
    }
    smsc = dict.fromkeys(("submits", "accepted", "throttled", "bad_destinations", "errors"), 0)
    sims: dict[str, Any] = {
        "zalo": {"received": 4, "outcomes": {"accepted": 3, "no_account": 1}},
        "smsc": {c.name: dict(smsc) for c in CARRIERS if c.route},
    }
    sims["smsc"]["viettel"].update(
        submits=4, accepted=4, receipts_delivered=3, receipts_undelivered=1, mo_acked=1
    )
    return state, sims


def test_one_message_of_difference_fails_the_reconciliation(tmp_path: Path) -> None:
    state, sims = _consistent_run(tmp_path)
    rates = rates_for(dict.fromkeys((ZALO_ROUTE, *SMS_ROUTES), 1000.0), 30, 2)
    assert build(state, rates, sims, {})["reconciled"]
    sims["smsc"]["viettel"]["receipts_delivered"] = 2  # one delivered receipt loa never saw
    summary = build(state, rates, sims, {})
    wrong = [check["what"] for check in summary["checks"] if not check["ok"]]
    assert not summary["reconciled"] and wrong == ["sms-viettel: delivered receipts"]
