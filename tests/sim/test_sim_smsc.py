"""The SMSC simulator, driven by an SMPP client we did not write (smpp34) and by hostile sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pydantic
import pytest
import smpp34
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.adapters.smpp.pdu import (
    HEADER,
    HEADER_SIZE,
    Command,
    MessageState,
    Pdu,
    Status,
    Tag,
    decode,
    decode_sm,
    encode,
    encode_deliver_sm,
    read_length,
    response,
    tlv_int,
    tlv_text,
)
from loa.errors import ConfigError, PduError
from loa.sim.smsc import (
    NoReceiver,
    SmscOptions,
    SmscSimulator,
    decode_text,
    smsc_options,
)
from loa.sms import BASIC_CODES, EXTENSION_CODES, encode_gsm7, encode_ucs2, split

pytestmark = pytest.mark.anyio

ACCOUNTS = {"acme": "secret", "other": "pw2"}
PHONE = "+84912345678"
RECEIPT = re.compile(
    r"id:(?P<id>\w+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:\d{10} done date:\d{10} "
    r"stat:(?P<stat>[A-Z]+) err:(?P<err>\d{3}) text:(?P<text>.*)"
)
# GSM-7 with nine of the ten extension characters (two septets each), longer than one SMS
GSM_TEXT = "MoH advice [ward 5]: bring {ID card} & ~ 10€ fee | a\\b ^ form_2 @ 08:30. " * 3
# UCS-2: Vietnamese with emoji (surrogate pairs), longer than one SMS
UCS2_TEXT = "Bộ Y tế khuyến cáo: đeo khẩu trang, rửa tay thường xuyên 😷🙏 giữ khoảng cách. " * 3


async def until(predicate: Callable[[], bool], seconds: float = 3.0) -> None:
    """Wait, bounded, until `predicate()` holds."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[SmscSimulator]:
    """A running simulator with the test accounts."""
    options.setdefault("accounts", ACCOUNTS)
    async with SmscSimulator(SmscOptions(**options)) as sim:
        yield sim


@contextlib.asynccontextmanager
async def esme(
    sim: SmscSimulator, bind_type: str = "TRX", system_id: str = "acme", window: int = 32
) -> AsyncIterator[smpp34.Smsc]:
    """A bound smpp34 client session, unbound and stopped afterwards."""
    client = smpp34.Client(
        "127.0.0.1",
        sim.port,
        system_id,
        ACCOUNTS.get(system_id, "x"),
        bind_type=bind_type,
        window_size=window,
        connect_timeout_ms=3000,
    )
    session = await client.connect()
    try:
        yield session
    finally:
        with contextlib.suppress(smpp34.SmppError):
            await session.unbind()
        await client.stop()


async def next_deliver(session: smpp34.Smsc, seconds: float = 3.0) -> smpp34.DeliverSmEvent:
    event = await asyncio.wait_for(session.next(), seconds)
    assert isinstance(event, smpp34.DeliverSmEvent), event
    return event


def tlvs(event: smpp34.DeliverSmEvent) -> dict[int, bytes]:
    return {tlv.tag: tlv.value for tlv in event.tlvs}


