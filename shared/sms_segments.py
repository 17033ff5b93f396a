"""How many SMS segments a body costs (GSM 03.38 7-bit, or UCS-2 as soon as one character is not
in the GSM alphabet). Twilio bills and rate-limits per segment, so the outbox stores this count."""

from __future__ import annotations

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters from the extension table cost two septets (escape + character).
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def is_gsm7(body: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in body)


def segment_count(body: str) -> int:
    if not body:
        return 1
    if is_gsm7(body):
        septets = sum(2 if ch in GSM7_EXTENDED else 1 for ch in body)
        return 1 if septets <= 160 else -(-septets // 153)
    # UCS-2 counts UTF-16 code units: characters outside the BMP (emoji) take two.
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)
