"""The built-in adapters against the contract suite, their own behaviour, and the registry."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from helpers import FakeClock
from loa.adapters import registry
from loa.adapters.base import Adapter
from loa.adapters.console import ConsoleAdapter, ConsoleOptions
from loa.adapters.file import FileAdapter
from loa.adapters.null import NullAdapter, NullOptions
from loa.errors import AdapterContractError, AdapterNotFound, ConfigError
from loa.message import Accepted, Failed, Message, RetryLater, Throttled
from loa.settings import Settings
from loa.testing.contract import AdapterContract

PHONE = "+84912345678"


def chunk(count: int, prefix: str = "m") -> list[Message]:
    return [
        Message(f"{prefix}{i}", f"+8491{i:07d}", f"tin nhắn {i}", parts=1 + i % 3)
        for i in range(count)
    ]


# --- the contract suite on every built-in adapter -----------------------------------------


class TestNullContract(AdapterContract):
    @pytest.fixture
    async def adapter(self) -> AsyncIterator[Adapter]:
        adapter = registry.create_adapter("null-test", "null", {})
        yield adapter
        await adapter.aclose()


class TestNullWithFaultsContract(AdapterContract):
    @pytest.fixture(
        params=[
            {"retry_ratio": 0.3, "fail_ratio": 0.2, "seed": 7},
            {"capacity": 3, "latency": 0.01},
            {"retry_ratio": 1.0},
            {"fail_ratio": 1.0},
        ],
        ids=["mixed", "capacity", "all-retry", "all-fail"],
    )
    async def adapter(self, request: pytest.FixtureRequest) -> AsyncIterator[Adapter]:
        adapter = registry.create_adapter("null-faults", "null", request.param)
        yield adapter
        await adapter.aclose()


class TestFileContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[Adapter]:
        adapter = registry.create_adapter("file-test", "file", {"path": str(tmp_path / "o.jsonl")})
        yield adapter
        await adapter.aclose()


class TestConsoleContract(AdapterContract):
    @pytest.fixture
    async def adapter(self) -> AsyncIterator[Adapter]:
        adapter = ConsoleAdapter("console-test", ConsoleOptions(), stream=io.StringIO())
        yield adapter
        await adapter.aclose()


# --- the file adapter ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_file_writes_one_json_line_per_message_at_once(tmp_path: Path) -> None:
    adapter = registry.create_adapter("sms-vt", "file", {"path": str(tmp_path / "{route}.jsonl")})
    assert isinstance(adapter, FileAdapter)
    messages = [
        Message("a1", PHONE, "Xin chào 💉\nDòng hai", parts=2, extra={"dose": 2}),
        Message("a2", "+84987654321", "Tin thứ hai"),
    ]
    try:
        results = await adapter.send(messages)
        assert results == [Accepted.one("a1"), Accepted.one("a2")], "provider id is the message id"
        # read it back before closing: a killed worker must lose nothing it reported as sent
        path = tmp_path / "sms-vt.jsonl"
        lines = path.read_bytes().splitlines()
        assert len(lines) == 2
        rows = [json.loads(line) for line in lines]
        assert [(r["id"], r["to"], r["body"], r["parts"]) for r in rows] == [
            ("a1", PHONE, "Xin chào 💉\nDòng hai", 2),
            ("a2", "+84987654321", "Tin thứ hai", 1),
        ]
        assert rows[0]["extra"] == {"dose": 2}
        assert rows[0]["route"] == "sms-vt"

        await adapter.send([Message("a3", PHONE, "ba")])
        assert len(path.read_bytes().splitlines()) == 3, "appended, not rewritten"
    finally:
        await adapter.aclose()

    again = registry.create_adapter("sms-vt", "file", {"path": str(tmp_path / "{route}.jsonl")})
    await again.send([Message("a4", PHONE, "bốn")])
    await again.aclose()
    ids = [json.loads(line)["id"] for line in (tmp_path / "sms-vt.jsonl").read_bytes().splitlines()]
    assert ids == ["a1", "a2", "a3", "a4"], "a new adapter appends to the same file"


@pytest.mark.anyio
async def test_file_sends_after_close_and_pid_placeholder(tmp_path: Path) -> None:
    adapter = registry.create_adapter("r", "file", {"path": str(tmp_path / "d" / "{pid}.jsonl")})
    await adapter.aclose()
    await adapter.send([Message("x", PHONE, "hi")])
    await adapter.aclose()
    [written] = (tmp_path / "d").iterdir()
    assert re.fullmatch(r"\d+\.jsonl", written.name)
    assert json.loads(written.read_bytes())["id"] == "x"


@pytest.mark.parametrize("path", ["{date}.jsonl", "{0}.jsonl", "{route.x}.jsonl", "{.jsonl"])
def test_file_bad_placeholder_is_config_error(tmp_path: Path, path: str) -> None:
    with pytest.raises(ConfigError, match=r"routes\.r1\.options\.path: .*\{route\} and \{pid\}"):
        registry.create_adapter("r1", "file", {"path": str(tmp_path / path)})


def test_file_unwritable_directory_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(ConfigError, match=r"routes\.r1\.options\.path: cannot create"):
        registry.create_adapter("r1", "file", {"path": str(tmp_path / "plain" / "x" / "o.jsonl")})


# --- the console adapter -------------------------------------------------------------------


@pytest.mark.anyio
async def test_console_masks_recipients_and_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    adapter = registry.create_adapter("sms-dev", "console", {})
    messages = [
        Message("c1", PHONE, "Số của bạn: 0912 345 678. Xin chào!"),
        Message("c2", "+84 98 765 4321", "Gọi lại +84987654321", parts=3),
        Message("c3", "nguyen.van.a@example.vn", "Thư gửi email"),
    ]
    assert await adapter.send(messages) == [Accepted()] * 3
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("sms-dev  ***678  [1] ")
    assert "Xin chào!" in lines[0]
    assert "[3]" in lines[1]
    digits = re.sub(r"[^\d\n]", "", out)
    for number in ("84912345678", "912345678", "0912345678", "84987654321", "987654321"):
        assert number not in digits, f"{number} printed in full"
    assert not re.search(r"\d{7}", out), "no run of 7 digits (a phone number) is printed"
    assert "nguyen.van.a@" not in out
    assert "***@example.vn" in out


@pytest.mark.anyio
async def test_console_one_line_per_message_and_width() -> None:
    stream = io.StringIO()
    adapter = ConsoleAdapter("r", ConsoleOptions(width=20), stream=stream)
    evil = "dòng 1\ndòng 2\rghi đè\x1b[2J\u2028xong"
    await adapter.send([Message("e1", PHONE, evil), Message("e2", PHONE, "ngắn")])
    lines = stream.getvalue().split("\n")
    assert lines[-1] == ""
    assert len(lines[:-1]) == 2, "a body with line breaks still prints as one line"
    assert "\x1b" not in stream.getvalue()
    assert "\r" not in stream.getvalue()
    body = lines[0].split("] ", 1)[1]
    assert body == "dòng 1 dòng 2 ghi đè"[:20]


# --- the null adapter's fault injection ----------------------------------------------------


@pytest.mark.anyio
async def test_null_default_accepts_all() -> None:
    adapter = registry.create_adapter("n", "null", {})
    assert isinstance(adapter, NullAdapter)
    assert await adapter.send(chunk(10)) == [Accepted()] * 10
    assert adapter.sent == 10


@pytest.mark.anyio
async def test_null_retry_ratio_one_gives_all_retry_later() -> None:
    adapter = registry.create_adapter("n", "null", {"retry_ratio": 1})
    results = await adapter.send(chunk(50))
    assert len(results) == 50
    assert all(isinstance(r, RetryLater) for r in results)


@pytest.mark.anyio
async def test_null_fail_ratio_one_gives_all_failed() -> None:
    adapter = registry.create_adapter("n", "null", {"fail_ratio": 1})
    results = await adapter.send(chunk(50))
    assert len(results) == 50
    assert all(isinstance(r, Failed) for r in results)


@pytest.mark.anyio
async def test_null_capacity_throttles_beyond_n_per_second() -> None:
    clock = FakeClock()
    adapter = NullAdapter(NullOptions(capacity=5), clock=clock)
    first = await adapter.send(chunk(8))
    assert first[:5] == [Accepted()] * 5
    assert all(isinstance(r, Throttled) for r in first[5:])
    assert all(isinstance(r, Throttled) for r in await adapter.send(chunk(3)))
    clock.advance(0.5)  # still the same one-second window
    assert all(isinstance(r, Throttled) for r in await adapter.send(chunk(1)))
    clock.advance(0.5)  # a second since the window opened: a new one
    second = await adapter.send(chunk(7))
    assert second[:5] == [Accepted()] * 5
    assert all(isinstance(r, Throttled) for r in second[5:])


@pytest.mark.anyio
async def test_null_seed_makes_faults_reproducible() -> None:
    options = {"retry_ratio": 0.3, "fail_ratio": 0.3, "seed": 42}
    runs = []
    for _ in range(2):
        adapter = registry.create_adapter("n", "null", options)
        runs.append([type(r) for r in await adapter.send(chunk(200))])
    assert runs[0] == runs[1]
    kinds = set(runs[0])
    assert kinds == {Accepted, RetryLater, Failed}, "all three answers occur at these ratios"
    other = registry.create_adapter("n", "null", {**options, "seed": 43})
    assert [type(r) for r in await other.send(chunk(200))] != runs[0]
    assert 30 < runs[0].count(Failed) < 90
    assert 30 < runs[0].count(RetryLater) < 90


@pytest.mark.anyio
async def test_null_latency_delays_send() -> None:
    adapter = registry.create_adapter("n", "null", {"latency": 0.2})
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(adapter.send(chunk(1)), adapter.send(chunk(1)))
    elapsed = loop.time() - start
    assert 0.18 <= elapsed < 0.39, "latency is per call and calls overlap"


# --- the registry --------------------------------------------------------------------------


def test_unknown_adapter_names_route_and_lists_available() -> None:
    with pytest.raises(AdapterNotFound) as caught:
        registry.create_adapter("sms-viettel", "smpp-nope", {})
    message = str(caught.value)
    assert message.startswith("routes.sms-viettel.adapter:")
    assert "'smpp-nope'" in message
    assert "available: console, fcm, file, http, null, smpp, smtp, zalo" in message
    assert isinstance(caught.value, ConfigError)


def test_available_has_the_builtins() -> None:
    factories = registry.available()
    assert {"null", "file", "console", "smpp", "http", "zalo", "fcm", "smtp"} <= set(factories)
    assert {"null", "file", "console"} <= set(registry.names())


@pytest.mark.parametrize(
    ("adapter", "options", "key", "problem"),
    [
        ("null", {"latncy": 0.1}, "latncy", "unknown key (did you mean 'latency'?)"),
        ("null", {"latency": -1}, "latency", "greater than or equal to 0"),
        ("null", {"latency": "slow"}, "latency", "valid number"),
        ("null", {"retry_ratio": 1.5}, "retry_ratio", "less than or equal to 1"),
        ("null", {"capacity": True}, "capacity", "not true/false"),
        ("null", {"seed": "abc"}, "seed", "valid integer"),
        ("file", {}, "path", "Field required"),
        ("file", {"path": 5}, "path", "valid string"),
        ("file", {"path": "x", "fsync": "sometimes"}, "fsync", "valid boolean"),
        ("console", {"width": 3}, "width", "greater than or equal to 10"),
        ("console", {"colour": True}, "colour", "unknown key"),
    ],
)
def test_bad_options_name_route_and_key(
    tmp_path: Path, adapter: str, options: dict[str, object], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        registry.create_adapter("sms-x", adapter, options)
    message = str(caught.value)
    assert f"routes.sms-x.options.{key}: " in message
    assert problem in message


def test_null_ratios_must_fit() -> None:
    with pytest.raises(ConfigError, match=r"routes\.n\.options: retry_ratio \+ fail_ratio"):
        registry.create_adapter("n", "null", {"retry_ratio": 0.7, "fail_ratio": 0.6})


def test_check_routes_refuses_a_bad_adapter_up_front(tmp_path: Path) -> None:
    good = {"adapter": "file", "options": {"path": str(tmp_path / "o.jsonl")}}
    settings = Settings.from_mapping(
        {"routes": {"good": good, "typo": {"adapter": "nul"}, "bad": {"adapter": "null"}}}
    )
    registry.check_routes(settings, ["good", "bad"])
    with pytest.raises(AdapterNotFound, match=r"routes\.typo\.adapter: no adapter named 'nul'"):
        registry.check_routes(settings)
    with pytest.raises(ConfigError, match=r"unknown route 'gone'"):
        registry.check_routes(settings, ["gone"])


# --- third-party adapters through the loa.adapters entry-point group -----------------------

SHOUT_MODULE = '''
"""A third-party adapter: accepts every message with its body upper-cased as provider id."""

from loa.message import Accepted


class ShoutAdapter:
    def __init__(self, route, options):
        self.route = route
        self.suffix = options.get("suffix", "!")
        self.closed = 0

    async def send(self, messages):
        return [Accepted.one(m.body.upper() + self.suffix) for m in messages]

    async def ping(self):
        pass

    async def aclose(self):
        self.closed += 1


def create(route, options):
    return ShoutAdapter(route, options)


def not_an_adapter(route, options):
    return object()
'''


def _install_distribution(root: Path, name: str, entry_points: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Distributions in tmp_path that register adapters, as `pip install` would."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "shout_adapter.py").write_text(SHOUT_MODULE)
    _install_distribution(
        site,
        "loa_shout",
        """\
        [loa.adapters]
        shout = shout_adapter:create
        wrong = shout_adapter:not_an_adapter
        null = shout_adapter:create
        """,
    )
    _install_distribution(
        site,
        "loa_broken",
        """\
        [loa.adapters]
        broken = no_such_module_for_loa:create
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("shout_adapter", None)
    importlib.invalidate_caches()


