"""Per-sender send pacing that holds across every worker thread, process and host.

Each send reserves the sender's next free slot (``1 / messages_per_second`` apart) in a
store every worker shares, then sleeps until that slot: a GCRA-style limiter with no bursts.

* Redis broker: the slot lives in Redis (a Lua script, atomic, timed by the Redis server's
  clock so hosts with skewed clocks still agree).
* RabbitMQ or local broker: RabbitMQ has no atomic shared counter, so the slot lives in the
  database every worker already shares (``sender_pace``, one row per sender, updated under
  a row lock). One short write per send is nothing at Twilio's rates (1-100 per second).

A 429 from the provider pushes the sender's next slot out (``hold``), so every worker backs
off together instead of each finding out on its own.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from careflow.storage.models import CareEvent, EventStatus, SenderPace

if TYPE_CHECKING:
    from careflow.runtime import Runtime

# Twilio keeps a message in a sender's queue for at most this long (its validity period).
PROVIDER_QUEUE_VALIDITY_SECONDS = 10 * 60 * 60

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local hold = tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if hold > 0 then
  nxt = math.max(nxt, now + hold)
  redis.call('SET', KEYS[1], string.format('%.6f', nxt), 'PX', math.ceil(hold * 1000) + 60000)
  return '0'
end
local slot = math.max(now, nxt)
redis.call('SET', KEYS[1], string.format('%.6f', slot + interval), 'PX',
           math.ceil((slot + interval - now) * 1000) + 60000)
return string.format('%.6f', slot - now)
"""


class Pacer(Protocol):
    def reserve(self, sender: str, interval: float) -> float:
        """Reserve the sender's next slot; returns the seconds to wait before sending in it."""
        ...

    def hold(self, sender: str, seconds: float) -> None:
        """No slot for this sender starts earlier than ``seconds`` from now (after a 429)."""
        ...


class RedisPacer:
    def __init__(self, url: str) -> None:
        import redis

        self._client: Any = redis.Redis.from_url(url)
        self._script: Any = self._client.register_script(_RESERVE)

    def reserve(self, sender: str, interval: float) -> float:
        return float(self._script(keys=[f"careflow:pace:{sender}"], args=[interval, 0]))

    def hold(self, sender: str, seconds: float) -> None:
        self._script(keys=[f"careflow:pace:{sender}"], args=[0, seconds])


class DatabasePacer:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def _locked_row(self, session: Session, sender: str) -> SenderPace:
        dialect = session.get_bind().dialect.name
        module: Any = postgresql if dialect == "postgresql" else sqlite
        session.execute(
            module.insert(SenderPace)
            .values(sender=sender, next_slot=0.0)
            .on_conflict_do_nothing(index_elements=["sender"])
        )
        # FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers.
        return session.scalars(select(SenderPace).where(SenderPace.sender == sender).with_for_update()).one()

    def reserve(self, sender: str, interval: float) -> float:
        with self._sessions.begin() as session:
            row = self._locked_row(session, sender)
            now = time.time()
            slot = max(now, row.next_slot)
            row.next_slot = slot + interval
        return slot - now

    def hold(self, sender: str, seconds: float) -> None:
        with self._sessions.begin() as session:
            row = self._locked_row(session, sender)
            row.next_slot = max(row.next_slot, time.time() + seconds)


_redis_pacers: dict[str, RedisPacer] = {}
_lock = threading.Lock()


def pacer_for(runtime: Runtime) -> Pacer:
    """Redis when the broker is Redis, else the shared database (see the module docstring)."""
    url = runtime.settings.broker.url
    if url.startswith(("redis://", "rediss://")):
        with _lock:
            if url not in _redis_pacers:
                _redis_pacers[url] = RedisPacer(url)
            return _redis_pacers[url]
    return DatabasePacer(runtime.sessions)


def sender_of(runtime: Runtime, channel: str) -> tuple[str, float] | None:
    """The sender a channel sends from and its messages-per-second limit, or None if unlimited."""
    chosen = runtime.settings.channels.get(channel)
    twilio = runtime.settings.twilio
    if chosen is None or chosen.provider != "twilio" or twilio.messages_per_second <= 0:
        return None
    sender = twilio.messaging_service_sid or twilio.from_number or "default"
    prefix = "whatsapp:" if channel == "whatsapp" else ""
    return f"twilio:{prefix}{sender}", twilio.messages_per_second


def wait_for_send_slot(runtime: Runtime, channel: str) -> None:
    """Wait for this send's slot on its sender; returns at once for unlimited channels."""
    found = sender_of(runtime, channel)
    if found is None:
        return
    sender, per_second = found
    wait = pacer_for(runtime).reserve(sender, 1.0 / per_second)
    if wait > 0:
        time.sleep(wait)


def back_off(runtime: Runtime, channel: str, attempt: int, retry_after: float | None) -> float:
    """After a 429: hold the whole sender for Retry-After, or an exponential delay with full jitter."""
    if retry_after is not None and retry_after > 0:
        delay = retry_after
    else:
        delay = random.uniform(0, min(60.0, 0.5 * 2 ** max(attempt - 1, 0)))
    found = sender_of(runtime, channel)
    if found is not None:
        pacer_for(runtime).hold(found[0], delay)
    return delay


def backlog_warning(runtime: Runtime) -> str | None:
    """A warning when the unsent backlog would take longer than the provider keeps messages queued."""
    for channel in runtime.settings.channels:
        found = sender_of(runtime, channel)
        if found is None:
            continue
        sender, per_second = found
        with runtime.sessions() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(CareEvent)
                .where(
                    CareEvent.channel == channel,
                    CareEvent.status.in_([EventStatus.PLANNED, EventStatus.SENDING]),
                )
            )
        seconds = (pending or 0) / per_second
        if seconds > PROVIDER_QUEUE_VALIDITY_SECONDS:
            hours = math.ceil(seconds / 3600)
            return (
                f"{pending} message(s) wait for sender {sender.split(':', 1)[1]} at {per_second:g}/s: "
                f"about {hours} hours, more than the provider's 10-hour queue validity; raise "
                "[twilio] messages_per_second (a messaging service with more numbers) or spread the run"
            )
    return None
