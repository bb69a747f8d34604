"""What must never leave the process, and the two nets that stop it.

Payload-carrying fields (``UNSAFE_FIELDS``: RQ's ``arguments``, request bodies, ...) are dropped by whoever writes a
record or an event; every string that does leave has known secret values (``register_secrets``), the request's
hidden URL parts, email addresses and card numbers (brand prefix, length and Luhn check) replaced by ``redact``,
also where a JSON line or a ``repr`` escaped the character before a card number (``\\n4111...``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import Settings
from .context import HIDDEN

__all__ = ["UNSAFE_FIELDS", "may_need_redaction", "redact", "register_secrets", "scrub", "secret_values"]

UNSAFE_FIELDS = frozenset({"arguments", "kwargs", "args", "payload", "body", "data", "headers", "event", "form"})
_NOT_SECRET = frozenset({"dashboard_username", "sentry_dsn", "zoho_organization_id", "braintree_merchant_id"})

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A card number stands alone: no word character or dash before it, unless that is the letter of an escape
# ("\\n", "\\t" as a JSON line or a repr writes a newline or tab), and none after it.
_DIGIT_RUN = re.compile(r"(?:(?<![\w-])|(?<=\\[nrtfbv]))\d(?:[ -]?\d){12,18}(?![\w-])")
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None
_secret_forms: tuple[str, ...] = ()
# Every _DIGIT_RUN match lies inside a match of this (13+ characters of digits, spaces and dashes, digits at both
# ends), which a regex engine finds many times faster. Log times are ISO 8601 ("2026-11-30T09:19:22.123+00:00"),
# which never match it.
_CARD_SHAPED = re.compile(r"\d[\d -]{11,}\d")
# The same for a serialized (ASCII-only) line: an ASCII class is ~15 times cheaper than \d, which has to know
# every Unicode digit; non-ASCII text in a line is escaped ("\u0664"), which may_need_redaction checks for.
_CARD_SHAPED_ASCII = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
# Whether a line has 13 characters in a row of digits, spaces and dashes (as every _CARD_SHAPED_ASCII match does):
# its bytes with each of those made "#" and anything else ".", searched for 13 "#". Several times faster than that
# regex's scan, which then runs only on the few lines that have such a run.
_CARD_CHARS = bytes(ord("#") if chr(i) in "0123456789 -" else ord(".") for i in range(256))
_CARD_RUN = b"#" * 13


def secret_values(settings: Settings) -> set[str]:
    """The credential values in the settings (each of a rotation list), as they could appear in text."""
    found: set[str] = set()
    for f in dataclasses.fields(settings):
        if f.repr or f.name in _NOT_SECRET:
            continue
        value = getattr(settings, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, str):
                found.update(part.strip() for part in item.split(",") if len(part.strip()) >= 8)
                password = _url_password(item)  # REDIS_URL's password, also where it is written alone
                if password and len(password) >= 8:
                    found.add(password)
    return found


def _url_password(text: str) -> str | None:
    if "://" not in text or "@" not in text:
        return None
    try:
        return urllib.parse.urlsplit(text).password
    except ValueError:
        return None


def register_secrets(values: Iterable[str]) -> None:
    global _secret_re, _secret_forms
    new = {v for v in values if len(v) >= 8} - _secrets
    if new:
        _secrets.update(new)
        _secret_re = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))
        # Each secret as it appears inside a JSON line (quotes, backslashes and non-ASCII escaped) as well as raw.
        _secret_forms = tuple(_secrets | {json.dumps(s)[1:-1] for s in _secrets})


def may_need_redaction(text: str) -> bool:
    """Whether ``redact`` could change anything in a serialized, ASCII-only JSON line: a secret, a hidden URL part,
    an ``@`` that may belong to an email address, a card number, or escaped non-ASCII text (which could hide
    Unicode digits). Cheap substring and character-class checks; the exact, slower patterns run only on the short
    stretches those flag (lookbehinds still see the characters before a stretch)."""
    return (
        any(secret in text for secret in _secret_forms)
        or (
            # (dropping a non-ASCII character can only join runs, never split one)
            _CARD_RUN in text.encode("ascii", "ignore").translate(_CARD_CHARS)
            and any(_DIGIT_RUN.search(text, m.start(), m.end()) for m in _CARD_SHAPED_ASCII.finditer(text))
        )
        or (("@" in text or "%40" in text) and bool(_EMAIL.search(text)))
        or "\\u" in text
        or any(hidden in text or json.dumps(hidden)[1:-1] in text for hidden in HIDDEN.get())
    )


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    """A payment card number: a card brand's prefix and length, and a valid Luhn check digit."""
    n, p2, p4 = len(digits), int(digits[:2]), int(digits[:4])
    brand = (
        (digits[0] == "4" and n in (13, 16, 19))
        or ((51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16)
        or (p2 in (34, 37) and n == 15)
        or ((p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649 or p2 == 62) and 16 <= n <= 19)
        or ((3528 <= p4 <= 3589) and 16 <= n <= 19)
        or ((300 <= int(digits[:3]) <= 305 or p2 in (36, 38)) and 14 <= n <= 16)
    )
    return brand and _luhn(digits)


def _card_or_text(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if _is_card(digits) else match.group()


def redact(text: str) -> str:
    """Replace known secret values, the request's hidden URL parts, email addresses and card numbers."""
    # Each substitution runs only when a cheap check says it could match (most strings hold none of these).
    if _secret_re is not None and _secret_re.search(text):
        text = _secret_re.sub("[secret]", text)
    for hidden in HIDDEN.get():
        text = text.replace(hidden, "[secret]")
    if "@" in text or "%40" in text:
        text = _EMAIL.sub("[email]", text)
    if _CARD_SHAPED.search(text):
        text = _DIGIT_RUN.sub(_card_or_text, text)
    return text


def scrub(value: Any) -> Any:
    """A copy of a JSON-like value with every string redacted (other objects become redacted strings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 10**12 <= value < 10**19:
        return "[card]" if _is_card(str(value)) else value  # a card number passed as a number
    if value is None or isinstance(value, bool | int | float | dt.date | dt.time):
        return value
    return redact(str(value))
