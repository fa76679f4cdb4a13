"""`loa campaign ...` as an operator runs it, in a subprocess, against the local Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest
import redis

from helpers import REPO
from loa.access.identity import Role, local_person, program
from loa.access.tokens import Tokens
from loa.campaigns.service import STATUS_KEYS
from loa.engine.connection import connect

THRESHOLD = 10  # more recipients than this need a second person
TEST_NUMBERS = ["0912000001", "0912000002"]
ME = local_person()  # the OS user running the tests, as the CLI knows it (from the uid)


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def config(redis_url: str, namespace: str, tmp_path: Path) -> Path:
    path = tmp_path / "loa.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\ndata_dir = "{tmp_path}/data"\n'
        "[worker]\nmetrics_port = 0\n"
        f'[routes.sms]\nadapter = "file"\noptions = {{ path = "{tmp_path}/sink.jsonl" }}\n'
        '[channels.sms]\ndefault = "sms"\n'
        f"[api]\napproval_threshold = {THRESHOLD}\ntest_numbers = {TEST_NUMBERS!r}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "advice.plan.toml"
    path.write_text(
        'name = "Khuyến cáo COVID"\nlane = "normal"\nchannels = ["sms"]\nsms_ascii = true\n'
        '[templates]\nsms = "Bộ Y tế: {{ name }} ơi, hãy tiêm vắc-xin."\n',
        encoding="utf-8",
    )
    return path


def loa(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    return subprocess.run(
        [sys.executable, "-m", "loa.cli", *map(str, args)],
        env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120, check=False,
    )


def audience(path: Path, rows: list[str]) -> Path:
    path.write_text("phone,name,region\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_validate_create_approve_launch_status(config, plan, redis_url, namespace, tmp_path):
    people = audience(tmp_path / "people.csv",
                      [f"09{n % 10}{n:07d},Người {n},79" for n in range(40)] + ["abc,Bad,79"])
    dry = loa("campaign", "validate", plan, "-a", people, "-c", config, "--json")
    assert dry.returncode == 0, dry.stderr
    report = orjson.loads(dry.stdout)
    assert (report["total"], report["queued"], report["invalid"]) == (41, 40, 1)
    assert report["errors"] == [{"line": 42, "reason": "phone: letters in number"}]
    assert report["by_encoding"] == {"gsm7": 40}, "sms_ascii folds Vietnamese into GSM-7"

    created = loa("campaign", "create", plan, "-a", people, "-c", config)
    assert created.returncode == 0, created.stderr
    campaign = created.stdout.strip()
    refused = loa("campaign", "launch", campaign, "-c", config)
    assert refused.returncode == 2
    assert "needs approval by a second person" in refused.stderr
    own = loa("campaign", "approve", campaign, "-c", config)
    assert own.returncode == 2
    assert f"{ME} created this campaign" in own.stderr
    bob = token_for(redis_url, namespace, "bob")
    approved = loa("campaign", "approve", campaign, "-c", config, "--token", bob)
    assert approved.returncode == 0, approved.stderr
    assert loa("campaign", "launch", campaign, "-c", config).returncode == 0
    status = loa("campaign", "status", campaign, "-c", config, "--json")
    assert status.returncode == 0, status.stderr
    data = orjson.loads(status.stdout)
    assert set(STATUS_KEYS) <= set(data)
    assert (data["state"], data["total"], data["queued"], data["invalid"]) == (
        "running", 41, 40, 1)
    # nothing crashed or went unanswered: no duplicate is possible, and status says so
    assert (data["redelivered"], data["unknown"], data["possible_duplicate"]) == (0, 0, 0)
    listed = orjson.loads(loa("campaign", "list", "-c", config, "--json").stdout)
    assert [row["id"] for row in listed] == [campaign]
    assert audit_trail(config) == [
        ("campaign.create", ME, "cli", "ok"),
        ("campaign.launch", ME, "cli", "approval_required"),
        ("campaign.approve", ME, "cli", "same_person"),
        ("campaign.approve", "bob", "bob", "ok"),
        ("campaign.launch", ME, "cli", "ok"),
    ]


def token_for(url: str, namespace: str, person: str, role: Role = Role.APPROVER) -> str:
    """A token for `person`, minted by an admin who is neither the tests' OS user nor `person`."""

    async def make() -> str:
        client = connect(url)
        try:
            minter = program("security-office", Role.ADMIN)
            token, _ = await Tokens(client, namespace).create(person, role, minter)
            return token
        finally:
            await client.aclose()

    return asyncio.run(make())