class Raw:
    """A hand-driven SMPP peer on a plain socket, speaking through loa's codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sequence = 0

    def send(self, item: Pdu | bytes) -> None:
        self.writer.write(encode(item) if isinstance(item, Pdu) else item)

    def request(self, command: int, **fields: Any) -> int:
        self.sequence += 1
        tags = fields.pop("tlvs", {})
        self.send(Pdu(command, self.sequence, 0, fields, tags))
        return self.sequence

    async def read(self, seconds: float = 3.0) -> Pdu:
        async with asyncio.timeout(seconds):
            head = await self.reader.readexactly(4)
            return decode(head + await self.reader.readexactly(read_length(head) - 4))

    async def closed_by_peer(self, seconds: float = 3.0) -> bool:
        async with asyncio.timeout(seconds):
            return await self.reader.read(1) == b""

    async def bind(self, command: int = Command.BIND_TRANSCEIVER, **fields: Any) -> Pdu:
        fields = {"system_id": "acme", "password": "secret", "interface_version": 0x34} | fields
        self.request(command, **fields)
        return await self.read()


@contextlib.asynccontextmanager
async def raw(sim: SmscSimulator) -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def submit_ok(sim: SmscSimulator) -> None:
    """A fresh client can still bind and submit: the server survived whatever came before."""
    async with esme(sim, "TX") as session:
        answer = await session.submit_sm(PHONE, b"still here", source_addr="LOA")
        assert answer.is_success and answer.message_id


# -- binds ---------------------------------------------------------------------------------------


async def test_bind_submit_and_receipt_through_smpp34() -> None:
    async with simulator(receipt_delay=0.3) as sim, esme(sim) as session:
        text = "Tiem chung {ngay} 5"
        answer = await session.submit_sm(
            PHONE, encode_gsm7(text), source_addr="LOA", registered_delivery=1
        )
        answered = time.monotonic()
        assert answer.command_status == 0
        assert re.fullmatch(r"[0-9a-f]{10}", answer.message_id or "")

        receipt = await next_deliver(session)
        assert time.monotonic() - answered > 0.2  # the receipt waited for its delay
        assert receipt.esm_class == 0x04
        assert (receipt.source_addr, receipt.destination_addr) == (PHONE, "LOA")
        fields = RECEIPT.fullmatch(receipt.short_message.decode())
        assert fields is not None, receipt.short_message
        assert fields["id"] == answer.message_id
        assert (fields["stat"], fields["dlvrd"], fields["err"]) == ("DELIVRD", "001", "000")
        assert fields["text"] == text[:20]
        assert tlv_text(tlvs(receipt)[Tag.RECEIPTED_MESSAGE_ID]) == answer.message_id
        assert tlv_int(tlvs(receipt)[Tag.MESSAGE_STATE]) == MessageState.DELIVERED

        await until(lambda: sim.stats()["receipts_acked"] == 1)
        stats = sim.stats()
        assert stats["binds"] == 1 and stats["submits"] == stats["accepted"] == 1
        assert stats["messages"] == stats["parts"] == stats["receipts_sent"] == 1
        issued = sim.issued[answer.message_id]
        assert (issued.destination, issued.text) == (PHONE, text)


async def test_a_wrong_password_is_refused_and_smpp34_gives_up() -> None:
    async with simulator() as sim:
        client = smpp34.Client(
            "127.0.0.1", sim.port, "acme", "wrong", bind_type="TX", connect_timeout_ms=500
        )
        # smpp34 closes the socket on the refusal but reports it only as a bind timeout
        with pytest.raises(smpp34.SmppError):
            await client.connect()
        await client.stop()
        await until(lambda: sim.stats()["binds_refused"] == 1)
        assert sim.stats()["binds"] == 0


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"password": "wrong"}, Status.RINVPASWD),
        ({"system_id": "nobody"}, Status.RINVSYSID),
    ],
)
async def test_bind_refusals_carry_the_status(fields: dict[str, str], status: int) -> None:
    async with simulator() as sim, raw(sim) as peer:
        answer = await peer.bind(Command.BIND_TRANSMITTER, **fields)
        assert answer.command_id == Command.BIND_TRANSMITTER_RESP
        assert answer.status == status
        # not bound: a submit is refused with the bind state error
        peer.request(Command.SUBMIT_SM, source_addr="LOA", destination_addr=PHONE)
        assert (await peer.read()).status == Status.RINVBNDSTS


async def test_bind_states_and_limits() -> None:
    async with simulator(max_binds=2, accounts={}) as sim:
        async with raw(sim) as first, raw(sim) as second, raw(sim) as third:
            peer_request = first.request(Command.SUBMIT_SM, source_addr="A", destination_addr=PHONE)
            answer = await first.read()
            assert (answer.sequence, answer.status) == (peer_request, Status.RINVBNDSTS)
            assert (await first.bind(Command.BIND_RECEIVER, system_id="any")).status == 0
            assert (await first.bind()).status == Status.RALYBND
            # a receiver may not submit
            first.request(Command.SUBMIT_SM, source_addr="A", destination_addr=PHONE)
            assert (await first.read()).status == Status.RINVBNDSTS
            assert (await second.bind(system_id="x", password="y")).status == 0
            assert (await third.bind()).status == Status.RBINDFAIL
        assert sim.stats()["not_bound"] == 2


async def test_enquire_link_unknown_command_and_unbind() -> None:
    async with simulator() as sim, raw(sim) as peer:
        sequence = peer.request(Command.ENQUIRE_LINK)
        answer = await peer.read()
        assert (answer.command_id, answer.sequence) == (Command.ENQUIRE_LINK_RESP, sequence)
        peer.send(HEADER.pack(16, 0x00000099, 0, 77))
        nack = await peer.read()
        assert (nack.command_id, nack.status, nack.sequence) == (
            Command.GENERIC_NACK,
            Status.RINVCMDID,
            77,
        )
        peer.send(HEADER.pack(16, Command.QUERY_SM_RESP, 0, 78))  # an answer is never answered
        assert (await peer.bind()).status == 0
        sequence = peer.request(Command.UNBIND)
        answer = await peer.read()
        assert (answer.command_id, answer.sequence) == (Command.UNBIND_RESP, sequence)
        assert await peer.closed_by_peer()
        assert sim.stats()["unbinds"] == 1


# -- hostile peers -------------------------------------------------------------------------------

FATAL_FRAMES = {
    "command_length below a header": HEADER.pack(8, Command.ENQUIRE_LINK, 0, 1),
    "huge command_length": HEADER.pack(0x7FFFFFF0, Command.SUBMIT_SM, 0, 1),
    "garbage bytes": b"GET / HTTP/1.1\r\nHost: smsc\r\n\r\n",
}


@pytest.mark.parametrize("frame", FATAL_FRAMES.values(), ids=FATAL_FRAMES.keys())
async def test_an_unreadable_length_is_nacked_and_closed(frame: bytes) -> None:
    async with simulator() as sim, raw(sim) as bystander, raw(sim) as attacker:
        assert (await bystander.bind()).status == 0
        attacker.send(frame)
        nack = await attacker.read()
        assert (nack.command_id, nack.status) == (Command.GENERIC_NACK, Status.RINVCMDLEN)
        assert await attacker.closed_by_peer()
        # the connection already open still works, and so does a new one
        sequence = bystander.request(Command.ENQUIRE_LINK)
        assert (await bystander.read()).sequence == sequence
        await submit_ok(sim)
        assert sim.stats()["malformed"] == 1


def _truncated_submit() -> bytes:
    return HEADER.pack(18, Command.SUBMIT_SM, 0, 41) + b"\0\0"


def _unterminated_bind() -> bytes:
    body = b"x" * 30  # a system_id without its NUL
    return HEADER.pack(16 + len(body), Command.BIND_TRANSMITTER, 0, 42) + body


def _tlv_past_the_end() -> bytes:
    good = encode(Pdu(Command.SUBMIT_SM, 43, 0, {"destination_addr": PHONE}))
    tlv = bytes([0x04, 0x24, 0x00, 0xFF, 0x41])  # message_payload says 255 bytes, has 1
    return HEADER.pack(len(good) + len(tlv), Command.SUBMIT_SM, 0, 43) + good[16:] + tlv


@pytest.mark.parametrize(
    "build", [_truncated_submit, _unterminated_bind, _tlv_past_the_end], ids=lambda f: f.__name__
)
async def test_a_malformed_body_is_nacked_and_the_session_goes_on(
    build: Callable[[], bytes],
) -> None:
    async with simulator() as sim, raw(sim) as peer:
        if build is not _unterminated_bind:
            assert (await peer.bind()).status == 0
        frame = build()
        peer.send(frame)
        nack = await peer.read()
        assert nack.command_id == Command.GENERIC_NACK
        assert (nack.status, nack.sequence) == (Status.RINVCMDLEN, HEADER.unpack_from(frame)[3])
        sequence = peer.request(Command.ENQUIRE_LINK)
        assert (await peer.read()).sequence == sequence
        assert sim.stats()["malformed"] == 1


async def test_a_frame_cut_short_by_a_closing_peer_harms_nobody() -> None:
    async with simulator() as sim:
        async with raw(sim) as peer:
            assert (await peer.bind()).status == 0
            frame = encode(Pdu(Command.SUBMIT_SM, 9, 0, {"destination_addr": PHONE}))
            peer.send(frame[:-5])  # the rest never comes
        await until(lambda: sim.stats()["open"] == 0)
        await submit_ok(sim)
        assert sim.stats()["submits"] == 1  # only the good one


# -- submits -------------------------------------------------------------------------------------


async def test_decimal_ids_and_data_sm() -> None:
    async with simulator(id_format="decimal") as sim, raw(sim) as peer:
        assert (await peer.bind()).status == 0
        payload = encode_ucs2("Xin chào 👋")
        sequence = peer.request(
            Command.DATA_SM,
            source_addr="LOA",
            destination_addr=PHONE,
            data_coding=8,
            tlvs={Tag.MESSAGE_PAYLOAD: payload},
        )
        answer = await peer.read()
        assert (answer.command_id, answer.sequence) == (Command.DATA_SM_RESP, sequence)
        message_id = answer.text("message_id")
        assert message_id.isdigit()
        assert sim.messages[-1].text == "Xin chào 👋"
        assert sim.messages[-1].message_ids == (message_id,)


async def test_the_rate_cap_holds_over_all_binds() -> None:
    async with simulator(tps=5, tps_burst=1) as sim:
        async with esme(sim, "TX") as first, esme(sim, "TX", "other") as second:
            sends = [
                session.submit_sm(PHONE, b"x", source_addr="LOA")
                for session in (first, second)
                for _ in range(15)
            ]
            started = time.monotonic()
            answers = await asyncio.gather(*sends)
            elapsed = time.monotonic() - started
        statuses = [answer.command_status for answer in answers]
        accepted = statuses.count(0)
        assert 5 <= accepted <= 5 + int(elapsed * 5) + 1  # the burst, and what refilled meanwhile
        assert statuses.count(Status.RTHROTTLED) == 30 - accepted
        stats = sim.stats()
        assert (stats["accepted"], stats["throttled"]) == (accepted, 30 - accepted)


async def test_errors_and_bad_destinations() -> None:
    async with simulator(error_ratio=1.0, error_status=Status.RMSGQFUL) as sim, esme(sim) as s:
        answers = [await s.submit_sm(PHONE, b"x", source_addr="LOA") for _ in range(3)]
        assert [answer.command_status for answer in answers] == [Status.RMSGQFUL] * 3
        assert sim.stats()["errors"] == 3 and not sim.messages
    async with simulator(bad_destination_ratio=0.5) as sim, esme(sim) as session:
        phones = [f"+849{n:08d}" for n in range(40)]
        first = [(await session.submit_sm(p, b"x")).command_status for p in phones]
        again = [(await session.submit_sm(p, b"x")).command_status for p in phones]
        assert first == again  # a bad number stays bad
        assert set(first) == {0, Status.RINVDSTADR}
        assert sim.stats()["bad_destinations"] == 2 * first.count(Status.RINVDSTADR)


async def test_latency_is_served_concurrently_and_out_of_order() -> None:
    async with simulator(latency=0.3) as sim, esme(sim, window=32) as session:
        started = time.monotonic()
        answers = await asyncio.gather(*(session.submit_sm(PHONE, b"x") for _ in range(20)))
        elapsed = time.monotonic() - started
        assert all(answer.is_success for answer in answers)
        assert 0.3 <= elapsed < 1.5  # one latency for the window, not twenty in a row
    async with simulator(latency=0.01, latency_jitter=0.3, seed=7) as sim, raw(sim) as peer:
        assert (await peer.bind()).status == 0
        sent = [peer.request(Command.SUBMIT_SM, destination_addr=PHONE) for _ in range(10)]
        answered = [(await peer.read()).sequence for _ in sent]
        assert sorted(answered) == sent and answered != sent


# -- long messages -------------------------------------------------------------------------------


def _chunks(data: bytes, size: int) -> list[bytes]:
    """Raw cuts that may split an escape pair or a surrogate pair: the SMSC joins bytes first."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def _long_submits(text: str, method: str) -> tuple[int, list[dict[str, Any]]]:
    coding = 0 if text is GSM_TEXT else 8
    data = encode_gsm7(text) if coding == 0 else encode_ucs2(text)
    if method == "payload":
        tlv = [smpp34.Tlv(Tag.MESSAGE_PAYLOAD, data)]
        return coding, [{"short_message": b"", "tlvs": tlv}]
    parts = _chunks(data, 152 if coding == 0 else 132)
    submits = []
    for number, part in enumerate(parts, 1):
        total = len(parts)
        submit: dict[str, Any]
        if method == "udh8":
            submit = {"short_message": bytes([5, 0, 3, 0xA7, total, number]) + part}
        elif method == "udh16":
            submit = {"short_message": bytes([6, 8, 4, 0x12, 0x34, total, number]) + part}
        else:
            sar = [
                smpp34.Tlv(Tag.SAR_MSG_REF_NUM, (0x4321).to_bytes(2, "big")),
                smpp34.Tlv(Tag.SAR_TOTAL_SEGMENTS, bytes([total])),
                smpp34.Tlv(Tag.SAR_SEGMENT_SEQNUM, bytes([number])),
            ]
            submit = {"short_message": part, "tlvs": sar}
        submit["esm_class"] = 0x40 if method.startswith("udh") else 0
        submits.append(submit)
    return coding, submits


