"""The FCM HTTP v1 adapter: one push per request, OAuth2 service-account tokens, errors mapped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import Field, field_validator

from loa.adapters.httpclient import (
    BadAnswer,
    HttpAdapterBase,
    HttpClient,
    HttpOptions,
    Reply,
    check_url,
    status_result,
)
from loa.adapters.registry import parse_options
from loa.errors import AdapterError, ConfigError
from loa.log import mask
from loa.message import (
    Accepted,
    Failed,
    Message,
    RetryLater,
    SendResult,
    Throttled,
    push_content,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class FcmOptions(HttpOptions):
    """The service-account key, the project and where FCM lives."""

    credentials: str = Field(min_length=1, description="path of the service-account key JSON")
    project_id: str | None = Field(default=None, min_length=1, description="default: the key's")
    base_url: str = DEFAULT_BASE_URL
    token_uri: str | None = Field(default=None, description="default: the key's token_uri")
    concurrency: int = Field(default=64, ge=1, le=10_000, description="requests in flight")

    @field_validator("base_url", "token_uri")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    """The parts of a Google service-account key that sign a token request."""

    client_email: str
    private_key: RSAPrivateKey
    private_key_id: str
    project_id: str
    token_uri: str


def load_key(path: Path) -> ServiceAccountKey:
    """Read a service-account key file; ValueError says what is wrong (never the key itself)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError:
        raise ValueError(f"{path} is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a service-account key (not a JSON object)")
    missing = [k for k in ("client_email", "private_key", "token_uri") if not doc.get(k)]
    if missing:
        raise ValueError(f"{path} is not a service-account key: no {', '.join(missing)}")
    try:
        token_uri = check_url(str(doc["token_uri"]))
    except ValueError as exc:
        raise ValueError(f"{path}: token_uri {exc}") from None
    try:
        key = load_pem_private_key(str(doc["private_key"]).encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # a key parser's message may quote the key: name the field only
        raise ValueError(f"{path}: private_key is not a usable PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"{path}: private_key is not an RSA key")
    return ServiceAccountKey(
        client_email=str(doc["client_email"]),
        private_key=key,
        private_key_id=str(doc.get("private_key_id", "")),
        project_id=str(doc.get("project_id", "")),
        token_uri=token_uri,
    )


class TokenError(AdapterError):
    """The OAuth token endpoint did not give us an access token."""


class AccessTokens:
    """A cached OAuth2 access token; concurrent refreshes share one request."""

    def __init__(
        self,
        key: ServiceAccountKey,
        client: HttpClient,
        token_uri: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.client = client
        self.token_uri = token_uri
        self.requests = 0
        self._token: str | None = None
        self._clock = clock  # seconds, for the token's lifetime
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._generation = 0  # token requests finished so far
        self._failure: str | None = None

    async def get(self) -> str:
        """A valid token: the cached one, or one fetched now (once, for all who wait)."""
        token = self._token
        if token is not None and self._clock() < self._refresh_at:
            return token
        seen = self._generation
        async with self._lock:
            if self._generation != seen and self._failure is not None:
                raise TokenError(self._failure)  # it failed while we waited: do not hammer it
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token
            return await self._refresh()

    def invalidate(self, token: str) -> None:
        """FCM refused `token`: drop it, unless another caller has already replaced it."""
        if self._token == token:
            self._token = None

    async def _refresh(self) -> str:
        self.requests += 1
        try:
            token, lifetime = await self._fetch()
        except TokenError as exc:
            self._failure = str(exc)
            raise
        finally:
            self._generation += 1  # counts finished attempts: waiters see one ended
        self._failure = None
        self._token = token
        # renew a minute early (or half-way, for short-lived tokens) so no request carries a
        # token that expires in flight
        self._refresh_at = self._clock() + max(lifetime - 60.0, lifetime / 2)
        return token

    def assertion(self) -> str:
        """The signed JWT that asks for a token (RFC 7523)."""
        now = int(time.time())
        claims = {
            "iss": self.key.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.key.private_key_id} if self.key.private_key_id else None
        return jwt.encode(claims, self.key.private_key, algorithm="RS256", headers=headers)

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": GRANT_TYPE, "assertion": self.assertion()}
        reply = await self.client.request("POST", self.token_uri, form=form)
        if not isinstance(reply, Reply):
            raise TokenError(f"oauth token request: {reply.reason}")
        if reply.status != 200:
            raise TokenError(f"oauth token request answered HTTP {reply.status}: {reply.snippet()}")
        try:
            doc = reply.json_object()
        except BadAnswer as exc:
            raise TokenError(f"oauth token {exc}") from None
        token, lifetime = doc.get("access_token"), doc.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise TokenError("oauth token answer has no access_token or expires_in")
        return token, float(lifetime)


class _Unauthorized:
    """FCM answered 401 UNAUTHENTICATED: the access token is no longer good."""


UNAUTHORIZED = _Unauthorized()


class FcmAdapter(HttpAdapterBase):
    """POST {base_url}/v1/projects/{project}/messages:send; Message.to is the push token."""

    provider = "fcm"

    def __init__(
        self, route: str, options: FcmOptions, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(route, options)
        self.options = options
        try:
            key = load_key(Path(options.credentials))
        except ValueError as exc:
            raise ConfigError(f"routes.{route}.options.credentials: {exc}") from None
        project = options.project_id or key.project_id
        if not project:
            raise ConfigError(f"routes.{route}.options.project_id: the key names no project")
        self.url = f"{options.base_url}/v1/projects/{project}/messages:send"
        self.tokens = AccessTokens(key, self.client, options.token_uri or key.token_uri, clock)
        self._auth_warned = False

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> FcmAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(FcmOptions, route, options))

    @staticmethod
    def payload(message: Message) -> dict[str, Any]:
        """The v1 request body: notification title/body, and data values as strings."""
        content = push_content(message)
        notification = {"body": message.body}
        if content.title:
            notification["title"] = content.title
        body: dict[str, Any] = {"token": message.to, "notification": notification}
        if content.data:
            body["data"] = dict(content.data)  # FCM takes strings only
        return {"message": body}

    async def send_one(self, message: Message) -> SendResult:
        """Send one push; on a 401 fetch a new token once and send it again."""
        for attempt in (1, 2):
            try:
                token = await self.tokens.get()
            except TokenError as exc:
                return RetryLater(mask(str(exc)))
            result = await self._post(message, token)
            if not isinstance(result, _Unauthorized):
                return result
            self.tokens.invalidate(token)
            if attempt == 2:
                self._warn_auth()
        return RetryLater("fcm refused a freshly issued access token (HTTP 401)")

    async def _post(self, message: Message, token: str) -> SendResult | _Unauthorized:
        headers = {"Authorization": f"Bearer {token}"}
        reply = await self.client.request(
            "POST", self.url, json=self.payload(message), headers=headers
        )
        return self.judge(reply) if isinstance(reply, Reply) else reply

    def judge(self, reply: Reply) -> SendResult | _Unauthorized:
        """Accepted with the message name, or what FCM's error status and code stand for."""
        if 200 <= reply.status < 300:
            try:
                name = reply.json_object().get("name")
            except BadAnswer as exc:
                return RetryLater(f"fcm {exc}")
            if not isinstance(name, str) or not name:
                return RetryLater(f"fcm answer has no message name: {reply.snippet()!r}")
            return Accepted.one(name)
        try:
            error = reply.json_object().get("error")
        except BadAnswer:
            error = None
        if not isinstance(error, dict):  # not FCM speaking: a proxy, a load balancer
            if reply.status >= 500:
                head = f"fcm answered HTTP {reply.status}"
                return RetryLater(f"{head}: {reply.snippet()}", reply.retry_after)
            return status_result(reply, self.provider) or RetryLater("fcm: unreadable error")
        return self._error(reply, error)

    def _error(self, reply: Reply, error: dict[str, Any]) -> SendResult | _Unauthorized:
        status = str(error.get("status", ""))
        code = _fcm_error_code(error) or status
        text = f"fcm {code or reply.status}: {mask(str(error.get('message', '')))[:160]}"
        if code == "UNREGISTERED":
            return Failed("push token unregistered", fallback=True)
        if code == "INVALID_ARGUMENT" and _about_token(error):
            return Failed("push token unregistered: not a valid registration token", fallback=True)
        if code in ("SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR", "INVALID_ARGUMENT"):
            return Failed(text)
        if code == "QUOTA_EXCEEDED" or reply.status == 429:
            return Throttled(reply.retry_after)
        if code in ("UNAVAILABLE", "INTERNAL") or reply.status >= 500:
            return RetryLater(text, reply.retry_after)
        if reply.status == 401:
            return UNAUTHORIZED
        return status_result(reply, self.provider) or RetryLater(text)

    def _warn_auth(self) -> None:
        if not self._auth_warned:
            self._auth_warned = True
            log.warning(
                "fcm refused a fresh access token: check the service account's permissions",
                extra={"route": self.route},
            )


def _fcm_error_code(error: dict[str, Any]) -> str:
    """The FcmError errorCode among the error's details, if any."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            return str(detail.get("errorCode", ""))
    return ""


def _about_token(error: dict[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token, not the rest of the message."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations") or ()
            if any(isinstance(v, dict) and v.get("field") == "message.token" for v in violations):
                return True
    return "registration token" in str(error.get("message", "")).lower()
