"""What SREs see: /metrics across worker processes, and logs without phone numbers."""

from __future__ import annotations

import io
import logging
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import enqueue, messages, status, wait_for
from loa.campaigns.controls import campaign_controls
from loa.engine.embedded import free_port
from loa.engine.supervisor import Supervisor
from loa.log import JsonFormatter, mask, mask_address


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_of_all_processes_on_one_endpoint(make_settings):
    port = free_port()
    settings = make_settings(
        worker={"metrics_port": port},
        routes={
            "sms": {
                "adapter": "null",
                "rate": 1500,
                "chunk": 20,
                "options": {"fail_ratio": 0.1, "seed": 7},
            },
            "idle": {"adapter": "null"},
        },
    )
    enqueue(settings, "sms", messages(3000))
    supervisor = Supervisor(settings, processes=2, controls=campaign_controls)
    supervisor.start()
    try:
        during = _scrape(port)
        wait_for(lambda: status(settings, "sms").finished >= 3000, 60, "every message")
        after = _scrape(port)
    finally:
        supervisor.stop()
    final = status(settings, "sms")
    key = ("loa_messages_total", (("lane", "normal"), ("outcome", "accepted"), ("route", "sms")))
    assert after[key] == final.accepted, "the sum over both processes"
    failed = ("loa_messages_total", (("lane", "normal"), ("outcome", "failed"), ("route", "sms")))
    assert after[failed] == final.failed > 0
    assert after[("loa_dead_letters_total", (("route", "sms"),))] == final.failed
    assert after[("loa_send_seconds_count", (("route", "sms"),))] >= 3000 / 20
    assert after[("loa_ratelimit_wait_seconds_total", (("route", "sms"),))] > 0
    depth = ("loa_queue_batches", (("lane", "normal"), ("route", "sms")))
    assert during[depth] > 0, "the backlog is visible while it drains"
    assert after[depth] == 0
    assert after[("loa_queue_batches", (("lane", "bulk"), ("route", "idle")))] == 0
    labels = {value for (_, pairs) in after for _, value in pairs}
    assert not any(value.startswith("+84") or value.startswith("m-") for value in labels)


def test_logs_never_show_a_phone_number():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("loa.test.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "send to +84 912 345 678 failed; retry 0912345678 and 84912345678",
            extra={"to": "+84912345678", "email": "nguyen.van.a@example.vn"},
        )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    entry = orjson.loads(line)
    for digits in ("912345678", "912 345", "0912345678", "84912345678"):
        assert digits not in line
    assert entry["msg"].count("***678") == 3
    assert entry["to"] == "***678"
    assert entry["email"] == "n***@example.vn"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+84912345678", "***678"),
        ("call 0912.345.678 now", "call ***678 now"),
        ("batch 42 of 300", "batch 42 of 300"),  # short numbers are not phone numbers
    ],
)
def test_mask(text, expected):
    assert mask(text) == expected


def test_logs_mask_addresses_and_leave_other_numbers_readable():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("loa.test.readable")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "campaign 20261204-0a1b2c from 10.20.30.40 at 1733300000123: 12345678 rows",
            extra={"campaign": "20261204-0a1b2c", "to": "12025550123", "batch": "1733300000123"},
        )
    finally:
        logger.removeHandler(handler)
    entry = orjson.loads(stream.getvalue())
    assert (
        entry["msg"] == "campaign 20261204-0a1b2c from 10.20.30.40 at 1733300000123: 12345678 rows"
    )
    assert entry["campaign"] == "20261204-0a1b2c" and entry["batch"] == "1733300000123"
    assert entry["to"] == "***123", "an address field is masked whatever it holds"


def test_mask_address():
    assert mask_address("+84912345678") == "***678"
    assert mask_address("ab") == "***"
    assert mask_address("a.person@example.vn") == "a***@example.vn"
