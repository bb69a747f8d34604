"""Security headers on every answer: HTML pages, JSON answers, errors and auth challenges alike.

Every answer gets ``nosniff``, ``Referrer-Policy: no-referrer``, HSTS, ``X-Frame-Options: DENY`` and a CSP with
``frame-ancestors 'none'`` (nothing of the service may be framed); HTML, JSON and text answers also get
``Cache-Control: no-store`` (they carry queue figures, payment links, job data). The CSP depends on the page:

- ``/rq`` (rq-dashboard): scripts only from the service itself or carrying the request's nonce, so markup that
  reaches a page cannot run (no inline script, no ``on*=`` attributes). ``'unsafe-eval'`` stays: the dashboard
  compiles its underscore templates with ``new Function``, which runs only the templates' own code.
- ``/pay`` (the payment page): the nonce, and Braintree's hosts for Drop-in (its scripts, frames and API calls).
- anything else (JSON, plain pages): ``default-src 'none'``.

Templates put ``nonce="{{ csp_nonce() }}"`` on their inline scripts; the nonce is fresh per request.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, g, request

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
    """This request's CSP nonce (made on first use)."""
    nonce = g.get("csp_nonce")
    if nonce is None:
        nonce = g.csp_nonce = secrets.token_urlsafe(16)
    return str(nonce)


def _csp(path: str) -> str:
    if path == "/rq" or path.startswith("/rq/"):
        return (f"default-src 'self'; script-src 'self' 'nonce-{csp_nonce()}' 'unsafe-eval'; "
                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    if path.startswith("/pay/"):
        return (f"default-src 'none'; script-src 'nonce-{csp_nonce()}' {BRAINTREE_JS_HOSTS} {_PAYPAL}; "
                f"style-src 'unsafe-inline' https://assets.braintreegateway.com; "
                f"img-src data: https://assets.braintreegateway.com https://checkout.paypal.com; "
                f"frame-src https://assets.braintreegateway.com {_PAYPAL}; connect-src {_BRAINTREE_API} {_PAYPAL}; "
                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return _DEFAULT_CSP


def init_security_headers(app: Flask) -> None:
    """Add the headers to every answer of the app (and ``csp_nonce()`` to its templates)."""
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    @app.after_request
    def _secure(response: Response) -> Response:
        headers = response.headers
        for name, value in _ALWAYS:
            headers[name] = value
        headers["Content-Security-Policy"] = _csp(request.path)
        if response.mimetype in _NO_STORE_TYPES:
            headers["Cache-Control"] = "no-store"
        return response
