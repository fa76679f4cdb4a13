"""The demo's Viet Nam: the 34 provinces after the 2025 merger, the carriers, people's names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Province:
    """A province or centrally-run city: its code (the audience's `region`), name, people."""

    code: str
    name: str
    ascii_name: str
    millions: float  # inhabitants, roughly: how much of the audience lives there


# The 34 provincial units in force since 12 June 2025 (Resolution 202/2025/QH15): 11 kept as
# they were, 23 formed by merging. Codes as the statistics office lists them since July 2025
# (a merged unit took the code of one of its parts: Lao Cai that of Yen Bai, where it sits).
PROVINCES: tuple[Province, ...] = (
    Province("01", "Hà Nội", "Ha Noi", 8.7),
    Province("04", "Cao Bằng", "Cao Bang", 0.56),
    Province("08", "Tuyên Quang", "Tuyen Quang", 1.9),
    Province("11", "Điện Biên", "Dien Bien", 0.64),
    Province("12", "Lai Châu", "Lai Chau", 0.49),
    Province("14", "Sơn La", "Son La", 1.3),
    Province("15", "Lào Cai", "Lao Cai", 1.8),
    Province("19", "Thái Nguyên", "Thai Nguyen", 1.8),
    Province("20", "Lạng Sơn", "Lang Son", 0.8),
    Province("22", "Quảng Ninh", "Quang Ninh", 1.4),
    Province("24", "Bắc Ninh", "Bac Ninh", 3.6),
    Province("25", "Phú Thọ", "Phu Tho", 4.0),
    Province("31", "Hải Phòng", "Hai Phong", 4.7),
    Province("33", "Hưng Yên", "Hung Yen", 3.6),
    Province("37", "Ninh Bình", "Ninh Binh", 4.4),
    Province("38", "Thanh Hóa", "Thanh Hoa", 3.7),
    Province("40", "Nghệ An", "Nghe An", 3.5),
    Province("42", "Hà Tĩnh", "Ha Tinh", 1.3),
    Province("44", "Quảng Trị", "Quang Tri", 1.9),
    Province("46", "Huế", "Hue", 1.2),
    Province("48", "Đà Nẵng", "Da Nang", 3.1),
    Province("51", "Quảng Ngãi", "Quang Ngai", 2.2),
    Province("52", "Gia Lai", "Gia Lai", 3.6),
    Province("56", "Khánh Hòa", "Khanh Hoa", 2.2),
    Province("66", "Đắk Lắk", "Dak Lak", 3.3),
    Province("68", "Lâm Đồng", "Lam Dong", 3.9),
    Province("75", "Đồng Nai", "Dong Nai", 4.5),
    Province("79", "TP. Hồ Chí Minh", "TP. Ho Chi Minh", 14.0),
    Province("80", "Tây Ninh", "Tay Ninh", 3.3),
    Province("82", "Đồng Tháp", "Dong Thap", 4.4),
    Province("86", "Vĩnh Long", "Vinh Long", 4.3),
    Province("91", "An Giang", "An Giang", 4.9),
    Province("92", "Cần Thơ", "Can Tho", 4.2),
    Province("96", "Cà Mau", "Ca Mau", 2.6),
)
EMERGENCY_PROVINCE = "48"  # Da Nang: the flood alert of the scenario


@dataclass(frozen=True, slots=True)
class Carrier:
    """A mobile operator, its number ranges and how its simulated SMSC behaves."""

    name: str  # as loa's carrier table names it
    label: str
    share: float  # of the audience's numbers
    prefixes: tuple[str, ...]
    route: str  # "" for an operator without a route of its own (it takes the default)
    receipt_delay: float = 1.0  # seconds from submit to delivery receipt
    undelivered: float = 0.02  # share of receipts that say UNDELIV
    expired: float = 0.0  # share of receipts that say EXPIRED (loa counts them undelivered)
    bad_destinations: float = 0.0  # share of numbers the SMSC refuses (ESME_RINVDSTADR)
    headroom: float = 1.25  # the SMSC's TPS cap over the rate loa is configured for


# Market shares and ranges as the prefix table of loa.campaigns.carriers has them; iTel and
# Gmobile have no SMSC here: their numbers take the default route (iTel runs on VinaPhone).
CARRIERS: tuple[Carrier, ...] = (
    Carrier(
        "viettel",
        "Viettel",
        0.53,
        ("086", "096", "097", "098", "032", "033", "034", "035", "036", "037", "038", "039"),
        "sms-viettel",
        receipt_delay=1.0,
        undelivered=0.02,
        expired=0.005,
        bad_destinations=0.0005,
    ),
    Carrier(
        "vinaphone",
        "VinaPhone",
        0.22,
        ("088", "091", "094", "081", "082", "083", "084", "085"),
        "sms-vinaphone",
        receipt_delay=1.5,
        undelivered=0.03,
        expired=0.01,
        bad_destinations=0.001,
    ),
    Carrier(
        "mobifone",
        "MobiFone",
        0.18,
        ("089", "090", "093", "070", "076", "077", "078", "079"),
        "sms-mobifone",
        receipt_delay=0.8,
        undelivered=0.025,
        bad_destinations=0.0005,
    ),
    Carrier(
        "vietnamobile",
        "Vietnamobile",
        0.05,
        ("092", "052", "056", "058"),
        "sms-vietnamobile",
        receipt_delay=2.5,
        undelivered=0.06,
        expired=0.02,
        bad_destinations=0.002,
        headroom=0.9,  # a carrier that grants less than loa was told: it answers THROTTLED
    ),
    Carrier("itel", "iTel", 0.01, ("087",), ""),
    Carrier("gmobile", "Gmobile", 0.01, ("099", "059"), ""),
)
DEFAULT_SMS_ROUTE = "sms-vinaphone"
SMS_ROUTES: tuple[str, ...] = tuple(c.route for c in CARRIERS if c.route)
ZALO_ROUTE = "zalo-zns"


def route_of(carrier: Carrier) -> str:
    """The SMS route that carries this operator's numbers."""
    return carrier.route or DEFAULT_SMS_ROUTE


FAMILY_NAMES = (
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Lý",
)
MIDDLE_NAMES = ("Văn", "Thị", "Minh", "Thu", "Đức", "Ngọc", "Quang", "Thanh", "Hữu", "Gia", "Bảo")
GIVEN_NAMES = (
    "An",
    "Bình",
    "Châu",
    "Dũng",
    "Giang",
    "Hà",
    "Hải",
    "Hạnh",
    "Hiếu",
    "Hoa",
    "Hùng",
    "Hương",
    "Khánh",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Nam",
    "Ngọc",
    "Phúc",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Vy",
    "Yến",
)
