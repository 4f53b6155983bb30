"""Progress of long work: a bar on a terminal, periodic log lines otherwise.

Library code reports through ``Progress``; whether that becomes a tqdm bar
(stderr is a terminal) or an INFO log line every few seconds is decided
here, once.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Counts named quantities (``studies``, ``instances``...) against an optional total.

    ``total`` and ``unit`` describe the main quantity (the bar's); the others
    are shown beside it. ``interval`` is the seconds between log lines.
    """

    def __init__(
        self,
        description: str,
        *,
        total: int | None = None,
        unit: str = "items",
        interval: float = 5.0,
        bar: bool | None = None,
    ) -> None:
        self.description = description
        self.unit = unit
        self.total = total
        self.counts: dict[str, int] = {unit: 0}
        self.interval = interval
        self._started = time.monotonic()
        self._last_log = self._started
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar: Any = (
            tqdm(total=total, desc=description, unit=f" {unit}", dynamic_ncols=True, leave=True)
            if use_bar
            else None
        )

    def set_total(self, total: int) -> None:
        """Set or change the total of the main quantity."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, advance: int = 1, **others: int) -> None:
        """Advance the main quantity and add to the others (``instances=100``)."""
        self.counts[self.unit] += advance
        for name, value in others.items():
            self.counts[name] = self.counts.get(name, 0) + value
        if self._bar is not None:
            self._bar.set_postfix(
                {k: v for k, v in self.counts.items() if k != self.unit}, refresh=False
            )
            self._bar.update(advance)
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

    def summary(self) -> str:
        """One line: counts, total and rates."""
        main = self.counts[self.unit]
        parts = [f"{main}{'/' + str(self.total) if self.total is not None else ''} {self.unit}"]
        parts += [f"{value} {name}" for name, value in self.counts.items() if name != self.unit]
        rates = ", ".join(f"{self.rate(name):,.0f} {name}/s" for name in self.counts)
        return f"{', '.join(parts)} in {self.elapsed:.1f}s ({rates})"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
