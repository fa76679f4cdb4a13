"""Worker processes under the supervisor: kill -9, shared rate limits, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import psutil
import pytest
import redis

from helpers import approved, enqueue, id_counts, messages, read_sink, status, wait_for
from loa.campaigns.clock import CampaignClock
from loa.campaigns.controls import campaign_controls
from loa.campaigns.service import Campaigns
from loa.campaigns.store import CampaignStore
from loa.engine.connection import connect
from loa.engine.keys import shard_keys
from loa.engine.queue import GROUP
from loa.engine.supervisor import Supervisor
from loa.settings import Settings


@pytest.fixture
def redis_url(service_url: str) -> str:
    """These runs take seconds each: the local Redis service only."""
    return service_url


def file_route(sink: Path, **values: object) -> dict[str, object]:
    route: dict[str, object] = {
        "adapter": "file", "shards": 2, "chunk": 20, "concurrency": 4,
        "options": {"path": str(sink / "{route}-{pid}.jsonl")},
    }
    return {**route, **values}


def test_kill_9_loses_nothing_and_counts_duplicates(make_settings, tmp_path):
    sink = tmp_path / "sink"
    settings = make_settings(routes={"sms": file_route(sink, rate=3000, unit="messages")})
    total = 12_000
    enqueue(settings, "sms", messages(total))
    supervisor = Supervisor(settings, processes=2, controls=campaign_controls)
    supervisor.start()
    try:
        wait_for(lambda: status(settings, "sms").accepted >= 2000, 30, "sending under way")
        victim = supervisor.pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: status(settings, "sms").finished >= total, 90, "every message",
                 tick=supervisor.watch)
        assert victim not in supervisor.pids(), "the killed worker was replaced"
        assert len(supervisor.pids()) == 2
    finally:
        supervisor.stop()
    final = status(settings, "sms")
    counts = id_counts(read_sink(sink))
    assert set(counts) == {f"m-{n}" for n in range(total)}, "a message was lost"
    duplicates = sum(c - 1 for c in counts.values())
    print(f"duplicates {duplicates} redelivered {final.redelivered}")
    assert final.accepted == total, "each message is counted once, however often it was sent"
    assert duplicates <= final.redelivered, "every duplicate is counted"
    in_flight_window = 4 * 20 + 20  # senders x chunk, plus the claimer's chunk
    assert final.redelivered <= in_flight_window
    assert (final.waiting, final.in_flight, final.delayed) == (0, 0, 0)


def test_two_processes_share_the_route_rate(make_settings, tmp_path):
    sink = tmp_path / "sink"
    rate = 1000  # SMS parts per second, for the route as a whole
    settings = make_settings(routes={"sms": file_route(sink, rate=rate, chunk=10)})
    count = 5000  # 1.5 parts on average: 7,500 parts, 7.5 s at the configured rate
    enqueue(settings, "sms", messages(count, parts=lambda n: 1 + n % 2))
    supervisor = Supervisor(settings, processes=2, controls=campaign_controls)
    supervisor.start()
    try:
        wait_for(lambda: status(settings, "sms").finished >= count, 60, "every message")
    finally:
        supervisor.stop()
    lines = read_sink(sink)
    assert len({path.name for path in sink.glob("*.jsonl")}) == 2, "both processes sent"
    stamps = sorted((line["ts"], line["parts"]) for line in lines)
    start, end = stamps[0][0] + 1.0, stamps[-1][0] - 0.5  # skip the first burst and the tail
    assert end - start >= 5.0, "measured over at least 5 seconds"
    parts = sum(p for ts, p in stamps if start <= ts < end)
    measured = parts / (end - start)
    print(f"measured {measured:.1f} parts/s over {end - start:.1f}s")
    assert abs(measured - rate) / rate <= 0.05, f"measured {measured:.0f} parts/s for {rate}"


def test_sigterm_drains_in_flight_and_keeps_the_rest(make_settings, tmp_path):
    sink = tmp_path / "sink"
    settings = make_settings(
        routes={"sms": file_route(sink, rate=400, unit="messages", chunk=50, concurrency=2)}
    )
    total = 6000  # 15 s of work: most of it is still queued when the signal comes
    enqueue(settings, "sms", messages(total))
    config = tmp_path / "loa.toml"
    config.write_text(_toml(settings))
    env = {**os.environ, "LOA_LOG_LEVEL": "warning"}
    loa = [sys.executable, "-m", "loa.cli", "worker", "--config", str(config), "-p", "2"]
    with subprocess.Popen(loa, env=env, stderr=subprocess.PIPE) as proc:
        try:
            wait_for(lambda: status(settings, "sms").accepted >= 500, 30, "sending under way")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, stderr
    final = status(settings, "sms")
    sent = id_counts(read_sink(sink))
    assert final.in_flight == 0, "every batch in flight was acknowledged"
    assert final.accepted == sum(sent.values()) == len(sent), "counted exactly what was sent"
    queued = _queued_ids(settings, "sms")
    assert not set(queued) & set(sent), "nothing both sent and still queued"
    assert len(queued) + len(sent) == total, "nothing lost"
    assert final.accepted < total / 2, "the drain stopped taking new batches"


def _queued_ids(settings: Settings, route: str) -> list[str]:
    ids = []
    with redis.Redis.from_url(settings.redis_url or "") as client:
        for keys in shard_keys(settings.namespace, route, settings.route(route).shards):
            for stream in keys.streams():
                assert not client.xpending(stream, GROUP)["pending"]
                for _, fields in client.xrange(stream):
                    envelope = msgpack.unpackb(fields[b"b"])
                    ids += [row[0] for row in envelope[-1]]
    return ids


def _toml(settings: Settings) -> str:
    """The settings as a TOML file, the way an operator writes one."""
    import tomli_w

    data = settings.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)


def test_workers_restart_after_crash_and_stop_cleanly(make_settings, tmp_path):
    settings = make_settings(routes={"sms": file_route(tmp_path / "sink")})
    supervisor = Supervisor(settings, processes=1, controls=campaign_controls)
    supervisor.start()
    try:
        first = supervisor.pids()
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: bool(supervisor.pids()) and supervisor.pids() != first, 20,
                 "a replacement worker", tick=supervisor.watch)
    finally:
        killed = supervisor.stop()
    assert killed == 0, "the replacement drained on SIGTERM"


def test_the_supervisor_ends_a_campaign_nobody_reads(make_settings, tmp_path):
    sink = tmp_path / "sink"
    settings = make_settings(
        routes={"sms": file_route(sink)}, channels={"sms": {"default": "sms"}}
    )
    plan = tmp_path / "p.toml"
    plan.write_text(
        'name = "n"\nlane = "normal"\nchannels = ["sms"]\n[templates]\nsms = "tiem vac-xin"\n'
    )
    people = tmp_path / "a.csv"
    people.write_text("phone\n" + "".join(f"091{n:07d}\n" for n in range(300)))
    campaign_id = asyncio.run(_launch(settings, plan, people))
    supervisor = Supervisor(
        settings,
        processes=1,
        chores=[CampaignClock(settings).tick],
        controls=campaign_controls,
    )
    supervisor.start()
    try:
        wait_for(lambda: asyncio.run(_stored_state(settings, campaign_id)) == "done", 30,
                 "the campaign to end", tick=supervisor.watch)
    finally:
        supervisor.stop()
    assert len(read_sink(sink)) == 300


async def _launch(settings: Settings, plan: Path, people: Path) -> str:
    client = connect(settings.redis_url or "")
    try:
        campaigns = Campaigns(settings, client)
        campaign = await approved(campaigns, plan, people)
        await campaigns.launch(campaign.id)
        return campaign.id
    finally:
        await client.aclose()


async def _stored_state(settings: Settings, campaign_id: str) -> str:
    client = connect(settings.redis_url or "")
    try:
        return str((await CampaignStore(client, settings.namespace).get(campaign_id)).state)
    finally:
        await client.aclose()
def test_workers_exit_when_their_supervisor_is_killed(redis_url, namespace, tmp_path):
    config = tmp_path / "loa.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\ndata_dir = "{tmp_path / "data"}"\n'
        "[worker]\nmetrics_port = 0\n"
        f'[routes.sms]\nadapter = "file"\noptions = {{ path = "{tmp_path / "sink.jsonl"}" }}\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "loa.cli", "worker", "-c", str(config), "--processes", "2"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    workers: list[psutil.Process] = []
    try:
        parent = psutil.Process(supervisor.pid)

        def started() -> bool:
            workers[:] = [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]
            return len(workers) == 2

        wait_for(started, 60, "two worker processes")
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(10)
        wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE
                                 for w in workers), 60, "the orphaned workers to exit")
    finally:  # only what this test started, by pid
        if supervisor.poll() is None:
            supervisor.kill()
        for process in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
