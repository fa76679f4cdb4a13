"""An SMPP 3.4 SMSC simulator with fault injection, for demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import signal
import sys
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TextIO

import orjson
import uvloop
from pydantic import Field, model_validator

from loa.adapters.smpp.pdu import (
    HEADER,
    HEADER_SIZE,
    MAX_SEQUENCE,
    RESPONSE_BIT,
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
    tlv_int,
)
from loa.errors import LoaError, PduError, SessionClosed
from loa.settings import ConfigModel
from loa.sim.citizens import CitizenOptions, Citizens, Planned
from loa.sim.options import load_options
from loa.sms import (
    BASIC_CODES,
    EXTENSION_CODES,
    Encoding,
    analyse,
    encode_gsm7,
    encode_ucs2,
    split,
)

log = logging.getLogger(__name__)

UDHI = 0x40  # esm_class bit: the short_message starts with a user data header
RECEIPT_ESM = 0x04  # esm_class of a delivery receipt (SMSC delivery receipt)
DRAIN_AT = 1 << 20  # write without awaiting until this many bytes wait in the buffer
_RECEIPTED_MESSAGE_ID = int(Tag.RECEIPTED_MESSAGE_ID)
_MESSAGE_STATE = int(Tag.MESSAGE_STATE)
_BIND_KINDS = {
    Command.BIND_TRANSMITTER: "tx",
    Command.BIND_RECEIVER: "rx",
    Command.BIND_TRANSCEIVER: "trx",
}
_STATES = {  # receipt stat -> (message_state TLV, err, dlvrd)
    "DELIVRD": (MessageState.DELIVERED, "000", "001"),
    "UNDELIV": (MessageState.UNDELIVERABLE, "001", "000"),
    "EXPIRED": (MessageState.EXPIRED, "000", "000"),
}
# deliver_sm_resp statuses after which the deliver_sm is sent again later, as SMSCs do; any
# other error (ESME_RX_P_APPN, ESME_RX_R_APPN, ...) refuses it for good
TEMPORARY = frozenset({Status.RX_T_APPN, Status.RMSGQFUL, Status.RTHROTTLED, Status.RSYSERR})
_STAT_COUNTERS = {  # receipt stat -> the counter of receipts made with it
    "DELIVRD": "receipts_delivered",
    "UNDELIV": "receipts_undelivered",
    "EXPIRED": "receipts_expired",
}
_COUNTERS = (
    "connections",
    "binds",
    "binds_refused",
    "unbinds",
    "disconnects",
    "dropped",
    "submits",
    "accepted",
    "throttled",
    "errors",
    "bad_destinations",
    "not_bound",
    "unanswered",
    "parts",
    "messages",
    "duplicate_parts",
    "duplicate_messages",
    "abandoned_messages",
    "receipts_sent",
    "receipts_acked",
    "receipts_nacked",
    "receipts_retried",
    "receipts_queued",
    "receipts_dropped",
    "receipts_requeued",
    "receipts_unknown",
    "receipts_delivered",
    "receipts_undelivered",
    "receipts_expired",
    "mo_sent",
    "mo_acked",
    "mo_retried",
    "mo_refused",
    "enquire_links",
    "malformed",
    "generic_nacks",
)


class NoReceiver(LoaError, LookupError):
    """No receiver or transceiver bind is there to take a deliver_sm."""


class SmscOptions(ConfigModel):
    """How the simulated SMSC behaves; every random draw comes from `seed`."""

    smsc_id: str = Field(default="LOASIM", min_length=1, max_length=15)
    accounts: dict[str, str] = Field(
        default_factory=dict, description="system_id -> password; empty accepts any bind"
    )
    max_binds: int = Field(default=64, ge=1, le=100_000)
    id_format: Literal["hex", "decimal"] = "hex"
    latency: float = Field(default=0.0, ge=0, le=3600, description="seconds before each answer")
    latency_jitter: float = Field(default=0.0, ge=0, le=3600, description="uniform extra seconds")
    tps: float = Field(default=0.0, ge=0, description="submits per second over all binds; 0 = any")
    tps_burst: float = Field(default=1.0, gt=0, le=60, description="seconds of tps taken at once")
    throttle_every: int = Field(
        default=0, ge=0, description="refuse every Nth submit as throttled, whatever the rate"
    )
    error_ratio: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=Status.RSYSERR, ge=1, le=0xFFFFFFFF)
    bad_destination_ratio: float = Field(
        default=0.0, ge=0, le=1, description="share of destinations always refused"
    )
    seed: int = 0
    receipt_delay: float = Field(default=0.0, ge=0, le=86_400)
    undelivered_ratio: float = Field(default=0.0, ge=0, le=1)
    expired_ratio: float = Field(default=0.0, ge=0, le=1)
    receipt_tlvs: bool = True
    receipt_id_format: Literal["same", "hex", "decimal"] = "same"
    receipt_before_response: bool = False
    unknown_receipt_ratio: float = Field(default=0.0, ge=0, le=1)
    receipt_queue: int = Field(default=100_000, ge=0, description="receipts kept per system_id")
    drop_after: int = Field(default=0, ge=0, description="drop a connection every N submits")
    redeliver_delay: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="seconds before a deliver_sm answered with a temporary error, or left "
        "unanswered by a bind that went away (an MO), is sent again",
    )
    mo_interval: float = Field(default=0.0, ge=0, description="seconds between demo MOs; 0 = off")
    mo_source: str = Field(default="+84900000001", min_length=1, max_length=20)
    mo_dest: str = Field(default="1900", min_length=1, max_length=20)
    mo_text: str = Field(default="DK TIEM", min_length=1)
    store: int = Field(default=10_000, ge=0, description="messages and ids kept for inspection")
    citizens: CitizenOptions | None = Field(
        default=None, description="scripted people who answer the messages they get"
    )
    max_write_buffer: int = Field(default=64 << 20, ge=1 << 16, description="slow-reader cut-off")

    @model_validator(mode="after")
    def _states_fit(self) -> SmscOptions:
        if self.undelivered_ratio + self.expired_ratio > 1:
            raise ValueError("undelivered_ratio + expired_ratio must not exceed 1")
        return self


# Issued and SimMessage are what `sim.issued` and `sim.messages` hand out, built when asked from
# the plain tuples the hot path keeps; they decode addresses and text only when read.


@dataclass(slots=True)
class Issued:
    """One accepted submit: its message id, addresses and the user data of its part."""

    message_id: str
    system_id: str
    source_addr: bytes
    destination_addr: bytes
    data: bytes
    data_coding: int

    @property
    def source(self) -> str:
        return self.source_addr.decode("latin-1")

    @property
    def destination(self) -> str:
        return self.destination_addr.decode("latin-1")

    @property
    def text(self) -> str:
        """The part's text, decoded by its data_coding."""
        return decode_text(self.data, self.data_coding)


