"""Payment-method links: a signed, expiring token naming one subscription, usable once.

The token is signed with the service's link secret (itsdangerous, HMAC-SHA256) and carries only what the page
shows: the subscription's record id, the Braintree customer to vault the card for, and the service's name and
price. It cannot be forged or altered; it expires after ``PAYMENT_LINK_TTL_DAYS``; once a payment method was
submitted through it, a Redis marker (kept as long as the token lives) makes it "already used".
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import redis
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

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
        link = PaymentLink.from_claims(claims)
        if self._connection is not None and self._connection.exists(self._used_key(token)):
            raise LinkUsed("the link was already used")
        return link

    def mark_used(self, token: str) -> bool:
        """Record that the token was used; False if it already was (two submits racing)."""
        assert self._connection is not None
        return bool(self._connection.set(self._used_key(token), str(time.time()), nx=True, ex=self.max_age))

    def forget_use(self, token: str) -> None:
        """Undo ``mark_used`` (the submission could not be queued)."""
        assert self._connection is not None
        self._connection.delete(self._used_key(token))

    @staticmethod
    def _used_key(token: str) -> str:
        return "paylink:used:" + hashlib.sha256(token.encode()).hexdigest()
