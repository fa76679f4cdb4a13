"""Reading a CAP 1.2 alert safely, and checking it against the standard with every problem named.

Safety first: the document is at most `MAX_BYTES`, and it is parsed by defusedxml with DTDs
forbidden outright (CAP needs none), so no entity is ever declared, expanded or fetched: no
XXE, no "billion laughs". A refusal says what was refused, never what an entity pointed at.

Then the schema (OASIS CAP 1.2, its XSD and the rules of section 3): each element in its
place and order, required elements present and not empty, enumerations (`status`, `msgType`,
`scope`, `category`, `responseType`, `urgency`, `severity`, `certainty`), date-times in the
CAP form with an offset (`2026-11-22T14:30:00+07:00`; `Z` is not allowed), `references` for
an Update or a Cancel, `restriction` for Restricted and `addresses` for Private alerts,
closed polygons of four points or more, circles as `lat,lon radius`. Every problem is one line
that starts with the element's path: `alert/info[2]/urgency: 'Now' is not one of Immediate,
Expected, Future, Past, Unknown`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # the Element type only: parsing goes through defusedxml
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import defusedxml
import defusedxml.ElementTree

from loa.cap.model import (
    CATEGORIES,
    CERTAINTIES,
    DEFAULT_LANGUAGE,
    MSG_TYPES,
    NAMESPACE,
    RESPONSE_TYPES,
    SCOPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    Alert,
    Area,
    Circle,
    Info,
    Point,
    Reference,
)
from loa.errors import CapError

MAX_BYTES = 1 << 20  # an alert with a long description in five languages is well under this
MAX_PROBLEMS = 50  # a document wrong everywhere is told in this many lines
SIGNATURE_NS = "http://www.w3.org/2000/09/xmldsig#"
CAP_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{2}:\d{2}")
LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
NOT_IN_NAMES = re.compile(r"[\s,<&]")  # CAP 1.2: no spaces, commas or restricted characters
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")
TIME_HINT = "write it like 2026-11-22T14:30:00+07:00 (an offset is required; Z is not allowed)"


@dataclass(frozen=True, slots=True)
class Slot:
    """An element allowed inside another, in schema order."""

    name: str
    required: bool = False
    many: bool = False


ALERT = (
    Slot("identifier", True),
    Slot("sender", True),
    Slot("sent", True),
    Slot("status", True),
    Slot("msgType", True),
    Slot("source"),
    Slot("scope", True),
    Slot("restriction"),
    Slot("addresses"),
    Slot("code", many=True),
    Slot("note"),
    Slot("references"),
    Slot("incidents"),
    Slot("info", many=True),
)
INFO = (
    Slot("language"),
    Slot("category", True, many=True),
    Slot("event", True),
    Slot("responseType", many=True),
    Slot("urgency", True),
    Slot("severity", True),
    Slot("certainty", True),
    Slot("audience"),
    Slot("eventCode", many=True),
    Slot("effective"),
    Slot("onset"),
    Slot("expires"),
    Slot("senderName"),
    Slot("headline"),
    Slot("description"),
    Slot("instruction"),
    Slot("web"),
    Slot("contact"),
    Slot("parameter", many=True),
    Slot("resource", many=True),
    Slot("area", many=True),
)
PAIR = (Slot("valueName", True), Slot("value", True))
RESOURCE = (
    Slot("resourceDesc", True),
    Slot("mimeType", True),
    Slot("size"),
    Slot("uri"),
    Slot("derefUri"),
    Slot("digest"),
)
AREA = (
    Slot("areaDesc", True),
    Slot("polygon", many=True),
    Slot("circle", many=True),
    Slot("geocode", many=True),
    Slot("altitude"),
    Slot("ceiling"),
)

Found = dict[str, list[tuple[str, ET.Element]]]  # element name -> [(its path, the element)]


def parse_alert(data: bytes) -> Alert:
    """The alert in `data`, or CapError with one line per problem (element path and reason)."""
    root = _document(data)
    reader = _Reader()
    alert = reader.alert(root)
    if reader.problems or alert is None:
        raise CapError(reader.problems[:MAX_PROBLEMS] + _more(reader.problems))
    return alert


def _more(problems: Sequence[str]) -> list[str]:
    extra = len(problems) - MAX_PROBLEMS
    return [f"and {extra} more problems"] if extra > 0 else []


def _document(data: bytes) -> ET.Element:
    """The root element, parsed with DTDs and entities refused; CapError saying why not."""
    if len(data) > MAX_BYTES:
        raise CapError(
            [f"alert: the document has {len(data):,} bytes; an alert may have {MAX_BYTES:,}"],
            code="too_large",
            status=413,
        )
    if not data.strip():
        raise CapError(["alert: the document is empty"])
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        reason = "has a DOCTYPE (a DTD): refused, as CAP needs none and loa reads no entities"
        raise CapError([f"alert: the document {reason}"]) from None
    except defusedxml.EntitiesForbidden:
        raise CapError(["alert: the document declares entities: refused, unread"]) from None
    except defusedxml.ExternalReferenceForbidden:
        raise CapError(["alert: the document refers to an external resource: refused"]) from None
    except ET.ParseError as exc:  # expat says where, never what: nothing of the content
        raise CapError([f"alert: not well-formed XML ({exc})"]) from None
    namespace, name = _split(root.tag)
    if name != "alert":
        raise CapError([f"{name}: the root element must be <alert> (CAP 1.2)"])
    if namespace != NAMESPACE:
        given = f"namespace {_shown(namespace)}" if namespace else "no namespace"
        raise CapError([f"alert: {given}; a CAP 1.2 alert is in namespace {NAMESPACE}"])
    return root


def _split(tag: str) -> tuple[str, str]:
    """'{ns}name' -> ('ns', 'name')."""
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def _shown(value: str, limit: int = 40) -> str:
    """A value as an error quotes it: shortened, never more than a line."""
    value = " ".join(value.split())
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


class _Reader:
    """Walks the document once, collecting every problem rather than stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.signed = False

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(f"{path}: {reason}")

    # -- structure -------------------------------------------------------------------------

    def children(
        self, element: ET.Element, slots: Sequence[Slot], path: str, *, signature: bool = False
    ) -> Found:
        """The children of `element` by name, after checking names, order and counts."""
        order = {slot.name: index for index, slot in enumerate(slots)}
        found: Found = {slot.name: [] for slot in slots}
        latest = -1
        for child in element:  # the parser keeps no comments or processing instructions
            namespace, name = _split(child.tag)
            if signature and namespace == SIGNATURE_NS and name == "Signature":
                self.signed = True
                continue
            if namespace != NAMESPACE:
                where = f"namespace {_shown(namespace)}" if namespace else "no namespace"
                self.problem(f"{path}/{name}", f"is in {where}, not CAP 1.2's")
                continue
            position = order.get(name)
            if position is None:
                self.problem(f"{path}/{name}", "is not an element of CAP 1.2 here")
                continue
            slot = slots[position]
            items = found[name]
            child_path = f"{path}/{name}[{len(items) + 1}]" if slot.many else f"{path}/{name}"
            if items and not slot.many:
                self.problem(child_path, "appears more than once")
                continue
            if position < latest:
                self.problem(
                    child_path, f"is out of order: it comes before <{slots[latest].name}>"
                )
            latest = max(latest, position)
            items.append((child_path, child))
        for slot in slots:
            if slot.required and not found[slot.name]:
                name = f"{slot.name}[1]" if slot.many else slot.name
                self.problem(f"{path}/{name}", "is missing (required)")
        return found

    def text(self, found: Found, name: str, *, required: bool = False) -> str:
        """The text of the single element `name` ("" when absent)."""
        items = found[name]
        return self._text(*items[0], required=required) if items else ""

    def texts(self, found: Found, name: str) -> list[tuple[str, str]]:
        """(path, text) of every element `name`, in order."""
        return [(path, self._text(path, item, required=True)) for path, item in found[name]]

    def _text(self, path: str, element: ET.Element, *, required: bool) -> str:
        if len(element):
            self.problem(path, "has elements inside; expected text")
            return ""
        value = (element.text or "").strip()
        if required and not value:
            self.problem(path, "is empty")
        return value

    def choice(self, found: Found, name: str, allowed: Sequence[str], path: str) -> str:
        """A required enumerated value, checked."""
        value = self.text(found, name)
        if found[name] and value and value not in allowed:
            self.problem(f"{path}/{name}", f"{_shown(value)} is not one of {', '.join(allowed)}")
            return ""
        if found[name] and not value:
            self.problem(f"{path}/{name}", "is empty")
        return value

    def time(self, found: Found, name: str, path: str) -> datetime | None:
        """A CAP date-time (with its offset), or None when absent or wrong (a problem noted)."""
        value = self.text(found, name)
        if not value:
            if found[name]:
                self.problem(f"{path}/{name}", f"is empty; {TIME_HINT}")
            return None
        return self.moment(value, f"{path}/{name}")

    def moment(self, value: str, where: str) -> datetime | None:
        if not CAP_TIME.fullmatch(value):
            self.problem(where, f"{_shown(value)} is not a CAP date-time: {TIME_HINT}")
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.problem(where, f"{_shown(value)} is not a real date and time")
            return None

    def name(self, found: Found, name: str, path: str) -> str:
        """identifier or sender: required, and without spaces, commas, '<' or '&'."""
        value = self.text(found, name, required=bool(found[name]))
        if value and NOT_IN_NAMES.search(value):
            self.problem(
                f"{path}/{name}", "must not contain spaces, commas, '<' or '&' (CAP 1.2, 3.2.1)"
            )
        return value

    # -- the alert -------------------------------------------------------------------------

    def alert(self, root: ET.Element) -> Alert | None:
        path = "alert"
        found = self.children(root, ALERT, path, signature=True)
        identifier = self.name(found, "identifier", path)
        sender = self.name(found, "sender", path)
        sent = self.time(found, "sent", path)
        status = self.choice(found, "status", STATUSES, path)
        msg_type = self.choice(found, "msgType", MSG_TYPES, path)
        scope = self.choice(found, "scope", SCOPES, path)
        restriction = self.text(found, "restriction")
        addresses = self.text(found, "addresses")
        if scope == "Restricted" and not restriction:
            self.problem(f"{path}/restriction", "is required when scope is Restricted")
        if scope == "Private" and not addresses:
            self.problem(f"{path}/addresses", "is required when scope is Private")
        references = self.references(found, msg_type)
        infos = tuple(
            info
            for info_path, element in found["info"]
            if (info := self.info(element, info_path, sent)) is not None
        )
        if self.problems or sent is None:
            return None
        return Alert(
            identifier=identifier,
            sender=sender,
            sent=sent,
            status=status,
            msg_type=msg_type,
            scope=scope,
            source=self.text(found, "source"),
            restriction=restriction,
            note=self.text(found, "note"),
            references=references,
            incidents=self.text(found, "incidents"),
            infos=infos,
            signed=self.signed,
            codes=tuple(value for _, value in self.texts(found, "code")),
        )

    def references(self, found: Found, msg_type: str) -> tuple[Reference, ...]:
        path = "alert/references"
        value = self.text(found, "references")
        if not value:
            if msg_type in ("Update", "Cancel"):
                self.problem(path, f"is required for msgType {msg_type} (sender,identifier,sent)")
            return ()
        references = []
        for number, token in enumerate(value.split(), 1):
            parts = token.split(",")
            where = f"{path}[{number}]"
            if len(parts) != 3 or not all(parts):
                self.problem(where, f"{_shown(token)} is not sender,identifier,sent")
                continue
            sent = self.moment(parts[2], where)
            if sent is not None:
                references.append(Reference(parts[0], parts[1], sent))
        return tuple(references)

    def info(self, element: ET.Element, path: str, sent: datetime | None) -> Info | None:
        found = self.children(element, INFO, path)
        language = self.text(found, "language") or DEFAULT_LANGUAGE
        if not LANGUAGE.fullmatch(language):
            self.problem(f"{path}/language", f"{_shown(language)} is not a language tag (RFC 3066)")
        categories = self.enums(found, "category", CATEGORIES)
        response_types = self.enums(found, "responseType", RESPONSE_TYPES)
        event = self.text(found, "event", required=bool(found["event"]))
        urgency = self.choice(found, "urgency", URGENCIES, path)
        severity = self.choice(found, "severity", SEVERITIES, path)
        certainty = self.choice(found, "certainty", CERTAINTIES, path)
        effective = self.time(found, "effective", path)
        onset = self.time(found, "onset", path)
        expires = self.time(found, "expires", path)
        if expires is not None and sent is not None and expires <= sent:
            self.problem(f"{path}/expires", "is not after alert/sent: stale when it was sent")
        if expires is not None and effective is not None and expires <= effective:
            self.problem(f"{path}/expires", "is not after effective")
        for pair_path, pair in found["eventCode"]:
            self.pair(pair, pair_path)
        parameters = tuple(
            result
            for pair_path, pair in found["parameter"]
            if (result := self.pair(pair, pair_path))
        )
        for resource_path, resource in found["resource"]:
            self.resource(resource, resource_path)
        areas = tuple(self.area(area, area_path) for area_path, area in found["area"])
        if self.problems:
            return None
        return Info(
            language=language,
            categories=tuple(categories),
            event=event,
            urgency=urgency,
            severity=severity,
            certainty=certainty,
            response_types=tuple(response_types),
            effective=effective,
            onset=onset,
            expires=expires,
            sender_name=self.text(found, "senderName"),
            headline=self.text(found, "headline"),
            description=self.text(found, "description"),
            instruction=self.text(found, "instruction"),
            web=self.text(found, "web"),
            contact=self.text(found, "contact"),
            parameters=parameters,
            areas=areas,
            path=path,
        )

    def enums(self, found: Found, name: str, allowed: Sequence[str]) -> list[str]:
        values = []
        for path, value in self.texts(found, name):
            if value and value not in allowed:
                self.problem(path, f"{_shown(value)} is not one of {', '.join(allowed)}")
            elif value:
                values.append(value)
        return values

    def pair(self, element: ET.Element, path: str) -> tuple[str, str] | None:
        found = self.children(element, PAIR, path)
        name = self.text(found, "valueName", required=bool(found["valueName"]))
        value = self.text(found, "value", required=bool(found["value"]))
        return (name, value) if name and value else None

    def resource(self, element: ET.Element, path: str) -> None:
        found = self.children(element, RESOURCE, path)
        self.text(found, "resourceDesc", required=bool(found["resourceDesc"]))
        self.text(found, "mimeType", required=bool(found["mimeType"]))
        size = self.text(found, "size")
        if size and not size.isdigit():
            self.problem(f"{path}/size", f"{_shown(size)} is not a whole number of bytes")

    def area(self, element: ET.Element, path: str) -> Area:
        found = self.children(element, AREA, path)
        desc = self.text(found, "areaDesc", required=bool(found["areaDesc"]))
        polygons = tuple(
            points
            for polygon_path, value in self.texts(found, "polygon")
            if (points := self.polygon(value, polygon_path))
        )
        circles = tuple(
            circle
            for circle_path, value in self.texts(found, "circle")
            if (circle := self.circle(value, circle_path))
        )
        geocodes = tuple(
            pair for code_path, code in found["geocode"] if (pair := self.pair(code, code_path))
        )
        for name in ("altitude", "ceiling"):
            value = self.text(found, name)
            if value and not NUMBER.fullmatch(value):
                self.problem(f"{path}/{name}", f"{_shown(value)} is not a number of feet")
        if found["ceiling"] and not found["altitude"]:
            self.problem(f"{path}/ceiling", "needs <altitude> too")
        return Area(desc, polygons, circles, geocodes, path)

    def point(self, text: str, where: str) -> Point | None:
        parts = text.split(",")
        if len(parts) != 2 or not all(NUMBER.fullmatch(part) for part in parts):
            self.problem(where, f"{_shown(text)} is not a point 'latitude,longitude'")
            return None
        lat, lon = float(parts[0]), float(parts[1])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            self.problem(where, f"{_shown(text)} is off the globe (latitude, then longitude)")
            return None
        return lat, lon

    def polygon(self, value: str, path: str) -> tuple[Point, ...]:
        tokens = value.split()
        points = [self.point(token, f"{path} point {n}") for n, token in enumerate(tokens, 1)]
        if any(point is None for point in points):
            return ()
        if len(tokens) < 4:
            self.problem(path, f"has {len(tokens)} points; a polygon needs at least 4")
            return ()
        if points[0] != points[-1]:
            self.problem(path, "is not closed: its first and last points differ")
            return ()
        return tuple(point for point in points if point is not None)

    def circle(self, value: str, path: str) -> Circle | None:
        centre, _, radius = value.strip().partition(" ")
        point = self.point(centre, path)
        radius = radius.strip()
        if not NUMBER.fullmatch(radius) or float(radius) < 0:
            self.problem(path, f"{_shown(value)} is not 'latitude,longitude radius-in-km'")
            return None
        return Circle(point[0], point[1], float(radius)) if point else None
