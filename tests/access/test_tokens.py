"""API tokens in Redis: a token lives its lifetime to the millisecond, on the given clock."""

from __future__ import annotations

import pytest

from helpers import FakeClock
from loa.access.identity import Role, program
from loa.access.tokens import Tokens
from loa.engine.connection import RedisClient
from loa.errors import AuthError

pytestmark = pytest.mark.anyio

DAY = 86_400.0
MINTER = program("test-bootstrap", Role.ADMIN)


async def test_a_token_expires_at_the_end_of_its_days(
    redis_client: RedisClient, namespace: str
) -> None:
    clock = FakeClock(1_700_000_000.0)
    tokens = Tokens(redis_client, namespace, max_days=30, clock=clock)
    token, record = await tokens.create("temp", Role.VIEWER, MINTER, days=2)
    assert (record.created_ms, record.expires_ms) == (1_700_000_000_000, 1_700_172_800_000)
    clock.advance(2 * DAY - 0.001)
    assert (await tokens.principal(token)).person == "temp"
    clock.advance(0.001)
    with pytest.raises(AuthError, match="expired"):
        await tokens.principal(token)


async def test_a_revoked_token_records_when(redis_client: RedisClient, namespace: str) -> None:
    clock = FakeClock(1_700_000_000.0)
    tokens = Tokens(redis_client, namespace, clock=clock)
    token, _ = await tokens.create("ops", Role.OPERATOR, MINTER)
    clock.advance(60)
    assert (await tokens.revoke("ops")).revoked_ms == 1_700_000_060_000
    with pytest.raises(AuthError, match="revoked"):
        await tokens.principal(token)
