"""The second act's vaccination drive as files and scripts: sites, registrants, plans, citizens.

A few sites in one province with two sessions each, fewer places than registrants (so some
wait), registrants in three priority groups; the plans of the appointment message, of the new
appointment for whoever a cancelled place goes to, and of the check-in after the shot with its
question; and the scripts of the simulated citizens who answer them.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from loa.demo.country import CARRIERS, FAMILY_NAMES, GIVEN_NAMES, MIDDLE_NAMES
from loa.demo.simulators import ZALO_TEMPLATE
from loa.engine.quiet import DEFAULT_TIMEZONE, zone

DRIVE = "demo-sot"  # the drive's name
PROVINCE = "79"  # every site and registrant: Ho Chi Minh City
SITES = (
    ("Q1", "Tram Y te Phuong Ben Nghe", "15 Le Loi"),
    ("Q3", "Tram Y te Phuong Vo Thi Sau", "7 Tran Quoc Thao"),
    ("TD", "Trung tam Y te Thu Duc", "2 Vo Van Ngan"),
)
SESSIONS = (("08:00", "11:00"), ("13:30", "16:30"))
PLACES = 0.7  # places for this share of the registrants: the others wait
ZALO = 0.4  # registrants with a Zalo account: their messages go by Zalo, their replies too
GROUPS = (1, 2, 3)
GROUP_SHARES = (0.2, 0.3, 0.5)
APPOINTMENT_WORDS = "LICH HEN TIEM"  # what the appointment message says, and citizens answer
CHECKIN_WORDS = "THEO DOI SAU TIEM"  # what the check-in says, and citizens answer
CHECKIN_QUESTION = "checkin-day1"
URGENT_CODE = "3"
HOTLINE = "9095"


@dataclass
class DriveFacts:
    """The drive's files, and what they hold."""

    sites: Path
    people: Path
    registrants: int = 0
    capacity: int = 0
    by_group: dict[int, int] = field(default_factory=dict)


def session_day() -> date:
    """Tomorrow in Viet Nam: the sessions are then."""
    return datetime.now(zone(DEFAULT_TIMEZONE)).date() + timedelta(days=1)


def write_drive(work: Path, people: int, seed: int, avoid: set[str]) -> DriveFacts:
    """Write the sites (with their sessions) and `people` registrants; numbers in `avoid` (the
    first act's opt-outs) are never drawn."""
    work.mkdir(parents=True, exist_ok=True)
    facts = DriveFacts(work / "sites.csv", work / "registrants.csv")
    rng = random.Random(seed)
    capacity = max(len(SITES) * len(SESSIONS), round(people * PLACES))
    day = session_day().isoformat()
    slots = len(SITES) * len(SESSIONS)
    with facts.sites.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["site_id", "name", "province", "address", "date", "start", "end", "capacity"])
        n = 0
        for site, name, address in SITES:
            for start, end in SESSIONS:
                places = capacity // slots + (1 if n < capacity % slots else 0)
                out.writerow([site, name, PROVINCE, address, day, start, end, places])
                n += 1
    facts.capacity = capacity
    registered = datetime.combine(session_day() - timedelta(days=7), time(8, 0))
    numbers = _numbers(rng, people, avoid)
    with facts.people.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["phone", "priority_group", "registered_at", "province", "name", "zalo_id"])
        for line, phone in enumerate(numbers):
            group = rng.choices(GROUPS, GROUP_SHARES)[0]
            facts.by_group[group] = facts.by_group.get(group, 0) + 1
            at = (registered + timedelta(minutes=line)).isoformat()
            parts = (rng.choice(FAMILY_NAMES), rng.choice(MIDDLE_NAMES), rng.choice(GIVEN_NAMES))
            zalo = f"{rng.getrandbits(60):d}" if rng.random() < ZALO else ""
            out.writerow([phone, group, at, PROVINCE, " ".join(parts), zalo])
    facts.registrants = people
    return facts


def _numbers(rng: random.Random, count: int, avoid: set[str]) -> list[str]:
    """Unique national numbers of the carriers that have an SMSC here, none of `avoid`."""
    prefixes = [p for c in CARRIERS if c.route for p in c.prefixes]
    found: dict[str, None] = {}
    while len(found) < count:
        national = f"{rng.choice(prefixes)}{rng.randrange(10**7):07d}"
        if "+84" + national[1:] not in avoid:
            found[national] = None
    return list(found)


