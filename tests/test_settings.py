"""Settings: a TOML file, LOA_* variables on top, and clear refusals of bad configuration."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import pytest

from loa.adapters.registry import create_adapter
from loa.errors import ConfigError
from loa.log import JsonFormatter, hide_userinfo
from loa.settings import RouteSettings, Settings

GOOD = """\
redis_url = "redis://10.0.0.5:6379/2"
namespace = "prod"
data_dir = "/var/lib/loa"

[worker]
processes = 2
metrics_port = 0

[queue]
batch_size = 100

[routes.sms-viettel]
adapter = "file"
rate = 500
unit = "parts"
concurrency = 8
options = { path = "out/{route}.jsonl", fsync = true }

[routes.zalo-zns]
adapter = "null"
rate = 200.5
unit = "messages"
"""


def write(tmp_path: Path, text: str, name: str = "loa.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path | None, **environ: str) -> Settings:
    """Settings.load with exactly these environment variables (the test's own are ignored)."""
    return Settings.load(path, environ=environ)


def refused(tmp_path: Path, text: str, **environ: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, **environ)
    message = str(caught.value)
    assert "\n" not in message, "one line per error message"
    return message


# --- loading -------------------------------------------------------------------------------


def test_load_file_with_routes(tmp_path: Path) -> None:
    settings = load(write(tmp_path, GOOD))
    assert settings.redis_url == "redis://10.0.0.5:6379/2"
    assert settings.namespace == "prod"
    assert settings.data_dir == Path("/var/lib/loa")
    assert settings.worker.processes == 2
    assert settings.worker.process_count() == 2
    assert settings.worker.metrics_port == 0
    assert settings.worker.claim_idle == 30.0, "unset keys keep their defaults"
    assert settings.queue.batch_size == 100
    assert list(settings.routes) == ["sms-viettel", "zalo-zns"]
    sms = settings.route("sms-viettel")
    assert sms == RouteSettings(
        adapter="file",
        rate=500.0,
        unit="parts",
        concurrency=8,
        options={"path": "out/{route}.jsonl", "fsync": True},
    )
    assert sms.chunk == 50
    assert settings.route("zalo-zns").rate == 200.5
    assert settings.route("zalo-zns").unit == "messages"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load(None, XDG_DATA_HOME=str(tmp_path))
    assert settings.redis_url is None, "no URL: the embedded server is used"
    assert settings.namespace == "loa"
    assert settings.routes == {}
    assert settings.worker.process_count() == (os.cpu_count() or 1)


def test_loa_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    settings = load(None, LOA_CONFIG=str(path))
    assert settings.namespace == "prod"
    with pytest.raises(ConfigError, match="does not exist"):
        load(None, LOA_CONFIG=str(tmp_path / "missing.toml"))


def test_environment_overrides_file(tmp_path: Path) -> None:
    settings = load(
        write(tmp_path, GOOD),
        LOA_REDIS_URL="redis://127.0.0.1:6380/0",
        LOA_NAMESPACE="staging",
        LOA_WORKER__PROCESSES="3",
        LOA_DATA_DIR=str(tmp_path / "data"),
        LOA_LOG_LEVEL="debug",  # a LOA_* variable that is not a setting is left alone
    )
    assert settings.redis_url == "redis://127.0.0.1:6380/0"
    assert settings.namespace == "staging"
    assert settings.worker.processes == 3
    assert settings.worker.metrics_port == 0, "a nested variable keeps the file's other keys"
    assert settings.data_dir == tmp_path / "data"
    assert settings.route("sms-viettel").concurrency == 8


def test_environment_for_an_unconfigured_route_is_validated(tmp_path: Path) -> None:
    # variable names hold no '-': this one makes a new route `sms_viettel`, without an adapter
    message = refused(tmp_path, GOOD, LOA_ROUTES__SMS_VIETTEL__RATE="9")
    assert "routes.sms_viettel.adapter: Field required" in message


def test_environment_nested_route_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[routes.sms]\nadapter = "null"\nrate = 10\n')
    settings = load(path, LOA_ROUTES__SMS__RATE="25", LOA_ROUTES__SMS__UNIT="messages")
    assert settings.route("sms").rate == 25.0
    assert settings.route("sms").unit == "messages"


def test_empty_redis_url_means_embedded(tmp_path: Path) -> None:
    assert load(write(tmp_path, GOOD), LOA_REDIS_URL="").redis_url is None


def test_overrides_beat_environment(tmp_path: Path) -> None:
    settings = Settings.load(
        write(tmp_path, GOOD),
        environ={"LOA_NAMESPACE": "env"},
        overrides={"namespace": "cli", "worker": {"processes": 7}},
    )
    assert settings.namespace == "cli"
    assert settings.worker.processes == 7
    assert settings.worker.metrics_port == 0


def test_unknown_route_lists_configured_ones(tmp_path: Path) -> None:
    settings = load(write(tmp_path, GOOD))
    with pytest.raises(
        ConfigError, match=r"unknown route 'sms' \(configured routes: sms-viettel, zalo-zns\)"
    ):
        settings.route("sms")


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(write(tmp_path, GOOD))
    with pytest.raises(ValueError, match="frozen"):
        settings.namespace = "x"  # type: ignore[misc]


# --- refusals ------------------------------------------------------------------------------


def test_negative_rate(tmp_path: Path) -> None:
    message = refused(tmp_path, '[routes.sms]\nadapter = "null"\nrate = -5\n')
    assert message.startswith(f"{tmp_path / 'loa.toml'}: routes.sms.rate: ")
    assert "greater than or equal to 0" in message
    assert "(got -5)" in message


def test_unknown_key_with_full_path_and_suggestion(tmp_path: Path) -> None:
    message = refused(tmp_path, '[routes.sms]\nadapter = "null"\nconcurency = 8\n')
    assert "routes.sms.concurency: unknown key (did you mean 'concurrency'?)" in message


def test_unknown_top_level_and_section_keys(tmp_path: Path) -> None:
    message = refused(tmp_path, 'namepsace = "x"\n[worker]\nproceses = 2\n[extra]\na = 1\n')
    assert "namepsace: unknown key (did you mean 'namespace'?)" in message
    assert "worker.proceses: unknown key (did you mean 'processes'?)" in message
    assert "extra: unknown key" in message


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[routes.sms]\nadapter = "null"\nrate = "fast"\n', "routes.sms.rate", "valid number"),
        (
            '[routes.sms]\nadapter = "null"\nconcurrency = 2.5\n',
            "routes.sms.concurrency",
            "integer",
        ),
        (
            '[routes.sms]\nadapter = "null"\nconcurrency = true\n',
            "routes.sms.concurrency",
            "true/false",
        ),
        (
            '[routes.sms]\nadapter = "null"\nunit = "sms"\n',
            "routes.sms.unit",
            "'parts' or 'messages'",
        ),
        ('[routes.sms]\nadapter = "null"\noptions = "x"\n', "routes.sms.options", "dictionary"),
        ('[routes.sms]\nadapter = "null"\nbackoff = inf\n', "routes.sms.backoff", "finite"),
        ('[routes.sms]\nadapter = "null"\nrate = nan\n', "routes.sms.rate", "finite"),
        ("[routes.sms]\nrate = 5\n", "routes.sms.adapter", "Field required"),
        ('[routes.sms]\nadapter = ""\n', "routes.sms.adapter", "at least 1 character"),
        ("[routes.sms]\nadapter = 5\n", "routes.sms.adapter", "valid string"),
        ("[worker]\nprocesses = -1\n", "worker.processes", "greater than or equal to 0"),
        ('[worker]\nmetrics_port = "x"\n', "worker.metrics_port", "valid integer"),
        ("worker = 3\n", "worker", "valid dictionary"),
        ("routes = [1]\n", "routes", "valid dictionary"),
        ('namespace = "a b"\n', "namespace", "should match pattern"),
    ],
)
def test_wrong_type_or_value(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    message = refused(tmp_path, toml)
    assert f": {key}: " in message
    assert problem in message


@pytest.mark.parametrize("name", ["sms viettel", "{sms}", "SMS", "-sms", "sms\n", "a" * 64, ""])
def test_bad_route_name(tmp_path: Path, name: str) -> None:
    quoted = name.replace("\n", "\\n")
    message = refused(tmp_path, f'[routes."{quoted}"]\nadapter = "null"\n')
    assert f"routes: route name {name!r} must be" in message


def test_good_route_names(tmp_path: Path) -> None:
    text = "".join(
        f'[routes."{n}"]\nadapter = "null"\n' for n in ("sms-vt", "zalo_zns", "a.b", "9")
    )
    assert list(load(write(tmp_path, text)).routes) == ["sms-vt", "zalo_zns", "a.b", "9"]


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "redis:/x"])
def test_bad_redis_url_scheme(tmp_path: Path, url: str) -> None:
    message = refused(tmp_path, f'redis_url = "{url}"\n')
    assert "redis_url: must start with one of redis://, rediss://" in message
    assert f"(got {url!r})" in message


