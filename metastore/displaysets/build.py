"""From a study's series to its display sets: grouping, dispatch, common fields, stable UIDs.

Each series is split into groups by SOPClassUID (in order of first
appearance). Each group is offered to the handlers that claim its SOP class,
in registry order; a handler takes the instances its display sets show and
the rest pass on, and whatever no handler takes becomes one ``unsupported``
display set. Once all series are done, references between display sets (a
SEG and the series it segments) are resolved within the study.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from metastore.displaysets import handlers as builtin
from metastore.displaysets.model import DisplaySet, Instance, SopClassHandler
from metastore.displaysets.registry import all_handlers
from metastore.errors import ConfigurationError, InvalidMetadata

log = logging.getLogger(__name__)

# Fixed forever: the UIDs of every index depend on it.
UID_NAMESPACE = uuid.UUID("9b0d3c1e-5f4a-5e7b-8c2d-6a1f0e4b7d93")

# Series attributes a display set repeats: the series row's, else its first instance's.
_SERIES_FIELDS = ("Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime")
# Fields a display set always has, in this order; handler fields follow.
_COMMON = (
    *("displaySetInstanceUID", "SOPClassHandlerId", "source"),
    *("StudyInstanceUID", "SeriesInstanceUID", *_SERIES_FIELDS),
    *("SOPClassUID", "sopClassUids", "numInstances", "SOPInstanceUIDs"),
    *("numImageFrames", "imageIds"),
)
# Fields only the builder sets; a handler's value for them is ignored.
_OWN = frozenset(_COMMON) - {"Modality", "numImageFrames", "imageIds"}


def display_set_uid(
    *,
    handler_id: str,
    source: str | None,
    study_uid: str,
    series_uid: str,
    sop_class_uid: str | None,
    key: str,
) -> str:
    """The stable ``displaySetInstanceUID``: ``2.25.`` and a name-based UUID (PS3.5 B.2).

    The name is the handler id, source, StudyInstanceUID, SeriesInstanceUID,
    SOPClassUID and the display set's key, joined by newlines; the UUID is
    version 5 (SHA-1) in ``UID_NAMESPACE``. The same index gives the same
    UIDs on every run and machine.
    """
    name = "\n".join((handler_id, source or "", study_uid, series_uid, sop_class_uid or "", key))
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"


def study_display_sets(
    study: Mapping[str, Any],
    *,
    source: str | None = None,
    handlers: Sequence[SopClassHandler] | None = None,
) -> list[dict[str, Any]]:
    """The display sets of a study as ``MetaStore.get_study`` returns it.

    In the order of the study's series lists (by source) and series (by
    SeriesNumber); within a series, in the order the handlers made them.
    ``source`` keeps one series list; ``handlers`` replaces the registry.
    """
    chosen = list(all_handlers() if handlers is None else handlers)
    made: list[dict[str, Any]] = []
    for series_list in study.get("seriesLists") or []:
        name = series_list.get("source")
        if source is not None and name != source:
            continue
        for series in series_list.get("series") or []:
            made.extend(
                series_display_sets(
                    series.get("instances") or [],
                    series=series,
                    source=name,
                    handlers=chosen,
                    study_uid=study.get("StudyInstanceUID"),
                )
            )
    resolve_references(made)
    return made


def series_display_sets(
    instances: Sequence[Instance],
    *,
    series: Mapping[str, Any] | None = None,
    source: str | None = None,
    handlers: Sequence[SopClassHandler] | None = None,
    study_uid: str | None = None,
) -> list[dict[str, Any]]:
    """The display sets of one series' instances (references left unresolved)."""
    if not instances:
        return []
    chosen = list(all_handlers() if handlers is None else handlers)
    context = _Context.of(instances, series or {}, source, study_uid)
    made: list[dict[str, Any]] = []
    for sop_class_uid, group in _groups(instances, context).items():
        remaining = builtin.by_instance_number(group)
        for handler in chosen:
            if not remaining:
                break
            if not handler.claims(sop_class_uid):
                continue
            for display_set in _run(handler, remaining, context):
                made.append(context.render(handler.id, sop_class_uid, display_set))
            remaining = [i for i in remaining if i["SOPInstanceUID"] not in context.taken]
        if remaining:
            leftover = builtin.unsupported_display_set(remaining, sop_class_uid)
            made.append(context.render(builtin.UNSUPPORTED, sop_class_uid, leftover))
    context.check_unique(made)
    return made


def resolve_references(display_sets: list[dict[str, Any]]) -> None:
    """Point derived display sets at the display sets of the series they reference.

    Sets ``referencedDisplaySetInstanceUID`` (from
    ``referencedSeriesInstanceUID``) and ``referencedDisplaySetInstanceUIDs``
    (from ``referencedSeriesInstanceUIDs``), choosing the first image display
    set of that series from the same source; a display set whose
    ``isReconstructable`` is None takes that of the one it references.
    """
    images: dict[tuple[Any, Any], dict[str, Any]] = {}
    for display_set in display_sets:
        if display_set.get("isDerivedDisplaySet") or display_set.get("unsupported"):
            continue
        images.setdefault((display_set["source"], display_set["SeriesInstanceUID"]), display_set)
    for display_set in display_sets:
        source = display_set["source"]
        if "referencedSeriesInstanceUID" in display_set:
            target = images.get((source, display_set["referencedSeriesInstanceUID"]))
            display_set["referencedDisplaySetInstanceUID"] = (
                None if target is None else target["displaySetInstanceUID"]
            )
            if display_set.get("isReconstructable", False) is None:
                display_set["isReconstructable"] = bool(
                    target is not None and target.get("isReconstructable")
                )
        if "referencedSeriesInstanceUIDs" in display_set:
            found = (
                images.get((source, uid)) for uid in display_set["referencedSeriesInstanceUIDs"]
            )
            display_set["referencedDisplaySetInstanceUIDs"] = [
                target["displaySetInstanceUID"] for target in found if target is not None
            ]


