"""Structured JSON logs, with every phone number or address masked before it is written.

Masked: the fields that hold an address (`to`, `phone`, `email`, ...) whatever they hold, and
in any other text what reads as a phone number (international with '+', Vietnamese national
from 0 or 84) or an e-mail address. Other numbers stay readable: campaign ids, IP addresses,
timestamps and counts are what an operator reads a log for.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import orjson

# A phone number as people write it (spaces, dots or dashes between digits): '+' and 8 to 15
# digits, or a Vietnamese number from 0 (10 or 11 digits) or 84 (11 or 12); not a piece of a
# longer number, word, address or version.
PHONE = re.compile(
    r"(?<![\w+.:/\-])"
    r"(?:\+\d(?:[\s.\-]?\d){7,14}|0\d(?:[\s.\-]?\d){8,9}|84(?:[\s.\-]?\d){9,10})"
    r"(?![\w.:/\-]?\d)"
)
# extra fields that hold a recipient's address: masked whatever they hold
ADDRESS_FIELDS = frozenset(
    {"to", "phone", "recipient", "address", "email", "msisdn", "source_addr", "destination_addr"}
)
EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+)")
# the user and password of a URL (redis://user:password@host)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@'\"]*@")
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def hide_userinfo(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by '***'."""
    return _USERINFO.sub(r"\1***@", text) if "://" in text else text


def mask(text: str) -> str:
    """Hide phone numbers (keep the last 3 digits), e-mail local parts and the user and
    password of URLs."""
    text = hide_userinfo(text)
    text = PHONE.sub(lambda m: "***" + re.sub(r"\D", "", m.group())[-3:], text)
    return EMAIL.sub(r"\1***@\2", text)


def mask_address(address: str) -> str:
    """A recipient address fit for a log line or a screen: `+84912345678` -> `***678`."""
    if "@" in address:
        return mask(address)
    return "***" + address[-3:] if len(address) > 3 else "***"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD:
                continue
            if key in ADDRESS_FIELDS and isinstance(value, str | int):
                entry[key] = mask_address(str(value))
            else:
                entry[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str | None = None, stream: Any = None) -> None:
    """Send loa's logs to stderr as JSON lines, at `level` or $LOA_LOG_LEVEL (default info)."""
    level = level or os.environ.get("LOA_LOG_LEVEL", "info")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("loa")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
