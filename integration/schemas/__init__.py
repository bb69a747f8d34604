"""Inbound marshmallow schemas, one module per source."""

from .attio import AttioDeliverySchema, AttioEventSchema
from .braintree import BraintreeEventSchema, notification_to_dict
from .zoho import ZohoEventSchema

__all__ = [
    "AttioDeliverySchema",
    "AttioEventSchema",
    "BraintreeEventSchema",
    "ZohoEventSchema",
    "notification_to_dict",
]
