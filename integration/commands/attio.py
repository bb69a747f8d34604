"""``flask --app integration attio setup``: create, through the API, what the Attio data model is missing.

It first reads the whole workspace and checks every existing attribute against ``integration.attio_schema``; on
any conflict it prints each one and exits 1 having created nothing. Otherwise it creates the missing objects,
then the unique attributes (the service upserts through them, and uniqueness is not retroactive), then the
other attributes and their select options. It never changes or deletes anything that exists, so a second run
creates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..attio_schema import OBJECTS, AttributeSpec, ObjectSpec, attribute_conflicts
from ..clients.attio import AttioClient, build_attio_client
from ..errors import ServiceError, ServiceRejected
from ._patience import CouldNotFinish, patience_option, patiently

__all__ = ["Workspace", "attio_client_from_app", "ensure_schema", "group", "survey_schema"]

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


def _create_object(client: AttioClient, obj: ObjectSpec) -> str:
    try:
        return str(client.create_object(obj.slug, obj.singular, obj.plural)["id"]["object_id"])
    except ServiceRejected as exc:
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


@group.command("setup")
@patience_option
@with_appcontext
def setup_command(patience: float) -> None:
    """Create the Attio objects, attributes and options of the data model that are missing; exit 1 on conflicts.

    Rate limits and Attio errors are waited out (``--patience``); exit 2 when it could not finish.
    """
    client = attio_client_from_app()

    def run_once() -> tuple[list[str], tuple[int, int]]:
        ws, conflicts = survey_schema(client)
        if conflicts:
            return conflicts, (0, 0)
        return [], ensure_schema(client, ws, click.echo)

    try:
        conflicts, (created, found) = patiently(run_once, what="attio setup", patience=patience)
    except CouldNotFinish as exc:
        cause = exc.__cause__
        if isinstance(cause, ServiceError) and cause.status in (401, 403):
            exc.message += " (check ATTIO_API_KEY and its object_configuration:read-write scope)"
        raise
    if conflicts:
        for line in conflicts:
            click.echo(f"conflict: {line}", err=True)
        raise click.ClickException(  # exit 1: found problems
            f"{len(conflicts)} conflict(s) with the data model; nothing was created or changed. "
            "Fix or rename these attributes in Attio, then run `attio setup` again."
        )
    click.echo(f"attio setup done: {created} created, {found} already there")
