"""Scripted citizens: people who answer the messages a simulator takes, as real people would.

A script names the messages it answers (`match`: words of the text, or of a Zalo template's
data, in any case and with or without diacritics), the share of their recipients who answer,
after how long, and the weighted replies they choose from, each with a `kind` (what it stands
for: "answer:1", "cancel", "hotline", "free", ...), so a test or the demo can reconcile what
loa made of the replies with what the citizens did. The simulator sends each reply as the
citizen's phone would: a deliver_sm through the SMSC, a `user_send_text` webhook from Zalo.

Every draw is a hash of the seed, the script and the number: the same person always does the
same, and each person answers each script at most once (a message sent again is not answered
again).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from loa.settings import ConfigModel
from loa.sms import to_ascii

_NOT_WORD = re.compile(r"[^A-Z0-9]+")


class ScriptedReply(ConfigModel):
    """One reply a citizen may send, how likely it is among the script's, and what it means."""

    text: str = Field(min_length=1, max_length=1000)
    kind: str = Field(min_length=1, max_length=50, pattern=r"^[a-z0-9_:.-]+$")
    weight: float = Field(default=1.0, gt=0)


class Script(ConfigModel):
    """Who answers which message, when, and with what."""

    match: str = Field(min_length=1, max_length=200, description="words the message contains")
    share: float = Field(ge=0, le=1, description="of the message's recipients, those who answer")
    replies: list[ScriptedReply] = Field(min_length=1, max_length=50)
    delay: float = Field(default=1.0, ge=0, le=86_400, description="seconds before answering")
    jitter: float = Field(default=0.0, ge=0, le=86_400, description="uniform extra seconds")


class CitizenOptions(ConfigModel):
    """The scripts, the seed of every draw, and where SMS replies go."""

    seed: int = 0
    to: str = Field(default="9095", min_length=1, max_length=20, description="the short code")
    scripts: list[Script] = Field(default_factory=list)
    keep: int = Field(default=10_000, ge=0, description="replies listed by `stats`, at most")


@dataclass(frozen=True, slots=True)
class Planned:
    """A reply a citizen will send: to whom it answers, what, what it means, after how long."""

    phone: str
    text: str
    kind: str
    delay: float
    script: int


@dataclass
class Citizens:
    """The scripted people of one simulator and what they did."""

    options: CitizenOptions
    scheduled: int = 0
    sent: int = 0
    failed: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)  # replies the simulator delivered
    replies: list[dict[str, str]] = field(default_factory=list)  # in memory only: numbers
    _heard: set[tuple[str, int]] = field(default_factory=set)
    _matches: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._matches = [_words(script.match) for script in self.options.scripts]

    def heard(self, phone: str, text: str) -> Planned | None:
        """What the person at `phone` answers to a message of `text`, if anything (once)."""
        words = _words(text)
        for index, match in enumerate(self._matches):
            if match not in words or (phone, index) in self._heard:
                continue
            self._heard.add((phone, index))
            script = self.options.scripts[index]
            draw = random.Random(f"{self.options.seed}|{index}|{phone}")
            if draw.random() >= script.share:
                return None
            reply = draw.choices(script.replies, [r.weight for r in script.replies])[0]
            delay = script.delay + draw.random() * script.jitter
            self.scheduled += 1
            return Planned(phone, reply.text, reply.kind, delay, index)
        return None

    def done(self, planned: Planned, status: int | str) -> None:
        """Record how a reply went: 0 is delivered (the provider took it), anything else not."""
        if status != 0:
            self.failed += 1
            return
        self.sent += 1
        self.by_kind[planned.kind] += 1
        if len(self.replies) < self.options.keep:
            self.replies.append(
                {"phone": planned.phone, "kind": planned.kind, "text": planned.text}
            )

    @property
    def waiting(self) -> int:
        """Replies scheduled and not yet sent (or failed)."""
        return self.scheduled - self.sent - self.failed

    def stats(self) -> dict[str, Any]:
        """What the citizens did, as plain data; each reply names its sender by `who`, a digest
        of the number (the same for the same number), never the number itself."""
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "failed": self.failed,
            "waiting": self.waiting,
            "by_kind": dict(self.by_kind),
            "replies": [
                {"who": who(reply["phone"]), "kind": reply["kind"], "text": reply["text"]}
                for reply in self.replies
            ],
        }


def who(phone: str) -> str:
    """A citizen as reports name them: a digest of their number (84... and +84... alike)."""
    return hashlib.sha256(phone.lstrip("+").encode()).hexdigest()[:16]


def _words(text: str) -> str:
    """Text as matches compare it: upper case ASCII words, one space between, one each side."""
    return " " + " ".join(_NOT_WORD.sub(" ", to_ascii(text).upper()).split()) + " "
