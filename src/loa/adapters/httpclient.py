"""The pooled HTTP client, status mapping and Retry-After parsing shared by the HTTP adapters."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aiohttp
import orjson
from pydantic import Field
from yarl import URL

from loa.errors import AdapterError
from loa.log import mask
from loa.message import Failed, Message, RetryLater, SendResult, Throttled
from loa.settings import ConfigModel

# A provider may ask for any pause; beyond an hour the message's own expiry should decide.
MAX_RETRY_AFTER = 3600.0
SNIPPET = 160


class HttpOptions(ConfigModel):
    """Connection pool and timeouts; every HTTP adapter's options start with these."""

    timeout: float = Field(default=5.0, gt=0, le=300, description="seconds per request, in all")
    connect_timeout: float = Field(default=3.0, gt=0, le=60, description="seconds to connect")
    connections: int = Field(default=100, ge=1, le=10_000, description="open connections at most")
    keepalive: float = Field(
        default=30.0, ge=0, le=3600, description="seconds an idle connection stays open"
    )
    concurrency: int = Field(
        default=16, ge=1, le=10_000, description="requests in flight per adapter"
    )
    max_body: int = Field(
        default=1 << 20, ge=1024, le=64 << 20, description="largest answer read, in bytes"
    )


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host, without a trailing slash; ValueError otherwise."""
    try:
        url = URL(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL with a host")
    return value.rstrip("/")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value, time.time() if now is None else now)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read the same way
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class BadAnswer(AdapterError, ValueError):
    """A provider answer that cannot be read (not JSON, wrong shape): the message is retried."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read whole (up to the adapter's `max_body`)."""

    status: int
    body: bytes
    content_type: str = ""
    retry_after: float | None = None

    def text(self) -> str:
        """The body as text; bytes that are not UTF-8 are replaced."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON, or BadAnswer naming what came instead."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            kind = self.content_type or "no content type"
            raise BadAnswer(
                f"answer is not JSON (HTTP {self.status}, {kind}, {len(self.body)} bytes): "
                f"{self.snippet()!r}"
            ) from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or BadAnswer."""
        doc = self.json()
        if not isinstance(doc, dict):
            raise BadAnswer(f"answer is JSON but not an object: {self.snippet()!r}")
        return doc

    def snippet(self) -> str:
        """The start of the body on one line, numbers masked: fit for a reason or a log."""
        text = " ".join(self.body[: SNIPPET * 4].decode("utf-8", "replace").split())
        return mask(text[:SNIPPET])


def status_result(reply: Reply, provider: str) -> SendResult | None:
    """The result an HTTP status means by itself; None for 2xx (the caller reads the body)."""
    status = reply.status
    if 200 <= status < 300:
        return None
    if status in (429, 503):
        return Throttled(reply.retry_after)
    head = f"{provider} answered HTTP {status}"
    if status >= 500 or status == 408:  # 408: the provider timed out waiting, not a refusal
        return RetryLater(f"{head}: {reply.snippet()}", reply.retry_after)
    if status >= 400:
        return Failed(f"{head}: {reply.snippet()}")
    return RetryLater(f"{head} (unexpected for this API): {reply.snippet()}")


class HttpClient:
    """One pooled aiohttp session per adapter, created lazily inside the running loop."""

    def __init__(self, options: HttpOptions, provider: str) -> None:
        self.options = options
        self.provider = provider
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The session, opened on first use (aiohttp binds it to the loop that is running)."""
        if self._session is None or self._session.closed:
            opts = self.options
            connector = aiohttp.TCPConnector(
                limit=opts.connections, keepalive_timeout=opts.keepalive, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=opts.timeout, connect=opts.connect_timeout),
                # a provider's cookies must not tie one message's request to another's
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply | RetryLater | Failed:
        """Send one request and read its answer; transport trouble becomes a RetryLater.

        A JSON body that cannot be encoded is a Failed: sending it again would not help.
        """
        send_headers = dict(headers or {})
        data: bytes | Mapping[str, str] | None = form
        if json is not None:
            try:
                data = orjson.dumps(json)
            except orjson.JSONEncodeError as exc:
                return Failed(f"{self.provider}: message cannot be sent as JSON: {exc}")
            send_headers.setdefault("Content-Type", "application/json")
        try:
            async with self.session().request(
                method,
                url,
                data=data,
                params=query,
                headers=send_headers,
                allow_redirects=False,  # a redirected POST would silently turn into a GET
            ) as response:
                return await self._read(response)
        except TimeoutError:
            return RetryLater(f"{self.provider}: no answer within {self.options.timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            return RetryLater(f"{self.provider}: cannot connect: {mask(str(exc.os_error))}")
        except aiohttp.ClientError as exc:
            return RetryLater(f"{self.provider}: {type(exc).__name__}: {mask(str(exc))[:200]}")

    async def _read(self, response: aiohttp.ClientResponse) -> Reply | RetryLater:
        limit = self.options.max_body
        too_big = RetryLater(f"{self.provider}: answer larger than {limit} bytes; not read")
        if response.content_length is not None and response.content_length > limit:
            return too_big
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > limit:  # leaving the block drops the connection, unread
                return too_big
        return Reply(
            status=response.status,
            body=bytes(body),
            content_type=response.content_type,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    async def aclose(self) -> None:
        """Close the session and its connections; safe to call twice."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class HttpAdapterBase:
    """What the HTTP adapters share: the client, the bound on requests in flight, `send`."""

    provider = "provider"

    def __init__(self, route: str, options: HttpOptions) -> None:
        self.route = route
        self.client = HttpClient(options, self.provider)
        self._slots = asyncio.Semaphore(options.concurrency)

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        """One request per message, concurrently within the bound; results in message order."""
        if not messages:
            return []
        return await asyncio.gather(*(self._bounded(message) for message in messages))

    async def _bounded(self, message: Message) -> SendResult:
        async with self._slots:
            return await self.send_one(message)

    async def send_one(self, message: Message) -> SendResult:
        """Send one message; every adapter defines this."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the connection pool; safe to call twice."""
        await self.client.aclose()


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted JSON path ("data.msg_id", "items.0.id"); KeyError if absent."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node
