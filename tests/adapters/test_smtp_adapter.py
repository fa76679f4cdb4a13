"""The SMTP adapter: rendering, reply codes, pooling and failures, against a real aiosmtpd."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email
import email.policy
import email.utils
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.adapters.base import Adapter
from loa.adapters.smtp import (
    POLICY,
    Rendered,
    SmtpAdapter,
    classify,
    encode_subject,
    encode_text,
    normalize_address,
    provider_id,
)
from loa.errors import AdapterError, ConfigError
from loa.message import Accepted, Failed, Message, RetryLater, SendResult, Throttled
from loa.testing.contract import VIETNAMESE, AdapterContract, sample_messages

pytestmark = pytest.mark.anyio

SENDER = "Bộ Y tế <thongbao@moh.gov.vn>"
SUBJECT = "Thông báo lịch tiêm vắc-xin phòng COVID-19 mũi 2 tại Trạm Y tế phường Bến Nghé"
BODY = f"{VIETNAMESE}\nĐường dây nóng: 1900 9095.\n\nTrân trọng,\nBộ Y tế"
EXTRA = {"channel": "email", "subject": SUBJECT}


def mail(id: str, to: str, body: str = BODY, **extra: Any) -> Message:
    return Message(id, to, body, extra={**EXTRA, **extra})


def parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(part: EmailMessage) -> str:
    """A text part's content with the canonical CRLF line ends read as newlines."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def lines_of(text: str) -> str:
    """What a body reads back as: its lines (split as e-mail splits them), each ended by \\n.

    An empty body is one empty line, as the stdlib writes it too.
    """
    return "".join(line.decode() + "\n" for line in text.encode().splitlines()) or "\n"


# --- a real SMTP server on 127.0.0.1 ---------------------------------------------------------


class Recorder:
    """An aiosmtpd handler that keeps what it gets and answers by the recipient's local part.

    `c550-...` is refused at RCPT with 550 (any 3-digit code; a `-rate` or `-mbx` suffix adds
    text), `d554-...` at DATA, `drop-...` loses the connection during DATA, `slow-...` answers
    DATA after a second. Everything else is accepted with `reply` ({n}: a running number).
    """

    def __init__(self, reply: str = "250 2.0.0 Ok: queued as Q{n}") -> None:
        self.reply = reply
        self.received: list[tuple[str, list[str], bytes]] = []
        self.noops = 0
        self.quits = 0
        self.authenticated = 0
        self.delay = 0.0
        self.busy = 0
        self.most_busy = 0
        self.blocked_sender = ""

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address == self.blocked_sender:
            return "550 5.7.1 sender not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.partition("@")[0]
        if local[:1] == "c" and local[1:4].isdigit():
            text = {"rate": "4.7.0 rate limit exceeded", "mbx": "4.2.2 mailbox full"}
            suffix = local.split("-")[1] if "-" in local else ""
            return f"{local[1:4]} {text.get(suffix, 'refused')} <{address}>"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        to = envelope.rcpt_tos[0]
        if to.startswith("drop-"):
            transport = cast(asyncio.Transport, server.transport)  # uvloop's is not a subclass
            transport.abort()  # gone without a reply; aiosmtpd cancels this handler
            await asyncio.sleep(30)
        if to.startswith("slow-"):
            await asyncio.sleep(1.0)
        if to.startswith("d554-"):
            return "554 5.7.1 message rejected"
        if session.authenticated:
            self.authenticated += 1
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.busy -= 1
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.reply.format(n=len(self.received))

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        self.noops += 1
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"

    def to(self) -> list[str]:
        return [rcpt for _, rcpts, _ in self.received for rcpt in rcpts]

    def by_recipient(self) -> dict[str, EmailMessage]:
        return {rcpts[0]: parse(content) for _, rcpts, content in self.received}


