"""deploy/compose.yaml and deploy/systemd/ cannot drift from the code: every command and option
they run is parsed by the real `loa` command tree, every setting by the real settings, and
every port, volume, account and address is checked against the service it names."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from test_prometheus import prometheus_tools  # noqa: F401 - a fixture used here
from typer.exceptions import TyperException
from typer.main import get_command

from helpers import REPO
from loa.adapters.registry import check_routes
from loa.campaigns.plan import Plan
from loa.cli import app
from loa.demo.config import advisory_plan
from loa.demo.simulators import zalo_options
from loa.settings import Settings, WorkerSettings, read_toml
from loa.sim.http import SimOptions
from loa.sim.smsc import SmscOptions

ROOT = REPO
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
FILES = DEPLOY / "compose"
SYSTEMD = DEPLOY / "systemd"
LOA_IMAGE = "loa:local"
HOME = "/home/loa"


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `loa ARGV` with loa's own command tree: ("sub command", its parameters).

    Fails the test on an unknown command or option, a missing argument or a bad value.
    """
    command: Any = get_command(app)
    path: list[str] = []
    args = list(argv)
    while True:
        try:
            ctx = command.make_context(" ".join(["loa", *path]), args)
        except TyperException as exc:
            pytest.fail(f"loa {' '.join(argv)}: {exc}")
        rest = [*ctx._protected_args, *ctx.args]
        if not isinstance(command, typer.core.TyperGroup) or not rest:
            return " ".join(path), dict(ctx.params)
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            pytest.fail(f"loa {' '.join(argv)}: no command {rest[0]!r}")
        command, args = sub, rest[1:]
        path.append(rest[0])


def test_the_parser_refuses_what_loa_refuses() -> None:
    assert parse_cli(["worker", "--processes", "2"]) == (
        "worker",
        {"config": None, "redis": None, "data_dir": None, "processes": 2, "routes": None},
    )
    assert parse_cli(["sim", "smsc", "--port", "0"])[0] == "sim smsc"
    for wrong in (["wroker"], ["worker", "--procs", "2"], ["worker", "-p", "two"], ["restore"]):
        with pytest.raises(pytest.fail.Exception):
            parse_cli(wrong)


# -- docker compose -------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def loa_services() -> dict[str, dict[str, Any]]:
    """The services that run the loa image, whose entrypoint is `loa`."""
    return {name: s for name, s in services().items() if s.get("image") == LOA_IMAGE}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a path relative to deploy/, or a named volume)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


def compose_settings() -> Settings:
    return Settings.load(FILES / "loa.toml", environ={})


def smsc_carriers() -> dict[str, dict[str, Any]]:
    options = read_toml(FILES / "smsc.toml")
    carriers = options.pop("carriers")
    return {name: {**options, **table} for name, table in carriers.items()}


def test_the_image_runs_loa_as_a_user_with_its_data_and_metrics() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["loa"]' in dockerfile
    assert re.search(r"^USER loa$", dockerfile, re.M), "not root"
    assert f"LOA_DATA_DIR={HOME}/data" in dockerfile
    assert f"mkdir -p {HOME}/data {HOME}/backups" in dockerfile, "volumes owned by loa"
    assert f"EXPOSE {WorkerSettings().metrics_port}" in dockerfile
    assert "LOA_WORKER__METRICS_HOST=0.0.0.0" in dockerfile, "Prometheus scrapes from outside"
    for service in loa_services().values():
        assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}


def test_every_loa_service_runs_a_real_command() -> None:
    ran = {}
    for name, service in loa_services().items():
        if "entrypoint" in service:
            continue  # a script of loa commands, checked below
        ran[name] = parse_cli([str(part) for part in service["command"]])
    assert {name: command for name, (command, _) in ran.items()} == {
        "smsc": "sim smsc",
        "zalo": "sim http",
        "loa-worker": "worker",
        "loa-api": "api",
        "loa-backup": "backup",
    }
    assert ran["loa-worker"][1]["processes"] == compose_settings().worker.processes


def test_the_demo_script_runs_real_commands_on_the_compose_settings() -> None:
    script = (FILES / "demo-campaign.sh").read_text()
    lines = [line.strip() for line in script.splitlines()]
    commands = [line for line in lines if re.match(r"^(\w+=\$\()?loa ", line)]
    assert len(commands) == 5  # two tokens, create, approve, launch
    for line in commands:
        argv = shlex.split(re.sub(r"^\w+=\$\((.*)\)$", r"\1", line))[1:]
        parse_cli([re.sub(r"\$\{?\w+\}?", "X", part) for part in argv])
    subprocess.run(["sh", "-n", str(FILES / "demo-campaign.sh")], check=True)
    plan = Plan.model_validate(tomllib.loads(advisory_plan()))
    settings = compose_settings()
    assert all(channel in settings.channels for channel in plan.channels)
    zalo = SimOptions.model_validate(read_toml(FILES / "zalo.toml"))
    drawn = zalo_options(2026, 0)  # what the script's audience assumes of the zalo service
    assert (zalo.seed, zalo.no_zalo_ratio, zalo.zalo_templates, zalo.zalo_token) == (
        drawn.seed,
        drawn.no_zalo_ratio,
        drawn.zalo_templates,
        drawn.zalo_token,
    )


