"""Structured logs: one JSON object per line, with phone numbers and e-mail addresses masked.

Log lines go to aggregators that many people can read; a customer's full number or address
never belongs there (message bodies are never logged at all). Masking happens in the
formatter, so it covers careflow's messages and those of every library alike.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# E.164-ish numbers (+ and 8-15 digits, optional separators) and e-mail addresses.
_PHONE = re.compile(r"\+\d[\d \-]{6,17}\d")
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})\b")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def mask(text: str) -> str:
    """Keep a number's first 3 and last 2 digits and an address's first letter and domain."""

    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return f"+{digits[:3]}{'*' * (len(digits) - 5)}{digits[-2:]}"

    return _EMAIL.sub(r"\1***@\2", _PHONE.sub(phone, text))


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}``; exceptions as ``exc`` text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class MaskingFormatter(logging.Formatter):
    """The plain text format, masked the same way."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def configure(level: int, fmt: str) -> None:
    """Log to stderr as ``text`` or ``json`` (replacing handlers another setup may have left)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
