"""`loa demo`'s second act: a small vaccination drive, run for real and reconciled exactly."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_demo import _env, _loa

from loa.appointments.service import RepliesReport, RunReport
from loa.demo.drive import DRIVE, HOTLINE, URGENT_CODE, citizen_scripts, write_drive
from loa.demo.second_act import DriveRun, drive_summary

PEOPLE = 300
REGISTRANTS = 150


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One real run with a small first act and a small drive."""
    data = tmp_path_factory.mktemp("drive") / "data"
    args = ["demo", "--people", str(PEOPLE), "--drive", str(REGISTRANTS), "--processes", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "loa.cli", *args, "--json"],
        env=_env(data),
        capture_output=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:] + done.stdout.decode()[-3000:]
    return data, orjson.loads(done.stdout.splitlines()[-1])


def test_the_second_act_reconciles_with_what_the_citizens_did(
    run: tuple[Path, dict[str, Any]],
) -> None:
    _, summary = run
    drive = summary["drive"]
    wrong = [check for check in drive["checks"] if not check["ok"]]
    assert drive["reconciled"] and not drive["gave_up"] and not wrong, wrong
    assert summary["reconciled"], "both acts reconcile"
    checks = {check["what"]: check for check in drive["checks"]}
    for what in (
        "appointments: cancelled by reply",
        "appointments: places given to the next waiting",
        "check-in: answer 1",
        f"check-in: answer {URGENT_CODE}",
        "check-in: unparsed replies",
        "hotline: urgent cases",
        "hotline: cases opened",
    ):
        assert checks[what]["loa"] == checks[what]["other"] > 0, what
    kinds = drive["citizens"]["by_kind"]
    assert set(kinds) == {"confirm", "cancel", "hotline", "free"} | {
        f"answer:{code}" for code in ("1", "2", "3")
    }
    assert drive["citizens"]["failed"] == 0 and drive["citizens"]["waiting"] == 0
    by_channel = drive["replies_by_channel"]
    assert by_channel["zalo"] > 0 and by_channel["sms"] > 0, "replies by Zalo and by SMS"
    assert checks["of those, by Zalo (signed webhooks)"]["loa"] == by_channel["zalo"]
    assert drive["next"]["the check-in's answers"].startswith(
        f"loa campaign answers {drive['campaigns']['check-in']['id']} -c "
    )


def test_the_drive_keeps_capacity_and_priority(run: tuple[Path, dict[str, Any]]) -> None:
    data, summary = run
    drive = summary["drive"]
    sessions = drive["sessions"]
    assert sum(s["capacity"] for s in sessions) == drive["capacity"] < REGISTRANTS
    assert all(s["booked"] <= s["capacity"] for s in sessions)
    assert sum(s["booked"] for s in sessions) == drive["capacity"], "every place given again"
    groups = drive["allocation"]["by_group"]
    waiting = [int(g) for g, counts in groups.items() if counts["waiting"]]
    placed = [int(g) for g, counts in groups.items() if counts["placed"]]
    assert waiting and max(placed) <= min(waiting), "a lower group waits for a higher one"
    schedule = data / "demo" / "drive" / "vaccinated.csv"
    with schedule.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    statuses = Counter(row["status"] for row in rows)
    # after the cancellations, the places went to the first waiting in priority order: nobody
    # holds a place who came after (group, then registration) someone still waiting
    order = [(int(r["priority_group"]), r["registered_at"], r["status"]) for r in rows]
    first_waiting = min(key[:2] for key in order if key[2] == "waiting")
    assert all(key[:2] < first_waiting for key in order if key[2] == "placed")
    assert statuses["placed"] == drive["capacity"]
    assert statuses["cancelled"] == drive["citizens"]["by_kind"]["cancel"]
    for key in ("appointments", "new appointments", "check-in"):
        campaign = drive["campaigns"][key]
        assert campaign["state"] == "done" and campaign["finished"] == campaign["queued"] > 0


def test_one_answer_of_difference_fails_the_reconciliation(tmp_path: Path) -> None:
    facts = write_drive(tmp_path, 20, seed=3, avoid=set())
    drive = DriveRun(facts)
    drive.allocation = RunReport(DRIVE, 1)
    drive.allocation.people.update(placed=14, waiting=6)
    drive.replies = RepliesReport(DRIVE)
    drive.replies.outcomes.update(confirmed=3, released=2)
    drive.replies.notified = ["+84960000001", "+84960000002"]
    drive.sessions = [{"site": "Q1", "date": "", "start": "", "capacity": 14, "booked": 14}]
    drive.campaigns = {
        "appointments": {"finished": 14},
        "new appointments": {"finished": 2},
        "check-in": {"finished": 14},
    }
    drive.answers = {
        "options": [{"code": "1", "count": 5}, {"code": URGENT_CODE, "count": 1}],
        "unparsed_count": 1,
    }
    drive.cases = [{"id": "c1", "urgent": True, "state": "open"}, {"id": "c2", "urgent": False}]
    replies = [
        {"who": "a", "kind": "answer:3"},
        {"who": "b", "kind": "free"},
        {"who": "b", "kind": "hotline"},  # the same person: one case
    ]
    kinds = {"confirm": 3, "cancel": 2, "answer:1": 5, "answer:3": 1, "free": 1, "hotline": 1}
    drive.citizens = {
        "sent": 13, "failed": 0, "waiting": 0, "by_kind": kinds, "replies": replies,
    }  # fmt: skip
    drive.inbound = 13
    drive.by_channel = {"sms": 13}
    drive.changed_after_checkin = 0
    summary = drive_summary(drive)
    assert summary["reconciled"], [c for c in summary["checks"] if not c["ok"]]
    drive.answers["options"][0]["count"] = 4  # one answer loa never stored
    summary = drive_summary(drive)
    wrong = [check["what"] for check in summary["checks"] if not check["ok"]]
    assert not summary["reconciled"] and wrong == ["check-in: answer 1"]


def test_the_citizens_answer_what_the_drive_sends() -> None:
    scripts = citizen_scripts(1, 5000)
    assert scripts["to"] == HOTLINE
    assert scripts["keep"] >= 2 * 5000, "every reply listed: each person answers two scripts"
    kinds = {reply["kind"] for script in scripts["scripts"] for reply in script["replies"]}
    assert {"cancel", "hotline", "free", f"answer:{URGENT_CODE}"} <= kinds


def test_the_commands_it_names_show_the_same_afterwards(run: tuple[Path, dict[str, Any]]) -> None:
    data, summary = run
    drive = summary["drive"]
    config = str(data / "demo" / "loa.toml")
    checkin = drive["campaigns"]["check-in"]["id"]
    shown = _loa(data, "campaign", "answers", checkin, "--json", "-c", config, timeout=120)
    assert shown.returncode == 0, shown.stderr.decode()[-2000:]
    answers = orjson.loads(shown.stdout)
    assert answers["options"] == drive["answers"]["options"]
    assert answers["unparsed_count"] == drive["answers"]["unparsed_count"] > 0
    cases = _loa(data, "inbox", "list", "--closed", "--json", "-c", config, timeout=120)
    assert cases.returncode == 0, cases.stderr.decode()[-2000:]
    listed = orjson.loads(cases.stdout)
    assert len(listed) == drive["cases"]["opened"]
    assert sum(1 for case in listed if case["urgent"]) == drive["cases"]["urgent"]
    assert listed[0]["urgent"], "urgent cases on top"
