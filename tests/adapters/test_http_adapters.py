"""The HTTP adapters (generic gateway, Zalo ZNS, FCM) against the HTTP simulator on loopback."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from helpers import FakeClock
from loa.adapters.base import Adapter
from loa.adapters.fcm import FcmAdapter, FcmOptions
from loa.adapters.http import HttpAdapter
from loa.adapters.httpclient import HttpAdapterBase, Reply, parse_retry_after
from loa.adapters.registry import parse_options
from loa.adapters.zalo import ZaloAdapter
from loa.errors import ConfigError
from loa.message import Accepted, Failed, Message, RetryLater, Throttled
from loa.sim.http import HttpSimulator, ServiceAccount, generate_private_key, write_service_account
from loa.testing.contract import AdapterContract

pytestmark = pytest.mark.anyio

ZALO_TOKEN = "sim-zalo-token"
A = TypeVar("A", bound=HttpAdapterBase)


# --- fixtures and builders ------------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key for the session: generating one takes tens of milliseconds."""
    return generate_private_key()


@pytest.fixture
async def sim() -> AsyncIterator[HttpSimulator]:
    async with HttpSimulator({"record_requests": True}) as server:
        yield server


@pytest.fixture
def account(sim: HttpSimulator, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> ServiceAccount:
    """A service-account key whose token_uri is the simulator, which checks its signature."""
    written = write_service_account(
        tmp_path / "service-account.json", token_uri=sim.token_url, private_key=rsa_key
    )
    sim.configure(public_key=written.public_key_pem)
    return written


@pytest.fixture
async def closing(sim: HttpSimulator) -> AsyncIterator[Callable[[A], A]]:
    """Close every adapter a test builds, before the simulator stops."""
    made: list[HttpAdapterBase] = []

    def keep(adapter: A) -> A:
        made.append(adapter)
        return adapter

    yield keep
    for adapter in made:
        await adapter.aclose()


def gateway(sim: HttpSimulator, **options: Any) -> HttpAdapter:
    """A JSON SMS gateway: POST /sms, status "ok" means accepted, data.message_id is the id."""
    base: dict[str, Any] = {
        "url": f"{sim.url}/sms",
        "params": {"to": "{to}", "text": "{body}", "id": "{id}", "parts": "{parts}"},
        "success_field": "status",
        "success_values": ["ok"],
        "id_field": "data.message_id",
    }
    return HttpAdapter.create("sms-gw", {**base, **options})


def kannel(sim: HttpSimulator, **options: Any) -> HttpAdapter:
    """Kannel's sendsms: GET with the query string, a text answer "0: Accepted for delivery"."""
    base: dict[str, Any] = {
        "url": f"{sim.url}/cgi-bin/sendsms",
        "method": "GET",
        "params": {
            "username": "loa",
            "password": "loa",
            "to": "{to_national}",
            "text": "{body}",
            "id": "{id}",
        },
        "success_regex": r"^[03]: (Accepted|Queued)",
    }
    return HttpAdapter.create("sms-kannel", {**base, **options})


def zalo(sim: HttpSimulator, **options: Any) -> ZaloAdapter:
    base = {"base_url": sim.url, "access_token": ZALO_TOKEN, "template_id": "tpl-default"}
    return ZaloAdapter.create("zalo-zns", {**base, **options})


def fcm(
    sim: HttpSimulator,
    account: ServiceAccount,
    clock: Callable[[], float] = time.monotonic,
    **options: Any,
) -> FcmAdapter:
    base = {"credentials": str(account.path), "base_url": sim.url}
    return FcmAdapter("push-fcm", parse_options(FcmOptions, "push-fcm", {**base, **options}), clock)


def messages(count: int, prefix: str = "m", **extra: Any) -> list[Message]:
    return [
        Message(
            f"{prefix}{i}", f"+8491200{i:04d}", f"Thông báo {i}", 1 + i % 2, extra=extra or None
        )
        for i in range(count)
    ]


def zalo_messages(count: int, prefix: str = "z") -> list[Message]:
    extra = {"channel": "zalo", "template_id": "tpl-1", "data": {"name": "Ánh", "dose": 2}}
    return messages(count, prefix, **extra)


def push_messages(count: int, prefix: str = "p") -> list[Message]:
    """Push messages: `to` is a distinct push token per message."""
    return [
        Message(f"{prefix}{i}", f"tok-{prefix}-{i}", f"Tiêm chủng {i}", extra={"title": "Bộ Y tế"})
        for i in range(count)
    ]


# --- the contract suite ---------------------------------------------------------------------


class TestGatewayContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, sim: HttpSimulator) -> AsyncIterator[Adapter]:
        adapter = gateway(sim)
        yield adapter
        await adapter.aclose()


class TestKannelContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, sim: HttpSimulator) -> AsyncIterator[Adapter]:
        adapter = kannel(sim)
        yield adapter
        await adapter.aclose()


class TestZaloContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, sim: HttpSimulator) -> AsyncIterator[Adapter]:
        adapter = zalo(sim)
        yield adapter
        await adapter.aclose()


class TestZaloWithFaultsContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, sim: HttpSimulator) -> AsyncIterator[Adapter]:
        sim.configure(no_zalo_ratio=0.4, error_ratio=0.2, jitter=0.005, tps=40, seed=3)
        adapter = zalo(sim)
        yield adapter
        await adapter.aclose()


class TestFcmContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, sim: HttpSimulator, account: ServiceAccount) -> AsyncIterator[Adapter]:
        adapter = fcm(sim, account)
        yield adapter
        await adapter.aclose()


class TestFcmWithFaultsContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, sim: HttpSimulator, account: ServiceAccount) -> AsyncIterator[Adapter]:
        sim.configure(unregistered_ratio=0.3, error_ratio=0.2, jitter=0.005, token_ttl=0.5)
        adapter = fcm(sim, account, concurrency=4)
        yield adapter
        await adapter.aclose()


# --- ids and order --------------------------------------------------------------------------


async def test_gateway_ids_match_the_simulator_in_order(sim: HttpSimulator, closing: Any) -> None:
    sim.configure(jitter=0.02, seed=11)  # answers come back out of order
    adapter = closing(gateway(sim))
    chunk = messages(40)
    results = await adapter.send(chunk)
    stats = sim.stats["sms"]
    assert all(isinstance(r, Accepted) for r in results), results
    assert [r.provider_id for r in results] == [stats.accepted[m.id] for m in chunk]
    assert len(set(stats.accepted.values())) == 40
    assert stats.received == 40 and sorted(stats.ids) == sorted(m.id for m in chunk)
    sent = {doc["id"]: doc for name, doc in sim.requests if name == "sms"}
    assert sent["m3"] == {"to": "+84912000003", "text": "Thông báo 3", "id": "m3", "parts": 2}


async def test_zalo_ids_match_the_simulator_and_the_request_is_zns(
    sim: HttpSimulator, closing: Any
) -> None:
    sim.configure(jitter=0.02, seed=5)
    adapter = closing(zalo(sim))
    chunk = zalo_messages(30)
    results = await adapter.send(chunk)
    accepted = sim.stats["zalo"].accepted
    assert [r.provider_id for r in results if isinstance(r, Accepted)] == [
        accepted[m.id] for m in chunk
    ]
    [request] = [doc for name, doc in sim.requests if name == "zalo" and doc["tracking_id"] == "z7"]
    assert request == {
        "phone": "84912000007",
        "template_id": "tpl-1",
        "template_data": {"name": "Ánh", "dose": 2},
        "tracking_id": "z7",
        "access_token": ZALO_TOKEN,
    }


