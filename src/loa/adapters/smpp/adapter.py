"""The SMPP adapter: binds per route, long messages, status mapping, receipts and replies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from loa.adapters.base import BindState, Capabilities, EventSink
from loa.adapters.registry import parse_options
from loa.adapters.smpp.coding import SINGLE_LIMIT, decode_text, encode_chosen, split_parts, udh
from loa.adapters.smpp.pdu import Command, Pdu, Status, SubmitEncoder, Tag, status_name
from loa.adapters.smpp.receipt import canonical_id, is_intermediate, is_receipt, parse_receipt
from loa.adapters.smpp.session import BindConfig, Session
from loa.errors import PduError, SessionClosed, SmppError
from loa.message import (
    RESUME,
    Accepted,
    Failed,
    Inbound,
    Message,
    Receipt,
    RetryLater,
    SendResult,
    Throttled,
)
from loa.settings import ConfigModel

log = logging.getLogger(__name__)

Verdict = Literal["retry", "failed", "throttled"]

# What a submit_sm_resp status means for the message; a route's `status` option overrides it.
# Anything not listed is a retry: an unknown vendor code must not throw a message away.
DEFAULT_VERDICTS: dict[int, Verdict] = {
    Status.RTHROTTLED: "throttled",
    Status.RMSGQFUL: "throttled",
    Status.RINVMSGLEN: "failed",
    Status.RINVSRCADR: "failed",
    Status.RINVDSTADR: "failed",
    Status.RINVESMCLASS: "failed",
    Status.RINVSRCTON: "failed",
    Status.RINVSRCNPI: "failed",
    Status.RINVDSTTON: "failed",
    Status.RINVDSTNPI: "failed",
    Status.RINVDFTMSGID: "failed",
    Status.RINVPARLEN: "failed",
    Status.RINVOPTPARAMVAL: "failed",
    Status.RX_P_APPN: "failed",
    Status.RX_R_APPN: "failed",
}


class SmppOptions(ConfigModel):
    """Options of an SMPP route: where to bind, how many binds, and how to write messages."""

    host: str = "127.0.0.1"
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: str = Field(min_length=1, max_length=15)
    password: SecretStr = Field(default=SecretStr(""), max_length=8)
    system_type: str = Field(default="", max_length=12)
    binds: int = Field(default=1, ge=1, le=64, description="sessions to the SMSC")
    mode: Literal["transceiver", "transmitter"] = "transceiver"
    receivers: int = Field(default=0, ge=0, le=64, description="receiver binds beside transmitters")
    window: int = Field(default=64, ge=1, le=10_000, description="submit_sm in flight per bind")
    enquire_link: float = Field(default=30.0, ge=0, le=3600)
    bind_timeout: float = Field(default=5.0, gt=0, le=120)
    response_timeout: float = Field(default=10.0, gt=0, le=300)
    reconnect_min: float = Field(default=0.5, gt=0, le=60)
    reconnect_max: float = Field(default=30.0, gt=0, le=3600)
    tls: bool = False
    tls_verify: bool = True
    source_addr: str = Field(default="", max_length=20)
    source_ton: int | None = Field(default=None, ge=0, le=6)
    source_npi: int | None = Field(default=None, ge=0, le=18)
    dest_ton: int = Field(default=1, ge=0, le=6)
    dest_npi: int = Field(default=1, ge=0, le=18)
    data_coding: Literal["auto", "gsm7", "latin1", "ucs2"] = "auto"
    long_messages: Literal["udh", "sar", "payload"] = "udh"
    registered_delivery: bool = True
    service_type: str = Field(default="", max_length=5)
    submit_id: Literal["text", "hex", "decimal"] = "text"
    receipt_id: Literal["text", "hex", "decimal"] = "text"
    status: dict[str, Verdict] = Field(
        default_factory=dict, description="submit_sm_resp status (0x45, 69) -> verdict"
    )

    @field_validator("status")
    @classmethod
    def _codes_parse(cls, value: dict[str, Verdict]) -> dict[str, Verdict]:
        for code in value:
            _status_code(code)
        return value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> SmppOptions:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(
                f"reconnect_min ({self.reconnect_min}) exceeds reconnect_max ({self.reconnect_max})"
            )
        if not self.source_addr.isascii():
            raise ValueError("source_addr must be ASCII (SMPP addresses are C-Octet Strings)")
        return self


def _status_code(text: str) -> int:
    """`0x45`, `69` or `ESME_RSUBMITFAIL` as a command_status number."""
    name = text.strip().upper().removeprefix("ESME_")
    if name in Status.__members__:
        return int(Status[name])
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"status code {text!r} is not a number or an ESME_ name") from None


class Bind:
    """One slot of a route's binds: its session while up, and when to try again while down."""

    def __init__(self, config: BindConfig, adapter: SmppAdapter) -> None:
        self.config = config
        self.adapter = adapter
        self.session: Session | None = None
        self.lock = asyncio.Lock()
        self.retry_at = 0.0
        self.delay = adapter.options.reconnect_min
        self.last_error = ""

    @property
    def up(self) -> bool:
        """Bound now."""
        return self.session is not None and self.session.alive

    def state(self) -> BindState:
        """Up or not, and why not."""
        up = self.up
        return BindState(self.config.mode, up, "" if up else self.last_error)

    async def ready(self) -> Session | None:
        """The live session, (re)connecting if its back-off allows; None while it is down."""
        session = self.session
        if session is not None and session.alive:
            return session
        loop = asyncio.get_running_loop()
        if loop.time() < self.retry_at:
            return None
        async with self.lock:
            if self.session is not None:
                if self.session.alive:
                    return self.session
                # a session that died leaves its keep-alive task asleep: end it before the next
                dead, self.session = self.session, None
                reason = dead.close_reason or "connection lost"
                self.last_error = f"SessionClosed: {reason}"
                log.warning(
                    "SMPP bind lost",
                    extra={"route": self.adapter.route, "mode": self.config.mode, "error": reason},
                )
                await dead.close(reason)
            if loop.time() < self.retry_at:
                return None
            return await self._connect(loop.time())

    async def _connect(self, now: float) -> Session | None:
        session = Session(self.config, self.adapter.on_request)
        try:
            await session.open()
        # SmppError: a refused bind, garbage instead of a bind_resp; EOFError: the SMSC hung up
        # mid-bind (IncompleteReadError is not an OSError): each is a failed attempt, not a crash
        except (OSError, TimeoutError, EOFError, SmppError) as exc:
            detail = str(exc) or f"no bind_resp within {self.config.bind_timeout}s"
            self.last_error = f"{type(exc).__name__}: {detail}"
            options = self.adapter.options
            self.retry_at = now + self.delay * random.uniform(0.8, 1.2)
            self.delay = min(self.delay * 2, options.reconnect_max)
            log.warning(
                "SMPP bind failed",
                extra={"route": self.adapter.route, "error": self.last_error},
            )
            return None
        if self.last_error:  # it was down: say that it is back
            extra = {"route": self.adapter.route, "mode": self.config.mode}
            log.info("SMPP bound again", extra=extra)
            self.last_error = ""
        self.session, self.delay = session, self.adapter.options.reconnect_min
        return session

    async def close(self) -> None:
        """Unbind and close."""
        if self.session is not None:
            await self.session.unbind()
            self.session = None