def appointment_plan() -> str:
    """Each placed registrant's own appointment."""
    return _appointment_plan(
        "each registrant's appointment, from the drive's schedule",
        "Lịch tiêm sởi",
        APPOINTMENT_WORDS,
        "Tra loi 1 xac nhan, 2 huy lich.",
        '[audience]\nwhere = { status = "placed" }\n',
    )


def new_appointment_plan() -> str:
    """The appointment of whoever a cancelled place went to."""
    return _appointment_plan(
        "a new appointment, for whoever a cancelled place went to",
        "Lịch tiêm mới",
        "ban da co LICH MOI",
        "Tra loi 1 xac nhan.",
        what="LICH MOI",
    )


def _appointment_plan(
    about: str, name: str, words: str, reply: str, audience: str = "", what: str = ""
) -> str:
    """A plan that tells each person of the schedule their appointment, by Zalo or SMS."""
    date, start = "{{ appointment.date }}", "{{ appointment.start }}"
    site = "{{ appointment.site_name }}"
    zalo_data = f'what = "{what or words}", date = "{date}", start = "{start}", site = "{site}"'
    return f"""# Written by `loa demo`: {about}.
name = "{name}"
lane = "normal"
channels = ["zalo", "sms"]
sms_ascii = true

[templates]
zalo = {{ template_id = "{ZALO_TEMPLATE}", data = {{ {zalo_data} }} }}
sms = "Bo Y te: {words} {date} {start} tai {site}. {reply}"

{audience}
[schedule]
expires = "6h"
"""


def checkin_plan() -> str:
    """The check-in after the shot, with its question; 3 is urgent."""
    return f'''# Written by `loa demo`: the check-in after the shot, whose answers are counted.
name = "Theo dõi sau tiêm"
lane = "normal"
channels = ["zalo", "sms"]
sms_ascii = true

[templates]
zalo = {{ template_id = "{ZALO_TEMPLATE}", data = {{ what = "{CHECKIN_WORDS}", ask = "1 binh thuong, 2 dau nhe, 3 sot cao / kho tho" }} }}
sms = "Bo Y te: {CHECKIN_WORDS}. Ban thay the nao? Tra loi 1 binh thuong, 2 dau nhe, 3 sot cao/kho tho."

[audience]
where = {{ status = "placed" }}

[schedule]
expires = "6h"

[followup]
id = "{CHECKIN_QUESTION}"
window = "72h"
options = [
  {{ code = "1", label = "Bình thường", keywords = ["binh thuong", "khoe"] }},
  {{ code = "2", label = "Đau nhẹ", keywords = ["dau nhe"] }},
  {{ code = "{URGENT_CODE}", label = "Sốt cao / khó thở", keywords = ["sot cao", "kho tho"], urgent = true }},
]
'''  # noqa: E501


def citizen_scripts(seed: int, people: int) -> dict[str, Any]:
    """The simulated citizens of a drive of `people`: who answers the appointment and the
    check-in, and how (every reply is listed: each person answers each script at most once).

    Every reply's kind says what loa must make of it: `confirm` and `cancel` (the appointment),
    `hotline` (a question for the hotline: a case), `answer:C` (option C of the check-in;
    `answer:3` is urgent: an urgent case), `free` (no option: kept unparsed, and a case).
    """
    return {
        "seed": seed,
        "to": HOTLINE,
        "keep": 2 * people + 100,
        "scripts": [
            {
                "match": APPOINTMENT_WORDS,
                "share": 0.6,
                "delay": 0.2,
                "jitter": 1.0,
                "replies": [
                    {"text": "1", "kind": "confirm", "weight": 3},
                    {"text": "Xác nhận", "kind": "confirm"},
                    {"text": "2", "kind": "cancel"},
                    {"text": "Hủy lịch", "kind": "cancel"},
                    {"text": "Cho hỏi có cần mang CCCD không?", "kind": "hotline", "weight": 0.5},
                ],
            },
            {
                "match": CHECKIN_WORDS,
                "share": 0.8,
                "delay": 0.2,
                "jitter": 1.0,
                "replies": [
                    {"text": "1", "kind": "answer:1", "weight": 4},
                    {"text": "Bình thường", "kind": "answer:1", "weight": 2},
                    {"text": "khoe", "kind": "answer:1"},
                    {"text": "2", "kind": "answer:2", "weight": 2},
                    {"text": "Đau nhẹ.", "kind": "answer:2"},
                    {"text": "3", "kind": "answer:3", "weight": 0.5},
                    {"text": "SỐT CAO", "kind": "answer:3", "weight": 0.5},
                    {"text": "Tôi hơi mệt, có sao không?", "kind": "free"},
                ],
            },
        ],
    }
