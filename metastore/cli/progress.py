"""Drawing the library's progress: a tqdm bar on a terminal, log lines otherwise.

The library counts (``metastore.progress``); this is the one place that
draws. Scripts that want the same bar call :func:`terminal`.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from metastore.progress import Display, DisplayFactory, Progress


class Bar:
    """A tqdm bar over one ``Progress``: its main quantity, the others beside it."""

    def __init__(self, progress: Progress) -> None:
        self._bar: Any = tqdm(
            total=progress.total,
            desc=progress.description,
            unit=f" {progress.unit}",
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


def bar(progress: Progress) -> Display:
    """A tqdm bar (a ``DisplayFactory``)."""
    return Bar(progress)


def terminal(force: bool | None = None) -> DisplayFactory | None:
    """A bar when stderr is a terminal (or ``force``), else None: the library's log lines."""
    wanted = sys.stderr.isatty() if force is None else force
    return bar if wanted else None
