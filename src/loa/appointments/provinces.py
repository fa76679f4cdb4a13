"""The 34 provinces and centrally-run cities of Viet Nam since 12 June 2025, as sites name them.

A site's `province` and a registrant's preferred `province` are one of these codes, as the
statistics office lists them since July 2025. People and spreadsheets also write "1" for "01"
(a number column drops the zero) or the name, with or without diacritics; `province_code`
reads all of those and refuses anything else.
"""

from __future__ import annotations

import re

from loa.sms import to_ascii

# code -> name (Resolution 202/2025/QH15: 11 units kept as they were, 23 formed by merging)
PROVINCES: dict[str, str] = {
    "01": "Hà Nội",
    "04": "Cao Bằng",
    "08": "Tuyên Quang",
    "11": "Điện Biên",
    "12": "Lai Châu",
    "14": "Sơn La",
    "15": "Lào Cai",
    "19": "Thái Nguyên",
    "20": "Lạng Sơn",
    "22": "Quảng Ninh",
    "24": "Bắc Ninh",
    "25": "Phú Thọ",
    "31": "Hải Phòng",
    "33": "Hưng Yên",
    "37": "Ninh Bình",
    "38": "Thanh Hóa",
    "40": "Nghệ An",
    "42": "Hà Tĩnh",
    "44": "Quảng Trị",
    "46": "Huế",
    "48": "Đà Nẵng",
    "51": "Quảng Ngãi",
    "52": "Gia Lai",
    "56": "Khánh Hòa",
    "66": "Đắk Lắk",
    "68": "Lâm Đồng",
    "75": "Đồng Nai",
    "79": "TP. Hồ Chí Minh",
    "80": "Tây Ninh",
    "82": "Đồng Tháp",
    "86": "Vĩnh Long",
    "91": "An Giang",
    "92": "Cần Thơ",
    "96": "Cà Mau",
}

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def _key(name: str) -> str:
    """A name as people vary it: no diacritics, case, punctuation or "TP."/"Tinh" prefix."""
    words = _NOT_WORD.sub(" ", to_ascii(name).lower()).split()
    if words[:2] == ["thanh", "pho"]:
        words = words[2:]
    elif words[:1] in (["tp"], ["tinh"]):
        words = words[1:]
    return "".join(words)


_BY_NAME: dict[str, str] = {_key(name): code for code, name in PROVINCES.items()}
_BY_NAME["hcm"] = _BY_NAME["hcmc"] = _BY_NAME["saigon"] = "79"


def province_code(value: str) -> str | None:
    """The code of the province `value` names ("79", "1", "Hà Nội", "ha noi"), or None."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        code = text.zfill(2)
        return code if code in PROVINCES else None
    return _BY_NAME.get(_key(text)) if text else None
