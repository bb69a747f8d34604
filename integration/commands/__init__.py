"""CLI command groups, one module per noun (jobs, attio, sync, audit, webhooks, explain, reconcile, dunning), and
``doctor``.

Every command runs in the ``bulk`` lane of the provider budgets (``integration.worklane``): an operator's sync
or audit waits its turn behind the charges the workers are making, never the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from flask import Flask

from ..worklane import BULK, lane, operation

__all__ = ["register_all"]


def register_all(app: Flask) -> None:
    """Register every command group on the app, each command in the bulk lane."""
    from . import attio, audit, doctor, explain, jobs, quota, reconcile, sync, webhooks

    for group in (jobs.group, attio.group, audit.group, sync.group, webhooks.group, explain.group,
                  reconcile.dunning_group):
        _in_bulk_lane(group)
        app.cli.add_command(group)
    for command in (doctor.command, reconcile.reconcile, quota.command):
        _bulk_command(command)
        app.cli.add_command(command)


def _in_bulk_lane(group: click.Group) -> None:
    """Make each command of ``group`` run in the bulk lane (once, however often the app is built)."""
    for command in group.commands.values():
        _bulk_command(command)


def _bulk_command(command: click.Command) -> None:
    callback = command.callback
    if callback is None or getattr(callback, "_bulk_lane", False):
        return
    command.callback = _bulk(callback)


# the operation a command's provider calls are counted under (integration.clients.quota), by its module
_OPERATIONS = {"audit": "audit", "sync": "catalog", "reconcile": "sweeps"}


def _bulk(callback: Callable[..., Any]) -> Callable[..., Any]:
    counted = _OPERATIONS.get(callback.__module__.rsplit(".", 1)[-1], "other")

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        with lane(BULK), operation(counted):
            return callback(*args, **kwargs)

    run._bulk_lane = True  # type: ignore[attr-defined]
    return run
