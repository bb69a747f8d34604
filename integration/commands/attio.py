"""``flask --app integration attio setup``: create, through the API, what the Attio data model is missing.

It first reads the whole workspace and checks every existing attribute against ``integration.attio_schema``; on
any conflict it prints each one and exits 1 having created nothing. Otherwise it creates the missing objects,
then the unique attributes (the service upserts through them, and uniqueness is not retroactive), then the
other attributes and their select options. It never changes or deletes anything that exists, so a second run
creates nothing.

``--check`` only reads and reports (what is missing, what conflicts; exit 1 on either): ``doctor`` runs the same
survey. ``--webhook-url https://<host>/webhooks/attio`` also registers the service's webhook (record events of the
``subscriptions`` object, not caused by an API token: ``clients.attio.subscriptions_filter``) unless one for that
URL exists, and prints its secret once (Attio shows it only in the create answer).

What the API cannot tell beforehand is what the workspace's plan allows: how many custom objects (the service
needs three) and whether custom attributes of the standard ``companies`` object may be unique. A refusal of either
(Attio's plan-gated refusal is a 403 ``billing_error``) stops setup with a line saying which, what exists so far,
and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..attio_schema import OBJECTS, AttributeSpec, ObjectSpec, attribute_conflicts
from ..clients.attio import (
    RECORD_EVENTS,
    AttioClient,
    build_attio_client,
    subscriptions_filter,
)
from ..errors import ServiceError, ServiceRejected
from ._credentials import needs_credentials
from ._patience import CouldNotFinish, patience_option, patiently

__all__ = [
    "Workspace",
    "attio_client_from_app",
    "ensure_schema",
    "ensure_webhook",
    "group",
    "missing_items",
    "survey_schema",
    "webhook_problem",
]

group = click.Group("attio", help="Set up the Attio workspace.")

Echo = Callable[[str], None]


def attio_client_from_app() -> AttioClient:
    """An AttioClient built from the current app's settings and Redis (shared budgets and breaker)."""
    return build_attio_client(current_app.extensions["settings"], current_app.extensions["redis"])


@dataclass
class Workspace:
    """What the workspace already holds of the data model."""

    object_ids: dict[str, str] = field(default_factory=dict)  # object slug → object id
    attributes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # object → slug → attribute
    options: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (object, attribute) → live titles


def survey_schema(client: AttioClient) -> tuple[Workspace, list[str]]:
    """Read the workspace; return what exists and every conflict with the data model (reads only)."""
    ws = Workspace(object_ids={o["api_slug"]: o["id"]["object_id"] for o in client.list_objects()})
    conflicts: list[str] = []
    for obj in OBJECTS:
        if obj.slug not in ws.object_ids:
            if obj.standard:
                conflicts.append(f"object {obj.slug} is missing: it is a standard object, enable it in Attio")
            continue
        attrs = {a["api_slug"]: a for a in client.list_attributes(obj.slug, show_archived=True)}
        ws.attributes[obj.slug] = attrs
        for spec in obj.attributes:
            if spec.slug not in attrs:
                continue
            problems = attribute_conflicts(obj.slug, spec, attrs[spec.slug], ws.object_ids)
            conflicts.extend(problems)
            if spec.options and not problems:
                options = client.list_options(obj.slug, spec.slug, show_archived=True)
                ws.options[(obj.slug, spec.slug)] = {o["title"] for o in options if not o.get("is_archived")}
                conflicts.extend(
                    f'{obj.slug}.{spec.slug} option "{o["title"]}" is archived; unarchive it in Attio'
                    for o in options
                    if o.get("is_archived") and o["title"] in spec.options
                )
    return ws, conflicts


