"""The real `loa` console script in a subprocess: version, and clear refusals of bad settings."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import loa
from loa.engine.embedded import EmbeddedRedis

OK_TOML = """\
[worker]
processes = 1
metrics_port = 0

[routes.sms]
adapter = "null"
rate = 100
"""

TIMEOUT = 60.0


def loa_command() -> list[str]:
    """The installed `loa` script next to this interpreter, else `python -m loa.cli`."""
    script = shutil.which("loa", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "loa.cli"]


@dataclass
class Result:
    code: int
    out: str
    err: str


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process we started and everything it started (its own session): TERM, KILL."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_loa(*args: str, env: dict[str, str], cwd: Path, timeout: float = TIMEOUT) -> Result:
    """Run `loa ARGS` with stdout and stderr as pipes; never leaves a process behind."""
    process = subprocess.Popen(
        [*loa_command(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        pytest.fail(f"loa {' '.join(args)} still ran after {timeout}s")
    finally:
        if process.poll() is None:
            _kill_group(process)
    return Result(process.returncode, out.decode(), err.decode())


def run_loa_on_terminal(*args: str, env: dict[str, str], cwd: Path) -> Result:
    """Run `loa ARGS` with stderr on a pseudo-terminal, as an operator at a shell sees it."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*loa_command(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            received += data
        code = process.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"loa {' '.join(args)} still ran after {TIMEOUT}s")
    finally:
        os.close(master)
        if process.poll() is None:
            _kill_group(process)
    return Result(code, "", received.decode())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The test's environment without LOA_* settings, pointed at a Redis URL and tmp_path.

    With a Redis URL set, no embedded server is started (and none in the default location).
    """
    values = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    values.update(
        LOA_REDIS_URL="redis://127.0.0.1:6379/0",
        LOA_DATA_DIR=str(tmp_path / "data"),
        XDG_DATA_HOME=str(tmp_path / "xdg"),
        TMPDIR=str(tmp_path),
        COLUMNS="120",
    )
    return values


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_clean_line(result: Result) -> str:
    """Exit code 2, one `loa: ...` line on stderr, nothing on stdout, no traceback."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("loa: ")
    return lines[0]


# --- tests ---------------------------------------------------------------------------------


def test_script_is_installed_next_to_the_interpreter() -> None:
    assert Path(loa_command()[0]).name == "loa", "the `loa` console script is installed"