def test_plugin_is_listed_and_builtins_cannot_be_shadowed(plugins: Path) -> None:
    assert "shout" in registry.names()
    assert "broken" in registry.names()
    factories = registry.available()
    assert "shout" in factories
    assert "broken" not in factories, "a plug-in that cannot be imported is left out"
    assert factories["null"] == NullAdapter.create, "a plug-in may not shadow a built-in"
    assert isinstance(registry.create_adapter("r", "null", {}), NullAdapter)


@pytest.mark.anyio
async def test_plugin_is_built_and_sends(plugins: Path) -> None:
    adapter = registry.create_adapter("sms-shout", "shout", {"suffix": "?"})
    assert type(adapter).__module__ == "shout_adapter"
    assert await adapter.send([Message("s1", PHONE, "xin chào")]) == [Accepted.one("XIN CHÀO?")]
    await adapter.aclose()


def test_unknown_adapter_lists_plugins_too(plugins: Path) -> None:
    listed = "broken, console, fcm, file, http, null, shout, smpp, smtp, wrong, zalo"
    with pytest.raises(AdapterNotFound, match=rf"available: {listed}\)"):
        registry.create_adapter("r", "nope", {})


def test_broken_plugin_is_a_config_error(plugins: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        registry.create_adapter("sms-b", "broken", {})
    message = str(caught.value)
    assert message.startswith("routes.sms-b.adapter: adapter plug-in 'broken'")
    assert "no_such_module_for_loa:create from loa_broken" in message
    assert "ModuleNotFoundError" in message


def test_plugin_returning_a_non_adapter_is_refused(plugins: Path) -> None:
    with pytest.raises(AdapterContractError, match=r"routes\.r\.adapter: the 'wrong' factory"):
        registry.create_adapter("r", "wrong", {})


class TestPluginContract(AdapterContract):
    """A third party's adapter runs the same suite, built through the entry point."""

    @pytest.fixture
    async def adapter(self, plugins: Path) -> AsyncIterator[Adapter]:
        adapter = registry.create_adapter("sms-shout", "shout", {})
        yield adapter
        await adapter.aclose()


THIRD_PARTY_TESTS = """
from collections.abc import AsyncIterator

import pytest

from loa.testing.contract import AdapterContract
from loa.message import Accepted


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request):
    return request.param


class Echo:
    async def send(self, messages):
        return [Accepted.one(m.id) for m in messages]

    async def aclose(self):
        pass


class Short(Echo):
    async def send(self, messages):
        return [Accepted.one(m.id) for m in messages][:-1]


class TestEcho(AdapterContract):
    @pytest.fixture
    async def adapter(self) -> AsyncIterator[Echo]:
        yield Echo()


class TestShort(AdapterContract):
    @pytest.fixture
    async def adapter(self) -> AsyncIterator[Short]:
        yield Short()


class TestForgotten(AdapterContract):
    pass
"""


def test_contract_suite_as_a_third_party_runs_it(tmp_path: Path) -> None:
    """The docstring's recipe works outside this repository, and the suite catches bugs."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (tmp_path / "test_third_party.py").write_text(THIRD_PARTY_TESTS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    passed = set(re.findall(r"^PASSED \S+::(\w+::\w+\[\w+\])", out, re.M))
    failed = set(re.findall(r"^FAILED \S+::(\w+::\w+\[\w+\])", out, re.M))
    errors = set(re.findall(r"^ERROR \S+::(\w+::\w+\[\w+\])", out, re.M))
    for backend in ("asyncio", "uvloop"):
        assert f"TestEcho::test_one_result_per_message[{backend}]" in passed
        assert f"TestEcho::test_concurrent_sends[{backend}]" in passed
        assert f"TestShort::test_one_result_per_message[{backend}]" in failed
        assert f"TestShort::test_empty_chunk[{backend}]" in passed, "[][:-1] is still empty"
        assert f"TestForgotten::test_is_an_adapter[{backend}]" in errors
    assert not any(name.startswith("TestEcho::") for name in failed | errors), out
    assert "one result per message: 8 sent, 7 back" in out
    assert "TestForgotten must define an `adapter` fixture" in out
