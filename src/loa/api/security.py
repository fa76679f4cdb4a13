"""The token check every route but the health probes goes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from loa.access.identity import Principal, Role
from loa.api.context import context, record
from loa.errors import AuthError

bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `Authorization: Bearer loa_...` (`loa api token create`).",
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if their token is valid and its role is `role` or higher."""

    async def check(request: Request, credentials: Credentials) -> Principal:
        if credentials is None:
            raise AuthError("send Authorization: Bearer <token>", code="missing_token")
        principal = await context(request).services.tokens.principal(credentials.credentials)
        if principal.role < role:
            if request.method not in SAFE_METHODS:  # an attempt to change something: keep it
                campaign = str(request.path_params.get("campaign_id", ""))
                await record(request, principal, _action(request), campaign, "forbidden")
            raise AuthError(
                f"this needs the {role.label} role; the token has {principal.role.label}",
                code="forbidden",
                status=403,
            )
        return principal

    return check


def _action(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "name", request.url.path))


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Approver = Annotated[Principal, Depends(require(Role.APPROVER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
