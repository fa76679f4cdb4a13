"""Phone normalisation: Vietnamese spellings, the 2018 prefixes, refusals, foreign numbers."""

from __future__ import annotations

import phonenumbers
import pytest

from loa.errors import InvalidPhone
from loa.phone import MOBILE_PREFIXES, OLD_PREFIXES, normalize

E164 = "+84912345678"
FULL_WIDTH = "".join(chr(0xFF10 + int(digit)) for digit in "0912345678")  # full-width digits


@pytest.mark.parametrize(
    "raw",
    [
        "0912345678",
        "84912345678",
        "+84912345678",
        "+84 912 345 678",
        "0912.345.678",
        "0912-345-678",
        "(+84) 912345678",
        "0084912345678",
        "0084 912 345 678",
        " 0912 345 678 ",
        "0912\u00a0345\u00a0678",  # no-break spaces from a spreadsheet
        "0912\t345678",
        "(091) 234-5678",
        "+84 0912 345 678",  # trunk zero kept after the country code
        "840912345678",
        "912345678",  # a spreadsheet dropped the leading zero
    ],
)
def test_every_spelling_gives_the_same_e164(raw: str) -> None:
    assert normalize(raw) == E164


# (old 11-digit prefix, new 10-digit prefix): the 2018 conversion table.
CONVERSIONS = sorted(("0" + old, "0" + new) for old, new in OLD_PREFIXES.items())


def test_the_conversion_table_is_the_2018_one() -> None:
    assert dict(CONVERSIONS) == {
        **{f"016{d}": f"03{d}" for d in range(2, 10)},  # Viettel
        **{"0120": "070", "0121": "079", "0122": "077", "0126": "076", "0128": "078"},
        **{"0123": "083", "0124": "084", "0125": "085", "0127": "081", "0129": "082"},
        **{"0186": "056", "0188": "058", "0199": "059"},
    }


@pytest.mark.parametrize(("old", "new"), CONVERSIONS, ids=[old for old, _ in CONVERSIONS])
def test_old_prefix_maps_to_its_new_prefix(old: str, new: str) -> None:
    expected = "+84" + new[1:] + "4567890"
    assert normalize(old + "4567890") == expected
    assert normalize(f"{old} 456 7890") == expected
    assert normalize("84" + old[1:] + "4567890") == expected
    assert normalize("+84 " + old[1:] + "4567890") == expected
    # The new number is one phonenumbers knows as a valid mobile.
    parsed = phonenumbers.parse(expected)
    assert phonenumbers.is_valid_number(parsed)
    assert phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE


@pytest.mark.parametrize("prefix", sorted(MOBILE_PREFIXES))
def test_every_fast_path_prefix_is_a_mobile_range(prefix: str) -> None:
    # Some 3-digit blocks are only partly allocated (0522, 0559, 0896…); one valid number will do.
    samples = [f"+84{prefix}{d}234567" for d in range(10)]
    assert any(phonenumbers.is_valid_number(phonenumbers.parse(s)) for s in samples)
    assert normalize(f"0{prefix}1234567") == f"+84{prefix}1234567"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("\t\u00a0", "empty"),
        ("+", "too short"),
        ("nan", "letters in number"),
        ("NaN", "letters in number"),
        ("None", "letters in number"),
        ("0912abc678", "letters in number"),
        ("0912 345 678 ext 12", "letters in number"),
        ("=1+1", "unexpected characters"),
        ("=HYPERLINK(0912345678)", "letters in number"),
        ("0912/345/678", "unexpected characters"),
        ("+84+912345678", "unexpected characters"),
        (FULL_WIDTH, "unexpected characters"),
        ("0912", "too short"),
        ("091234567", "too short"),
        ("+8491234567", "too short"),
        ("09123456789", "too long"),
        ("+849123456789", "too long"),
        ("02412345678", "not a mobile number"),  # Hanoi landline
        ("024 3825 1234", "not a mobile number"),
        ("+84 28 3822 1234", "not a mobile number"),  # Ho Chi Minh City landline
        ("01301234567", "not a Vietnamese mobile prefix"),  # 013x was never a mobile prefix
        ("01991234", "too short"),
        ("0111234567", "not a Vietnamese mobile prefix"),
        ("0401234567", "not a Vietnamese mobile prefix"),
        ("0612345678", "not a Vietnamese mobile prefix"),
        ("12025550123", "no country code and not a Vietnamese number"),
        ("9" * 40, "no country code and not a Vietnamese number"),
        ("x" * 1000, "too long"),
        ("0912345678" * 100, "too long"),
    ],
)
def test_invalid_numbers_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as caught:
        normalize(raw)
    message = str(caught.value)
    assert message == reason
    # Reasons go to reports and logs: not one digit of the input may appear in them.
    assert not any(char.isdigit() for char in message)


def test_invalid_phone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="letters"):
        normalize("nan")


def test_a_range_newer_than_the_fast_path_goes_to_phonenumbers() -> None:
    # 030 is in phonenumbers' mobile metadata but not in MOBILE_PREFIXES: the fallback decides.
    assert "30" not in MOBILE_PREFIXES
    known = phonenumbers.is_valid_number(phonenumbers.parse("+84301234567"))
    if known:
        assert normalize("030 123 4567") == "+84301234567"
    else:
        with pytest.raises(InvalidPhone, match="not a Vietnamese mobile prefix"):
            normalize("030 123 4567")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+66 81 234 5678", "+66812345678"),  # Thailand mobile
        ("+66812345678", "+66812345678"),
        ("+1 650-253-0000", "+16502530000"),  # United States
        ("+1 (650) 253 0000", "+16502530000"),
        ("+44 7400 123456", "+447400123456"),  # United Kingdom mobile
        ("0044 7400 123456", "+447400123456"),
        ("+33 6 12 34 56 78", "+33612345678"),
    ],
)
def test_foreign_numbers_go_through_phonenumbers(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+66 12", "too short"),
        ("+1 123 456 7890", "not a valid number for its country"),  # no area code 123
        ("+44 7400 1234567890", "too long"),
        ("+999 123 456", "unknown country code"),
        ("00999123456", "unknown country code"),
    ],
)
def test_invalid_foreign_numbers_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as caught:
        normalize(raw)
    assert str(caught.value) == reason
    assert not any(char.isdigit() for char in str(caught.value))


def test_another_default_region_reads_national_numbers_there() -> None:
    assert normalize("081 234 5678", default_region="TH") == "+66812345678"
    assert normalize("(650) 253-0000", default_region="US") == "+16502530000"
    # An explicit +84 is Vietnamese whatever the default region.
    assert normalize("+84 912 345 678", default_region="TH") == E164
    with pytest.raises(InvalidPhone):
        normalize("12", default_region="TH")


def test_a_vietnamese_number_from_another_region_still_needs_to_be_a_mobile() -> None:
    # From the US, 011 is the international prefix: phonenumbers finds +84, our rules apply.
    assert normalize("011 84 912 345 678", default_region="US") == E164
    with pytest.raises(InvalidPhone, match="not a mobile number"):
        normalize("011 84 24 3825 1234", default_region="US")


def test_fast_path_agrees_with_phonenumbers_on_typical_numbers() -> None:
    for prefix in sorted(MOBILE_PREFIXES - {"52", "55", "89", "99"}):  # partly allocated blocks
        for raw in (f"0{prefix}2345678", f"+84 {prefix} 234 5678"):
            parsed = phonenumbers.parse(raw, "VN")
            expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            assert normalize(raw) == expected
