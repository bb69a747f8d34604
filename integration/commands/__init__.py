"""CLI command groups, one module per noun (jobs, attio, sync, audit, webhooks, explain, reconcile, dunning), and
``doctor``."""

from __future__ import annotations

from flask import Flask

__all__ = ["register_all"]


def register_all(app: Flask) -> None:
    """Register every command group on the app."""
    from . import attio, audit, doctor, explain, jobs, reconcile, sync, webhooks

    app.cli.add_command(jobs.group)
    app.cli.add_command(attio.group)
    app.cli.add_command(audit.group)
    app.cli.add_command(sync.group)
    app.cli.add_command(webhooks.group)
    app.cli.add_command(doctor.command)
    app.cli.add_command(explain.group)
    app.cli.add_command(reconcile.reconcile)
    app.cli.add_command(reconcile.dunning_group)