@dataclasses.dataclass
class Server:
    handler: Recorder
    port: int = 0
    connections: int = 0
    protocols: list[SMTP] = dataclasses.field(default_factory=list)

    def options(self, **more: Any) -> dict[str, Any]:
        base = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "sender": SENDER,
            "helo_name": "loa.test",
            "timeout": 5.0,
        }
        return {**base, **more}


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    expected = LoginPassword(b"loa", "bí mật".encode())
    ok = isinstance(data, LoginPassword) and tuple(data) == tuple(expected)
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@asynccontextmanager
async def serve(
    handler: Recorder | None = None, *, tls: ssl.SSLContext | None = None, **smtp: Any
) -> AsyncIterator[Server]:
    """An aiosmtpd server on 127.0.0.1 in the running loop; every connection closed after."""
    loop = asyncio.get_running_loop()
    state = Server(handler or Recorder())

    def factory() -> SMTP:
        state.connections += 1
        protocol = SMTP(state.handler, hostname="mx.test", loop=loop, **smtp)
        state.protocols.append(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for protocol in state.protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # let connection_lost and cancelled handlers run


@pytest.fixture
async def smtp_server() -> AsyncIterator[Server]:
    async with serve() as server:
        yield server


@asynccontextmanager
async def adapter_for(server: Server, **options: Any) -> AsyncIterator[SmtpAdapter]:
    adapter = SmtpAdapter.create("email-test", server.options(**options))
    try:
        yield adapter
    finally:
        await adapter.aclose()


# --- the contract suite ----------------------------------------------------------------------


class TestSmtpContract(AdapterContract):
    @pytest.fixture
    async def adapter(self, smtp_server: Server) -> AsyncIterator[Adapter]:
        async with adapter_for(smtp_server, connections=3) as adapter:
            yield adapter

    @pytest.fixture
    def messages(self) -> list[Message]:
        # the default chunk, addressed to e-mail addresses and with subjects
        return [
            dataclasses.replace(
                m,
                to=f"{m.id}@example.vn",
                extra={**(m.extra or {}), "channel": "email", "subject": m.body[:60]},
            )
            for m in sample_messages()
        ]


# --- rendering, without a network ------------------------------------------------------------


@pytest.fixture
def renderer() -> SmtpAdapter:
    options = {
        "host": "mx.example.vn",
        "sender": SENDER,
        "reply_to": "Hỗ trợ <hotro@moh.gov.vn>",
        "headers": {"List-Unsubscribe": "<mailto:huy@moh.gov.vn>", "X-Chien-Dich": "Tiêm chủng"},
    }
    return SmtpAdapter.create("email", options)


def rendered(adapter: SmtpAdapter, message: Message) -> Rendered:
    result = adapter.render(message)
    assert isinstance(result, Rendered), result
    return result


def test_render_reads_back_with_vietnamese(renderer: SmtpAdapter) -> None:
    out = rendered(renderer, mail("c1-000042", "Nguyen.Van.A@Example.VN"))
    assert out.to == "Nguyen.Van.A@example.vn", "local part kept, domain lower-cased"
    assert out.data.isascii(), "7-bit only: no 8BITMIME or SMTPUTF8 needed"
    lines = out.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert b"\n" not in out.data.replace(b"\r\n", b""), "every line ends in CRLF"
    parsed = parse(out.data)
    assert not parsed.defects
    assert parsed["Subject"] == SUBJECT
    assert parsed["To"].addresses[0].addr_spec == "Nguyen.Van.A@example.vn"
    [sender] = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Bộ Y tế", "thongbao@moh.gov.vn")
    [reply_to] = parsed["Reply-To"].addresses
    assert (reply_to.display_name, reply_to.addr_spec) == ("Hỗ trợ", "hotro@moh.gov.vn")
    assert parsed["List-Unsubscribe"] == "<mailto:huy@moh.gov.vn>"
    assert parsed["X-Chien-Dich"] == "Tiêm chủng"
    assert parsed["Message-ID"] == f"<{out.message_id}>"
    assert out.message_id.startswith("c1-000042.") and out.message_id.endswith("@moh.gov.vn")
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert text_of(parsed) == lines_of(BODY)
    sent_at = email.utils.parsedate_to_datetime(parsed["Date"])
    assert abs(sent_at - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    # one header each: what the adapter sets cannot be doubled by options or content
    for name in ("To", "From", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"):
        assert len(parsed.get_all(name) or []) == 1, name


def test_render_html_as_multipart_alternative(renderer: SmtpAdapter) -> None:
    html = "<p>Chào <b>bạn</b>, lịch tiêm: <i>15/08</i></p>\n<p>. một dấu chấm</p>"
    parsed = parse(rendered(renderer, mail("h1", "a@example.vn", html=html)).data)
    assert not parsed.defects
    assert parsed.get_content_type() == "multipart/alternative"
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert isinstance(plain, EmailMessage) and isinstance(rich, EmailMessage)
    assert text_of(plain) == lines_of(BODY)
    assert text_of(rich) == lines_of(html)
    assert parsed["Subject"] == SUBJECT


def test_message_ids_are_unique_and_render_is_cached(renderer: SmtpAdapter) -> None:
    outs = [rendered(renderer, mail("same-id", f"u{i}@example.vn")) for i in range(200)]
    assert len({o.message_id for o in outs}) == 200, "the random part makes each one unique"
    assert (renderer.cache.misses, renderer.cache.hits) == (1, 199), "one render per content"
    tails = {o.data.split(b"\r\nMessage-ID: ", 1)[1].split(b"\r\n", 1)[1] for o in outs}
    assert len(tails) == 1, "only Date, To and Message-ID differ per recipient"
    personal = [
        mail(f"p{i}", "a@example.vn", f"Chào bạn {i}, lịch tiêm: 09:{i:02d}") for i in range(5)
    ]
    for message in personal:
        body = text_of(parse(rendered(renderer, message).data))
        assert body == lines_of(message.body), "per-person bodies are rendered per person"
    assert renderer.cache.misses == 6


def test_content_cache_is_bounded() -> None:
    options = {"host": "mx.example.vn", "sender": SENDER, "cache_size": 2}
    adapter = SmtpAdapter.create("email", options)
    for body in ("một", "hai", "ba", "một"):
        assert isinstance(adapter.render(mail("x", "a@example.vn", body)), Rendered)
    assert len(adapter.cache) == 2
    assert adapter.cache.misses == 4, "'một' was evicted by 'ba' (least recently used)"
    big = SmtpAdapter.create(
        "email", {"host": "mx.example.vn", "sender": SENDER, "cache_bytes": 1 << 16}
    )
    for n in range(20):
        assert isinstance(big.render(mail("x", "a@example.vn", f"{n} " + "x" * 20_000)), Rendered)
    assert big.cache.size <= 1 << 16
    assert 1 <= len(big.cache) <= 3


@pytest.mark.parametrize(
    "body",
    [
        "Hello, your appointment is at 9:30.\nBring your ID card.",
        "Short ASCII with a single accented letter: café, and the rest is plain English text.",
        "x" * 200,  # ASCII, but a line too long for 7bit
        VIETNAMESE,
        "Chào Nguyễn Văn A,\n\nLịch tiêm của bạn: 15/08 lúc 9:30.\n",
        "Tiêm vắc-xin 💉 🦟 ✅",
        "",
    ],
)
def test_transfer_encoding_is_the_stdlibs_choice(body: str) -> None:
    stdlib = EmailMessage(policy=POLICY)
    stdlib.set_content(body)
    cte, encoded = encode_text(body)
    assert cte.decode() == stdlib["Content-Transfer-Encoding"]
    assert max(map(len, encoded.split(b"\r\n"))) <= 76, "RFC 2045: encoded lines of 76 at most"
    head = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: '
    assert text_of(parse(head + cte + b"\r\n\r\n" + encoded)) == lines_of(body)


SUBJECT_TEXT = st.text(
    st.characters(
        blacklist_categories=["Cs", "Cc"], blacklist_characters="\u2028\u2029", min_codepoint=1
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(subject=SUBJECT_TEXT, body=st.text(st.characters(blacklist_categories=["Cs"])))
def test_any_text_reads_back(subject: str, body: str) -> None:
    adapter = SmtpAdapter.create("email", {"host": "mx.example.vn", "sender": SENDER})
    out = rendered(adapter, mail("hyp", "a@example.vn", body, subject=subject))
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 78
    parsed = parse(out.data)
    assert (parsed["Subject"] or "") == subject
    assert text_of(parsed) == lines_of(body)


@pytest.mark.parametrize(
    "subject",
    ["Xin chào", "a" * 70, "word " * 30 + "end", "=?utf-8?q?fake?=", " leading", "tab\there"],
)
def test_subject_lines_fold_and_read_back(subject: str) -> None:
    header = encode_subject(subject)
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert parse(header + b"\r\nbody\r\n")["Subject"] == subject


BAD_ADDRESSES = [
    ("", "empty"),
    ("nguyen.van.a", "no local@domain"),
    ("a@b.c\r\nBcc: victim@example.vn", "line break"),
    ("a@b.vn\nBcc: victim@example.vn", "line break"),
    ("a@b.vn>\r\nRCPT TO:<victim@example.vn", "line break"),
    ("a@b.vn> NOTIFY=SUCCESS", "space"),
    ("a@b.vn>,<victim@example.vn", "malformed"),
    ("Nguyen <a@b.vn>", "space"),
    ("<a@b.vn>", "malformed local part"),
    ("a..b@example.vn", "malformed local part"),
    ("a@example", "two labels"),
    ("a@-example.vn", "malformed domain"),
    ("nguyễn@example.vn", "SMTPUTF8"),
    ("a" * 65 + "@example.vn", "malformed local part"),
    ("+84912345678", "no local@domain"),
]


@pytest.mark.parametrize(("address", "why"), BAD_ADDRESSES)
def test_bad_addresses_fail_with_a_clear_reason(
    renderer: SmtpAdapter, address: str, why: str
) -> None:
    result = renderer.render(mail("bad", address))
    assert isinstance(result, Failed)
    assert not result.fallback
    assert result.reason.startswith("invalid e-mail address: ")
    assert why in result.reason
    assert "victim" not in result.reason and "b.vn" not in result.reason, "no address echoed"


def test_idn_domain_goes_out_as_punycode() -> None:
    assert normalize_address("thu@bộytế.vn") == "thu@" + "bộytế".encode("idna").decode() + ".vn"
    assert normalize_address("a@Bücher.DE") == "a@xn--bcher-kva.de"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"subject": "Chào\r\nBcc: victim@example.vn"}, "subject contains a line break"),
        ({"subject": "Chào\nBcc: victim@example.vn"}, "subject contains a line break"),
        ({"subject": "Chào\u2028Bcc: victim@example.vn"}, "subject contains a line break"),
        ({"subject": 42}, "extra.subject must be text"),
        ({"subject": "ok", "html": b"<p>"}, "extra.html must be text"),
        ({"subject": "lỗi \ud800"}, "not valid Unicode"),
    ],
)
def test_bad_subjects_fail(renderer: SmtpAdapter, extra: dict[str, Any], why: str) -> None:
    result = renderer.render(Message("s", "a@example.vn", "x", extra=extra))
    assert isinstance(result, Failed)
    assert why in result.reason


def test_message_id_cannot_inject_headers(renderer: SmtpAdapter) -> None:
    out = rendered(renderer, mail("id>\r\nBcc: victim@example.vn\r\nX: <y", "a@example.vn"))
    parsed = parse(out.data)
    assert parsed["Bcc"] is None and parsed["X"] is None
    assert parsed["Message-ID"] == f"<{out.message_id}>"
    assert out.message_id.startswith("id___Bcc__victim_example_vn__X___y.")


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key", "problem"),
    [
        ({"sender": "not an address"}, "sender", "invalid e-mail address"),
        ({"sender": "Bộ Y tế <a@b.vn>\r\nBcc: x@y.vn"}, "sender", "line break"),
        ({"reply_to": "hotro"}, "reply_to", "invalid e-mail address"),
        ({"security": "ssl"}, "security", "'none', 'starttls' or 'tls'"),
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"connections": 0}, "connections", "greater than or equal to 1"),
        ({"timeout": True}, "timeout", "not true/false"),
        ({"headers": {"To": "x@y.vn"}}, "headers", "set by the adapter"),
        ({"headers": {"Bad Name": "x"}}, "headers", "printable ASCII"),
        ({"headers": {"X-A": "1\r\nBcc: x@y.vn"}}, "headers", "line break"),
        ({"message_id_domain": "bad domain"}, "message_id_domain", "malformed domain"),
        ({"message_id_domain": "localhost"}, "message_id_domain", "two labels"),
        ({"username": "loa"}, "", "username and password go together"),
        (
            {"host": "smtp.moh.gov.vn", "security": "none", "username": "u", "password": "p"},
            "",
            "need security",
        ),
        ({"sendr": SENDER}, "sendr", "unknown key"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SmtpAdapter.create("email-vn", {"host": "127.0.0.1", "sender": SENDER, **options})
    message = str(caught.value)
    assert f"routes.email-vn.options{'.' + key if key else ''}" in message
    assert problem in message


def test_defaults() -> None:
    adapter = SmtpAdapter.create("e", {"host": "smtp.moh.gov.vn", "sender": SENDER})
    assert adapter.options.security == "starttls"
    assert adapter.options.effective_port == 587
    assert adapter.options.connections == 4
    assert adapter.envelope_from == "thongbao@moh.gov.vn"
    tls = SmtpAdapter.create("e", {"host": "h.vn", "sender": "a@b.vn", "security": "tls"})
    assert tls.options.effective_port == 465
    assert "p@ss" not in repr(
        SmtpAdapter.create(
            "e", {"host": "h.vn", "sender": "a@b.vn", "username": "u", "password": "p@ss"}
        ).options
    ), "the password is not shown"


# --- reply codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "4.7.0 too many connections", Throttled()),
        (452, "4.3.1 insufficient system storage", Throttled()),
        (452, "4.2.2 mailbox full", RetryLater),
        (451, "4.7.1 greylisted, try again", RetryLater),
        (451, "4.7.0 rate limit exceeded", Throttled()),
        (450, "4.2.0 mailbox busy", RetryLater),
        (550, "5.1.1 <a@example.vn>: no such user", Failed),
        (551, "5.1.6 user not local", Failed),
        (553, "5.1.3 mailbox name not allowed", Failed),
        (552, "5.2.2 over quota", Failed),
        (554, "5.7.1 rejected", Failed),
    ],
)
def test_classify(code: int, text: str, expected: SendResult | type) -> None:
    result = classify(code, text)
    if isinstance(expected, type):
        assert isinstance(result, expected)
        assert str(code) in getattr(result, "reason", "")
        assert "a@example.vn" not in getattr(result, "reason", ""), "addresses masked"
    else:
        assert result == expected
    if code in (550, 551, 553):
        assert isinstance(result, Failed) and result.fallback
        sender = classify(code, text, sender_stage=True)
        assert isinstance(sender, Failed) and not sender.fallback, "our sender refused: no fallback"
    elif isinstance(result, Failed):
        assert not result.fallback


