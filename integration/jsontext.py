"""JSON encoders built once and reused: each webhook writes five small JSON documents (job data, job meta, retry
intervals, the answer, the log line), and ``json.JSONEncoder.encode`` builds a new C encoder on every call.

``encoder(...)`` gives the text ``json.JSONEncoder(...).encode`` gives, from CPython's C encoder made once (it keeps
no state between calls, so threads may share it), or that ``encode`` itself where the C encoder is missing. One
difference: a value that contains itself raises ``RecursionError`` rather than ``ValueError``, as with
``check_circular=False`` (the values encoded here come from parsed JSON or are built by the service).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

__all__ = ["encoder"]


def encoder(
    *, separators: tuple[str, str] = (", ", ": "), default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """An ASCII-only JSON encoder with these separators and ``default`` (keys kept in order, NaN allowed)."""
    plain = json.JSONEncoder(separators=separators, default=default)
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # CPython without its _json accelerator
        return plain.encode
    item_separator, key_separator = separators
    try:
        # The arguments JSONEncoder.iterencode passes, but no circular-reference markers (a dict it would fill in
        # during a call: not shareable between threads).
        chunks = make(None, plain.default, _json_encoder.encode_basestring_ascii, None, key_separator,
                      item_separator, False, False, True)
    except TypeError:  # pragma: no cover - a Python whose C encoder takes other arguments
        return plain.encode

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode
