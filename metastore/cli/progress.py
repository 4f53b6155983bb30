"""Drawing the library's progress: a tqdm bar on a terminal, a line every few seconds otherwise.

The library counts (``metastore.progress``); this is the one place that
draws. Off a terminal (a log file, a pipe, a service) a line goes to
stderr every ``INTERVAL`` seconds and at the end, whatever the log level.
Scripts that want the same display call :func:`terminal`. The last
progress drawn is kept, so an interrupted command can say how far it got.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from metastore.progress import Display, DisplayFactory, Progress

#: Seconds between progress lines off a terminal.
INTERVAL = 5.0

#: The most recent progress drawn (what an interrupted command reports).
last: list[Progress] = []


class Bar:
    """A tqdm bar over one ``Progress``: its main quantity, the others beside it."""

    def __init__(self, progress: Progress) -> None:
        from tqdm import tqdm

        by_bytes = progress.unit == "bytes"
        self._bar: Any = tqdm(
            total=progress.total,
            desc=progress.description,
            unit="B" if by_bytes else f" {progress.unit}",
            unit_scale=by_bytes,
            unit_divisor=1024 if by_bytes else 1000,
            dynamic_ncols=True,
            leave=True,
        )

    def draw(self, progress: Progress, advance: int) -> None:
        if self._bar.total != progress.total:
            self._bar.total = progress.total
            self._bar.refresh()
        others = {k: v for k, v in progress.counts.items() if k != progress.unit}
        if others:
            self._bar.set_postfix(others, refresh=False)
        if advance:
            self._bar.update(advance)

    def close(self) -> None:
        self._bar.close()


class Lines:
    """A line on stderr every ``INTERVAL`` seconds, and at the end of work that showed one."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._last = time.monotonic()
        self._shown = False

    def draw(self, progress: Progress, advance: int) -> None:
        now = time.monotonic()
        if now - self._last >= INTERVAL:
            self._last = now
            self._show()

    def _show(self) -> None:
        progress = self._progress
        print(f"{progress.description}: {progress.summary()}", file=sys.stderr, flush=True)
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._show()


def bar(progress: Progress) -> Display:
    """A tqdm bar (a ``DisplayFactory``)."""
    last[:] = [progress]
    return Bar(progress)


def lines(progress: Progress) -> Display:
    """Progress lines on stderr (a ``DisplayFactory``)."""
    last[:] = [progress]
    return Lines(progress)


def terminal(force: bool | None = None) -> DisplayFactory:
    """A bar when stderr is a terminal (or ``force``), else a line every few seconds."""
    wanted = sys.stderr.isatty() if force is None else force
    return bar if wanted else lines
