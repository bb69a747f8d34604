"""Strict JSON parsing of a verified body: any failure is a 400, never a 500."""

from __future__ import annotations

import json
from typing import Any

from ..errors import PayloadInvalid

__all__ = ["load_json"]


def load_json(body: bytes) -> Any:
    """Parse UTF-8 JSON; PayloadInvalid for bad encoding, bad syntax or absurd nesting."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PayloadInvalid("body is not UTF-8") from exc
    except RecursionError as exc:
        raise PayloadInvalid("body is nested too deeply") from exc
    except ValueError as exc:
        raise PayloadInvalid(f"body is not JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from exc
