"""Workflows: pure functions of (event, clients) that the RQ jobs in ``workers.jobs`` delegate to."""
