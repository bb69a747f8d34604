"""How a command waits: "not now" and transient provider errors are waited out, bounded, with a visible countdown.

A command that calls providers runs its work as ``patiently(step, what=...)``: when ``step`` raises
``ServiceUnavailable`` (a 429, the shared budget spent, an open circuit, a busy lock, a 5xx, a timeout), it
prints what it waits for and for how long (the time the provider or breaker named, else 2, 4, 8 … 30 s), counts
down on a terminal, and calls ``step`` again, until ``patience`` seconds (``PATIENCE_SECONDS``, 10 minutes) have
passed; then it stops with exit status 2. ``step`` must therefore be safe to run again (every reconcile here
converges: it writes only what is still missing).

Exit statuses of every command: ``EXIT_DONE`` (0) done; ``EXIT_PROBLEMS`` (1) done, and found problems it reports
(conflicts, violations); ``EXIT_UNFINISHED`` (2) could not finish (the providers stayed unavailable past the
patience, a provider refused a call, a bad setting).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import NotNow, ServiceRejected, ServiceUnavailable

__all__ = [
    "EXIT_DONE",
    "EXIT_PROBLEMS",
    "EXIT_UNFINISHED",
    "PATIENCE_SECONDS",
    "CouldNotFinish",
    "patience_option",
    "patiently",
]

T = TypeVar("T")

EXIT_DONE = 0
EXIT_PROBLEMS = 1
EXIT_UNFINISHED = 2
PATIENCE_SECONDS = 600.0  # total a command waits for providers before it gives up
_BACKOFF = (2.0, 4.0, 8.0, 16.0, 30.0)  # seconds between tries when the error names no time


class CouldNotFinish(click.ClickException):
    """The command stopped before its work was done (exit status 2)."""

    exit_code = EXIT_UNFINISHED


def patience_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--patience SECONDS``: how long the command may wait for providers in total (default 600)."""
    return click.option(
        "--patience",
        type=click.FloatRange(min=0),
        default=PATIENCE_SECONDS,
        show_default=True,
        help="Seconds to wait out rate limits and provider errors, in total, before giving up (exit 2).",
    )(func)


def patiently(
    step: Callable[[], T],
    *,
    what: str,
    patience: float = PATIENCE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``step()``, called again after each ``ServiceUnavailable`` until ``patience`` seconds are spent.

    Raises ``CouldNotFinish`` (exit 2) when the patience is spent or a provider refuses a call (``ServiceRejected``).
    """
    deadline = clock() + patience
    tries = 0
    while True:
        tries += 1
        try:
            return step()
        except ServiceRejected as exc:
            raise CouldNotFinish(f"{what} stopped: {exc}") from exc
        except ServiceUnavailable as exc:
            wait = _wait_for(exc, tries)
            left = deadline - clock()
            if wait > left:
                raise CouldNotFinish(
                    f"{what} could not finish: {exc} (gave up after {tries} tries and {patience:.0f}s of waiting; "
                    "run it again later)"
                ) from exc
            kind = "not now" if isinstance(exc, NotNow) else "transient"
            click.echo(f"{what}: {kind}: {exc}; waiting {wait:.0f}s, then try {tries + 1} "
                       f"({left:.0f}s of patience left)", err=True)
            _count_down(wait, sleep)


def _wait_for(exc: ServiceUnavailable, tries: int) -> float:
    if exc.retry_after is not None:
        return max(1.0, float(exc.retry_after))
    return _BACKOFF[min(tries, len(_BACKOFF)) - 1]


def _count_down(seconds: float, sleep: Callable[[float], None]) -> None:
    """Sleep ``seconds``; on a terminal, show the seconds left on one line."""
    if not sys.stderr.isatty():
        sleep(seconds)
        return
    remaining = seconds
    while remaining > 0:
        click.echo(f"\r  retrying in {remaining:4.0f}s ", nl=False, err=True)
        step = min(1.0, remaining)
        sleep(step)
        remaining -= step
    click.echo("\r" + " " * 24 + "\r", nl=False, err=True)
