"""Security headers on every answer: HTML pages, JSON answers, errors and auth challenges alike.

Every answer gets ``nosniff``, ``Referrer-Policy: no-referrer``, HSTS, ``X-Frame-Options: DENY`` and a CSP with
``frame-ancestors 'none'`` (nothing of the service may be framed); HTML, JSON and text answers also get
``Cache-Control: no-store`` (they carry queue figures, payment links, job data). The CSP depends on the page:

- ``/rq`` (rq-dashboard): scripts only from the service itself or carrying the request's nonce, so markup that
  reaches a page cannot run (no inline script, no ``on*=`` attributes). ``'unsafe-eval'`` stays: the dashboard
  compiles its underscore templates with ``new Function``, which runs only the templates' own code.
- ``/pay`` (the payment page): the nonce, and Braintree's hosts for Drop-in (its scripts, frames and API calls).
- anything else (JSON, plain pages): ``default-src 'none'``.

Templates put ``nonce="{{ csp_nonce() }}"`` on their inline scripts; the nonce is fresh per request (an answer that
made none allows no inline script at all).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, request

__all__ = ["BRAINTREE_JS_HOSTS", "csp_nonce", "init_security_headers"]

BRAINTREE_JS_HOSTS = "https://js.braintreegateway.com https://assets.braintreegateway.com"
_BRAINTREE_API = ("https://api.braintreegateway.com https://api.sandbox.braintreegateway.com "
                  "https://client-analytics.braintreegateway.com https://client-analytics.sandbox.braintreegateway.com "
                  "https://*.braintree-api.com")
_PAYPAL = "https://*.paypal.com https://www.paypalobjects.com"

_ALWAYS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
)
_DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_NO_STORE_TYPES = ("text/html", "application/json", "text/plain")


def csp_nonce() -> str:
    """This request's CSP nonce (made on first use; kept in the WSGI environ, where the headers are added)."""
    environ = request.environ
    nonce = environ.get(_NONCE_KEY)
    if nonce is None:
        nonce = environ[_NONCE_KEY] = secrets.token_urlsafe(16)
    return str(nonce)


_NONCE_KEY = "integration.csp_nonce"


def _csp(path: str, nonce: str | None) -> str:
    nonce = f" 'nonce-{nonce}'" if nonce else ""
    if path == "/rq" or path.startswith("/rq/"):
        return (f"default-src 'self'; script-src 'self'{nonce} 'unsafe-eval'; "
                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    if path.startswith("/pay/"):
        return (f"default-src 'none'; script-src{nonce} {BRAINTREE_JS_HOSTS} {_PAYPAL}; "
                f"style-src 'unsafe-inline' https://assets.braintreegateway.com; "
                f"img-src data: https://assets.braintreegateway.com https://checkout.paypal.com; "
                f"frame-src https://assets.braintreegateway.com {_PAYPAL}; connect-src {_BRAINTREE_API} {_PAYPAL}; "
                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return _DEFAULT_CSP


def init_security_headers(app: Flask) -> None:
    """Add the headers to every answer of the app (and ``csp_nonce()`` to its templates).

    Added where the answer starts (WSGI ``start_response``), as plain tuples: an ``after_request`` hook setting
    them through werkzeug's ``Headers`` cost ~7 % of a webhook's instructions."""
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    inner = app.wsgi_app

    def secured(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonce = environ.get(_NONCE_KEY)
            headers.extend(_ALWAYS)
            headers.append(("Content-Security-Policy", _csp(environ.get("PATH_INFO", ""), nonce)))
            content_type = next((v for k, v in headers if k == "Content-Type"), "")
            if content_type.startswith(_NO_STORE_TYPES):
                headers.append(("Cache-Control", "no-store"))
            return start_response(status, headers, exc_info)

        return inner(environ, start)

    app.wsgi_app = secured  # type: ignore[method-assign]