class SmppAdapter:
    """Sends each message as one or more submit_sm over a route's binds to its SMSC."""

    # delivery receipts and replies come as deliver_sm on the adapter's own binds
    capabilities: ClassVar[Capabilities] = Capabilities(receipts=True, replies=True)

    def __init__(self, route: str, options: SmppOptions) -> None:
        self.route = route
        self.options = options
        self.sink: EventSink | None = None
        self.verdicts = dict(DEFAULT_VERDICTS)
        self.verdicts.update({_status_code(k): v for k, v in options.status.items()})
        self.source_ton, self.source_npi = _source_numbering(options)
        self.transmitters = [Bind(self._config(options.mode), self) for _ in range(options.binds)]
        receivers = options.receivers if options.mode == "transmitter" else 0
        self.receivers = [Bind(self._config("receiver"), self) for _ in range(receivers)]
        self._turn = itertools.count()
        self._reference = itertools.count(random.randrange(256))
        # the binds the SMSC delivers on: transceivers, or the receivers beside transmitters
        self.receiving = self.transmitters if options.mode == "transceiver" else self.receivers
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False
        self._encode = SubmitEncoder(self._fixed_fields())

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> SmppAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(SmppOptions, route, options))

    def attach(self, sink: EventSink) -> None:
        """Receipts and replies from the SMSC go to `sink`."""
        self.sink = sink

    def _config(self, mode: str) -> BindConfig:
        options = self.options
        context = None
        if options.tls:
            context = ssl.create_default_context()
            if not options.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return BindConfig(
            host=options.host,
            port=options.port,
            system_id=options.system_id,
            password=options.password.get_secret_value(),
            system_type=options.system_type,
            mode=mode,
            window=options.window,
            bind_timeout=options.bind_timeout,
            response_timeout=options.response_timeout,
            enquire_link=options.enquire_link,
            tls=context,
        )

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        """Submit every part of every message, pipelined within the binds' windows, then wait.

        No task per message: the requests are written as window slots free up, and the
        responses are awaited afterwards, in order.
        """
        if not messages:
            return []
        self.listen()
        pending: list[list[asyncio.Future[Pdu]] | _Long | SendResult] = []
        for message in messages:
            pending.append(await self._begin(message))
        results: list[SendResult] = []
        for entry in pending:
            if isinstance(entry, list):
                await _settled(entry)
                results.append(self._outcome(entry))
            elif isinstance(entry, _Long):
                await _settled(entry.futures)
                results.append(self._long_outcome(entry))
            else:
                results.append(entry)
        return results

    async def _begin(self, message: Message) -> list[asyncio.Future[Pdu]] | _Long | SendResult:
        """Write a message's submit_sm PDUs; or its result, when it cannot be written."""
        try:
            plan = self._submits(message)
        except (ValueError, PduError) as exc:
            return Failed(f"cannot be written as SMPP: {exc}")
        if isinstance(plan, _Long):
            return await self._begin_long(plan)
        session = await self._session()
        if session is None:
            return RetryLater(f"no SMPP bind is up: {self._last_error()}")
        try:
            return [await session.begin(self._encode, plan)]
        except (SessionClosed, PduError) as exc:
            if isinstance(exc, PduError):  # a field the encoder refused (an address too long)
                return Failed(f"cannot be written as SMPP: {exc}")
            return RetryLater(str(exc))

    async def _begin_long(self, plan: _Long) -> _Long | SendResult:
        """Write the parts of a long message the SMSC has not taken yet, on one bind.

        Every part on one bind, the bind that took its earlier parts when it is still up:
        some SMSCs reassemble per bind.
        """
        session, plan.bind = await self._session_at(plan.bind)
        if session is None:
            return plan.refused(RetryLater(f"no SMPP bind is up: {self._last_error()}"))
        try:
            for number in plan.todo():
                plan.futures.append(await session.begin(self._encode, plan.pdu(number)))
                plan.numbers.append(number)
        except (SessionClosed, PduError) as exc:
            for future in plan.futures:
                future.cancel()
            if isinstance(exc, PduError):
                return Failed(f"cannot be written as SMPP: {exc}")
            # parts written before the session closed may have been taken
            return plan.refused(RetryLater(str(exc), unknown=bool(plan.futures)))
        return plan

    def _outcome(self, futures: list[asyncio.Future[Pdu]]) -> SendResult:
        """The result from the parts' settled responses: accepted only if every part was."""
        ids: list[str] = []
        for future in futures:
            answer = self._answer(future)
            if not isinstance(answer, str):
                return answer
            ids.append(answer)
        return Accepted.one(ids[0]) if len(ids) == 1 else Accepted(tuple(ids))

    def _answer(self, future: asyncio.Future[Pdu]) -> str | SendResult:
        """One part's message id, or what its refusal (or missing answer) means.

        A submit that was written but never answered (a timeout, the session lost with it in
        flight, an unreadable answer) has an unknown outcome: the SMSC may have taken it.
        """
        error = future.exception()
        if error is not None:
            if isinstance(error, TimeoutError):
                reason = f"no submit_sm_resp within {self.options.response_timeout}s"
                return RetryLater(reason, unknown=True)
            return RetryLater(str(error), unknown=True)
        answer = future.result()
        if answer.status or answer.command_id == Command.GENERIC_NACK:
            return self._verdict(answer.status)
        return canonical_id(answer.text("message_id"), self.options.submit_id)

    def _long_outcome(self, plan: _Long) -> SendResult:
        """A long message is accepted once every part is, over however many sends it takes.

        Parts the SMSC took are remembered (with the reference) in the result, so the next
        send carries only the rest; a permanent refusal of any part fails the message.
        """
        refusal: SendResult | None = None
        for number, future in zip(plan.numbers, plan.futures, strict=True):
            answer = self._answer(future)
            if isinstance(answer, str):
                plan.ids[number - 1] = answer
            elif refusal is None or _outranks(answer, refusal):
                refusal = answer
        if refusal is not None:
            return plan.refused(refusal)
        return Accepted(tuple(plan.ids), resent=plan.resent)

    def _verdict(self, status: int) -> SendResult:
        verdict = self.verdicts.get(status, "retry")
        name = status_name(status)
        if verdict == "throttled":
            return Throttled()
        if verdict == "failed":
            return Failed(f"SMSC refused it: {name}")
        return RetryLater(f"SMSC answered {name}")

    async def _session_at(self, preferred: int) -> tuple[Session | None, int]:
        """The session of bind `preferred` if it is up, else the next live bind in turn."""
        binds = self.transmitters
        if 0 <= preferred < len(binds):
            session = binds[preferred].session
            if session is not None and session.alive:
                return session, preferred
        start = next(self._turn)
        for step in range(len(binds)):
            index = (start + step) % len(binds)
            session = await binds[index].ready()
            if session is not None:
                return session, index
        return None, -1

    async def _session(self) -> Session | None:
        """The next live bind in turn; one that is down is skipped (and reconnected in turn)."""
        binds = self.transmitters
        start = next(self._turn)
        session = binds[start % len(binds)].session
        if session is not None and session.alive:  # the common case, without a coroutine
            return session
        for step in range(len(binds)):
            session = await binds[(start + step) % len(binds)].ready()
            if session is not None:
                return session
        return None

    def _last_error(self) -> str:
        errors = [bind.last_error for bind in self.transmitters if bind.last_error]
        return errors[-1] if errors else "not connected yet"

    def _fixed_fields(self) -> dict[str, Any]:
        """The submit_sm fields that are the same for every message of the route."""
        options = self.options
        return {
            "service_type": options.service_type,
            "source_addr_ton": self.source_ton,
            "source_addr_npi": self.source_npi,
            "source_addr": options.source_addr,
            "dest_addr_ton": options.dest_ton,
            "dest_addr_npi": options.dest_npi,
            "registered_delivery": 1 if options.registered_delivery else 0,
        }

    def _submits(self, message: Message) -> Pdu | _Long:
        """The submit_sm of one message, or the plan of a long message's parts."""
        options = self.options
        coding, data = encode_chosen(message.body, options.data_coding)
        destination = _destination(message.to)
        if len(data) <= SINGLE_LIMIT[coding]:  # the common case: one part
            fields = {"destination_addr": destination, "data_coding": coding, "short_message": data}
            return Pdu(Command.SUBMIT_SM, 0, 0, fields)
        base = {"destination_addr": destination, "data_coding": coding}
        if options.long_messages == "payload":
            tlvs: dict[int, bytes] = {Tag.MESSAGE_PAYLOAD: data}
            return Pdu(Command.SUBMIT_SM, 0, fields={**base, "short_message": b""}, tlvs=tlvs)
        parts = split_parts(data, coding)
        if len(parts) > 255:
            raise ValueError(f"the text needs {len(parts)} parts; SMS allows 255")
        plan = _Long.resumed(message, options.long_messages, base, parts)
        if plan is None:  # nothing taken yet (or nothing we can continue): a new reference
            plan = _Long(options.long_messages, base, parts, next(self._reference) & 0xFF)
            plan.resent = _had_accepted_parts(message)
        return plan

    def on_request(self, pdu: Pdu) -> int | asyncio.Future[None]:
        """A deliver_sm from the SMSC: a receipt or a person's reply, handed to the sink.

        The answer is the sink's future: the session acknowledges the deliver_sm once the
        event is written, or answers a temporary error so that the SMSC sends it again.
        """
        sink = self.sink
        if sink is None:
            return int(Status.ROK)
        if is_receipt(pdu):
            parsed = parse_receipt(pdu)
            # an intermediate notification (ENROUTE) is not an outcome: the final receipt follows
            if parsed is None or is_intermediate(pdu, parsed):
                return int(Status.ROK)
            provider_id = canonical_id(parsed.message_id, self.options.receipt_id)
            return sink.receipt(
                Receipt(self.route, provider_id, parsed.delivered, parsed.state, parsed.error)
            )
        return sink.inbound(
            Inbound(
                route=self.route,
                sender=_sender(pdu),
                text=_inbound_text(pdu),
                recipient=pdu.text("destination_addr"),
            )
        )

    def listen(self) -> None:
        """Keep every bind the SMSC delivers on up from now on, sending or not, until aclose.

        A bind that drops is bound again at once, then with the route's back-off
        (`reconnect_min` doubling up to `reconnect_max`) while the SMSC refuses.
        """
        if self.receiving and self._keeper is None and not self._closed:
            self._keeper = asyncio.create_task(self._keep_bound(), name=f"smpp-keep-{self.route}")

    def binds(self) -> list[BindState]:
        """The state of each bind the SMSC delivers on."""
        return [bind.state() for bind in self.receiving]

    async def _keep_bound(self) -> None:
        # a bind that is up costs one attribute check per round; binds connect side by side
        pause = min(self.options.reconnect_min, 1.0)
        while not self._closed:
            await asyncio.gather(*(bind.ready() for bind in self.receiving if not bind.up))
            await asyncio.sleep(pause)

    async def ping(self) -> None:
        """Bind if needed and exchange an enquire_link; raises when the SMSC cannot be reached."""
        session = await self._session()
        if session is None:
            raise SessionClosed(f"no SMPP bind is up: {self._last_error()}")
        await session.submit(Pdu(Command.ENQUIRE_LINK, 0))

    async def aclose(self) -> None:
        """Unbind every session; safe to call twice."""
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        await asyncio.gather(*(bind.close() for bind in [*self.transmitters, *self.receivers]))


