"""The country a center is in: phone numbers written without ``+`` are read as that country's.

Configured as ``[centers.<code>] country`` (ISO 3166 alpha-2); when it is not, it follows from
the center's time zone (the tz database's ``zone.tab``, shipped in the ``tzdata`` package, gives
each zone one country: Europe/London is GB), and only then from its locale (en_GB is GB; a bare
``en`` is Babel's likely territory, US). A locale alone misleads: ``en`` is spoken in London.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.core import get_global


@cache
def _zone_countries() -> dict[str, str]:
    table = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    found = {}
    for line in table.splitlines():
        if line and not line.startswith("#"):
            code, _, zone, *_ = line.split("\t")
            found[zone] = code
    return found


def country_of_timezone(timezone: str) -> str | None:
    """The country of an IANA zone (Asia/Shanghai -> CN); None for UTC and zones of no country."""
    return _zone_countries().get(timezone)


def country_of_locale(locale: str) -> str | None:
    """The territory of a locale (zh_CN -> CN), or its language's likely one (en -> US)."""
    try:
        parsed = Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return None
    if parsed.territory:
        return str(parsed.territory)
    likely = get_global("likely_subtags").get(parsed.language, "")
    territory = likely.split("_")[-1] if likely.count("_") >= 1 else ""
    return territory if len(territory) == 2 and territory.isalpha() else None


def check_country(value: str) -> str:
    """An ISO 3166 alpha-2 code whose phone numbers careflow can read, in capitals."""
    code = value.strip().upper()
    if code in phonenumbers.SUPPORTED_REGIONS:
        return code
    hint = " (the United Kingdom is 'GB')" if code == "UK" else ""
    raise ValueError(
        f"{value!r} is not an ISO 3166 country code{hint}; expected two letters such as 'CN' or 'GB'"
    )


def center_country(configured: str | None, timezone: str, locale: str) -> str | None:
    """The configured country, else the time zone's, else the locale's."""
    return configured or country_of_timezone(timezone) or country_of_locale(locale)
