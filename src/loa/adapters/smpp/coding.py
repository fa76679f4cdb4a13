"""Text in SMPP: data_coding choice, GSM 03.38 / Latin-1 / UCS-2 bytes, and long-message parts."""

from __future__ import annotations

from dataclasses import dataclass

from loa.sms import BASIC_CODES, EXTENSION_CODES, Encoding, analyse, encode_gsm7

GSM7 = 0  # the SMSC default alphabet: GSM 03.38, unpacked, one septet per byte
IA5 = 1
LATIN1 = 3
UCS2 = 8
ESCAPE = 0x1B

SINGLE_LIMIT = {GSM7: 160, IA5: 160, LATIN1: 140, UCS2: 140}  # bytes of one short_message
PART_LIMIT = {GSM7: 153, IA5: 153, LATIN1: 134, UCS2: 134}  # bytes per part beside the UDH

_GSM7_BASIC = {code: ch for ch, code in BASIC_CODES.items()}
_GSM7_EXTENSION = {code: ch for ch, code in EXTENSION_CODES.items()}


@dataclass(frozen=True, slots=True)
class Encoded:
    """A text as bytes in one data_coding, cut into the parts it is sent in."""

    data_coding: int
    data: bytes
    parts: list[bytes]


def choose_coding(text: str, preferred: str) -> int:
    """The data_coding for `text`: GSM 03.38 when it fits, else UCS-2 (or as the route says).

    `preferred` is the route's option: "auto", "gsm7", "latin1" (used when the text fits
    Latin-1, else UCS-2) or "ucs2" (always).
    """
    if preferred == "ucs2":
        return UCS2
    if preferred == "latin1":
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            return UCS2
        return LATIN1
    return GSM7 if analyse(text).encoding is Encoding.GSM7 else UCS2


def encode_text(text: str, data_coding: int) -> bytes:
    """`text` in `data_coding`; a text that does not fit it raises ValueError."""
    if data_coding in (GSM7, IA5):
        return encode_gsm7(text)
    if data_coding == LATIN1:
        return text.encode("latin-1")
    return text.encode("utf-16-be")


def decode_text(data: bytes, data_coding: int) -> str:
    """What a person wrote, from a short_message in `data_coding` (unknown codings as Latin-1)."""
    if data_coding in (GSM7, IA5):
        return decode_gsm7(data)
    if data_coding == UCS2:
        return data.decode("utf-16-be", errors="replace")
    return data.decode("latin-1")


def decode_gsm7(data: bytes) -> str:
    """Unpacked GSM 03.38 (one septet per byte) with the escape table, as text."""
    chars: list[str] = []
    escaped = False
    for byte in data:
        septet = byte & 0x7F
        if escaped:
            chars.append(_GSM7_EXTENSION.get(septet, " "))  # unknown extension: a space (03.38)
            escaped = False
        elif septet == ESCAPE:
            escaped = True
        else:
            chars.append(_GSM7_BASIC.get(septet, "?"))
    return "".join(chars)


def encode_chosen(text: str, preferred: str) -> tuple[int, bytes]:
    """`choose_coding` and `encode_text` in one pass: the data_coding and the bytes."""
    if preferred in ("auto", "gsm7"):
        try:  # GSM 03.38 when every character is in it: encode_gsm7 checks exactly that
            return GSM7, encode_gsm7(text)
        except ValueError:
            return UCS2, text.encode("utf-16-be")
    data_coding = choose_coding(text, preferred)
    return data_coding, encode_text(text, data_coding)


def encode_parts(text: str, data_coding: int) -> Encoded:
    """`text` encoded and cut into parts; one part when it fits a single short message.

    A cut never separates an escape from its extension character (GSM 03.38) nor the halves
    of a surrogate pair (UCS-2), so a part may be one unit short of the limit.
    """
    data = encode_text(text, data_coding)
    return Encoded(data_coding, data, split_parts(data, data_coding))


def split_parts(data: bytes, data_coding: int) -> list[bytes]:
    """Encoded text cut into the parts of a long message; itself when it fits one message."""
    if len(data) <= SINGLE_LIMIT[data_coding]:
        return [data]
    limit = PART_LIMIT[data_coding]
    parts: list[bytes] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        if end < len(data):
            end -= _unsafe_tail(data, start, end, data_coding)
        parts.append(data[start:end])
        start = end
    return parts


def _unsafe_tail(data: bytes, start: int, end: int, data_coding: int) -> int:
    """How many bytes to move from the end of data[start:end] into the next part."""
    if data_coding in (GSM7, IA5):
        # count the escapes that end the part: an odd run means the last one is unpaired
        run = 0
        while end - run - 1 >= start and data[end - run - 1] == ESCAPE:
            run += 1
        return run % 2
    if data_coding == UCS2 and 0xD8 <= data[end - 2] <= 0xDB:  # a high surrogate ends it
        return 2
    return 0


def udh(reference: int, total: int, number: int) -> bytes:
    """The concatenation header with an 8-bit reference (IEI 0x00): 6 bytes."""
    return bytes((0x05, 0x00, 0x03, reference & 0xFF, total, number))