@pytest.mark.parametrize("method", ["udh8", "udh16", "sar", "payload"])
@pytest.mark.parametrize("text", [GSM_TEXT, UCS2_TEXT], ids=["gsm7", "ucs2"])
async def test_long_messages_are_reassembled_to_the_exact_text(text: str, method: str) -> None:
    coding, submits = _long_submits(text, method)
    async with simulator() as sim, esme(sim) as session:
        # parts may arrive in any order, and one twice (sent again after a lost answer)
        order = [len(submits) - 1, *reversed(range(len(submits)))]
        ids = {}
        for index in order:
            answer = await session.submit_sm(
                PHONE, source_addr="LOA", data_coding=coding, **submits[index]
            )
            assert answer.is_success
            ids[index] = answer.message_id  # the later id of a part sent twice stands
    message = sim.messages[-1]
    assert message.text == text
    assert (message.source, message.destination, message.data_coding) == ("LOA", PHONE, coding)
    assert message.message_ids == tuple(ids[index] for index in range(len(submits)))
    stats = sim.stats()
    assert stats["parts"] == len(order) and stats["pending_parts"] == 0
    if len(submits) > 1:
        assert stats["messages"] == len(sim.messages) == 1
        assert (stats["duplicate_parts"], stats["duplicate_messages"]) == (1, 0)
    else:  # the payload was sent twice whole: two messages, the second a duplicate
        assert stats["messages"] == len(sim.messages) == 2
        assert (stats["duplicate_parts"], stats["duplicate_messages"]) == (0, 1)


