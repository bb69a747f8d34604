"""Blueprints: webhooks (one module per source), health, admin, and the payment-method page."""
