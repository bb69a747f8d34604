"""``@needs_credentials("attio", "zoho")``: a command that calls those providers runs with their credentials, or
stops before doing anything with one line naming the variables it lacks (exit 2), never a traceback.

The CLI runs through ``create_app()``, whose ``web``-role settings hold no Attio or Zoho credential
(``integration.config``). A command that needs them reads them from the environment when it runs and puts the
completed settings in the app for its own run only (the CLI is a one-off process: no request shares the app). Commands
that call neither provider (``jobs …``, ``webhooks send``, ``dunning status``, ``explain event``) are left alone,
so they work in the web service's shell too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import current_app

from ..config import PROVIDER_CREDENTIALS, Settings
from ..errors import ConfigError

__all__ = ["needs_credentials"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2  # as a process that stops at start on a configuration error


def needs_credentials(*providers: str) -> Callable[[F], F]:
    """Run the command with ``providers``' credentials from the app's settings or the environment, else exit 2."""
    unknown = set(providers) - set(PROVIDER_CREDENTIALS)
    if unknown:
        raise ValueError(f"no credentials are known for {sorted(unknown)}")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            settings: Settings = current_app.extensions["settings"]
            try:
                complete = settings.with_credentials(*providers)
            except ConfigError as exc:
                calls = " and ".join(p.title() for p in providers)
                click.echo(f"configuration error: {exc} ({_name(func)} calls {calls}; "
                           "run it where the worker's environment is set)", err=True)
                sys.exit(EXIT_CONFIG)
            current_app.extensions["settings"] = complete
            try:
                return func(*args, **kwargs)
            finally:
                current_app.extensions["settings"] = settings

        run.needs_credentials = providers  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return decorate


def _name(func: Callable[..., Any]) -> str:
    """The command as typed after the program (``sync services``), however the CLI was started."""
    ctx = click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(names) or func.__name__
