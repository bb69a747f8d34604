"""rq-dashboard at ``/rq``: basic auth on every path (pages, JSON, static) and no state change by GET.

rq-dashboard 0.9 answers ``GET /requeue/<queue>`` ("requeue all") and reads jobs with the pickle serializer
by default (its Requeue buttons even re-save a requeued job's meta pickled, which the JSON workers cannot read);
both are corrected here. It also imports ``six`` without declaring it (requirements.txt pins it).

Its job page inserts a job's description, metadata, result and exception unescaped (``<%= %>`` of underscore
templates, then ``innerHTML``), and job data is partly sender input: its templates are served through
``_EscapingLoader``, which turns every ``<%= %>`` into the escaping ``<%- %>`` and puts the request's CSP nonce on
the one inline script (``headers`` forbids any other). ``tests/browser/test_dashboard.py`` plants markup in every
field and checks it shows as text.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from flask import Flask, Response, request
from jinja2 import BaseLoader, ChoiceLoader, Environment, PackageLoader, TemplateNotFound
from rq import requeue_job
from rq.exceptions import NoSuchJobError
from rq.serializers import JSONSerializer

from .auth import cross_site
from .config import Settings

__all__ = ["PREFIX", "init_dashboard"]

PREFIX = "/rq"


def init_dashboard(app: Flask, settings: Settings) -> None:
    """Mount rq-dashboard under ``/rq``; call after ``require_auth_under`` covers ``/rq`` (401 comes first)."""
    import rq_dashboard
    from rq_dashboard import web

    web.config.serializer = JSONSerializer
    web.requeue_job = partial(requeue_job, serializer=JSONSerializer)  # its requeue views ignore the config
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    web.setup_rq_connection(app)  # builds a client; Redis is contacted on the first page load
    # The app's own loader is asked before any blueprint's: the escaped copies win over rq-dashboard's.
    app.jinja_loader = ChoiceLoader([_EscapingLoader(), app.jinja_loader])  # type: ignore[list-item]

    # Guards the dashboard's own routes only; an app hook rather than one of its blueprint, which is shared by every
    # app of the process. A path under /rq that matches none of them answers 404 or 405.
    @app.before_request
    def guard() -> Response | None:
        return _guard_dashboard() if request.blueprint == rq_dashboard.blueprint.name else None
    # rq-dashboard lets a job id that does not exist (expired, mistyped) escape as a 500.
    app.register_error_handler(NoSuchJobError, lambda _: ({"error": "not_found"}, 404))


def _guard_dashboard() -> Response | None:
    """No state change by GET (rq-dashboard 0.9's "requeue all" answers GET) and no cross-site POST."""
    path = request.path
    if request.method not in ("GET", "HEAD", "POST") or (
        request.method != "POST" and path.startswith(PREFIX + "/requeue/")
    ):
        return Response('{"error": "method_not_allowed"}', status=405, mimetype="application/json",
                        headers={"Allow": "POST"})
    if request.method == "POST":
        return cross_site()  # basic auth is replayed by browsers: no cross-site form posting into the dashboard
    return None


# jobs.html escapes two fields itself, through jQuery: the same, escaped once by underscore instead.
_JQUERY_ESCAPED = re.compile(r"<%=\s*\$\('<div/>'\)\.text\((.+?)\)\.html\(\)\s*%>")
_INLINE_SCRIPT = '<script type="text/javascript">'  # base.html's one script without src


class _EscapingLoader(BaseLoader):
    """rq-dashboard's templates with every underscore interpolation escaped and its inline script nonced."""

    def __init__(self) -> None:
        self._inner = PackageLoader("rq_dashboard", "templates")

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        """The template's source, rewritten (only rq-dashboard's own templates)."""
        if not template.startswith("rq_dashboard/"):
            raise TemplateNotFound(template)
        source, filename, uptodate = self._inner.get_source(environment, template)
        return escaped_template(source), filename, uptodate


def escaped_template(source: str) -> str:
    """An rq-dashboard template with ``<%=`` (raw) interpolations made ``<%-`` (HTML-escaped)."""
    source = _JQUERY_ESCAPED.sub(r"<%- \1 %>", source)
    source = source.replace("<%=", "<%-")
    return source.replace(_INLINE_SCRIPT, '<script type="text/javascript" nonce="{{ csp_nonce() }}">')
