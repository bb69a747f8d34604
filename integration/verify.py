"""Webhook signature schemes: pure functions over the raw request, run before anything is parsed.

Every verifier raises ``SignatureInvalid`` for a missing, malformed or wrong signature (never ``ValueError`` or
``binascii.Error``: a garbage header must be a 401, not a 500), and takes a tuple of secrets so that a secret can
be rotated (any one verifies).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol

import braintree
from braintree.exceptions import InvalidChallengeError, InvalidSignatureError

from .clients.gateway import make_gateway
from .errors import PayloadInvalid, SignatureInvalid

__all__ = [
    "BraintreeVerifier",
    "attio_signature",
    "verify_attio",
    "verify_zoho",
    "zoho_signature",
    "zoho_signed_string",
]

_MAX_SIGNATURE_LEN = 512


class Headers(Protocol):
    """What a verifier reads of the headers: a dict, or werkzeug's ``Headers`` (not a Mapping; it ignores case)."""

    def get(self, key: str, /) -> str | None: ...


def _header(headers: Headers, *names: str) -> str:
    for name in names:
        value = headers.get(name)
        if value:
            value = value.strip()
            if not value or len(value) > _MAX_SIGNATURE_LEN or not value.isascii():
                raise SignatureInvalid(f"{name} header is malformed")
            return value
    raise SignatureInvalid(f"{names[0]} header is missing")


def attio_signature(body: bytes, secret: str) -> str:
    """Lowercase hex HMAC-SHA256 of the raw body keyed by the secret string (Attio's scheme)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_attio(body: bytes, headers: Headers, *, secrets: Sequence[str]) -> None:
    """Check ``Attio-Signature`` (or ``X-Attio-Signature``) against every configured secret."""
    given = _header(headers, "Attio-Signature", "X-Attio-Signature").lower()
    ok = False
    for secret in secrets:
        # compare_digest on every secret, no early exit: timing says nothing about which one matched.
        ok |= hmac.compare_digest(attio_signature(body, secret), given)
    if not ok:
        raise SignatureInvalid("Attio signature does not match")


def zoho_signed_string(query: Iterable[tuple[str, str]], form: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """Zoho's signed string: query and form pairs sorted by key as ``key+value``, then the raw JSON body."""
    pairs = sorted([*query, *form], key=lambda kv: kv[0])
    return "".join(f"{k}{v}" for k, v in pairs).encode("utf-8") + body


def zoho_signature(message: bytes, secret: str) -> bytes:
    """Raw HMAC-SHA256 digest of the signed string keyed by the secret token."""
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def _decode_signature(given: str) -> bytes:
    """The digest a header carries, as hex (either case) or base64 (standard or URL-safe)."""
    try:
        if len(given) == 64:
            return bytes.fromhex(given)
        padded = given + "=" * (-len(given) % 4)
        decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureInvalid("X-Zoho-Webhook-Signature is neither hex nor base64") from exc
    if len(decoded) != 32:
        raise SignatureInvalid("X-Zoho-Webhook-Signature has the wrong length")
    return decoded


def verify_zoho(
    body: bytes,
    headers: Headers,
    *,
    query: Iterable[tuple[str, str]] = (),
    form: Iterable[tuple[str, str]] = (),
    secrets: Sequence[str],
) -> bytes:
    """Check ``X-Zoho-Webhook-Signature``; hex or base64 is accepted (Zoho does not document which).

    Returns the signed string. Zoho's scheme joins ``key+value`` with no separator, so the same signed string can
    be cut into other pairs (``ab=c`` or ``a=bc``): the pairs a request shows are not what was signed, only the
    string is. A key given twice (whose order the sort leaves open) is refused."""
    given = _header(headers, "X-Zoho-Webhook-Signature")
    digest = _decode_signature(given)
    query, form = list(query), list(form)
    keys = [k for k, _ in (*query, *form)]
    if len(set(keys)) != len(keys):
        raise SignatureInvalid("a query or form key is repeated")
    message = zoho_signed_string(query, form, b"" if form else body)
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(zoho_signature(message, secret), digest)
    if not ok:
        # What was tried, so a mismatch with a real delivery is diagnosed from one log line (Zoho documents
        # neither the algorithm nor the encoding); never the secret, the signature or the body.
        signed = f"{len(form)} form pair(s)" if form else f"the raw body ({len(body)} bytes)"
        raise SignatureInvalid(
            f"Zoho signature does not match: header present ({'hex' if len(given) == 64 else 'base64'}, "
            f"{len(given)} chars); tried HMAC-SHA256 compared as hex and base64 over {len(query)} query pair(s) + "
            f"{signed} with {len(secrets)} secret(s)"
        )
    return message


class BraintreeVerifier:
    """Braintree's own scheme, through the SDK: ``parse()`` for deliveries, ``verify()`` for the challenge.

    ``key_pairs`` lists (public_key, private_key); a notification verifies if any pair signs it (rotation).
    The gateways are built once: they only hold configuration, and parsing is local (no HTTP).
    """

    def __init__(self, environment: str, merchant_id: str, key_pairs: Sequence[tuple[str, str]]) -> None:
        self._gateways = [make_gateway(environment, merchant_id, pub, priv) for pub, priv in key_pairs]

    def parse(self, signature: str | None, payload: str | None) -> braintree.WebhookNotification:
        """The verified notification; SignatureInvalid if no key pair signs it, PayloadInvalid if unreadable."""
        if not signature or not payload or len(signature) > 4 * _MAX_SIGNATURE_LEN:
            raise SignatureInvalid("bt_signature or bt_payload is missing")
        # Two inputs the SDK fails on with ValueError *before* it checks the signature (which would read as a
        # signed but unreadable payload, 400): a non-ASCII payload (its ``encode('ascii')``) and a signature
        # pair of more than two ``|`` parts (its tuple unpacking). Neither can be a Braintree signature.
        if not payload.isascii():
            raise SignatureInvalid("bt_payload contains illegal characters")
        if any(pair.count("|") > 1 for pair in signature.split("&")):
            raise SignatureInvalid("bt_signature is malformed")
        for gateway in self._gateways:
            try:
                return gateway.webhook_notification.parse(signature, payload)
            except InvalidSignatureError:
                continue
            except (ValueError, UnicodeError, binascii.Error) as exc:
                # The SDK checks the signature before decoding, so this is a signed but unreadable payload.
                raise PayloadInvalid("bt_payload could not be decoded") from exc
            except Exception as exc:  # the SDK's XML parser raises assorted errors on garbage
                raise PayloadInvalid("bt_payload is not a Braintree notification") from exc
        raise SignatureInvalid("Braintree signature does not match")

    def verify_challenge(self, challenge: str) -> str:
        """The answer to ``GET ?bt_challenge=``; PayloadInvalid for a malformed challenge."""
        try:
            result: str = self._gateways[0].webhook_notification.verify(challenge)
        except (InvalidChallengeError, TypeError, ValueError) as exc:
            raise PayloadInvalid("bt_challenge must be 20-32 lowercase hex characters") from exc
        return result

