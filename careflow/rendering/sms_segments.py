"""SMS segment counting the way carriers bill it: GSM-7 (160/153) or UCS-2 (70/67).

The one counter careflow has: template lint's segment budget and the console's preview both
use it, so the count a marketer sees is the count lint enforces.
"""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 basic table, and the extension table whose characters take two septets.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153  # septets; a split message loses 7 to the concatenation header
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int  # segments, each billed
    characters: int

    def __str__(self) -> str:
        return f"{self.count} segment(s), {self.encoding}, {self.units} units"


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def _costs(text: str, gsm: bool) -> list[int]:
    if gsm:
        return [2 if ch in GSM7_EXTENDED else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # a surrogate pair is two code units


def _pack(costs: list[int], per_part: int) -> int:
    """Segments needed when a character (escape pair, surrogate pair) never straddles two parts."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def count_segments(text: str) -> Segments:
    """One character outside GSM-7 (any Chinese, many emoji) makes the whole message UCS-2."""
    gsm = is_gsm7(text)
    costs = _costs(text, gsm)
    units = sum(costs)
    single, part = (GSM7_SINGLE, GSM7_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    if units == 0:
        count = 0
    elif units <= single:
        count = 1
    else:
        count = _pack(costs, part)
    return Segments("GSM-7" if gsm else "UCS-2", units, count, len(text))
