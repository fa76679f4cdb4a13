"""An HTTP provider simulator: Zalo ZNS, FCM v1 with OAuth, SMS gateways, with seeded faults."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiohttp
import jwt
import orjson
from aiohttp import web
from aiohttp.payload import AsyncIterablePayload
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field

from loa.settings import ConfigModel
from loa.sim.citizens import CitizenOptions, Citizens, Planned
from loa.sim.options import load_options
from loa.sim.zalo_receipts import ReceiptPoster

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
ENDPOINTS = ("zalo", "fcm", "token", "sms", "kannel")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimOptions(ConfigModel):
    """What the simulator expects and which faults it injects; all faults are off by default."""

    seed: int = 0
    latency: float = Field(default=0.0, ge=0, le=60, description="seconds added to each answer")
    jitter: float = Field(default=0.0, ge=0, le=60, description="random extra seconds, up to")
    error_ratio: float = Field(default=0.0, ge=0, le=1, description="answered with error_status")
    error_status: int = Field(default=500, ge=500, le=599)
    tps: float = Field(default=0.0, ge=0, description="requests per second; beyond: 429")
    retry_after: str = Field(default="1", description="Retry-After of 429 answers (or HTTP-date)")
    hostile: Literal["html", "truncated", "huge"] | None = Field(
        default=None, description="answer every send with HTML, cut-off JSON or a huge body"
    )
    huge_size: int = Field(default=4 << 20, ge=1, le=256 << 20, description="bytes of 'huge'")
    # Zalo ZNS
    zalo_token: str = Field(default="sim-zalo-token", min_length=1)
    no_zalo_ratio: float = Field(default=0.0, ge=0, le=1, description="phones without Zalo")
    no_zalo: list[str] = Field(default_factory=list, description="phones (84...) without Zalo")
    zalo_templates: list[str] = Field(
        default_factory=list, description="known template ids; empty: any is known"
    )
    zalo_unapproved: list[str] = Field(default_factory=list, description="templates not approved")
    zalo_webhook: str | None = Field(
        default=None, description="URL the delivered events are posted to; None: no receipts"
    )
    zalo_app_id: str = Field(default="sim-zalo-app", min_length=1)
    zalo_oa_secret: str = Field(default="sim-zalo-oa-secret", min_length=1)
    zalo_receipt_delay: float = Field(
        default=0.05, ge=0, le=3600, description="seconds from accepting to the delivered event"
    )
    zalo_silent_ratio: float = Field(
        default=0.0, ge=0, le=1, description="phones whose messages are accepted, never delivered"
    )
    zalo_silent: list[str] = Field(default_factory=list, description="phones (84...) never reached")
    zalo_late: list[str] = Field(
        default_factory=list, description="phones whose delivered event waits zalo_late_delay"
    )
    zalo_late_delay: float = Field(default=0.0, ge=0, le=3600)
    zalo_receipt_templates: list[str] = Field(
        default_factory=list,
        description="templates whose messages get delivered events; empty: every",
    )
    # FCM and its OAuth token endpoint
    public_key: str | None = Field(
        default=None, description="PEM text or file that signs assertions; None: claims only"
    )
    token_ttl: float = Field(
        default=3600.0, ge=0, description="seconds an issued token lives; 0: born expired"
    )
    token_latency: float = Field(default=0.0, ge=0, le=60)
    unregistered_ratio: float = Field(default=0.0, ge=0, le=1, description="dead push tokens")
    unregistered: list[str] = Field(default_factory=list, description="push tokens unregistered")
    invalid_tokens: list[str] = Field(default_factory=list, description="malformed push tokens")
    # SMS gateways
    sms_token: str | None = Field(default=None, description="bearer token /sms requires")
    sms_basic: str | None = Field(default=None, description="user:password /sms requires")
    kannel_user: str = "loa"
    kannel_password: str = "loa"
    # scripted citizens answering ZNS messages through loa's Zalo webhook
    citizens: CitizenOptions | None = Field(
        default=None, description="scripted people who answer the ZNS messages they get"
    )
    webhook_url: str | None = Field(
        default=None, description="loa's webhook for the Zalo route, where citizens' replies go"
    )
    webhook_secret: str = Field(default="sim-oa-secret", min_length=1)
    app_id: str = Field(default="1234567890", min_length=1, max_length=64, pattern=r"^\d+$")
    oa_id: str = Field(default="sim-oa", min_length=1, max_length=64)
    keep_ids: int = Field(default=1_000_000, ge=0, description="ids kept per endpoint, at most")
    record_requests: bool = Field(default=False, description="keep each request (tests only)")


@dataclass
class EndpointStats:
    """What one endpoint received and answered, and the ids it saw."""

    received: int = 0
    answered: Counter[str] = field(default_factory=Counter)  # HTTP status -> count
    outcomes: Counter[str] = field(default_factory=Counter)  # accepted, no_account, ...
    ids: list[str] = field(default_factory=list)  # tracking ids (or tokens) as they arrived
    accepted: dict[str, str] = field(default_factory=dict)  # id -> provider id handed out

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "received": self.received,
            "answered": dict(self.answered),
            "outcomes": dict(self.outcomes),
            "ids": list(self.ids),
            "accepted": dict(self.accepted),
        }


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A test service-account key written to disk, and what a simulator needs to check it."""

    path: Path
    client_email: str
    project_id: str
    public_key_pem: str