def _outranks(answer: SendResult, refusal: SendResult) -> bool:
    """Which refusal of a long message's parts decides its result: a permanent one, then one
    whose outcome is unknown (so it is counted and the route held), then the first."""
    if isinstance(refusal, Failed):
        return False
    if isinstance(answer, Failed):
        return True
    unknown = isinstance(answer, RetryLater) and answer.unknown
    return unknown and not (isinstance(refusal, RetryLater) and refusal.unknown)


async def _settled(futures: list[asyncio.Future[Pdu]]) -> None:
    """Wait for every response (or its failure: the outcome reads it afterwards)."""
    for future in futures:
        if not future.done():
            with contextlib.suppress(SmppError, TimeoutError):
                await future


class _Long:
    """A long message's parts with their reference, and which of them the SMSC has taken.

    Kept across sends in the message's `extra["resume"]`: {"ref": reference, "ids": one id per
    part, "" for a part not taken yet, "bind": the bind that took them, "resent": true when
    parts taken earlier had to go out again}.
    """

    __slots__ = (
        "base",
        "bind",
        "futures",
        "ids",
        "method",
        "numbers",
        "parts",
        "reference",
        "resent",
    )

    def __init__(
        self,
        method: str,
        base: dict[str, Any],
        parts: list[bytes],
        reference: int,
        ids: list[str] | None = None,
        bind: int = -1,
    ) -> None:
        self.method = method
        self.base = base
        self.parts = parts
        self.reference = reference
        self.ids = ids if ids is not None else [""] * len(parts)
        self.bind = bind
        self.numbers: list[int] = []  # the part numbers written by this send
        self.futures: list[asyncio.Future[Pdu]] = []
        self.resent = False

    @classmethod
    def resumed(
        cls, message: Message, method: str, base: dict[str, Any], parts: list[bytes]
    ) -> _Long | None:
        """The plan that finishes a message whose earlier parts were taken, if it still fits."""
        state = (message.extra or {}).get(RESUME)
        if not isinstance(state, dict):
            return None
        reference, ids, bind = state.get("ref"), state.get("ids"), state.get("bind", -1)
        if not (
            type(reference) is int
            and 0 <= reference <= 0xFF
            and isinstance(ids, list)
            and len(ids) == len(parts)
            and all(isinstance(one, str) for one in ids)
            and type(bind) is int
        ):
            return None  # written for another text or route: it cannot be continued
        plan = cls(method, base, parts, reference, list(ids), bind)
        plan.resent = state.get("resent") is True
        return plan

    def todo(self) -> list[int]:
        """The numbers (from 1) of the parts not taken yet."""
        return [number for number, one in enumerate(self.ids, 1) if not one]

    def pdu(self, number: int) -> Pdu:
        """The submit_sm of part `number`, with the message's reference."""
        part, total, reference = self.parts[number - 1], len(self.parts), self.reference
        if self.method == "udh":
            fields = {
                **self.base,
                "esm_class": 0x40,
                "short_message": udh(reference, total, number),
            }
            fields["short_message"] += part
            return Pdu(Command.SUBMIT_SM, 0, fields=fields)
        return Pdu(
            Command.SUBMIT_SM,
            0,
            fields={**self.base, "short_message": part},
            tlvs={
                Tag.SAR_MSG_REF_NUM: reference.to_bytes(2, "big"),
                Tag.SAR_TOTAL_SEGMENTS: bytes((total,)),
                Tag.SAR_SEGMENT_SEQNUM: bytes((number,)),
            },
        )

    def refused(self, refusal: SendResult) -> SendResult:
        """The message's result when not every part was taken: the refusal, carrying the parts
        taken so far (and the reference), so the next send finishes the same message."""
        if not any(self.ids) or isinstance(refusal, Failed | Accepted):
            return refusal
        state: dict[str, Any] = {"ref": self.reference, "ids": list(self.ids), "bind": self.bind}
        if self.resent:  # counted once the message is taken
            state["resent"] = True
        if isinstance(refusal, Throttled):
            return Throttled(refusal.retry_after, resume=state)
        assert isinstance(refusal, RetryLater)
        return RetryLater(
            refusal.reason, refusal.retry_after, resume=state, unknown=refusal.unknown
        )