@pytest.mark.parametrize(
    "url", ["redis://h:1/0", "rediss://h:1", "unix:///run/redis.sock", "redis+cluster://h:7000"]
)
def test_good_redis_urls(tmp_path: Path, url: str) -> None:
    assert load(write(tmp_path, f'redis_url = "{url}"\n')).redis_url == url


def test_bad_value_from_environment_names_the_variable(tmp_path: Path) -> None:
    text = GOOD.replace("batch_size = 100", "batch_size = 0")
    message = refused(tmp_path, text, LOA_WORKER__PROCESSES="many", LOA_REDIS_URL="http://x")
    clauses = {c.split(": ")[0]: c for c in message.split(": ", 1)[1].split("; ")}
    assert set(clauses) == {"redis_url", "worker.processes", "queue.batch_size"}
    assert clauses["worker.processes"].endswith("(got 'many') (from $LOA_WORKER__PROCESSES)")
    assert clauses["redis_url"].endswith("(got 'http://x') (from $LOA_REDIS_URL)")
    assert "(from $" not in clauses["queue.batch_size"], "that one is in the file"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    message = refused(tmp_path, '[routes.a]\nadapter = "null"\nrate = -1\nchunk = 0\n')
    assert "routes.a.rate: " in message
    assert "routes.a.chunk: " in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = refused(tmp_path, '[routes.sms]\nadapter = "null"\nrate = = 5\n')
    assert message.startswith(f"config file {tmp_path / 'loa.toml'} is not valid TOML: ")
    assert "line 3" in message


