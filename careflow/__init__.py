"""careflow: plugin-based customer care automation for service centers.

This module is careflow's public API: what a plugin imports. The built-in plugins
(``careflow_plugins``) import nothing else from careflow, so a third-party plugin can do
everything they do. Their tests may use ``careflow.testing`` too.

Beside the plugin contract, the channel contract and the tables plugins read, it offers what
the built-ins use of careflow's own records: city names, the CSV import's field parsers,
consent, points and vouchers, capacity pacing, calendar months. (The points ledger, capacity
pacing and the survey report are to move into their plugins.)
"""

from careflow.care import (
    CarePlugin,
    InboundReply,
    Occasion,
    PlanContext,
    PluginSettings,
    PrepareContext,
    Purpose,
    WeatherProvider,
)
from careflow.channels.base import Channel, ChannelProvider, OutgoingMessage, SendResult
from careflow.config import Settings
from careflow.customers.cities import canonical_city, canonicalise_cards, city_named, display_name
from careflow.customers.cities import label as city_label
from careflow.customers.dates import months_before
from careflow.customers.import_customers import FieldProblem, parse_email, parse_phone
from careflow.customers.points import PointsRules, voucher_lapsed
from careflow.errors import CareflowError, ConfigError, SendError, TemplateError
from careflow.hookspecs import hookimpl
from careflow.planning.capacity import PacedItem, pace_to_capacity
from careflow.policies.consent import record_consent
from careflow.storage.models import (
    CareEvent,
    Center,
    Customer,
    CustomerSegment,
    EventStatus,
    PointsEntry,
    ServiceVisit,
    SurveyResponse,
    Vehicle,
    Voucher,
    WeatherReport,
    utcnow,
)
from careflow.version import __version__

__all__ = [
    "CareEvent",
    "CarePlugin",
    "CareflowError",
    "Center",
    "Channel",
    "ChannelProvider",
    "ConfigError",
    "Customer",
    "CustomerSegment",
    "EventStatus",
    "FieldProblem",
    "InboundReply",
    "Occasion",
    "OutgoingMessage",
    "PacedItem",
    "PlanContext",
    "PluginSettings",
    "PointsEntry",
    "PointsRules",
    "PrepareContext",
    "Purpose",
    "SendError",
    "SendResult",
    "ServiceVisit",
    "Settings",
    "SurveyResponse",
    "TemplateError",
    "Vehicle",
    "Voucher",
    "WeatherProvider",
    "WeatherReport",
    "__version__",
    "canonical_city",
    "canonicalise_cards",
    "city_label",
    "city_named",
    "display_name",
    "hookimpl",
    "months_before",
    "pace_to_capacity",
    "parse_email",
    "parse_phone",
    "record_consent",
    "utcnow",
    "voucher_lapsed",
]