def _had_accepted_parts(message: Message) -> bool:
    """True when the message carries parts taken earlier that cannot be continued."""
    state = (message.extra or {}).get(RESUME)
    ids = state.get("ids") if isinstance(state, dict) else None
    return isinstance(ids, list) and any(ids)


def _source_numbering(options: SmppOptions) -> tuple[int, int]:
    """TON/NPI for the sender: alphanumeric (5/0), international (1/1) or a short code (3/0)."""
    if options.source_ton is not None:
        return options.source_ton, options.source_npi if options.source_npi is not None else 0
    source = options.source_addr.removeprefix("+")
    if not source.isdigit():
        return 5, 0  # an alphanumeric brand name such as "BoYTe"
    if len(source) > 8:
        return 1, 1
    return 3, 0


def _destination(to: str) -> str:
    """E.164 without the plus, as SMSCs expect with TON 1 / NPI 1."""
    return to.removeprefix("+")


def _sender(pdu: Pdu) -> str:
    """The sender of a reply, in E.164 when the SMSC marks it international."""
    source = pdu.text("source_addr")
    if pdu.fields.get("source_addr_ton") == 1 and source.isdigit():
        return f"+{source}"
    return source


def _inbound_text(pdu: Pdu) -> str:
    raw = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD) or bytes(pdu.fields.get("short_message") or b"")
    if int(pdu.fields.get("esm_class", 0)) & 0x40 and raw:  # a part of a long reply: skip UDH
        raw = raw[1 + raw[0] :]
    return decode_text(raw, int(pdu.fields.get("data_coding", 0)))
