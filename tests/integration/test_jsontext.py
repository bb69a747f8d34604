"""The reusable JSON encoders write exactly what ``json.JSONEncoder`` writes, from several threads at once."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from json import encoder as json_encoder

import pytest

from integration.jsontext import encoder

VALUES = [
    {"b": 1, "a": [1, 2.5, -0.0, 1e300, float("nan"), float("inf"), -float("inf")], "c": None, "d": True},
    {"text": "quote \" backslash \\ newline \n tab \t nul \x00 é 日本 😀", "empty": "", "nested": {"x": [[], {}]}},
    [2**70, -(2**63), 0, False, ("tuple", 1)],
    {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    "top-level string",
    12,
    None,
]


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
@pytest.mark.parametrize("value", VALUES)
def test_same_text_as_json_encoder(value, separators):
    assert encoder(separators=separators)(value) == json.JSONEncoder(separators=separators).encode(value)


def test_default_writes_what_json_cannot_hold():
    def default(obj):
        return obj.isoformat() if isinstance(obj, dt.date) else str(obj)

    value = {"when": dt.date(2026, 11, 30), "what": Exception("boom"), "list": [dt.datetime(2026, 1, 2, 3, 4)]}
    assert encoder(default=default)(value) == json.JSONEncoder(default=default).encode(value)


def test_an_unsupported_value_is_a_type_error_as_with_json():
    with pytest.raises(TypeError, match="not JSON serializable"):
        encoder()({"when": dt.date(2026, 11, 30)})


def test_threads_share_one_encoder():
    # A default that sleeps lets another thread run in the middle of an encode; an encoder that kept state between
    # calls (such as JSONEncoder's circular-reference markers) would see the shared list as circular, or mix up text.
    def slow(obj):
        time.sleep(0.0005)
        return f"slow-{obj.n}"

    class Slow:
        def __init__(self, n):
            self.n = n

    encode = encoder(default=slow)
    shared = [Slow(0), Slow(1)]
    errors: list[BaseException] = []
    results: list[tuple[int, str]] = []

    def work(i):
        try:
            for _ in range(20):
                results.append((i, encode({"i": i, "shared": shared})))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 160
    assert all(text == f'{{"i": {i}, "shared": ["slow-0", "slow-1"]}}' for i, text in results)


def test_without_the_c_encoder_it_is_json_encoder(monkeypatch):
    monkeypatch.setattr(json_encoder, "c_make_encoder", None)
    encode = encoder(separators=(",", ":"))
    assert getattr(encode, "__self__", None).__class__ is json.JSONEncoder
    for value in VALUES:
        assert encode(value) == json.JSONEncoder(separators=(",", ":")).encode(value)