def test_provider_id_prefers_the_queue_id() -> None:
    assert provider_id("2.0.0 Ok: queued as 4F3A2B1C", "m@x") == "4F3A2B1C"
    assert provider_id("OK id=1qAbCd-0001Xy-AB", "m@x") == "1qAbCd-0001Xy-AB"
    assert provider_id("OK", "m.1@moh.gov.vn") == "m.1@moh.gov.vn"


# --- over the wire ---------------------------------------------------------------------------


async def test_delivers_what_parses_back(smtp_server: Server) -> None:
    names = ["Nguyễn Thị Ánh", "Trần Văn Bình", "Lê Minh Châu", "Phạm Đức", "Võ Thu", "Đặng Hà"]
    messages = [
        mail(f"c7-{i:06d}", f"nguoi.{i}@example.vn", f"Chào {name},\n{BODY}")
        for i, name in enumerate(names)
    ]
    async with adapter_for(smtp_server, connections=2) as adapter:
        results = await adapter.send(messages)
    assert all(isinstance(r, Accepted) for r in results), results
    by_queue_id = {f"Q{n + 1}": received for n, received in enumerate(smtp_server.handler.received)}
    for message, result in zip(messages, results, strict=True):
        assert isinstance(result, Accepted)
        mail_from, rcpts, content = by_queue_id[result.provider_id]  # in order: ids match
        assert mail_from == "thongbao@moh.gov.vn"
        assert rcpts == [message.to]
        parsed = parse(content)
        assert parsed["To"] == message.to
        assert parsed["Subject"] == SUBJECT
        assert str(parsed["From"]) == SENDER
        assert text_of(parsed) == lines_of(message.body)
        assert parsed["Message-ID"].startswith(f"<{message.id}.")


