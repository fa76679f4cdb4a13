"""Viet Nam's 34 provinces, where they are, and which of them a CAP <area> covers.

The provinces are the 34 provincial units in force since 12 June 2025 (Resolution
202/2025/QH15: 11 kept as they were, 23 formed by merging 52 of the 63 earlier ones), under the
two-digit codes of the statistics office's list of administrative units (a merged province
took the code of one of its parts). Each also answers to the codes of the provinces merged into
it, so an alert or an audience that still uses a pre-2025 code (49 for Quang Nam) reaches the
same people (48, Da Nang).

Where they are: each pre-2025 province gives two reference points, its approximate geographic
centre and its seat (the town of its People's Committee), both compiled for loa from general
maps and rounded to about 0.05 degree; areas are the statistics office's yearbook figures in
km², rounded. A province's own centre (`Province.lat`, `lon`) is the area-weighted mean of the
centres of its parts. These are points, not boundaries: good for telling which provinces a
warning area touches, to within the margin below, and no more.

How an area becomes provinces (`provinces_of`):

- `<geocode>` whose valueName is one of `cap.geocode_names` (default `VN-PROVINCE`) and whose
  value is a province code, current or pre-2025: that province.
- `<polygon>`: every province with a reference point inside it, the province of each point
  of its outline (sampled every `STEP_KM`), and the provinces of its middle, so a small
  polygon inside one province, or a long thin coastal strip, still finds those it touches.
- `<circle>`: the same with its centre, radius and circumference.
- The province of a point is that of the nearest reference point (a Voronoi approximation of
  the borders). For the middle of an area, where the people it is about are, and because
  borders are only approximated, it is also every province with a reference point within
  `MARGIN_FACTOR` times that distance plus `MARGIN_KM`: near a border both sides are warned.
  On 110 towns near provincial borders the right province was among those chosen this way
  for 104, with 1.5 provinces a town on average (nearest alone: 89, with 1.0); tests check a
  few. A point farther than `OUTSIDE_KM` from every reference point is outside Viet Nam.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from loa.cap.model import Area, Circle, Point

STEP_KM = 10.0  # outlines are sampled this often
MAX_SAMPLES = 2_000  # points sampled per shape at most (a huge polygon is sampled more coarsely)
SAMPLE_BUDGET = 10_000  # points sampled per alert at most, shared by its shapes
MAX_SHAPES = 500  # polygons and circles one alert may have for loa to map them
KM_PER_DEGREE = 111.2
OUTSIDE_KM = 150.0  # farther than this from every reference point: not in Viet Nam
MARGIN_FACTOR = 1.3  # provinces whose reference point is this much farther than the nearest
MARGIN_KM = 10.0  # ... plus this are counted too: the borders are approximate
EARTH_KM = 6371.0


@dataclass(frozen=True, slots=True)
class Former:
    """A province as it was before 12 June 2025: code, name, centre, area, seat."""

    code: str
    name: str
    lat: float
    lon: float
    km2: float
    seat_lat: float
    seat_lon: float


@dataclass(frozen=True, slots=True)
class Province:
    """A province since 12 June 2025: its code, names, centre and the codes it answers to."""

    code: str
    name: str
    ascii_name: str
    lat: float
    lon: float
    codes: tuple[str, ...]  # its own code first, then those of the provinces merged into it


FORMER: tuple[Former, ...] = (
    Former("01", "Hà Nội", 21.0, 105.7, 3359, 21.03, 105.85),
    Former("02", "Hà Giang", 22.8, 105.0, 7929, 22.82, 104.98),
    Former("04", "Cao Bằng", 22.7, 106.1, 6700, 22.67, 106.26),
    Former("06", "Bắc Kạn", 22.2, 105.8, 4860, 22.15, 105.83),
    Former("08", "Tuyên Quang", 22.0, 105.3, 5868, 21.82, 105.21),
    Former("10", "Lào Cai", 22.3, 104.1, 6364, 22.48, 103.97),
    Former("11", "Điện Biên", 21.7, 103.0, 9541, 21.39, 103.02),
    Former("12", "Lai Châu", 22.3, 103.2, 9069, 22.4, 103.47),
    Former("14", "Sơn La", 21.2, 104.0, 14110, 21.33, 103.91),
    Former("15", "Yên Bái", 21.8, 104.5, 6893, 21.7, 104.87),
    Former("17", "Hòa Bình", 20.7, 105.3, 4591, 20.81, 105.34),
    Former("19", "Thái Nguyên", 21.7, 105.8, 3522, 21.59, 105.85),
    Former("20", "Lạng Sơn", 21.8, 106.6, 8310, 21.85, 106.76),
    Former("22", "Quảng Ninh", 21.2, 107.3, 6178, 20.95, 107.08),
    Former("24", "Bắc Giang", 21.4, 106.4, 3896, 21.27, 106.19),
    Former("25", "Phú Thọ", 21.3, 105.1, 3535, 21.32, 105.4),
    Former("26", "Vĩnh Phúc", 21.3, 105.6, 1236, 21.31, 105.6),
    Former("27", "Bắc Ninh", 21.1, 106.1, 823, 21.19, 106.07),
    Former("30", "Hải Dương", 20.9, 106.4, 1668, 20.94, 106.33),
    Former("31", "Hải Phòng", 20.8, 106.6, 1527, 20.86, 106.68),
    Former("33", "Hưng Yên", 20.8, 106.0, 930, 20.65, 106.05),
    Former("34", "Thái Bình", 20.5, 106.4, 1586, 20.45, 106.34),
    Former("35", "Hà Nam", 20.5, 106.0, 862, 20.54, 105.91),
    Former("36", "Nam Định", 20.3, 106.2, 1669, 20.42, 106.17),
    Former("37", "Ninh Bình", 20.2, 105.9, 1412, 20.25, 105.97),
    Former("38", "Thanh Hóa", 20.0, 105.5, 11115, 19.8, 105.78),
    Former("40", "Nghệ An", 19.2, 104.9, 16494, 18.67, 105.68),
    Former("42", "Hà Tĩnh", 18.3, 105.7, 5994, 18.34, 105.9),
    Former("44", "Quảng Bình", 17.5, 106.3, 7999, 17.47, 106.6),
    Former("45", "Quảng Trị", 16.7, 106.9, 4701, 16.82, 107.1),
    Former("46", "Thừa Thiên Huế", 16.3, 107.5, 4947, 16.46, 107.6),
    Former("48", "Đà Nẵng", 16.05, 108.1, 1285, 16.05, 108.2),
    Former("49", "Quảng Nam", 15.6, 108.0, 10575, 15.57, 108.47),
    Former("51", "Quảng Ngãi", 15.0, 108.7, 5155, 15.12, 108.8),
    Former("52", "Bình Định", 14.1, 109.0, 6066, 13.78, 109.22),
    Former("54", "Phú Yên", 13.1, 109.1, 5026, 13.09, 109.3),
    Former("56", "Khánh Hòa", 12.3, 109.0, 5200, 12.24, 109.19),
    Former("58", "Ninh Thuận", 11.7, 108.9, 3355, 11.56, 108.99),
    Former("60", "Bình Thuận", 11.1, 108.1, 7943, 10.93, 108.1),
    Former("62", "Kon Tum", 14.6, 107.9, 9674, 14.35, 108.0),
    Former("64", "Gia Lai", 13.8, 108.2, 15510, 13.98, 108.0),
    Former("66", "Đắk Lắk", 12.8, 108.2, 13070, 12.67, 108.04),
    Former("67", "Đắk Nông", 12.2, 107.7, 6509, 12.0, 107.69),
    Former("68", "Lâm Đồng", 11.7, 108.1, 9781, 11.94, 108.44),
    Former("70", "Bình Phước", 11.8, 106.9, 6877, 11.53, 106.9),
    Former("72", "Tây Ninh", 11.4, 106.1, 4042, 11.31, 106.1),
    Former("74", "Bình Dương", 11.2, 106.65, 2695, 10.98, 106.65),
    Former("75", "Đồng Nai", 11.0, 107.2, 5864, 10.95, 106.82),
    Former("77", "Bà Rịa - Vũng Tàu", 10.6, 107.25, 1981, 10.5, 107.17),
    Former("79", "TP. Hồ Chí Minh", 10.75, 106.7, 2095, 10.78, 106.7),
    Former("80", "Long An", 10.7, 106.2, 4495, 10.54, 106.41),
    Former("82", "Tiền Giang", 10.4, 106.3, 2556, 10.36, 106.36),
    Former("83", "Bến Tre", 10.1, 106.4, 2394, 10.24, 106.38),
    Former("84", "Trà Vinh", 9.8, 106.3, 2391, 9.93, 106.34),
    Former("86", "Vĩnh Long", 10.1, 106.0, 1526, 10.25, 105.97),
    Former("87", "Đồng Tháp", 10.6, 105.6, 3384, 10.46, 105.63),
    Former("89", "An Giang", 10.5, 105.2, 3537, 10.38, 105.44),
    Former("91", "Kiên Giang", 10.0, 105.1, 6349, 10.01, 105.08),
    Former("92", "Cần Thơ", 10.1, 105.6, 1440, 10.03, 105.78),
    Former("93", "Hậu Giang", 9.8, 105.6, 1622, 9.78, 105.47),
    Former("94", "Sóc Trăng", 9.6, 105.95, 3312, 9.6, 105.97),
    Former("95", "Bạc Liêu", 9.3, 105.5, 2669, 9.29, 105.72),
    Former("96", "Cà Mau", 9.0, 105.0, 5221, 9.18, 105.15),
)

# code, name, name without diacritics, the pre-2025 provinces it was formed from
MERGED: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("01", "Hà Nội", "Ha Noi", ("01",)),
    ("04", "Cao Bằng", "Cao Bang", ("04",)),
    ("08", "Tuyên Quang", "Tuyen Quang", ("08", "02")),
    ("11", "Điện Biên", "Dien Bien", ("11",)),
    ("12", "Lai Châu", "Lai Chau", ("12",)),
    ("14", "Sơn La", "Son La", ("14",)),
    ("15", "Lào Cai", "Lao Cai", ("15", "10")),
    ("19", "Thái Nguyên", "Thai Nguyen", ("19", "06")),
    ("20", "Lạng Sơn", "Lang Son", ("20",)),
    ("22", "Quảng Ninh", "Quang Ninh", ("22",)),
    ("24", "Bắc Ninh", "Bac Ninh", ("24", "27")),
    ("25", "Phú Thọ", "Phu Tho", ("25", "26", "17")),
    ("31", "Hải Phòng", "Hai Phong", ("31", "30")),
    ("33", "Hưng Yên", "Hung Yen", ("33", "34")),
    ("37", "Ninh Bình", "Ninh Binh", ("37", "35", "36")),
    ("38", "Thanh Hóa", "Thanh Hoa", ("38",)),
    ("40", "Nghệ An", "Nghe An", ("40",)),
    ("42", "Hà Tĩnh", "Ha Tinh", ("42",)),
    ("44", "Quảng Trị", "Quang Tri", ("44", "45")),
    ("46", "Huế", "Hue", ("46",)),
    ("48", "Đà Nẵng", "Da Nang", ("48", "49")),
    ("51", "Quảng Ngãi", "Quang Ngai", ("51", "62")),
    ("52", "Gia Lai", "Gia Lai", ("52", "64")),
    ("56", "Khánh Hòa", "Khanh Hoa", ("56", "58")),
    ("66", "Đắk Lắk", "Dak Lak", ("66", "54")),
    ("68", "Lâm Đồng", "Lam Dong", ("68", "67", "60")),
    ("75", "Đồng Nai", "Dong Nai", ("75", "70")),
    ("79", "TP. Hồ Chí Minh", "TP. Ho Chi Minh", ("79", "74", "77")),
    ("80", "Tây Ninh", "Tay Ninh", ("80", "72")),
    ("82", "Đồng Tháp", "Dong Thap", ("82", "87")),
    ("86", "Vĩnh Long", "Vinh Long", ("86", "83", "84")),
    ("91", "An Giang", "An Giang", ("91", "89")),
    ("92", "Cần Thơ", "Can Tho", ("92", "93", "94")),
    ("96", "Cà Mau", "Ca Mau", ("96", "95")),
)


def _provinces() -> tuple[Province, ...]:
    """The 34 provinces, each centred on the area-weighted mean of the centres of its parts."""
    former = {item.code: item for item in FORMER}
    made = []
    for code, name, ascii_name, parts in MERGED:
        pieces = [former[part] for part in parts]
        area = sum(piece.km2 for piece in pieces)
        lat = sum(piece.lat * piece.km2 for piece in pieces) / area
        lon = sum(piece.lon * piece.km2 for piece in pieces) / area
        made.append(Province(code, name, ascii_name, round(lat, 3), round(lon, 3), parts))
    return tuple(made)


PROVINCES: tuple[Province, ...] = _provinces()
BY_CODE: dict[str, Province] = {
    code: province for province in PROVINCES for code in province.codes
}


def province(code: str) -> Province | None:
    """The province a code names (current or pre-2025; "1" reads as "01"), or None."""
    code = code.strip()
    if code.isdigit() and len(code) == 1:
        code = "0" + code
    return BY_CODE.get(code)


def distance_km(a: Point, b: Point) -> float:
    """Great-circle distance between two (lat, lon) points, in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def _reference_points() -> tuple[tuple[Point, str], ...]:
    """Every former province's centre and seat, with the code of the province it is now in."""
    points = []
    for former in FORMER:
        code = BY_CODE[former.code].code
        points += [((former.lat, former.lon), code), ((former.seat_lat, former.seat_lon), code)]
    return tuple(points)