_address = st.binary(max_size=20).map(lambda raw: raw.replace(b"\0", b"1"))
_sm_fields = st.fixed_dictionaries(
    {
        "service_type": st.sampled_from(["", "CMT", "WAP"]),
        "source_addr_ton": st.integers(0, 255),
        "source_addr": _address,
        "destination_addr": _address,
        "esm_class": st.integers(0, 255),
        "schedule_delivery_time": st.sampled_from(["", "260101000000000+"]),
        "registered_delivery": st.integers(0, 255),
        "data_coding": st.integers(0, 255),
        "short_message": st.binary(max_size=254),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    command=st.sampled_from([Command.SUBMIT_SM, Command.DELIVER_SM]),
    fields=_sm_fields,
    payload=st.none() | st.binary(max_size=300),
    cut=st.integers(0, 400),
    flip=st.none() | st.tuples(st.integers(16, 400), st.integers(0, 255)),
)
def test_the_fast_submit_decoder_agrees_with_the_codec(
    command: int,
    fields: dict[str, Any],
    payload: bytes | None,
    cut: int,
    flip: tuple[int, int] | None,
) -> None:
    tags = {Tag.MESSAGE_PAYLOAD.value: payload} if payload is not None else {}
    frame = bytearray(encode(Pdu(command, 7, 0, fields, tags)))
    if flip is not None and flip[0] < len(frame):  # a byte gone wrong: perhaps a lost NUL
        frame[flip[0]] = flip[1]
    if cut and cut < len(frame) - HEADER_SIZE:  # a body cut short, the length told truthfully
        del frame[len(frame) - cut :]
        frame[:4] = len(frame).to_bytes(4, "big")

    def outcome(decoder: Callable[[bytes], Pdu]) -> Pdu | str:
        try:
            return decoder(bytes(frame))
        except PduError as exc:
            return str(exc)

    assert outcome(decode_sm) == outcome(decode)


@settings(max_examples=200, deadline=None)
@given(
    source=st.binary(max_size=22),
    destination=st.binary(max_size=22),
    esm_class=st.integers(0, 300),
    data_coding=st.integers(0, 255),
    short_message=st.binary(max_size=256),
    receipt_id=st.none() | st.binary(max_size=20),
)
def test_the_fast_deliver_sm_encoder_agrees_with_the_codec(
    source: bytes,
    destination: bytes,
    esm_class: int,
    data_coding: int,
    short_message: bytes,
    receipt_id: bytes | None,
) -> None:
    tags = {} if receipt_id is None else {Tag.RECEIPTED_MESSAGE_ID.value: receipt_id + b"\0"}
    fields = {
        "source_addr": source,
        "destination_addr": destination,
        "esm_class": esm_class,
        "data_coding": data_coding,
        "short_message": short_message,
    }

    def outcome(encoder: Callable[[], bytes]) -> bytes | str:
        try:
            return encoder()
        except PduError as exc:
            return str(exc)

    fast = outcome(
        lambda: encode_deliver_sm(
            9, source, destination, esm_class, data_coding, short_message, tags
        )
    )
    assert fast == outcome(lambda: encode(Pdu(Command.DELIVER_SM, 9, 0, fields, tags)))


def test_gsm7_decoding_covers_both_tables() -> None:
    every = "".join(BASIC_CODES) + "".join(EXTENSION_CODES)
    assert decode_text(encode_gsm7(every), 0) == every
    assert decode_text(b"\x1b\x41", 0) == "A"  # an unknown extension reads as its basic character
    assert decode_text("Café Ñ".encode("latin-1"), 3) == "Café Ñ"
    assert decode_text(encode_ucs2(UCS2_TEXT), 8) == UCS2_TEXT
    assert decode_text(encode_ucs2(UCS2_TEXT), 0x18) == UCS2_TEXT  # UCS-2 with a message class
    assert decode_text(encode_gsm7("{x}"), 0xF1) == decode_text(encode_gsm7("{x}"), 0x11) == "{x}"
    assert decode_text(b"\xe9", 0xF4) == decode_text(b"\xe9", 4) == "\xe9"  # 8-bit data


# -- receipts ------------------------------------------------------------------------------------


async def test_receipt_options_text_only_and_decimal_ids() -> None:
    options = {"receipt_tlvs": False, "receipt_id_format": "decimal", "id_format": "hex"}
    async with simulator(**options) as sim, esme(sim) as session:
        answer = await session.submit_sm(PHONE, b"hi", registered_delivery=1)
        receipt = await next_deliver(session)
        assert receipt.tlvs == []
        fields = RECEIPT.fullmatch(receipt.short_message.decode())
        assert fields is not None
        assert fields["id"] == str(int(answer.message_id or "", 16))


async def test_receipt_states_follow_the_seeded_mix() -> None:
    async def stats_of_run() -> list[tuple[str, int, str]]:
        options = {"undelivered_ratio": 0.4, "expired_ratio": 0.3, "seed": 11}
        async with simulator(**options) as sim, esme(sim) as session:
            await asyncio.gather(
                *(session.submit_sm(PHONE, b"x", registered_delivery=1) for _ in range(30))
            )
            seen = []
            for _ in range(30):
                receipt = await next_deliver(session)
                fields = RECEIPT.fullmatch(receipt.short_message.decode())
                assert fields is not None
                state = tlv_int(tlvs(receipt)[Tag.MESSAGE_STATE])
                seen.append((fields["stat"], state, fields["dlvrd"]))
            return seen

    first = await stats_of_run()
    assert set(first) == {
        ("DELIVRD", MessageState.DELIVERED, "001"),
        ("UNDELIV", MessageState.UNDELIVERABLE, "000"),
        ("EXPIRED", MessageState.EXPIRED, "000"),
    }
    # the same seed, the same outcomes (smpp34 may hand events over in another order)
    assert sorted(await stats_of_run()) == sorted(first)


async def test_a_receipt_may_overtake_its_submit_sm_resp() -> None:
    async with simulator(receipt_before_response=True) as sim, raw(sim) as peer:
        assert (await peer.bind()).status == 0
        sequence = peer.request(Command.SUBMIT_SM, destination_addr=PHONE, registered_delivery=1)
        receipt, answer = await peer.read(), await peer.read()
        assert receipt.command_id == Command.DELIVER_SM
        assert (answer.command_id, answer.sequence) == (Command.SUBMIT_SM_RESP, sequence)
        assert tlv_text(receipt.tlvs[Tag.RECEIPTED_MESSAGE_ID]) == answer.text("message_id")


async def test_receipts_wait_for_the_next_receiver_of_their_system_id() -> None:
    async with simulator(receipt_queue=2) as sim:
        async with esme(sim, "TX") as sender, esme(sim, "RX", "other") as stranger:
            ids = [
                (await sender.submit_sm(PHONE, b"x", registered_delivery=1)).message_id
                for _ in range(3)
            ]
            with pytest.raises(TimeoutError):
                await next_deliver(stranger, 0.3)  # another customer's receiver gets nothing
        assert sim.stats()["receipts_queued"] == 2 and sim.stats()["receipts_dropped"] == 1
        async with esme(sim, "RX") as receiver:
            got = [tlv_text(tlvs(await next_deliver(receiver))[Tag.RECEIPTED_MESSAGE_ID])]
            got.append(tlv_text(tlvs(await next_deliver(receiver))[Tag.RECEIPTED_MESSAGE_ID]))
        assert sorted(got) == ids[:2]  # smpp34 may hand events over in any order


async def test_unacknowledged_receipts_are_sent_again_to_the_next_bind() -> None:
    async with simulator() as sim:
        async with raw(sim) as silent:
            assert (await silent.bind()).status == 0
            silent.request(Command.SUBMIT_SM, destination_addr=PHONE, registered_delivery=1)
            answer, receipt = await silent.read(), await silent.read()  # the receipt goes second
            assert answer.command_id == Command.SUBMIT_SM_RESP
            assert receipt.command_id == Command.DELIVER_SM
        await until(lambda: sim.stats()["receipts_requeued"] == 1)
        async with esme(sim, "RX") as receiver:
            again = await next_deliver(receiver)
            assert tlv_text(tlvs(again)[Tag.RECEIPTED_MESSAGE_ID]) == answer.text("message_id")
            await until(lambda: sim.stats()["receipts_acked"] == 1)


async def test_receipts_for_ids_never_issued() -> None:
    async with simulator(unknown_receipt_ratio=1.0) as sim, esme(sim) as session:
        answer = await session.submit_sm(PHONE, b"x", registered_delivery=1)
        receipts = [await next_deliver(session), await next_deliver(session)]
        ids = {tlv_text(tlvs(receipt)[Tag.RECEIPTED_MESSAGE_ID]) for receipt in receipts}
        assert answer.message_id in ids
        (unknown,) = ids - {answer.message_id}
        assert unknown not in sim.issued
        assert sim.stats()["receipts_unknown"] == 1


# -- mobile-originated messages ------------------------------------------------------------------


async def test_mobile_originated_messages_reach_a_receiver() -> None:
    async with simulator() as sim:
        async with esme(sim, "TX"):
            with pytest.raises(NoReceiver):
                await sim.send_mo(PHONE, "1900", "DK")
        async with esme(sim, "TRX") as session:
            assert await sim.send_mo(PHONE, "1900", "DK TIEM {A}") == 0
            short = await next_deliver(session)
            assert (short.esm_class, short.data_coding) == (0, 0)
            assert (short.source_addr, short.destination_addr) == (PHONE, "1900")
            assert decode_text(short.short_message, 0) == "DK TIEM {A}"

            assert await sim.send_mo(PHONE, "1900", UCS2_TEXT) == 0
            count = len(split(UCS2_TEXT))
            parts = [await next_deliver(session) for _ in range(count)]
            assert all(part.esm_class == 0x40 and part.data_coding == 8 for part in parts)
            parts.sort(key=lambda part: part.short_message[5])  # the UDH's part number
            assert [part.short_message[4] for part in parts] == [count] * count
            joined = b"".join(part.short_message[6:] for part in parts)
            assert decode_text(joined, 8) == UCS2_TEXT
        assert sim.stats()["mo_sent"] == sim.stats()["mo_acked"] == 1 + count  # deliver_sm sent


async def test_a_mo_whose_receiver_leaves_unanswered_goes_to_the_next_one() -> None:
    async with simulator(redeliver_delay=0.05) as sim:
        async with raw(sim) as peer:
            assert (await peer.bind()).status == 0
            sending = asyncio.ensure_future(sim.send_mo(PHONE, "1900", "hi", answer_within=10))
            assert (await peer.read()).command_id == Command.DELIVER_SM
            await sim.drop_connections()  # gone before answering
        async with raw(sim) as again:
            assert (await again.bind()).status == 0
            mo = await again.read()
            assert mo.command_id == Command.DELIVER_SM
            assert decode_text(mo.fields["short_message"], 0) == "hi"
            again.send(response(mo))
            assert await sending == 0
    stats = sim.stats()
    assert (stats["mo_sent"], stats["mo_retried"], stats["mo_acked"]) == (2, 1, 1)


@pytest.mark.parametrize("status", [Status.RX_T_APPN, Status.RMSGQFUL])
async def test_a_temporary_error_makes_the_smsc_send_again(status: int) -> None:
    """As SMSCs do: an MO or a receipt the ESME could not keep now comes again, later."""
    async with simulator(redeliver_delay=0.05) as sim, raw(sim) as peer:
        assert (await peer.bind()).status == 0
        sending = asyncio.ensure_future(sim.send_mo(PHONE, "1900", "STOP", answer_within=10))
        first = await peer.read()
        peer.send(response(first, status))
        second = await peer.read()
        assert second.fields["short_message"] == first.fields["short_message"]
        peer.send(response(second))
        assert await sending == 0
        peer.request(Command.SUBMIT_SM, destination_addr=PHONE, registered_delivery=1)
        answer = await peer.read()
        receipt = await peer.read()
        assert receipt.command_id == Command.DELIVER_SM
        peer.send(response(receipt, status))
        again = await peer.read()
        assert tlv_text(again.tlvs[Tag.RECEIPTED_MESSAGE_ID]) == answer.text("message_id")
        peer.send(response(again))
        await until(lambda: sim.stats()["receipts_acked"] == 1)
    stats = sim.stats()
    assert (stats["mo_sent"], stats["mo_retried"], stats["mo_acked"]) == (2, 1, 1)
    assert (stats["receipts_sent"], stats["receipts_retried"], stats["receipts_nacked"]) == (
        2,
        1,
        1,
    )


async def test_a_lasting_error_is_not_sent_again() -> None:
    async with simulator(redeliver_delay=0.05) as sim, raw(sim) as peer:
        assert (await peer.bind()).status == 0
        sending = asyncio.ensure_future(sim.send_mo(PHONE, "1900", "hi", answer_within=10))
        peer.send(response(await peer.read(), Status.RX_P_APPN))
        assert await sending == Status.RX_P_APPN
        peer.request(Command.SUBMIT_SM, destination_addr=PHONE, registered_delivery=1)
        await peer.read()
        peer.send(response(await peer.read(), Status.RX_P_APPN))
        await until(lambda: sim.stats()["receipts_nacked"] == 1)
    # a re-send is decided (and counted) when the answer comes: none was
    stats = sim.stats()
    assert (stats["mo_refused"], stats["mo_retried"], stats["receipts_retried"]) == (1, 0, 0)


async def test_periodic_mos_for_demos() -> None:
    async with simulator(mo_interval=0.05, mo_text="HUY") as sim, esme(sim) as session:
        event = await next_deliver(session)
        assert decode_text(event.short_message, event.data_coding) == "HUY"
        assert sim.options.mo_source == event.source_addr


# -- forced disconnects --------------------------------------------------------------------------


async def test_drop_connections_and_reconnect() -> None:
    async with simulator() as sim:
        async with esme(sim) as session:
            assert await sim.drop_connections() == 1
            event = await asyncio.wait_for(session.next(), 3)
            assert isinstance(event, smpp34.Disconnected)
        await submit_ok(sim)
        assert sim.stats()["dropped"] == 1


@pytest.mark.parametrize(("latency", "answered"), [(0.0, 2), (0.5, 0)])
async def test_drop_after_every_n_submits(latency: float, answered: int) -> None:
    async with simulator(drop_after=3, latency=latency) as sim, raw(sim) as peer:
        assert (await peer.bind()).status == 0
        for _ in range(5):
            peer.request(Command.SUBMIT_SM, destination_addr=PHONE)
        answers = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                answers.append(await peer.read())
        assert [answer.command_id for answer in answers] == [Command.SUBMIT_SM_RESP] * answered
        stats = sim.stats()
        assert stats["submits"] == 3 and stats["dropped"] == 1
        assert stats["accepted"] == answered and stats["unanswered"] == 3 - answered
        await asyncio.sleep(latency)  # the answers that were due find the connection gone
        assert sim.stats()["accepted"] == answered


# -- options and the command-line entry ----------------------------------------------------------


def test_options_refuse_impossible_mixes_and_typos() -> None:
    with pytest.raises(pydantic.ValidationError):
        SmscOptions(undelivered_ratio=0.7, expired_ratio=0.5)
    with pytest.raises(ConfigError, match="latencyy"):
        smsc_options({"latencyy": 1})
    assert smsc_options({"tps": 50}).tps == 50


def _lines(proc: subprocess.Popen[bytes], count: int, seconds: float = 10.0) -> Iterator[Any]:
    """The next `count` JSON lines the process prints, waiting at most `seconds` in all."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        for _ in range(count):
            assert selector.select(deadline - time.monotonic()), "no output in time"
            yield orjson.loads(proc.stdout.readline())


def _frames(sock: socket.socket, count: int) -> list[Pdu]:
    """The next `count` PDUs on a blocking socket."""
    data = b""
    frames: list[Pdu] = []
    while len(frames) < count:
        chunk = sock.recv(4096)
        assert chunk, "the simulator closed the connection"
        data += chunk
        while len(data) >= 16 and len(data) >= read_length(data):
            size = read_length(data)
            frames.append(decode(data[:size]))
            data = data[size:]
    return frames


def test_run_smsc_simulators_serves_each_carrier_and_reports() -> None:
    script = (
        "from loa.sim.smsc import SmscOptions, run_smsc_simulators\n"
        "run_smsc_simulators([('viettel', 0, SmscOptions()), "
        "('mobifone', 0, SmscOptions(id_format='decimal'))], stats_interval=0.2)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env) as proc:
        try:
            listening = list(_lines(proc, 2))
            assert [line["sim"] for line in listening] == ["viettel", "mobifone"]
            with socket.create_connection(("127.0.0.1", listening[1]["port"]), timeout=5) as sock:
                bind = {"system_id": "a", "password": "b", "interface_version": 0x34}
                sock.sendall(encode(Pdu(Command.BIND_TRANSMITTER, 1, 0, bind)))
                sock.sendall(encode(Pdu(Command.SUBMIT_SM, 2, 0, {"destination_addr": PHONE})))
                answer = _frames(sock, 2)[1]
                assert answer.command_id == Command.SUBMIT_SM_RESP
                assert answer.text("message_id").isdigit()
            stats = next(line for line in _lines(proc, 8) if line["event"] == "stats")
            assert set(stats) >= {"sim", "port", "submits", "accepted", "messages"}
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in output.splitlines()]
    stopped = {line["sim"]: line for line in lines if line["event"] == "stopped"}
    assert stopped["mobifone"]["submits"] == stopped["mobifone"]["accepted"] == 1
    assert stopped["viettel"]["submits"] == 0