def test_the_compose_settings_reach_the_services_they_name() -> None:
    settings = compose_settings()
    check_routes(settings)  # every adapter and its options, as a worker builds them
    names = set(services())
    smsc = loa_services()["smsc"]
    carriers = smsc_carriers()
    for carrier in carriers.values():
        SmscOptions.model_validate({k: v for k, v in carrier.items() if k != "port"})
    ports = {int(table["port"]): table for table in carriers.values()}
    assert sorted(ports) == sorted(int(port) for port in smsc["expose"])
    for name, route in settings.routes.items():
        options = route.options
        if route.adapter == "smpp":
            assert options["host"] == "smsc", name
            account = ports[options["port"]]["accounts"]
            assert account == {options["system_id"]: options["password"]}, name
        else:
            url = urlsplit(options["base_url"])
            zalo = loa_services()[str(url.hostname)]
            assert parse_cli(zalo["command"])[1]["port"] == url.port == int(zalo["expose"][0])
            assert options["access_token"] == read_toml(FILES / "zalo.toml")["zalo_token"]
    for carrier, route in settings.channels["sms"].carriers.items():
        assert route in settings.routes and carrier in carriers
    assert settings.redis_url is not None
    seed = urlsplit(settings.redis_url.replace("redis+cluster", "redis"))
    assert seed.hostname in names and seed.port == 6379
    shards = {route.shards for route in settings.routes.values()}
    replicas = loa_services()["loa-worker"]["deploy"]["replicas"]
    assert min(shards) >= replicas * settings.worker.processes, "a shard per worker process"


def test_the_cluster_has_three_primaries_joined_by_the_script() -> None:
    nodes = {name: s for name, s in services().items() if re.fullmatch(r"redis-\d", name)}
    assert len(nodes) == 3
    for name, node in nodes.items():
        command = node["command"]
        value = {command[i]: command[i + 1] for i in range(1, len(command) - 1, 2)}
        assert value["--cluster-enabled"] == "yes" and value["--appendonly"] == "yes"
        assert value["--cluster-announce-hostname"] == name
        assert value["--port"] == "6379" and mounts(node) == {"/data": name}
    script = (FILES / "cluster-create.sh").read_text()
    assert re.search(r'NODES="redis-1:6379 redis-2:6379 redis-3:6379"', script)
    assert "--cluster-replicas 0" in script
    subprocess.run(["sh", "-n", str(FILES / "cluster-create.sh")], check=True)
    joiner = services()["redis-cluster"]
    assert set(joiner["depends_on"]) == set(nodes)
    for name in ("loa-worker", "loa-api"):
        assert loa_services()[name]["depends_on"]["redis-cluster"] == {
            "condition": "service_completed_successfully"
        }


def test_mounted_files_exist_and_every_path_used_is_mounted() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for target, source in mounts(service).items():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} is not in deploy/"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
            assert PurePosixPath(target).is_absolute()
    for name, service in loa_services().items():
        mounted = mounts(service)
        words = [str(w) for w in [*service.get("entrypoint", []), *service.get("command", [])]]
        used = [w for w in words if w.startswith("/")]
        if "entrypoint" in service or "config" in parse_cli(words)[1]:
            used.append(service["environment"]["LOA_CONFIG"])
        for path in used:
            inside = [t for t in mounted if path == t or path.startswith(t + "/")]
            assert inside, f"{name}: {path} is not mounted"


def test_environment_variables_are_settings() -> None:
    for name, service in loa_services().items():
        for variable in service["environment"]:
            if not variable.startswith("LOA_") or variable == "LOA_CONFIG":
                continue
            path = variable[4:].lower().split("__")
            model: Any = Settings
            for part in path:
                assert part in model.model_fields, f"{name}: {variable} is no setting"
                model = model.model_fields[part].annotation