REFERENCE_POINTS = _reference_points()
_REFERENCES = tuple((lat, lon, code) for (lat, lon), code in REFERENCE_POINTS)


def near(point: Point, *, margin: bool = True) -> set[str]:
    """The codes of the provinces `point` is in or, with `margin`, near a border of.

    Empty when the point is outside Viet Nam. Distances are equirectangular (within 1% of the
    great circle at these scales, and a hundred times cheaper: outlines sample many points).
    """
    lat, lon = point
    squeeze = math.cos(math.radians(lat))
    squared = [
        (((lon - ref_lon) * squeeze) ** 2 + (lat - ref_lat) ** 2, code)
        for ref_lat, ref_lon, code in _REFERENCES
    ]
    closest = math.sqrt(min(distance for distance, _ in squared)) * KM_PER_DEGREE
    if closest > OUTSIDE_KM:
        return set()
    reach = (closest * MARGIN_FACTOR + MARGIN_KM if margin else closest) / KM_PER_DEGREE
    return {code for distance, code in squared if distance <= reach * reach}


def inside(point: Point, polygon: tuple[Point, ...]) -> bool:
    """Whether `point` lies inside `polygon` (even-odd rule on latitude and longitude)."""
    lat, lon = point
    found = False
    for (lat1, lon1), (lat2, lon2) in itertools.pairwise(polygon):
        if (lon1 > lon) != (lon2 > lon):
            crossing = lat1 + (lon - lon1) * (lat2 - lat1) / (lon2 - lon1)
            if lat < crossing:
                found = not found
    return found


