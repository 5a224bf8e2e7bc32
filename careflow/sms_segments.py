"""SMS segment counting the way carriers bill it: GSM-7 (160/153) or UCS-2 (70/67)."""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 basic table, and the extension table whose characters take two septets.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int

    def __str__(self) -> str:
        return f"{self.count} segment(s), {self.encoding}, {self.units} units"


def count_segments(text: str) -> Segments:
    """One character outside GSM-7 (any Chinese, many emoji) makes the whole message UCS-2."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    count = 1 if units <= single else -(-units // multi)
    return Segments(encoding, units, count)