async def test_fcm_ids_match_the_simulator_and_one_token_serves_all(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    sim.configure(jitter=0.02, token_latency=0.05)  # every message asks for the token at once
    adapter = closing(fcm(sim, account))
    chunk = push_messages(30)
    results = await adapter.send(chunk)
    accepted = sim.stats["fcm"].accepted
    assert [r.provider_id for r in results if isinstance(r, Accepted)] == [
        accepted[m.to] for m in chunk
    ]
    assert all(r.provider_id.startswith("projects/loa-sim/messages/") for r in results)
    assert sim.stats["token"].outcomes["issued"] == 1, "concurrent first requests share a token"
    [request] = [
        doc for name, doc in sim.requests if doc.get("message", {}).get("token") == "tok-p-4"
    ]
    assert request == {
        "message": {
            "token": "tok-p-4",
            "notification": {"title": "Bộ Y tế", "body": "Tiêm chủng 4"},
        }
    }


async def test_fcm_data_values_are_sent_as_strings(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    adapter = closing(fcm(sim, account))
    push = Message("d1", "tok-d1", "body", extra={"data": {"dose": 2, "due": "2021-08-15"}})
    assert isinstance((await adapter.send([push]))[0], Accepted)
    [(_, request)] = [item for item in sim.requests if item[0] == "fcm"]
    assert request["message"]["data"] == {"dose": "2", "due": "2021-08-15"}
    assert "title" not in request["message"]["notification"]


# --- Zalo error codes -----------------------------------------------------------------------


async def test_zalo_no_account_falls_back_exactly_for_those_phones(
    sim: HttpSimulator, closing: Any
) -> None:
    sim.configure(no_zalo_ratio=0.3, seed=9)
    adapter = closing(zalo(sim))
    chunk = zalo_messages(60)
    results = await adapter.send(chunk)
    without = [m.id for m in chunk if not sim.has_zalo(m.to)]
    assert 5 < len(without) < 35, "the seeded ratio picks some phones, not all or none"
    fell_back = [m.id for m, r in zip(chunk, results, strict=True) if isinstance(r, Failed)]
    assert fell_back == without
    for message, result in zip(chunk, results, strict=True):
        if message.id in without:
            assert result == Failed("zalo -118: Zalo account not existed", fallback=True)
        else:
            assert isinstance(result, Accepted)


@pytest.mark.parametrize(
    ("setting", "code"),
    [({"zalo_templates": ["tpl-ok"]}, -109), ({"zalo_unapproved": ["tpl-1"]}, -131)],
    ids=["invalid", "not-approved"],
)
async def test_zalo_template_errors_fail_without_fallback(
    sim: HttpSimulator, closing: Any, setting: dict[str, Any], code: int
) -> None:
    sim.configure(**setting)
    [result] = await closing(zalo(sim)).send(zalo_messages(1))
    assert isinstance(result, Failed)
    assert result.fallback is False
    assert result.template is True, "a template's fault never goes on to the next channel"
    assert result.reason.startswith(f"zalo {code}: ")


async def test_zalo_message_without_template_fails_before_any_request(
    sim: HttpSimulator, closing: Any
) -> None:
    adapter = closing(zalo(sim, template_id=None))
    [result] = await adapter.send([Message("x", "+84912000001", "hi", extra={"data": {}})])
    assert result == Failed(
        "zalo: message has no template_id (extra.template_id or route option)", template=True
    ), "the template's fault: never handed to the next channel"
    assert sim.stats["zalo"].received == 0
    odd = Message("y", "+84912000001", "hi", extra={"template_id": "t", "data": [1]})
    [result] = await adapter.send([odd])
    assert isinstance(result, Failed) and "extra.data" in result.reason


async def test_zalo_default_template_from_the_route(sim: HttpSimulator, closing: Any) -> None:
    adapter = closing(zalo(sim, template_id="tpl-route"))
    [result] = await adapter.send([Message("d", "+84912000001", "hi")])
    assert isinstance(result, Accepted)
    assert sim.requests[-1][1]["template_id"] == "tpl-route"
    assert sim.requests[-1][1]["template_data"] == {}


async def test_zalo_invalid_token_retries_and_warns_once_without_secrets(
    sim: HttpSimulator, closing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = closing(zalo(sim, access_token="expired-token-4f9a"))
    with caplog.at_level(logging.DEBUG, logger="loa"):
        first = await adapter.send(zalo_messages(5))
        second = await adapter.send(zalo_messages(3, "again"))
    for result in [*first, *second]:
        assert isinstance(result, RetryLater)
        assert result.reason.startswith("zalo -124: ")
    warnings = [r for r in caplog.records if r.name == "loa.adapters.zalo"]
    assert len(warnings) == 1, "one warning for a run of -124, not one per message"
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "expired-token-4f9a" not in logged
    assert "912000" not in logged


async def test_zalo_token_file_is_read_again_after_a_124(
    sim: HttpSimulator, closing: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "zalo.token"
    token_file.write_text("stale-token\n")
    adapter = closing(zalo(sim, access_token=None, access_token_file=str(token_file)))
    [before] = await adapter.send(zalo_messages(1))
    assert isinstance(before, RetryLater)
    token_file.write_text(ZALO_TOKEN + "\n")  # an operator renews the token
    [after] = await adapter.send(zalo_messages(1, "after"))
    assert isinstance(after, Accepted)


async def test_zalo_error_table_can_be_overridden(sim: HttpSimulator, closing: Any) -> None:
    sim.configure(no_zalo=["84912000000"])
    adapter = closing(zalo(sim, errors={"-118": "retry", "-9999": "fallback", "-144": "failed"}))
    [result] = await adapter.send(zalo_messages(1))
    assert result == RetryLater("zalo -118: Zalo account not existed")

    def answer(code: int) -> Reply:
        return Reply(200, f'{{"error": {code}, "message": "m"}}'.encode(), "application/json")

    assert adapter.judge(answer(-9999)) == Failed("zalo -9999: m", fallback=True)
    assert adapter.judge(answer(-144)) == Failed("zalo -144: m")
    assert adapter.judge(answer(-115)) == Throttled(60.0), "quota errors slow the route down"
    assert adapter.judge(answer(-7777)) == RetryLater("zalo -7777: m"), "unknown codes retry"
    assert adapter.judge(answer(-139)) == Failed("zalo -139: m", fallback=True)
    assert adapter.judge(Reply(200, b'{"error": "0"}')).__class__ is RetryLater
    assert adapter.judge(Reply(200, b'{"error": 0, "data": {}}')).__class__ is RetryLater


# --- FCM tokens and errors ------------------------------------------------------------------


async def test_fcm_expired_token_is_refreshed_once_for_a_whole_chunk(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    sim.configure(token_latency=0.05)
    adapter = closing(fcm(sim, account))
    assert isinstance((await adapter.send(push_messages(1, "warm")))[0], Accepted)
    sim.expire_tokens()
    chunk = push_messages(25)
    results = await adapter.send(chunk)
    assert all(isinstance(r, Accepted) for r in results), results
    assert sim.stats["fcm"].outcomes["unauthenticated"] == 25, "each met the 401 once"
    assert sim.stats["token"].outcomes["issued"] == 2, "25 refreshes coalesced into one"
    assert adapter.tokens.requests == 2


async def test_fcm_short_lived_token_is_renewed_before_it_expires(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    sim.configure(token_ttl=1.0)
    clock = FakeClock()
    adapter = closing(fcm(sim, account, clock))
    await adapter.send(push_messages(2, "a"))
    clock.advance(0.49)  # not yet half of the token's life: the token is kept
    await adapter.send(push_messages(2, "k"))
    assert sim.stats["token"].outcomes["issued"] == 1
    clock.advance(0.02)  # past half of the token's life
    results = await adapter.send(push_messages(2, "b"))
    assert all(isinstance(r, Accepted) for r in results)
    assert sim.stats["token"].outcomes["issued"] == 2
    assert sim.stats["fcm"].outcomes["unauthenticated"] == 0, "renewed ahead, not after a 401"


async def test_fcm_token_refused_twice_is_retry_later(
    sim: HttpSimulator, account: ServiceAccount, closing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim.configure(token_ttl=0)  # every token is dead on arrival
    adapter = closing(fcm(sim, account))
    with caplog.at_level(logging.WARNING, logger="loa"):
        results = await adapter.send(push_messages(3))
    assert results == [RetryLater("fcm refused a freshly issued access token (HTTP 401)")] * 3
    assert len([r for r in caplog.records if r.name == "loa.adapters.fcm"]) == 1
    assert all("sim-at-" not in r.getMessage() for r in caplog.records), "no token in logs"


async def test_fcm_token_endpoint_refusal_is_retry_later_and_not_hammered(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    # the simulator trusts another key: our signed assertion is refused
    sim.configure(public_key=_other_public_key(), token_latency=0.05)
    adapter = closing(fcm(sim, account))
    results = await adapter.send(push_messages(10))
    for result in results:
        assert isinstance(result, RetryLater)
        assert result.reason.startswith("oauth token request answered HTTP 400")
    assert sim.stats["token"].outcomes["refused"] == 1, "waiters share the failed attempt"
    assert sim.stats["fcm"].received == 0


def _other_public_key() -> str:
    key = generate_private_key().public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


async def test_fcm_unregistered_and_invalid_tokens_fall_back(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    sim.configure(unregistered=["tok-p-1"], invalid_tokens=["tok-p-2"])
    results = await closing(fcm(sim, account)).send(push_messages(4))
    assert isinstance(results[0], Accepted) and isinstance(results[3], Accepted)
    assert results[1] == Failed("push token unregistered", fallback=True)
    assert isinstance(results[2], Failed) and results[2].fallback
    assert results[2].reason.startswith("push token unregistered")


_FCM = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def _fcm_error(
    status: int, name: str, code: str | None = None, retry: float | None = None
) -> Reply:
    details = f', "details": [{{"@type": "{_FCM}", "errorCode": "{code}"}}]' if code else ""
    body = f'{{"error": {{"code": {status}, "message": "x", "status": "{name}"{details}}}}}'
    return Reply(status, body.encode(), "application/json", retry)


async def test_fcm_error_codes(sim: HttpSimulator, account: ServiceAccount, closing: Any) -> None:
    adapter = closing(fcm(sim, account))
    judge = adapter.judge
    quota = judge(_fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", 30.0))
    assert quota == Throttled(30.0)
    assert judge(_fcm_error(503, "UNAVAILABLE", "UNAVAILABLE", 5.0)) == RetryLater(
        "fcm UNAVAILABLE: x", 5.0
    )
    assert judge(_fcm_error(500, "INTERNAL", "INTERNAL")) == RetryLater("fcm INTERNAL: x")
    assert judge(_fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")) == Failed(
        "fcm SENDER_ID_MISMATCH: x"
    )
    # THIRD_PARTY_AUTH_ERROR comes as a 401, but a new token would not help: no refresh
    assert judge(_fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")) == Failed(
        "fcm THIRD_PARTY_AUTH_ERROR: x"
    )
    assert judge(_fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")) == Failed(
        "fcm INVALID_ARGUMENT: x"
    ), "an invalid message (not token) is refused without fallback"
    assert judge(_fcm_error(404, "NOT_FOUND", "UNREGISTERED")) == Failed(
        "push token unregistered", fallback=True
    )


# --- throttling, provider failures, transport trouble ---------------------------------------

BUILDERS = ["gateway", "kannel", "zalo", "fcm"]


@pytest.fixture(params=BUILDERS)
def build(
    request: pytest.FixtureRequest,
    sim: HttpSimulator,
    closing: Any,
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
) -> Callable[..., HttpAdapterBase]:
    """Each adapter kind, built against the simulator with extra options."""
    kind = request.param

    def make(**options: Any) -> HttpAdapterBase:
        if kind == "fcm":
            key = write_service_account(
                tmp_path / "key.json", token_uri=sim.token_url, private_key=rsa_key
            )
            return closing(fcm(sim, key, **options))
        maker = {"gateway": gateway, "kannel": kannel, "zalo": zalo}[kind]
        return closing(maker(sim, **options))

    return make


def _chunk(count: int) -> list[Message]:
    return [
        Message(f"c{i}", f"+8491300{i:04d}", "Cảnh báo", extra={"template_id": "t"})
        for i in range(count)
    ]


async def test_429_is_throttled_with_retry_after_seconds(
    sim: HttpSimulator, build: Callable[..., HttpAdapterBase]
) -> None:
    sim.configure(tps=3, retry_after="7")
    results = await build().send(_chunk(10))
    assert sum(isinstance(r, Accepted) for r in results) == 3
    assert [r for r in results if not isinstance(r, Accepted)] == [Throttled(7.0)] * 7


async def test_429_retry_after_as_an_http_date(
    sim: HttpSimulator, build: Callable[..., HttpAdapterBase]
) -> None:
    sim.configure(tps=1, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    results = await build().send(_chunk(2))
    throttled = [r for r in results if isinstance(r, Throttled)]
    assert len(throttled) == 1
    assert throttled[0].retry_after is not None and 27 <= throttled[0].retry_after <= 31


async def test_500_is_retry_later(
    sim: HttpSimulator, build: Callable[..., HttpAdapterBase]
) -> None:
    sim.configure(error_ratio=1.0, error_status=500, retry_after="4")
    results = await build().send(_chunk(3))
    for result in results:
        assert isinstance(result, RetryLater), result
        assert "HTTP 500" in result.reason
        assert result.retry_after == 4.0


@pytest.mark.parametrize("kind", ["gateway", "zalo"])
async def test_503_is_throttled_by_the_shared_mapping(
    sim: HttpSimulator, closing: Any, kind: str
) -> None:
    sim.configure(error_ratio=1.0, error_status=503, retry_after="2")
    adapter = closing(gateway(sim) if kind == "gateway" else zalo(sim))
    assert await adapter.send(_chunk(2)) == [Throttled(2.0)] * 2


async def test_fcm_503_without_an_fcm_body_is_retry_later(
    sim: HttpSimulator, account: ServiceAccount, closing: Any
) -> None:
    sim.configure(error_ratio=1.0, error_status=503, retry_after="2")
    [result] = await closing(fcm(sim, account)).send(push_messages(1))
    assert isinstance(result, RetryLater) and result.retry_after == 2.0


@pytest.mark.parametrize(
    ("hostile", "words"),
    [("html", "not JSON"), ("truncated", "not JSON"), ("huge", "larger than 65536 bytes")],
)
async def test_hostile_answers_are_retry_later_with_a_reason(
    sim: HttpSimulator, build: Callable[..., HttpAdapterBase], hostile: str, words: str
) -> None:
    sim.configure(hostile=hostile, huge_size=1 << 20)
    adapter = build(max_body=65_536)
    results = await adapter.send(_chunk(3))
    for result in results:
        assert isinstance(result, RetryLater), result
        if not (isinstance(adapter, HttpAdapter) and adapter.options.success_regex):
            assert words in result.reason, result.reason
        elif hostile == "huge":
            assert words in result.reason
        else:  # Kannel reads text: anything but its acceptance is not an acceptance
            assert "not recognised as accepted" in result.reason


async def test_kannel_text_answer_and_national_numbers(sim: HttpSimulator, closing: Any) -> None:
    adapter = closing(kannel(sim))
    results = await adapter.send(messages(3))
    assert results == [Accepted.one("")] * 3
    sent = [doc for name, doc in sim.requests if name == "kannel"]
    by_id = {doc["id"]: doc for doc in sent}  # sent concurrently: any arrival order
    assert [by_id[f"m{i}"]["to"] for i in range(3)] == ["0912000000", "0912000001", "0912000002"]
    assert by_id["m1"]["text"] == "Thông báo 1"
    assert sim.stats["kannel"].answered["202"] == 3


async def test_kannel_wrong_password_fails(sim: HttpSimulator, closing: Any) -> None:
    params = {"username": "loa", "password": "nope", "to": "{to}", "text": "{body}"}
    [result] = await closing(kannel(sim, params=params)).send(messages(1))
    assert result == Failed("gateway answered HTTP 403: Authorization failed for sendsms")


async def test_kannel_regex_names_the_provider_id(sim: HttpSimulator, closing: Any) -> None:
    adapter = closing(kannel(sim, success_regex=r"^(?P<id>\d+): Accepted"))
    assert await adapter.send(messages(1)) == [Accepted.one("0")]


async def test_gateway_refusal_and_missing_fields(sim: HttpSimulator, closing: Any) -> None:
    refusing = closing(gateway(sim, success_values=["accepted", 1]))
    [refused] = await refusing.send(messages(1))
    assert refused == Failed("gateway refused the message (status='ok')")
    [odd] = await closing(gateway(sim, success_field="result.state")).send(messages(1))
    assert odd == RetryLater("gateway answer has no field 'result.state'")
    [no_id] = await closing(gateway(sim, id_field="data.nothing")).send(messages(1))
    assert no_id == Accepted.one("")


async def test_gateway_form_and_query_formats(sim: HttpSimulator, closing: Any) -> None:
    for fmt in ("form", "query"):
        adapter = closing(
            kannel(sim, method="POST", format=fmt, success_regex="^0: Accepted for delivery$")
        )
        assert await adapter.send(messages(1, fmt)) == [Accepted.one("")]
    sent = [doc for name, doc in sim.requests if name == "kannel"]
    assert [doc["id"] for doc in sent] == ["form0", "query0"]  # one send after the other


async def test_gateway_bearer_token_and_extra_fields(sim: HttpSimulator, closing: Any) -> None:
    sim.configure(sms_token="s3cret")
    params = {"to": "{to_digits}", "text": "{extra[greeting]}, {body}", "id": "{id}"}
    good = closing(gateway(sim, token="s3cret", params=params))
    bad = closing(gateway(sim, token="wrong", params=params))
    chunk = [
        Message("e1", "+84912000001", "hẹn 9:30", extra={"greeting": "Chào Ánh"}),
        Message("e2", "+84912000002", "hẹn 10:00"),
    ]
    results = await good.send(chunk)
    assert isinstance(results[0], Accepted)
    assert results[1] == Failed("gateway: message has no extra field 'greeting' for params.text")
    assert sim.requests[-1][1] == {"to": "84912000001", "text": "Chào Ánh, hẹn 9:30", "id": "e1"}
    [refused] = await bad.send(chunk[:1])
    assert isinstance(refused, Failed) and "HTTP 401" in refused.reason


async def test_gateway_basic_auth(sim: HttpSimulator, closing: Any) -> None:
    sim.configure(sms_basic="loa:mật khẩu")
    good = closing(gateway(sim, username="loa", password="mật khẩu"))
    assert isinstance((await good.send(messages(1)))[0], Accepted)
    [refused] = await closing(gateway(sim, username="loa", password="x")).send(messages(1))
    assert isinstance(refused, Failed) and "HTTP 401" in refused.reason


async def test_gateway_extra_fields_keep_types_and_formats(
    sim: HttpSimulator, closing: Any
) -> None:
    params = {"to": "{to}", "text": "{body}", "dose": "{extra[dose]}", "code": "{extra[dose]:03d}"}
    adapter = closing(gateway(sim, params=params))
    chunk = [
        Message("t1", "+84912000001", "a", extra={"dose": 2}),
        Message("t2", "+84912000002", "b", extra={"dose": "hai"}),
    ]
    results = await adapter.send(chunk)
    assert isinstance(results[0], Accepted)
    [(_, sent)] = [item for item in sim.requests if item[0] == "sms"]
    assert (sent["dose"], sent["code"]) == (2, "002"), "a lone placeholder keeps its JSON type"
    assert isinstance(results[1], Failed)
    assert results[1].reason.startswith("gateway: params.code cannot be filled in")


async def test_connection_refused_is_retry_later(closing: Any) -> None:
    async with HttpSimulator() as gone:
        url = gone.url
    adapter = closing(HttpAdapter.create("r", {"url": f"{url}/sms", "params": {"to": "{to}"}}))
    [result] = await adapter.send(messages(1))
    assert isinstance(result, RetryLater) and result.reason.startswith("gateway: cannot connect")


async def test_slow_provider_is_retry_later_after_the_timeout(
    sim: HttpSimulator, closing: Any
) -> None:
    sim.configure(latency=1.0)
    adapter = closing(gateway(sim, timeout=0.2))
    started = time.monotonic()
    [result] = await adapter.send(messages(1))
    assert result == RetryLater("gateway: no answer within 0.2s")
    assert time.monotonic() - started < 0.9


async def test_concurrency_bounds_requests_in_flight(sim: HttpSimulator, closing: Any) -> None:
    sim.configure(latency=0.1)
    adapter = closing(gateway(sim, concurrency=4))
    started = time.monotonic()
    results = await adapter.send(messages(12))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Accepted) for r in results)
    assert 0.28 <= elapsed < 0.9, "12 requests, 4 at a time, 0.1 s each: three rounds"


async def test_one_pooled_connection_set_is_reused(sim: HttpSimulator, closing: Any) -> None:
    adapter = closing(gateway(sim, concurrency=2, connections=2))
    await adapter.send(messages(6))
    session = adapter.client.session()
    await adapter.send(messages(6, "n"))
    assert adapter.client.session() is session, "one session per adapter, kept between sends"
    await adapter.aclose()
    assert session.closed
    assert isinstance((await adapter.send(messages(1, "after")))[0], Accepted), "reopens"


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"params": {"text": "{phone}"}}, "params.text", "unknown placeholder {phone}"),
        ({"params": {"text": "{to.__class__}"}}, "params.text", "unknown placeholder"),
        ({"params": {"text": "{extra}"}}, "params.text", "unknown placeholder {extra}"),
        ({"params": {"text": "{0}"}}, "params.text", "unknown placeholder {0}"),
        ({"params": {"text": "{body!r}"}}, "params.text", "no !conversions"),
        ({"params": {"text": "{body"}}, "params.text", "write {{ and }}"),
        ({"params": {"n": "{parts:zz}"}}, "params.n", "cannot be filled in"),
        ({"params": {}}, "params", "at least 1 item"),
        ({"url": "ftp://host/x"}, "url", "http:// or https://"),
        ({"url": "sms.example"}, "url", "http:// or https://"),
        ({"timeout": -1}, "timeout", "greater than 0"),
        ({"connect_timeout": 0}, "connect_timeout", "greater than 0"),
        ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
        ({"tiemout": 3}, "tiemout", "did you mean 'timeout'"),
        ({"method": "PUT"}, "method", "'GET' or 'POST'"),
        ({"method": "GET", "format": "json"}, "format", "a GET request"),
        ({"success_values": []}, "success_values", "go together"),
        ({"success_regex": "(unclosed"}, "success_regex", "not a regular expression"),
        ({"username": "u"}, "password", "go together"),
        ({"username": "u", "password": "p", "token": "t"}, "token", "either"),
    ],
)
def test_gateway_bad_options_name_the_key(options: dict[str, Any], key: str, words: str) -> None:
    base = {
        "url": "http://127.0.0.1:9/sms",
        "params": {"to": "{to}"},
        "success_field": "status",
        "success_values": ["ok"],
    }
    with pytest.raises(ConfigError) as caught:
        HttpAdapter.create("sms-gw", {**base, **options})
    message = str(caught.value)
    assert f"routes.sms-gw.options.{key}" in message, message
    assert words in message, message


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"errors": {"abc": "retry"}}, "errors", "not a ZNS error code"),
        ({"errors": {"-118": "ignore"}}, "errors.-118", "'fallback', 'failed'"),
        ({"base_url": "zalo.me"}, "base_url", "http:// or https://"),
        ({"timeout": -0.5}, "timeout", "greater than 0"),
        ({"access_token": None}, "", "exactly one of access_token"),
        (
            {"access_token_file": "/nonexistent/zalo.token", "access_token": None},
            "access_token_file",
            "cannot read",
        ),
    ],
)
def test_zalo_bad_options_name_the_key(options: dict[str, Any], key: str, words: str) -> None:
    base = {"access_token": "t"}
    with pytest.raises(ConfigError) as caught:
        ZaloAdapter.create("zalo-zns", {**base, **options})
    message = str(caught.value)
    assert f"routes.zalo-zns.options{'.' + key if key else ''}: " in message, message
    assert words in message, message


def test_fcm_bad_credentials_name_the_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    def refused(options: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as caught:
            FcmAdapter.create("push-fcm", options)
        return str(caught.value)

    assert "routes.push-fcm.options.credentials: cannot read" in refused(
        {"credentials": str(tmp_path / "missing.json")}
    )
    (tmp_path / "text.json").write_text("not json")
    assert "is not JSON" in refused({"credentials": str(tmp_path / "text.json")})
    (tmp_path / "partial.json").write_text('{"client_email": "a@b"}')
    assert "no private_key, token_uri" in refused({"credentials": str(tmp_path / "partial.json")})
    good = write_service_account(
        tmp_path / "k.json", token_uri="http://127.0.0.1:9/token", private_key=rsa_key
    )
    secret = good.path.read_text().replace("MII", "XXX", 1)
    (tmp_path / "bad-key.json").write_text(secret)
    message = refused({"credentials": str(tmp_path / "bad-key.json")})
    assert message.endswith("private_key is not a usable PEM private key")
    assert "PRIVATE" not in message, "the key never appears in an error"
    assert "routes.push-fcm.options.concurrency: " in refused(
        {"credentials": str(good.path), "concurrency": 0}
    )
    assert "routes.push-fcm.options.timeout: " in refused(
        {"credentials": str(good.path), "timeout": -1}
    )


# --- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("99999999", 3600.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(header, now=now) == expected
