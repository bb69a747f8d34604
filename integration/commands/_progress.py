"""A click progress bar for commands that learn how many items there are only on the first report."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click

__all__ = ["Progress", "to_stderr"]


class Progress:
    """Called as ``progress(done, total)``: starts the bar on the first report with a total, then advances it."""

    def __init__(self, label: str, *, file: TextIO | None = None) -> None:
        self._label = label
        self._file = file
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if total == 0:
                return
            self._bar = click.progressbar(length=total, label=self._label, show_pos=True, file=self._file)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        """Finish the bar (if it started)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def to_stderr(label: str) -> Progress:
    """A bar on stderr (stdout keeps the command's report)."""
    return Progress(label, file=sys.stderr)
