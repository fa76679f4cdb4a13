"""Structured JSON logs, with every phone number or address masked before it is written."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import orjson

# Runs of 7+ digits, optionally with +, spaces, dots or dashes between: phone numbers in any form.
PHONE = re.compile(r"\+?\d(?:[\s.\-]?\d){6,}")
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
            if key not in _STANDARD:
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
