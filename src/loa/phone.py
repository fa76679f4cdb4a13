"""Phone numbers to E.164: pure Python for Vietnamese mobiles, phonenumbers for everything else.

Audience files hold numbers as people type them: `0912 345 678`, `+84 912.345.678`,
`(+84) 912345678`, `0084912345678`, an 11-digit number from before the 2018 conversion, or a
spreadsheet cell that lost its leading zero. Nearly all of them are Vietnamese mobiles, so those
are recognised with a few string operations and one set look-up (over a million a second); only
foreign numbers, and Vietnamese ones outside the known mobile prefixes, pay for phonenumbers.

Every refusal is an InvalidPhone whose message is a short reason ("too short", "letters in
number"), never the number itself: reasons end up in row reports and logs, and numbers must not
(invariant 7 of DESIGN.md).
"""

from __future__ import annotations

import phonenumbers

from loa.errors import InvalidPhone

# The two digits after the trunk 0 (or after +84) of every Vietnamese mobile range in use:
# Viettel 86, 96-98, 32-39; Vinaphone 88, 91, 94, 81-85; MobiFone 89, 90, 93, 70, 76-79;
# Vietnamobile 92, 52, 56, 58; Gmobile 99, 59; iTel 87; Reddi 55; 95 (the old S-Fone range,
# still valid mobile in libphonenumber). Cross-checked with phonenumbers' VN metadata.
MOBILE_PREFIXES: frozenset[str] = frozenset(
    [f"3{d}" for d in range(2, 10)]
    + ["52", "55", "56", "58", "59"]
    + ["70", "76", "77", "78", "79"]
    + [f"8{d}" for d in range(1, 10)]
    + [f"9{d}" for d in range(10)]
)

# The 2018 conversion of 11-digit mobiles (MIC decision 798/QD-BTTTT, 15 Sep 2018): the three
# digits after the trunk 0 become two, the last seven digits stay. People still write the old
# numbers in forms and spreadsheets.
OLD_PREFIXES: dict[str, str] = {
    # Viettel
    "162": "32",
    "163": "33",
    "164": "34",
    "165": "35",
    "166": "36",
    "167": "37",
    "168": "38",
    "169": "39",
    # MobiFone
    "120": "70",
    "121": "79",
    "122": "77",
    "126": "76",
    "128": "78",
    # Vinaphone
    "123": "83",
    "124": "84",
    "125": "85",
    "127": "81",
    "129": "82",
    # Vietnamobile
    "186": "56",
    "188": "58",
    # Gmobile
    "199": "59",
}

# First digits of the mobile blocks: a 9-digit number there with a prefix missing from
# MOBILE_PREFIXES may be a range allocated after this table was written, so phonenumbers decides.
_MOBILE_BLOCKS = frozenset("35789")

# Separators people put in numbers (other whitespace is rarer and handled apart).
_SEPARATORS = (" ", ".", "-", "(", ")")

# Longer input is junk: refuse it before doing any work on it.
_MAX_INPUT = 64

_POSSIBLE_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}

_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


def normalize(raw: str, default_region: str = "VN") -> str:
    """Return `raw` as an E.164 number (`+84912345678`) or raise InvalidPhone with a reason.

    A number without a country code is read as a number of `default_region`; for Vietnam only
    mobiles are accepted (landlines cannot receive SMS or Zalo messages).
    """
    if len(raw) > _MAX_INPUT:
        raise InvalidPhone("too long")
    # The common cases, bare digits or already E.164-shaped, skip the separator scan.
    plain = raw.isascii() and (raw.isdigit() or (raw[:1] == "+" and raw[1:].isdigit()))
    text = raw if plain else _clean(raw)
    if default_region == "VN":
        # The commonest spellings, inline: a function call costs as much as these checks.
        length = len(text)
        if length == 10 and text[0] == "0" and text[1:3] in MOBILE_PREFIXES:
            return "+84" + text[1:]
        if length == 12 and text[:3] == "+84" and text[3:5] in MOBILE_PREFIXES:
            return text
        if length == 11 and text[:2] == "84" and text[2:4] in MOBILE_PREFIXES:
            return "+" + text
    if text[0] == "+":
        return _international(text[1:])
    if default_region != "VN":
        return _foreign(text, default_region)
    if text.startswith("00"):  # Vietnam's international prefix
        return _international(text[2:])
    return _vietnamese(_national(text))


