"""Many machines, as processes: two worker machines and a planner machine, each with its own
data directory and settings file, share one three-node Redis Cluster; one campaign goes out
through the SMSC simulator, and every count agrees with what the carrier received."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_cli import env, loa_command, run_loa  # noqa: F401 - env is a fixture used here
from test_cluster import SERVER_BINARY, Cluster, cluster  # noqa: F401 - cluster is a fixture
from test_restore_drill import SimulatorThread

from helpers import wait_for
from loa.engine.embedded import free_port

pytestmark = pytest.mark.skipif(SERVER_BINARY is None, reason="no Redis-protocol server binary")

PEOPLE = 1200


def machine_settings(
    home: Path, cluster_url: str, namespace: str, sim_port: int, metrics_port: int
) -> Path:
    """One machine's settings file: its own data directory and metrics port, the shared rest."""
    home.mkdir()
    config = home / "loa.toml"
    config.write_text(
        f'redis_url = "{cluster_url}"\n'
        f'data_dir = "{home / "data"}"\n'
        f'namespace = "{namespace}"\n'
        f"[worker]\nprocesses = 1\nmetrics_port = {metrics_port}\nclaim_idle = 10.0\n"
        "drain_timeout = 5.0\nidle_block = 0.1\n"
        "[api]\napproval_threshold = 100000\n"
        "[queue]\nbatch_size = 40\n"
        "[planning]\nfrequency_memory = 0\n"
        '[routes.sms]\nadapter = "smpp"\nunit = "messages"\nrate = 400\nshards = 6\n'
        "chunk = 10\nconcurrency = 2\ntimeout = 8.0\n"
        f'[routes.sms.options]\nhost = "127.0.0.1"\nport = {sim_port}\nsystem_id = "loa"\n'
        'password = "pw"\nbinds = 1\nwindow = 16\nsource_addr = "BoYTe"\n'
        "response_timeout = 6.0\n"
        '[channels.sms]\ndefault = "sms"\n',
        encoding="utf-8",
    )
    return config


@contextlib.contextmanager
def worker_machine(config: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    """`loa worker` with this machine's settings, in its own session, stopped with SIGTERM."""
    with (config.parent / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [*loa_command(), "worker", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=config.parent,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def accepted(metrics_port: int) -> float:
    """Messages this machine's workers had accepted by the carrier, from its /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "loa_messages_total" and sample.labels.get("outcome") == "accepted"
    )


def test_two_worker_machines_and_a_planner_share_one_campaign(
    tmp_path: Path,
    cluster: Cluster,  # noqa: F811
    env: dict[str, str],  # noqa: F811
) -> None:
    for name in ("LOA_REDIS_URL", "LOA_DATA_DIR"):
        env.pop(name)
    namespace = f"mm{uuid.uuid4().hex[:8]}"
    numbers = [f"09{n % 10}{n:07d}" for n in range(PEOPLE)]
    with SimulatorThread() as sim:
        ports = {name: free_port() for name in ("m1", "m2", "planner")}
        configs = {
            name: machine_settings(tmp_path / name, cluster.url, namespace, sim.sim.port, port)
            for name, port in ports.items()
        }
        audience = tmp_path / "audience.csv"
        audience.write_text("phone,name\n" + "".join(f"{p},Nguyen {p[-3:]}\n" for p in numbers))
        plan = tmp_path / "plan.toml"
        plan.write_text(
            'name = "two machines"\nlane = "normal"\nchannels = ["sms"]\n'
            '[templates]\nsms = "Bo Y te: {{ name }} oi, tiem vac-xin"\n',
            encoding="utf-8",
        )
        planner = ["-c", str(configs["planner"])]
        with worker_machine(configs["m1"], env) as m1, worker_machine(configs["m2"], env) as m2:
            created = run_loa("campaign", "create", str(plan), "-a", str(audience), *planner,
                              env=env, cwd=tmp_path)  # fmt: skip
            assert created.code == 0, created.err
            campaign = created.out.strip()
            launched = run_loa("campaign", "launch", campaign, *planner, env=env, cwd=tmp_path)
            assert launched.code == 0, launched.err

            def status() -> dict[str, int | str]:
                shown = run_loa("campaign", "status", campaign, "--json", *planner,
                                env=env, cwd=tmp_path)  # fmt: skip
                assert shown.code == 0, shown.err
                return dict(orjson.loads(shown.out))

            wait_for(lambda: len(sim.received()) == PEOPLE, 120, "every recipient reached")
            wait_for(lambda: status()["delivered"] == PEOPLE, 60, "every receipt counted")
            per_machine = {name: accepted(ports[name]) for name in ("m1", "m2")}
            final = status()
            for machine in (m1, m2):
                machine.send_signal(signal.SIGTERM)
            codes = [m1.wait(60), m2.wait(60)]
        received = sim.received()

    print(f"accepted per machine {per_machine}, campaign {final}")
    assert codes == [0, 0], "both machines drained and stopped cleanly"
    assert set(received) == {number[-9:] for number in numbers}
    assert set(received.values()) == {1}, "nobody twice"
    assert final["state"] == "done"
    assert (final["queued"], final["sent"], final["delivered"]) == (PEOPLE,) * 3
    assert sum(per_machine.values()) == PEOPLE, "the machines' own counts add up"
    assert min(per_machine.values()) > 0, f"both machines sent: {per_machine}"
    assert not (tmp_path / "planner" / "data" / "redis").exists(), "no embedded server anywhere"
