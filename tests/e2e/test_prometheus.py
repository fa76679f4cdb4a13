"""What SREs run, for real: promtool on deploy/, Prometheus scraping loa, worker logs to ship."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from test_deploy_files import (
    ALERTS,
    DEPLOY,
    PROMETHEUS,
    dashboard_queries,
    exported_series,
    with_grafana_values,
)

from helpers import enqueue, enqueue_async, messages, running, status_async, until, wait_for
from loa.adapters.registry import create_adapter
from loa.campaigns.controls import campaign_controls
from loa.engine.embedded import free_port
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.engine.supervisor import Supervisor
from loa.log import PHONE, JsonFormatter
from loa.message import Message, SendResult

RATE = 200  # messages per second on the test route: 6,000 messages last 30 s, past the checks
COUNT = 6000


@pytest.fixture
def redis_url(service_url: str) -> str:
    """These runs take seconds each: the local Redis service only."""
    return service_url


TOOLS = ("prometheus", "promtool")


def _binaries() -> tuple[Path, Path] | None:
    found = [shutil.which(name, path="/usr/bin") or shutil.which(name) for name in TOOLS]
    if all(found):
        return Path(str(found[0])), Path(str(found[1]))
    return None


@pytest.fixture(scope="session")
def prometheus_tools() -> tuple[Path, Path]:
    """Debian's prometheus and promtool, which `make tools` (run by `make test`) installs."""
    tools = _binaries()
    if tools is None:
        pytest.skip("prometheus is not installed: `make tools` installs it (apt, as root)")
    return tools


