"""The columnar planner in processes of its own: killed with SIGKILL mid-file and started again,
and split into partitions planned by processes in separate working directories."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis

from helpers import approved, wait_for
from loa.campaigns.controls import Controls
from loa.campaigns.service import Campaigns
from loa.engine.connection import connect
from loa.engine.keys import campaign_key, shard_keys, suppression_key
from loa.message import Message
from loa.settings import Settings

PLAN = 'name = "n"\nlane = "normal"\nchannels = ["sms"]\n[templates]\nsms = "tiem vac-xin"\n'
# the planner with a checkpoint every 1,000 rows, run as `python -m loa.cli ...` would be
RUNNER = (
    "import sys; import loa.campaigns.planner as p; p.CHECKPOINT_ROWS = 1000; "
    "from loa.cli import main; sys.argv[0] = 'loa'; main()"
)


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


def people(path: Path, rows: int) -> Path:
    """Numbers in three spellings, every 25th row a duplicate, every 100th invalid."""
    lines = ["phone,name"]
    for n in range(rows):
        number = f"9{(n * 7919) % 100_000_000:08d}"
        if n % 25 == 24:
            number = f"9{((n - 11) * 7919) % 100_000_000:08d}"
        cell = ["0{}", "84{}", "+84 {}"][n % 3].format(number)
        lines.append(f"{'12ab' if n % 100 == 50 else cell},An")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def toml(settings: Settings) -> str:
    import tomli_w

    return tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True))


def queued(settings: Settings, campaign: str) -> list[tuple[str, str]]:
    """(message id, number) of every queued message of `campaign`."""
    found = []
    with redis.Redis.from_url(settings.redis_url or "") as client:
        for route, limits in settings.routes.items():
            for keys in shard_keys(settings.namespace, route, limits.shards):
                for stream in keys.streams():
                    for _, fields in client.xrange(stream):
                        envelope = msgpack.unpackb(fields[b"b"])
                        if envelope[2] == campaign:
                            found += [(row[0], row[1]) for row in envelope[-1]]
    return found


def loa(config: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    command = [sys.executable, "-c", RUNNER, *args, "--config", str(config)]
    return subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE)


def finished(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, str]:
    """Wait for `proc`: its exit code and what it said on stderr (its pipe closed)."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode(errors="replace") if err else ""


async def _created(settings: Settings, plan: Path, audience: Path, start: int = 0) -> str:
    client = connect(settings.redis_url or "")
    try:
        campaigns = Campaigns(settings, client)
        campaign = await approved(campaigns, plan, audience)
        if start:
            await campaigns.start(campaign.id, start)
        return campaign.id
    finally:
        await client.aclose()


def everyone_queued_once(settings: Settings, campaign: str) -> dict[str, str]:
    """The 20,000-row audience of `people` queued whole, nobody twice; the campaign's fields."""
    after = queued(settings, campaign)
    ids = [message_id for message_id, _ in after]
    numbers = [number for _, number in after]
    assert len(ids) == len(set(ids)) == len(set(numbers)), "nobody queued twice"
    fields = _fields(settings, campaign)
    assert (int(fields["total"]), int(fields["invalid"])) == (20_000, 200)
    assert int(fields["queued"]) == len(after) == 20_000 - 200 - int(fields["duplicate"])
    return fields


def _fields(settings: Settings, campaign: str) -> dict[str, str]:
    with redis.Redis.from_url(settings.redis_url or "", decode_responses=True) as client:
        return client.hgetall(campaign_key(settings.namespace, campaign))  # type: ignore[return-value]


def _settings(make_settings: Any, tmp_path: Path, depth: int) -> Settings:
    return make_settings(
        routes={"sms": {"adapter": "null", "shards": 2}, "sms-v": {"adapter": "null"}},
        channels={"sms": {"default": "sms", "carriers": {"viettel": "sms-v"}}},
        queue={"batch_size": 50, "max_depth": depth},
        data_dir=str(tmp_path / "data"),
    )


PlannedBothWays = Callable[[Settings, str, str], None]


