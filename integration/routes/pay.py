"""``/pay/<token>``: the payment-method page of an activation (workflow 2; built with the activation job)."""

from __future__ import annotations

from flask import Blueprint

__all__ = ["bp"]

bp = Blueprint("pay", __name__, url_prefix="/pay")