def test_duplicate_key_is_a_toml_error(tmp_path: Path) -> None:
    message = refused(tmp_path, '[routes.sms]\nadapter = "null"\nadapter = "file"\n')
    assert "is not valid TOML" in message
    assert "line 3" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        load(tmp_path / "nope.toml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"config file {tmp_path} is a directory"):
        load(tmp_path)


def test_path_through_a_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match=r"config file .*plain/loa\.toml cannot be read: "):
        load(tmp_path / "plain" / "loa.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('namespace = "Hà Nội"\n'.encode("latin-1", errors="replace") + b"\xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not UTF-8 text: "):
        load(path)


def test_utf8_text_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, '# Cấu hình cho Bộ Y tế\n[routes.sms]\nadapter = "null"\n')
    assert list(load(path).routes) == ["sms"]


def test_a_send_timeout_must_end_before_batches_are_claimed() -> None:
    data = {"worker": {"claim_idle": 10}, "routes": {"sms": {"adapter": "null", "timeout": 12}}}
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping(data, source="loa.toml")
    assert str(caught.value) == (
        "loa.toml: routes.sms.timeout (12s) must be shorter than worker.claim_idle (10s)"
    )


def test_replays_inside_the_webhook_window_must_be_remembered() -> None:
    with pytest.raises(ConfigError, match=r"events.dedupe_ttl \(60s\) must be at least"):
        Settings.from_mapping({"events": {"dedupe_ttl": 60}, "api": {"webhook_window": 300}})
    wide = Settings.from_mapping({"events": {"dedupe_ttl": 7200}, "api": {"webhook_window": 3600}})
    assert (wide.events.dedupe_ttl, wide.api.webhook_window) == (7200, 3600)
# --- secrets are never echoed ------------------------------------------------------------

LEAK = "SMPPPASSWD-LEAK"


@pytest.mark.parametrize(
    ("adapter", "options", "key"),
    [
        ("smpp", {"system_id": "loa", "password": LEAK}, ".password"),
        ("http", {"url": "http://127.0.0.1/x", "password": LEAK}, ".password"),
        (
            "http",
            {"url": "http://127.0.0.1/x", "username": "u", "password": "p", "token": LEAK},
            ".token",
        ),
        ("zalo", {"access_token": LEAK, "access_token_file": "/x"}, ""),
    ],
)
def test_config_errors_never_echo_a_secret(
    adapter: str, options: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        create_adapter("sms", adapter, options)
    assert LEAK not in str(caught.value)
    assert f"routes.sms.options{key}: " in str(caught.value)


def test_settings_keep_secrets_out_of_errors_and_reprs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"redis_url": "http://ops:hunter2-LEAK@10.0.0.5:6379/0"})
    assert "hunter2" not in str(caught.value)
    assert "http://***@10.0.0.5:6379/0" in str(caught.value)
    settings = Settings.from_mapping(
        {
            "redis_url": "redis://ops:hunter2-LEAK@10.0.0.5:6379/0",
            "routes": {"push": {"adapter": "null"}},
            "api": {"webhook_secrets": {"push": "webhook-secret-LEAK"}},
        }
    )
    assert "LEAK" not in repr(settings) and "LEAK" not in str(settings.api)
    assert settings.api.webhook_secrets["push"].get_secret_value() == "webhook-secret-LEAK"


def test_logs_hide_the_password_of_every_url() -> None:
    record = logging.makeLogRecord(
        {
            "name": "loa.x",
            "levelname": "WARNING",
            "msg": "cannot reach %s",
            "args": ("redis://:hunter2@10.0.0.5:6379/0",),
            "url": "rediss://ops:hunter2@h/1",
        }
    )
    line = JsonFormatter().format(record)
    assert "hunter2" not in line
    assert "redis://***@10.0.0.5:6379/0" in line and "rediss://***@h/1" in line
    assert hide_userinfo("unix:///run/r.sock and http://example.com/a@b") == (
        "unix:///run/r.sock and http://example.com/a@b"
    )