def test_ports_are_those_the_processes_listen_on() -> None:
    settings = compose_settings()
    api = loa_services()["loa-api"]
    options = parse_cli(api["command"])[1]
    assert options["host"] == "0.0.0.0"
    assert api["ports"] == [f"127.0.0.1:{options['port']}:{options['port']}"], "loopback only"
    worker = loa_services()["loa-worker"]
    assert worker["expose"] == [str(settings.worker.metrics_port)]
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace > settings.worker.drain_timeout + 5, "drained before Docker kills it"
    prometheus = yaml.safe_load((FILES / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["loa-worker"] and sd["port"] == settings.worker.metrics_port
    assert prometheus["rule_files"] == ["alerts.yml"]
    mounted = mounts(services()["prometheus"])
    assert mounted["/etc/prometheus/alerts.yml"] == "./alerts.yml"
    assert mounted["/etc/prometheus/prometheus.yml"] == "./compose/prometheus.yml"
    source = yaml.safe_load((FILES / "grafana-datasource.yml").read_text())
    url = urlsplit(source["datasources"][0]["url"])
    assert url.hostname == "prometheus" and services()["prometheus"]["ports"] == [
        f"127.0.0.1:{url.port}:{url.port}"
    ]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "loa.yml").read_text()
    )
    dashboards = provider["providers"][0]["options"]["path"]
    assert mounts(services()["grafana"])[dashboards] == "./grafana"


def test_the_compose_prometheus_config_loads_with_the_alert_rules(
    tmp_path: Path,
    prometheus_tools: tuple[Path, Path],  # noqa: F811
) -> None:
    _, promtool = prometheus_tools
    shutil.copy(FILES / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    checked = subprocess.run(
        [str(promtool), "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    found = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return found.returncode == 0


def _has_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no Docker Compose here")
def test_docker_compose_accepts_the_file() -> None:
    subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], check=True)


@pytest.mark.skipif(not _has_engine(), reason="no Docker engine here")
def test_the_image_builds_and_runs_loa() -> None:
    subprocess.run(["docker", "build", "-q", "-t", LOA_IMAGE, str(ROOT)], check=True, timeout=900)
    shown = subprocess.run(
        ["docker", "run", "--rm", LOA_IMAGE, "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert shown.stdout.startswith("loa ")


# -- systemd --------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections, each key with every value it was given."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def units() -> dict[str, dict[str, dict[str, list[str]]]]:
    return {path.name: unit(path) for path in sorted(SYSTEMD.iterdir())}


def test_units_run_real_commands_with_real_settings() -> None:
    found = {}
    drain = WorkerSettings().drain_timeout
    for name, sections in units().items():
        if not name.endswith(".service"):
            continue
        service = sections["Service"]
        (start,) = service["ExecStart"]
        binary, *argv = shlex.split(start)
        assert binary == "/opt/loa/bin/loa", name
        command, options = parse_cli(argv)
        found[name] = command
        if options.get("config") is not None:
            assert str(options["config"]) == "/etc/loa/loa.toml", name
        assert service["User"] == ["loa"] and service["NoNewPrivileges"] == ["yes"], name
        for assignment in service.get("Environment", []):
            variable, _, value = assignment.partition("=")
            path = variable[4:].lower().split("__")
            Settings.load(environ={variable: value})  # a valid value of a real setting
            assert path[0] in Settings.model_fields, f"{name}: {variable}"
            if variable == "LOA_DATA_DIR":
                assert value in service["ReadWritePaths"][0].split(), "its data is writable"
                assert value == "/var/lib/" + service["StateDirectory"][0]
        if command in ("server", "worker", "api"):
            assert service["KillMode"] == ["mixed"], f"{name}: loa stops its children in order"
            assert sections["Install"]["WantedBy"] == ["multi-user.target"]
        if command in ("server", "worker"):
            assert int(service["TimeoutStopSec"][0]) > drain + 5, f"{name}: killed mid-drain"
    assert found == {
        "loa-api.service": "api",
        "loa-backup.service": "backup",
        "loa-server.service": "server",
        "loa-sim-smsc.service": "sim smsc",
        "loa-worker.service": "worker",
    }


def test_the_backup_timer_starts_the_backup_service() -> None:
    timer = units()["loa-backup.timer"]["Timer"]
    assert timer["Unit"] == ["loa-backup.service"] and timer["Persistent"] == ["true"]
    assert timer["OnCalendar"]
    backup = units()["loa-backup.service"]["Service"]
    assert backup["Type"] == ["oneshot"]
    (start,) = backup["ExecStart"]
    destination = parse_cli(shlex.split(start)[1:])[1]["to"]
    assert str(destination) in backup["ReadWritePaths"][0].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    loa = shutil.which("loa", path=str(Path(sys.executable).parent))
    assert loa is not None
    for path in SYSTEMD.iterdir():  # the same units, with the loa of this test run
        text = path.read_text().replace("/opt/loa/bin/loa", loa)
        (tmp_path / path.name).write_text(text)
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [line for line in checked.stderr.splitlines() if str(tmp_path) in line]
    assert not ours, "\n".join(ours)
