"""From a checked CAP alert to a campaign plan: lane, languages, provinces, expiry, texts.

- Lane, per <info>, the highest of them: `emergency` when severity is Extreme or Severe and
  urgency Immediate or Expected (the imminent-threat test of public warning systems) and
  certainty is not Unlikely; else `high` when severity is Extreme or Severe or urgency is
  Immediate; else `normal`. (Emergency overtakes everything and ignores quiet hours.)
- Languages: one message per <info> language (its primary subtag: vi-VN -> vi), as the plan's
  templates of that language (`[templates.en]`). With more than one, and an audience that has
  a `lang` column, each person gets the text of their `lang`, and whoever has none (or one no
  <info> is written in) the `cap.language` text, the plan's `language` (default `vi`; the
  first <info>'s when no <info> is in that language). Two <info> in one language: the one on
  the higher lane speaks.
- Provinces: the union over every <area> of every <info> (`loa.cap.provinces`); the plan's
  audience filter lists them with their pre-2025 codes, so older audience files match too.
- Expiry: the earliest <expires>, else `sent` + `cap.default_expires`; a future <effective>
  becomes the start.
- Texts: SMS `senderName: headline. instruction` (or the <parameter> `loa:sms`, written for
  SMS by the sender); push: headline, then description and instruction; e-mail: all of it,
  with the areas, expiry, web and contact; Zalo: the configured template, filled from the CAP
  texts `cap.zalo.data` names. Test and Exercise alerts say so first: `[TEST]`, `[EXERCISE]`.
  CAP text is plain text: it is put into the plan's templates escaped, never run as a template.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loa.cap.model import Alert, Info
from loa.cap.provinces import BY_CODE, MAX_SAMPLES, MAX_SHAPES, SAMPLE_BUDGET, provinces_of
from loa.errors import CapError
from loa.message import Lane
from loa.settings import CapSettings, CapZaloSettings

SMS_PARAMETER = "loa:sms"  # a <parameter> valueName: the sender's own SMS text
SENDING_STATUSES = ("Actual", "Exercise", "Test")
SENDING_TYPES = ("Alert", "Update")
LABELS = {"vi": ("Khu vực", "Hết hiệu lực")}  # e-mail labels by language; others: English
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LANGUAGE_KEY = re.compile(r"[a-z]{2,3}")  # a primary subtag the plan takes as a language


def lane_of(info: Info) -> Lane:
    """The lane one <info> asks for (see the module's table)."""
    serious = info.severity in ("Extreme", "Severe")
    if serious and info.urgency in ("Immediate", "Expected") and info.certainty != "Unlikely":
        return Lane.EMERGENCY
    if serious or info.urgency == "Immediate":
        return Lane.HIGH
    return Lane.NORMAL


def primary(language: str) -> str:
    """A language tag's primary subtag, lower-cased: 'vi-VN' -> 'vi'."""
    return language.replace("_", "-").split("-")[0].lower()


@dataclass(frozen=True, slots=True)
class Texts:
    """What one language's recipients read on each channel."""

    sms: str
    title: str
    body: str
    email: str
    fields: Mapping[str, str]  # the CAP texts a Zalo template's parameters are filled from


@dataclass(frozen=True)
class Mapped:
    """An alert as loa would send it."""

    alert: Alert
    lane: Lane | None  # None: nothing to send (a Cancel, an Ack, a System message...)
    languages: tuple[str, ...] = ()
    default_language: str = ""
    provinces: tuple[str, ...] = ()
    expires: datetime | None = None
    start: datetime | None = None
    texts: Mapping[str, Texts] = field(default_factory=dict)
    signed_by: str = ""  # the named sender whose signature verified ("" when none did)
    auto_approve: bool = False  # that sender's alerts need no second person

    @property
    def sends(self) -> bool:
        """Whether this alert becomes a campaign."""
        return self.lane is not None

    @property
    def regions(self) -> list[str]:
        """The audience's region codes it reaches: each province's code and its pre-2025 ones."""
        return sorted({code for p in self.provinces for code in BY_CODE[p].codes})

    def summary(self) -> dict[str, Any]:
        """What `loa cap validate --json` prints."""
        alert = self.alert
        return {
            "identifier": alert.identifier,
            "sender": alert.sender,
            "sent": alert.sent.isoformat(),
            "msgType": alert.msg_type,
            "status": alert.status,
            "scope": alert.scope,
            "lane": self.lane.label if self.lane is not None else None,
            "languages": list(self.languages),
            "default_language": self.default_language or None,
            "provinces": list(self.provinces),
            "province_names": [BY_CODE[code].name for code in self.provinces],
            "expires": self.expires.isoformat() if self.expires else None,
            "start": self.start.isoformat() if self.start else None,
            "references": [ref.key for ref in alert.references],
            "events": sorted({info.event for info in alert.infos}),
            "signed": alert.signed,
            "signed_by": self.signed_by or None,
            "sends": self.sends,
        }


def map_alert(alert: Alert, settings: CapSettings, now: datetime) -> Mapped:
    """How `alert` would be sent, or CapError naming every reason it cannot be."""
    if alert.msg_type not in SENDING_TYPES or alert.status not in SENDING_STATUSES:
        return Mapped(alert, None)  # nothing to send; the faces say why
    problems: list[str] = []
    if alert.scope != "Public":
        problems.append(f"alert/scope: loa sends only Public alerts; this is {alert.scope}")
    if not alert.infos:
        problems.append("alert/info[1]: is missing: an Alert or Update needs one to say anything")
    provinces: set[str] = set()
    shapes = sum(len(a.polygons) + len(a.circles) for info in alert.infos for a in info.areas)
    if shapes > MAX_SHAPES:  # bounded work per alert: give provinces as geocodes instead
        raise CapError(
            [f"alert: {shapes} polygons and circles; loa maps at most {MAX_SHAPES} per alert"]
        )
    samples = min(MAX_SAMPLES, SAMPLE_BUDGET // max(1, shapes))
    for info in alert.infos:
        if not info.areas:
            problems.append(f"{info.path}/area[1]: is missing: loa sends alerts to an area")
        for area in info.areas:
            coverage = provinces_of(area, settings.geocode_names, samples)
            provinces |= coverage.codes
            problems += coverage.problems
    if problems:
        raise CapError(problems)
    chosen = _by_language(alert.infos)
    languages = tuple(chosen)
    default = settings.language.lower() if settings.language.lower() in chosen else languages[0]
    expires = min(
        (info.expires for info in alert.infos if info.expires is not None),
        default=alert.sent + timedelta(seconds=settings.default_expires),
    )
    effective = max((i.effective for i in alert.infos if i.effective is not None), default=None)
    start = effective if effective is not None and effective > now else None
    if start is not None and expires <= start:
        raise CapError([f"{alert.infos[0].path}/expires: is not after the alert takes effect"])
    marker = {"Test": "[TEST] ", "Exercise": "[EXERCISE] "}.get(alert.status, "")
    return Mapped(
        alert=alert,
        lane=min(lane_of(info) for info in alert.infos),
        languages=languages,
        default_language=default,
        provinces=tuple(sorted(provinces)),
        expires=expires,
        start=start,
        texts={lang: _texts(info, marker, expires) for lang, info in chosen.items()},
    )


def _by_language(infos: Sequence[Info]) -> dict[str, Info]:
    """One <info> per language, in document order: the first on the highest lane."""
    chosen: dict[str, Info] = {}
    for info in infos:
        lang = primary(info.language)
        if lang not in chosen or lane_of(info) < lane_of(chosen[lang]):
            chosen[lang] = info
    return chosen


def _clean(text: str) -> str:
    """CAP text as a message carries it: no control characters, Unix line ends."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def _sentence(*parts: str) -> str:
    """Parts joined as sentences: a full stop between two unless one ends the first already."""
    text = ""
    for part in (p for p in parts if p):
        if text and text[-1] not in ".!?:;":
            text += "."
        text += (" " if text else "") + part
    return text


def _texts(info: Info, marker: str, expires: datetime) -> Texts:
    area_label, expires_label = LABELS.get(primary(info.language), ("Area", "Expires"))
    headline = _clean(info.headline) or _clean(info.event)
    description, instruction = _clean(info.description), _clean(info.instruction)
    sender = _clean(info.sender_name)
    own_sms = _clean(info.parameter(SMS_PARAMETER))
    core = own_sms or _sentence(headline, instruction or description)
    sms = f"{sender}: {core}" if sender and not own_sms else core
    areas = "; ".join(_clean(area.desc) for area in info.areas)
    email = "\n\n".join(
        part
        for part in (
            headline,
            description,
            instruction,
            f"{area_label}: {areas}" if areas else "",
            f"{expires_label}: {expires.isoformat()}",
            _clean(info.web),
            _clean(info.contact),
            f"-- {sender}" if sender else "",
        )
        if part
    )
    fields = {
        "event": _clean(info.event),
        "headline": headline,
        "description": description,
        "instruction": instruction,
        "sender": sender,
        "area": areas,
        "expires": expires.isoformat(),
        "web": _clean(info.web),
        "contact": _clean(info.contact),
    }
    return Texts(
        sms=marker + sms,
        title=marker + headline,
        body="\n\n".join(part for part in (description, instruction) if part) or headline,
        email=marker + email,
        fields=fields,
    )


def literal(text: str) -> str:
    """Plain text as a template that renders exactly it: every '{' escaped."""
    return text.replace("{", '{{ "{" }}')


def plan_mapping(
    mapped: Mapped,
    channels: Sequence[str],
    *,
    by_language: bool,
    sms_ascii: bool,
    zalo: CapZaloSettings | None,
    regions: bool = True,
    fallback_after: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The plan (as a TOML-shaped mapping) that sends `mapped` on `channels`, in that order."""
    assert mapped.lane is not None and mapped.expires is not None
    texts, default = mapped.texts, mapped.default_language
    templates = _channel_templates(texts[default], channels, zalo)
    if by_language:  # the plan's per-language templates: each person's `lang` chooses
        for language, text in texts.items():
            if language != default and _LANGUAGE_KEY.fullmatch(language):
                templates[language] = _channel_templates(text, channels, zalo)
    alert = mapped.alert
    first = texts[default]
    marker = {"Test": "[TEST] ", "Exercise": "[EXERCISE] "}.get(alert.status, "")
    name = f"{marker}CAP {alert.msg_type}: {first.fields['headline']} ({alert.identifier})"
    schedule: dict[str, Any] = {"expires": mapped.expires.isoformat()}
    if mapped.start is not None:
        schedule["start"] = mapped.start.isoformat()
    plan: dict[str, Any] = {
        "name": _clean(name)[:200],
        "lane": mapped.lane.label,
        "channels": list(channels),
        "sms_ascii": sms_ascii,
        "language": default,
        "templates": templates,
        "schedule": schedule,
    }
    if regions:
        plan["audience"] = {"regions": mapped.regions}
    waits = {c: w for c, w in (fallback_after or {}).items() if c in channels[:-1]}
    if waits:  # the last channel has nothing to fall back to
        plan["fallback_after"] = waits
    return plan


def _channel_templates(
    text: Texts, channels: Sequence[str], zalo: CapZaloSettings | None
) -> dict[str, Any]:
    """One language's template per channel: its CAP texts, escaped."""
    templates: dict[str, Any] = {}
    for channel in channels:
        if channel == "sms":
            templates["sms"] = literal(text.sms)
        elif channel == "fcm":
            templates["fcm"] = {"title": literal(text.title), "body": literal(text.body)}
        elif channel == "email":
            templates["email"] = {"subject": literal(text.title), "body": literal(text.email)}
        elif channel == "zalo" and zalo is not None:
            templates["zalo"] = {
                "template_id": zalo.template_id,
                "data": {
                    name: literal(text.fields[source] or "-") for name, source in zalo.data.items()
                },
            }
    return templates


def to_toml(plan: Mapping[str, Any]) -> str:
    """A plan mapping as TOML text (strings, booleans, lists of strings, nested tables).

    Checked by reading it back: the text must mean exactly `plan`.
    """
    lines = [f"{_key(k)} = {_value(v)}" for k, v in plan.items() if not isinstance(v, Mapping)]
    for key, table in plan.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{_key(key)}]", *(f"{_key(k)} = {_value(v)}" for k, v in table.items())]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != plan:
        raise ValueError("the plan does not survive TOML: a value of an unexpected type")
    return text


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # JSON escapes are TOML escapes; DEL is the one control character JSON leaves alone
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Iterable):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