@pytest.fixture
def planned_both_ways(tmp_path: Path) -> PlannedBothWays:
    """Plan campaign `split` as two partitions, each in a process of its own in a separate
    working directory (two machines), while one process launches `whole` in one partition;
    every process must exit 0."""

    def run(settings: Settings, whole: str, split: str) -> None:
        machines = []
        for k in range(2):
            home = tmp_path / f"machine-{k}"
            home.mkdir()
            config = home / "loa.toml"
            config.write_text(toml(settings))
            plan = ("campaign", "plan", split, "--partition", f"{k}/2")
            machines.append(loa(config, *plan, cwd=home))
        config = tmp_path / "loa.toml"
        config.write_text(toml(settings))
        one = loa(config, "campaign", "launch", whole, "--partitions", "1")
        for proc in [*machines, one]:
            code, err = finished(proc)
            assert code == 0, err

    return run


def test_a_planner_killed_mid_file_queues_nobody_twice_and_loses_nobody(make_settings, tmp_path):
    settings = _settings(make_settings, tmp_path, depth=40)  # the queues fill: planning waits
    config = tmp_path / "loa.toml"
    config.write_text(toml(settings))
    plan = tmp_path / "p.toml"
    plan.write_text(PLAN)
    campaign = asyncio.run(_created(settings, plan, people(tmp_path / "a.csv", 20_000)))
    key = campaign_key(settings.namespace, campaign)
    with redis.Redis.from_url(settings.redis_url or "") as client:
        assert client.exists(key), "the campaign hash is where the test looks"
    proc = loa(config, "campaign", "launch", campaign, "--partitions", "1")
    try:
        wait_for(lambda: "checkpoint" in _fields(settings, campaign), 60, "a checkpoint")
        wait_for(lambda: len(queued(settings, campaign)) >= 2000, 60, "the queues to fill")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        finished(proc, 30)
    before = queued(settings, campaign)
    assert 2000 <= len(before) < 18_000, "killed mid-file"
    roomy = _settings(make_settings, tmp_path, depth=1_000_000)
    config.write_text(toml(roomy))
    code, err = finished(loa(config, "campaign", "launch", campaign, "--partitions", "1"))
    assert code == 0, err
    fields = everyone_queued_once(settings, campaign)
    assert int(fields["duplicate"]) > 700 and fields["planned"] == "1"


def test_two_partitions_in_two_places_queue_what_one_planner_queues(
    make_settings, tmp_path, planned_both_ways
):
    settings = _settings(make_settings, tmp_path, depth=1_000_000)
    plan = tmp_path / "p.toml"
    plan.write_text(PLAN)
    audience = people(tmp_path / "a.csv", 6000)
    with redis.Redis.from_url(settings.redis_url or "") as client:
        client.sadd(suppression_key(settings.namespace), "+84900007919", "+84900015838")
    whole = asyncio.run(_created(settings, plan, audience))
    split = asyncio.run(_created(settings, plan, audience, start=2))
    planned_both_ways(settings, whole, split)
    by_one, by_two = queued(settings, whole), queued(settings, split)
    assert sorted(by_two) == sorted(by_one) and len(by_one) > 5000
    one_fields, two_fields = _fields(settings, whole), _fields(settings, split)
    for counter in ("total", "queued", "invalid", "duplicate", "suppressed"):
        assert two_fields[counter] == one_fields[counter], counter
    assert int(two_fields["suppressed"]) == 2 and two_fields["planned"] == "1"
    partial = [int(orjson_report(two_fields, k)["queued"]) for k in range(2)]
    assert sum(partial) == len(by_two) and min(partial) > 1000, "both partitions planned"


def orjson_report(fields: dict[str, str], k: int) -> dict[str, Any]:
    import orjson

    return orjson.loads(fields[f"checkpoint:{k}/2"])["report"]  # type: ignore[no-any-return]


CAPPED = PLAN + '[limits]\nfrequency_cap = "7d"\n'


async def _sent(settings: Settings, campaign: str) -> list[str]:
    """Launch `campaign` and have every message it queued accepted, as workers do: the
    frequency memory then holds each of its people."""
    client = connect(settings.redis_url or "")
    try:
        await Campaigns(settings, client).launch(campaign)
        messages = [Message(i, to, "tiem vac-xin") for i, to in queued(settings, campaign)]
        control = Controls(client, settings.namespace, memory=settings.planning.frequency_memory)
        await control.reached(campaign, messages, range(len(messages)))
        return [m.to for m in messages]
    finally:
        await client.aclose()


