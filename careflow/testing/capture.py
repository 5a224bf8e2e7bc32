"""A channel provider that keeps messages in memory instead of sending them, for tests."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime

from careflow.channels.base import Channel, OutgoingMessage, SendResult
from careflow.config import Settings
from careflow.hookspecs import hookimpl

CAPTURE_PROVIDER = "capture"


class CapturingChannel:
    """Records each message; ``lookup`` finds a recorded one, as a real provider's API would."""

    def __init__(self, provider: CapturingProvider, channel: str) -> None:
        self._provider = provider
        self.channel = channel

    def send(self, message: OutgoingMessage) -> SendResult:
        return self._provider.record(message)

    def lookup(self, message: OutgoingMessage, since: datetime) -> SendResult | None:
        return self._provider.find(message)


class CapturingProvider:
    """Register it as an extra plugin and set ``[channels.<ch>] provider = "capture"``.

    Every message any of its channels sends lands in ``messages`` (thread-safe: the local
    broker delivers from worker threads).
    """

    name = CAPTURE_PROVIDER
    channels = frozenset({"sms", "whatsapp", "email"})

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []
        self._ids: dict[int, str] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def create(self, settings: Settings, channel: str) -> Channel:
        return CapturingChannel(self, channel)

    def record(self, message: OutgoingMessage) -> SendResult:
        with self._lock:
            self.messages.append(message)
            provider_id = f"capture-{next(self._counter)}"
            self._ids[id(message)] = provider_id
            return SendResult(provider_message_id=provider_id)

    def find(self, message: OutgoingMessage) -> SendResult | None:
        with self._lock:
            for sent in self.messages:
                if (sent.event_id, sent.to, sent.body) == (message.event_id, message.to, message.body):
                    return SendResult(provider_message_id=self._ids[id(sent)])
        return None

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self._ids.clear()

    @hookimpl
    def careflow_channel_providers(self) -> list[CapturingProvider]:
        return [self]