def ensure_schema(client: AttioClient, ws: Workspace, echo: Echo) -> tuple[int, int]:
    """Create the missing objects, unique attributes, other attributes and options; returns (created, found)."""
    created = found = 0

    def report(label: str, made: bool) -> None:
        nonlocal created, found
        created, found = created + made, found + (not made)
        echo(f"{label}: {'created' if made else 'already there'}")

    for obj in OBJECTS:
        made = obj.slug not in ws.object_ids
        if made:
            ws.object_ids[obj.slug] = _create_object(client, obj)
            ws.attributes.setdefault(obj.slug, {})
        report(f"object {obj.slug}", made)
    ordered = [(o, a) for o in OBJECTS for a in o.attributes if a.unique]
    ordered += [(o, a) for o in OBJECTS for a in o.attributes if not a.unique]
    for obj, spec in ordered:
        made = spec.slug not in ws.attributes[obj.slug] and _create_attribute(client, ws, obj, spec)
        report(f"attribute {obj.slug}.{spec.slug} [{spec.describe()}]", made)
        live = ws.options.setdefault((obj.slug, spec.slug), set())
        for title in spec.options:
            made = title not in live and _create_option(client, obj.slug, spec.slug, title)
            live.add(title)
            report(f'option {obj.slug}.{spec.slug} "{title}"', made)
    return created, found


def missing_items(ws: Workspace) -> list[str]:
    """What setup would create: objects, attributes and options of the data model the workspace lacks."""
    missing: list[str] = []
    for obj in OBJECTS:
        if obj.slug not in ws.object_ids:
            if not obj.standard:
                missing.append(f"object {obj.slug} (a custom object)")
            continue
        attrs = ws.attributes.get(obj.slug, {})
        for spec in obj.attributes:
            if spec.slug not in attrs:
                missing.append(f"attribute {obj.slug}.{spec.slug} [{spec.describe()}]")
                continue
            live = ws.options.get((obj.slug, spec.slug), set())
            missing.extend(f'option {obj.slug}.{spec.slug} "{t}"' for t in spec.options if t not in live)
    return missing


def _custom_objects() -> list[str]:
    return [o.slug for o in OBJECTS if not o.standard]


def _create_object(client: AttioClient, obj: ObjectSpec) -> str:
    try:
        return str(client.create_object(obj.slug, obj.singular, obj.plural)["id"]["object_id"])
    except ServiceRejected as exc:
        if exc.status in (402, 403):
            needed = _custom_objects()
            raise click.ClickException(
                f"Attio refused to create the custom object {obj.slug} ({exc.code or exc.status}: {exc.message}). "
                f"The service needs {len(needed)} custom objects ({', '.join(needed)}); the workspace's plan "
                "seems to allow fewer. Upgrade the plan (or free a custom object), then run `attio setup` again."
            ) from exc
        found = client.get_object(obj.slug) if exc.status == 409 else None  # created meanwhile (another run)
        if found is None:
            raise
        return str(found["id"]["object_id"])


def _create_option(client: AttioClient, object_slug: str, attribute: str, title: str) -> bool:
    try:
        client.create_option(object_slug, attribute, title)
        return True
    except ServiceRejected as exc:
        if exc.status != 409:  # 409: created meanwhile (another run)
            raise
        return False


def _create_attribute(client: AttioClient, ws: Workspace, obj: ObjectSpec, spec: AttributeSpec) -> bool:
    try:
        ws.attributes[obj.slug][spec.slug] = client.create_attribute(obj.slug, spec.create_body())
        return True
    except ServiceRejected as exc:
        if spec.unique and obj.standard and exc.status in (400, 402, 403):
            raise click.ClickException(
                f"Attio refused the unique attribute {obj.slug}.{spec.slug} ({exc.code or exc.status}: "
                f"{exc.message}). The service finds {obj.slug} through it, so it must be unique; the workspace's "
                f"plan seems not to allow unique custom attributes on the standard {obj.slug} object. Upgrade the "
                "plan, or ask Attio support, then run `attio setup` again."
            ) from exc
        if exc.status != 409:
            raise
    # created meanwhile (another run): use it only if it fits
    attrs = {a["api_slug"]: a for a in client.list_attributes(obj.slug, show_archived=True)}
    if spec.slug not in attrs:
        raise click.ClickException(f"{obj.slug}.{spec.slug}: Attio reports a slug conflict but lists no attribute")
    problems = attribute_conflicts(obj.slug, spec, attrs[spec.slug], ws.object_ids)
    if problems:
        raise click.ClickException("; ".join(problems))
    ws.attributes[obj.slug][spec.slug] = attrs[spec.slug]
    return False


