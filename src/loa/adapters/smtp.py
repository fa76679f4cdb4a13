"""The SMTP adapter: e-mail over a pool of persistent sessions, MIME rendered once per content."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import email.policy
import email.utils
import ipaddress
import logging
import os
import random
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any, Literal

import aiosmtplib
from pydantic import Field, SecretStr, field_validator, model_validator

from loa.adapters.registry import parse_options
from loa.errors import AdapterError, AdapterTimeout
from loa.log import mask
from loa.message import (
    Accepted,
    Failed,
    Message,
    RetryLater,
    SendResult,
    Throttled,
    email_content,
)
from loa.settings import ConfigModel

log = logging.getLogger(__name__)

CRLF = b"\r\n"
# The stdlib's own policy for the headers we let it fold once (From, Reply-To, extra headers):
# CRLF line ends and 7-bit output, so everything we send is ASCII and needs no 8BITMIME.
POLICY = email.policy.SMTP.clone(cte_type="7bit")
MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
B64_LINE_BYTES = 57  # 57 bytes -> 76 base64 characters per line, as the stdlib writes
WORD_BYTES = 42  # UTF-8 bytes per encoded word: "Subject: =?utf-8?b?<56>?=" is 77 characters
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}

# RFC 5322 atext: what a dot-atom local part may hold, without quoting.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# The common case in one match: an ASCII dot-atom local part at a host name of 2+ labels.
_ADDRESS = re.compile(rf"({_LOCAL.pattern})@((?:{_LABEL.pattern}\.)+{_LABEL.pattern})")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':' (RFC 5322 ftext)
# C0 controls except tab, DEL, and the Unicode line and paragraph separators
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029]")
_PRINTABLE_7BIT = re.compile(rb"[\t\r\n\x20-\x7e]*")  # CR LF only as line ends here
_SENDER = re.compile(r"\s*(?:(.*?)\s*<([^<>]*)>|([^<>]*?))\s*")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Where common servers put the queue id in the 250 reply to DATA: Postfix "queued as 4F3A2B",
# Exim "id=1qAbCd-0001Xy-AB"; anything else and the provider id is our own Message-ID.
_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)|\bid=([A-Za-z0-9._-]+)", re.IGNORECASE)
_BRACKETED = re.compile(r"<[^<>]*>")
_RATE_LIMITED = re.compile(r"rate|too many|throttl|limit exceeded|slow down", re.IGNORECASE)
_RESERVED = frozenset(
    {
        "bcc",
        "cc",
        "content-transfer-encoding",
        "content-type",
        "date",
        "from",
        "message-id",
        "mime-version",
        "reply-to",
        "return-path",
        "sender",
        "subject",
        "to",
    }
)
# What a failed session raises: the connection is closed and the message is tried again later.
_TRANSPORT_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


# ---------------------------------------------------------------------------------------------
# addresses


def normalize_address(address: str) -> str:
    """The ASCII addr-spec to put on the wire, or ValueError saying what is wrong (not the address).

    Only a bare `local@domain` is taken: no display name, no comments, no quoting, nothing that
    could smuggle a header or an SMTP parameter. A non-ASCII domain goes out as IDNA (punycode);
    a non-ASCII local part would need SMTPUTF8, which this adapter does not use.
    """
    fast = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if fast is not None and len(fast.group(1)) <= 64 and len(address) <= 254:
        return f"{fast.group(1)}@{fast.group(2).lower()}"
    return _normalize_slowly(address)


def _normalize_slowly(address: str) -> str:
    """normalize_address for the uncommon cases: IDN domains, and saying what is wrong."""
    if not isinstance(address, str) or not address:
        raise ValueError("invalid e-mail address: empty")
    if _CONTROL.search(address) or any(c.isspace() for c in address):
        raise ValueError("invalid e-mail address: has a line break, space or control character")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("invalid e-mail address: no local@domain")
    if not local.isascii():
        raise ValueError("invalid e-mail address: non-ASCII local part needs SMTPUTF8")
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        raise ValueError("invalid e-mail address: malformed local part")
    try:
        ascii_domain = normalize_domain(domain)
    except ValueError as exc:
        raise ValueError(f"invalid e-mail address: {exc}") from None
    if len(local) + 1 + len(ascii_domain) > 254:
        raise ValueError("invalid e-mail address: longer than 254 characters")
    return f"{local}@{ascii_domain}"


def normalize_domain(domain: str) -> str:
    """An internet host name in ASCII (IDNA for non-ASCII labels), or ValueError saying why."""
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("domain is not a valid IDN") from None
    labels = domain.split(".")
    if len(domain) > 253:
        raise ValueError("domain longer than 253 characters")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("malformed domain")
    if len(labels) < 2:
        raise ValueError("domain needs at least two labels")
    return domain.lower()


def parse_mailbox(value: str, what: str) -> tuple[str, str]:
    """`Display Name <a@b.c>` or `a@b.c` -> (display name, ASCII address); ValueError if not."""
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains a line break or control character")
    match = _SENDER.fullmatch(value)
    if match is None:
        raise ValueError(f"{what} must look like 'Name <user@example.vn>' or 'user@example.vn'")
    name, bracketed, bare = match.groups()
    name = (name or "").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    try:
        return name, normalize_address((bracketed if bare is None else bare).strip())
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def fold_header(name: str, value: str | Address) -> bytes:
    """One header line (or folded lines) as the stdlib writes it: RFC 2047 words where needed."""
    folded: str = POLICY.header_factory(name, value).fold(policy=POLICY)
    return folded.encode("ascii")


# ---------------------------------------------------------------------------------------------
# options


class SmtpOptions(ConfigModel):
    """Options of the SMTP adapter (a route's `options` table)."""

    host: str = Field(min_length=1)
    port: int | None = Field(
        default=None, ge=1, le=65535, description="default: 25, 587 (starttls) or 465 (tls)"
    )
    username: str | None = None
    password: SecretStr | None = None
    security: Literal["none", "starttls", "tls"] = "starttls"
    validate_certs: bool = True
    cert_bundle: str | None = Field(default=None, description="CA file for a private relay")
    sender: str = Field(min_length=3, description="the From: 'Bộ Y tế <thongbao@moh.gov.vn>'")
    reply_to: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="added to every e-mail")
    connections: int = Field(default=4, ge=1, le=256, description="persistent sessions")
    timeout: float = Field(default=10.0, gt=0, le=600, description="seconds per SMTP command")
    message_id_domain: str | None = Field(default=None, description="default: the sender's")
    helo_name: str | None = Field(default=None, description="EHLO name; default: our FQDN")
    cache_size: int = Field(default=256, ge=1, le=100_000, description="contents kept rendered")
    cache_bytes: int = Field(default=64 << 20, ge=1 << 16, description="their total size")

    @field_validator("sender")
    @classmethod
    def _sender_is_a_mailbox(cls, value: str) -> str:
        parse_mailbox(value, "sender")
        return value

    @field_validator("reply_to")
    @classmethod
    def _reply_to_is_a_mailbox(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mailbox(value, "reply_to")
        return value

    @field_validator("headers")
    @classmethod
    def _headers_are_safe(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} must be printable ASCII without ':'")
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name!r} is set by the adapter itself")
            if _CONTROL.search(value):
                raise ValueError(f"header {name!r} contains a line break or control character")
        return headers

    @field_validator("message_id_domain")
    @classmethod
    def _domain_is_a_host(cls, value: str | None) -> str | None:
        return None if value is None else normalize_domain(value)

    @field_validator("helo_name")
    @classmethod
    def _helo_is_a_word(cls, value: str | None) -> str | None:
        if value is not None and (not value or _CONTROL.search(value) or " " in value):
            raise ValueError("helo_name must be one word, a host name")
        return value

    @model_validator(mode="after")
    def _credentials_fit(self) -> SmtpOptions:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username is not None and self.security == "none" and not _loopback(self.host):
            # AUTH PLAIN/LOGIN would carry the password across the network in clear text
            raise ValueError("username/password need security = 'starttls' or 'tls'")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the usual one for the security mode."""
        return self.port or DEFAULT_PORTS[self.security]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# rendering


def encode_subject(subject: str) -> bytes:
    """The Subject header line(s): plain ASCII when it is, else RFC 2047 base64 encoded words."""
    if _CONTROL.search(subject):
        raise ValueError("subject contains a line break or control character")
    raw = subject.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
    plain = _fold_ascii("Subject", subject) if subject.isascii() else None
    if plain is not None:
        return plain
    words: list[bytes] = []
    start = 0
    while start < len(raw):
        end = min(start + WORD_BYTES, len(raw))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:  # never split a UTF-8 sequence
            end -= 1
        words.append(b"=?utf-8?b?" + binascii.b2a_base64(raw[start:end], newline=False) + b"?=")
        start = end
    # whitespace between adjacent encoded words is dropped by decoders (RFC 2047 6.2)
    return b"Subject: " + b"\r\n ".join(words) + CRLF


def _fold_ascii(name: str, value: str) -> bytes | None:
    """`name: value` folded before spaces into lines of at most 78; None if it cannot be."""
    if "=?" in value or value != value.strip() or "  " in value:
        return None  # it would read as an encoded word, or a parser would eat the spaces
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > MAX_LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    if any(len(text) > MAX_LINE for text in lines):
        return None
    return "\r\n".join(lines).encode("ascii") + CRLF


def encode_text(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, body with CRLF lines) chosen as the stdlib's set_content does.

    7bit for printable ASCII with short lines; otherwise quoted-printable or base64, whichever is
    shorter on the first ten lines (the stdlib's own sniff), but encoded by binascii (C) instead
    of the stdlib's pure-Python quoprimime: a distinct body per person then costs microseconds.
    Unlike the stdlib, ASCII with control characters is not sent as 7bit (RFC 2045 2.7), and
    quoted-printable lines stop at 76 characters (RFC 2045 6.7), not 78.
    """
    lines = text.encode("utf-8").splitlines()
    body = CRLF.join(lines) + CRLF
    if max(map(len, lines), default=0) <= MAX_LINE and _PRINTABLE_7BIT.fullmatch(body):
        return b"7bit", body
    sniff = CRLF.join(lines[:10]) + CRLF
    if len(binascii.b2a_qp(sniff, istext=True)) <= len(binascii.b2a_base64(sniff)):
        return b"quoted-printable", binascii.b2a_qp(body, istext=True)
    return b"base64", _base64_lines(body)


