"""The console channel: prints each message instead of sending it (the embedded default)."""

from __future__ import annotations

import sys
import threading
import uuid
from datetime import datetime
from typing import TextIO

from careflow.channels.base import Channel, OutgoingMessage, SendResult
from careflow.config import Settings
from careflow.hookspecs import hookimpl


class ConsoleChannel:
    """Writes messages to a stream (stderr by default, so ``--json`` output stays clean)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> SendResult:
        stream = self._stream or sys.stderr
        head = f"[{message.channel} → {message.to}]"
        if message.subject:
            head += f" {message.subject}"
        with self._lock:
            print(f"{head}\n  {message.body.replace(chr(10), chr(10) + '  ')}", file=stream, flush=True)
        return SendResult(provider_message_id=f"console-{uuid.uuid4().hex[:16]}")

    def lookup(self, message: OutgoingMessage, since: datetime) -> SendResult | None:
        return None  # the console keeps no record; resending to a terminal is harmless


class ConsoleProvider:
    name = "console"
    channels = frozenset({"sms", "whatsapp", "email"})

    def create(self, settings: Settings, channel: str) -> Channel:
        return ConsoleChannel()


@hookimpl(trylast=True)
def careflow_channel_providers() -> list[ConsoleProvider]:
    return [ConsoleProvider()]
