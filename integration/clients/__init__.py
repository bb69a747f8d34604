"""Service-layer clients, one per provider, built from injected parts (base URL, credentials, session, budget,
breaker) and speaking the provider's own domain words. Every failure surfaces as the error tree's
``ServiceUnavailable`` (retry) or ``ServiceRejected`` (fail now)."""
