"""The small readers in ``workers.records`` the workflows share: record ids, amounts, a sale's payment key."""

from __future__ import annotations

from decimal import Decimal

import pytest

from workers.records import amount, is_uuid, sale_key, sale_of

RID = "0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"


@pytest.mark.parametrize("text, expected", [
    (RID, True), (RID.upper(), True), (RID.replace("-", ""), False), ("{" + RID + "}", False),
    (f"urn:uuid:{RID}", False), ("SUB-0001", False), ("", False),
])
def test_only_a_canonical_record_id_is_a_uuid(text: str, expected: bool) -> None:
    assert is_uuid(text) is expected


@pytest.mark.parametrize("raw, expected", [
    (49.9, Decimal("49.9")), ("12.50", Decimal("12.50")), (0, Decimal(0)), (Decimal("1.005"), Decimal("1.005")),
    (None, None), ("", None), (True, None), ("abc", None), ("NaN", None), (float("inf"), None),
])
def test_an_amount_is_read_through_its_text_and_unreadable_is_none(raw: object, expected: Decimal | None) -> None:
    assert amount(raw) == expected


def test_a_sale_key_round_trips_and_other_keys_name_no_sale() -> None:
    assert sale_of(sale_key("abc123")) == "abc123"
    assert sale_of("zoho-invoice:1:2") is None and sale_of("braintree:") is None