async def test_provider_id_is_the_message_id_without_a_queue_id() -> None:
    async with serve(Recorder(reply="250 OK")) as server, adapter_for(server) as adapter:
        messages = [mail(f"m{i}", f"u{i}@example.vn") for i in range(3)]
        results = await adapter.send(messages)
        received = server.handler.by_recipient()
        for message, result in zip(messages, results, strict=True):
            assert isinstance(result, Accepted)
            assert received[message.to]["Message-ID"] == f"<{result.provider_id}>"


async def test_pool_reuses_sessions_and_sends_concurrently(smtp_server: Server) -> None:
    smtp_server.handler.delay = 0.05  # long enough for the sessions to overlap on a busy box
    async with adapter_for(smtp_server, connections=3) as adapter:
        for round_ in range(3):
            chunk = [mail(f"r{round_}-{i}", f"u{round_}.{i}@example.vn") for i in range(12)]
            assert all(isinstance(r, Accepted) for r in await adapter.send(chunk))
        assert adapter.connections_opened == 3
    assert smtp_server.connections == 3, "36 messages over 3 persistent sessions"
    assert smtp_server.handler.most_busy == 3, "the sessions send at the same time"
    assert smtp_server.handler.quits == 3, "aclose said QUIT on each"
    assert len(smtp_server.handler.received) == 36


