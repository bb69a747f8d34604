"""Benchmarks: a command each (``python -m bench.<name>``), printing numbers and ratios against a baseline."""
