"""The adapter contract test suite: every adapter, built in or third-party, runs it on itself.

Subclass `AdapterContract` in a test module and give it an `adapter` fixture, an async
generator that yields a fresh adapter and closes it afterwards. The suite then checks, using
only the public contract of `loa.adapters.base`, that the adapter

- is an `Adapter` (an async `send` and an async `aclose`);
- answers every `send` with exactly one result per message, each an `Accepted`, `RetryLater`,
  `Throttled` or `Failed`, and an empty chunk with an empty sequence;
- takes Vietnamese text with diacritics, emoji, line breaks and long bodies without raising;
- does not change the messages it is given;
- answers chunks sent concurrently (`asyncio.gather`) with one result per message each;
- can be closed twice;
- if it has a `ping()` (`Pingable`), can be pinged.

A carrier's adapter package uses it like this (pytest and anyio must be installed; anyio's
pytest plugin runs the async tests and fixtures)::

    # tests/test_viettel_adapter.py
    from collections.abc import AsyncIterator

    import pytest

    from loa.adapters.base import Adapter
    from loa.testing.contract import AdapterContract, sample_messages
    from loa.message import Message
    from viettel_loa import ViettelAdapter


    @pytest.fixture(
        params=[
            pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
            pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        ]
    )
    def anyio_backend(request: pytest.FixtureRequest) -> object:
        # loa's workers run on uvloop: run the suite on both loops. Without this fixture,
        # anyio's default runs plain asyncio only. The suite needs an asyncio loop (not trio).
        return request.param


    class TestViettelAdapter(AdapterContract):
        @pytest.fixture
        async def adapter(self, smsc_simulator) -> AsyncIterator[Adapter]:
            adapter = ViettelAdapter.create("sms-viettel", {"host": smsc_simulator.host})
            yield adapter
            await adapter.aclose()

        @pytest.fixture
        def messages(self) -> list[Message]:  # optional: the defaults suit most adapters
            return [*sample_messages(), Message("vt-1", "+84981234567", "Xin chào")]

The test module (or its conftest.py) must provide the `anyio_backend` fixture as above; name
the subclass `Test...` so pytest collects it. `AdapterContract` itself is not collected.
Override `send_timeout` (seconds) if one `send` to your test peer may take longer than 30 s.
The contract cannot see whether results are in the right order: check that in your own tests,
for example by matching `Accepted.provider_ids` values against your test peer's records.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import unicodedata
from collections.abc import AsyncIterator, Sequence

import pytest

from loa.adapters.base import Adapter, Pingable
from loa.message import Accepted, Failed, Message, RetryLater, SendResult, Throttled

RESULT_TYPES = (Accepted, RetryLater, Throttled, Failed)

VIETNAMESE = (
    "Bộ Y tế khuyến cáo: đeo khẩu trang, rửa tay thường xuyên, giữ khoảng cách, "
    "không tụ tập và khai báo y tế. Đường dây nóng: xem trang chính thức."
)
DIACRITICS = "ắ ằ ẳ ẵ ặ ấ ầ ẩ ẫ ậ ế ề ể ễ ệ ố ồ ổ ỗ ộ ớ ờ ở ỡ ợ ứ ừ ử ữ ự ý ỳ ỷ ỹ ỵ đ Đ Ư Ơ"
EMOJI = "Tiêm vắc-xin 💉 phòng bệnh, diệt muỗi 🦟 Zika; cả nhà 👨‍👩‍👧 an toàn ✅ 🇻🇳"


def sample_messages() -> list[Message]:
    """The default chunk: plain, Vietnamese, decomposed accents, emoji, multi-line, long, extra."""
    long_body = " ".join([VIETNAMESE] * 12)
    return [
        Message("contract-ascii", "+84912345678", "Hello from loa: your appointment is at 9:30."),
        Message("contract-vi", "+84987654321", VIETNAMESE),
        Message("contract-diacritics", "+84901234567", DIACRITICS),
        # the same letters decomposed (NFD): base letter plus combining marks
        Message(
            "contract-nfd", "+84931234567", unicodedata.normalize("NFD", "Thông báo tiêm chủng")
        ),
        Message("contract-emoji", "+84351234567", EMOJI, parts=2),
        Message("contract-lines", "+84771234567", "Dòng 1\nDòng 2\r\nDòng 3\tkết thúc"),
        Message("contract-long", "+84861234567", long_body, parts=math.ceil(len(long_body) / 67)),
        Message(
            "contract-extra",
            "+84391234567",
            "Chào {name}, lịch tiêm của bạn: {when}.",
            extra={"name": "Nguyễn Thị Ánh", "when": "2021-08-15 09:30", "dose": 2},
        ),
    ]


class AdapterContract:
    """Contract tests for one adapter; subclass it and define the `adapter` fixture."""

    send_timeout: float = 30.0
    """Seconds one `send` may take before the suite calls it hung."""

    concurrent_chunks: int = 4
    """How many chunks the concurrency test sends at once."""

    @pytest.fixture
    def adapter(self) -> AsyncIterator[Adapter]:
        """Yield a fresh adapter and close it afterwards: every subclass defines this."""
        raise NotImplementedError(
            f"{type(self).__name__} must define an `adapter` fixture: an async generator "
            "that yields a fresh adapter and then awaits its aclose()"
        )

    @pytest.fixture
    def messages(self) -> list[Message]:
        """The sample chunk the tests send; override to add channel-specific messages."""
        return sample_messages()

    async def _send(self, adapter: Adapter, chunk: Sequence[Message]) -> Sequence[SendResult]:
        async with asyncio.timeout(self.send_timeout):
            return await adapter.send(chunk)

    @staticmethod
    def _check(results: Sequence[SendResult], chunk: Sequence[Message]) -> None:
        assert isinstance(results, Sequence), (
            f"send must return a sequence, got {type(results).__name__}"
        )
        assert len(results) == len(chunk), (
            f"send must return one result per message: {len(chunk)} sent, {len(results)} back"
        )
        for index, (result, message) in enumerate(zip(results, chunk, strict=True)):
            assert isinstance(result, RESULT_TYPES), (
                f"result {index} (message {message.id!r}) is a {type(result).__name__}, "
                "not Accepted, RetryLater, Throttled or Failed"
            )

    @pytest.mark.anyio
    async def test_is_an_adapter(self, adapter: Adapter) -> None:
        assert isinstance(adapter, Adapter), "an adapter needs async send() and aclose()"

    @pytest.mark.anyio
    async def test_one_result_per_message(self, adapter: Adapter, messages: list[Message]) -> None:
        results = await self._send(adapter, messages)
        self._check(results, messages)

    @pytest.mark.anyio
    async def test_single_message(self, adapter: Adapter, messages: list[Message]) -> None:
        for message in messages:
            self._check(await self._send(adapter, [message]), [message])

    @pytest.mark.anyio
    async def test_empty_chunk(self, adapter: Adapter) -> None:
        results = await self._send(adapter, [])
        self._check(results, [])

    @pytest.mark.anyio
    async def test_any_sequence(self, adapter: Adapter, messages: list[Message]) -> None:
        chunk = tuple(messages)  # the engine may pass any Sequence, not only a list
        self._check(await self._send(adapter, chunk), chunk)

    @pytest.mark.anyio
    async def test_unicode_and_long_bodies(self, adapter: Adapter) -> None:
        by_kind = {m.id: m for m in sample_messages()}
        for kind in ("contract-vi", "contract-diacritics", "contract-nfd", "contract-emoji"):
            chunk = [by_kind[kind]]
            self._check(await self._send(adapter, chunk), chunk)
        long_body = "Nội dung dài 🦟 " * 400
        chunk = [Message("contract-very-long", "+84912000111", long_body, parts=100)]
        self._check(await self._send(adapter, chunk), chunk)

    @pytest.mark.anyio
    async def test_messages_not_mutated(self, adapter: Adapter, messages: list[Message]) -> None:
        snapshot = copy.deepcopy(messages)
        identities = [id(m) for m in messages]
        await self._send(adapter, messages)
        assert [id(m) for m in messages] == identities, "the chunk's list was changed"
        for before, after in zip(snapshot, messages, strict=True):
            assert after == before, f"message {before.id!r} was changed by send"

    @pytest.mark.anyio
    async def test_concurrent_sends(self, adapter: Adapter, messages: list[Message]) -> None:
        chunks = [
            [dataclasses.replace(m, id=f"{m.id}-c{n}") for m in messages]
            for n in range(self.concurrent_chunks)
        ]
        answers = await asyncio.gather(*(self._send(adapter, chunk) for chunk in chunks))
        assert len(answers) == len(chunks)
        for results, chunk in zip(answers, chunks, strict=True):
            self._check(results, chunk)

    @pytest.mark.anyio
    async def test_sends_again_after_a_send(
        self, adapter: Adapter, messages: list[Message]
    ) -> None:
        for _ in range(3):
            self._check(await self._send(adapter, messages), messages)

    @pytest.mark.anyio
    async def test_aclose_twice(self, adapter: Adapter, messages: list[Message]) -> None:
        await self._send(adapter, messages[:1])
        await adapter.aclose()
        await adapter.aclose()

    @pytest.mark.anyio
    async def test_ping(self, adapter: Adapter) -> None:
        if not isinstance(adapter, Pingable):
            pytest.skip(f"{type(adapter).__name__} has no ping()")
        async with asyncio.timeout(self.send_timeout):
            await adapter.ping()