def _base64_lines(data: bytes) -> bytes:
    return b"".join(
        binascii.b2a_base64(data[i : i + B64_LINE_BYTES], newline=False) + CRLF
        for i in range(0, len(data), B64_LINE_BYTES)
    )


def _text_part(text: str, subtype: bytes) -> bytes:
    cte, encoded = encode_text(text)
    return (
        b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + encoded
    )


def render_content(static: bytes, subject: str, body: str, html: str | None) -> bytes:
    """Every header that is the same for all recipients, then the MIME body: a header block's tail.

    `static` is the adapter's fixed headers (From, Reply-To, extras). Per-recipient headers go
    in front of the result; a header block may list its fields in any order (RFC 5322 3.6).
    """
    head = static + (encode_subject(subject) if subject else b"") + b"MIME-Version: 1.0\r\n"
    if html is None:
        return head + _text_part(body, b"plain")
    plain, rich = _text_part(body, b"plain"), _text_part(html, b"html")
    boundary = _boundary(plain, rich)
    delimiter = b"--" + boundary
    return b"".join(
        (
            head,
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
            delimiter + CRLF + plain,  # the CRLF before a delimiter belongs to it (RFC 2046 5.1.1)
            CRLF + delimiter + CRLF + rich,
            CRLF + delimiter + b"--\r\n",
        )
    )