def generate_private_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key (about 50 ms: share one across tests)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_service_account(
    path: Path,
    *,
    token_uri: str,
    project_id: str = "loa-sim",
    client_email: str = "loa-sim@loa-sim.iam.gserviceaccount.com",
    private_key: rsa.RSAPrivateKey | None = None,
) -> ServiceAccount:
    """Write a Google-style service-account key file for tests and demos (mode 0600)."""
    key = private_key or generate_private_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    doc = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": hashlib.sha1(public, usedforsecurity=False).hexdigest(),
        "private_key": pem,
        "client_email": client_email,
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return ServiceAccount(path, client_email, project_id, public.decode())


class HttpSimulator:
    """An aiohttp server on loopback speaking the providers' HTTP APIs, with faults.

    Endpoints: POST /message/template (Zalo ZNS), POST /token (OAuth2 JWT bearer grant),
    POST /v1/projects/{project}/messages:send (FCM v1), POST /sms (a JSON SMS gateway),
    GET or POST /cgi-bin/sendsms (Kannel), GET /_sim/stats (everything counted, as JSON).
    """

    def __init__(
        self,
        options: SimOptions | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.options = _options(options)
        self.host = host
        self.port = port
        self.stats: dict[str, EndpointStats] = {name: EndpointStats() for name in ENDPOINTS}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._rng = random.Random(self.options.seed)
        self._tokens: dict[str, float] = {}  # issued access token -> expiry (monotonic)
        self._serial = itertools.count(1)
        self._window = (0.0, 0)
        self._public_key = _public_key(self.options.public_key)
        self._runner: web.AppRunner | None = None
        self._receipts: ReceiptPoster | None = None
        self.citizens = Citizens(self.options.citizens) if self.options.citizens else None
        self._answering: set[asyncio.Task[None]] = set()  # citizens' replies still to come
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The base URL, once started."""
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        """Where service-account keys should point their token_uri."""
        return f"{self.url}/token"

    def configure(self, **changes: Any) -> None:
        """Change options while running (a test turns a fault on or off); a new seed reseeds."""
        seed = self.options.seed
        self.options = _options({**self.options.model_dump(), **changes})
        self._public_key = _public_key(self.options.public_key)
        if self.options.seed != seed:
            self._rng = random.Random(self.options.seed)

    def expire_tokens(self) -> None:
        """Make every access token issued so far expired: the next FCM request gets a 401."""
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    def has_zalo(self, phone: str) -> bool:
        """Whether this phone (84... or +84...) has a Zalo account here."""
        phone = phone.lstrip("+")
        return phone not in self.options.no_zalo and not self._draw(
            phone, self.options.no_zalo_ratio
        )

    def silent(self, phone: str) -> bool:
        """Whether Zalo accepts this phone's messages and never delivers them."""
        phone = phone.lstrip("+")
        return phone in self.options.zalo_silent or self._draw(
            f"silent:{phone}", self.options.zalo_silent_ratio
        )

    @property
    def receipts_waiting(self) -> int:
        """Delivered events not posted yet."""
        return self._receipts.waiting if self._receipts is not None else 0

    def registered(self, token: str) -> bool:
        """Whether this push token is registered here."""
        return token not in self.options.unregistered and not self._draw(
            token, self.options.unregistered_ratio
        )

    def _draw(self, key: str, ratio: float) -> bool:
        """A stable, seeded yes for `ratio` of keys: the same phone always answers the same."""
        if ratio <= 0:
            return False
        digest = hashlib.blake2b(f"{self.options.seed}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64 < ratio

    def snapshot(self) -> dict[str, Any]:
        """Every endpoint's counters and ids, as GET /_sim/stats returns them."""
        found: dict[str, Any] = {name: stats.as_json() for name, stats in self.stats.items()}
        if self.citizens is not None:
            found["citizens"] = self.citizens.stats()
        return found

    # --- lifecycle ---------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (the server wraps it)."""
        app = web.Application(client_max_size=16 << 20)
        app.router.add_post("/message/template", self._endpoint("zalo", self._zalo))
        app.router.add_post("/token", self._endpoint("token", self._token, faults=False))
        app.router.add_post(
            "/v1/projects/{project}/messages:send", self._endpoint("fcm", self._fcm)
        )
        app.router.add_post("/sms", self._endpoint("sms", self._sms))
        app.router.add_route("*", "/cgi-bin/sendsms", self._endpoint("kannel", self._kannel))
        app.router.add_get("/_sim/stats", self._stats)
        return app

    async def start(self) -> HttpSimulator:
        """Listen; with port 0 the system picks a free port (see .port and .url)."""
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection; safe to call twice."""
        runner, self._runner = self._runner, None
        for task in list(self._answering):
            task.cancel()  # a reply not sent by now never is
        if self._client is not None:
            await self._client.close()
            self._client = None
        if runner is not None:
            await runner.cleanup()
        receipts, self._receipts = self._receipts, None
        if receipts is not None:
            await receipts.aclose()

    async def __aenter__(self) -> HttpSimulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- faults and bookkeeping --------------------------------------------------------

    def _endpoint(
        self,
        name: str,
        logic: Callable[[web.Request, EndpointStats], Awaitable[web.Response]],
        *,
        faults: bool = True,
    ) -> Handler:
        stats = self.stats[name]

        async def handle(request: web.Request) -> web.StreamResponse:
            stats.received += 1
            fault = await self._faults(request) if faults else None
            if fault is None:
                response = await logic(request, stats)
            else:
                response = fault[0]
                stats.outcomes[fault[1]] += 1
            stats.answered[str(response.status)] += 1
            return response

        return handle

    async def _faults(self, request: web.Request) -> tuple[web.Response, str] | None:
        """Latency, the TPS cap, hostile bodies and random 5xx, in that order (with the kind)."""
        opts = self.options
        delay = opts.latency + (self._rng.random() * opts.jitter if opts.jitter else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if opts.tps and self._over_tps():
            busy = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down"}}
            headers = {"Retry-After": opts.retry_after}
            return _json(busy, status=429, headers=headers), "over_tps"
        if opts.hostile is not None:
            await request.read()
            return self._hostile(opts.hostile), f"hostile_{opts.hostile}"
        if opts.error_ratio and self._rng.random() < opts.error_ratio:
            headers = {"Retry-After": opts.retry_after}
            failure = web.Response(
                status=opts.error_status, text="simulated provider failure", headers=headers
            )
            return failure, "error"
        return None

    def _over_tps(self) -> bool:
        """A one-second window counter, like a provider's TPS cap."""
        now = time.monotonic()
        start, count = self._window
        if now - start >= 1.0:
            start, count = now, 0
        self._window = (start, count + 1)
        return count >= self.options.tps

    def _hostile(self, kind: str) -> web.Response:
        if kind == "html":
            html = "<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
            return web.Response(status=200, text=html, content_type="text/html")
        if kind == "truncated":
            return web.Response(
                status=200,
                body=b'{"error": 0, "data": {"msg_id": "7f3a',
                content_type="application/json",
            )
        # streamed without a length, as a misbehaving server would: the client must count
        return web.Response(
            status=200,
            body=AsyncIterablePayload(_padding(self.options.huge_size)),
            content_type="application/json",
        )

    def _keep(self, stats: EndpointStats, key: str, provider_id: str | None = None) -> None:
        if len(stats.ids) < self.options.keep_ids:
            stats.ids.append(key)
            if provider_id is not None:
                stats.accepted[key] = provider_id

    def _record(self, name: str, doc: dict[str, Any]) -> None:
        if self.options.record_requests:
            self.requests.append((name, doc))

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.snapshot())

    # --- Zalo ZNS ----------------------------------------------------------------------

    async def _zalo(self, request: web.Request, stats: EndpointStats) -> web.Response:
        doc = await _body(request)
        if doc is None:
            stats.outcomes["bad_request"] += 1
            return _json({"error": -122, "message": "Body format invalid"})
        self._record("zalo", {**doc, "access_token": request.headers.get("access_token")})
        tracking_id = str(doc.get("tracking_id", ""))
        verdict = self._zalo_verdict(request, doc)
        if verdict is not None:
            stats.outcomes[verdict[2]] += 1
            self._keep(stats, tracking_id)
            return _json({"error": verdict[0], "message": verdict[1]})
        msg_id = hashlib.md5(f"{tracking_id}:{next(self._serial)}".encode(), usedforsecurity=False)
        self._keep(stats, tracking_id, msg_id.hexdigest())
        stats.outcomes["accepted"] += 1
        phone, template = str(doc.get("phone", "")), str(doc.get("template_id", ""))
        self._deliver(phone, template, msg_id.hexdigest(), tracking_id, stats)
        if self.citizens is not None:
            self._citizen_reads(doc)
        data = {
            "msg_id": msg_id.hexdigest(),
            "sent_time": str(int(time.time() * 1000)),
            "quota": {"dailyQuota": "500000", "remainingQuota": "499999"},
        }
        return _json({"error": 0, "message": "Success", "data": data})

    def _deliver(
        self, phone: str, template: str, msg_id: str, tracking_id: str, stats: EndpointStats
    ) -> None:
        """Post the delivered event later, unless this phone is one Zalo never reaches."""
        opts = self.options
        if opts.zalo_webhook is None:
            return
        if opts.zalo_receipt_templates and template not in opts.zalo_receipt_templates:
            return
        if self.silent(phone):
            stats.outcomes["silent"] += 1
            return
        if self._receipts is None:
            self._receipts = ReceiptPoster(
                opts.zalo_webhook, opts.zalo_app_id, opts.zalo_oa_secret, stats.outcomes
            )
        else:  # options may have changed since (configure)
            self._receipts.url = opts.zalo_webhook
            self._receipts.app_id, self._receipts.secret = opts.zalo_app_id, opts.zalo_oa_secret
        late = phone.lstrip("+") in opts.zalo_late
        delay = opts.zalo_late_delay if late else opts.zalo_receipt_delay
        if late:
            stats.outcomes["late"] += 1
        self._receipts.later(delay, msg_id, tracking_id)

    def _zalo_verdict(
        self, request: web.Request, doc: dict[str, Any]
    ) -> tuple[int, str, str] | None:
        """The ZNS error (code, message, outcome) this request earns, or None to accept it."""
        opts = self.options
        if request.headers.get("access_token") != opts.zalo_token:
            return -124, "Access token invalid", "token_invalid"
        phone, template = str(doc.get("phone", "")), str(doc.get("template_id", ""))
        if not phone.isdigit() or not 9 <= len(phone) <= 15:
            return -108, "Phone number invalid", "phone_invalid"
        if opts.zalo_templates and template not in opts.zalo_templates:
            return -109, "Template ID invalid", "template_invalid"
        if template in opts.zalo_unapproved:
            return -131, "Template not approved", "template_unapproved"
        if not isinstance(doc.get("template_data"), dict):
            return -112, "Template data invalid", "template_data_invalid"
        if not self.has_zalo(phone):
            return -118, "Zalo account not existed", "no_account"
        return None

    def _citizen_reads(self, doc: dict[str, Any]) -> None:
        """A scripted citizen reads the ZNS (its template and data) and may answer it later."""
        assert self.citizens is not None
        data = doc.get("template_data") or {}
        words = " ".join([str(doc.get("template_id", "")), *(str(v) for v in data.values())])
        planned = self.citizens.heard(str(doc.get("phone", "")), words)
        if planned is None:
            return
        task = asyncio.get_running_loop().create_task(self._citizen_answers(planned))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _citizen_answers(self, planned: Planned) -> None:
        """The reply as Zalo sends it: a signed `user_send_text` event to loa's webhook."""
        assert self.citizens is not None
        await asyncio.sleep(planned.delay)
        opts = self.options
        if not opts.webhook_url:
            self.citizens.done(planned, "no webhook_url")
            return
        stamp = str(int(time.time() * 1000))
        event = {
            "app_id": opts.app_id,
            "event_name": "user_send_text",
            "timestamp": stamp,
            "sender": {"id": planned.phone},
            "recipient": {"id": opts.oa_id},
            "message": {"msg_id": f"sim-{next(self._serial)}", "text": planned.text},
        }
        body = orjson.dumps(event)
        signed = opts.app_id.encode() + body + stamp.encode() + opts.webhook_secret.encode()
        headers = {
            "Content-Type": "application/json",
            "X-ZEvent-Signature": hashlib.sha256(signed).hexdigest(),
        }
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        status: int | str
        try:
            async with self._client.post(opts.webhook_url, data=body, headers=headers) as answer:
                status = 0 if answer.status == 200 else f"HTTP {answer.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        self.citizens.done(planned, status)

    # --- OAuth2 token endpoint and FCM -------------------------------------------------

    async def _token(self, request: web.Request, stats: EndpointStats) -> web.Response:
        if self.options.token_latency:
            await asyncio.sleep(self.options.token_latency)
        form = await request.post()
        problem = self._check_assertion(
            str(form.get("grant_type", "")), str(form.get("assertion", ""))
        )
        if problem is not None:
            stats.outcomes["refused"] += 1
            return _json({"error": "invalid_grant", "error_description": problem}, status=400)
        token = f"sim-at-{next(self._serial)}-{self._rng.getrandbits(64):016x}"
        self._tokens[token] = time.monotonic() + self.options.token_ttl
        stats.outcomes["issued"] += 1
        ttl = max(1, round(self.options.token_ttl))
        return _json({"access_token": token, "expires_in": ttl, "token_type": "Bearer"})

    def _check_assertion(self, grant_type: str, assertion: str) -> str | None:
        """Why this token request is refused, or None: signature (if a key is set) and claims."""
        if grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return f"unsupported grant_type {grant_type!r}"
        try:
            if self._public_key is not None:
                claims = jwt.decode(
                    assertion, self._public_key, algorithms=["RS256"], audience=self.token_url
                )
            else:
                claims = jwt.decode(
                    assertion, options={"verify_signature": False, "verify_aud": False}
                )
        except jwt.PyJWTError as exc:
            return f"assertion refused: {exc}"
        if claims.get("aud") != self.token_url:
            return "assertion aud is not this token endpoint"
        if SCOPE not in str(claims.get("scope", "")).split():
            return "assertion does not ask for the firebase.messaging scope"
        if not claims.get("iss") or not isinstance(claims.get("exp"), int):
            return "assertion has no iss or exp"
        return None

    async def _fcm(self, request: web.Request, stats: EndpointStats) -> web.Response:
        if not self._authorised(request.headers.get("Authorization", "")):
            stats.outcomes["unauthenticated"] += 1
            return _fcm_error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
            )
        doc = await _body(request)
        message = doc.get("message") if doc else None
        token = message.get("token") if isinstance(message, dict) else None
        if not isinstance(token, str) or not token or token in self.options.invalid_tokens:
            stats.outcomes["invalid_token"] += 1
            self._keep(stats, str(token))
            return _fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        self._record("fcm", doc or {})
        if not self.registered(token):
            stats.outcomes["unregistered"] += 1
            self._keep(stats, token)
            return _fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        name = f"projects/{request.match_info['project']}/messages/{next(self._serial)}"
        stats.outcomes["accepted"] += 1
        self._keep(stats, token, name)
        return _json({"name": name})

    def _authorised(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        expiry = self._tokens.get(token)
        if scheme.lower() != "bearer" or expiry is None or self.options.token_ttl == 0:
            return False
        return time.monotonic() < expiry

    # --- SMS gateways ------------------------------------------------------------------

    async def _sms(self, request: web.Request, stats: EndpointStats) -> web.Response:
        if not self._sms_authorised(request.headers.get("Authorization", "")):
            stats.outcomes["unauthorised"] += 1
            return _json({"status": "error", "message": "unauthorised"}, status=401)
        doc = await _body(request)
        if doc is None or not doc.get("to") or "text" not in doc:
            stats.outcomes["bad_request"] += 1
            return _json({"status": "error", "message": "to and text are required"}, status=400)
        self._record("sms", doc)
        message_id = f"gw-{next(self._serial)}"
        stats.outcomes["accepted"] += 1
        self._keep(stats, str(doc.get("id", "")), message_id)
        return _json({"status": "ok", "data": {"code": 0, "message_id": message_id}})

    def _sms_authorised(self, header: str) -> bool:
        token, basic = self.options.sms_token, self.options.sms_basic
        if token is not None and header != f"Bearer {token}":
            return False
        if basic is not None:
            user, _, password = basic.partition(":")
            return header == aiohttp.encode_basic_auth(user, password)
        return True

    async def _kannel(self, request: web.Request, stats: EndpointStats) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        self._record("kannel", dict(params))
        if (params.get("username"), params.get("password")) != (
            self.options.kannel_user,
            self.options.kannel_password,
        ):
            stats.outcomes["unauthorised"] += 1
            return web.Response(status=403, text="Authorization failed for sendsms")
        if not params.get("to"):
            stats.outcomes["bad_request"] += 1
            return web.Response(status=400, text="Missing receiver number")
        stats.outcomes["accepted"] += 1
        self._keep(stats, params.get("id", ""))  # Kannel hands out no message id
        return web.Response(status=202, text="0: Accepted for delivery")


async def _padding(size: int) -> AsyncIterator[bytes]:
    """A JSON object of `size` bytes and more, in 64 KiB pieces."""
    yield b'{"error": 0, "pad": "'
    chunk = b" " * 65_536
    for _ in range(0, size, len(chunk)):
        yield chunk
    yield b'"}'


def _options(options: SimOptions | Mapping[str, Any] | None) -> SimOptions:
    """Validated options; a wrong one is a ConfigError naming the key."""
    return load_options(SimOptions, options, "http")


def _public_key(value: str | None) -> Any:
    """The verification key: PEM text as given, or read from a file."""
    if value is None:
        return None
    text = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()
    return serialization.load_pem_public_key(text.encode())


async def _body(request: web.Request) -> dict[str, Any] | None:
    """The JSON object in the request body, or None."""
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _json(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(doc), content_type="application/json", headers=headers
    )


def _fcm_error(status: int, name: str, message: str, code: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if code is not None:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return _json({"error": error}, status=status)


def run_http_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    options: SimOptions | Mapping[str, Any] | None = None,
    *,
    on_ready: Callable[[HttpSimulator], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (for `loa sim http`); `on_ready` gets the started simulator."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        async with HttpSimulator(options, host=host, port=port) as sim:
            log.info("http simulator listening", extra={"url": sim.url})
            if on_ready is not None:
                on_ready(sim)
            await stop.wait()

    asyncio.run(serve())
