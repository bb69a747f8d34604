"""The Zoho → Attio catalog reconcile (workflow 1)."""

from __future__ import annotations

from typing import Any

from integration.errors import NoHandler

from ._entry import entrypoint

__all__ = ["run_catalog_sync"]


@entrypoint("catalog.sync")
def run_catalog_sync(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for a full catalog reconcile."""
    raise NoHandler("no handler yet for the catalog sync")
