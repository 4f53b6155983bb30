"""Reading OHIF "DICOM JSON" launch files, incrementally, one study at a time.

A launch file (OHIF's DICOM JSON data source) holds studies, their series and
every instance's naturalized metadata with a retrieval ``url``::

    {"studies": [{"StudyInstanceUID": "1.2", "PatientName": "Doe^J", ...,
                  "NumInstances": 2, "Modalities": "CT",
                  "series": [{"SeriesInstanceUID": "1.2.1", "Modality": "CT", ...,
                              "instances": [{"metadata": {...}, "url": "dicomweb:https://..."}]}]}]}

:func:`read_studies` parses it with ijson's C backend and holds at most one
series in memory (plus the study-level fields): it yields a
:class:`LaunchStudy` once the whole study has been read and checked, or a
:class:`StudyFailure` naming the JSON path of the first problem, such as
``studies[0].series[2].instances[5].metadata.SOPInstanceUID``. A study's
series wait in a spool (memory up to a limit, then a temporary file) until
the study is known to be sound, so a caller that writes a study only after it
was yielded never stores part of a bad study.

OHIF's conventions, and where we fix its bugs:

- an instance's imageId is its ``url``;
- study-level and series-level fields apply to every instance below them
  (OHIF spreads them over each instance); here an instance's own metadata
  wins where both give a value, and a UID that differs between levels is an
  error;
- a multi-frame instance written as one entry per frame (the same
  SOPInstanceUID, ``?frame=N`` in the url, as OHIF's generator writes it)
  becomes one instance whose url has no frame and whose ``NumberOfFrames``
  covers every frame seen; one entry with ``NumberOfFrames > 1`` stays one
  instance, and readers generate its per-frame imageIds
  (:func:`metastore.imageids.frame_image_ids`) where OHIF repeats one url.
"""

from __future__ import annotations

import gc
import logging
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, cast

import ijson

from metastore import records
from metastore.dicom import tag_for_keyword
from metastore.errors import InvalidMetadata, MetastoreError
from metastore.imageids import frame_number, strip_frame
from metastore.launchfile.format import SERIES_EXTRAS, STUDY_EXTRAS
from metastore.launchfile.spool import Spool
from metastore.records import Where

log = logging.getLogger(__name__)


# The container each structural prefix must start (anything else is not the launch shape).
_SHAPE = {
    "studies": ("start_array", "an array"),
    "studies.item": ("start_map", "an object"),
    "studies.item.series": ("start_array", "an array"),
    "studies.item.series.item": ("start_map", "an object"),
    "studies.item.series.item.instances": ("start_array", "an array"),
}
_STUDY = "studies.item"
_SERIES = "studies.item.series.item"
# Levels holding the launch structure: root, studies, a study, its series, a series.
_STRUCTURE_DEPTH = 5
# The deepest a container may open: an instance's metadata object sits at
# level 8 (root, studies, study, series list, series, instances, instance,
# metadata), and a value inside it may nest ``records.MAX_NESTING`` deep.
_DEEPEST = 8 + records.MAX_NESTING
# Steps of a JSON path shown in an error before it is cut short.
_PATH_PARTS = 16
# The structural prefix of a value, from its parent's (and its key, in an object).
_CHILD_ROLES: dict[str, tuple[str | None, str]] = {
    "": ("studies", "studies"),
    "studies": (None, _STUDY),
    _STUDY: ("series", "studies.item.series"),
    "studies.item.series": (None, _SERIES),
    _SERIES: ("instances", "studies.item.series.item.instances"),
}


def _role(parent: str | None, key: Any) -> str | None:
    """The structural prefix of a value inside ``parent`` (under ``key``), or None."""
    if parent is None:
        return None
    found = _CHILD_ROLES.get(parent)
    if found is None:
        return None
    wanted_key, role = found
    return role if wanted_key is None or wanted_key == key else None


@dataclass(frozen=True, kw_only=True)
class StudyFailure:
    """A study that was not read: where it is and what is wrong with it."""

    index: int
    study_uid: str | None
    error: MetastoreError

    def __str__(self) -> str:
        return f"studies[{self.index}] ({self.study_uid or 'no StudyInstanceUID'}): {self.error}"


