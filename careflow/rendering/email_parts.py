"""What every care e-mail carries besides the template: the center's footer and the unsubscribe link."""

from __future__ import annotations

from markupsafe import Markup, escape

from careflow.config import CenterSettings

# The footer's words per language; the center's name and postal address are filled in.
FOOTER_WORDS: dict[str, tuple[str, str]] = {
    "en": ("You receive this e-mail as a customer of {center}.", "Unsubscribe from these e-mails"),
    "zh": ("您是{center}的客户，因此收到此邮件。", "退订此类邮件"),
}


def _words(locale: str) -> tuple[str, str]:
    return FOOTER_WORDS.get(locale) or FOOTER_WORDS.get(locale.split("_")[0]) or FOOTER_WORDS["en"]


def with_footer(
    text: str,
    html: str,
    *,
    center: CenterSettings,
    locale: str,
    unsubscribe_url: str | None,
) -> tuple[str, str]:
    """The plain-text part and a complete HTML document, both ending in the center's footer."""
    notice, unsubscribe = _words(locale)
    lines = [notice.format(center=center.name), center.name]
    if center.address:
        lines.append(center.address)
    if unsubscribe_url:
        lines.append(f"{unsubscribe}: {unsubscribe_url}")
    full_text = text.rstrip() + "\n\n-- \n" + "\n".join(lines) + "\n"
    # ``html`` is already escaped markup from the autoescaping environment; everything we add
    # here is escaped too, so a center name or address can never inject markup.
    footer = [escape(notice.format(center=center.name)), Markup("<br>"), escape(center.name)]
    if center.address:
        footer += [Markup("<br>"), escape(center.address)]
    if unsubscribe_url:
        footer += [
            Markup("<br>"),
            Markup('<a href="{}">{}</a>').format(unsubscribe_url, unsubscribe),
        ]
    lang = escape(locale.replace("_", "-"))
    document = Markup(
        '<!DOCTYPE html>\n<html lang="{}">\n<head><meta charset="utf-8"></head>\n<body>\n{}\n'
        '<hr>\n<p style="font-size:small;color:#666">{}</p>\n</body>\n</html>\n'
    ).format(lang, Markup(html), Markup("").join(footer))
    return full_text, str(document)