@dataclass(slots=True)
class SimMessage:
    """A whole message, its parts reassembled in order."""

    system_id: str
    source_addr: bytes
    destination_addr: bytes
    data: bytes
    data_coding: int
    message_ids: tuple[str, ...]

    @property
    def source(self) -> str:
        return self.source_addr.decode("latin-1")

    @property
    def destination(self) -> str:
        return self.destination_addr.decode("latin-1")

    @property
    def parts(self) -> int:
        """How many submits carried it."""
        return len(self.message_ids)

    @property
    def text(self) -> str:
        """The whole text, decoded by its data_coding."""
        return decode_text(self.data, self.data_coding)


@dataclass(slots=True)
class _Pending:
    """Parts of a concatenated message seen so far, by segment number."""

    total: int
    data_coding: int
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


# What `issued` and `messages` are built from; the fields of Issued and SimMessage, in order.
_IssuedRecord = tuple[str, str, bytes, bytes, bytes, int]
_MessageRecord = tuple[str, bytes, bytes, bytes, int, tuple[str, ...]]

# A receipt waiting to go out or to be acknowledged: (system_id, receipt_id, handset, sender,
# text, submitted, stat); the handset (the message's destination) is where it comes from. A plain
# tuple of strings, bytes and a float, which the garbage collector stops tracking: a backlog of
# 100,000 queued receipts then costs no collection time (as dataclasses, it halved the rate).
_Receipt = tuple[str, str, bytes, bytes, str, float, str]


@dataclass(slots=True)
class _Mo:
    """A mobile-originated part in flight; the future gets its deliver_sm_resp status."""

    future: asyncio.Future[int]