# -- internals ------------------------------------------------------------------------


class _Context:
    """One series being turned into display sets: its identity and bookkeeping."""

    def __init__(
        self,
        *,
        study_uid: str,
        series_uid: str,
        source: str | None,
        series_fields: dict[str, Any],
        sop_classes: list[str],
    ) -> None:
        self.study_uid = study_uid
        self.series_uid = series_uid
        self.source = source
        self.series_fields = series_fields
        self.sop_classes = sop_classes
        self.taken: set[str] = set()

    @classmethod
    def of(
        cls,
        instances: Sequence[Instance],
        series: Mapping[str, Any],
        source: str | None,
        study_uid: str | None,
    ) -> _Context:
        first = instances[0]

        def pick(keyword: str) -> Any:
            value = series.get(keyword)
            return first.get(keyword) if value is None else value

        study = study_uid or pick("StudyInstanceUID")
        series_uid = pick("SeriesInstanceUID")
        if not isinstance(study, str) or not isinstance(series_uid, str):
            raise InvalidMetadata(
                "display sets need the StudyInstanceUID and SeriesInstanceUID of the series",
                field="SeriesInstanceUID",
                study_uid=study if isinstance(study, str) else None,
            )
        classes = sorted(
            {uid for uid in (i.get("SOPClassUID") for i in instances) if isinstance(uid, str)}
        )
        fields = {keyword: pick(keyword) for keyword in _SERIES_FIELDS}
        return cls(
            study_uid=study,
            series_uid=series_uid,
            source=source,
            series_fields=fields,
            sop_classes=classes,
        )

    def render(
        self, handler_id: str, sop_class_uid: str | None, display_set: DisplaySet
    ) -> dict[str, Any]:
        sop_uids = [str(instance["SOPInstanceUID"]) for instance in display_set.instances]
        self.taken.update(sop_uids)
        key = display_set.key if display_set.key is not None else "\\".join(sorted(sop_uids))
        own = {
            "displaySetInstanceUID": display_set_uid(
                handler_id=handler_id,
                source=self.source,
                study_uid=self.study_uid,
                series_uid=self.series_uid,
                sop_class_uid=sop_class_uid,
                key=key,
            ),
            "SOPClassHandlerId": handler_id,
            "source": self.source,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            **self.series_fields,
            "SOPClassUID": sop_class_uid,
            "sopClassUids": list(self.sop_classes),
            "numInstances": len(sop_uids),
            "SOPInstanceUIDs": sop_uids,
            "numImageFrames": 0,
            "imageIds": builtin.object_ids(display_set.instances),
        }
        result = {key_: own[key_] for key_ in _COMMON}
        for name, value in display_set.fields.items():
            if name not in _OWN and (name not in result or value is not None):
                result[name] = value
        return result

    def check_unique(self, made: list[dict[str, Any]]) -> None:
        seen: dict[str, str] = {}
        for display_set in made:
            uid = display_set["displaySetInstanceUID"]
            if uid in seen:
                raise ConfigurationError(
                    f"SOP class handler {display_set['SOPClassHandlerId']} made two display sets "
                    f"with the same key in series {self.series_uid} of study {self.study_uid}",
                    handler=display_set["SOPClassHandlerId"],
                    study_uid=self.study_uid,
                    series_uid=self.series_uid,
                )
            seen[uid] = display_set["SOPClassHandlerId"]


def _groups(instances: Sequence[Instance], context: _Context) -> dict[str | None, list[Instance]]:
    groups: dict[str | None, list[Instance]] = {}
    for item, instance in enumerate(instances):
        sop_uid = instance.get("SOPInstanceUID") if isinstance(instance, Mapping) else None
        if not isinstance(sop_uid, str) or not sop_uid:
            raise InvalidMetadata(
                "an instance without a SOPInstanceUID cannot be displayed",
                field="SOPInstanceUID",
                item=item,
                study_uid=context.study_uid,
                series_uid=context.series_uid,
            )
        sop_class = instance.get("SOPClassUID")
        groups.setdefault(sop_class if isinstance(sop_class, str) else None, []).append(instance)
    return groups


def _run(
    handler: SopClassHandler, offered: list[Instance], context: _Context
) -> Iterable[DisplaySet]:
    """Call a handler and check what it returns; its failures name it and the series."""
    where = f"series {context.series_uid} of study {context.study_uid}"
    try:
        made = list(handler.get_display_sets(offered) or [])
    except Exception as exc:
        raise ConfigurationError(
            f"SOP class handler {handler.id} failed on {where}: {exc}",
            handler=handler.id,
            study_uid=context.study_uid,
            series_uid=context.series_uid,
        ) from exc
    allowed = {instance["SOPInstanceUID"] for instance in offered}
    for display_set in made:
        if (
            not isinstance(display_set, DisplaySet)
            or not display_set.instances
            or not isinstance(display_set.fields, Mapping)
            or any(
                not isinstance(instance, Mapping) or instance.get("SOPInstanceUID") not in allowed
                for instance in display_set.instances
            )
        ):
            raise ConfigurationError(
                f"SOP class handler {handler.id} returned something other than display sets "
                f"of the instances it was given, on {where}",
                handler=handler.id,
                study_uid=context.study_uid,
                series_uid=context.series_uid,
            )
    log.debug("%s made %d display set(s) on %s", handler.id, len(made), where)
    return made