def _boundary(*parts: bytes) -> bytes:
    while True:  # a random boundary collides with encoded text in theory only, but check
        boundary = b"=_loa_" + secrets.token_hex(16).encode("ascii")
        if not any(boundary in part for part in parts):
            return boundary


@dataclass
class ContentCache:
    """A bounded LRU of rendered contents keyed by (subject, body, html): entries and bytes."""

    max_entries: int
    max_bytes: int
    hits: int = 0
    misses: int = 0
    size: int = 0
    _items: OrderedDict[tuple[str, str, str | None], bytes] = field(default_factory=OrderedDict)

    def get(self, key: tuple[str, str, str | None]) -> bytes | None:
        """The cached content, marked as recently used; None on a miss."""
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, str | None], value: bytes) -> None:
        """Keep `value`, evicting the least recently used beyond either bound."""
        self._items[key] = value
        self.size += len(value)
        while len(self._items) > self.max_entries or (
            self.size > self.max_bytes and len(self._items) > 1
        ):
            _, old = self._items.popitem(last=False)
            self.size -= len(old)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One e-mail ready for the wire: envelope recipient, Message-ID (no brackets) and bytes."""

    to: str
    message_id: str
    data: bytes


# ---------------------------------------------------------------------------------------------
# reply codes


def classify(code: int, text: str, *, sender_stage: bool = False) -> SendResult:
    """What an SMTP refusal means for one message.

    - 421 (service closing the channel: overloaded, too many sessions, rate limited) and 452
      (insufficient system storage: the server is full for now) are about the server, not this
      message: Throttled, so the whole route slows down instead of burning retries. A 452 with
      enhanced code 4.2.2 (this one mailbox is full) is about the person: RetryLater.
    - 451 (local error in processing, greylisting) is about this transaction: RetryLater,
      unless the server says it is rate limiting us: Throttled.
    - other 4xx: RetryLater.
    - 550/551/553 (mailbox unavailable, user not local, mailbox name not allowed) at RCPT or
      DATA: this person cannot be reached by e-mail: Failed with fallback to the next channel.
      Refused at MAIL FROM it is our sender that is refused, not the person: plain Failed.
    - other 5xx: Failed.
    """
    reason = f"{code} {mask(' '.join(text.split()))}"[:200]
    if code == 421 or (code == 452 and "4.2.2" not in text):
        return Throttled()
    if code == 451 and _RATE_LIMITED.search(_BRACKETED.sub("", text)):  # not in an address
        return Throttled()
    if 400 <= code < 500:
        return RetryLater(reason)
    if code in (550, 551, 553) and not sender_stage:
        return Failed(reason, fallback=True)
    if 500 <= code < 600:
        return Failed(reason)
    return RetryLater(f"unexpected reply {reason}")


def provider_id(reply: str, message_id: str) -> str:
    """The queue id from the server's 250 reply to DATA if it gives one, else our Message-ID."""
    found = _QUEUE_ID.search(reply)
    if found is None:
        return message_id
    return found.group(1) or found.group(2)


