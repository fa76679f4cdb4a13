"""What a citizen's reply to their appointment means: confirm, give the place back, or move.

- `1`, `CO`, `XAC NHAN`, `DONG Y`, `OK`: confirm.
- `2`, `KHONG`, `HUY`, `HUY LICH`: give the place back; it goes to whoever waits first.
- `DOI`, `DOI LICH`: move to the next session with room at the same site.

Any case, with or without diacritics and punctuation ("Xác nhận.", "không", "Đổi lịch").
Anything else is not an answer to the appointment and is left for the hotline.
"""

from __future__ import annotations

import re

from loa.sms import to_ascii

CONFIRM = "confirm"
RELEASE = "release"
MOVE = "move"
KEYWORDS: dict[str, str] = {
    "1": CONFIRM,
    "CO": CONFIRM,
    "XAC NHAN": CONFIRM,
    "DONG Y": CONFIRM,
    "OK": CONFIRM,
    "2": RELEASE,
    "KHONG": RELEASE,
    # never a bare HUY: it is an opt-out keyword, and would end every message to the person
    "HUY LICH": RELEASE,
    "DOI": MOVE,
    "DOI LICH": MOVE,
}
_NOT_WORD = re.compile(r"[^A-Z0-9]+")


def reply_action(message: str) -> str | None:
    """confirm, release or move for a reply that is one of the keywords; else None."""
    words = _NOT_WORD.sub(" ", to_ascii(message).upper()).strip()
    return KEYWORDS.get(words)
