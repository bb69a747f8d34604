"""Job modules, one per source; each exposes ``handle_*`` (pure) and ``run_*`` (the RQ entrypoint)."""
