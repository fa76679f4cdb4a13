"""The token check every route but the health probes goes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from loa.access.audit import AuditEntry
from loa.access.identity import Principal, Role
from loa.api.context import client_ip, context
from loa.engine.keys import auth_failures_key
from loa.errors import ApiError, AuthError

bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `Authorization: Bearer loa_...` (`loa api token create`).",
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if their token is valid and its role is `role` or higher."""

    async def check(request: Request, credentials: Credentials) -> Principal:
        guard = FailureGuard(request)
        await guard.check()
        try:
            if credentials is None:
                raise AuthError("send Authorization: Bearer <token>", code="missing_token")
            principal = await context(request).services.tokens.principal(credentials.credentials)
        except AuthError as exc:
            await guard.failed(exc)
            raise
        if principal.role < role:
            if request.method not in SAFE_METHODS:  # an attempt to change something: keep it
                await refused(request, principal.person, principal.role.label, "forbidden")
            raise AuthError(
                f"this needs the {role.label} role; the token has {principal.role.label}",
                code="forbidden",
                status=403,
            )
        return principal

    return check


class FailureGuard:
    """Counts bad tokens per address: past `api.auth_failures_per_minute`, answer 429 at once."""

    def __init__(self, request: Request) -> None:
        self.request = request
        ctx = context(request)
        self.limit = ctx.settings.api.auth_failures_per_minute
        self.key = auth_failures_key(ctx.settings.namespace, client_ip(request))

    async def check(self) -> None:
        """429 while this address is over its budget of failures for the minute."""
        count = await context(self.request).services.redis.get(self.key)
        if count is not None and int(count) >= self.limit:
            raise ApiError(
                "too many requests with bad tokens from this address; wait a minute",
                code="too_many_failures",
                status=429,
            )

    async def failed(self, exc: AuthError) -> None:
        """Count a failure and keep it in the audit log (repeats folded)."""
        redis = context(self.request).services.redis
        pipe = redis.pipeline(transaction=False)
        pipe.incr(self.key)
        pipe.expire(self.key, 60, nx=True)
        await pipe.execute()
        await refused(self.request, "", "", exc.code)


async def refused(request: Request, who: str, role: str, outcome: str) -> None:
    """A refused request in the audit log, repeats folded (see AuditLog.refusal)."""
    entry = AuditEntry(
        who=who,
        role=role,
        action=_action(request),
        campaign=str(request.path_params.get("campaign_id", "")),
        ip=client_ip(request),
        outcome=outcome,
        token="",
    )
    await context(request).services.audit.refusal(entry)


def _action(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "name", request.url.path))


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Approver = Annotated[Principal, Depends(require(Role.APPROVER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
