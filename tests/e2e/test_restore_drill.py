"""The restore drill: a campaign sends through the SMSC simulator, is backed up mid-way, its
machine dies and its data directory is destroyed; the backup is restored, the campaign finishes.

Every recipient is reached, and the duplicates are exactly what the backup's manifest lets the
operator compute: the messages sent before the incident that the snapshot had no record of.
Those are the ones in flight at the snapshot (the manifest counts them) plus those sent between
the snapshot and the incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis
from test_cli import env, loa_command, run_loa  # noqa: F401 - env is a fixture used here
from test_cluster import SERVER_BINARY

from helpers import wait_for
from loa.engine.embedded import free_port
from loa.sim.smsc import SmscSimulator

pytestmark = pytest.mark.skipif(SERVER_BINARY is None, reason="no Redis-protocol server binary")

T = TypeVar("T")
PEOPLE = 1500
RATE = 150  # messages per second: ten seconds of sending in all


class SimulatorThread:
    """The SMSC simulator on its own event loop in a thread, read safely from the test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim = SmscSimulator({"store": 100_000, "smsc_id": "DRILL"})

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(30)

    def received(self) -> Counter[str]:
        """Messages received per recipient (the last nine digits of the destination)."""

        async def read() -> Counter[str]:
            return Counter(message.destination[-9:] for message in self.sim.messages)

        return self.run(read())

    def total(self) -> int:
        return sum(self.received().values())

    def __enter__(self) -> SimulatorThread:
        self.thread.start()
        self.run(self.sim.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def loa_server(config: Path, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    """`loa server` in its own session; killed with everything it started if still running."""
    with (cwd / f"server-{time.monotonic_ns()}.log").open("wb") as log:
        process = subprocess.Popen(
            [*loa_command(), "server", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def settle(read: Any, quiet: float = 1.0, bound: float = 30.0) -> int:
    """The value of `read()` once it stopped changing for `quiet` seconds."""
    deadline = time.monotonic() + bound
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return int(last)
    raise AssertionError(f"still changing after {bound}s")


def finished(
    campaign: str, config: Path, env: dict[str, str], cwd: Path  # noqa: F811
) -> dict[str, Any]:
    """The campaign's status once the restored machine says it is done (every batch settled)."""
    status: dict[str, Any] = {}

    def done() -> bool:
        nonlocal status
        shown = run_loa("campaign", "status", campaign, "--json", "-c", str(config),
                        env=env, cwd=cwd)  # fmt: skip
        assert shown.code == 0, shown.err
        status = orjson.loads(shown.out)
        return bool(status["state"] == "done")

    wait_for(done, 120, "the restored campaign to finish")
    return status


def kill_machine(server: subprocess.Popen[bytes], data_dir: Path) -> None:
    """SIGKILL loa server, its workers and the embedded server it started: a machine lost."""
    url = (data_dir / "redis" / "url").read_text().strip()
    with contextlib.closing(redis.Redis.from_url(url)) as client:
        redis_pid = int(client.info("server")["process_id"])
    os.killpg(server.pid, signal.SIGKILL)
    os.kill(redis_pid, signal.SIGKILL)
    server.wait(30)


@pytest.mark.parametrize("incident", ["at-the-snapshot", "after-the-snapshot"])
def test_restore_drill_reaches_everyone_with_counted_duplicates(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    incident: str,
) -> None:
    """At the snapshot, the machine is frozen while it is backed up, then lost: duplicates stay
    within the manifest's in-flight count. After it, sending goes on while the backup runs: the
    duplicates are exactly the messages sent before the incident that the snapshot missed."""
    data_dir, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    for name in ("LOA_REDIS_URL", "LOA_DATA_DIR"):
        env.pop(name)
    numbers = [f"09{n % 10}{n:07d}" for n in range(PEOPLE)]
    audience = work / "audience.csv"
    audience.write_text("phone,name\n" + "".join(f"{p},Nguyen {p[-3:]}\n" for p in numbers))
    plan = work / "plan.toml"
    plan.write_text(
        'name = "restore drill"\nlane = "normal"\nchannels = ["sms"]\nsms_ascii = true\n'
        '[templates]\nsms = "Bo Y te: {{ name }} oi, tiem vac-xin"\n',
        encoding="utf-8",
    )
    with SimulatorThread() as sim:
        config = work / "loa.toml"
        config.write_text(_settings(data_dir, sim.sim.port), encoding="utf-8")

        with loa_server(config, env, work) as server:
            wait_for((data_dir / "redis" / "url").exists, 60, "the embedded server")
            created = run_loa("campaign", "create", str(plan), "-a", str(audience), "-c",
                              str(config), env=env, cwd=work)  # fmt: skip
            assert created.code == 0, created.err
            campaign = created.out.strip()
            launched = run_loa("campaign", "launch", campaign, "-c", str(config), env=env, cwd=work)
            assert launched.code == 0, launched.err
            wait_for(lambda: sim.total() >= PEOPLE // 3, 60, "a third sent")
            if incident == "at-the-snapshot":
                os.killpg(server.pid, signal.SIGSTOP)  # workers stop mid-batch, Redis serves on
                settle(sim.total)
            before = sim.total()
            made = run_loa("backup", "-c", str(config), "--to", str(tmp_path / "backups"),
                           "--json", env=env, cwd=work)  # fmt: skip
            after = sim.total()
            kill_machine(server, data_dir)
        assert made.code == 0, made.err
        at_kill = settle(sim.total)
        assert at_kill < PEOPLE, "the incident came before the campaign ended"

        shutil.rmtree(data_dir)  # the disk is lost; the backup is elsewhere
        archive = orjson.loads(made.out)["archive"]
        restored = run_loa("restore", archive, "-c", str(config), env=env, cwd=work)
        assert restored.code == 0, restored.err
        assert "in flight at the snapshot" in restored.out

        with loa_server(config, env, work) as server:
            wait_for(lambda: len(sim.received()) == PEOPLE, 120, "every recipient reached")
            # everyone reached is not the end: batches a dead worker held at the snapshot are
            # claimed only once idle, and what they send again must be counted too
            status = finished(campaign, config, env, work)
            total = settle(sim.total)
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        received = sim.received()

    counts = orjson.loads(made.out)["contents"]["campaigns"][campaign]
    recorded, in_flight = counts["recorded"], counts["in_flight"]
    duplicates = total - PEOPLE
    print(
        f"sent before the backup {before}, after it {after}, at the incident {at_kill}; "
        f"snapshot recorded {recorded}, in flight {in_flight}; duplicates {duplicates}; "
        f"after the restore: {status}"
    )
    assert set(received) == {number[-9:] for number in numbers}, "nobody missed, nobody else"
    assert min(received.values()) == 1
    assert before - in_flight <= recorded <= after, "the snapshot fell within the backup"
    assert duplicates == at_kill - recorded, "sent twice: exactly what the snapshot missed"
    if incident == "at-the-snapshot":
        assert duplicates <= in_flight, "within the in-flight window the manifest counted"
    assert max(received.values()) <= 2
    assert status["finished"] == PEOPLE


def _settings(data_dir: Path, sim_port: int) -> str:
    return f"""
data_dir = "{data_dir}"
namespace = "drill"

[worker]
processes = 1
metrics_port = 0
claim_idle = 10.0
drain_timeout = 5.0
idle_block = 0.1

[api]
port = {free_port()}
approval_threshold = 100000

[queue]
batch_size = 50

[planning]
frequency_memory = 0

[backup]
every = 0

[routes.sms]
adapter = "smpp"
unit = "messages"
rate = {RATE}
burst = 0.1
shards = 2
chunk = 10
concurrency = 2
timeout = 8.0
max_attempts = 3

[routes.sms.options]
host = "127.0.0.1"
port = {sim_port}
system_id = "loa"
password = "pw"
binds = 1
window = 16
source_addr = "BoYTe"
response_timeout = 6.0
reconnect_max = 1.0

[channels.sms]
default = "sms"
"""