def audit_trail(config: Path) -> list[tuple[str, str, str, str]]:
    """(action, person, token, outcome) of every audit entry, oldest first."""
    run = loa("audit", "--json", "--limit", "1000", "-c", config)
    assert run.returncode == 0, run.stderr
    entries = orjson.loads(run.stdout)
    assert {entry["ip"] for entry in entries} <= {"local"}
    return [(e["action"], e["who"], e["token"], e["outcome"]) for e in reversed(entries)]


def test_a_swapped_audience_or_plan_is_never_sent(config, plan, redis_url, namespace, tmp_path):
    people = audience(tmp_path / "people.csv", [f"091{n:07d},Người {n},79" for n in range(100)])
    created = loa("campaign", "create", plan, "-a", people, "-c", config)
    assert created.returncode == 0, created.stderr
    campaign = created.stdout.strip()
    # after create, the operator's files are swapped: 2,000 people and another text
    audience(people, [f"098{n:07d},Khác {n},79" for n in range(2000)])
    plan.write_text(plan.read_text(encoding="utf-8").replace("tiêm vắc-xin", "chuyển tiền"),
                    encoding="utf-8")
    review = orjson.loads(loa("campaign", "review", campaign, "-c", config, "--json").stdout)
    assert (review["total"], review["queued"]) == (100, 100), "the approver sees what is pinned"
    bob = token_for(redis_url, namespace, "bob")
    assert loa("campaign", "approve", campaign, "-c", config, "--token", bob).returncode == 0
    launched = loa("campaign", "launch", campaign, "-c", config, "--json")
    assert launched.returncode == 0, launched.stderr
    assert orjson.loads(launched.stdout)["queued"] == 100
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        stored = client.hget(f"{namespace}:{{camp:{campaign}}}", "plan")
    assert stored is not None and "tiêm vắc-xin".encode() in stored


def test_a_pinned_copy_or_plan_changed_after_approval_is_refused_at_launch(
    config, plan, redis_url, namespace, tmp_path
):
    people = audience(tmp_path / "people.csv", [f"091{n:07d},Người {n},79" for n in range(30)])
    bob = token_for(redis_url, namespace, "bob")
    ids = []
    for _ in range(2):
        created = loa("campaign", "create", plan, "-a", people, "-c", config)
        ids.append(created.stdout.strip())
        assert loa("campaign", "approve", ids[-1], "-c", config, "--token", bob).returncode == 0
    copy = next((tmp_path / "data" / "campaigns" / ids[0]).glob("audience*"))
    copy.chmod(0o600)
    with copy.open("a", encoding="utf-8") as handle:  # an insider with the data directory
        handle.write("0987654321,Extra,79\n")
    refused = loa("campaign", "launch", ids[0], "-c", config)
    assert refused.returncode == 2
    assert "has changed since the campaign was created" in refused.stderr
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        key = f"{namespace}:{{camp:{ids[1]}}}"
        client.hset(key, "plan", client.hget(key, "plan").replace(b"normal", b"emergency"))
    swapped = loa("campaign", "launch", ids[1], "-c", config)
    assert swapped.returncode == 2
    assert "plan differs from the plan that was approved" in swapped.stderr
    for campaign in ids:
        status = orjson.loads(loa("campaign", "status", campaign, "-c", config, "--json").stdout)
        assert (status["state"], status["queued"]) == ("approved", 0)
    outcomes = [row[3] for row in audit_trail(config) if row[0] == "campaign.launch"]
    assert outcomes == ["illegal_transition", "illegal_transition"]


