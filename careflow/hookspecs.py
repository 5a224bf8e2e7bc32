"""Every extension point careflow offers. The docstring of each hook is its contract.

Implementations may accept any subset of the documented arguments, so adding an argument
never breaks a plugin; renaming or removing one does (and bumps ``HOOKSPEC_VERSION``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from careflow.care import CarePlugin, InboundReply, WeatherProvider
    from careflow.channels.base import ChannelProvider
    from careflow.storage.models import CareEvent, Customer

HOOKSPEC_VERSION = 1

hookspec = pluggy.HookspecMarker("careflow")
hookimpl = pluggy.HookimplMarker("careflow")


@hookspec
def careflow_care_plugins() -> list[CarePlugin]:
    """Return the care plugins this package provides.

    Called once when careflow starts. Each ``CarePlugin`` has a unique ``name``, a
    ``priority``, a ``purpose`` (service or marketing), a ``settings_model`` validated
    against ``[plugins.<name>]`` in careflow.toml, and ``occasions(ctx)``, which yields the
    occasions due in one batch of customers. Results of all implementations are combined.
    """


@hookspec
def careflow_channel_providers() -> list[ChannelProvider]:
    """Return channel providers (``console``, ``twilio``, ...), each serving named channels.

    Called once when careflow starts; ``[channels.<channel>] provider = "<name>"`` picks
    the provider for a channel. Results of all implementations are combined.
    """


@hookspec
def careflow_template_dirs() -> list[Path]:
    """Return directories holding this package's templates as ``<template>/<channel>.<locale>.j2``.

    Called once when careflow starts. Searched after the operator's override directory and
    before careflow's shipped templates, so a plugin package can bring its own default texts.
    """


@hookspec
def careflow_template_context(event: CareEvent, customer: Customer) -> dict[str, Any] | None:
    """Return extra template variables for one event about to be rendered, or None.

    Called at send time for every event; keep it cheap. Values must be plain data
    (str, numbers, bools, dates, lists, dicts). Later results override earlier keys.
    """


@hookspec
def careflow_event_delivered(event: CareEvent) -> None:
    """React to an event the provider accepted (status ``sent``); called after the commit.

    Exceptions are logged and otherwise ignored: a reaction never undoes a send.
    """


@hookspec
def careflow_reply_received(session: Session, reply: InboundReply) -> None:
    """React to an inbound message from a customer (an SMS or WhatsApp reply).

    Called by the webhook after the reply is matched to a customer and stored, inside the
    webhook's transaction (``session``); keyword messages (STOP, 退订, START, HELP, ...) are
    handled by the core and not passed on. A survey plugin records a rating here, for example.
    Exceptions are logged and do not fail the webhook.
    """


@hookspec
def careflow_weather_providers() -> list[WeatherProvider]:
    """Return weather alert sources (``careflow.care.WeatherProvider``); see ``careflow_plugins.weather``.

    Called by the weather plugin once per run; ``[plugins.weather] provider = "<name>"`` picks
    one (the first registered under a name wins, so an outside plugin overrides a built-in).
    ``provider.alerts(city, day, settings)`` is called at most once per city, local day and
    ``refresh_minutes`` across all processes (the latest answer is stored in
    ``weather_reports``); ``city`` is the canonical name (``careflow.customers.cities``: 深圳, not
    Shenzhen). It returns dicts with ``id`` (stable for one weather event: it keys the
    message, so an alert seen again on a later look-up is not sent twice), ``kind`` (typhoon,
    rainstorm, snow, cold_wave, heat, hail, strong_wind), and optionally ``day`` and ``ends``
    (ISO dates: the weather's first and last day; the message expires when ``ends`` is over)
    and ``headline``; it raises on failure, which is reported and skips that city only.
    Results of all implementations are combined.
    """