def _is_service_webhook(hook: dict[str, Any], url: str, object_id: str) -> bool:
    """Whether a webhook is the service's: that URL, both record events, filtered on the subscriptions object."""
    if hook.get("target_url") != url:
        return False
    wanted = subscriptions_filter(object_id)
    subs = {s.get("event_type"): s.get("filter") for s in hook.get("subscriptions") or []}
    return all(subs.get(event) == wanted for event in RECORD_EVENTS)


def webhook_problem(client: AttioClient, url: str) -> str | None:
    """None when the service's webhook is registered for ``url`` as it should be; else what is wrong (reads only)."""
    obj = client.get_object("subscriptions")
    if obj is None:
        return "the subscriptions object is missing (run `attio setup`)"
    object_id = str(obj["id"]["object_id"])
    hooks = [h for h in client.list_webhooks() if h.get("status", "active") != "inactive"]
    if any(_is_service_webhook(h, url, object_id) for h in hooks):
        return None
    if any(h.get("target_url") == url for h in hooks):
        return (f"a webhook for {url} exists but not as the service's (record.created and record.updated filtered on "
                "the subscriptions object, not api-token); delete it in Attio first")
    return f"no active webhook for {url}"


def ensure_webhook(client: AttioClient, url: str, echo: Echo) -> None:
    """Register the service's webhook for ``url`` unless it exists; print the new secret once."""
    problem = webhook_problem(client, url)
    if problem is None:
        echo(f"webhook {url}: already there")
        return
    if "exists but" in problem:
        raise click.ClickException(problem)
    object_id = str((client.get_object("subscriptions") or {})["id"]["object_id"])
    subs = [{"event_type": event, "filter": subscriptions_filter(object_id)} for event in RECORD_EVENTS]
    hook = client.create_webhook(url, subs)
    echo(f"webhook {url}: created (record.created, record.updated of subscriptions, not api-token)")
    echo(f"set ATTIO_WEBHOOK_SECRET to this secret (Attio shows it only once): {hook.get('secret')}")


@group.command("setup")
@click.option("--check", is_flag=True, help="Only report what is missing or conflicts (reads only); exit 1 if any.")
@click.option("--webhook-url", default=None, help="Also register the webhook for this https URL if missing.")
@patience_option
@with_appcontext
@needs_credentials("attio")
def setup_command(check: bool, webhook_url: str | None, patience: float) -> None:
    """Create the Attio objects, attributes and options of the data model that are missing; exit 1 on conflicts.

    Rate limits and Attio errors are waited out (``--patience``); exit 2 when it could not finish.
    """
    client = attio_client_from_app()

    def survey() -> tuple[Workspace, list[str]]:
        return survey_schema(client)

    try:
        ws, conflicts = patiently(survey, what="attio setup (reading the workspace)", patience=patience)
    except CouldNotFinish as exc:
        cause = exc.__cause__
        if isinstance(cause, ServiceError) and cause.status in (401, 403):
            hint = " (check ATTIO_API_KEY and its object_configuration:read-write scope)"
            raise CouldNotFinish(exc.message + hint) from cause  # click's message is Final
        raise
    if conflicts:
        for line in conflicts:
            click.echo(f"conflict: {line}", err=True)
        raise click.ClickException(  # exit 1: found problems
            f"{len(conflicts)} conflict(s) with the data model; nothing was created or changed. "
            "Fix or rename these attributes in Attio, then run `attio setup` again."
        )
    if check:
        missing = missing_items(ws)
        for line in missing:
            click.echo(f"missing: {line}", err=True)
        problem = webhook_problem(client, webhook_url) if webhook_url else None
        if problem:
            click.echo(f"webhook: {problem}", err=True)
        if missing or problem:
            what = "the webhook" if not missing else f"{len(missing)} missing item(s)"
            raise click.ClickException(f"{what}: run `attio setup` (with --webhook-url for the webhook)")
        click.echo("attio setup --check: the workspace holds the data model")
        return

    def create() -> tuple[int, int]:  # safe to run again: it creates only what is still missing
        fresh, _ = survey_schema(client)
        made = ensure_schema(client, fresh, click.echo)
        if webhook_url:
            ensure_webhook(client, webhook_url, click.echo)
        return made

    created, found = patiently(create, what="attio setup", patience=patience)
    click.echo(f"attio setup done: {created} created, {found} already there")
