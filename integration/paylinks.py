"""Payment-method links: a signed, expiring token naming one subscription, usable once.

The token is signed with the service's link secret (itsdangerous, HMAC-SHA256) and carries only what the page
shows: the subscription's record id, the Braintree customer to vault the card for, and the service's name and
price. It cannot be forged or altered; it expires after ``PAYMENT_LINK_TTL_DAYS``; once a payment method was
saved through it, a Redis marker (kept as long as the token lives) makes it "already used".

Only the canonical spelling of a token is accepted: itsdangerous decodes base64 leniently (characters outside the
alphabet are skipped, the unused low bits of the last character ignored), so ``token + "!!"`` or a flipped low bit
would otherwise load the same link under another string. The used marker, the view counter and the submit lock
are keyed on the link's identity (``PaymentLink.identity``), never on the token's text.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import redis
from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

__all__ = ["LinkExpired", "LinkInvalid", "LinkUsed", "PaymentLink", "PaymentLinks"]

_SALT = "payment-method-link-v1"


class LinkInvalid(Exception):
    """Tampered, malformed or signed with another secret."""


class LinkExpired(LinkInvalid):
    """Past its lifetime."""


class LinkUsed(LinkInvalid):
    """A payment method was already submitted through it."""


@dataclass(frozen=True)
class PaymentLink:
    """What a valid token says."""

    subscription_id: str
    customer_id: str
    service_name: str
    price: str
    interval: str
    issued_at: float

    def to_claims(self) -> dict[str, Any]:
        """The signed payload."""
        return {"s": self.subscription_id, "c": self.customer_id, "n": self.service_name, "p": self.price,
                "i": self.interval, "t": self.issued_at}

    @property
    def identity(self) -> str:
        """What names this link whatever the token's spelling: a hash of its subscription, customer and issue time."""
        return hashlib.sha256(f"{self.subscription_id}\n{self.customer_id}\n{self.issued_at!r}".encode()).hexdigest()

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> PaymentLink:
        """Rebuild from a verified payload."""
        try:
            return cls(str(claims["s"]), str(claims["c"]), str(claims["n"]), str(claims["p"]), str(claims["i"]),
                       float(claims["t"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinkInvalid("token payload is incomplete") from exc


class PaymentLinks:
    """Issue and check payment-method tokens."""

    def __init__(self, secret: bytes, *, ttl_days: int, connection: redis.Redis | None = None) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age = ttl_days * 24 * 3600
        self._connection = connection

    def issue(self, link: PaymentLink) -> str:
        """A new token for the link."""
        return str(self._serializer.dumps(link.to_claims()))

    def check(self, token: str) -> PaymentLink:
        """The link a token names; LinkInvalid / LinkExpired / LinkUsed otherwise."""
        if not token or len(token) > 2048:
            raise LinkInvalid("no token")
        try:
            claims = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired as exc:
            raise LinkExpired("the link has expired") from exc
        except BadSignature as exc:
            raise LinkInvalid("the link is not valid") from exc
        if not isinstance(claims, dict):
            raise LinkInvalid("token payload is not an object")
        if not _canonical(token):
            raise LinkInvalid("the link is not spelled as it was issued")
        link = PaymentLink.from_claims(claims)
        if self._connection is not None and self._connection.exists(self._used_key(link)):
            raise LinkUsed("the link was already used")
        return link

    def mark_used(self, link: PaymentLink) -> bool:
        """Record that the link was used; False if it already was."""
        assert self._connection is not None
        return bool(self._connection.set(self._used_key(link), str(time.time()), nx=True, ex=self.max_age))

    def count_view(self, link: PaymentLink, kind: str, *, window: int) -> int:
        """Count one ``kind`` of request (page view, submit) for the link; how many there were in this window."""
        assert self._connection is not None
        key = f"paylink:{kind}:{link.identity}:{int(time.time() // window)}"
        pipe = self._connection.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, window)
        return int(pipe.execute()[0])

    def hold_submit(self, link: PaymentLink, *, seconds: int = 60) -> bool:
        """Claim the link for one submission in progress (the card is being saved); False if another holds it."""
        assert self._connection is not None
        return bool(self._connection.set(f"paylink:submitting:{link.identity}", "1", nx=True, ex=seconds))

    def release_submit(self, link: PaymentLink) -> None:
        """End ``hold_submit``."""
        assert self._connection is not None
        self._connection.delete(f"paylink:submitting:{link.identity}")

    @staticmethod
    def _used_key(link: PaymentLink) -> str:
        return "paylink:used:" + link.identity


def _canonical(token: str) -> bool:
    """Whether each base64 segment of a token (payload, timestamp, signature) is spelled as it encodes."""
    value, _, signature = token.rpartition(".")
    payload, _, timestamp = value.rpartition(".")
    payload = payload[1:] if payload.startswith(".") else payload  # "." marks a compressed payload
    for part in (payload, timestamp, signature):
        try:
            if not part or base64_encode(base64_decode(part)).decode("ascii") != part:
                return False
        except (BadData, UnicodeError, ValueError):
            return False
    return True