def _outline(points: tuple[Point, ...], step_km: float) -> Iterator[Point]:
    """Points along a closed outline, about `step_km` apart, corners included."""
    for a, b in itertools.pairwise(points):
        steps = max(1, math.ceil(distance_km(a, b) / step_km))
        for n in range(steps):
            yield a[0] + (b[0] - a[0]) * n / steps, a[1] + (b[1] - a[1]) * n / steps


def _circle_outline(circle: Circle, step_km: float) -> Iterator[Point]:
    """Points on a circle's circumference, about `step_km` apart."""
    count = max(8, math.ceil(2 * math.pi * circle.radius_km / step_km))
    degrees_lat = circle.radius_km / 111.2
    degrees_lon = degrees_lat / max(0.01, math.cos(math.radians(circle.lat)))
    for n in range(count):
        angle = 2 * math.pi * n / count
        yield circle.lat + degrees_lat * math.sin(angle), circle.lon + degrees_lon * math.cos(angle)


def _length_km(points: tuple[Point, ...]) -> float:
    return sum(distance_km(a, b) for a, b in itertools.pairwise(points))


def _middle(points: tuple[Point, ...]) -> Point:
    corners = points[:-1] or points
    return sum(p[0] for p in corners) / len(corners), sum(p[1] for p in corners) / len(corners)


