"""Loopback simulators of Attio, Zoho Billing and Braintree: the local run, the benchmarks and the tests use them.

Each answers as the real provider does (shapes, error codes per resource, rate limits, lag), never kinder: the
money path is proven against them, so a default that is kinder than the provider would hide a bug.
"""
