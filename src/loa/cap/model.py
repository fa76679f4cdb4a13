"""A CAP 1.2 alert as loa reads it: typed, checked values (OASIS CAP 1.2, sections 3.2 and 3.3).

Only what loa acts on or reports is kept; every element the standard defines is still checked
when an alert is read (`loa.cap.parse`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPES = ("Public", "Restricted", "Private")
CATEGORIES = (
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
)
RESPONSE_TYPES = (
    "Shelter",
    "Evacuate",
    "Prepare",
    "Execute",
    "Avoid",
    "Monitor",
    "Assess",
    "AllClear",
    "None",
)
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
DEFAULT_LANGUAGE = "en-US"  # CAP 1.2: an <info> without <language> is in US English


def ref_key(sender: str, identifier: str, sent: datetime) -> str:
    """How an alert is named in `references` and in loa's index: sender,identifier,sent (UTC)."""
    return f"{sender},{identifier},{sent.astimezone(UTC).isoformat()}"


@dataclass(frozen=True, slots=True)
class Reference:
    """One earlier message an Update, Cancel, Ack or Error refers to."""

    sender: str
    identifier: str
    sent: datetime

    @property
    def key(self) -> str:
        """The index key of the referenced message."""
        return ref_key(self.sender, self.identifier, self.sent)


@dataclass(frozen=True, slots=True)
class Circle:
    """A circle: centre in WGS 84 degrees, radius in kilometres."""

    lat: float
    lon: float
    radius_km: float


Point = tuple[float, float]  # (lat, lon) in WGS 84 degrees


@dataclass(frozen=True, slots=True)
class Area:
    """One <area>: its description and the shapes and codes that say where it is."""

    desc: str
    polygons: tuple[tuple[Point, ...], ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()  # (valueName, value)
    path: str = "alert/info[1]/area[1]"  # where it is in the document, for error messages


@dataclass(frozen=True, slots=True)
class Info:
    """One <info> block: the alert in one language, with its area."""

    language: str
    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    response_types: tuple[str, ...] = ()
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    web: str = ""
    contact: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    areas: tuple[Area, ...] = ()
    path: str = "alert/info[1]"

    def parameter(self, name: str) -> str:
        """The value of the first <parameter> named `name` ("" if there is none)."""
        return next((value for key, value in self.parameters if key == name), "")


@dataclass(frozen=True, slots=True)
class Alert:
    """A checked CAP 1.2 <alert>."""

    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    source: str = ""
    restriction: str = ""
    note: str = ""
    references: tuple[Reference, ...] = ()
    incidents: str = ""
    infos: tuple[Info, ...] = ()
    signed: bool = False  # an XML signature (<Signature>) is present; it is not verified here
    codes: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        """This alert's index key, as a later Update or Cancel names it."""
        return ref_key(self.sender, self.identifier, self.sent)

    @property
    def is_test(self) -> bool:
        """Test or Exercise: it only ever goes to the configured test numbers."""
        return self.status in ("Test", "Exercise")
