"""`loa campaign ...` as an operator runs it, in a subprocess, against the local Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from loa.campaigns.service import STATUS_KEYS


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def config(redis_url: str, namespace: str, tmp_path: Path) -> Path:
    path = tmp_path / "loa.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\n'
        "[worker]\nmetrics_port = 0\n"
        f'[routes.sms]\nadapter = "file"\noptions = {{ path = "{tmp_path}/sink.jsonl" }}\n'
        '[channels.sms]\ndefault = "sms"\n',
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


def loa(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    return subprocess.run(
        [sys.executable, "-m", "loa.cli", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def audience(path: Path, rows: list[str]) -> Path:
    path.write_text("phone,name,region\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_validate_create_approve_launch_status(config, plan, tmp_path):
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
    assert "must be approved first" in refused.stderr
    assert loa("campaign", "approve", campaign, "-c", config).returncode == 0
    assert loa("campaign", "launch", campaign, "-c", config).returncode == 0
    status = loa("campaign", "status", campaign, "-c", config, "--json")
    assert status.returncode == 0, status.stderr
    data = orjson.loads(status.stdout)
    assert set(STATUS_KEYS) <= set(data)
    assert (data["state"], data["total"], data["queued"], data["invalid"]) == (
        "running", 41, 40, 1)
    listed = orjson.loads(loa("campaign", "list", "-c", config, "--json").stdout)
    assert [row["id"] for row in listed] == [campaign]


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
