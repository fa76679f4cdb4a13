"""The SMPP adapter against real peers: smpp34's server, the npm smpp server, and faulty ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import smpp34

from helpers import TESTS
from loa.adapters import registry
from loa.adapters.base import Adapter, EmitsEvents, EventSink, Pingable
from loa.adapters.smpp.adapter import SmppAdapter
from loa.adapters.smpp.coding import GSM7, LATIN1, UCS2, decode_text
from loa.adapters.smpp.pdu import (
    HEADER,
    Command,
    MessageState,
    Pdu,
    Status,
    Tag,
    decode,
    encode,
    read_length,
    response,
)
from loa.adapters.smpp.session import Window
from loa.errors import SessionClosed
from loa.message import Accepted, Failed, Inbound, Message, Receipt, RetryLater, Throttled
from loa.testing.contract import AdapterContract

pytestmark = pytest.mark.anyio

ROUTE = "sms-test"
PEERS = TESTS / "peers"
PHONE_RE = re.compile(r"84\d{9}")
VIETNAMESE = (
    "Bộ Y tế khuyến cáo: tiêm đủ hai mũi vắc-xin 💉, đeo khẩu trang, rửa tay thường xuyên, "
    "giữ khoảng cách; diệt muỗi 🦟 phòng Zika. Lịch tiêm của bé: thứ Năm, 9 giờ 30."
)
GSM_EXTENDED = "Gia: 10€ [giam gia] {uu dai} ~ ^ | \\ - tiem vac-xin day du. " * 4


def free_port() -> int:
    """A loopback port nobody listens on now (for servers that cannot be asked for theirs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait, boundedly, until `check()` holds; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Sink:
    """An EventSink that keeps what it is handed, at once (or never: `unwritable`)."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbounds: list[Inbound] = []
        self.broken = False
        self.unwritable = False  # as a writer whose Redis is away

    def receipt(self, receipt: Receipt) -> asyncio.Future[None]:
        if self.broken:
            raise RuntimeError("a bug in the sink")
        self.receipts.append(receipt)
        return self._written()

    def inbound(self, message: Inbound) -> asyncio.Future[None]:
        self.inbounds.append(message)
        return self._written()

    def _written(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.unwritable:
            future.set_exception(ConnectionError("Redis is away"))
        else:
            future.set_result(None)
        return future


def make_adapter(port: int, **options: Any) -> SmppAdapter:
    """An SMPP adapter on 127.0.0.1:`port`, through the registry as a route would build it."""
    settings: dict[str, Any] = {
        "port": port,
        "system_id": "loa",
        "password": "secret",
        "source_addr": "BoYTe",
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "bind_timeout": 3.0,
        "response_timeout": 5.0,
        **options,
    }
    adapter = registry.create_adapter(ROUTE, "smpp", settings)
    assert isinstance(adapter, SmppAdapter)
    return adapter


@contextlib.asynccontextmanager
async def opened(
    port: int, sink: EventSink | None = None, **options: Any
) -> AsyncIterator[SmppAdapter]:
    adapter = make_adapter(port, **options)
    if sink is not None:
        adapter.attach(sink)
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def send(adapter: Adapter, messages: list[Message], timeout: float = 20.0) -> list[Any]:
    """One send, bounded: a hang fails the test instead of stalling it."""
    async with asyncio.timeout(timeout):
        results = list(await adapter.send(messages))
    assert len(results) == len(messages)
    return results


def numbered(count: int, body: str = "Lich tiem: thu Nam 9:30", prefix: str = "m") -> list[Message]:
    return [Message(f"{prefix}{n}", f"+849{n:08d}", f"{body} #{n}") for n in range(count)]


@pytest.fixture(autouse=True)
def no_phone_numbers_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Invariant 7: whatever the SMPP code logs, on any path, names no recipient."""
    caplog.set_level(logging.DEBUG, logger="loa")
    yield
    for record in caplog.records:
        text = f"{record.getMessage()} {vars(record)}"
        assert not PHONE_RE.search(text), f"a phone number in the log: {text}"


# --- smpp34's server (Rust; an implementation we did not write) ------------------------------


@dataclass
class Submitted:
    """One submit_sm as smpp34's server decoded it, and how it was answered."""

    session: str
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: bytes
    tlvs: dict[int, bytes]
    message_id: str | None


@dataclass
class Reassembled:
    """A whole message put back together from its submit_sm parts."""

    destination_addr: str
    data_coding: int
    text: str
    ids: list[str | None]
    parts: list[Submitted] = field(default_factory=list)


class Smsc34:
    """smpp34.Server on 127.0.0.1 (any system id binds), recording binds and submits.

    `reject` maps a destination to the command_status to refuse it with; message ids count up
    from 1, in decimal or in hex (`hex_ids`).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.server = smpp34.Server("127.0.0.1", port, system_id="SMPP34")
        self.esmes: list[smpp34.Esme] = []
        self.submits: list[Submitted] = []
        self.unbound: list[str] = []
        self.reject: dict[str, int] = {}
        self.hex_ids = False
        self.next_id = 1
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Smsc34:
        await self.server.start()
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.server.stop()

    async def _serve(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.esmes.append(event)
            elif isinstance(event, smpp34.SubmitSmEvent):
                self._answer(event)
            elif isinstance(event, smpp34.Unbound):
                self.unbound.append(event.session_id)

    def _answer(self, event: smpp34.SubmitSmEvent) -> None:
        status = self.reject.get(event.destination_addr)
        message_id = None
        if not status:
            message_id = f"{self.next_id:X}" if self.hex_ids else str(self.next_id)
            self.next_id += 1
        self.submits.append(
            Submitted(
                session=event.session_id,
                source_addr=event.source_addr,
                source_addr_ton=event.source_addr_ton,
                source_addr_npi=event.source_addr_npi,
                destination_addr=event.destination_addr,
                dest_addr_ton=event.dest_addr_ton,
                dest_addr_npi=event.dest_addr_npi,
                esm_class=event.esm_class,
                data_coding=event.data_coding,
                registered_delivery=event.registered_delivery,
                short_message=bytes(event.short_message),
                tlvs={tlv.tag: bytes(tlv.value) for tlv in event.tlvs},
                message_id=message_id,
            )
        )
        if status:
            event.reject(status)
        else:
            assert message_id is not None
            event.accept(message_id)

    def receivers(self) -> list[smpp34.Esme]:
        return [esme for esme in self.esmes if esme.can_receive]

    def by_id(self, message_id: str) -> Submitted:
        [found] = [s for s in self.submits if s.message_id == message_id]
        return found

    def reassembled(self) -> list[Reassembled]:
        """The messages as a handset would show them: parts joined by UDH, SAR or payload."""
        whole: list[Reassembled] = []
        groups: dict[tuple[str, str, int], dict[int, Submitted]] = {}
        totals: dict[tuple[str, str, int], int] = {}
        for sub in self.submits:
            concat = concatenation(sub)
            if concat is None:
                data = sub.tlvs.get(Tag.MESSAGE_PAYLOAD) or sub.short_message
                text = decode_text(data, sub.data_coding)
                whole.append(
                    Reassembled(
                        sub.destination_addr, sub.data_coding, text, [sub.message_id], [sub]
                    )
                )
                continue
            reference, total, number, _ = concat
            key = (sub.session, sub.destination_addr, reference)
            groups.setdefault(key, {})[number] = sub
            totals[key] = total
        for key, parts in groups.items():
            assert sorted(parts) == list(range(1, totals[key] + 1)), (
                f"parts missing: {sorted(parts)}"
            )
            ordered = [parts[n] for n in sorted(parts)]
            data = b"".join(user_data(part) for part in ordered)
            text = decode_text(data, ordered[0].data_coding)
            ids = [part.message_id for part in ordered]
            whole.append(Reassembled(key[1], ordered[0].data_coding, text, ids, ordered))
        return whole


def concatenation(sub: Submitted) -> tuple[int, int, int, str] | None:
    """(reference, total, number, how) of a part of a long message; None for a whole one."""
    if sub.esm_class & 0x40:
        data = sub.short_message
        header = data[1 : 1 + data[0]]
        assert header[0] == 0x00 and header[1] == 3, "an 8-bit concatenation element (IEI 0)"
        return header[2], header[3], header[4], "udh"
    if Tag.SAR_TOTAL_SEGMENTS in sub.tlvs:
        return (
            int.from_bytes(sub.tlvs[Tag.SAR_MSG_REF_NUM], "big"),
            sub.tlvs[Tag.SAR_TOTAL_SEGMENTS][0],
            sub.tlvs[Tag.SAR_SEGMENT_SEQNUM][0],
            "sar",
        )
    return None


def user_data(sub: Submitted) -> bytes:
    data = sub.short_message
    return data[1 + data[0] :] if sub.esm_class & 0x40 else data


@pytest.fixture
async def smsc34() -> AsyncIterator[Smsc34]:
    async with Smsc34(free_port()) as smsc:
        yield smsc


async def test_binds_and_submits_reach_the_server(smsc34: Smsc34) -> None:
    messages = numbered(40)
    async with opened(smsc34.port, binds=3, window=8) as adapter:
        results = await send(adapter, messages)
        assert len(smsc34.esmes) == 3, "three transceiver binds"
        assert all(esme.can_receive for esme in smsc34.esmes)
        assert all(esme.system_id == "loa" for esme in smsc34.esmes)
    assert all(isinstance(r, Accepted) for r in results), results
    for message, result in zip(messages, results, strict=True):
        sub = smsc34.by_id(result.provider_id)  # the ids come back in the messages' order
        assert sub.destination_addr == message.to.removeprefix("+")  # E.164 without the plus
        assert (sub.dest_addr_ton, sub.dest_addr_npi) == (1, 1)
        assert decode_text(sub.short_message, sub.data_coding) == message.body
        assert (sub.source_addr, sub.source_addr_ton, sub.source_addr_npi) == ("BoYTe", 5, 0)
        assert sub.registered_delivery == 1
        assert sub.esm_class == 0
    assert len({sub.session for sub in smsc34.submits}) == 3, "the chunk is spread over the binds"
    await until(lambda: len(smsc34.unbound) == 3, "three unbinds")


async def test_transmitter_and_receiver_binds(smsc34: Smsc34) -> None:
    # (smpp34 1.5's server never reads the deliver_sm_resp on a receiver bind, so the receipts
    # through a receiver bind are checked against the node server below)
    async with opened(smsc34.port, mode="transmitter", binds=2, receivers=1) as adapter:
        results = await send(adapter, numbered(6))
        await until(lambda: len(smsc34.esmes) == 3, "two transmitters and a receiver")
    assert all(isinstance(r, Accepted) for r in results)
    assert len(smsc34.receivers()) == 1
    transmitters = {esme.session_id for esme in smsc34.esmes if not esme.can_receive}
    assert len(transmitters) == 2
    assert {sub.session for sub in smsc34.submits} == transmitters, "submits go out on TX binds"
    await until(lambda: len(smsc34.unbound) == 3, "three unbinds")


@pytest.mark.parametrize(
    ("source", "ton", "npi"),
    [("BoYTe", 5, 0), ("84912000111", 1, 1), ("+84912000111", 1, 1), ("1022", 3, 0)],
)
async def test_source_ton_npi(smsc34: Smsc34, source: str, ton: int, npi: int) -> None:
    async with opened(smsc34.port, source_addr=source) as adapter:
        [result] = await send(adapter, numbered(1))
    assert isinstance(result, Accepted)
    sub = smsc34.by_id(result.provider_id)
    assert (sub.source_addr, sub.source_addr_ton, sub.source_addr_npi) == (source, ton, npi)


@pytest.mark.parametrize(
    ("preference", "body", "data_coding", "wire"),
    [
        ("auto", "Tiem vac-xin @ 9:30 €5", GSM7, b"Tiem vac-xin \x00 9:30 \x1b\x655"),
        ("auto", "Tiêm vắc-xin", UCS2, "Tiêm vắc-xin".encode("utf-16-be")),
        ("latin1", "Café à 9h", LATIN1, "Café à 9h".encode("latin-1")),
        ("latin1", "Cà phê sữa", UCS2, "Cà phê sữa".encode("utf-16-be")),
        ("ucs2", "plain text", UCS2, "plain text".encode("utf-16-be")),
    ],
)
async def test_data_coding(
    smsc34: Smsc34, preference: str, body: str, data_coding: int, wire: bytes
) -> None:
    async with opened(smsc34.port, data_coding=preference) as adapter:
        [result] = await send(adapter, [Message("dc", "+84912345678", body)])
    assert isinstance(result, Accepted)
    sub = smsc34.by_id(result.provider_id)
    assert (sub.data_coding, sub.short_message) == (data_coding, wire)


@pytest.mark.parametrize("long_messages", ["udh", "sar", "payload"])
async def test_long_messages_reassemble_on_the_server(smsc34: Smsc34, long_messages: str) -> None:
    messages = [
        Message("vi", "+84912000001", VIETNAMESE * 3),
        Message("gsm", "+84912000002", GSM_EXTENDED),
        Message("vi2", "+84912000003", VIETNAMESE * 2),
        Message("short", "+84912000004", "Ngắn thôi"),
    ]
    async with opened(smsc34.port, long_messages=long_messages) as adapter:
        results = await send(adapter, messages)
    assert all(isinstance(r, Accepted) for r in results), results
    whole = {m.destination_addr: m for m in smsc34.reassembled()}
    for message, result in zip(messages, results, strict=True):
        got = whole[message.to.removeprefix("+")]
        assert got.text == message.body
        assert result.provider_ids == tuple(str(i) for i in got.ids), "one id per part, in order"
        assert got.data_coding == (GSM7 if message.id == "gsm" else UCS2)
    long_ones = [whole[m.to.removeprefix("+")] for m in messages[:3]]
    if long_messages == "payload":
        for got in long_ones:
            [sub] = got.parts
            assert sub.short_message == b"" and sub.esm_class == 0
        return
    for got in long_ones:
        assert len(got.parts) > 1
        infos = [concatenation(part) for part in got.parts]
        assert {info[3] for info in infos if info} == {long_messages}
        assert len({info[0] for info in infos if info}) == 1, "one reference for all parts"
        for part in got.parts:
            limit = 134 if got.data_coding == UCS2 else 153
            assert len(user_data(part)) <= limit
            assert part.esm_class == (0x40 if long_messages == "udh" else 0)
        assert len({part.session for part in got.parts}) == 1, "every part on one bind"
    references = [concatenation(got.parts[0]) for got in long_ones]
    assert len({ref[0] for ref in references if ref}) == 3, "each long message its own reference"
    if long_messages == "udh":  # 8-bit references, each part's header six bytes
        assert all(got.parts[0].short_message[:3] == b"\x05\x00\x03" for got in long_ones)


async def test_receipts_and_replies_reach_the_sink(smsc34: Smsc34) -> None:
    sink = Sink()
    async with opened(smsc34.port, sink) as adapter:
        assert isinstance(adapter, EmitsEvents)
        results = await send(adapter, numbered(3))
        ids = [r.provider_id for r in results]
        [esme] = smsc34.esmes
        # a receipt in TLVs, delivered
        await esme.deliver_sm(
            "BoYTe",
            b"",
            source_addr="84900000000",
            source_addr_ton=1,
            esm_class=0x04,
            tlvs=[
                smpp34.Tlv(Tag.RECEIPTED_MESSAGE_ID, ids[0].encode() + b"\0"),
                smpp34.Tlv(Tag.MESSAGE_STATE, bytes([MessageState.DELIVERED])),
            ],
        )
        # TLVs saying undeliverable
        await esme.deliver_sm(
            "BoYTe",
            b"",
            source_addr="84900000001",
            esm_class=0x04,
            tlvs=[
                smpp34.Tlv(Tag.RECEIPTED_MESSAGE_ID, ids[1].encode() + b"\0"),
                smpp34.Tlv(Tag.MESSAGE_STATE, bytes([MessageState.UNDELIVERABLE])),
                smpp34.Tlv(Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01"),
            ],
        )
        # the appendix-B text alone
        text = (
            f"id:{ids[2]} sub:001 dlvrd:001 submit date:2108151230 done date:2108151231 "
            "stat:DELIVRD err:000 text:Lich tiem"
        )
        await esme.deliver_sm("BoYTe", text.encode(), source_addr="84900000002", esm_class=0x04)
        # a person's reply, in Vietnamese (UCS-2), to our short code
        reply = "Tôi đã tiêm mũi 2 rồi, cảm ơn! 👍"
        answer = await esme.deliver_sm(
            "1022",
            reply.encode("utf-16-be"),
            source_addr="84987654321",
            source_addr_ton=1,
            source_addr_npi=1,
            data_coding=8,
        )
        assert answer.is_success
        # and one in the GSM alphabet, with extension characters
        await esme.deliver_sm(
            "1022",
            b"Co \x1b\x3csot\x1b\x3e 38\x1b\x65",
            source_addr="84987654322",
            source_addr_ton=1,
            source_addr_npi=1,
        )
        await until(lambda: len(sink.receipts) == 3 and len(sink.inbounds) == 2, "events")
    assert sink.receipts == [
        Receipt(ROUTE, ids[0], True, "DELIVRD", ""),
        Receipt(ROUTE, ids[1], False, "UNDELIV", "030001"),
        Receipt(ROUTE, ids[2], True, "DELIVRD", "000"),
    ]
    assert sink.inbounds == [
        Inbound(ROUTE, "+84987654321", reply, recipient="1022"),
        Inbound(ROUTE, "+84987654322", "Co [sot] 38€", recipient="1022"),
    ]


async def test_hex_submit_ids_meet_decimal_receipt_ids(smsc34: Smsc34) -> None:
    smsc34.hex_ids = True
    smsc34.next_id = 0x1A2B  # answered as "1A2B"; the receipt says 6699
    sink = Sink()
    async with opened(smsc34.port, sink, submit_id="hex", receipt_id="decimal") as adapter:
        [result] = await send(adapter, numbered(1))
        assert smsc34.submits[0].message_id == "1A2B"
        assert result == Accepted.one("6699"), "read as hex, given back in decimal"
        await smsc34.esmes[0].deliver_sm(
            "BoYTe", b"id:6699 sub:001 dlvrd:001 stat:DELIVRD err:000", esm_class=0x04
        )
        await until(lambda: len(sink.receipts) == 1, "the receipt")
    assert sink.receipts == [Receipt(ROUTE, "6699", True, "DELIVRD", "000")]


@pytest.mark.parametrize(
    ("status", "overrides", "expected"),
    [
        (Status.RTHROTTLED, {}, Throttled),
        (Status.RMSGQFUL, {}, Throttled),
        (Status.RINVDSTADR, {}, Failed),
        (Status.RSYSERR, {}, RetryLater),
        (Status.RUNKNOWNERR, {}, RetryLater),
        (Status.RSYSERR, {"ESME_RSYSERR": "failed"}, Failed),
        (Status.RINVDSTADR, {"0x0B": "retry"}, RetryLater),
        (Status.RSYSERR, {"8": "throttled"}, Throttled),
    ],
)
async def test_status_verdicts(
    smsc34: Smsc34, status: int, overrides: dict[str, str], expected: type
) -> None:
    messages = numbered(3)
    smsc34.reject[messages[1].to.removeprefix("+")] = status
    async with opened(smsc34.port, status=overrides) as adapter:
        results = await send(adapter, messages)
    assert isinstance(results[0], Accepted) and isinstance(results[2], Accepted)
    assert type(results[1]) is expected
    if isinstance(results[1], Failed):
        assert "ESME_" in results[1].reason


async def test_a_message_smpp_cannot_carry_fails_alone(smsc34: Smsc34) -> None:
    messages = [
        Message("ok1", "+84912345678", "a"),
        Message("bad", "+" + "8" * 25, "an address longer than SMPP's 20 characters"),
        Message("lone", "+84912345679", "\ud83d broken surrogate"),
        Message("ok2", "+84912345680", "b"),
    ]
    async with opened(smsc34.port) as adapter:
        results = await send(adapter, messages)
    assert isinstance(results[0], Accepted) and isinstance(results[3], Accepted)
    assert isinstance(results[1], Failed) and "destination_addr" in results[1].reason
    assert isinstance(results[2], Failed)
    assert len(smsc34.submits) == 2


async def test_ping_and_many_chunks_at_once(smsc34: Smsc34) -> None:
    async with opened(smsc34.port, binds=2, window=4) as adapter:
        assert isinstance(adapter, Pingable)
        await adapter.ping()
        chunks = [numbered(25, prefix=f"c{n}-") for n in range(4)]
        answers = await asyncio.gather(*(send(adapter, chunk) for chunk in chunks))
    for chunk, results in zip(chunks, answers, strict=True):
        for message, result in zip(chunk, results, strict=True):
            assert isinstance(result, Accepted)
            assert smsc34.by_id(result.provider_id).destination_addr == message.to[1:]
    assert len(smsc34.submits) == 100


class TestSmppContract(AdapterContract):
    """The adapter contract suite, against smpp34's server."""

    @pytest.fixture
    async def adapter(self, smsc34: Smsc34) -> AsyncIterator[Adapter]:
        adapter = make_adapter(smsc34.port, binds=2)
        yield adapter
        await adapter.aclose()


# --- the npm `smpp` package's server (node; a second implementation we did not write) ---------


class NodeSmsc:
    """tests/peers/smpp_server.js in a child process; its JSON lines gathered by a thread."""

    def __init__(self, script: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            ["node", str(script), "0", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._read, name="node-smsc", daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            self.close()
            raise RuntimeError("the node SMPP server did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["event"] == "listening":
                self.port = int(event["port"])
                self.ready.set()
            else:
                self.events.append(event)

    def of(self, kind: str, system_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == kind and e["system_id"] == system_id]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the script exits when its stdin ends
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.thread.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="session")
def node_script() -> Path:
    """The peer script, with the pinned npm `smpp` beside it (`make tools` runs npm ci)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the npm smpp peer cannot run")
    if not (PEERS / "node_modules" / "smpp" / "package.json").is_file():
        pytest.skip("the npm smpp peer is not installed: `make tools` installs it")
    return PEERS / "smpp_server.js"


@pytest.fixture(scope="module")
def node_smsc(node_script: Path) -> Iterator[NodeSmsc]:
    """One server for the module: receipts on, ids in hex, receipts in decimal, '99' fails."""
    flags = ("--record", "--receipts", "--receipt-ids", "decimal", "--undeliverable-suffix", "99")
    smsc = NodeSmsc(node_script, *flags)
    yield smsc
    smsc.close()


def node_options(system_id: str, **options: Any) -> dict[str, Any]:
    # node answers submit_sm with hex ids and writes receipts in decimal
    return {"system_id": system_id, "submit_id": "hex", "receipt_id": "decimal", **options}


async def test_node_binds_submits_and_receipts(node_smsc: NodeSmsc, anyio_backend: Any) -> None:
    system_id = f"rcpt-{anyio_backend[1]['use_uvloop']}"[:15]
    sink = Sink()
    messages = [*numbered(20), Message("fail", "+84912345699", "so nay khong nhan duoc")]
    async with opened(node_smsc.port, sink, binds=2, **node_options(system_id)) as adapter:
        results = await send(adapter, messages)
        await until(lambda: len(sink.receipts) == len(messages), "a receipt per message")
    assert [e["command"] for e in node_smsc.of("bind", system_id)] == ["bind_transceiver"] * 2
    assert all(isinstance(r, Accepted) for r in results), results
    recorded = {str(int(e["ids"][0], 16)): e for e in node_smsc.of("message", system_id)}
    for message, result in zip(messages, results, strict=True):
        event = recorded[result.provider_id]  # hex on the wire, decimal here: the same message
        assert event["destination_addr"] == message.to[1:]
        assert event["text"] == message.body
        assert (event["source_addr"], event["source_addr_ton"], event["source_addr_npi"]) == (
            "BoYTe",
            5,
            0,
        )
    by_id = {r.provider_id: r for r in sink.receipts}
    assert set(by_id) == {r.provider_id for r in results}, "each receipt names its message"
    assert by_id[results[-1].provider_id].delivered is False
    assert by_id[results[-1].provider_id].state == "UNDELIV"
    assert all(by_id[r.provider_id].delivered for r in results[:-1])


async def test_node_receipts_through_a_receiver_bind(
    node_smsc: NodeSmsc, anyio_backend: Any
) -> None:
    system_id = f"txrx-{int(anyio_backend[1]['use_uvloop'])}"
    sink = Sink()
    options = node_options(system_id, mode="transmitter", binds=2, receivers=1)
    async with opened(node_smsc.port, sink, **options) as adapter:
        await send(adapter, numbered(1, prefix="warm-up"))  # the receiver binds once sending starts
        await until(lambda: "bind_receiver" in commands(node_smsc, system_id), "the RX bind")
        results = await send(adapter, numbered(10))
        ids = {r.provider_id for r in results}
        await until(lambda: ids <= {r.provider_id for r in sink.receipts}, "receipts over RX")
    assert commands(node_smsc, system_id) == ["bind_receiver", "bind_transmitter"] * 1 + [
        "bind_transmitter"
    ]
    assert all(r.delivered for r in sink.receipts)


def commands(smsc: NodeSmsc, system_id: str) -> list[str]:
    """The bind commands the node server saw from `system_id`, sorted."""
    return sorted(e["command"] for e in smsc.of("bind", system_id))


@pytest.mark.parametrize("long_messages", ["udh", "sar", "payload"])
async def test_node_long_messages(
    node_smsc: NodeSmsc, long_messages: str, anyio_backend: Any
) -> None:
    # the node library decodes with its own GSM 03.38 and UCS-2 tables, not ours
    system_id = f"long-{long_messages}-{int(anyio_backend[1]['use_uvloop'])}"
    sink = Sink()
    messages = [
        Message("vi", "+84912000011", VIETNAMESE * 2),
        Message("gsm", "+84912000012", GSM_EXTENDED),
    ]
    options = node_options(system_id, long_messages=long_messages)
    async with opened(node_smsc.port, sink, **options) as adapter:
        results = await send(adapter, messages)
        parts = sum(len(r.provider_ids) for r in results)
        await until(lambda: len(sink.receipts) == parts, "a receipt per part")
    # the server's record of a reassembled message is read from its output, which may trail
    # the receipts on a loaded machine
    await until(
        lambda: len(node_smsc.of("message", system_id)) == len(messages), "both messages on record"
    )
    recorded = {e["destination_addr"]: e for e in node_smsc.of("message", system_id)}
    for message, result in zip(messages, results, strict=True):
        event = recorded[message.to[1:]]
        assert event["text"] == message.body
        ids = [str(int(i, 16)) for i in event["ids"]]
        assert result.provider_ids == tuple(ids)
        if long_messages == "payload":
            assert event["parts"] == 1 and event["payload"] is True
        else:
            assert event["parts"] == len(ids) > 1
            assert event["concatenation"] == long_messages
    assert {r.provider_id for r in sink.receipts} == {
        i for r in results for i in r.provider_ids
    }


async def test_node_refuses_a_wrong_password(node_script: Path) -> None:
    smsc = NodeSmsc(node_script, "--record", "--password", "right")
    try:
        async with opened(smsc.port, **node_options("pw", password="wrong")) as adapter:
            [refused] = await send(adapter, numbered(1))
        async with opened(smsc.port, **node_options("pw", password="right")) as adapter:
            [accepted] = await send(adapter, numbered(1))
        await until(lambda: bool(smsc.of("refused", "pw")), "the refusal on record")
    finally:
        smsc.close()
    assert isinstance(refused, RetryLater) and "ESME_RINVPASWD" in refused.reason
    assert isinstance(accepted, Accepted)


async def test_node_window_is_filled_and_never_exceeded(node_script: Path) -> None:
    # the server holds every answer 100 ms: whatever it sees at once is what is in flight
    smsc = NodeSmsc(node_script, "--record", "--hold-ms", "100")
    try:
        async with opened(smsc.port, **node_options("window", binds=2, window=16)) as adapter:
            results = await send(adapter, numbered(160))
        assert all(isinstance(r, Accepted) for r in results)
        await until(lambda: len(smsc.of("closed", "window")) == 2, "both sessions closed")
    finally:
        smsc.close()
    sessions = smsc.of("closed", "window")
    assert [s["submits"] for s in sessions] == [80, 80]
    assert [s["max_outstanding"] for s in sessions] == [16, 16]


# --- faults: scripted servers that speak SMPP through loa's own codec --------------------------


class Peer:
    """One connection to a scripted SMSC."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> Pdu:
        head = await self.reader.readexactly(4)
        return decode(head + await self.reader.readexactly(read_length(head) - 4))

    def send(self, pdu: Pdu) -> None:
        self.writer.write(encode(pdu))

    async def accept_bind(self) -> Pdu:
        bind = await self.read()
        assert bind.command_id == Command.BIND_TRANSCEIVER
        self.send(response(bind, system_id="RAW"))
        return bind

    def answer(self, pdu: Pdu, prefix: str = "id") -> None:
        """Answer a request as a healthy SMSC would."""
        if pdu.command_id == Command.SUBMIT_SM:
            self.send(response(pdu, message_id=f"{prefix}{pdu.sequence}"))
        elif not pdu.is_response:
            self.send(response(pdu))

    async def expect(self, wanted: Callable[[Pdu], bool], prefix: str = "id") -> Pdu:
        """Read until a PDU that is `wanted`, answering the requests on the way."""
        while True:
            pdu = await self.read()
            if wanted(pdu):
                return pdu
            self.answer(pdu, prefix)

    async def serve(self, prefix: str = "id") -> None:
        """Answer like a healthy SMSC until the ESME unbinds or goes."""
        unbind = await self.expect(lambda pdu: pdu.command_id == Command.UNBIND, prefix)
        self.answer(unbind)
        await self.writer.drain()


def is_command(command: int) -> Callable[[Pdu], bool]:
    return lambda pdu: pdu.command_id == command


Script = Callable[[Peer, int], Awaitable[None]]


class ScriptedSmsc:
    """A loopback TCP server running `script(peer, connection_number)` per connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedSmsc:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.connections += 1
        try:
            await self.script(Peer(reader, writer), self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the ESME went away: scripts end there
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


async def test_disconnect_mid_window_loses_nothing_and_reconnects() -> None:
    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        if connection == 1:  # read ten of the forty in flight, answer five, hang up
            got = [await peer.read() for _ in range(10)]
            for pdu in got[:5]:
                peer.send(response(pdu, message_id=f"first{pdu.sequence}"))
            await peer.writer.drain()
            return
        await peer.serve("second")

    messages = numbered(40)
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, window=64) as adapter:
        results = await send(adapter, messages)
        assert all(isinstance(r, Accepted) for r in results[:5]), results[:5]
        assert [r.provider_id for r in results[:5]] == [f"first{n}" for n in range(2, 7)]
        assert all(isinstance(r, RetryLater) for r in results[5:]), "every one in flight retried"
        again = await send(adapter, messages[5:])
        assert all(isinstance(r, Accepted) for r in again), again
        assert smsc.connections == 2, "the next send bound again"


async def test_a_server_that_never_answers() -> None:
    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        while True:
            pdu = await peer.read()
            if pdu.command_id in (Command.ENQUIRE_LINK, Command.UNBIND):
                peer.send(response(pdu))  # alive, but submit_sm goes into a black hole

    options: dict[str, Any] = {"window": 2, "response_timeout": 0.3}
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, **options) as adapter:
        # three messages through a window of two: the third leaves only once two timed out
        results = await send(adapter, numbered(3))
        assert all(isinstance(r, RetryLater) for r in results)
        assert all("no submit_sm_resp within 0.3s" in r.reason for r in results)
        await adapter.ping()  # the session is still bound and its window free again
        assert all(isinstance(r, RetryLater) for r in await send(adapter, numbered(2)))
        assert smsc.connections == 1


async def test_malformed_request_from_the_server_is_nacked() -> None:
    nacks: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        # a deliver_sm whose service_type never ends within its six bytes
        body = b"ABCDEFGHIJ" + b"\0" * 20
        peer.writer.write(HEADER.pack(16 + len(body), Command.DELIVER_SM, 0, 4242) + body)
        nacks.append(await peer.expect(is_command(Command.GENERIC_NACK)))
        await peer.serve()

    sink = Sink()
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, sink) as adapter:
        [result] = await send(adapter, numbered(1))
        await until(lambda: bool(nacks), "the generic_nack")
    assert isinstance(result, Accepted), "the session went on after the bad PDU"
    [nack] = nacks
    assert (nack.command_id, nack.sequence, nack.status) == (
        Command.GENERIC_NACK,
        4242,
        Status.RINVCMDLEN,
    )
    assert sink.receipts == [] and sink.inbounds == []


@pytest.mark.parametrize(
    ("status", "accepted"), [(Status.ROK, True), (Status.RSYSERR, False)], ids=["rok", "error"]
)
async def test_an_unreadable_response_settles_its_request_at_once(
    status: int, accepted: bool
) -> None:
    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        first = await peer.read()
        body = b"x" * 80  # a message_id without its NUL
        peer.writer.write(
            HEADER.pack(16 + len(body), Command.SUBMIT_SM_RESP, status, first.sequence) + body
        )
        await peer.serve()

    # a response timeout far beyond the send's bound: the answer must not wait for it
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, response_timeout=120) as adapter:
        results = await send(adapter, numbered(2), timeout=20)
    if accepted:  # the SMSC took it: sending it again would deliver it twice
        assert results[0] == Accepted.one(""), "accepted, with an id nobody can read"
    else:
        assert isinstance(results[0], RetryLater) and "unreadable response" in results[0].reason
    assert isinstance(results[1], Accepted)


async def test_a_flood_of_malformed_pdus_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    nacks: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        body = b"ABCDEFGHIJ" + b"\0" * 20  # a service_type that never ends within six bytes
        for sequence in range(1000, 1200):
            peer.writer.write(HEADER.pack(16 + len(body), Command.DELIVER_SM, 0, sequence) + body)
        for _ in range(200):
            nacks.append(await peer.expect(is_command(Command.GENERIC_NACK)))
        await peer.serve()

    with caplog.at_level(logging.WARNING, logger="loa.adapters.smpp.session"):
        async with ScriptedSmsc(script) as smsc, opened(smsc.port, Sink()) as adapter:
            [result] = await send(adapter, numbered(1))  # binds: the flood comes
            await until(lambda: len(nacks) == 200, "every malformed PDU answered")
    assert isinstance(result, Accepted)
    warnings = [r for r in caplog.records if r.getMessage() == "malformed PDU from the SMSC"]
    assert 1 <= len(warnings) <= 2, f"{len(warnings)} warnings for 200 malformed PDUs"


@pytest.mark.parametrize(
    "fault",
    ["truncated-frame", "garbage-length", "garbage-bytes"],
)
async def test_broken_stream_closes_the_session_and_the_next_send_reconnects(fault: str) -> None:
    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        if connection > 1:
            await peer.serve()
            return
        await peer.read()
        if fault == "truncated-frame":  # half a header, then the line drops
            peer.writer.write(HEADER.pack(30, Command.SUBMIT_SM_RESP, 0, 2)[:8])
        elif fault == "garbage-length":  # a command_length of 4 GB: the stream cannot be framed
            peer.writer.write(b"\xff" * 40)
        else:  # text where a PDU should be
            peer.writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await peer.writer.drain()
        if fault == "truncated-frame":
            return
        await peer.reader.read()  # the ESME must be the one to hang up

    async with ScriptedSmsc(script) as smsc, opened(smsc.port) as adapter:
        [first] = await send(adapter, numbered(1))
        assert isinstance(first, RetryLater)
        again = await send(adapter, numbered(3))
        assert all(isinstance(r, Accepted) for r in again), again
        assert smsc.connections == 2


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("garbage", "PduError"),
        ("hang-up", "IncompleteReadError"),
        ("nack", "BindError"),
        ("silence", "TimeoutError: no bind_resp within 0.5s"),
    ],
)
async def test_a_bind_that_goes_wrong_is_retry_later(fault: str, error: str) -> None:
    async def script(peer: Peer, connection: int) -> None:
        bind = await peer.read()
        if connection == 1:
            if fault == "garbage":
                peer.writer.write(b"\x00\x00\x00\x05garbage")
            elif fault == "nack":
                peer.send(Pdu(Command.GENERIC_NACK, bind.sequence, Status.RINVCMDID))
            elif fault == "silence":
                await peer.reader.read()
            await peer.writer.drain()
            return
        peer.send(response(bind, system_id="RAW"))
        await peer.serve()

    options: dict[str, Any] = {"bind_timeout": 0.5, "reconnect_min": 0.05}
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, **options) as adapter:
        [first] = await send(adapter, numbered(1))
        assert isinstance(first, RetryLater)
        assert f"no SMPP bind is up: {error}" in first.reason
        for _ in range(200):  # bounded: the back-off is 50 ms here
            results = await send(adapter, numbered(2))
            if isinstance(results[0], Accepted):
                break
            await asyncio.sleep(0.02)
        assert all(isinstance(r, Accepted) for r in results), results


async def test_wrong_password_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[str] = []

    async def script(peer: Peer, connection: int) -> None:
        bind = await peer.read()
        attempts.append(bind.text("password"))
        peer.send(response(bind, Status.RINVPASWD))
        await peer.writer.drain()
        await peer.reader.read()

    options: dict[str, Any] = {"password": "wrong", "reconnect_min": 1.5, "reconnect_max": 1.5}
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, **options) as adapter:
        [result] = await send(adapter, numbered(1))
        assert isinstance(result, RetryLater)
        assert "ESME_RINVPASWD" in result.reason
        [again] = await send(adapter, numbered(1))  # within the back-off: no new attempt
        assert isinstance(again, RetryLater)
        assert len(attempts) == 1
        for _ in range(500):  # bounded: the back-off is 1.2 to 1.8 s
            await asyncio.sleep(0.02)
            await send(adapter, numbered(1))
            if len(attempts) == 2:
                break
        assert attempts == ["wrong", "wrong"]
        with pytest.raises(SessionClosed, match="ESME_RINVPASWD"):
            await adapter.ping()
    failures = [r for r in caplog.records if r.getMessage() == "SMPP bind failed"]
    assert len(failures) == 2
    errors = [str(getattr(r, "error", "")) for r in failures]
    assert all("BindError" in e and "ESME_RINVPASWD" in e for e in errors), errors
    assert all("wrong" not in f"{vars(r)}" for r in failures), "the password is not logged"


async def test_enquire_link_from_the_server_is_answered() -> None:
    answers: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        bind = await peer.read()
        peer.send(Pdu(Command.ENQUIRE_LINK, 900))  # before the bind is answered
        answers.append(await peer.read())
        peer.send(response(bind, system_id="RAW"))
        peer.send(Pdu(Command.ENQUIRE_LINK, 901))  # and once bound
        answers.append(await peer.expect(is_command(Command.ENQUIRE_LINK_RESP)))
        await peer.serve()

    async with ScriptedSmsc(script) as smsc, opened(smsc.port) as adapter:
        await adapter.ping()
        await until(lambda: len(answers) == 2, "two enquire_link_resp")
        assert isinstance((await send(adapter, numbered(1)))[0], Accepted)
    assert [(a.command_id, a.sequence, a.status) for a in answers] == [
        (Command.ENQUIRE_LINK_RESP, 900, 0),
        (Command.ENQUIRE_LINK_RESP, 901, 0),
    ]


async def test_keepalive_sends_enquire_link_when_quiet() -> None:
    seen: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        while True:
            pdu = await peer.read()
            seen.append(pdu)
            peer.send(response(pdu))

    async with ScriptedSmsc(script) as smsc, opened(smsc.port, enquire_link=0.05) as adapter:
        await adapter.ping()
        await until(lambda: len(seen) >= 3, "enquire_link on a quiet line")
    assert {pdu.command_id for pdu in seen} <= {Command.ENQUIRE_LINK, Command.UNBIND}


async def test_unbind_from_the_server() -> None:
    answers: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        if connection == 1:
            submit = await peer.expect(is_command(Command.SUBMIT_SM))
            peer.send(response(submit, message_id="before-unbind"))
            peer.send(Pdu(Command.UNBIND, 950))
            answers.append(await peer.expect(is_command(Command.UNBIND_RESP)))
            assert await peer.reader.read() == b"", "the ESME closes after unbind_resp"
            return
        await peer.serve("after")

    async with ScriptedSmsc(script) as smsc, opened(smsc.port) as adapter:
        [first] = await send(adapter, numbered(1))
        assert first == Accepted.one("before-unbind")
        await until(lambda: bool(answers), "the unbind_resp")
        await until(lambda: not bound(adapter), "the session to end")
        [second] = await send(adapter, numbered(1))
        assert isinstance(second, Accepted) and second.provider_id.startswith("after")
        assert smsc.connections == 2
    assert [(a.command_id, a.sequence) for a in answers] == [(Command.UNBIND_RESP, 950)]


def bound(adapter: SmppAdapter) -> bool:
    """True while the adapter's first bind is up."""
    session = adapter.transmitters[0].session
    return session is not None and session.alive


def deliver(
    sequence: int, text: bytes = b"", tlvs: dict[int, bytes] | None = None, **fields: Any
) -> Pdu:
    base: dict[str, Any] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": "84912345678",
        "destination_addr": "BoYTe",
        "esm_class": 0x04,
        "short_message": text,
    }
    return Pdu(Command.DELIVER_SM, sequence, fields={**base, **fields}, tlvs=tlvs or {})


async def test_receipt_before_the_submit_resp_and_for_unknown_ids() -> None:
    resps: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        submit = await peer.read()
        tlvs: dict[int, bytes] = {
            Tag.RECEIPTED_MESSAGE_ID: b"early-1\0",
            Tag.MESSAGE_STATE: b"\x02",
        }
        peer.send(deliver(7001, tlvs=tlvs))  # the receipt overtakes the submit_sm_resp
        peer.send(response(submit, message_id="early-1"))
        peer.send(deliver(7002, b"id:nobody-knows stat:UNDELIV err:001"))  # an id never sent
        peer.send(deliver(7003, b"stat:DELIVRD"))  # a receipt naming no message
        # intermediate notification (esm_class 0x20): not an outcome, and not a person's text
        peer.send(deliver(7004, b"id:early-1 stat:ENROUTE err:000", esm_class=0x20))
        for _ in range(4):
            resps.append(await peer.expect(is_command(Command.DELIVER_SM_RESP)))
        await peer.serve()

    sink = Sink()
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, sink) as adapter:
        [result] = await send(adapter, numbered(1))
        await until(lambda: len(resps) == 4, "four deliver_sm_resp")
    assert result == Accepted.one("early-1")
    assert sink.receipts == [
        Receipt(ROUTE, "early-1", True, "DELIVRD", ""),
        Receipt(ROUTE, "nobody-knows", False, "UNDELIV", "001"),
    ]
    assert sink.inbounds == []
    # each is answered when what it carried is kept: not necessarily in the order they came
    assert sorted((r.command_id, r.sequence, r.status) for r in resps) == [
        (Command.DELIVER_SM_RESP, n, 0) for n in (7001, 7002, 7003, 7004)
    ]


async def test_a_sink_that_raises_does_not_break_the_session() -> None:
    resps: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        peer.send(deliver(8001, b"id:1 stat:DELIVRD err:000"))
        resps.append(await peer.expect(is_command(Command.DELIVER_SM_RESP)))
        await peer.serve()

    sink = Sink()
    sink.broken = True
    async with ScriptedSmsc(script) as smsc, opened(smsc.port, sink) as adapter:
        await adapter.ping()
        await until(lambda: bool(resps), "the deliver_sm_resp")
        [result] = await send(adapter, numbered(1))
    assert resps[0].status == Status.RX_T_APPN, "a temporary error: the SMSC will resend it"
    assert isinstance(result, Accepted)


class HeldSink:
    """An EventSink whose writes end when the test says: done, or failed (Redis away)."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[None]] = []

    def receipt(self, receipt: Receipt) -> asyncio.Future[None]:
        return self._held()

    def inbound(self, message: Inbound) -> asyncio.Future[None]:
        return self._held()

    def _held(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future


async def test_a_deliver_sm_is_answered_only_once_its_event_is_written() -> None:
    seen: list[Pdu] = []
    sink = HeldSink()

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        peer.send(deliver(8201, b"id:1 stat:DELIVRD err:000"))
        peer.send(deliver(8202, b"STOP", esm_class=0))
        peer.send(deliver(8203, b"HUY", esm_class=0))
        await until(lambda: len(sink.pending) == 3, "three events handed over")
        # the session goes on meanwhile; the next answer is to this, not to the deliver_sm
        peer.send(Pdu(Command.ENQUIRE_LINK, 8204))
        seen.append(await peer.read())
        sink.pending[1].set_result(None)  # the reply is written
        seen.append(await peer.read())
        sink.pending[0].set_exception(ConnectionError("Redis is away"))  # the receipt is not
        seen.append(await peer.read())
        sink.pending[2].cancel()  # the worker stopped before writing it
        seen.append(await peer.read())
        await peer.serve()

    async with ScriptedSmsc(script) as smsc, opened(smsc.port, sink) as adapter:
        adapter.listen()
        await until(lambda: len(seen) == 4, "four answers")
    assert [(pdu.command_id, pdu.sequence, pdu.status) for pdu in seen] == [
        (Command.ENQUIRE_LINK_RESP, 8204, 0),
        (Command.DELIVER_SM_RESP, 8202, Status.ROK),
        (Command.DELIVER_SM_RESP, 8201, Status.RX_T_APPN),  # sent again by the SMSC
        (Command.DELIVER_SM_RESP, 8203, Status.RX_T_APPN),
    ]


@pytest.mark.parametrize(
    ("options", "kinds"),
    [
        ({"binds": 2}, ["transceiver", "transceiver"]),
        ({"mode": "transmitter", "binds": 2, "receivers": 1}, ["receiver"]),
    ],
    ids=["transceivers", "receiver-beside-transmitters"],
)
async def test_receiving_binds_are_held_without_sending_and_bound_again(
    options: dict[str, Any], kinds: list[str]
) -> None:
    binds: list[int] = []

    async def script(peer: Peer, connection: int) -> None:
        bind = await peer.read()
        binds.append(bind.command_id)
        peer.send(response(bind, system_id="RAW"))
        if connection <= len(kinds):  # the first binds drop at once, as an SMSC restarting
            await peer.writer.drain()
            return
        await peer.serve()

    async with ScriptedSmsc(script) as smsc, opened(smsc.port, **options) as adapter:
        assert [state.up for state in adapter.binds()] == [False] * len(kinds)
        adapter.listen()  # nothing is ever sent
        await until(lambda: smsc.connections == 2 * len(kinds), "each bind made twice")
        await until(lambda: all(state.up for state in adapter.binds()), "every bind up again")
        assert [state.kind for state in adapter.binds()] == kinds
    wanted = Command.BIND_TRANSCEIVER if kinds[0] == "transceiver" else Command.BIND_RECEIVER
    assert binds == [wanted] * 2 * len(kinds), "transmitters wait for something to send"


async def test_receipts_without_a_sink_are_acknowledged() -> None:
    resps: list[Pdu] = []

    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        peer.send(deliver(8101, b"id:1 stat:DELIVRD err:000"))
        peer.send(deliver(8102, b"a reply", esm_class=0))
        for _ in range(2):
            resps.append(await peer.expect(is_command(Command.DELIVER_SM_RESP)))
        await peer.serve()

    async with ScriptedSmsc(script) as smsc, opened(smsc.port) as adapter:
        await adapter.ping()
        await until(lambda: len(resps) == 2, "two deliver_sm_resp")
    assert [r.status for r in resps] == [0, 0]


async def test_close_while_sending_and_twice() -> None:
    async def script(peer: Peer, connection: int) -> None:
        await peer.accept_bind()
        while True:
            pdu = await peer.read()
            if pdu.command_id == Command.UNBIND:
                peer.send(response(pdu))  # submits are never answered

    async with ScriptedSmsc(script) as smsc:
        adapter = make_adapter(smsc.port, response_timeout=60)
        sending = asyncio.create_task(adapter.send(numbered(5)))
        await until(lambda: bound(adapter), "a bind")
        await asyncio.sleep(0.05)
        await adapter.aclose()
        async with asyncio.timeout(10):
            results = await sending
        await adapter.aclose()
    assert all(isinstance(r, RetryLater) for r in results), results


# --- the session's window -----------------------------------------------------------------------


async def test_window_wakes_waiters_a_quarter_at_a_time() -> None:
    window = Window(8)
    for _ in range(8):
        assert window.try_acquire()
    assert not window.try_acquire()
    waiter = asyncio.create_task(window.acquire())
    await asyncio.sleep(0)
    window.release()  # one slot free: not yet worth a write
    await asyncio.sleep(0)
    assert not waiter.done()
    assert not window.try_acquire(), "a newcomer does not overtake a waiter"
    window.release()  # two free: a quarter of the window
    await asyncio.wait_for(waiter, 5)
    assert window.used == 7
    assert window.try_acquire()
    assert window.free == 0


async def test_window_cancelled_waiters_give_their_slot_back() -> None:
    window = Window(4)
    for _ in range(4):
        window.try_acquire()
    waiting = [asyncio.create_task(window.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # cancelled while queued
    for _ in range(4):
        window.release()  # wakes the other two (the cancelled one is passed over)
    waiting[1].cancel()  # granted, then cancelled before it ran: its slot comes back
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2] is None
    assert window.used == 1
    assert [window.try_acquire() for _ in range(4)] == [True, True, True, False]
