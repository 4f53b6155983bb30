"""Progress of long work: the library counts, a display draws.

Library code reports to a :class:`Progress` (or anything with its
``update``: a :class:`Counter`). By itself a ``Progress`` writes an INFO log
line every few seconds; a caller that wants more passes a
:data:`DisplayFactory`, such as the ``metastore`` command's tqdm bar on a
terminal (``metastore.cli.progress``). The library never draws.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

log = logging.getLogger(__name__)


class Counter(Protocol):
    """What long work reports to: the main quantity advances, the others add up."""

    def update(self, advance: int = 1, **others: int) -> None: ...


class Display(Protocol):
    """Draws one ``Progress`` (a bar): called on every update, closed at the end."""

    def draw(self, progress: Progress, advance: int) -> None: ...

    def close(self) -> None: ...


#: Makes the display of one piece of long work; ``True``, ``False`` and
#: ``None`` where one is asked for mean log lines only.
DisplayFactory = Callable[["Progress"], Display]
Reporting = DisplayFactory | bool | None


class Progress:
    """Counts named quantities (``studies``, ``instances``...) against an optional total.

    ``total`` and ``unit`` describe the main quantity (a bar's); the others
    are shown beside it. ``interval`` is the seconds between log lines when
    no display draws.
    """

    def __init__(
        self,
        description: str,
        *,
        total: int | None = None,
        unit: str = "items",
        interval: float = 5.0,
        display: Reporting = None,
    ) -> None:
        self.description = description
        self.unit = unit
        self.total = total
        self.counts: dict[str, int] = {unit: 0}
        self.interval = interval
        self._started = time.monotonic()
        self._last_log = self._started
        self._display: Display | None = (
            None if display is None or isinstance(display, bool) else display(self)
        )

    def set_total(self, total: int) -> None:
        """Set or change the total of the main quantity."""
        self.total = total
        if self._display is not None:
            self._display.draw(self, 0)

    def update(self, advance: int = 1, **others: int) -> None:
        """Advance the main quantity and add to the others (``instances=100``)."""
        self.counts[self.unit] += advance
        for name, value in others.items():
            self.counts[name] = self.counts.get(name, 0) + value
        if self._display is not None:
            self._display.draw(self, advance)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval:
            self._last_log = now
            log.info("%s: %s", self.description, self.summary())

    def rate(self, name: str | None = None) -> float:
        """Per-second rate of a quantity since the start."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return self.counts.get(name or self.unit, 0) / elapsed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def eta(self) -> float | None:
        """Seconds left at the rate so far (``None`` without a total or a start)."""
        done = self.counts[self.unit]
        if not self.total or not done:
            return None
        return max(self.total - done, 0) / self.rate()

    def summary(self) -> str:
        """One line: counts, total, percentage, rates and the time left."""
        main = self.counts[self.unit]
        head = f"{main:,}{f'/{self.total:,}' if self.total is not None else ''} {self.unit}"
        if self.total:
            head += f" ({100 * main / self.total:.0f}%)"
        parts = [head]
        parts += [f"{value:,} {name}" for name, value in self.counts.items() if name != self.unit]
        rates = ", ".join(f"{self.rate(name):,.0f} {name}/s" for name in self.counts)
        text = f"{', '.join(parts)} in {self.elapsed:.1f}s ({rates})"
        eta = self.eta()
        if eta is not None and main < (self.total or 0):
            text += f", about {eta:.0f}s left"
        return text

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
            self._display = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
