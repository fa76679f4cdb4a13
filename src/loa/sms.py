"""SMS encoding and part counting: GSM 03.38 7-bit or UCS-2, exactly as the carrier bills it.

A message is GSM-7 when every character is in the GSM 03.38 default alphabet or its extension
table (3GPP TS 23.038 §6.2.1); one character outside both (a Vietnamese letter such as ạ or đ, an
emoji) makes the whole message UCS-2. A GSM-7 message is counted in septets, an extension
character costing two (ESC + code); a UCS-2 message in UTF-16 code units, a character outside the
BMP (most emoji) costing two (a surrogate pair).

One part holds 160 septets or 70 units. A longer message is concatenated: the 6-byte user data
header leaves 153 septets or 67 units per part, and a part never ends in the middle of an escape
pair or a surrogate pair, so a part may hold one unit less than that. `split` and `analyse` share
that rule, so `len(split(text)) == analyse(text).parts` always holds; the part count can exceed
ceil(units / 153) because of it.

`analyse` runs once per recipient in the planner, so the common cases (plain ASCII text, text
without two-unit characters) are answered by C-level checks without a Python loop per character.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from dataclasses import dataclass

GSM7_SINGLE = 160  # septets in a message of one part
GSM7_PART = 153  # septets per part of a concatenated message (160 less the 7-septet UDH)
UCS2_SINGLE = 70  # UTF-16 code units in a message of one part
UCS2_PART = 67  # UTF-16 code units per part of a concatenated message (140 bytes less 6)

_ESC = "\x1b"

# The GSM 03.38 default alphabet in code order: the character at index i has code i. Code 0x1B
# is the escape to the extension table, not a character, and is removed from the set below.
_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00: 0x09 is the capital Ç, as in the standard
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1bÆæßÉ"  # 0x10: Greek capitals
    " !\"#¤%&'()*+,-./"  # 0x20: 0x24 is ¤, the dollar sign is 0x02
    "0123456789:;<=>?"  # 0x30
    "¡ABCDEFGHIJKLMNO"  # 0x40
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50
    "¿abcdefghijklmno"  # 0x60: no backtick in GSM-7
    "pqrstuvwxyzäöñüà"  # 0x70
)
BASIC_CODES: dict[str, int] = {ch: code for code, ch in enumerate(_BASIC_TABLE) if ch != _ESC}

# The extension table: sent as ESC followed by this code, so each costs two septets.
EXTENSION_CODES: dict[str, int] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_BASIC = "".join(BASIC_CODES)
_EXTENSION = "".join(EXTENSION_CODES)
# First character outside the whole GSM-7 repertoire: its position names it in errors.
_NOT_GSM7 = re.compile(f"[^{re.escape(_BASIC + _EXTENSION)}]")
# Characters outside the BMP: each is a surrogate pair in UTF-16.
_ASTRAL_RE = re.compile("[\U00010000-\U0010ffff]")
# ASCII bytes of the basic alphabet: deleting them from ASCII text leaves only the extension
# characters and the ASCII characters GSM-7 lacks (backtick, most control characters).
_ASCII_BASIC = bytes(ord(ch) for ch in _BASIC if ch.isascii())
_ASCII_EXTENSION = bytes(ord(ch) for ch in _EXTENSION if ch.isascii())
# ASCII to GSM-7 code, one byte each: only @, $ and _ move; the rest keep their ASCII code.
_ASCII_TO_GSM7 = bytes(BASIC_CODES.get(chr(b), b) if b < 0x80 else b for b in range(256))
_TO_GSM7 = str.maketrans(
    {ch: chr(code) for ch, code in BASIC_CODES.items()}
    | {ch: _ESC + chr(code) for ch, code in EXTENSION_CODES.items()}
)


class Encoding(enum.StrEnum):
    """The data coding of a message: SMPP data_coding 0 (GSM-7) or 8 (UCS-2)."""

    GSM7 = "gsm7"
    UCS2 = "ucs2"


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """How a text goes out: its encoding, its length in septets or UTF-16 units, its parts."""

    encoding: Encoding
    units: int
    parts: int


# Infos are immutable and few distinct ones occur, so share them: building a frozen dataclass
# costs more than the rest of a short analyse(). Keyed on ints only, which hash fast.
_gsm7_info = functools.lru_cache(maxsize=4096)(functools.partial(SmsInfo, Encoding.GSM7))
_ucs2_info = functools.lru_cache(maxsize=4096)(functools.partial(SmsInfo, Encoding.UCS2))


def analyse(text: str) -> SmsInfo:
    """Encoding, units and number of parts of `text`; the empty text is one part of 0 units."""
    if text.isascii():
        rest = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not rest:  # the common case: plain ASCII within the basic alphabet
            if len(text) < len(_PLAIN):
                return _PLAIN[len(text)]
            return _gsm7_info(len(text), _even_parts(len(text), GSM7_SINGLE, GSM7_PART))
        if not rest.translate(None, _ASCII_EXTENSION):
            return _gsm7(text, len(rest))
        return _ucs2_info(len(text), _even_parts(len(text), UCS2_SINGLE, UCS2_PART))
    if _NOT_GSM7.search(text) is None:
        return _gsm7(text, _extension_count(text))
    return _ucs2(text)


def split(text: str) -> list[str]:
    """The parts `text` is sent in, in order; joined they give `text` back.

    No part splits an extension character from its escape or a surrogate pair, so a part may be
    one unit short of the 153 septets or 67 units a concatenated part can carry.
    """
    info = analyse(text)
    if info.parts == 1:
        return [text]
    if info.encoding is Encoding.GSM7:
        if info.units == len(text):
            return _even_split(text, GSM7_PART)
        septets = _with_escapes(text)
        cuts = _gsm7_part_ends(septets)
        return [septets[a:b].replace(_ESC, "") for a, b in zip([0, *cuts], cuts, strict=False)]
    if info.units == len(text):
        return _even_split(text, UCS2_PART)
    cuts = _ucs2_part_ends(text)
    return [text[a:b] for a, b in zip([0, *cuts], cuts, strict=False)]


def _gsm7(text: str, extensions: int) -> SmsInfo:
    """Info of a GSM-7 text holding `extensions` two-septet characters."""
    units = len(text) + extensions
    if units <= GSM7_SINGLE or not extensions:
        return _gsm7_info(units, _even_parts(units, GSM7_SINGLE, GSM7_PART))
    return _gsm7_info(units, len(_gsm7_part_ends(_with_escapes(text))))


def _ucs2(text: str) -> SmsInfo:
    """Info of a text that needs UCS-2."""
    if _ASTRAL_RE.search(text) is None:  # no surrogate pairs: one unit per character
        return _ucs2_info(len(text), _even_parts(len(text), UCS2_SINGLE, UCS2_PART))
    units = len(text) + _astral_count(text)
    if units <= UCS2_SINGLE:
        return _ucs2_info(units, 1)
    return _ucs2_info(units, len(_ucs2_part_ends(text)))


def _even_parts(units: int, single: int, part: int) -> int:
    """Parts of a text whose characters all cost one unit: no pair can straddle a boundary."""
    return 1 if units <= single else -(-units // part)


# Infos of plain texts (ASCII in the basic alphabet) by length: the planner's commonest case,
# answered by one index instead of a cached call. Longer texts take the cached call.
_PLAIN = tuple(
    SmsInfo(Encoding.GSM7, units, _even_parts(units, GSM7_SINGLE, GSM7_PART))
    for units in range(GSM7_PART * 16)
)


def _even_split(text: str, part: int) -> list[str]:
    """Parts of a text whose characters all cost one unit: plain slices of `part` characters."""
    return [text[i : i + part] for i in range(0, len(text), part)]


def _extension_count(text: str) -> int:
    """Septets beyond one per character: one for each extension character.

    Ten str.count calls, not a regex findall, which builds one string per match.
    """
    return sum(map(text.count, _EXTENSION))


def _with_escapes(text: str) -> str:
    """`text` with ESC before each extension character: one character per septet.

    ESC is not a GSM-7 character, so in a GSM-7 text every ESC here is one we put in.
    """
    for char in _EXTENSION:
        if char in text:
            text = text.replace(char, _ESC + char)
    return text


def _gsm7_part_ends(septets: str) -> list[int]:
    """End index in `septets` of each 153-septet part; an ESC never ends a part.

    Working on septets rather than characters makes this one step per part.
    """
    ends: list[int] = []
    start, length = 0, len(septets)
    while start < length:
        end = min(start + GSM7_PART, length)
        if septets[end - 1] == _ESC:  # the pair would straddle: it moves whole to the next part
            end -= 1
        ends.append(end)
        start = end
    return ends


def _astral_count(text: str) -> int:
    """UTF-16 units beyond one per character: one for each character outside the BMP."""
    # surrogatepass: a lone surrogate in a str counts one unit rather than raising here.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2 - len(text)


def _ucs2_part_ends(text: str) -> list[int]:
    """End index in `text` of each 67-unit part; a surrogate pair never straddles two parts.

    Each part starts as the next 67 characters and drops characters from its end until it
    fits, so an emoji that would take units 67 and 68 moves whole to the next part.
    """
    ends: list[int] = []
    start, length = 0, len(text)
    while start < length:
        end = min(start + UCS2_PART, length)
        units = end - start + _astral_count(text[start:end])
        while units > UCS2_PART:
            # Fewest characters that can remove the excess (two units each at most): no longer
            # prefix fits, and the excess at least halves, so this loop runs a few times at most.
            drop = (units - UCS2_PART + 1) // 2
            end -= drop
            units -= drop + _astral_count(text[end : end + drop])
        ends.append(end)
        start = end
    return ends


def encode_gsm7(text: str) -> bytes:
    """GSM-7 unpacked, one byte per septet (SMPP data_coding 0); extensions as 0x1B + code.

    Raises ValueError naming the first character outside GSM-7 and its position.
    """
    if text.isascii():
        data = text.encode("ascii")
        if not data.translate(None, _ASCII_BASIC):
            return data.translate(_ASCII_TO_GSM7)
    bad = _NOT_GSM7.search(text)
    if bad is not None:
        char = bad.group()
        raise ValueError(
            f"{char!r} (U+{ord(char):04X}) at position {bad.start()} is not in the GSM 03.38 "
            "alphabet; send the text as UCS-2"
        )
    return text.translate(_TO_GSM7).encode("ascii")


def encode_ucs2(text: str) -> bytes:
    """UTF-16 big-endian (SMPP data_coding 8), with surrogate pairs for characters beyond the BMP.

    A lone surrogate in `text` cannot be sent and raises UnicodeEncodeError (a ValueError).
    """
    return text.encode("utf-16-be")


PUNCTUATION = {
    "\u00a0": " ",  # no-break space
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2026": "...",
}


def _vietnamese_table() -> list[int | str | None]:
    """A str.translate table: each precomposed Vietnamese letter to its base letter, marks deleted.

    Built from the base letters and tones rather than typed out, so no letter is forgotten:
    12 vowel shapes times 5 tones plus the shapes themselves, in both cases, and đ Đ.

    A list indexed by code point up to U+202F (past the block holding ạ ế ộ …, and the quotes
    and dashes of General Punctuation), not a
    dict: translate asks the table for every character, a dict miss costs a KeyError, a list
    hit is an index, which makes to_ascii about three times faster. A character past the end
    (emoji, CJK) raises IndexError inside translate, which leaves it unchanged.
    """
    table: list[int | str | None] = list(range(0x2030))
    table[ord("đ")], table[ord("Đ")] = ord("d"), ord("D")  # a letter of its own, not d + mark
    tones = ("\u0301", "\u0300", "\u0309", "\u0303", "\u0323")  # sắc huyền hỏi ngã nặng
    for shape in "aăâeêioôơuưy":
        for base in (shape, shape.upper()):
            for tone in ("", *tones):
                letter = unicodedata.normalize("NFC", base + tone)
                table[ord(letter)] = ord(unicodedata.normalize("NFD", letter)[0])
    # The short vowels of Central Highlands languages written in Latin script (Ede, Jarai,
    # Bahnar: ĕ ĭ ŏ ŭ) fold to their base letter too: decomposed, their breve is deleted below,
    # so precomposed text folds the same and is counted the same.
    for base in "eiouEIOU":
        table[ord(unicodedata.normalize("NFC", base + "\u0306"))] = ord(base)
    # Text typed as "Unicode tổ hợp" (decomposed) carries the marks as separate characters.
    for mark in (*tones, "\u0302", "\u0306", "\u031b"):  # circumflex, breve, horn
        table[ord(mark)] = None
    # Punctuation pasted from documents, which alone would force UCS-2: its plain forms.
    for fancy, plain in PUNCTUATION.items():
        table[ord(fancy)] = plain
    return table


_VIETNAMESE_TO_ASCII = _vietnamese_table()


def to_ascii(text: str) -> str:
    """`text` without Vietnamese diacritics, so it can go out as GSM-7 in 160-character parts.

    Every Vietnamese vowel, with any tone and shape, becomes its base letter (ế → e, Ự → U),
    đ becomes d and Đ becomes D, in precomposed (NFC) and decomposed (NFD) text alike: the
    eight combining marks Vietnamese uses (five tones, circumflex, breve, horn) are deleted
    wherever they stand, so the breve vowels of Ede, Jarai or Bahnar (ĕ ĭ ŏ ŭ) fold too.
    Curly quotes, dashes, the ellipsis and the no-break space become their
    plain forms. Nothing else changes: a character still outside GSM-7 (an emoji, CJK) stays,
    and `analyse` of the result then still says UCS-2.
    """
    if text.isascii():
        return text
    return text.translate(_VIETNAMESE_TO_ASCII)