@dataclass(kw_only=True)
class LaunchStudy:
    """One study of a launch file, read whole and checked.

    ``study`` holds the study-level fields (DICOM attributes only),
    ``summaries`` the series-level fields of each series (with
    ``StudyInstanceUID``), ``extras`` the launch-file-only fields
    (``NumInstances``, ``Modalities``). :meth:`series` gives each series'
    instances, ready for ``MetaStore.add_instances``. Call :meth:`close`
    (or use it as a context manager) to drop its spool.
    """

    index: int
    study: dict[str, Any]
    extras: dict[str, Any]
    summaries: list[dict[str, Any]]
    instance_count: int
    _spool: Spool = field(repr=False)

    @property
    def study_uid(self) -> str:
        return str(self.study["StudyInstanceUID"])

    def series(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(series summary, instances) of each series, in file order.

        Each instance carries the study's and its series' DICOM attributes
        (its own metadata winning), ``url`` and ``imageId``.
        """
        inherited_study = {k: v for k, v in self.study.items() if _is_attribute(k)}
        for index, instances in self._spool.replay():
            summary = self.summaries[index]
            inherited = {
                **inherited_study,
                **{k: v for k, v in summary.items() if _is_attribute(k)},
            }
            yield summary, [{**inherited, **instance} for instance in instances]

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> LaunchStudy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_attribute(key: str) -> bool:
    """Whether a naturalized key names a DICOM attribute (a keyword or a tag)."""
    if tag_for_keyword(key) is not None:
        return True
    return len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)


def _fail(
    message: str,
    path: str,
    file: str,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> InvalidMetadata:
    return InvalidMetadata(
        message, path=path, file=file, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
    )


def read_studies(stream: IO[bytes], *, name: str) -> Iterator[LaunchStudy | StudyFailure]:
    """The studies of a launch file, one at a time, in file order.

    ``name`` (a path or redacted URL) goes into error messages. A study with
    bad content is yielded as a :class:`StudyFailure` and reading goes on.
    Input that cannot be read on (not JSON, not the launch shape at the top
    level) raises ``InvalidMetadata`` with the JSON path where it broke.
    Each yielded :class:`LaunchStudy` owns a spool: close it when done.
    """
    reader = _Reader(name)
    try:
        with _fewer_collections():
            yield from reader.run(ijson.basic_parse(stream, use_float=True))
    except ijson.JSONError as err:
        raise _fail(f"not valid JSON: {_first_line(err)}", reader.path(), name) from err
    except UnicodeDecodeError as err:
        bad = err.object[err.start : err.end].hex(" ")
        raise _fail(f"not valid UTF-8 (bytes {bad}: {err.reason})", reader.path(), name) from err
    except (EOFError, zlib.error, OSError) as err:
        raise _fail(
            f"the file is truncated or corrupt: {_first_line(err)}", reader.path(), name
        ) from err
    finally:
        reader.close()


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect garbage less often while a file is parsed.

    Parsing allocates millions of short-lived containers while a study's
    series wait in memory; at CPython's default thresholds the collector
    rescans those over and over (a third of the parse time). Nothing here
    makes cycles, so rarer collections lose nothing; the thresholds are
    restored afterwards.
    """
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], 100_000), saved[1], saved[2])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _json_path(stack: list[Any], key: Any, structure: dict[int, int]) -> str:
    """The JSON path of the value about to go into ``stack[-1]`` (under ``key`` in an object).

    ``structure`` gives the index of the item being read in the structural
    lists (studies, a study's series), whose finished items are dropped as
    they are read.
    """
    parts: list[str] = []
    for level, parent in enumerate(stack):
        if type(parent) is list:
            parts.append(f"[{structure.get(level, len(parent) - 1)}]")
        elif parent:
            parts.append(f".{next(reversed(parent))}")
    # The last parent's entry is the new value itself, not yet added.
    top = stack[-1]
    parts[-1:] = [f"[{len(top)}]" if type(top) is list else f".{key}"]
    shown = parts[:_PATH_PARTS] + (["..."] if len(parts) > _PATH_PARTS else [])
    return "".join(shown).lstrip(".")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _Reader:
    """The event loop: builds values, and hands each finished series and study on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.study_index = -1
        self.series_index = -1
        self.prefix = ""
        self.spool: Spool | None = None
        self.study_error: MetastoreError | None = None
        self.summaries: list[dict[str, Any]] = []
        self.instance_count = 0
        # StudyInstanceUIDs met below the study level, with where each was first met.
        self.study_uids_below: dict[str, str] = {}

    def path(self) -> str:
        """A JSON path near the parser's position, for errors."""
        if self.study_index < 0:
            return "$"
        path = f"studies[{self.study_index}]"
        if self.prefix.startswith(_SERIES) and self.series_index >= 0:
            path += f".series[{self.series_index}]"
        return path

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def run(self, events: Iterator[tuple[str, Any]]) -> Iterator[LaunchStudy | StudyFailure]:
        """Build values from ijson's ``basic_parse`` events; hand on each finished series and study.

        The launch structure lies in the first five levels (root, studies,
        a study, its series list, a series); below them, inside the
        instances, the loop only builds, which is where almost all events are.
        """
        root: dict[str, Any] | None = None
        stack: list[Any] = []
        roles: list[str | None] = []  # the structural prefix of each of the first five levels
        key: Any = None
        for event, value in events:
            if event == "map_key":
                key = value
                continue
            depth = len(stack)
            if event == "end_map" or event == "end_array":
                done = stack.pop()
                if depth <= _STRUCTURE_DEPTH:
                    role = roles.pop()
                    if role == _SERIES:
                        stack[-1].pop()
                        self._end_series(done)
                        self.prefix = _STUDY
                    elif role == _STUDY:
                        stack[-1].pop()
                        yield self._end_study(done)
                continue
            opens = event == "start_map" or event == "start_array"
            if opens and depth >= _DEEPEST and self.study_error is None:
                self.study_error = _fail(
                    f"a value nests more than {records.MAX_NESTING} levels deep",
                    _json_path(stack, key, self._structure(roles)),
                    self.name,
                )
            item: Any = ({} if event == "start_map" else []) if opens else value
            role = None
            if depth <= _STRUCTURE_DEPTH:
                if not depth:
                    if event != "start_map":
                        raise _fail(
                            "a launch file is an object with a studies array", "$", self.name
                        )
                    root = item
                    stack.append(item)
                    roles.append("")
                    continue
                role = self._shaped(roles[-1], key, event)
            top = stack[-1]
            if type(top) is list:
                top.append(item)
            else:
                top[key] = item
            if opens:
                stack.append(item)
                if depth < _STRUCTURE_DEPTH:
                    roles.append(role)
                if role == _STUDY:
                    self._start_study()
                elif role == _SERIES:
                    self.series_index += 1
                    self.prefix = role
        if root is None or "studies" not in root:
            raise _fail("a launch file is an object with a studies array", "studies", self.name)

    def _structure(self, roles: list[str | None]) -> dict[int, int]:
        """Stack level -> index of the item being read, for the structural lists."""
        found = {1: self.study_index}
        if len(roles) > 3 and roles[3] == "studies.item.series":
            found[3] = self.series_index
        return found

    def _shaped(self, parent: str | None, key: Any, event: str) -> str | None:
        """The structural prefix of a value in ``parent``; raises if it has the wrong shape."""
        role = _role(parent, key)
        expected = _SHAPE.get(role) if role is not None else None
        if role is not None and expected is not None and expected[0] != event:
            raise self._misshapen(role)
        return role

    def _misshapen(self, prefix: str) -> InvalidMetadata:
        self.prefix = prefix
        return _fail(
            f"{_describe(prefix)} must be {_SHAPE[prefix][1]}", self._where(prefix), self.name
        )

    def _where(self, prefix: str) -> str:
        if prefix == "studies":
            return "studies"
        if prefix == _STUDY:
            return f"studies[{self.study_index + 1}]"
        path = f"studies[{self.study_index}]"
        if prefix == "studies.item.series":
            return path + ".series"
        if prefix == _SERIES:
            return path + f".series[{self.series_index + 1}]"
        return path + f".series[{self.series_index}].instances"

    # -- study and series boundaries ----------------------------------------

    def _start_study(self) -> None:
        self.close()
        self.study_index += 1
        self.series_index = -1
        self.prefix = _STUDY
        self.spool = Spool()
        self.study_error = None
        self.summaries = []
        self.instance_count = 0
        self.study_uids_below = {}

    def _end_series(self, raw: dict[str, Any]) -> None:
        if self.study_error is not None:
            return  # the study is lost already; read on to its end
        path = f"studies[{self.study_index}].series[{self.series_index}]"
        try:
            summary, instances = self._check_series(raw, path)
        except MetastoreError as err:
            self.study_error = err
            return
        assert self.spool is not None
        self.summaries.append(summary)
        self.spool.add(len(self.summaries) - 1, instances)
        self.instance_count += len(instances)

    def _end_study(self, raw: dict[str, Any]) -> LaunchStudy | StudyFailure:
        path = f"studies[{self.study_index}]"
        uid = raw.get("StudyInstanceUID")
        shown_uid = uid if isinstance(uid, str) else None
        error = self.study_error
        if error is None:
            try:
                study, extras = self._check_study(raw, path)
            except MetastoreError as err:
                error = err
        if error is not None:
            self.close()
            return StudyFailure(index=self.study_index, study_uid=shown_uid, error=error)
        assert self.spool is not None
        spool, self.spool = self.spool, None
        for summary in self.summaries:
            summary.setdefault("StudyInstanceUID", study["StudyInstanceUID"])
        return LaunchStudy(
            index=self.study_index,
            study=study,
            extras=extras,
            summaries=self.summaries,
            instance_count=self.instance_count,
            _spool=spool,
        )

    # -- checks ---------------------------------------------------------------

    def _check_study(self, raw: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if "series" not in raw:
            raise _fail("a study needs a series array", f"{path}.series", self.name)
        study = {k: v for k, v in raw.items() if k not in STUDY_EXTRAS}
        extras = {k: raw[k] for k in STUDY_EXTRAS[1:] if k in raw}
        uid = self._uid(study, "StudyInstanceUID", path, Where())
        for below, where in self.study_uids_below.items():
            if below != uid:
                raise _fail(
                    f"StudyInstanceUID {below} differs from its study's {uid}",
                    where,
                    self.name,
                    study_uid=uid,
                )
        self._columns(records.study_row, study, path, Where(study_uid=uid))
        return study, extras

    def _check_series(
        self, raw: dict[str, Any], path: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        entries = raw.get("instances")
        if type(entries) is not list:
            raise _fail("a series needs an instances array", f"{path}.instances", self.name)
        summary = {k: v for k, v in raw.items() if k not in SERIES_EXTRAS}
        series_uid = self._uid(summary, "SeriesInstanceUID", path, Where())
        where = Where(series_uid=series_uid)
        study_uid = summary.get("StudyInstanceUID")
        if study_uid is not None:
            self.study_uids_below.setdefault(str(study_uid), f"{path}.StudyInstanceUID")
        check = {**summary, "StudyInstanceUID": study_uid or "0"}
        self._columns(records.series_row, check, path, where)
        return summary, self._group_instances(entries, path, series_uid)

    def _uid(self, meta: Mapping[str, Any], key: str, path: str, where: Where) -> str:
        try:
            return records.check_uid(meta.get(key), key, where)
        except InvalidMetadata as err:
            raise self._located(err, f"{path}.{key}") from None

    def _columns(self, row: Any, meta: Mapping[str, Any], path: str, where: Where) -> None:
        """Check the key columns a store row would take (without encoding it)."""
        try:
            row(meta, where)
        except InvalidMetadata as err:
            field_name = getattr(err, "field", None)
            raise self._located(err, f"{path}.{field_name}" if field_name else path) from None

    def _located(self, err: InvalidMetadata, path: str) -> InvalidMetadata:
        return InvalidMetadata(
            err.message,
            path=path,
            file=self.name,
            study_uid=getattr(err, "study_uid", None),
            series_uid=getattr(err, "series_uid", None),
            sop_uid=getattr(err, "sop_uid", None),
        )

    def _group_instances(
        self, entries: list[Any], path: str, series_uid: str
    ) -> list[dict[str, Any]]:
        """Check each instance entry; fold per-frame entries into one instance."""
        by_sop: dict[str, dict[str, Any]] = {}
        frames: dict[str, set[int]] = {}
        for index, entry in enumerate(entries):
            here = f"{path}.instances[{index}]"
            if type(entry) is not dict:
                raise _fail("an instance must be an object", here, self.name)
            meta = entry.get("metadata")
            if type(meta) is not dict:
                what = "missing" if meta is None else f"a {type(meta).__name__}, not an object"
                raise _fail(f"an instance's metadata is {what}", f"{here}.metadata", self.name)
            url = entry.get("url")
            if url is not None and type(url) is not str:
                raise _fail("url must be a string", f"{here}.url", self.name)
            sop_uid = self._uid(
                meta, "SOPInstanceUID", f"{here}.metadata", Where(series_uid=series_uid)
            )
            own_series = meta.get("SeriesInstanceUID")
            if own_series is not None and own_series != series_uid:
                raise _fail(
                    f"SeriesInstanceUID {own_series} differs from its series' {series_uid}",
                    f"{here}.metadata.SeriesInstanceUID",
                    self.name,
                    series_uid=series_uid,
                    sop_uid=sop_uid,
                )
            own_study = meta.get("StudyInstanceUID")
            if own_study is not None and own_study not in self.study_uids_below:
                self.study_uids_below[str(own_study)] = f"{here}.metadata.StudyInstanceUID"
            frame = frame_number(url) if url is not None and "frame" in url else None
            if frame is not None:
                seen = frames.setdefault(sop_uid, set())
                seen.add(frame)
                if len(seen) > 1:
                    continue  # a further frame of an instance met already
                url = strip_frame(url)  # type: ignore[arg-type]
            elif sop_uid in by_sop:
                log.warning(
                    "%s: %s repeats SOPInstanceUID %s; the last wins", self.name, here, sop_uid
                )
                frames.pop(sop_uid, None)
            self._check_instance(meta, f"{here}.metadata", series_uid, sop_uid)
            meta["url"] = url
            meta["imageId"] = url
            by_sop[sop_uid] = meta
        for sop_uid, seen in frames.items():
            _set_frames(by_sop[sop_uid], seen)
        return list(by_sop.values())

    def _check_instance(
        self, meta: dict[str, Any], path: str, series_uid: str, sop_uid: str
    ) -> None:
        sop_class = meta.get("SOPClassUID")
        if all(records.plain_int(meta.get(key)) for key in records.INSTANCE_INTS) and (
            sop_class is None or records.plain_uid(sop_class)
        ):
            return  # the common case; anything else gets the store's own checks, here
        where = Where(series_uid=series_uid, sop_uid=sop_uid)
        try:
            for key in records.INSTANCE_INTS:
                if key in meta:
                    records.integer(meta, key, where)
            if "SOPClassUID" in meta:
                records.check_uid(meta["SOPClassUID"], "SOPClassUID", where)
        except InvalidMetadata as err:
            raise self._located(err, f"{path}.{getattr(err, 'field', '')}") from None


def _set_frames(meta: dict[str, Any], seen: set[int]) -> None:
    """Give a multi-frame instance's metadata a NumberOfFrames covering every frame seen.

    Frame numbers are 1-based (a file that starts at 0 counts one more);
    OHIF's generator writes frames 1 to N-1 of N without NumberOfFrames, so
    a declared NumberOfFrames is kept where it is the larger.
    """
    counted = max(seen) + (1 if min(seen) == 0 else 0)
    declared = meta.get("NumberOfFrames")
    try:
        declared_n = int(cast(Any, declared[0] if isinstance(declared, list) else declared))
    except (TypeError, ValueError):
        declared_n = 0
    if counted > declared_n:
        meta["NumberOfFrames"] = counted


def _describe(prefix: str) -> str:
    return {
        "studies": "studies",
        _STUDY: "a study",
        "studies.item.series": "series",
        _SERIES: "a series",
        "studies.item.series.item.instances": "instances",
    }[prefix]
