"""Backups and restores of real servers: the embedded one, a three-node cluster, damaged ones."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from test_cli import env, loa_command, run_loa  # noqa: F401 - env is a fixture used here
from test_cluster import SERVER_BINARY, Cluster, cluster  # noqa: F401 - cluster is a fixture

from helpers import OPERATOR, wait_for
from loa.campaigns.pinning import PinnedFile, check_audience
from loa.campaigns.service import Campaigns
from loa.engine.backup_status import BackupCollector, read_status
from loa.engine.connection import connect, connect_sync
from loa.engine.embedded import EmbeddedRedis, free_port
from loa.engine.keys import region_field, shard_keys
from loa.engine.progress import Progress
from loa.engine.queue import Queues, Taken
from loa.errors import ArchiveDamaged, BackupError
from loa.ops.backup import Backup, create_backup, prune
from loa.ops.restore import check_archive, restore
from loa.ops.schedule import BackupScheduler
from loa.settings import Settings

pytestmark = pytest.mark.skipif(SERVER_BINARY is None, reason="no Redis-protocol server binary")

ROUTE = "sms"
PLAN = """name = "backup test"
lane = "normal"
channels = ["sms"]
[templates]
sms = "Xin chao {{ name }}: tiem vac-xin"
"""


def settings_for(data_dir: Path, **values: Any) -> Settings:
    """Settings for the embedded server in `data_dir` (no Redis URL), one file route."""
    route = {"adapter": "null", "shards": 2, "chunk": 10, "timeout": 0.9}
    data: dict[str, Any] = {
        "data_dir": str(data_dir),
        "namespace": "bk",
        "routes": {ROUTE: route},
        "channels": {"sms": {"default": ROUTE}},
        "worker": {"metrics_port": 0, "claim_idle": 1.0},
        "queue": {"batch_size": 20},
        **values,
    }
    return Settings.from_mapping(data, source="test settings")


@contextlib.contextmanager
def embedded_client(data_dir: Path) -> Iterator[redis.Redis]:
    """A client on the embedded server of `data_dir`, started for the block."""
    with EmbeddedRedis(data_dir / "redis") as server:
        client = redis.Redis.from_url(server.url)
        try:
            yield client
        finally:
            client.close()


def write_audience(path: Path, count: int) -> Path:
    rows = [f"09{n % 10}{n:07d},Nguyen {n}" for n in range(count)]
    path.write_text("phone,name\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


async def build_state(settings: Settings, url: str, work: Path) -> str:
    """A launched campaign with a pinned audience, one batch held mid-way, a key with a TTL."""
    client = connect(url)
    try:
        live = settings.model_copy(update={"redis_url": url})
        campaigns = Campaigns(live, client)
        plan = work / "plan.toml"
        plan.write_text(PLAN, encoding="utf-8")
        campaign = await campaigns.create(plan, write_audience(work / "a.csv", 95), OPERATOR)
        await campaigns.approve_automatically(campaign.id)
        await campaigns.launch(campaign.id)
        queues = Queues(client, settings.namespace)
        for keys in shard_keys(settings.namespace, ROUTE, 2):
            taken = await queues.take(keys, "worker-a")
            if isinstance(taken, Taken):
                await queues.checkpoint(taken, Progress(done=3))
                break
        # what a worker keeps per region of a settled batch, beside the campaign's own counters
        stats = shard_keys(settings.namespace, ROUTE, 2)[1].campaign_stats
        await client.hincrby(stats, region_field(campaign.id, "79", "accepted"), 2)
        await client.set(f"{settings.namespace}:later", "x", ex=3600)
        return campaign.id
    finally:
        await client.aclose()


def logical(client: Any, namespace: str) -> dict[str, Any]:
    """Everything a namespace holds, read type by type (streams with groups and pending)."""
    found: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{namespace}:*", count=1000):
        key = raw.decode()
        kind = client.type(raw).decode()
        value: Any
        if kind == "string":
            value = client.get(raw)
        elif kind == "hash":
            value = client.hgetall(raw)
        elif kind == "zset":
            value = client.zrange(raw, 0, -1, withscores=True)
        elif kind == "list":
            value = client.lrange(raw, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(raw))
        else:
            groups = client.xinfo_groups(raw)
            pending = [
                (p["message_id"], p["consumer"], p["times_delivered"])
                for g in groups
                for p in client.xpending_range(raw, g["name"], "-", "+", 10_000)
            ]
            value = (
                client.xrange(raw),
                [(g["name"], g["pending"], g["last-delivered-id"]) for g in groups],
                pending,
            )
        found[key] = (kind, client.pttl(raw) > 0, value)
    return found


def test_backup_and_restore_bring_back_the_state_exactly(tmp_path: Path) -> None:
    old = settings_for(tmp_path / "old")
    with EmbeddedRedis(old.data_dir / "redis") as server:
        campaign_id = asyncio.run(build_state(old, server.url, tmp_path))
        made = create_backup(old, tmp_path / "backups")
        with contextlib.closing(redis.Redis.from_url(server.url)) as client:
            before = logical(client, "bk")
    shutil.rmtree(old.data_dir)  # the incident

    contents = made.manifest.contents
    assert contents is not None
    assert contents.batches_in_flight == 1
    assert contents.in_flight == 20 - 3, "the held batch's messages without a result"
    assert contents.campaigns[campaign_id].state == "running"
    assert contents.campaigns[campaign_id].recorded == 3
    assert set(contents.campaigns) == {campaign_id}, "a region's counter is no campaign"
    assert contents.namespace_keys == len(before)
    names = [entry.name for entry in made.manifest.files]
    assert names[0] == "redis/dump.rdb"
    assert f"data/campaigns/{campaign_id}/audience.csv" in names

    new = settings_for(tmp_path / "new")
    done = restore(made.path, new)
    assert done.moved_paths == 1
    moved = f"bk:{{camp:{campaign_id}}}"
    with embedded_client(new.data_dir) as client:
        after = logical(client, "bk")
        fields = {k.decode(): v.decode() for k, v in client.hgetall(moved).items()}
    assert before[moved][2].pop(b"audience") != after[moved][2].pop(b"audience")
    assert after == before, "every key, TTL, stream entry, group and pending entry came back"
    pin = PinnedFile.from_fields(fields)
    assert pin is not None and pin.path.is_relative_to(new.data_dir)
    check_audience(pin, fields["approved_audience_sha256"])  # size, mtime and digest as pinned
    assert oct(pin.path.stat().st_mode & 0o777) == "0o400"


def test_restore_into_the_same_place_needs_no_path_change(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    with EmbeddedRedis(settings.data_dir / "redis") as server:
        asyncio.run(build_state(settings, server.url, tmp_path))
        made = create_backup(settings, tmp_path / "backups" / "one.tar.gz")
    assert made.path.name == "one.tar.gz" and tarfile.is_tarfile(made.path)
    shutil.rmtree(settings.data_dir)
    assert restore(made.path, settings).moved_paths == 0


def _backup(tmp_path: Path) -> Backup:
    settings = settings_for(tmp_path / "data")
    with EmbeddedRedis(settings.data_dir / "redis") as server:
        asyncio.run(build_state(settings, server.url, tmp_path))
        return create_backup(settings, tmp_path / "backups")


def _flip_a_byte(archive: Path, member: str) -> None:
    with tarfile.open(archive) as tar:
        offset = tar.getmember(member).offset_data
    with archive.open("r+b") as handle:
        handle.seek(offset + 5)
        byte = handle.read(1)
        handle.seek(offset + 5)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_a_damaged_archive_is_refused_and_nothing_is_restored(tmp_path: Path) -> None:
    made = _backup(tmp_path)
    audience = next(e.name for e in made.manifest.files if e.name.startswith("data/campaigns/"))
    target = settings_for(tmp_path / "restored")

    altered = tmp_path / "altered.tar"
    shutil.copy(made.path, altered)
    _flip_a_byte(altered, audience)
    with pytest.raises(ArchiveDamaged, match=rf"{audience}' is not what was backed up"):
        restore(altered, target)
    assert not any(target.data_dir.iterdir()), "nothing of a damaged archive is kept"
    with pytest.raises(ArchiveDamaged):
        check_archive(altered)

    snapshot = tmp_path / "snapshot.tar"
    shutil.copy(made.path, snapshot)
    _flip_a_byte(snapshot, "redis/dump.rdb")
    with pytest.raises(ArchiveDamaged, match=r"redis/dump\.rdb"):
        restore(snapshot, target)

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(made.path.read_bytes()[: made.path.stat().st_size // 2])
    with pytest.raises(ArchiveDamaged, match="truncated"):
        restore(truncated, target)

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not an archive at all" * 100)
    with pytest.raises(ArchiveDamaged, match="not a loa backup"):
        restore(garbage, target)
    assert not any(target.data_dir.iterdir())
    assert check_archive(made.path).files == made.manifest.files, "the original is intact"


def test_a_backup_of_a_directory_without_loa_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no embedded server data in"):
        create_backup(settings_for(tmp_path / "typo"), tmp_path / "backups")
    assert read_status(tmp_path / "typo").failures == 1
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())


def test_restore_refuses_a_data_directory_in_use(tmp_path: Path) -> None:
    made = _backup(tmp_path)
    settings = settings_for(tmp_path / "busy")
    (settings.data_dir / "campaigns").mkdir(parents=True)
    (settings.data_dir / "campaigns" / "other").write_text("someone else's")
    with pytest.raises(BackupError, match=r"is not empty.*--force"):
        restore(made.path, settings)
    with EmbeddedRedis(settings.data_dir / "redis"):  # noqa: SIM117
        with pytest.raises(BackupError, match="a server is running"):
            restore(made.path, settings, force=True)
    done = restore(made.path, settings, force=True)
    assert not (settings.data_dir / "campaigns" / "other").exists()
    assert done.keys == made.manifest.contents.keys  # type: ignore[union-attr]


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    made = _backup(tmp_path)
    altered = tmp_path / "altered.tar"
    shutil.copy(made.path, altered)
    _flip_a_byte(altered, "redis/dump.rdb")
    env.pop("LOA_REDIS_URL")
    target = str(tmp_path / "x")
    result = run_loa("restore", str(altered), "--data-dir", target, env=env, cwd=tmp_path)
    assert result.code == 2
    (line,) = [line for line in result.err.splitlines() if line.startswith("loa: ")]
    assert "redis/dump.rdb' is not what was backed up" in line and "nothing was restored" in line
    checked = run_loa("restore", "--check", str(made.path), env=env, cwd=tmp_path)
    assert checked.code == 0 and "intact" in checked.out


def test_a_cluster_is_backed_up_node_by_node(tmp_path: Path, cluster: Cluster) -> None:  # noqa: F811
    for port in cluster.ports:  # no wait for more replicas before a diskless copy
        with contextlib.closing(redis.Redis(port=port)) as node:
            node.config_set("repl-diskless-sync-delay", 0)
    values = {f"cb:{{k{n}}}": f"v{n}" for n in range(300)}
    with contextlib.closing(connect_sync(cluster.url)) as client:
        for key, value in values.items():
            client.set(key, value)
        client.set("other-app:key", "not ours")
        client.expire("cb:{k0}", 3600)
    source = settings_for(tmp_path / "data", namespace="cb")
    made = create_backup(source, tmp_path / "backups", cluster.url)
    assert made.manifest.source == "cluster"
    assert sorted(made.manifest.nodes) == sorted(f"127.0.0.1:{p}" for p in cluster.ports)
    assert made.manifest.contents is not None
    assert made.manifest.contents.namespace_keys == len(values)

    embedded = settings_for(tmp_path / "single", namespace="cb")
    assert restore(made.path, embedded).keys == len(values)
    with embedded_client(embedded.data_dir) as client:
        assert {k: client.get(k).decode() for k in values} == values
        assert client.ttl("cb:{k0}") > 3000 and client.get("other-app:key") is None

    target = settings_for(tmp_path / "again", namespace="cb", redis_url=cluster.url)
    with pytest.raises(BackupError, match="already has keys"):
        restore(made.path, target)
    with contextlib.closing(connect_sync(cluster.url)) as client:
        client.set("cb:{k1}", "changed after the backup")
        client.set("cb:{new}", "made after the backup")
        restore(made.path, target, force=True)
        assert {k: client.get(k).decode() for k in values} == values
        assert client.get("cb:{new}") is None and client.get("other-app:key") == b"not ours"


def test_scheduled_backups_keep_the_newest_and_report_their_age(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data", backup={"every": 3600, "keep": 2})
    collector = BackupCollector(settings.data_dir, 3600)
    assert _samples(collector)["loa_backup_age_seconds"] == math.inf, "no backup yet"
    scheduler = BackupScheduler(settings)
    assert scheduler.due_in() == 0
    with EmbeddedRedis(settings.data_dir / "redis"):
        assert all(scheduler.run_once() for _ in range(3))
    archives = sorted((settings.data_dir / "backups").glob("loa-backup-*.tar"))
    assert len(archives) == 2, "backup.keep archives are kept"
    status = read_status(settings.data_dir)
    assert status.last_archive == str(archives[-1]) and status.failures == 0
    samples = _samples(collector)
    assert 0 <= samples["loa_backup_age_seconds"] < 600
    assert samples["loa_backup_interval_seconds"] == 3600
    assert samples["loa_backup_last_size_bytes"] == archives[-1].stat().st_size
    assert 3000 < scheduler.due_in() <= 3600

    blocked = settings_for(
        tmp_path / "data", backup={"every": 3600, "dir": str(archives[-1] / "x")}
    )
    assert not BackupScheduler(blocked).run_once(), "a backup that cannot be written fails"
    assert read_status(settings.data_dir).failures == 1
    assert _samples(collector)["loa_backup_failures"] == 1
    assert BackupScheduler(blocked).due_in() <= 600, "a failed backup is tried again soon"
    assert prune(settings.data_dir / "backups", 1) == [archives[0]]


def _samples(collector: BackupCollector) -> dict[str, float]:
    return {s.name: s.value for family in collector.collect() for s in family.samples}


def test_restore_serves_at_once_and_backs_up_on_schedule(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
) -> None:
    """`loa restore --serve`: the restored state is served, and backed up every backup.every."""
    archive = _backup(tmp_path / "before").path
    metrics_port, api_port = free_port(), free_port()
    config = tmp_path / "loa.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nnamespace = "bk"\n'
        f"[worker]\nprocesses = 1\nmetrics_port = {metrics_port}\n"
        f"[api]\nport = {api_port}\n"
        "[backup]\nevery = 2\nkeep = 2\n"
        '[routes.sms]\nadapter = "null"\n',
        encoding="utf-8",
    )
    env.pop("LOA_REDIS_URL")
    server = subprocess.Popen(
        [*loa_command(), "restore", str(archive), "--serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    backups = tmp_path / "data" / "backups"
    try:
        wait_for(lambda: len(list(backups.glob("*.tar"))) >= 2, 60, "two scheduled backups")
        samples = _scrape(metrics_port)
        assert samples["loa_backup_interval_seconds"] == 2
        assert 0 <= samples["loa_backup_age_seconds"] < 60
        assert samples["loa_backup_failures"] == 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, err = server.communicate(timeout=60)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
    assert server.returncode == 0, err.decode()[-2000:]
    assert b"scheduled backup made" in err
    assert len(list(backups.glob("*.tar"))) <= 2, "backup.keep"
    latest = check_archive(max(backups.glob("*.tar")))
    assert latest.contents is not None
    assert latest.contents.campaigns.keys() == made_before(archive), "the restored campaign"


def made_before(archive: Path) -> set[str]:
    """The campaigns an archive holds."""
    contents = check_archive(archive).contents
    assert contents is not None
    return set(contents.campaigns)


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.startswith("loa_backup_"):
                samples[sample.name] = sample.value
    return samples