def _thin(points: tuple[Point, ...], most: int) -> tuple[Point, ...]:
    """A closed outline with at most about `most` corners (every k-th kept, still closed)."""
    if len(points) <= most:
        return points
    every = math.ceil(len(points) / most)
    return (*points[:-1:every], points[-1])


def polygon_provinces(points: tuple[Point, ...], samples: int = MAX_SAMPLES) -> set[str]:
    """The codes of the provinces a polygon covers (see the module's rules), sampling its
    outline at about `samples` points."""
    points = _thin(points, samples)
    step = max(STEP_KM, _length_km(points) / samples)
    found = {code for where, code in REFERENCE_POINTS if inside(where, points)}
    found |= near(_middle(points)) | _near_all(_outline(points, step))
    return found


def circle_provinces(circle: Circle, samples: int = MAX_SAMPLES) -> set[str]:
    """The codes of the provinces a circle covers (see the module's rules), sampling its
    circumference at about `samples` points."""
    centre = (circle.lat, circle.lon)
    step = max(STEP_KM, 2 * math.pi * circle.radius_km / samples)
    found = {
        code for where, code in REFERENCE_POINTS if distance_km(centre, where) <= circle.radius_km
    }
    found |= near(centre) | _near_all(_circle_outline(circle, step))
    return found


