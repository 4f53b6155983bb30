"""A study's series while the launch-file reader holds them: memory first, then a temporary file."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Any

import orjson

#: Instances a study keeps in memory before its series spill to a temporary file.
SPOOL_INSTANCES = 20_000


class Spool:
    """A study's series: in memory up to a limit, then in a temporary file."""

    def __init__(self) -> None:
        self._held: list[tuple[int, list[dict[str, Any]]]] = []
        self._held_instances = 0
        self._file: IO[bytes] | None = None

    def add(self, index: int, instances: list[dict[str, Any]]) -> None:
        if self._file is None and self._held_instances + len(instances) <= SPOOL_INSTANCES:
            self._held.append((index, instances))
            self._held_instances += len(instances)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="metastore-study-")  # noqa: SIM115
            for held in self._held:
                self._write(held)
            self._held = []
        self._write((index, instances))

    def _write(self, item: tuple[int, list[dict[str, Any]]]) -> None:
        assert self._file is not None
        self._file.write(orjson.dumps(item))
        self._file.write(b"\n")

    def replay(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        if self._file is None:
            yield from self._held
            return
        self._file.seek(0)
        for line in self._file:
            index, instances = orjson.loads(line)
            yield index, instances

    def close(self) -> None:
        self._held = []
        if self._file is not None:
            self._file.close()
            self._file = None
