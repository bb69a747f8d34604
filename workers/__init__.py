"""RQ job handlers and the worker process (``python -m workers``)."""