# ---------------------------------------------------------------------------------------------
# the adapter


@dataclass(slots=True)
class _Session:
    """One slot of the pool: an SMTP session, opened when first needed."""

    smtp: aiosmtplib.SMTP | None = None

    def discard(self) -> None:
        """Drop the session without QUIT: after a failure its state is unknown."""
        if self.smtp is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be gone already
                self.smtp.close()
            self.smtp = None


@dataclass(slots=True)
class _Run:
    """The shared state of one send(): the work list and what each session made of it."""

    jobs: list[Rendered | Failed]
    results: list[SendResult | None]
    todo: Iterator[int]
    stopped: list[SendResult] = field(default_factory=list)


class SmtpAdapter:
    """Sends e-mail through a pool of persistent SMTP sessions.

    A message is `Message(id, to=<address>, body=<text>, extra=email_extra(EmailContent(...)))`.
    The MIME content is rendered once per distinct (subject, body, html) and kept in a bounded
    LRU; per recipient only Date, To and Message-ID are written in front of it. A chunk is spread
    over the pool: each session takes the next message when it is free, so a lost session
    leaves its remaining work to the others.
    """

    def __init__(self, route: str, options: SmtpOptions) -> None:
        self.route = route
        self.options = options
        name, sender = parse_mailbox(options.sender, "sender")
        self.envelope_from = sender
        self._id_domain = options.message_id_domain or sender.rpartition("@")[2]
        self._static = self._static_headers(name, sender)
        self.cache = ContentCache(options.cache_size, options.cache_bytes)
        self._rng = random.Random(os.urandom(16))  # Message-ID uniqueness, not secrecy
        self._date_second = -1
        self._date = ""
        self._sessions = [_Session() for _ in range(options.connections)]
        self._idle: asyncio.Queue[_Session] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections_opened = 0

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> SmtpAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(SmtpOptions, route, options))

    def _static_headers(self, name: str, sender: str) -> bytes:
        opts = self.options
        head = fold_header("From", Address(name, addr_spec=sender))
        if opts.reply_to is not None:
            reply_name, reply_address = parse_mailbox(opts.reply_to, "reply_to")
            head += fold_header("Reply-To", Address(reply_name, addr_spec=reply_address))
        for header, value in opts.headers.items():
            head += fold_header(header, value)
        return head

    # --- rendering ---------------------------------------------------------------------------

    def render(self, message: Message) -> Rendered | Failed:
        """The wire bytes of one message, or Failed saying why it cannot be sent."""
        try:
            to = normalize_address(message.to)
            content = self._content(message)
        except UnicodeEncodeError:
            return Failed("text is not valid Unicode (a lone surrogate)")
        except ValueError as exc:
            return Failed(str(exc))
        message_id = f"{_ID_UNSAFE.sub('_', message.id)[:64]}.{self._rng.getrandbits(64):016x}"
        message_id += f"@{self._id_domain}"
        head = f"Date: {self._now()}\r\nTo: {to}\r\nMessage-ID: <{message_id}>\r\n"
        return Rendered(to, message_id, head.encode("ascii") + content)

    def _content(self, message: Message) -> bytes:
        mail = email_content(message)
        subject, html = mail.subject, mail.html
        key = (subject, message.body, html)
        content = self.cache.get(key)
        if content is None:
            content = render_content(self._static, subject, message.body, html)
            self.cache.put(key, content)
        return content

    def _now(self) -> str:
        """The Date header value, formatted once per second."""
        now = time.time()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date = email.utils.formatdate(now)[:-5] + "+0000"
        return self._date

    # --- sending -----------------------------------------------------------------------------

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        """One result per message, in order; transport failures become RetryLater, never raise."""
        jobs = [self.render(m) for m in messages]
        results: list[SendResult | None] = [j if isinstance(j, Failed) else None for j in jobs]
        sendable = [i for i, job in enumerate(jobs) if not isinstance(job, Failed)]
        if sendable:
            run = _Run(jobs, results, iter(sendable))
            idle = self._pool()
            async with asyncio.TaskGroup() as group:
                for _ in range(min(len(sendable), len(self._sessions))):
                    group.create_task(self._work(idle, run))
            self._fill_unsent(run)
        return [r if r is not None else RetryLater("not sent") for r in results]

    def _pool(self) -> asyncio.Queue[_Session]:
        """The idle sessions, bound to the running loop (a new loop starts with new sessions)."""
        loop = asyncio.get_running_loop()
        if self._idle is None or self._loop is not loop:
            for session in self._sessions:
                session.discard()
            self._idle = asyncio.Queue()
            for session in self._sessions:
                self._idle.put_nowait(session)
            self._loop = loop
        return self._idle

    async def _work(self, idle: asyncio.Queue[_Session], run: _Run) -> None:
        """Take a free session and send the chunk's next messages on it, one after another."""
        session = await idle.get()
        try:
            for index in run.todo:
                job = run.jobs[index]
                assert isinstance(job, Rendered)
                result = await self._send_one(session, job)
                run.results[index] = result
                if session.smtp is None:  # the session failed: the others take the rest
                    run.stopped.append(result)
                    return
        except asyncio.CancelledError:
            session.discard()  # cancelled mid-transaction: the session's state is unknown
            raise
        finally:
            idle.put_nowait(session)

    @staticmethod
    def _fill_unsent(run: _Run) -> None:
        """Messages no session got to: wait like the failures that stopped the sessions."""
        throttled = any(isinstance(r, Throttled) for r in run.stopped)
        for index in run.todo:
            run.results[index] = (
                Throttled() if throttled else RetryLater("not sent: the SMTP sessions failed")
            )

    async def _send_one(self, session: _Session, job: Rendered) -> SendResult:
        if session.smtp is None or not session.smtp.is_connected:
            opened = await self._open(session)
            if opened is not None:
                return opened
        smtp = session.smtp
        assert smtp is not None
        try:
            _, reply = await smtp.sendmail(self.envelope_from, [job.to], job.data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return self._refused(session, refused.code, refused.message)
        except aiosmtplib.SMTPSenderRefused as exc:
            return self._refused(session, exc.code, exc.message, sender_stage=True)
        except aiosmtplib.SMTPResponseException as exc:
            return self._refused(session, exc.code, exc.message)
        except ValueError as exc:  # aiosmtplib refuses an address before sending anything
            return Failed(f"refused by the SMTP client: {_describe(exc)}")
        except _TRANSPORT_ERRORS as exc:
            # the reply to DATA may have been lost after the server took the message: a
            # possible duplicate, which e-mail cannot rule out (at-least-once)
            session.discard()
            self._warn("SMTP session lost", exc)
            return RetryLater(f"connection lost: {_describe(exc)}")
        return Accepted.one(provider_id(reply, job.message_id))

    def _refused(
        self, session: _Session, code: int, text: str, *, sender_stage: bool = False
    ) -> SendResult:
        if code == 421 or code < 0:  # 421 closes the channel (RFC 5321 3.8); <0: no reply
            session.discard()
        return classify(code, text, sender_stage=sender_stage)

    async def _open(self, session: _Session) -> SendResult | None:
        """Open the session; on failure the result for the message that needed it."""
        session.discard()
        smtp = self._client()
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            self._warn("SMTP server refused the session", exc)
            if exc.code == 421:  # "too many connections" or overload: slow the route down
                return Throttled()
            return RetryLater(f"cannot open a session: {_describe(exc)}")
        except (*_TRANSPORT_ERRORS, ValueError) as exc:
            smtp.close()
            self._warn("cannot connect to the SMTP server", exc)
            return RetryLater(f"cannot connect: {_describe(exc)}")
        session.smtp = smtp
        self.connections_opened += 1
        return None

    def _client(self) -> aiosmtplib.SMTP:
        opts = self.options
        return aiosmtplib.SMTP(
            hostname=opts.host,
            port=opts.effective_port,
            username=opts.username,
            password=opts.password.get_secret_value() if opts.password else None,
            use_tls=opts.security == "tls",
            start_tls=opts.security == "starttls",
            validate_certs=opts.validate_certs,
            cert_bundle=opts.cert_bundle,
            timeout=opts.timeout,
            local_hostname=opts.helo_name,
        )

    def _warn(self, what: str, exc: BaseException) -> None:
        opts = self.options
        log.warning(
            what,
            extra={
                "route": self.route,
                "server": f"{opts.host}:{opts.effective_port}",
                "error": _describe(exc),
            },
        )

    # --- health and shutdown -----------------------------------------------------------------

    async def ping(self) -> None:
        """NOOP on one session (opened if need be); AdapterError if the server does not answer."""
        idle = self._pool()
        session = await idle.get()
        try:
            if session.smtp is None or not session.smtp.is_connected:
                failed = await self._open(session)
                if isinstance(failed, RetryLater):
                    raise AdapterError(f"{self.route}: {failed.reason}")
                if failed is not None:
                    raise AdapterError(f"{self.route}: the server is busy (421 at connect)")
            assert session.smtp is not None
            await session.smtp.noop()
        except TimeoutError as exc:
            session.discard()
            raise AdapterTimeout(f"{self.route}: NOOP timed out") from exc
        except aiosmtplib.SMTPException as exc:
            session.discard()
            raise AdapterError(f"{self.route}: NOOP failed: {_describe(exc)}") from exc
        finally:
            idle.put_nowait(session)

    async def aclose(self) -> None:
        """QUIT every open session; may be called again (a later send opens new sessions)."""
        if self._loop is not asyncio.get_running_loop():
            for session in self._sessions:  # opened in a loop that is gone: nothing to QUIT
                session.discard()
            return
        async with asyncio.TaskGroup() as group:
            for session in self._sessions:
                if session.smtp is not None:
                    group.create_task(self._quit(session))

    @staticmethod
    async def _quit(session: _Session) -> None:
        smtp, session.smtp = session.smtp, None
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await smtp.quit()
        except _TRANSPORT_ERRORS:
            pass  # the server went first: nothing left to say goodbye to
        finally:
            smtp.close()


def _describe(exc: BaseException) -> str:
    """An error for a log line or a reason: its class and masked text, no address in clear."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {mask(text)}"[:200] if text else type(exc).__name__