def test_a_token_the_creator_minted_cannot_approve(config, plan, tmp_path):
    people = audience(tmp_path / "people.csv", [f"091{n:07d},Người {n},79" for n in range(30)])
    campaign = loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
    minted = loa("api", "token", "create", "--name", "alice.2", "--person", "alice",
                 "--role", "approver", "-c", config)
    assert minted.returncode == 0, minted.stderr
    refused = loa("campaign", "approve", campaign, "-c", config, "--token", minted.stdout.strip())
    assert refused.returncode == 2
    assert f"minted by {ME}, who created this campaign" in refused.stderr
    assert audit_trail(config)[-1] == ("campaign.approve", "alice", "alice.2", "same_person")


def test_an_emergency_campaign_needs_two_persons_even_for_test_numbers(
    config, redis_url, namespace, tmp_path
):
    alert = tmp_path / "alert.plan.toml"
    alert.write_text('name = "Lũ"\nlane = "emergency"\nchannels = ["sms"]\n'
                     '[templates]\nsms = "Cảnh báo lũ"\n', encoding="utf-8")
    people = audience(tmp_path / "tests.csv", [f"{TEST_NUMBERS[0]},A,79"])
    campaign = loa("campaign", "create", alert, "-a", people, "-c", config).stdout.strip()
    early = loa("campaign", "launch", campaign, "-c", config)
    assert (early.returncode, "emergency lane" in early.stderr) == (2, True)
    assert loa("campaign", "approve", campaign, "-c", config).returncode == 2
    viewer = token_for(redis_url, namespace, "observer", Role.VIEWER)
    weak = loa("campaign", "approve", campaign, "-c", config, "--token", viewer)
    assert (weak.returncode, "approver role" in weak.stderr) == (2, True)
    bob = token_for(redis_url, namespace, "bob")
    assert loa("campaign", "approve", campaign, "-c", config, "--token", bob).returncode == 0
    assert loa("campaign", "launch", campaign, "-c", config).returncode == 0


def test_every_change_from_the_command_line_is_audited(config, plan, tmp_path):
    people = audience(tmp_path / "people.csv", [f"091{n:07d},Người {n},79" for n in range(5)])
    campaign = loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
    steps = [
        ("campaign", "launch", campaign),  # small: approved by its launch
        ("campaign", "pause", campaign),
        ("campaign", "resume", campaign),
        ("campaign", "cancel", campaign),
        ("campaign", "report", campaign, "--failed", "-o", str(tmp_path / "failed.csv")),
        ("suppression", "add", "0912345678"),
        ("suppression", "remove", "0912345678"),
        ("inbound", "export", str(tmp_path / "inbound.csv")),
    ]
    for step in steps:
        run = loa(*step, "-c", config)
        assert run.returncode == 0, (step, run.stderr)
    trail = audit_trail(config)
    assert [(action, who, token) for action, who, token, _ in trail] == [
        (action, ME, "cli")
        for action in (
            "campaign.create", "campaign.approve", "campaign.launch", "campaign.pause",
            "campaign.resume", "campaign.cancel", "campaign.failed_report", "suppression.add",
            "suppression.remove", "inbound.export",
        )
    ]
    log = loa("audit", "--json", "-c", config).stdout
    assert "0912345678" not in log and "912345678" not in log, "counted, never named"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not"),
        (b"name,region\nA,79\n", "phone"),
    ],
    ids=["empty", "png", "no-phone-column"],
)
def test_unusable_audience_files_are_refused_clearly(config, plan, tmp_path, content, expected):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    run = loa("campaign", "validate", plan, "-a", bad, "-c", config)
    assert run.returncode == 2
    assert expected in run.stderr
    assert "Traceback" not in run.stderr