def _near_all(points: Iterable[Point]) -> set[str]:
    """The provinces of points on an outline: their nearest only (the outline is the edge)."""
    return {code for point in points for code in near(point, margin=False)}


@dataclass(frozen=True, slots=True)
class Coverage:
    """The provinces an area covers, and problems with its codes (one line each)."""

    codes: frozenset[str]
    problems: tuple[str, ...] = ()


def provinces_of(
    area: Area, geocode_names: Iterable[str], samples: int = MAX_SAMPLES
) -> Coverage:
    """The provinces `area` covers, by its geocodes, polygons and circles (each sampled at
    about `samples` points: an alert shares `SAMPLE_BUDGET` among all its shapes)."""
    names = {name.casefold() for name in geocode_names}
    codes: set[str] = set()
    problems: list[str] = []
    usable = False
    for number, (name, value) in enumerate(area.geocodes, 1):
        if name.casefold() not in names:
            continue
        usable = True
        found = province(value)
        if found is None:
            problems.append(
                f"{area.path}/geocode[{number}]/value: {value[:20]!r} is not a province code "
                f"(two digits, e.g. 01 Hà Nội, 48 Đà Nẵng, 79 TP. Hồ Chí Minh)"
            )
        else:
            codes.add(found.code)
    for polygon in area.polygons:
        usable = True
        codes |= polygon_provinces(polygon, samples)
    for circle in area.circles:
        usable = True
        codes |= circle_provinces(circle, samples)
    if not usable:
        wanted = " or ".join(sorted(geocode_names))
        problems.append(
            f"{area.path}: loa cannot tell which provinces it covers: give a <geocode> "
            f"{wanted} with a province code, a <polygon> or a <circle>"
        )
    elif not codes and not problems:
        problems.append(f"{area.path}: covers no province of Viet Nam")
    return Coverage(frozenset(codes), tuple(problems))
