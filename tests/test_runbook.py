"""Every alert the service can raise has its runbook entry, and every entry is one the code names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import integration.errors as errors
from integration.observability.sentry import _before_send
from integration.runbook import ALERTS, BY_CLASS, anchor_for, link

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_entry_named_in_code_has_its_section_and_no_section_is_orphaned():
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>\n## ', RUNBOOK))
    assert anchors == set(ALERTS), (set(ALERTS) - anchors, anchors - set(ALERTS))
    for anchor, title in ALERTS.items():
        assert f'<a id="{anchor}"></a>\n## {title}\n' in RUNBOOK, anchor
    assert set(BY_CLASS.values()) <= set(ALERTS)


@pytest.mark.parametrize("cls", sorted(_subclasses(errors.IntegrationError), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_error_of_the_service_has_a_runbook_entry(cls: type) -> None:
    assert anchor_for(cls) != "bug", f"{cls.__name__} has no runbook entry (integration/runbook.py BY_CLASS)"


def test_every_message_the_code_sends_to_sentry_names_its_runbook_entry():
    for path in [*ROOT.glob("integration/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        text = path.read_text()
        for match in re.finditer(r"capture_message\(", text):
            call = text[match.start():text.find(")", match.end()) + 1]
            window = text[max(0, match.start() - 1500):match.start()] + call
            assert "runbook" in window, f"{path.relative_to(ROOT)}: capture_message without a runbook tag"


def test_an_exception_event_is_tagged_with_its_entry():
    exc = errors.SaleNotApplied("Invoice INV-1 … refund the sale")
    event = _before_send({"exception": {"values": []}}, {"exc_info": (type(exc), exc, None)})
    assert event is not None and event["tags"]["runbook"] == link("sale-not-applied")
    assert _before_send({"message": "x"}, {})["tags"]["runbook"] == link("bug")