def test_ten_thousand_malformed_rows_are_reported_and_the_rest_go_through(
    config, plan, tmp_path
):
    rows = []
    for n in range(20_000):
        rows.append(f"09{n % 10}{n:07d},Người {n},79" if n % 2 else f"=cmd|' /C calc'!A{n},X,79")
    people = audience(tmp_path / "hostile.csv", rows)
    run = loa("campaign", "validate", plan, "-a", people, "-c", config, "--json")
    assert run.returncode == 0, run.stderr
    report = orjson.loads(run.stdout)
    assert (report["total"], report["invalid"], report["queued"]) == (20_000, 10_000, 10_000)
    assert report["errors"][0]["line"] == 2
    assert len(report["errors"]) == 100, "the first hundred, with their lines"


def test_wrong_plan_is_refused_before_anything_is_queued(config, tmp_path):
    wrong = tmp_path / "wrong.plan.toml"
    wrong.write_text('name = "x"\nlane = "urgent"\nchannels = ["sms"]\n'
                     '[templates]\nsms = "hi"\n', encoding="utf-8")
    people = audience(tmp_path / "p.csv", ["0912345678,A,79"])
    run = loa("campaign", "create", wrong, "-a", people, "-c", config)
    assert run.returncode == 2
    assert "lane" in run.stderr
    assert "Traceback" not in run.stderr


def test_template_field_missing_from_audience_is_a_dry_run_problem(config, tmp_path):
    needs = tmp_path / "needs.plan.toml"
    needs.write_text('name = "x"\nlane = "normal"\nchannels = ["sms"]\n'
                     '[templates]\nsms = "Hen {{ appointment_time }}"\n', encoding="utf-8")
    people = audience(tmp_path / "p.csv", ["0912345678,A,79"])
    run = loa("campaign", "validate", needs, "-a", people, "-c", config)
    assert run.returncode == 1
    assert "appointment_time" in run.stdout


def test_opt_outs_from_the_command_line_are_applied_at_planning(config, plan, tmp_path):
    people = audience(tmp_path / "p.csv", ["0912345678,A,79", "0987654321,B,79"])
    added = loa("suppression", "add", "+84 912 345 678", "-c", config)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "1 added"
    check = loa("suppression", "check", "0912345678", "0987654321", "-c", config)
    assert check.returncode == 1
    assert check.stdout.splitlines() == ["0912345678: opted out", "0987654321: not on the list"]
    report = orjson.loads(
        loa("campaign", "validate", plan, "-a", people, "-c", config, "--json").stdout
    )
    assert (report["queued"], report["suppressed"]) == (1, 1)
    bad = loa("suppression", "add", "12ab", "-c", config)
    assert (bad.returncode, "Traceback" in bad.stderr) == (0, False), "an id, not a number"
    junk = loa("suppression", "add", "0000", "-c", config)
    assert junk.returncode == 2
    assert "address 1: not a phone number" in junk.stderr


EXAMPLES = REPO / "examples"