def test_version(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_loa("--version", env=env, cwd=tmp_path)
    assert result.code == 0, result
    assert result.out == f"loa {loa.__version__}\n"
    assert loa.__version__ != "0.0.0", "the installed distribution has a version"


def test_help_lists_commands(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_loa("--help", env=env, cwd=tmp_path)
    assert result.code == 0, result
    for command in ("worker", "demo", "status", "redis"):
        assert command in result.out


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, env: dict[str, str]) -> None:
    bad = write(tmp_path, "bad.toml", '[routes.sms]\nadapter = "null"\nrate = -5\n')
    line = assert_one_clean_line(run_loa("worker", "--config", str(bad), env=env, cwd=tmp_path))
    assert line.startswith(f"loa: {bad}: routes.sms.rate: ")
    assert "greater than or equal to 0 (got -5)" in line


def test_bad_config_error_is_red_on_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    bad = write(tmp_path, "bad.toml", '[routes.sms]\nadapter = "null"\nconcurency = 3\n')
    result = run_loa_on_terminal("worker", "-c", str(bad), env=env, cwd=tmp_path)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    line = result.err.strip()
    assert line.startswith("\x1b[31mloa: "), repr(line)
    assert line.endswith("\x1b[0m"), repr(line)
    assert "routes.sms.concurency: unknown key (did you mean 'concurrency'?)" in line
    assert len(line.splitlines()) == 1


def test_unknown_route_is_named(tmp_path: Path, env: dict[str, str]) -> None:
    ok = write(tmp_path, "ok.toml", OK_TOML)
    result = run_loa(
        "worker", "--config", str(ok), "--routes", "nosuchroute", env=env, cwd=tmp_path
    )
    line = assert_one_clean_line(result)
    assert line == "loa: unknown route 'nosuchroute' (configured routes: sms)"


def test_one_unknown_route_among_known_ones(tmp_path: Path, env: dict[str, str]) -> None:
    ok = write(tmp_path, "ok.toml", OK_TOML)
    result = run_loa("worker", "-c", str(ok), "--routes", "sms, smss", env=env, cwd=tmp_path)
    assert "unknown route 'smss'" in assert_one_clean_line(result)


def test_no_routes_configured(tmp_path: Path, env: dict[str, str]) -> None:
    empty = write(tmp_path, "empty.toml", "[worker]\nprocesses = 1\n")
    line = assert_one_clean_line(run_loa("worker", "--config", str(empty), env=env, cwd=tmp_path))
    assert "no routes configured" in line
    assert "[routes.NAME]" in line


def test_no_config_at_all_means_no_routes(tmp_path: Path, env: dict[str, str]) -> None:
    assert "no routes configured" in assert_one_clean_line(run_loa("worker", env=env, cwd=tmp_path))


def test_config_from_loa_config_variable(tmp_path: Path, env: dict[str, str]) -> None:
    ok = write(tmp_path, "ok.toml", OK_TOML)
    env["LOA_CONFIG"] = str(ok)
    line = assert_one_clean_line(run_loa("worker", "--routes", "nope", env=env, cwd=tmp_path))
    assert line == "loa: unknown route 'nope' (configured routes: sms)"


def test_missing_config_file(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_loa("worker", "--config", "missing.toml", env=env, cwd=tmp_path)
    assert assert_one_clean_line(result) == "loa: config file missing.toml does not exist"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path, env: dict[str, str]) -> None:
    bad = write(tmp_path, "syntax.toml", '[worker]\nprocesses = 1\n[routes.sms\nadapter = "null"\n')
    line = assert_one_clean_line(run_loa("worker", "-c", str(bad), env=env, cwd=tmp_path))
    assert line.startswith(f"loa: config file {bad} is not valid TOML: ")
    assert "line 3" in line


def test_bad_environment_variable_is_named(tmp_path: Path, env: dict[str, str]) -> None:
    ok = write(tmp_path, "ok.toml", OK_TOML)
    env["LOA_WORKER__PROCESSES"] = "lots"
    line = assert_one_clean_line(run_loa("worker", "-c", str(ok), env=env, cwd=tmp_path))
    assert "worker.processes: " in line
    assert "(from $LOA_WORKER__PROCESSES)" in line


def test_bad_redis_option(tmp_path: Path, env: dict[str, str]) -> None:
    ok = write(tmp_path, "ok.toml", OK_TOML)
    result = run_loa("worker", "-c", str(ok), "--redis", "http://x", env=env, cwd=tmp_path)
    line = assert_one_clean_line(result)
    assert "redis_url: must start with one of redis://" in line
    assert "(got 'http://x')" in line


def test_unknown_adapter_is_refused_before_workers_start(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = write(tmp_path, "bad.toml", OK_TOML.replace('adapter = "null"', 'adapter = "nul"'))
    result = run_loa("worker", "-c", str(bad), env=env, cwd=tmp_path, timeout=10)
    line = assert_one_clean_line(result)
    available = "console, fcm, file, http, null, smpp, smtp, zalo"
    assert f"routes.sms.adapter: no adapter named 'nul' (available: {available}" in line


# --- bad input and an unusable Redis: one clear line, never a traceback -------------------


def one_line(result: Result) -> str:
    assert result.code == 2, result
    assert "Traceback" not in result.err and result.out == "", result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def test_deeply_nested_toml_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    line = one_line(run_loa("status", "-c", str(deep), env=env, cwd=tmp_path))
    assert line == f"loa: config file {deep} nests arrays or tables too deeply"


@pytest.mark.parametrize("command", [("status",), ("campaign", "list")])
def test_an_unreachable_redis_is_one_line(
    tmp_path: Path, env: dict[str, str], command: tuple[str, ...]
) -> None:
    url = "redis://ops:hunter2@127.0.0.1:1/0"
    line = one_line(run_loa(*command, "--redis", url, env=env, cwd=tmp_path))
    assert line.startswith("loa: the Redis server cannot be used: ")
    assert "127.0.0.1:1" in line and "hunter2" not in line


@pytest.mark.parametrize("command", [("status",), ("campaign", "list")])
def test_a_wrong_redis_password_is_one_line(
    tmp_path: Path, env: dict[str, str], command: tuple[str, ...]
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        wrong = re.sub(r"//:[^@]*@", "//:wrong-password@", server.url)
        line = one_line(run_loa(*command, "--redis", wrong, env=env, cwd=tmp_path))
    assert line.startswith("loa: the Redis server cannot be used: "), line
    assert "password" in line and "wrong-password" not in line