def test_the_frequency_cap_and_opt_outs_hold_across_partition_processes(
    make_settings, tmp_path, planned_both_ways
):
    settings = _settings(make_settings, tmp_path, depth=1_000_000)
    everyone = people(tmp_path / "a.csv", 6000)
    earlier = tmp_path / "earlier.csv"
    earlier.write_text("".join(everyone.read_text().splitlines(True)[:1501]))  # 1,500 rows
    first_plan, capped_plan = tmp_path / "first.toml", tmp_path / "capped.toml"
    first_plan.write_text(PLAN)
    capped_plan.write_text(CAPPED)
    reached = asyncio.run(_sent(settings, asyncio.run(_created(settings, first_plan, earlier))))
    later = f"+849{3000 * 7919 % 100_000_000:08d}"  # row 3,000: never reached
    assert later not in reached
    opted = [later, reached[5], reached[-3]]
    with redis.Redis.from_url(settings.redis_url or "") as client:
        client.sadd(suppression_key(settings.namespace), *opted)
    whole = asyncio.run(_created(settings, capped_plan, everyone))
    split = asyncio.run(_created(settings, capped_plan, everyone, start=2))
    planned_both_ways(settings, whole, split)
    by_one, by_two = queued(settings, whole), queued(settings, split)
    assert sorted(by_two) == sorted(by_one)
    numbers = {number for _, number in by_two}
    assert not numbers & set(reached) and not numbers & set(opted), "capped, opted out"
    fields = _fields(settings, split)
    assert int(fields["capped"]) == len(set(reached)) - 2 > 1000, "the reached, bar 2 opted out"
    assert int(fields["suppressed"]) == 3
    for counter in ("total", "queued", "invalid", "duplicate", "suppressed", "capped"):
        assert fields[counter] == _fields(settings, whole)[counter], counter
    capped = [int(orjson_report(fields, k)["capped"]) for k in range(2)]
    assert min(capped) > 300, "each partition process capped its share"


# a server's launch, as the API makes it: partitions planned in processes it spawns
SERVER = """
import sys
from pathlib import Path

import uvloop

from loa.campaigns.service import Campaigns
from loa.engine.connection import connect
from loa.settings import Settings


async def main() -> None:
    settings = Settings.load(Path(sys.argv[1]))
    client = connect(settings.redis_url or "")
    await Campaigns(settings, client).launch_in_processes(sys.argv[2], 2)


if __name__ == "__main__":  # the spawned partitions import this file again
    uvloop.run(main())
"""


def _partition_processes(parent: int) -> list[Any]:
    import psutil

    return [
        child
        for child in psutil.Process(parent).children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())
    ]


def test_partition_processes_stop_when_the_server_is_killed_and_a_launch_resumes(
    make_settings, tmp_path
):
    import psutil

    settings = _settings(make_settings, tmp_path, depth=40)  # the queues fill: planning waits
    config, server = tmp_path / "loa.toml", tmp_path / "server.py"
    config.write_text(toml(settings))
    server.write_text(SERVER)
    plan = tmp_path / "p.toml"
    plan.write_text(PLAN)
    campaign = asyncio.run(_created(settings, plan, people(tmp_path / "a.csv", 20_000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    proc = subprocess.Popen([sys.executable, str(server), str(config), campaign], env=env)
    try:
        wait_for(lambda: len(_partition_processes(proc.pid)) == 2, 60, "two partition processes")
        children = _partition_processes(proc.pid)
        wait_for(lambda: len(queued(settings, campaign)) >= 2000, 60, "the queues to fill")
        proc.send_signal(signal.SIGKILL)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [] and len(gone) == 2, "partitions outlived the server that started them"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    before = queued(settings, campaign)
    assert 2000 <= len(before) < 18_000, "killed mid-file"
    config.write_text(toml(_settings(make_settings, tmp_path, depth=1_000_000)))
    again = subprocess.run(
        [sys.executable, str(server), str(config), campaign], env=env, timeout=120
    )
    assert again.returncode == 0
    everyone_queued_once(settings, campaign)