def _promtool(promtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(promtool), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_accepts_the_config_and_the_rules(prometheus_tools):
    _, promtool = prometheus_tools
    output = _promtool(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in output and "WARNING" not in output, output
    assert "SUCCESS" in _promtool(promtool, "check", "rules", "alerts.yml")


def test_alert_rules_fire_when_they_should(prometheus_tools):
    """deploy/alerts_test.yml feeds series to every alert and says which must fire, and when."""
    _, promtool = prometheus_tools
    assert "SUCCESS" in _promtool(promtool, "test", "rules", "alerts_test.yml")


def test_dashboard_queries_are_valid_promql(prometheus_tools, tmp_path):
    _, promtool = prometheus_tools
    # promtool parses recording rules offline: one per dashboard query, variables replaced
    rules = [
        {"record": f"dashboard:query_{n}", "expr": with_grafana_values(expr)}
        for n, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool(promtool, "check", "rules", str(path))


class PrometheusServer:
    """A Prometheus process of this test's own, on loopback, with its HTTP API."""

    def __init__(self, binary: Path, workdir: Path, targets: Sequence[str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        config = self._config(workdir, targets)
        command = [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def _config(workdir: Path, targets: Sequence[str]) -> Path:
        """deploy/prometheus.yml, scraping every second, targets through a file_sd file."""
        config = yaml.safe_load(PROMETHEUS.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config.pop("alerting", None)  # no Alertmanager here
        config["rule_files"] = [str(ALERTS)]
        (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "loa"]
        job["scrape_interval"] = job["scrape_timeout"] = "1s"
        del job["static_configs"]  # the many-machine way instead: a target file
        listing = workdir / "targets" / "loa.yml"
        listing.parent.mkdir(parents=True)
        listing.write_text(yaml.safe_dump([{"targets": list(targets)}]))
        job["file_sd_configs"] = [{"files": [str(listing.parent / "*.yml")]}]
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector."""
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The value of a one-element query, or None while it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=1
                ) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def prometheus(binary: Path, workdir: Path, targets: Sequence[str]) -> Iterator[PrometheusServer]:
    server = PrometheusServer(binary, workdir, targets)
    try:
        server.wait_ready(30)
        yield server
    finally:
        server.stop()


def _positive(server: PrometheusServer, expr: str) -> bool:
    value = server.value(expr)
    return value is not None and value > 0


def test_prometheus_sees_the_rate_of_sent_messages(prometheus_tools, make_settings, tmp_path):
    """deploy/prometheus.yml, scraping every second, sees two worker processes send."""
    binary, _ = prometheus_tools
    metrics_port = free_port()
    settings = make_settings(
        worker={"metrics_port": metrics_port},
        routes={
            "sms": {
                "adapter": "null",
                "rate": RATE,
                "unit": "messages",
                "chunk": 10,
                "concurrency": 2,
                "options": {"latency": 0.02},  # a send call takes time: latency to measure
            }
        },
    )
    enqueue(settings, "sms", messages(COUNT))
    started = time.monotonic()
    with prometheus(binary, tmp_path / "prometheus", [f"127.0.0.1:{metrics_port}"]) as server:
        supervisor = Supervisor(settings, processes=2, controls=campaign_controls)
        supervisor.start()
        try:
            wait_for(lambda: server.value('up{job="loa"}') == 1, 30, "the loa target up")
            sent = 'sum(rate(loa_messages_total{outcome="accepted"}[5s]))'
            wait_for(lambda: _positive(server, sent), 30, "a positive rate of sent messages")
            time.sleep(3)  # a few more scrapes: the rate is steady, not a blip
            rate = server.value(sent)
            print(f"prometheus measured {rate} sent messages/s for a limit of {RATE}/s")
            assert rate is not None and 0 < rate <= RATE * 2, "visible, and within the limit"
            assert supervisor.pids() and len(supervisor.pids()) == 2
            _check_one_target_for_all_processes(server)
            _check_rules_loaded(server)
            _check_dashboard_queries(server)
            _check_series_are_the_exported_ones(server)
        finally:
            supervisor.stop()
    print(f"prometheus test took {time.monotonic() - started:.1f}s")


def _check_one_target_for_all_processes(server: PrometheusServer) -> None:
    assert server.value('count(up{job="loa"})') == 1, "one target per machine"
    accepted = server.query('loa_messages_total{outcome="accepted"}')
    assert len(accepted) == 1, "the two processes' counters arrive summed, as one series"
    assert set(accepted[0]["metric"]) == {"__name__", "job", "instance", "route", "lane", "outcome"}


def _check_rules_loaded(server: PrometheusServer) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    wanted = {group["name"]: len(group["rules"]) for group in rules["groups"]}

    def evaluated() -> bool:
        groups = server.get("/api/v1/rules")["groups"]
        loaded = {group["name"]: group["rules"] for group in groups}
        assert set(loaded) == set(wanted), loaded.keys()
        assert {name: len(loaded[name]) for name in wanted} == wanted
        health = [rule.get("health") for group in loaded.values() for rule in group]
        bad = [rule for group in loaded.values() for rule in group if rule["health"] == "err"]
        assert not bad, bad
        return all(state == "ok" for state in health)

    wait_for(evaluated, 15, "every alert rule evaluated without error")


def _check_dashboard_queries(server: PrometheusServer) -> None:
    """Every dashboard query runs; those about sending return data while loa sends."""
    empty = {
        title for title, expr in dashboard_queries() if not server.query(with_grafana_values(expr))
    }
    for title in (
        "Sent per second",
        "Messages per second by outcome",
        "Queue depth",
        "Oldest batch age",
        "Send latency p50 / p99",
        "Rate factor",
        "Batches settled per second",
        "Worker machines up",
    ):
        assert title not in empty, f"panel {title!r} shows nothing while loa sends"


def _check_series_are_the_exported_ones(server: PrometheusServer) -> None:
    """What a worker really exports is what test_deploy_files derives from the code."""
    names = set(server.get("/api/v1/label/__name__/values"))
    loa = {name for name in names if name.startswith("loa_")}
    assert {"loa_messages_total", "loa_send_seconds_bucket", "loa_queue_batches"} <= loa
    assert loa <= set(exported_series()), loa - set(exported_series())


class _Unreachable:
    """A provider whose every call fails, naming the recipient's number in its error."""

    async def send(self, batch: Sequence[Message]) -> Sequence[SendResult]:
        raise ConnectionError(f"no route to {batch[0].to} (from {batch[-1].to})")

    async def ping(self) -> None:
        """Never reachable, but the worker does not ask."""

    async def aclose(self) -> None:
        """Nothing to release."""


@contextlib.contextmanager
def _loa_logs() -> Iterator[io.StringIO]:
    """loa's log records, formatted the way workers write them, for the block's duration."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("loa")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.anyio
async def test_worker_logs_carry_route_and_campaign_and_no_number(
    make_settings, redis_client, monkeypatch
):
    """Route-level lines say which route (and campaign); a phone number in an error is masked."""

    def adapters(route: str, adapter: str, options: dict[str, Any]) -> Any:
        return _Unreachable() if route == "down" else create_adapter(route, adapter, options)

    monkeypatch.setattr("loa.engine.worker.create_adapter", adapters)
    settings = make_settings(
        worker={"max_deliveries": 3},
        routes={
            "down": {"adapter": "null", "chunk": 10, "max_attempts": 1},
            "sms": {"adapter": "null", "shards": 1},
        },
    )
    await enqueue_async(settings, "down", messages(20, "d"), campaign="c-down")
    # a batch three workers took in turn and died on: the poison path
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await enqueue_async(settings, "sms", messages(5, "p"), campaign="c-poison")
    taken = await queues.take(keys, "ghost-0")
    assert taken is not None
    for ghost in ("ghost-1", "ghost-2"):
        await redis_client.xclaim(taken.stream, "workers", ghost, 0, [taken.entry_id])

    async def settled() -> bool:
        down = await status_async(settings, "down")
        sms = await status_async(settings, "sms")
        return down.dead == 20 and sms.dead == 5

    with _loa_logs() as stream:
        async with running(settings, redis_client):
            await until(settled, 30, "both routes' batches in dead letters")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    numbers = [m.to for m in messages(20, "d") + messages(5, "p")]
    for line in lines:
        text = json.dumps({k: v for k, v in line.items() if k != "ts"})
        assert not PHONE.search(text), f"a phone number in {text}"  # stream ids stay readable
        assert not any(number[3:] in text for number in numbers), text
        if line["logger"] == "loa.engine.route":
            assert line.get("route") in {"down", "sms"}, f"no route context: {line}"
    raised = [line for line in lines if line["msg"].startswith("adapter raised")]
    assert raised and all(line["route"] == "down" for line in raised)
    assert all("no route to ***" in line["exc"] for line in raised), "masked, not dropped"
    (poison,) = [line for line in lines if line["msg"].startswith("poison batch")]
    assert (poison["route"], poison["campaign"]) == ("sms", "c-poison")