class _Bucket:
    """A token bucket: `rate` per second, holding at most `capacity`."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.tokens = rate, capacity, capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Connection:
    """One TCP connection: its bind state, its unsent output, the deliver_sm it awaits answers for.

    Writes are gathered and flushed once per turn of the event loop: a read of many pipelined
    submits is answered with one send rather than one system call per response.
    """

    __slots__ = (
        "closed",
        "in_flight",
        "kind",
        "loop",
        "out",
        "out_size",
        "outstanding",
        "sequence",
        "submits",
        "system_id",
        "transport",
        "writer",
    )

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.loop = asyncio.get_running_loop()
        self.out: list[bytes] = []
        self.out_size = 0
        self.kind = ""  # "", "tx", "rx" or "trx"
        self.system_id = ""
        self.submits = 0
        self.in_flight = 0  # submits waiting for their (delayed) answer
        self.sequence = 0
        self.outstanding: dict[int, _Receipt | _Mo] = {}
        self.closed = False

    @property
    def can_submit(self) -> bool:
        return self.kind in ("tx", "trx")

    @property
    def can_receive(self) -> bool:
        return self.kind in ("rx", "trx")

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(data)
        self.out_size += len(data)

    def flush(self) -> None:
        if self.out and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()
        self.out_size = 0

    def backlog(self) -> int:
        """Bytes written to the connection and not yet sent."""
        return self.transport.get_write_buffer_size() + self.out_size

    def next_sequence(self) -> int:
        self.sequence = self.sequence % MAX_SEQUENCE + 1
        return self.sequence


def smsc_options(value: SmscOptions | Mapping[str, Any] | None) -> SmscOptions:
    """Options from a mapping (a TOML table, command-line flags); a wrong one is a ConfigError."""
    return load_options(SmscOptions, value, "smsc")


class SmscSimulator:
    """An SMPP 3.4 server on 127.0.0.1; `port=0` takes a free port, read `.port` after start."""

    def __init__(
        self,
        options: SmscOptions | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "smsc",
    ) -> None:
        self.options = smsc_options(options)
        self.host, self.port, self.name = host, port, name
        # The records behind `messages` and `issued`: plain tuples, cheap to make on the hot path
        # and left alone by the garbage collector; the dataclasses are built when asked for.
        self._messages: deque[_MessageRecord] = deque(maxlen=self.options.store)
        self._issued: deque[_IssuedRecord] = deque(maxlen=self.options.store)
        self._count = dict.fromkeys(_COUNTERS, 0)
        self._rng = random.Random(self.options.seed)
        self._serial = self._rng.randrange(1 << 36, 1 << 37)  # ten hex digits, none repeated
        self._unknown = itertools.count(1 << 39)  # receipt ids never issued
        self._bucket = _Bucket(
            self.options.tps, max(1.0, self.options.tps * self.options.tps_burst)
        )
        self._bad_salt = zlib.crc32(str(self.options.seed).encode())
        self._judged = 0  # submits given a verdict, for throttle_every
        self._pending: dict[tuple[bytes, bytes, int], _Pending] = {}
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._queued: dict[str, deque[_Receipt]] = {}
        self._receivers: dict[str, list[_Connection]] = {}
        self._receiver_bound = asyncio.Event()  # set whenever a receiving bind comes up
        self._round = itertools.count()
        self._mo_ref = itertools.count(self._rng.randrange(256))
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._mo_task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self.citizens = Citizens(self.options.citizens) if self.options.citizens else None
        self._answering: set[asyncio.Task[None]] = set()  # citizens' replies still to come
        self._handlers: dict[int, Callable[[_Connection, Pdu], None]] = {
            Command.SUBMIT_SM: self._on_submit,
            Command.DATA_SM: self._on_submit,
            Command.BIND_TRANSMITTER: self._on_bind,
            Command.BIND_RECEIVER: self._on_bind,
            Command.BIND_TRANSCEIVER: self._on_bind,
            Command.ENQUIRE_LINK: self._on_enquire_link,
            Command.UNBIND: self._on_unbind,
            Command.DELIVER_SM_RESP: self._on_deliver_sm_resp,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; `.port` is the real port afterwards."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        if self.options.mo_interval > 0:
            self._mo_task = asyncio.create_task(self._periodic_mo(), name=f"{self.name}-mo")
        log.info("smsc simulator listening", extra={"sim": self.name, "port": self.port})

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their handlers to end."""
        if self._server is None:
            return
        server, self._server = self._server, None
        if self._mo_task is not None:
            self._mo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mo_task
        for task in list(self._answering):
            task.cancel()  # a reply not sent by now never is
        server.close()
        for conn in list(self._connections):
            conn.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await server.wait_closed()

    async def __aenter__(self) -> SmscSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def drop_connections(self) -> int:
        """Cut every connection at once without a word (as a crashing SMSC does); how many."""
        connections = list(self._connections)
        for conn in connections:
            self._drop(conn)
        await asyncio.sleep(0)  # let the handlers see the loss
        return len(connections)

    @property
    def messages(self) -> list[SimMessage]:
        """The last `store` whole messages, oldest first, their parts reassembled."""
        return [SimMessage(*record) for record in self._messages]

    @property
    def issued(self) -> dict[str, Issued]:
        """The last `store` message ids given out, each with its submit's addresses and part."""
        return {record[0]: Issued(*record) for record in self._issued}

    def stats(self) -> dict[str, Any]:
        """Every counter, plus the current binds, connections and queue depths."""
        return {
            "sim": self.name,
            "port": self.port,
            "uptime": round(time.monotonic() - self._started, 3),
            **self._count,
            "bound": sum(1 for conn in self._connections if conn.kind),
            "open": len(self._connections),
            "receipt_backlog": sum(len(queue) for queue in self._queued.values()),
            "pending_parts": sum(len(entry.parts) for entry in self._pending.values()),
            **({"citizens": self.citizens.stats()} if self.citizens is not None else {}),
        }

    # -- reading ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Connection(writer)
        self._connections.add(conn)
        self._count["connections"] += 1
        try:
            await self._read_loop(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away, perhaps mid-frame: nothing to answer
        finally:
            conn.flush()  # a last answer, such as the generic_nack before closing
            self._forget(conn)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _read_loop(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not conn.closed:
            head = await reader.readexactly(4)
            try:
                length = read_length(head)
            except PduError:
                # The frame boundary is lost, so nothing after it can be read: say why, close.
                self._count["malformed"] += 1
                self._nack(conn, 0, Status.RINVCMDLEN)
                return
            self._handle(conn, head + await reader.readexactly(length - 4))
            if conn.transport.get_write_buffer_size() > DRAIN_AT:
                await writer.drain()

    def _handle(self, conn: _Connection, frame: bytes) -> None:
        _, command_id, _, sequence = HEADER.unpack_from(frame)
        handler = self._handlers.get(command_id)
        if handler is None:
            if not command_id & RESPONSE_BIT:  # never answer an answer: two peers could loop
                self._nack(conn, sequence, Status.RINVCMDID)
            return
        try:
            pdu = decode_sm(frame) if command_id == Command.SUBMIT_SM else decode(frame)
        except PduError:
            self._count["malformed"] += 1
            self._nack(conn, sequence, Status.RINVCMDLEN)
            return
        handler(conn, pdu)

    def _nack(self, conn: _Connection, sequence: int, status: int) -> None:
        self._count["generic_nacks"] += 1
        conn.write(HEADER.pack(HEADER_SIZE, Command.GENERIC_NACK, status, sequence))

    # -- binds --------------------------------------------------------------------------------

    def _on_bind(self, conn: _Connection, pdu: Pdu) -> None:
        system_id = pdu.text("system_id")
        status = Status.RALYBND if conn.kind else self._bind_status(system_id, pdu.text("password"))
        if status:
            self._count["binds_refused"] += 1
            log.info("bind refused", extra={"sim": self.name, "status": int(status)})
            conn.write(_header_only(pdu.command_id | RESPONSE_BIT, status, pdu.sequence))
            return
        conn.kind, conn.system_id = _BIND_KINDS[Command(pdu.command_id)], system_id
        self._count["binds"] += 1
        fields = {"system_id": self.options.smsc_id}
        version = {Tag.SC_INTERFACE_VERSION.value: b"\x34"}
        conn.write(encode(Pdu(pdu.command_id | RESPONSE_BIT, pdu.sequence, 0, fields, version)))
        if conn.can_receive:
            self._receivers.setdefault(system_id, []).append(conn)
            self._receiver_bound.set()
            self._flush_receipts(conn)

    def _bind_status(self, system_id: str, password: str) -> int:
        accounts = self.options.accounts
        if accounts and system_id not in accounts:
            return Status.RINVSYSID
        if accounts and accounts[system_id] != password:
            return Status.RINVPASWD
        if sum(1 for conn in self._connections if conn.kind) >= self.options.max_binds:
            return Status.RBINDFAIL
        return Status.ROK

    def _on_unbind(self, conn: _Connection, pdu: Pdu) -> None:
        self._count["unbinds"] += 1
        conn.write(_header_only(Command.UNBIND_RESP, 0, pdu.sequence))
        conn.flush()
        self._forget(conn)
        conn.writer.close()  # flushes the unbind_resp first

    def _on_enquire_link(self, conn: _Connection, pdu: Pdu) -> None:
        self._count["enquire_links"] += 1
        conn.write(_header_only(Command.ENQUIRE_LINK_RESP, 0, pdu.sequence))

    def _drop(self, conn: _Connection) -> None:
        if not conn.closed:
            self._count["dropped"] += 1
            conn.flush()  # what was answered goes out; what was not never will
            self._forget(conn)
            conn.transport.abort()

    def _forget(self, conn: _Connection) -> None:
        """The connection is gone: unanswered submits counted, unacknowledged receipts queued."""
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        conn.closed = True
        self._count["disconnects"] += 1
        self._count["unanswered"] += conn.in_flight
        if conn.can_receive:
            self._receivers[conn.system_id].remove(conn)
        for job in conn.outstanding.values():
            if isinstance(job, tuple):
                self._count["receipts_requeued"] += 1
                self._queue_receipt(job)
            elif not job.future.done():
                job.future.set_exception(SessionClosed("the receiver went away before answering"))
        conn.outstanding.clear()

    # -- submits ------------------------------------------------------------------------------

    def _on_submit(self, conn: _Connection, pdu: Pdu) -> None:
        if not conn.can_submit:
            self._count["not_bound"] += 1
            conn.write(_header_only(pdu.command_id | RESPONSE_BIT, Status.RINVBNDSTS, pdu.sequence))
            return
        self._count["submits"] += 1
        conn.submits += 1
        if self.options.drop_after and conn.submits % self.options.drop_after == 0:
            self._count["unanswered"] += 1
            self._drop(conn)
            return
        options = self.options
        if not options.latency and not options.latency_jitter:
            self._answer(conn, pdu)
            return
        delay = options.latency + self._rng.random() * options.latency_jitter
        conn.in_flight += 1
        asyncio.get_running_loop().call_later(delay, self._answer_late, conn, pdu)

    def _answer_late(self, conn: _Connection, pdu: Pdu) -> None:
        if not conn.closed:  # a dropped connection counted its in-flight submits as unanswered
            conn.in_flight -= 1
            self._answer(conn, pdu)

    def _answer(self, conn: _Connection, pdu: Pdu) -> None:
        status = self._verdict(pdu)
        if status:
            conn.write(_header_only(pdu.command_id | RESPONSE_BIT, status, pdu.sequence))
            return
        message_id, data = self._issue(conn, pdu)
        body = message_id.encode() + b"\0"
        answer = HEADER.pack(
            HEADER_SIZE + len(body), pdu.command_id | RESPONSE_BIT, 0, pdu.sequence
        )
        if not pdu.fields.get("registered_delivery", 0) & 1:
            conn.write(answer + body)
            return
        receipt = self._receipt(conn.system_id, pdu, message_id, data)
        if self.options.receipt_before_response:
            self._route_receipt(receipt)
            conn.write(answer + body)
            return
        conn.write(answer + body)
        if self.options.receipt_delay:
            asyncio.get_running_loop().call_later(
                self.options.receipt_delay, self._route_receipt, receipt
            )
        else:
            self._route_receipt(receipt)

    def _verdict(self, pdu: Pdu) -> int:
        """The status to refuse the submit with, or 0 to take it."""
        options = self.options
        self._judged += 1
        if options.tps and not self._bucket.take():
            self._count["throttled"] += 1
            return Status.RTHROTTLED
        if options.throttle_every and self._judged % options.throttle_every == 0:
            self._count["throttled"] += 1
            return Status.RTHROTTLED
        if options.bad_destination_ratio and self._bad_destination(pdu.fields["destination_addr"]):
            self._count["bad_destinations"] += 1
            return Status.RINVDSTADR
        if options.error_ratio and self._rng.random() < options.error_ratio:
            self._count["errors"] += 1
            return options.error_status
        return Status.ROK

    def _bad_destination(self, destination: bytes) -> bool:
        """The same destination is always bad or always good: a hash, not a draw."""
        return zlib.crc32(destination, self._bad_salt) < self.options.bad_destination_ratio * 2**32

    def _issue(self, conn: _Connection, pdu: Pdu) -> tuple[str, bytes]:
        """A message id for an accepted submit, which is recorded; the id and the user data."""
        self._serial += 1
        serial = self._serial
        message_id = f"{serial:x}" if self.options.id_format == "hex" else str(serial)
        self._count["accepted"] += 1
        self._count["parts"] += 1
        data, concat = _content(pdu)
        coding = pdu.fields.get("data_coding", 0)
        if self.options.store:
            self._remember(conn.system_id, pdu, message_id, data, coding)
        if concat is None:
            self._whole(conn.system_id, pdu, data, coding, (message_id,))
        else:
            self._part(conn.system_id, pdu, data, coding, message_id, concat)
        return message_id, data

    def _remember(
        self, system_id: str, pdu: Pdu, message_id: str, data: bytes, coding: int
    ) -> None:
        fields = pdu.fields
        source, destination = fields["source_addr"], fields["destination_addr"]
        self._issued.append((message_id, system_id, source, destination, data, coding))

    def _part(
        self,
        system_id: str,
        pdu: Pdu,
        data: bytes,
        coding: int,
        message_id: str,
        concat: tuple[int, int, int],
    ) -> None:
        reference, total, number = concat
        key = (pdu.fields["source_addr"], pdu.fields["destination_addr"], reference)
        entry = self._pending.get(key)
        if entry is None or entry.total != total:
            if entry is not None:  # the reference came round again before the last one ended
                self._count["abandoned_messages"] += 1
            entry = self._pending[key] = _Pending(total, coding)
            self._bound_pending()
        if number in entry.parts:
            self._count["duplicate_parts"] += 1
        entry.parts[number] = (data, message_id)
        if len(entry.parts) < total:
            return
        del self._pending[key]
        ordered = [entry.parts[n] for n in sorted(entry.parts)]
        joined = b"".join(part for part, _ in ordered)
        self._whole(system_id, pdu, joined, entry.data_coding, tuple(mid for _, mid in ordered))

    def _bound_pending(self) -> None:
        if len(self._pending) > max(1000, self.options.store):
            del self._pending[next(iter(self._pending))]
            self._count["abandoned_messages"] += 1

    def _whole(
        self, system_id: str, pdu: Pdu, data: bytes, coding: int, message_ids: tuple[str, ...]
    ) -> None:
        self._count["messages"] += 1
        source, destination = pdu.fields["source_addr"], pdu.fields["destination_addr"]
        if self.citizens is not None:
            self._citizen_hears(system_id, destination, data, coding)
        if not self.options.store:
            return
        digest = hash((source, destination, coding, data))
        if digest in self._seen:
            self._count["duplicate_messages"] += 1
        self._seen[digest] = None
        if len(self._seen) > self.options.store:
            self._seen.popitem(last=False)
        self._messages.append((system_id, source, destination, data, coding, message_ids))

    def _citizen_hears(self, system_id: str, destination: bytes, data: bytes, coding: int) -> None:
        """A scripted citizen reads the message and may answer it later, from their phone."""
        assert self.citizens is not None
        phone = destination.decode("latin-1")
        planned = self.citizens.heard(phone, decode_text(data, coding))
        if planned is None:
            return
        task = asyncio.get_running_loop().create_task(self._citizen_answers(system_id, planned))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _citizen_answers(self, system_id: str, planned: Planned) -> None:
        assert self.citizens is not None
        await asyncio.sleep(planned.delay)
        to = self.citizens.options.to
        try:
            status: int | str = await self.send_mo(
                planned.phone, to, planned.text, system_id=system_id
            )
        except (NoReceiver, SessionClosed, TimeoutError) as exc:
            status = type(exc).__name__
        self.citizens.done(planned, status)

    # -- receipts -----------------------------------------------------------------------------

    def _receipt(self, system_id: str, pdu: Pdu, message_id: str, data: bytes) -> _Receipt:
        text = decode_text(data, pdu.fields.get("data_coding", 0))
        handset, sender = pdu.fields["destination_addr"][:20], pdu.fields["source_addr"][:20]
        receipt_id = self._receipt_id(message_id)
        stat = self._draw_stat()
        self._count[_STAT_COUNTERS[stat]] += 1  # what receipts say, to reconcile with
        return (system_id, receipt_id, handset, sender, text[:20], time.time(), stat)

    def _receipt_id(self, message_id: str) -> str:
        wanted = self.options.receipt_id_format
        if wanted == "same" or wanted == self.options.id_format:
            return message_id
        serial = int(message_id, 16 if self.options.id_format == "hex" else 10)
        return f"{serial:x}" if wanted == "hex" else str(serial)

    def _draw_stat(self) -> str:
        options = self.options
        if not options.undelivered_ratio and not options.expired_ratio:
            return "DELIVRD"
        draw = self._rng.random()
        if draw < options.undelivered_ratio:
            return "UNDELIV"
        return "EXPIRED" if draw < options.undelivered_ratio + options.expired_ratio else "DELIVRD"

    def _route_receipt(self, receipt: _Receipt) -> None:
        conn = self._receiver(receipt[0])
        if conn is None:
            self._queue_receipt(receipt)
        else:
            self._send_receipt(conn, receipt)
        if self.options.unknown_receipt_ratio and (
            self._rng.random() < self.options.unknown_receipt_ratio
        ):
            self._send_unknown_receipt(receipt)

    def _send_unknown_receipt(self, model: _Receipt) -> None:
        system_id, _, handset, sender, _, submitted, stat = model
        conn = self._receiver(system_id)
        if conn is not None:
            self._count["receipts_unknown"] += 1
            serial = next(self._unknown)
            unknown = self._receipt_id(
                f"{serial:x}" if self.options.id_format == "hex" else str(serial)
            )
            self._send_receipt(conn, (system_id, unknown, handset, sender, "", submitted, stat))

    def _receiver(self, system_id: str | None) -> _Connection | None:
        """A receiving bind of `system_id` (any system_id if None), in turn."""
        if system_id is None:
            candidates = [conn for conns in self._receivers.values() for conn in conns]
        else:
            candidates = self._receivers.get(system_id, [])
        if not candidates:
            return None
        return candidates[next(self._round) % len(candidates)]

    def _redeliver_receipt(self, receipt: _Receipt) -> None:
        conn = self._receiver(receipt[0])
        if conn is None:
            self._queue_receipt(receipt)
        else:
            self._send_receipt(conn, receipt)

    def _queue_receipt(self, receipt: _Receipt) -> None:
        if self._server is None:
            return  # stopped: nobody will bind again
        queue = self._queued.setdefault(receipt[0], deque())
        if len(queue) >= self.options.receipt_queue:
            self._count["receipts_dropped"] += 1
            return
        self._count["receipts_queued"] += 1
        queue.append(receipt)

    def _flush_receipts(self, conn: _Connection) -> None:
        queue = self._queued.get(conn.system_id)
        while queue and not conn.closed:
            self._send_receipt(conn, queue.popleft())

    def _send_receipt(self, conn: _Connection, receipt: _Receipt) -> None:
        _, receipt_id, handset, sender, excerpt, submitted, stat = receipt
        state, error, delivered = _STATES[stat]
        text = (
            f"id:{receipt_id} sub:001 dlvrd:{delivered} "
            f"submit date:{_stamp(submitted)} done date:{_stamp(time.time())} "
            f"stat:{stat} err:{error} text:{excerpt}"
        )
        tlvs = {}
        if self.options.receipt_tlvs:
            tlvs[_RECEIPTED_MESSAGE_ID] = receipt_id.encode() + b"\0"
            tlvs[_MESSAGE_STATE] = bytes((state,))
        sequence = conn.next_sequence()
        conn.outstanding[sequence] = receipt
        self._count["receipts_sent"] += 1
        short_message = text.encode("ascii", "replace")[:254]
        pdu = encode_deliver_sm(sequence, handset, sender, RECEIPT_ESM, 0, short_message, tlvs)
        self._write_checked(conn, pdu)

    def _write_checked(self, conn: _Connection, data: bytes) -> None:
        """Write from a callback, which cannot await drain: cut a peer that stopped reading."""
        conn.write(data)
        if not conn.closed and conn.backlog() > self.options.max_write_buffer:
            log.warning("peer stopped reading; dropping it", extra={"sim": self.name})
            self._drop(conn)

    def _on_deliver_sm_resp(self, conn: _Connection, pdu: Pdu) -> None:
        job = conn.outstanding.pop(pdu.sequence, None)
        if isinstance(job, tuple):
            self._count["receipts_acked" if pdu.status == 0 else "receipts_nacked"] += 1
            if pdu.status in TEMPORARY:  # the ESME could not keep it now: again, later
                self._count["receipts_retried"] += 1
                asyncio.get_running_loop().call_later(
                    self.options.redeliver_delay, self._redeliver_receipt, job
                )
        elif isinstance(job, _Mo):
            if pdu.status == 0:
                self._count["mo_acked"] += 1
            if not job.future.done():
                job.future.set_result(pdu.status)

    # -- mobile-originated messages -----------------------------------------------------------

    async def send_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        system_id: str | None = None,
        answer_within: float = 5.0,
    ) -> int:
        """Deliver a message from a handset to a receiving bind; the worst deliver_sm_resp status.

        A text longer than one SMS goes out in parts with a UDH, as a handset sends it. A part
        answered with a temporary error (TEMPORARY: ESME_RX_T_APPN, ...), or left unanswered
        by a bind that went away, is sent again after `redeliver_delay` to a receiving bind of
        the same system_id, as an SMSC stores and forwards it, until it is answered otherwise;
        TimeoutError after `answer_within` seconds. Raises NoReceiver if no receiver or
        transceiver of `system_id` (any, if None) is bound when it is called.
        """
        conn = self._receiver(system_id)
        if conn is None:
            raise NoReceiver(f"no receiving bind for {system_id or 'any system_id'}")
        handset, short_code = source.encode("latin-1"), destination.encode("latin-1")
        parts = [
            encode_deliver_sm(0, handset, short_code, esm_class, coding, data, {})
            for esm_class, coding, data in _mo_parts(text, next(self._mo_ref) & 0xFF)
        ]
        async with asyncio.timeout(answer_within):
            statuses = await asyncio.gather(*(self._deliver_mo(conn, part) for part in parts))
        return max(statuses)

    async def _deliver_mo(self, first: _Connection, pdu: bytes) -> int:
        """Send one part until it is answered with success or a lasting error; that status."""
        loop = asyncio.get_running_loop()
        conn: _Connection | None = first
        while True:
            if conn is None or conn.closed:
                conn = await self._next_receiver(first.system_id)
            sequence = conn.next_sequence()
            future: asyncio.Future[int] = loop.create_future()
            conn.outstanding[sequence] = _Mo(future)
            self._count["mo_sent"] += 1
            self._write_checked(conn, pdu[:12] + sequence.to_bytes(4, "big") + pdu[16:])
            try:
                status: int | None = await future
            except SessionClosed:
                status = None  # the bind went away before answering
            if status is not None and status not in TEMPORARY:
                if status:
                    self._count["mo_refused"] += 1
                return status
            self._count["mo_retried"] += 1
            await asyncio.sleep(self.options.redeliver_delay)
            conn = None

    async def _next_receiver(self, system_id: str) -> _Connection:
        """A receiving bind of `system_id`, waiting until one binds."""
        while True:
            self._receiver_bound.clear()  # then look: a bind from now on wakes us
            conn = self._receiver(system_id)
            if conn is not None:
                return conn
            await self._receiver_bound.wait()

    async def _periodic_mo(self) -> None:
        options = self.options
        while True:
            await asyncio.sleep(options.mo_interval)
            with contextlib.suppress(NoReceiver, SessionClosed, TimeoutError):
                await self.send_mo(options.mo_source, options.mo_dest, options.mo_text)


# -- helpers --------------------------------------------------------------------------------


def _header_only(command_id: int, status: int, sequence: int) -> bytes:
    """A PDU without a body: enquire_link_resp, unbind_resp, or an error response."""
    return HEADER.pack(HEADER_SIZE, command_id, status, sequence)


def _stamp(moment: float) -> str:
    """YYMMDDhhmm (UTC) as receipts write dates."""
    return _minute(int(moment // 60))


@functools.lru_cache(maxsize=4)
def _minute(minute: int) -> str:
    # Receipts come by the thousand per second and share their minute: format each once.
    return time.strftime("%y%m%d%H%M", time.gmtime(minute * 60))


def _content(pdu: Pdu) -> tuple[bytes, tuple[int, int, int] | None]:
    """The user data of a submit and its (reference, total, number) if it is one part of many."""
    data: bytes = pdu.fields.get("short_message", b"")
    tlvs = pdu.tlvs
    payload = tlvs.get(Tag.MESSAGE_PAYLOAD) if tlvs else None
    if payload is not None:
        data = payload
    if pdu.fields.get("esm_class", 0) & UDHI and data:
        return _split_udh(data)
    if tlvs and Tag.SAR_MSG_REF_NUM in tlvs:
        concat = (
            tlv_int(tlvs[Tag.SAR_MSG_REF_NUM]),
            tlv_int(tlvs.get(Tag.SAR_TOTAL_SEGMENTS, b"")),
            tlv_int(tlvs.get(Tag.SAR_SEGMENT_SEQNUM, b"")),
        )
        return data, _checked(concat)
    return data, None


def _split_udh(data: bytes) -> tuple[bytes, tuple[int, int, int] | None]:
    """The text after the UDH, and the concatenation element (IEI 0x00 or 0x08) if present."""
    header, text = data[1 : 1 + data[0]], data[1 + data[0] :]
    concat = None
    offset = 0
    while offset + 2 <= len(header):
        iei, size = header[offset], header[offset + 1]
        value = header[offset + 2 : offset + 2 + size]
        if iei == 0x00 and size == 3 and len(value) == 3:
            concat = (value[0], value[1], value[2])
        elif iei == 0x08 and size == 4 and len(value) == 4:
            concat = ((value[0] << 8) | value[1], value[2], value[3])
        offset += 2 + size
    return text, _checked(concat)


def _checked(concat: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """A concatenation that makes sense (1 <= number <= total, total > 1), else a single part."""
    if concat is None:
        return None
    _, total, number = concat
    return concat if total > 1 and 1 <= number <= total else None


def _mo_parts(text: str, reference: int) -> list[tuple[int, int, bytes]]:
    """(esm_class, data_coding, short_message) of each part of a handset's message.

    GSM-7 when it can, else UCS-2; a long text is cut where loa cuts it, each part with a UDH.
    """
    coding = 0 if analyse(text).encoding is Encoding.GSM7 else 8
    parts = split(text)
    if len(parts) == 1:
        return [(0, coding, encode_text(text, coding))]
    return [
        (UDHI, coding, bytes((5, 0, 3, reference, len(parts), number)) + encode_text(part, coding))
        for number, part in enumerate(parts, 1)
    ]


# GSM 03.38 unpacked, one septet per byte: index by code. Codes past 0x7F are not GSM-7.
_GSM_DECODE = ["?"] * 256
for _char, _code in BASIC_CODES.items():
    _GSM_DECODE[_code] = _char
_GSM_EXTENSION = {code: char for char, code in EXTENSION_CODES.items()}


def decode_gsm7(data: bytes) -> str:
    """GSM 03.38 unpacked (SMPP data_coding 0) to text, the 0x1B extension table included.

    An unknown extension code reads as its basic character, as 3GPP TS 23.038 asks.
    """
    head, *escaped = data.split(b"\x1b")
    out = [head.decode("latin-1").translate(_GSM_DECODE)]
    for chunk in escaped:
        if chunk:
            out.append(_GSM_EXTENSION.get(chunk[0], _GSM_DECODE[chunk[0]]))
            out.append(chunk[1:].decode("latin-1").translate(_GSM_DECODE))
    return "".join(out)


def decode_text(data: bytes, data_coding: int) -> str:
    """User data as text by its SMPP data_coding: GSM-7, IA5, Latin-1 or UCS-2 (UTF-16BE).

    Values from 0x10 up are GSM 03.38 data coding schemes (a message class, say): their
    alphabet bits decide. The 8-bit binary codings come back byte for byte, as Latin-1.
    """
    if data_coding < 0x10:
        alphabet = {0: "gsm", 1: "ascii", 8: "ucs2"}.get(data_coding, "latin-1")
    elif data_coding & 0xEC in (0x00, 0x08):  # general group, uncompressed: bits 3-2 decide
        alphabet = "ucs2" if data_coding & 0x08 else "gsm"
    elif data_coding & 0xF0 == 0xF0:  # data coding / message class group: bit 2 is 8-bit data
        alphabet = "latin-1" if data_coding & 0x04 else "gsm"
    else:
        alphabet = "latin-1"
    if alphabet == "gsm":
        return decode_gsm7(data)
    if alphabet == "ucs2":
        return data.decode("utf-16-be", "replace")
    return data.decode(alphabet, "replace")


def encode_text(text: str, data_coding: int) -> bytes:
    """Text as SMPP user data for data_coding 0 (GSM-7 unpacked), 3 (Latin-1) or 8 (UCS-2)."""
    if data_coding == 0:
        return encode_gsm7(text)
    if data_coding == 3:
        return text.encode("latin-1")
    return encode_ucs2(text)


# -- the blocking entry for `loa sim smsc` ---------------------------------------------------

SimulatorSpec = tuple[str, int, SmscOptions | Mapping[str, Any] | None]  # name, port, options


def run_smsc_simulator(
    host: str = "127.0.0.1",
    port: int = 2775,
    options: SmscOptions | Mapping[str, Any] | None = None,
    stats_interval: float = 10.0,
) -> None:
    """Serve one simulated SMSC until SIGINT or SIGTERM, printing JSON stats lines."""
    run_smsc_simulators([("smsc", port, options)], host, stats_interval)


def run_smsc_simulators(
    simulators: Sequence[SimulatorSpec],
    host: str = "127.0.0.1",
    stats_interval: float = 10.0,
    out: TextIO | None = None,
) -> None:
    """Serve several simulated SMSCs (one per carrier) until SIGINT or SIGTERM.

    Prints one JSON line per simulator when it listens, every `stats_interval` seconds (never
    if 0) and on exit: `{"event": "stats", "sim": "viettel", "port": 2775, "submits": ...}`.
    """
    uvloop.run(_serve_all(simulators, host, stats_interval, out or sys.stdout))


async def _serve_all(
    simulators: Sequence[SimulatorSpec],
    host: str,
    stats_interval: float,
    out: TextIO,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sims = [
        SmscSimulator(options, host=host, port=port, name=name)
        for name, port, options in simulators
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for sim in sims:
                await stack.enter_async_context(sim)
                _print(out, {"event": "listening", "sim": sim.name, "host": host, "port": sim.port})
            await _report_until(stop, sims, stats_interval, out)
            for sim in sims:
                _print(out, {"event": "stopped", **sim.stats()})
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _report_until(
    stop: asyncio.Event, sims: Sequence[SmscSimulator], interval: float, out: TextIO
) -> None:
    while not stop.is_set():
        try:
            async with asyncio.timeout(interval if interval > 0 else None):
                await stop.wait()
        except TimeoutError:
            for sim in sims:
                _print(out, {"event": "stats", **sim.stats()})


def _print(out: TextIO, entry: dict[str, Any]) -> None:
    out.write(orjson.dumps(entry).decode() + "\n")
    out.flush()
