"""SMS encoding and part counting, checked against 3GPP TS 23.038 / 23.040 by hand-derived numbers.

The GSM 03.38 table below is typed from the standard as Unicode code points, independently of the
module's own table, and a naive per-character reference splitter checks split() and analyse()
on random text.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loa.sms import (
    PUNCTUATION,
    Encoding,
    SmsInfo,
    analyse,
    encode_gsm7,
    encode_ucs2,
    split,
    to_ascii,
)

GSM7 = Encoding.GSM7
UCS2 = Encoding.UCS2

# 3GPP TS 23.038 §6.2.1 default alphabet: the code point of the character with code 0x00 + i.
# 0x1B is the escape to the extension table, not a character.
BASIC_CODE_POINTS = [
    0x40, 0xA3, 0x24, 0xA5, 0xE8, 0xE9, 0xF9, 0xEC, 0xF2, 0xC7, 0x0A, 0xD8, 0xF8, 0x0D, 0xC5, 0xE5,
    0x394, 0x5F, 0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8,  # Δ _ Φ Γ Λ Ω Π Ψ
    0x3A3, 0x398, 0x39E, None, 0xC6, 0xE6, 0xDF, 0xC9,  # Σ Θ Ξ ESC Æ æ ß É
    0x20, 0x21, 0x22, 0x23, 0xA4, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2E, 0x2F,
    *range(0x30, 0x40),  # 0-9 : ; < = > ?
    0xA1, *range(0x41, 0x5B), 0xC4, 0xD6, 0xD1, 0xDC, 0xA7,  # ¡ A-Z Ä Ö Ñ Ü §
    0xBF, *range(0x61, 0x7B), 0xE4, 0xF6, 0xF1, 0xFC, 0xE0,  # ¿ a-z ä ö ñ ü à
]  # fmt: skip
# §6.2.1.1 extension table: code after the escape, for each character.
EXTENSION_CODE = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
    "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}  # fmt: skip
BASIC_CODE = {chr(cp): code for code, cp in enumerate(BASIC_CODE_POINTS) if cp is not None}
GSM_CHARS = set(BASIC_CODE) | set(EXTENSION_CODE)

MASK = "\U0001f637"  # 😷: outside the BMP, a surrogate pair (2 UTF-16 units)


def test_basic_table_has_127_characters():
    # 128 codes less the escape; guards the hand-typed table above.
    assert len(BASIC_CODE_POINTS) == 128
    assert len(BASIC_CODE) == 127


# --- GSM-7 part counting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "parts"),
    [
        (0, 1),  # empty text is still one (empty) SMS
        (1, 1),
        (160, 1),  # 160 septets fill one SMS
        (161, 2),  # 161 > 160: concatenated, ceil(161 / 153) = 2
        (306, 2),  # 2 x 153
        (307, 3),  # 307 > 306
        (459, 3),  # 3 x 153
        (460, 4),
    ],
)
def test_plain_gsm7_part_counts(length, parts):
    text = "a" * length
    assert analyse(text) == SmsInfo(GSM7, length, parts)
    assert len(split(text)) == parts


def test_multipart_gsm7_parts_hold_153_septets():
    parts = split("x" * 307)
    assert [len(p) for p in parts] == [153, 153, 1]


def test_extension_characters_cost_two_septets():
    # 80 x 2 = 160 septets: exactly one SMS; 81 x 2 = 162 > 160: two parts.
    assert analyse("€" * 80) == SmsInfo(GSM7, 160, 1)
    assert analyse("€" * 81) == SmsInfo(GSM7, 162, 2)
    # A 153-septet part takes 76 euros (152 septets); the 77th would need septets 153 and 154.
    assert [len(p) for p in split("€" * 81)] == [76, 5]
    # Each extension character is 2: "{x}" is 2 + 1 + 2 = 5 septets.
    assert analyse("{x}") == SmsInfo(GSM7, 5, 1)
    assert analyse("a[b]c^d~e|f\\g\fh") == SmsInfo(GSM7, 8 + 2 * 7, 1)


def test_escape_pair_at_a_part_boundary_moves_whole():
    # 152 + 2 + 10 = 164 septets > 160, so 153-septet parts. The euro would occupy septets
    # 153 and 154 of part 1: ESC alone may not end a part, so the euro opens part 2.
    text = "a" * 152 + "€" + "b" * 10
    assert analyse(text) == SmsInfo(GSM7, 164, 2)
    first, second = split(text)
    assert first == "a" * 152
    assert len(encode_gsm7(first)) == 152
    assert second == "€" + "b" * 10


def test_escape_pair_at_boundary_can_add_a_part():
    # 152 + 2 + 152 = 306 septets: ceil(306 / 153) = 2, yet it takes 3 parts: part 1 holds
    # 152 a (the euro moves), part 2 holds € + 151 a = 153, and part 3 the last a.
    text = "a" * 152 + "€" + "a" * 152
    assert analyse(text) == SmsInfo(GSM7, 306, 3)
    assert split(text) == ["a" * 152, "€" + "a" * 151, "a"]


def test_extension_character_just_before_the_boundary_stays():
    # 151 a + € = 153 septets: the pair fits exactly at the end of part 1.
    text = "a" * 151 + "€" + "b" * 10  # 163 septets
    assert split(text) == ["a" * 151 + "€", "b" * 10]
    assert analyse(text).parts == 2


def test_two_escape_pairs_at_the_boundary():
    # 151 + 2 + 2 + 10 = 165 septets. Part 1 takes 151 a + € = 153 septets exactly; the
    # second euro (septets 154-155) opens part 2.
    text = "a" * 151 + "€€" + "b" * 10
    assert split(text) == ["a" * 151 + "€", "€" + "b" * 10]
    assert analyse(text) == SmsInfo(GSM7, 165, 2)


def test_gsm7_with_non_ascii_basic_characters():
    # é, Δ, ñ, à, £ are in the default alphabet: still 1 septet each.
    text = "Café Δ señor à £5"
    assert analyse(text) == SmsInfo(GSM7, len(text), 1)


# --- UCS-2 -------------------------------------------------------------------------------------


def test_vietnamese_forces_ucs2():
    # ộ and ế are not in GSM 03.38: the whole text is UCS-2, 18 BMP characters = 18 units.
    assert analyse("Bộ Y tế khuyến cáo") == SmsInfo(UCS2, 18, 1)


@pytest.mark.parametrize("char", ["ạ", "ế", "ơ", "ư", "đ", "Đ", "ç", "`", "\x1b", "\t", "\u2206"])
def test_one_non_gsm_character_forces_ucs2(char):
    # ç (small) is not GSM, only Ç is; ` and TAB are ASCII but not GSM; U+2206 only looks like Δ.
    text = "a" * 50 + char
    assert analyse(text) == SmsInfo(UCS2, 51, 1)


@pytest.mark.parametrize(
    ("length", "parts"),
    [
        (70, 1),  # 70 units fill one UCS-2 SMS
        (71, 2),  # 71 > 70: concatenated, ceil(71 / 67) = 2
        (134, 2),  # 2 x 67
        (135, 3),
    ],
)
def test_ucs2_part_counts(length, parts):
    text = "ạ" * length
    assert analyse(text) == SmsInfo(UCS2, length, parts)
    assert len(split(text)) == parts


def test_ucs2_parts_hold_67_units():
    assert [len(p) for p in split("ư" * 135)] == [67, 67, 1]
    # GSM letters inside a UCS-2 text cost one unit like any BMP character: 1 + 69 = 70.
    assert analyse("ư" + "a" * 69) == SmsInfo(UCS2, 70, 1)
    assert analyse("ư" + "a" * 70) == SmsInfo(UCS2, 71, 2)


def test_emoji_counts_two_units():
    assert analyse(MASK) == SmsInfo(UCS2, 2, 1)
    assert analyse("Hello " + MASK) == SmsInfo(UCS2, 8, 1)  # 6 + 2, and UCS-2 for all of it
    assert analyse(MASK * 35) == SmsInfo(UCS2, 70, 1)  # 35 x 2 = 70
    # 72 units: 2 parts; a 67-unit part takes 33 emoji (66 units), the 34th would need 67-68.
    assert analyse(MASK * 36) == SmsInfo(UCS2, 72, 2)
    assert [len(p) for p in split(MASK * 36)] == [33, 3]


def test_surrogate_pair_at_a_part_boundary_moves_whole():
    # 66 + 2 + 5 = 73 units > 70. The emoji would occupy units 67 and 68 of part 1.
    text = "ạ" * 66 + MASK + "ạ" * 5
    assert analyse(text) == SmsInfo(UCS2, 73, 2)
    first, second = split(text)
    assert first == "ạ" * 66
    assert second == MASK + "ạ" * 5
    assert len(encode_ucs2(first)) == 66 * 2


def test_surrogate_pair_at_boundary_can_add_a_part():
    # 66 + 2 + 66 = 134 units, ceil(134 / 67) = 2, yet 3 parts: 66 | emoji + 65 = 67 | 1.
    text = "ạ" * 66 + MASK + "ạ" * 66
    assert analyse(text) == SmsInfo(UCS2, 134, 3)
    assert split(text) == ["ạ" * 66, MASK + "ạ" * 65, "ạ"]


def test_empty_text():
    assert analyse("") == SmsInfo(GSM7, 0, 1)
    assert split("") == [""]
    assert encode_gsm7("") == b""
    assert encode_ucs2("") == b""


def test_encoding_is_a_str_enum():
    assert analyse("hi").encoding == "gsm7"
    assert analyse("hí").encoding == "ucs2"


# --- encoders ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "expected"),
    [
        ("@", b"\x00"),
        ("£", b"\x01"),
        ("$", b"\x02"),
        ("¥", b"\x03"),
        ("è", b"\x04"),
        ("\n", b"\x0a"),
        ("Δ", b"\x10"),
        ("_", b"\x11"),
        (" ", b"\x20"),
        ("¤", b"\x24"),
        ("A", b"\x41"),
        ("¡", b"\x40"),
        ("ñ", b"\x7d"),
        ("à", b"\x7f"),
        ("€", b"\x1b\x65"),
        ("{", b"\x1b\x28"),
        ("\f", b"\x1b\x0a"),
    ],
)
def test_gsm7_codes_from_the_standard(char, expected):
    assert encode_gsm7(char) == expected
    assert encode_gsm7("x" + char) == b"\x78" + expected  # also off the single-character path


def test_every_gsm7_character_round_trips_to_its_code():
    for char, code in BASIC_CODE.items():
        assert encode_gsm7(char) == bytes([code]), (char, code)
        assert analyse(char) == SmsInfo(GSM7, 1, 1), char
    for char, code in EXTENSION_CODE.items():
        assert encode_gsm7(char) == bytes([0x1B, code]), (char, code)
        assert analyse(char) == SmsInfo(GSM7, 2, 1), char
    whole = "".join(BASIC_CODE)
    assert encode_gsm7(whole) == bytes(code for code in range(128) if code != 0x1B)


def test_greek_letters_are_the_greek_code_points():
    names = [unicodedata.name(chr(cp)) for cp in BASIC_CODE_POINTS[0x10:0x1B] if cp != 0x5F]
    assert all(name.startswith("GREEK CAPITAL LETTER") for name in names)


def test_encode_gsm7_names_the_first_non_gsm_character():
    with pytest.raises(ValueError, match=r"'ộ' \(U\+1ED9\) at position 1 "):
        encode_gsm7("Bộ Y tế")
    with pytest.raises(ValueError, match=r"'`' \(U\+0060\) at position 2 "):
        encode_gsm7("ab`c")
    with pytest.raises(ValueError, match="position 3"):
        encode_gsm7("€{}" + MASK)


def test_encode_ucs2_is_utf16_big_endian_with_surrogates():
    # ạ = U+1EA1. 😷 = U+1F637: 0x1F637 - 0x10000 = 0xF637 → D800 + 0x3D, DC00 + 0x237.
    assert encode_ucs2("ạ" + MASK) == b"\x1e\xa1\xd8\x3d\xde\x37"
    assert encode_ucs2("A") == b"\x00\x41"


# --- to_ascii ----------------------------------------------------------------------------------

VIETNAMESE_LOWER = (
    "áàảãạ" "ăắằẳẵặ" "âấầẩẫậ"
    "éèẻẽẹ" "êếềểễệ"
    "íìỉĩị"
    "óòỏõọ" "ôốồổỗộ" "ơớờởỡợ"
    "úùủũụ" "ưứừửữự"
    "ýỳỷỹỵ"
    "đ"
)  # fmt: skip
VIETNAMESE_LOWER_PLAIN = "a" * 17 + "e" * 11 + "i" * 5 + "o" * 17 + "u" * 11 + "y" * 5 + "d"


def test_to_ascii_strips_every_vietnamese_letter():
    assert len(VIETNAMESE_LOWER) == 67
    assert to_ascii(VIETNAMESE_LOWER) == VIETNAMESE_LOWER_PLAIN
    assert to_ascii(VIETNAMESE_LOWER.upper()) == VIETNAMESE_LOWER_PLAIN.upper()


def test_to_ascii_sentence_then_fits_gsm7():
    sentence = (
        "Bộ Y tế khuyến cáo: Đừng quên đeo khẩu trang, rửa tay thường xuyên, "
        "giữ khoảng cách và khai báo y tế. Đường dây nóng 19009095."
    )
    plain = (
        "Bo Y te khuyen cao: Dung quen deo khau trang, rua tay thuong xuyen, "
        "giu khoang cach va khai bao y te. Duong day nong 19009095."
    )
    assert analyse(sentence).encoding is UCS2
    assert analyse(sentence).parts == 2  # 68 + 58 = 126 UCS-2 units > 70, ≤ 134
    assert to_ascii(sentence) == plain
    assert analyse(plain) == SmsInfo(GSM7, 126, 1)  # the same 126 characters: one SMS
    # Decomposed text (Unicode tổ hợp) strips the same way.
    assert to_ascii(unicodedata.normalize("NFD", sentence)) == plain


def test_to_ascii_leaves_what_is_not_vietnamese():
    # Emoji and CJK stay, so the message is still UCS-2; other GSM letters (ñ, Ç) stay too.
    assert to_ascii("Tiêm vắc-xin " + MASK) == "Tiem vac-xin " + MASK
    assert analyse(to_ascii("Tiêm vắc-xin " + MASK)).encoding is UCS2
    assert to_ascii("疫苗 Peña Ç") == "疫苗 Peña Ç"
    assert to_ascii("plain text {ok}") == "plain text {ok}"


# --- properties --------------------------------------------------------------------------------


def reference_split(text: str) -> tuple[Encoding, int, list[str]]:
    """Naive per-character reference: greedy parts, two-unit characters never split."""
    if all(char in GSM_CHARS for char in text):
        encoding, single, limit = GSM7, 160, 153
        cost = {char: 2 for char in EXTENSION_CODE}
    else:
        encoding, single, limit = UCS2, 70, 67
        cost = {char: 2 for char in text if ord(char) > 0xFFFF}
    units = sum(cost.get(char, 1) for char in text)
    if units <= single:
        return encoding, units, [text]
    parts, current, used = [], "", 0
    for char in text:
        if used + cost.get(char, 1) > limit:
            parts.append(current)
            current, used = "", 0
        current += char
        used += cost.get(char, 1)
    parts.append(current)
    return encoding, units, parts


@pytest.mark.parametrize(
    ("filler", "runs", "pairs", "tails"),
    [
        ("a", range(145, 161), ["€", "€€", "{a}", "€" * 5], range(140, 161)),
        ("ạ", range(58, 71), [MASK, MASK * 2, MASK + "a" + MASK, MASK * 5], range(58, 71)),
    ],
    ids=["gsm7", "ucs2"],
)
def test_every_boundary_position_against_the_reference(filler, runs, pairs, tails):
    # Every placement of two-unit characters around the first boundary, with a tail that fills
    # the second part: where the part count exceeds ceil(units / part size) is among them.
    for run in runs:
        for pair in pairs:
            for tail in tails:
                text = filler * run + pair + filler * tail
                encoding, units, expected = reference_split(text)
                assert split(text) == expected, (run, pair, tail)
                assert analyse(text) == SmsInfo(encoding, units, len(expected)), (run, pair, tail)


POOL = (
    list("abcxyz 0123.,!?@$_\n")
    + list(EXTENSION_CODE)
    + list("éÇΔñà£¤§")
    + list("ạếơưđĐ")
    + [MASK, "\U0001f489", "疫", "`", "\t"]
)
long_texts = st.lists(st.sampled_from(POOL), max_size=700).map("".join)
# Mostly plain GSM with a few rare characters, so the GSM-7 boundaries are actually exercised.
mostly_gsm = st.lists(
    st.one_of(st.just("a"), st.just("a"), st.just("a"), st.sampled_from(POOL)), max_size=700
).map("".join)
GSM_POOL = [char for char in POOL if char in GSM_CHARS]
# A run that ends near a part boundary (153 septets, 67 units), then a few two-unit characters
# and a tail long enough to fill the next part, where a misplaced boundary would overflow.
gsm7_boundary = st.builds(
    lambda run, pairs, tail: "a" * run + pairs + tail,
    st.integers(148, 155),
    st.lists(st.sampled_from(list(EXTENSION_CODE)), min_size=1, max_size=4).map("".join),
    st.text(alphabet=st.sampled_from(GSM_POOL), min_size=140, max_size=320),
)
ucs2_boundary = st.builds(
    lambda run, pairs, tail: "ạ" * run + pairs + tail,
    st.integers(62, 69),
    st.lists(st.sampled_from([MASK, "\U0001f489"]), min_size=1, max_size=4).map("".join),
    st.text(alphabet=st.sampled_from(POOL), min_size=60, max_size=150),
)
any_text = st.one_of(long_texts, mostly_gsm, gsm7_boundary, ucs2_boundary, st.text(max_size=400))


@settings(max_examples=400, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_text)
def test_split_and_analyse_agree_with_the_reference(text):
    info = analyse(text)
    parts = split(text)
    encoding, units, expected = reference_split(text)
    assert "".join(parts) == text
    assert len(parts) == info.parts
    assert parts == expected
    assert info == SmsInfo(encoding, units, len(expected))
    if info.encoding is GSM7:
        assert len(encode_gsm7(text)) == info.units
        limit = 160 if info.parts == 1 else 153
        assert all(len(encode_gsm7(part)) <= limit for part in parts)
    else:
        assert len(encode_ucs2(text)) == 2 * info.units
        limit = 70 if info.parts == 1 else 67
        assert all(len(encode_ucs2(part)) <= 2 * limit for part in parts)
        with pytest.raises(ValueError, match=r"not in the GSM 03\.38 alphabet"):
            encode_gsm7(text)


@settings(max_examples=200, database=None)
@given(st.text(max_size=200))
def test_to_ascii_only_touches_vietnamese(text):
    text = "".join(char for char in text if char not in PUNCTUATION)  # those have their test
    plain = to_ascii(text)
    vietnamese = set(VIETNAMESE_LOWER + VIETNAMESE_LOWER.upper())
    marks = set("\u0300\u0301\u0303\u0309\u0323\u0302\u0306\u031b")
    kept = "".join(char for char in text if char not in marks)
    assert len(plain) == len(kept)
    for before, after in zip(kept, plain, strict=True):
        assert after == before or (before in vietnamese and after.isascii())


def test_to_ascii_plain_punctuation_keeps_gsm7():
    pasted = "\u201cChú ý\u201d \u2013 tiêm đủ liều\u2026\u00a0Bộ Y tế"
    plain = to_ascii(pasted)
    assert plain == '"Chu y" - tiem du lieu... Bo Y te'
    assert analyse(plain).encoding is Encoding.GSM7
