"""The HTTP provider simulator itself: endpoints, token checks, seeded faults, stats, CLI entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from loa.errors import ConfigError
from loa.sim.http import SCOPE, HttpSimulator, SimOptions, generate_private_key

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def assertion(sim: HttpSimulator, key: Any = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "a@b", "scope": SCOPE, "aud": sim.token_url, "iat": now, "exp": now + 600}
    body.update(claims)
    if key is None:
        return jwt.encode(body, "not-a-service-account-key-but-long-enough", algorithm="HS256")
    return jwt.encode(body, key, algorithm="RS256")


async def ask_token(client: aiohttp.ClientSession, sim: HttpSimulator, jwt_text: str) -> int:
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": jwt_text}
    async with client.post(sim.token_url, data=form) as response:
        await response.read()
        return response.status


async def test_free_port_url_and_stats_endpoint(client: aiohttp.ClientSession) -> None:
    async with HttpSimulator() as first, HttpSimulator() as second:
        assert first.port > 0 and second.port > 0 and first.port != second.port
        assert first.url == f"http://127.0.0.1:{first.port}"
        async with client.post(f"{first.url}/sms", json={"to": "+84912000001"}) as response:
            assert response.status == 400, "text is required"
        good = {"to": "+84912000001", "text": "hi", "id": "s1"}
        async with client.post(f"{first.url}/sms", json=good) as response:
            answer = await response.json()
        assert answer["status"] == "ok"
        async with client.get(f"{first.url}/_sim/stats") as response:
            stats = await response.json()
        assert stats == first.snapshot()
        sms = stats["sms"]
        assert sms["received"] == 2
        assert sms["answered"] == {"400": 1, "200": 1}
        assert sms["outcomes"] == {"bad_request": 1, "accepted": 1}
        assert sms["accepted"] == {"s1": answer["data"]["message_id"]}
        assert second.snapshot()["sms"]["received"] == 0


async def test_token_endpoint_checks_signature_and_claims(
    client: aiohttp.ClientSession,
) -> None:
    private = generate_private_key()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with HttpSimulator() as sim:
        # without a public key the simulator checks the claims only
        assert await ask_token(client, sim, assertion(sim)) == 200
        assert await ask_token(client, sim, assertion(sim, aud="https://elsewhere/token")) == 400
        assert await ask_token(client, sim, assertion(sim, scope="email")) == 400
        sim.configure(public_key=public.decode())
        assert await ask_token(client, sim, assertion(sim)) == 400, "HS256 is not the key"
        assert await ask_token(client, sim, assertion(sim, private)) == 200
        expired = assertion(sim, private, exp=int(time.time()) - 10)
        assert await ask_token(client, sim, expired) == 400
        assert sim.stats["token"].outcomes == {"issued": 2, "refused": 4}


async def test_fcm_endpoint_wants_a_live_issued_token(client: aiohttp.ClientSession) -> None:
    async with HttpSimulator({"token_ttl": 60}) as sim:
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
        async with client.post(sim.token_url, data={**form, "assertion": assertion(sim)}) as r:
            token = (await r.json())["access_token"]
        url = f"{sim.url}/v1/projects/p1/messages:send"
        push = {"message": {"token": "device-1", "notification": {"body": "x"}}}
        async with client.post(url, json=push, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        bearer = {"Authorization": f"Bearer {token}"}
        async with client.post(url, json=push, headers=bearer) as r:
            assert (await r.json())["name"].startswith("projects/p1/messages/")
        sim.expire_tokens()
        async with client.post(url, json=push, headers=bearer) as r:
            assert r.status == 401
            assert (await r.json())["error"]["status"] == "UNAUTHENTICATED"


async def test_kannel_endpoint_answers_like_kannel(client: aiohttp.ClientSession) -> None:
    async with HttpSimulator() as sim:
        url = f"{sim.url}/cgi-bin/sendsms"
        query = {"username": "loa", "password": "loa", "to": "0912000001", "text": "hi"}
        async with client.get(url, params=query) as r:
            assert (r.status, await r.text()) == (202, "0: Accepted for delivery")
        async with client.get(url, params={**query, "password": "x"}) as r:
            assert r.status == 403
        async with client.get(url, params={**query, "to": ""}) as r:
            assert (r.status, await r.text()) == (400, "Missing receiver number")


def test_seeded_faults_repeat_and_phones_are_stable() -> None:
    one = HttpSimulator({"seed": 4, "no_zalo_ratio": 0.5})
    two = HttpSimulator({"seed": 4, "no_zalo_ratio": 0.5})
    other = HttpSimulator({"seed": 5, "no_zalo_ratio": 0.5})
    phones = [f"8491200{i:04d}" for i in range(200)]
    pattern = [one.has_zalo(p) for p in phones]
    assert pattern == [two.has_zalo(p) for p in phones] == [one.has_zalo(p) for p in phones]
    assert pattern != [other.has_zalo(p) for p in phones], "the seed decides"
    assert 70 < pattern.count(False) < 130
    assert one.has_zalo("+" + phones[0]) == pattern[0], "with or without the plus"


async def test_error_ratio_is_seeded(client: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        async with HttpSimulator({"seed": seed, "error_ratio": 0.5}) as sim:
            codes = []
            for i in range(30):
                body = {"to": "+84912000001", "text": "x", "id": str(i)}
                async with client.post(f"{sim.url}/sms", json=body) as r:
                    codes.append(r.status)
            assert sim.stats["sms"].outcomes["error"] == codes.count(500)
            return codes

    first = await statuses(1)
    assert first == await statuses(1)
    assert 5 < first.count(500) < 25


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^http simulator options: error_ratio: .*less than"):
        HttpSimulator({"error_ratio": 2})
    with pytest.raises(ConfigError, match=r"tpss: unknown key \(did you mean 'tps'\?\)"):
        HttpSimulator({"tpss": 3})
    sim = HttpSimulator(SimOptions(seed=3))
    with pytest.raises(ConfigError, match="hostile"):
        sim.configure(hostile="rude")
    assert sim.options.seed == 3 and sim.options.hostile is None, "unchanged after a refusal"


async def test_start_on_a_busy_port_raises_and_stop_twice_is_fine() -> None:
    async with HttpSimulator() as sim:
        busy = HttpSimulator(port=sim.port)
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await busy.start()
        await busy.stop()
    await sim.stop()


def test_run_http_simulator_serves_until_sigterm() -> None:
    code = (
        "from loa.sim.http import run_http_simulator\n"
        "run_http_simulator('127.0.0.1', 0, {'seed': 2},"
        " on_ready=lambda sim: print(sim.url, flush=True))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=5) as response:
            assert b'"kannel"' in response.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