async def test_concurrent_sends_share_the_pool(smtp_server: Server) -> None:
    smtp_server.handler.delay = 0.02
    async with adapter_for(smtp_server, connections=2) as adapter:
        chunks = [[mail(f"g{g}-{i}", f"g{g}.{i}@example.vn") for i in range(5)] for g in range(4)]
        answers = await asyncio.gather(*(adapter.send(chunk) for chunk in chunks))
    assert all(isinstance(r, Accepted) for results in answers for r in results)
    assert smtp_server.connections == 2
    assert smtp_server.handler.most_busy == 2
    assert sorted(smtp_server.handler.to()) == sorted(m.to for c in chunks for m in c)


CODES = [
    ("c421", Throttled, False),
    ("c450", RetryLater, False),
    ("c451", RetryLater, False),
    ("c451-rate", Throttled, False),
    ("c452", Throttled, False),
    ("c452-mbx", RetryLater, False),
    ("c550", Failed, True),
    ("c551", Failed, True),
    ("c553", Failed, True),
    ("c552", Failed, False),
    ("c554", Failed, False),
    ("d554", Failed, False),
]


async def test_reply_codes_over_the_wire(
    smtp_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async with adapter_for(smtp_server, connections=1) as adapter:
        for local, kind, fallback in CODES:
            [result] = await adapter.send([mail(local, f"{local}-nguyen.van.a@example.vn")])
            assert isinstance(result, kind), (local, result)
            if isinstance(result, Failed):
                assert result.fallback is fallback, local
                assert local[1:4] in result.reason
                assert "nguyen.van.a@" not in result.reason, "the server's text is masked"
            [ok] = await adapter.send([mail("ok", f"after-{local}@example.vn")])
            assert isinstance(ok, Accepted), f"the session works after {local}: {ok}"
        assert adapter.connections_opened == 2, "only the 421 closed the session"
    assert smtp_server.connections == 2
    assert smtp_server.handler.to() == [f"after-{local}@example.vn" for local, _, _ in CODES]
    assert "nguyen.van.a@" not in caplog.text


async def test_421_throttles_the_rest_of_the_chunk(smtp_server: Server) -> None:
    async with adapter_for(smtp_server, connections=1) as adapter:
        chunk = [mail("a", "a@example.vn"), mail("b", "c421@example.vn"), mail("c", "c@example.vn")]
        results = await adapter.send(chunk)
        assert isinstance(results[0], Accepted)
        assert results[1:] == [Throttled(), Throttled()], "the server asked us to slow down"
        assert all(isinstance(r, Accepted) for r in await adapter.send([chunk[2]]))


async def test_refused_sender_is_not_a_fallback() -> None:
    handler = Recorder()
    handler.blocked_sender = "thongbao@moh.gov.vn"
    async with serve(handler) as server, adapter_for(server) as adapter:
        results = await adapter.send([mail("a", "a@example.vn"), mail("b", "b@example.vn")])
    assert all(isinstance(r, Failed) and not r.fallback and "550" in r.reason for r in results)


async def test_dropped_connection_retries_the_unsent_and_recovers(
    smtp_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["ok-1", "ok-2", "drop-3", "ok-4", "ok-5"]
    chunk = [mail(name, f"{name}@example.vn") for name in names]
    async with adapter_for(smtp_server, connections=1) as adapter:
        with caplog.at_level(logging.WARNING, logger="loa"):
            results = await adapter.send(chunk)
        kinds = [type(r) for r in results]
        assert kinds == [Accepted, Accepted, RetryLater, RetryLater, RetryLater]
        assert "connection lost" in results[2].reason  # type: ignore[union-attr]
        assert "not sent" in results[3].reason  # type: ignore[union-attr]
        assert smtp_server.handler.to() == ["ok-1@example.vn", "ok-2@example.vn"]
        again = await adapter.send(chunk[3:])
        assert all(isinstance(r, Accepted) for r in again), "a new session on the next send"
    assert smtp_server.connections == 2
    assert smtp_server.handler.to()[2:] == ["ok-4@example.vn", "ok-5@example.vn"]
    assert "SMTP session lost" in caplog.text
    assert "ok-" not in caplog.text and "drop-" not in caplog.text, "no address in the logs"


async def test_a_lost_session_leaves_its_work_to_the_others(smtp_server: Server) -> None:
    chunk = [mail("drop", "drop-0@example.vn")] + [
        mail(f"m{i}", f"ok-{i}@example.vn") for i in range(8)
    ]
    async with adapter_for(smtp_server, connections=2) as adapter:
        results = await adapter.send(chunk)
    assert isinstance(results[0], RetryLater)
    assert all(isinstance(r, Accepted) for r in results[1:]), results
    assert sorted(smtp_server.handler.to()) == sorted(m.to for m in chunk[1:])


async def test_timeout_gives_retry_later_and_a_new_session(smtp_server: Server) -> None:
    async with adapter_for(smtp_server, connections=1, timeout=0.3) as adapter:
        slow, fine = mail("s", "slow-1@example.vn"), mail("f", "fine@example.vn")
        [result] = await adapter.send([slow])
        assert isinstance(result, RetryLater)
        assert "Timeout" in result.reason
        assert all(isinstance(r, Accepted) for r in await adapter.send([fine]))
    assert smtp_server.connections == 2


async def test_cancelled_send_leaves_no_broken_session(smtp_server: Server) -> None:
    async with adapter_for(smtp_server, connections=1) as adapter:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the engine's route timeout
                await adapter.send([mail("s", "slow-2@example.vn")])
        results = await adapter.send([mail("f", "fine@example.vn")])
        assert all(isinstance(r, Accepted) for r in results), results
    assert smtp_server.handler.to() == ["fine@example.vn"]


async def test_server_down_gives_retry_later_not_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve() as server:
        options = server.options(connections=2)
    adapter = SmtpAdapter.create("email-down", options)  # nothing listens on that port now
    try:
        chunk = [mail(f"m{i}", f"u{i}@example.vn") for i in range(5)] + [mail("x", "bad")]
        results = await adapter.send(chunk)
        assert all(isinstance(r, RetryLater) for r in results[:5]), results
        assert isinstance(results[5], Failed), "an invalid address fails whatever the server"
        with pytest.raises(AdapterError, match="cannot connect"):
            await adapter.ping()
    finally:
        await adapter.aclose()
    assert "cannot connect to the SMTP server" in caplog.text


async def test_injection_attempts_send_nothing_extra(smtp_server: Server) -> None:
    smuggle = (
        "Dòng 1\r\n.\r\nMAIL FROM:<evil@example.vn>\r\nRCPT TO:<victim@example.vn>\r\nDATA\r\n"
    )
    chunk = [
        mail("ok", "ok@example.vn"),
        mail("crlf", "a@b.vn\r\nBcc: victim@example.vn"),
        mail("param", "a@b.vn> NOTIFY=SUCCESS,FAILURE"),
        mail("subject", "s@example.vn", subject="Chào\r\nBcc: victim@example.vn"),
        mail("smuggle", "smuggle@example.vn", smuggle),
        mail("bodydot", "dot@example.vn", ".\n..\n.Chấm đầu dòng\n"),
    ]
    async with adapter_for(smtp_server) as adapter:
        results = await adapter.send(chunk)
    kinds = [type(r) for r in results]
    assert kinds == [Accepted, Failed, Failed, Failed, Accepted, Accepted]
    received = smtp_server.handler.by_recipient()
    assert sorted(received) == ["dot@example.vn", "ok@example.vn", "smuggle@example.vn"]
    assert all(sender == "thongbao@moh.gov.vn" for sender, _, _ in smtp_server.handler.received)
    for parsed in received.values():
        assert parsed["Bcc"] is None
    assert text_of(received["smuggle@example.vn"]) == lines_of(smuggle), "one message, intact"
    assert text_of(received["dot@example.vn"]) == lines_of(".\n..\n.Chấm đầu dòng\n")


async def test_ping_aclose_and_send_after_close(smtp_server: Server) -> None:
    adapter = SmtpAdapter.create("email-test", smtp_server.options(connections=2))
    await adapter.ping()
    assert smtp_server.handler.noops == 1
    assert smtp_server.connections == 1, "ping opens one session, not the pool"
    await adapter.aclose()
    await adapter.aclose()
    assert smtp_server.handler.quits == 1
    results = await adapter.send([mail("after", "after@example.vn")])
    assert isinstance(results[0], Accepted), "a send after aclose opens a new session"
    await adapter.aclose()
    assert smtp_server.handler.quits == 2


async def test_login_on_loopback() -> None:
    async with serve(authenticator=authenticate, auth_require_tls=False) as server:
        good = server.options(username="loa", password="bí mật")
        async with adapter_for(server, **good) as adapter:
            assert all(isinstance(r, Accepted) for r in await adapter.send([mail("a", "a@b.vn")]))
        bad = server.options(username="loa", password="sai")
        async with adapter_for(server, **bad) as adapter:
            [result] = await adapter.send([mail("b", "b@b.vn")])
            assert isinstance(result, RetryLater) and "535" in result.reason, result
        assert server.handler.authenticated == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_implicit_tls_with_a_private_ca(certificate: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    async with serve(tls=context) as server:
        options = server.options(security="tls", cert_bundle=str(certificate[0]))
        async with adapter_for(server, **options) as adapter:
            results = await adapter.send([mail("t", "tls@example.vn")])
        assert isinstance(results[0], Accepted), results
        async with adapter_for(server, security="tls") as untrusted:
            [refused] = await untrusted.send([mail("u", "untrusted@example.vn")])
        assert isinstance(refused, RetryLater), "an unknown certificate is not trusted"
        assert server.handler.to() == ["tls@example.vn"]


async def test_starttls_with_a_private_ca(certificate: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    async with serve(tls_context=context, require_starttls=True) as server:
        options = server.options(security="starttls", cert_bundle=str(certificate[0]))
        async with adapter_for(server, **options) as adapter:
            results = await adapter.send([mail("t", "starttls@example.vn")])
        assert isinstance(results[0], Accepted), results
        async with adapter_for(server, security="none") as plain:
            [refused] = await plain.send([mail("p", "plain@example.vn")])
        assert isinstance(refused, Failed) and "530" in refused.reason, refused
        assert server.handler.to() == ["starttls@example.vn"]