def test_every_example_plan_validates_against_the_example_settings(redis_url, namespace, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text(
        "phone,name,region,district,zalo_id,fcm_token,due_date,child_name,vaccine,clinic,"
        "appointment.date,appointment.start,appointment.end,appointment.site_name,"
        "appointment.address,status\n"
        + "".join(
            f"09{n % 10}{n:07d},Người {n},{('79', '48', '01')[n % 3]},Quận {n},z{n},t{n},"
            f"{date.today() + timedelta(days=10 + n)},Bé {n},MMR,Trạm y tế,"
            f"{date.today() + timedelta(days=2 + n % 5)},08:00,08:30,Trạm y tế {n},"
            f"Số {n} Lê Lợi,placed\n"
            for n in range(30)
        ),
        encoding="utf-8",
    )
    plans = sorted(EXAMPLES.glob("*.plan.toml"))
    assert len(plans) >= 4
    env = {"LOA_REDIS_URL": redis_url, "LOA_NAMESPACE": namespace,
           "LOA_DATA_DIR": str(tmp_path / "data")}
    for plan in plans:
        run = loa("campaign", "validate", plan, "-a", people, "-c", EXAMPLES / "loa.toml",
                  "--json", env=env)
        assert run.returncode == 0, (plan.name, run.stdout, run.stderr)
        report = orjson.loads(run.stdout)
        assert report["queued"] > 0, plan.name
        assert report["warnings"] == [], (plan.name, report["warnings"])
        assert run.stderr == "", "nothing on stderr but what went wrong"


def test_a_plan_whose_time_is_over_is_refused_before_anything_is_queued(config, tmp_path):
    stale = tmp_path / "stale.plan.toml"
    stale.write_text('name = "x"\nlane = "normal"\nchannels = ["sms"]\n[templates]\nsms = "hi"\n'
                     "[schedule]\nexpires = 2026-07-18T21:00:00+07:00\n", encoding="utf-8")
    people = audience(tmp_path / "p.csv", ["0912345678,A,79"])
    dry = loa("campaign", "validate", stale, "-a", people, "-c", config)
    assert dry.returncode == 1
    assert "expires at 2026-07-18T21:00:00+07:00, which is past" in dry.stdout
    campaign = loa("campaign", "create", stale, "-a", people, "-c", config).stdout.strip()
    launched = loa("campaign", "launch", campaign, "-c", config)
    assert (launched.returncode, "which is past" in launched.stderr) == (2, True)
    status = orjson.loads(loa("campaign", "status", campaign, "-c", config, "--json").stdout)
    assert (status["state"], status["queued"]) == ("approved", 0)


def test_reminders_all_past_due_are_a_warning(config, tmp_path):
    plan = tmp_path / "remind.plan.toml"
    plan.write_text('name = "x"\nlane = "bulk"\nchannels = ["sms"]\n[templates]\nsms = "hi"\n'
                    '[schedule]\nsend_at = "due - 1d at 08:00"\n', encoding="utf-8")
    people = tmp_path / "p.csv"
    people.write_text("phone,due\n0912345678,2020-01-02\n0912345679,2020-01-03\n")
    dry = loa("campaign", "validate", plan, "-a", people, "-c", config)
    assert dry.returncode == 0, dry.stderr
    assert "warning: every send time is already past: all 2 go out at launch" in dry.stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_tables_never_cut_an_id_a_header_or_a_number(config, plan, redis_url, namespace,
                                                      tmp_path, columns):
    people = audience(tmp_path / "p.csv", [f"091{n:07d},Người {n},79" for n in range(5)])
    ids = [loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
           for _ in range(3)]
    asyncio.run(_replies(redis_url, namespace))
    wide = {"COLUMNS": str(columns)}
    listed = loa("campaign", "list", "-c", config, env=wide).stdout
    audit = loa("audit", "-c", config, env=wide).stdout
    audit_wide = loa("audit", "--wide", "-c", config, env=wide).stdout
    inbound_run = loa("inbound", "list", "-c", config, env=wide)
    status = loa("status", "-c", config, "--wide", env=wide).stdout
    stream_ids = [row["id"] for row in orjson.loads(
        loa("inbound", "list", "-c", config, "--json").stdout)]
    for text in (listed, audit, audit_wide, inbound_run.stdout, status):
        assert "…" not in text
        assert all(len(line) <= columns for line in text.splitlines()), text
    for campaign in ids:
        assert campaign in listed and campaign in audit and campaign in audit_wide
    assert len(stream_ids) == 2 and all(i in inbound_run.stdout for i in stream_ids)
    for header in ("at (UTC)", "action", "campaign", "outcome"):
        assert header in audit
    for header in ("route", "waiting", "in flight", "retrying", "redelivered", "throttled"):
        assert header in status


async def _replies(url: str, namespace: str) -> None:
    from loa.engine.events import EventWriter
    from loa.engine.metrics import Metrics
    from loa.message import Inbound
    from loa.settings import EventSettings

    client = connect(url)
    try:
        writer = EventWriter(client, namespace, EventSettings(), Metrics())
        await writer.store([], [
            Inbound("sms", "+84912345678", "Tôi bị sốt nhẹ sau tiêm, có sao không ạ?"),
            Inbound("sms", "+84987654321", "Cảm ơn Bộ Y tế " * 12),
        ])
    finally:
        await client.aclose()


def test_the_failed_report_for_spreadsheets_or_for_programs(config, plan, tmp_path):
    people = audience(tmp_path / "p.csv", ["0912345678,A,79"])
    campaign = loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
    excel, plain = tmp_path / "excel.csv", tmp_path / "plain.csv"
    assert loa("campaign", "report", campaign, "-o", excel, "-c", config).returncode == 0
    run = loa("campaign", "report", campaign, "-o", plain, "--format", "csv", "-c", config)
    assert run.returncode == 0, run.stderr
    assert excel.read_text().splitlines() == ["recipient,route,line,reason"]
    assert plain.read_text().splitlines() == ["recipient,route,line,reason"]


def test_watch_prints_lines_when_piped(config, plan, tmp_path):
    people = audience(tmp_path / "p.csv", ["0912345678,A,79"])
    campaign = loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
    assert loa("campaign", "cancel", campaign, "-c", config).returncode == 0
    watched = loa("campaign", "status", campaign, "--watch", "-c", config)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines() == [f"{campaign} cancelled 0/0"]


def test_a_launch_plans_in_one_process_per_core_by_default(
    config, plan, redis_url, namespace, tmp_path
):
    config.write_text(config.read_text(encoding="utf-8") + "[planning]\npartition_min_mb = 0\n",
                      encoding="utf-8")
    people = audience(tmp_path / "p.csv", [f"09{n}{n:07d},Người {n},79" for n in range(8)])
    campaign = loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
    launched = loa("campaign", "launch", campaign, "-c", config, "--json")
    assert launched.returncode == 0, launched.stderr
    assert orjson.loads(launched.stdout)["queued"] == 8
    cores = min(os.cpu_count() or 1, 256)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        fields = client.hgetall(f"{namespace}:{{camp:{campaign}}}")
    assert fields["partitions"] == str(cores)
    if cores > 1:
        assert all(fields[f"planned:{k}/{cores}"] == "1" for k in range(cores))
    details = [row for row in audit_trail(config) if row[0] == "campaign.plan"]
    assert len(details) == (cores if cores > 1 else 0), "one planning process per core"


def test_a_plan_that_cannot_be_partitioned_launches_in_one_process(config, tmp_path):
    config.write_text(config.read_text(encoding="utf-8") + "[planning]\npartition_min_mb = 0\n",
                      encoding="utf-8")
    plan = tmp_path / "remind.plan.toml"
    plan.write_text('name = "x"\nlane = "bulk"\nchannels = ["sms"]\n[templates]\nsms = "hi"\n'
                    '[schedule]\nsend_at = "due - 1d at 08:00"\n', encoding="utf-8")
    people = tmp_path / "p.csv"
    people.write_text("phone,due\n0912345678,2020-01-02\n0912345679,2020-01-03\n")
    campaign = loa("campaign", "create", plan, "-a", people, "-c", config).stdout.strip()
    forced = loa("campaign", "launch", campaign, "-c", config, "--partitions", "2")
    assert forced.returncode == 2
    assert "cannot plan campaign" in forced.stderr and "in 2 partitions" in forced.stderr
    assert len(forced.stderr.strip().splitlines()) == 1, forced.stderr
    launched = loa("campaign", "launch", campaign, "-c", config, "--json")
    assert launched.returncode == 0, launched.stderr
    assert orjson.loads(launched.stdout)["queued"] == 2