def _clean(raw: str) -> str:
    """Drop separators; refuse what is left unless it is digits with at most a leading plus."""
    text = raw
    for separator in _SEPARATORS:
        if separator in text:
            text = text.replace(separator, "")
    if not (text.isascii() and text.isprintable()):
        text = "".join(text.split())  # tabs, line breaks, no-break spaces: the rarer whitespace
    if not text:
        raise InvalidPhone("empty")
    digits = text[1:] if text[0] == "+" else text
    if not digits:
        raise InvalidPhone("too short")
    if not (digits.isascii() and digits.isdigit()):
        # isdigit alone would accept other scripts' digits and superscripts.
        letters = any(char.isalpha() for char in digits)
        raise InvalidPhone("letters in number" if letters else "unexpected characters")
    return text


def _international(digits: str) -> str:
    """Digits after `+` or `00`: Vietnam takes the fast path, every other country phonenumbers."""
    if digits.startswith("84"):
        return _vietnamese(_drop_trunk(digits[2:]))
    return _foreign("+" + digits, None)


def _national(digits: str) -> str:
    """The national significant number of a Vietnamese number written without a plus."""
    if digits[0] == "0":
        return digits[1:]
    if digits.startswith("84") and len(digits) >= 11:  # 84 + 9 digits, or + 10 old ones
        return _drop_trunk(digits[2:])
    if len(digits) > 10:
        raise InvalidPhone("no country code and not a Vietnamese number")
    return digits  # a spreadsheet dropped the leading zero


def _drop_trunk(national: str) -> str:
    """People often keep the trunk zero after the country code (`+84 0912…`): drop it."""
    return national[1:] if national[:1] == "0" else national


def _vietnamese(national: str) -> str:
    """E.164 for a Vietnamese national significant number, or InvalidPhone saying why not."""
    if len(national) == 9 and national[:2] in MOBILE_PREFIXES:
        return "+84" + national
    return _vietnamese_uncommon(national)


def _vietnamese_uncommon(national: str) -> str:
    """Everything off the fast path: old 11-digit numbers, landlines, new ranges and mistakes."""
    length = len(national)
    if national[:1] == "2":
        raise InvalidPhone("not a mobile number")  # landlines are 02x since 2017
    if length == 10 and national[0] == "1":
        new = OLD_PREFIXES.get(national[:3])
        if new is None:
            raise InvalidPhone("not a Vietnamese mobile prefix")
        return "+84" + new + national[3:]
    if length < 9:
        raise InvalidPhone("too short")
    if length > 9:
        raise InvalidPhone("too long")
    if national[0] in _MOBILE_BLOCKS and _is_mobile("+84" + national):
        return "+84" + national
    raise InvalidPhone("not a Vietnamese mobile prefix")


def _is_mobile(e164: str) -> bool:
    """Whether phonenumbers' metadata knows `e164` as a valid mobile number."""
    number = phonenumbers.parse(e164, None)
    kind = phonenumbers.number_type(number)
    mobile = kind in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )
    return mobile and phonenumbers.is_valid_number(number)


def _foreign(text: str, region: str | None) -> str:
    """Validate and format any number with phonenumbers (a foreign one, or a non-VN default)."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        # Our own reason: the library's message is not ours to promise free of digits.
        raise InvalidPhone(_PARSE_REASONS.get(exc.error_type, "not a phone number")) from None
    if number.country_code == 84:  # a Vietnamese number reached through another default region
        return _vietnamese(str(number.national_number))
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        raise InvalidPhone(_POSSIBLE_REASONS.get(possible, "not a valid number for its country"))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def canonical(address: str) -> str:
    """A phone number as E.164, an e-mail address lower-cased, any other id as it is."""
    text = address.strip()
    if "@" in text:
        return text.lower()
    try:
        return normalize(text)
    except InvalidPhone:
        if any(c.isdigit() for c in text) and not any(c.isalpha() for c in text):
            raise  # looks like a phone number but is not one: say so rather than store junk
        return text  # a Zalo id or push token
