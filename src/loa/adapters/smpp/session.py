"""One ESME bind to an SMSC: framing, sequence numbers, a window, keep-alive and unbind."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loa.adapters.smpp.pdu import (
    HEADER_SIZE,
    MAX_SEQUENCE,
    RESPONSE_BIT,
    Command,
    Pdu,
    Status,
    decode,
    encode,
    generic_nack,
    read_length,
    response,
    status_name,
)
from loa.errors import BindError, PduError, SessionClosed

log = logging.getLogger(__name__)

BIND_COMMANDS = {
    "transceiver": Command.BIND_TRANSCEIVER,
    "transmitter": Command.BIND_TRANSMITTER,
    "receiver": Command.BIND_RECEIVER,
}
WRITE_HIGH_WATER = 256 * 1024  # drain the socket only once this much is buffered
MALFORMED_LOG_EVERY = 10.0  # seconds between two warnings about malformed PDUs
# responses that say the SMSC took a message (their only field is its id)
SUBMIT_RESPONSES = frozenset({Command.SUBMIT_SM_RESP, Command.DATA_SM_RESP})

# Answers a request PDU from the SMSC (deliver_sm, data_sm): a command_status now, or a future
# whose end decides it (ESME_ROK once it is done, ESME_RX_T_APPN if it failed), so that a
# deliver_sm is acknowledged only once what it carried is kept.
RequestHandler = Callable[[Pdu], int | asyncio.Future[Any]]


class Window:
    """The requests a session may have in flight; waiting senders wake in batches.

    A sender that finds the window full waits until a quarter of it is free again, not until a
    single slot is (as TCP avoids the silly window syndrome): the PDUs then leave in one write
    and come back in one read, instead of a write and a read per response at both ends, which
    at tens of thousands a second costs more than the PDUs themselves.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self.batch = max(1, size // 4)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Slots free now."""
        return self.size - self.used

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it; else False."""
        if self.used < self.size and not self._waiters:
            self.used += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting (first come, first served) while there is none for us."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() took the slot for us before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled: give the slot back
            elif waiter in self._waiters:  # release() may have passed over it already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back; wake waiters once a batch of slots is free."""
        self.used -= 1
        waiters = self._waiters
        if waiters and self.size - self.used >= self.batch:
            while waiters and self.used < self.size:
                waiter = waiters.popleft()
                if not waiter.done():
                    self.used += 1
                    waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class BindConfig:
    """Where and how one session binds."""

    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    mode: str = "transceiver"
    window: int = 64
    bind_timeout: float = 5.0
    response_timeout: float = 10.0
    enquire_link: float = 30.0
    tls: ssl.SSLContext | None = None
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


class Session:
    """A bound SMPP session; `submit` sends a request and awaits its response within the window.

    A response that never comes fails its request after `response_timeout`; a connection that
    breaks fails every request in flight with SessionClosed, so the caller can send them again.
    """

    def __init__(self, config: BindConfig, on_request: RequestHandler | None = None) -> None:
        self.config = config
        self.on_request = on_request
        self.window = Window(config.window)
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        self.closed = asyncio.Event()
        self.peer_system_id = ""
        self.close_reason = ""
        self._sequence = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_read = 0.0
        self._malformed = 0  # malformed PDUs not yet in a warning
        self._malformed_logged = -MALFORMED_LOG_EVERY
        self._outbox = bytearray()
        # requests from the SMSC waiting for their answer, by the future that decides it
        self._waiting: dict[asyncio.Future[Any], list[Pdu]] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()

    @property
    def alive(self) -> bool:
        """Bound and not closed."""
        return self._writer is not None and not self.closed.is_set()

    async def open(self) -> None:
        """Connect and bind; a refused bind is a BindError, a dead peer an OSError."""
        config = self.config
        async with asyncio.timeout(config.bind_timeout):
            self._reader, self._writer = await asyncio.open_connection(
                config.host, config.port, ssl=config.tls, limit=1 << 20
            )
        try:
            await self._bind()
        except BaseException:
            self._abort("bind failed")
            raise
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="smpp-read"),
            asyncio.create_task(self._keepalive(), name="smpp-keepalive"),
            asyncio.create_task(self._expire(), name="smpp-expire"),
        ]

    async def _bind(self) -> None:
        config = self.config
        bind = Pdu(
            BIND_COMMANDS[config.mode],
            self._next_sequence(),
            fields={
                "system_id": config.system_id,
                "password": config.password,
                "system_type": config.system_type,
                "interface_version": 0x34,
                "addr_ton": config.addr_ton,
                "addr_npi": config.addr_npi,
                "address_range": config.address_range,
            },
        )
        self._write(encode(bind))
        async with asyncio.timeout(config.bind_timeout):
            while True:  # an SMSC may send enquire_link before answering the bind
                answer = await self._read_pdu()
                if answer.sequence == bind.sequence and answer.is_response:
                    break
                if answer.command_id == Command.ENQUIRE_LINK:
                    self._write(encode(response(answer)))
        if answer.command_id == Command.GENERIC_NACK or answer.status != Status.ROK:
            raise BindError(
                f"{config.host}:{config.port} refused the bind as {config.system_id!r}: "
                f"{status_name(answer.status)}"
            )
        self.peer_system_id = answer.text("system_id")

    async def submit(self, pdu: Pdu) -> Pdu:
        """Send a request within the window and return its response (a *_resp or generic_nack)."""
        return await (await self.begin(encode, pdu))

    async def begin(self, build: Callable[[Pdu], bytes], pdu: Pdu) -> asyncio.Future[Pdu]:
        """Take a window slot, send `pdu` (its bytes made by `build`) and return its response.

        The returned future holds the response, or fails with TimeoutError after
        `response_timeout` or SessionClosed. The slot is freed when it is done, so a caller can
        pipeline many requests and await them afterwards, without a task per request.
        """
        if not self.window.try_acquire():  # no coroutine while the window has room
            await self.window.acquire()
        if not self.alive:
            self.window.release()
            raise SessionClosed(f"session closed: {self.close_reason or 'not bound'}")
        pdu.sequence = sequence = self._next_sequence()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Pdu] = loop.create_future()
        future.add_done_callback(self._free_slot)
        self.pending[sequence] = future
        self._deadlines.append((loop.time() + self.config.response_timeout, sequence))
        try:
            self._write(build(pdu))
        except BaseException:
            self.pending.pop(sequence, None)
            future.cancel()
            raise
        try:
            await self._drain_if_full()
        except (ConnectionError, OSError) as exc:  # lost while waiting for the socket
            self._abort(f"connection lost ({exc})")  # fails `future` too, with SessionClosed
        return future

    def _free_slot(self, future: asyncio.Future[Pdu]) -> None:
        self.window.release()
        if not future.cancelled():
            future.exception()  # retrieved here: a caller that gave up must not cause a warning

    async def unbind(self, wait: float = 2.0) -> None:
        """Unbind politely (wait briefly for unbind_resp), then close."""
        if self.alive:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wait):
                    await self.submit(Pdu(Command.UNBIND, 0))
        await self.close("unbound")

    async def close(self, reason: str = "closed") -> None:
        """Close the connection and fail whatever is in flight."""
        self._abort(reason)
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    def _abort(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
        if self._writer is not None:
            # what is queued leaves first (an unbind_resp, a generic_nack): close() sends the
            # transport's buffer before it closes, but the outbox is not in it yet
            self._flush()
            self._writer.close()
        error = SessionClosed(f"session closed: {reason}")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()

    def _next_sequence(self) -> int:
        sequence = next(self._sequence)
        if sequence > MAX_SEQUENCE:  # wrap, as 3.4 allows, skipping 0
            self._sequence = itertools.count(2)
            sequence = 1
        return sequence

    def _write(self, data: bytes) -> None:
        """Queue bytes for the socket; they leave together once the loop comes round (corked).

        One send per loop iteration instead of one per PDU: at tens of thousands of PDUs a
        second, the system calls would cost more than the PDUs themselves.
        """
        if self._writer is None or self._writer.is_closing():
            raise SessionClosed(f"session closed: {self.close_reason or 'not connected'}")
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox += data

    def _flush(self) -> None:
        if self._outbox and self._writer is not None and not self._writer.is_closing():
            self._writer.write(bytes(self._outbox))
        self._outbox.clear()

    async def _drain_if_full(self) -> None:
        """Writes are buffered; wait for the socket only when the buffer is large."""
        writer = self._writer
        if len(self._outbox) > WRITE_HIGH_WATER:
            self._flush()
        if writer is not None and writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await writer.drain()

    async def _read_pdu(self) -> Pdu:
        """The next well-formed PDU (used while binding, before the read loop takes over)."""
        assert self._reader is not None
        while True:
            head = await self._reader.readexactly(4)
            frame = head + await self._reader.readexactly(read_length(head) - 4)
            self._last_read = asyncio.get_running_loop().time()
            pdu = self._decode(frame)
            if pdu is not None:
                return pdu

    def _decode(self, frame: bytes) -> Pdu | None:
        """A PDU from a whole frame; a malformed one is answered and skipped (None).

        The frame is whole, so the stream is still in step: a malformed request is nacked; a
        malformed response fails the request it answers at once (a generic_nack answers only
        requests), instead of leaving it to time out. But a submit_sm_resp that says ROK means
        the SMSC took the message: only its id is unreadable, and sending it again would deliver
        it twice, so it answers the request as accepted, with no id.
        """
        try:
            return decode(frame)
        except PduError as exc:
            self._warn_malformed(exc)
            command_id = int.from_bytes(frame[4:8], "big")
            whole = len(frame) >= HEADER_SIZE
            status = int.from_bytes(frame[8:12], "big") if whole else -1
            sequence = int.from_bytes(frame[12:16], "big") if whole else 0
            if not command_id & RESPONSE_BIT:
                self._write(encode(generic_nack(sequence, Status.RINVCMDLEN)))
                return None
            future = self.pending.pop(sequence, None)
            if future is not None and not future.done():
                if command_id in SUBMIT_RESPONSES and status == Status.ROK:
                    future.set_result(Pdu(command_id, sequence, status, {"message_id": b""}))
                else:
                    future.set_exception(PduError(f"unreadable response from the SMSC: {exc}"))
            return None

    def _warn_malformed(self, exc: PduError) -> None:
        """One warning per MALFORMED_LOG_EVERY seconds, counting those it stands for: a flood
        of bad PDUs must not become a flood of log lines."""
        self._malformed += 1
        now = asyncio.get_running_loop().time()
        if now - self._malformed_logged >= MALFORMED_LOG_EVERY:
            log.warning(
                "malformed PDU from the SMSC",
                extra={"error": str(exc), "count": self._malformed},
            )
            self._malformed, self._malformed_logged = 0, now

    def _frames(self, buffer: bytearray) -> list[bytes]:
        """Cut the whole frames off the front of `buffer`, leaving a partial one behind."""
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= 4:
            length = read_length(buffer[start : start + 4])
            if len(buffer) - start < length:
                break
            frames.append(bytes(buffer[start : start + length]))
            start += length
        del buffer[:start]
        return frames

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "connection lost"
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    break
                self._last_read = loop.time()
                buffer += data
                if not self._dispatch(self._frames(buffer)):
                    reason = "the SMSC unbound"
                    break
        except (ConnectionError, OSError):
            pass
        except PduError as exc:  # a command_length that cannot be framed: the stream is lost
            reason = f"unframeable data from the SMSC ({exc})"
            log.warning("closing SMPP session", extra={"error": str(exc)})
        finally:
            self._abort(reason)

    def _dispatch(self, frames: list[bytes]) -> bool:
        """Resolve responses and answer requests; False once the SMSC asked to unbind."""
        for frame in frames:
            pdu = self._decode(frame)
            if pdu is None:
                continue
            if pdu.is_response:
                self._resolve(pdu)
            elif not self._answer(pdu):
                return False
        return True

    def _resolve(self, pdu: Pdu) -> None:
        future = self.pending.pop(pdu.sequence, None)
        if future is not None and not future.done():
            future.set_result(pdu)
        elif pdu.command_id != Command.GENERIC_NACK:
            log.debug("response to no request", extra={"command": pdu.name})

    async def _expire(self) -> None:
        """Fail requests whose response is overdue; deadlines come in order, so check the front."""
        timeout = self.config.response_timeout
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            await asyncio.sleep(min(0.25, timeout / 4))
            now = loop.time()
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= now:
                _, sequence = deadlines.popleft()
                future = self.pending.pop(sequence, None)
                if future is not None and not future.done():
                    future.set_exception(TimeoutError(f"no response within {timeout}s"))

    def _answer(self, pdu: Pdu) -> bool:
        """Answer a request from the SMSC; False once it asked to unbind."""
        command = pdu.command_id
        if command == Command.ENQUIRE_LINK:
            self._write(encode(response(pdu)))
        elif command == Command.UNBIND:
            self._write(encode(response(pdu)))
            return False
        elif command in (Command.DELIVER_SM, Command.DATA_SM):
            answer = self._handle(pdu)
            if isinstance(answer, int):
                self._write(encode(response(pdu, answer, message_id="")))
                return True
            # answered when it is written; the read loop goes on meanwhile. Requests that wait
            # on the same future (one batch of events) are answered together, in one callback
            waiting = self._waiting.get(answer)
            if waiting is None:
                self._waiting[answer] = [pdu]
                answer.add_done_callback(self._answer_when_done)
            else:
                waiting.append(pdu)
        elif command == Command.ALERT_NOTIFICATION:
            pass  # no response is defined for it
        else:
            self._write(encode(generic_nack(pdu.sequence, Status.RINVCMDID)))
        return True

    def _answer_when_done(self, done: asyncio.Future[Any]) -> None:
        """Answer the deliver_sm whose events are written now, or could not be (temporary error)."""
        pdus = self._waiting.pop(done, [])
        failed = done.cancelled() or done.exception() is not None
        status = Status.RX_T_APPN if failed else Status.ROK
        if self.alive:  # a session gone meanwhile: the SMSC sends them again on another bind
            for pdu in pdus:
                self._write(encode(response(pdu, status, message_id="")))

    def _handle(self, pdu: Pdu) -> int | asyncio.Future[Any]:
        if self.on_request is None:
            return int(Status.ROK)
        try:
            return self.on_request(pdu)
        # the handler is the adapter's; its bug must not kill the session (the SMSC would
        # resend the receipt forever): answer a temporary error and log it
        except Exception:
            log.exception("handling a PDU from the SMSC failed", extra={"command": pdu.name})
            return int(Status.RX_T_APPN)

    async def _keepalive(self) -> None:
        """enquire_link after `enquire_link` seconds of silence; no answer closes the session."""
        interval = self.config.enquire_link
        if interval <= 0:
            return
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            quiet = loop.time() - self._last_read
            if quiet < interval:
                await asyncio.sleep(interval - quiet)
                continue
            try:
                await self.submit(Pdu(Command.ENQUIRE_LINK, 0))
            except (TimeoutError, SessionClosed):
                self._abort("no answer to enquire_link")
                return
