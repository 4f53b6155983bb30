"""From naturalized metadata to validated rows.

The store's writers call these to check input and to pull out the key
columns. Nothing here touches the database; everything raises
``InvalidMetadata`` naming the item, its UIDs and the field at fault.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from metastore.dicom import person_name_text
from metastore.dicomvalues import parse_int
from metastore.errors import InvalidMetadata
from metastore.imageids import frame_image_ids

# Study-level attributes (PS3.4 C.6.2.1.2, the Study Root QIDO keys) that a
# study row takes from an instance when the study is first seen through its
# instances.
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
)
# Series-level attributes a series row takes from its first instance.
SERIES_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "ProtocolName",
    "Laterality",
)
# Counts the index computes from its rows; stored input values would go stale.
STUDY_COMPUTED = (
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_COMPUTED = ("NumberOfSeriesRelatedInstances",)
# Keys of an instance dict that are not DICOM metadata (``imageIds``: the
# per-frame list the store's reads add to a multi-frame instance).
INSTANCE_EXTRAS = ("url", "imageId", "imageIds")

_UID_MAX = 64  # PS3.5 9.1
# Whitespace and controls (0x00-0x20, 0x7F) and the backslash, the multi-value delimiter.
_BAD_UID_CHAR = re.compile(r"[\x00-\x20\x7f\\]")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class Where:
    """Where an item sits in a call's input, for error messages."""

    item: int | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None

    def error(self, message: str, field: str) -> InvalidMetadata:
        return InvalidMetadata(
            message,
            field=field,
            item=self.item,
            study_uid=self.study_uid,
            series_uid=self.series_uid,
            sop_uid=self.sop_uid,
        )


def check_mapping(value: Any, what: str, item: int | None) -> Mapping[str, Any]:
    """The value itself if it is a mapping; otherwise ``InvalidMetadata``."""
    if type(value) is not dict and not isinstance(value, Mapping):  # dict: skip the ABC check
        raise InvalidMetadata(
            f"{what} metadata must be a mapping, not {type(value).__name__}", item=item
        )
    return value


def check_uid(value: Any, field: str, where: Where) -> str:
    """A UID as a plain ``str``, or ``InvalidMetadata``.

    The index takes non-conformant UIDs that real archives hold (hex digests
    from anonymizers, leading zeros); it refuses only what cannot be a key:
    empty, over 64 characters (PS3.5 9.1), or holding whitespace, a
    backslash (the multi-value delimiter) or a control character.
    """
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value and value[-1] in " \x00":
        value = value.rstrip(" \x00")  # binary padding to even length (PS3.5 9.1)
    if not isinstance(value, str):
        if value is None:
            raise where.error(f"{field} is missing", field)
        raise where.error(f"{field} must be a string, not {type(value).__name__}", field)
    if not value:
        raise where.error(f"{field} is empty", field)
    if len(value) > _UID_MAX:
        raise where.error(f"{field} is longer than {_UID_MAX} characters", field)
    if _BAD_UID_CHAR.search(value):
        raise where.error(
            f"{field} {value!r} holds whitespace, a backslash or a control character", field
        )
    return str(value)


def _single(meta: Mapping[str, Any], key: str, where: Where) -> Any:
    value = meta.get(key)
    if isinstance(value, list):
        if not value:
            return None
        if len(value) > 1:
            raise where.error(f"{key} must have one value, not {len(value)}", key)
        value = value[0]
    return value


def text(meta: Mapping[str, Any], key: str, where: Where) -> str | None:
    """A single-valued string key column (a number is taken as its text)."""
    value = _single(meta, key, where)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise where.error(f"{key} must be a string, not {type(value).__name__}", key)


# Dates and times as old writers spell them: ACR-NEMA's "1997.04.24" and
# ISO's "1997-04-24" for DA, "10:20:30.5" for TM (PS3.5 6.2, the notes on
# DA and TM); key columns hold the standard form so that ranges compare.
_DATE_FORM = re.compile(r"(\d{4})[.\-/]?(\d{2})[.\-/]?(\d{2})")
_TIME_FORM = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?")


def date_key(value: str | None) -> str | None:
    """A DA key column value: ``YYYYMMDD`` from the old forms too; other text as given."""
    if value is None:
        return None
    text = value.strip()
    found = _DATE_FORM.fullmatch(text)
    return "".join(found.groups()) if found else text or None


def time_key(value: str | None) -> str | None:
    """A TM key column value: ``HHMMSS.FFFFFF`` (a prefix of it) from ``HH:MM:SS`` too."""
    if value is None:
        return None
    text = value.strip()
    found = _TIME_FORM.fullmatch(text)
    return "".join(part for part in found.groups() if part) if found else text or None


def person_name(meta: Mapping[str, Any], key: str, where: Where) -> str | None:
    """A person name key column: the Alphabetic group of the first name."""
    value = meta.get(key)
    if value is None or isinstance(value, str | list | Mapping):
        try:
            return person_name_text(value)
        except (TypeError, ValueError, AttributeError) as err:
            raise where.error(f"{key} is not a person name: {err}", key) from err
    raise where.error(f"{key} must be a person name, not {type(value).__name__}", key)


def integer(meta: Mapping[str, Any], key: str, where: Where) -> int | None:
    """A single-valued integer key column (IS, US, UL): ints, whole floats, digit strings."""
    value = _single(meta, key, where)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise where.error(f"{key} must be an integer, not a boolean", key)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        value = parse_int(value)
        if value is None:
            raise where.error(f"{key} must be an integer, not {_single(meta, key, where)!r}", key)
    if not isinstance(value, int):
        raise where.error(f"{key} must be an integer, not {value!r}", key)
    if not _INT_MIN <= value <= _INT_MAX:
        raise where.error(f"{key} {value} is out of range", key)
    return value


def _default(value: Any) -> Any:
    # pydicom's DSfloat/IS and other number subclasses, PersonName, Decimal.
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "__float__") and not isinstance(value, bytes | bytearray):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


#: How deep containers may nest inside one metadata value. DICOM sequences of
#: real objects nest a handful of levels (two JSON levels each); orjson stops
#: at 255, so deeper input is refused where it is read, before anything of it
#: is written.
MAX_NESTING = 100


def encode(document: Mapping[str, Any], where: Where) -> bytes:
    """Canonical JSON (sorted keys), encoded once and stored as-is.

    Sorted keys make equal content equal text, which is how SQLite (JSON as
    text) tells an unchanged row from a changed one on re-ingest.
    """
    try:
        return orjson.dumps(document, default=_default, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError) as err:
        raise where.error(f"metadata is not JSON-serializable: {err}", "metadata") from err


def _without(meta: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    # A C-level copy and a few pops: a comprehension over ~50 keys costs ten times more,
    # once per instance on the hot path of every ingest.
    document = dict(meta)
    for key in keys:
        document.pop(key, None)
    return document


def study_row(meta: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """The ``studies`` row for study-level metadata (counts are the store's)."""
    study_uid = check_uid(meta.get("StudyInstanceUID"), "StudyInstanceUID", where)
    where = Where(item=where.item, study_uid=study_uid)
    document = _without(meta, STUDY_COMPUTED)
    blob = encode(document, where)
    return {
        "study_uid": study_uid,
        "patient_id": text(meta, "PatientID", where),
        "patient_name": person_name(meta, "PatientName", where),
        "study_date": date_key(text(meta, "StudyDate", where)),
        "study_time": time_key(text(meta, "StudyTime", where)),
        "accession_number": text(meta, "AccessionNumber", where),
        "study_description": text(meta, "StudyDescription", where),
        "metadata": blob.decode(),
    }


def series_row(meta: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """The ``series`` row for series-level metadata, keyed by its UIDs."""
    study_uid = check_uid(meta.get("StudyInstanceUID"), "StudyInstanceUID", where)
    where = Where(item=where.item, study_uid=study_uid)
    series_uid = check_uid(meta.get("SeriesInstanceUID"), "SeriesInstanceUID", where)
    where = Where(item=where.item, study_uid=study_uid, series_uid=series_uid)
    document = _without(meta, SERIES_COMPUTED)
    blob = encode(document, where)
    return {
        "study_uid": study_uid,
        "series_uid": series_uid,
        "modality": text(meta, "Modality", where),
        "series_number": integer(meta, "SeriesNumber", where),
        "series_description": text(meta, "SeriesDescription", where),
        "series_date": date_key(text(meta, "SeriesDate", where)),
        "series_time": time_key(text(meta, "SeriesTime", where)),
        "metadata": blob.decode(),
    }


# Integer key columns of an instance, in ``instances`` column order.
INSTANCE_INTS = ("InstanceNumber", "NumberOfFrames", "Rows", "Columns")


def plain_uid(value: Any) -> bool:
    """A plain ``str`` UID that ``check_uid`` would take as it is (the fast path)."""
    return type(value) is str and 0 < len(value) <= _UID_MAX and not _BAD_UID_CHAR.search(value)


def plain_int(value: Any) -> bool:
    """None or a plain 32-bit ``int``, which ``integer`` would take as it is (the fast path)."""
    return value is None or (type(value) is int and _INT_MIN <= value <= _INT_MAX)


#: The fields of :func:`instance_values`, in order: the three UIDs that place an
#: instance, then the ``instances`` columns after ``series_id``.
INSTANCE_FIELDS = (
    "study_uid",
    "series_uid",
    "sop_uid",
    "sop_class_uid",
    "instance_number",
    "number_of_frames",
    "rows",
    "columns",
    "url",
    "image_id",
    "metadata",
)


def instance_values(meta: Mapping[str, Any], item: int | None = None) -> tuple[Any, ...]:
    """One instance's row values (``INSTANCE_FIELDS``), checked and encoded in one pass.

    The common case (plain ``str`` UIDs, ``int`` key columns) takes a fast
    path; anything else goes through the full checks, which also name the
    item (its position in the call's input), its UIDs and the field when
    the input is bad. This runs once per instance on every ingest, so it
    reads each key once and builds no intermediate row.
    """
    get = meta.get
    study_uid = get("StudyInstanceUID")
    series_uid = get("SeriesInstanceUID")
    sop_uid = get("SOPInstanceUID")
    sop_class = get("SOPClassUID")
    url = get("url")
    image_id = get("imageId")
    number = get("InstanceNumber")
    frames = get("NumberOfFrames")
    rows = get("Rows")
    columns = get("Columns")
    if not (
        type(study_uid) is str
        and type(series_uid) is str
        and type(sop_uid) is str
        and (sop_class is None or type(sop_class) is str)
        and 0 < len(study_uid) <= _UID_MAX
        and 0 < len(series_uid) <= _UID_MAX
        and 0 < len(sop_uid) <= _UID_MAX
        and (sop_class is None or 0 < len(sop_class) <= _UID_MAX)
        and not _BAD_UID_CHAR.search(f"{study_uid}{series_uid}{sop_uid}{sop_class or ''}")
        and (url is None or type(url) is str)
        and (image_id is None or type(image_id) is str)
        and plain_int(number)
        and plain_int(frames)
        and plain_int(rows)
        and plain_int(columns)
    ):
        study_uid, series_uid, sop_uid, sop_class, url, image_id, number, frames, rows, columns = (
            _checked_keys(meta, Where(item=item))
        )
    if image_id == url:
        image_id = None  # stored once: the imageId defaults to the url (see schema)
    document = _without(meta, INSTANCE_EXTRAS)
    try:
        blob = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        where = Where(item=item, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        blob = encode(document, where)  # number subclasses, or the error naming the instance
    return (
        study_uid,
        series_uid,
        sop_uid,
        sop_class,
        number,
        frames,
        rows,
        columns,
        url,
        image_id,
        blob.decode(),
    )


def instance_row(meta: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """The ``instances`` row for one instance's metadata (with ``url``/``imageId``),
    keyed by ``INSTANCE_FIELDS``."""
    return dict(zip(INSTANCE_FIELDS, instance_values(meta, where.item), strict=True))


def _checked_keys(meta: Mapping[str, Any], where: Where) -> tuple[Any, ...]:
    """An instance's key values, fully checked, in the order ``instance_values`` reads them."""
    study_uid = check_uid(meta.get("StudyInstanceUID"), "StudyInstanceUID", where)
    where = Where(item=where.item, study_uid=study_uid)
    series_uid = check_uid(meta.get("SeriesInstanceUID"), "SeriesInstanceUID", where)
    where = Where(item=where.item, study_uid=study_uid, series_uid=series_uid)
    sop_uid = check_uid(meta.get("SOPInstanceUID"), "SOPInstanceUID", where)
    where = Where(item=where.item, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    extras = []
    for key in ("url", "imageId"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise where.error(f"{key} must be a string, not {type(value).__name__}", key)
        extras.append(None if value is None else str(value))
    sop_class = meta.get("SOPClassUID")
    return (
        study_uid,
        series_uid,
        sop_uid,
        None if sop_class is None else check_uid(sop_class, "SOPClassUID", where),
        *extras,
        *(integer(meta, key, where) for key in INSTANCE_INTS),
    )


def pick(meta: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The subset of ``meta`` under ``keys`` that is present."""
    return {k: meta[k] for k in keys if k in meta}


# -- rows read back as naturalized metadata ---------------------------------


def _multi(values: list[str]) -> str | list[str]:
    # The naturalized length-1 rule: one value bare, several as a list.
    return values[0] if len(values) == 1 else values


def study_dict(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A ``studies`` row as OHIF's study metadata, with its counts and ModalitiesInStudy."""
    result = dict(row["metadata"])
    modalities = row["modalities_in_study"]
    result["ModalitiesInStudy"] = _multi(modalities.split("\\")) if modalities else []
    result["NumberOfStudyRelatedSeries"] = row["num_series"]
    result["NumberOfStudyRelatedInstances"] = row["num_instances"]
    return result


def series_dict(row: Mapping[Any, Any], instance_dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``series`` row as OHIF's series metadata, holding its instances."""
    result = dict(row["metadata"])
    result["NumberOfSeriesRelatedInstances"] = row["num_instances"]
    result["instances"] = instance_dicts
    return result


def instance_dict(
    metadata: dict[str, Any], url: str | None, image_id: str | None, frames: int | None
) -> dict[str, Any]:
    """An ``instances`` row as OHIF's instance metadata, with ``url`` and imageId(s).

    ``metadata`` is the row's metadata freshly decoded: it is completed in
    place and returned (a read decodes each row once and copies nothing).
    """
    if url is not None:
        metadata["url"] = url
    # OHIF's DICOM JSON convention: without an imageId of its own, the url is it.
    image_id = image_id or url
    if image_id is not None:
        metadata["imageId"] = image_id
        if frames is not None and frames > 1:
            # A multi-frame instance: one imageId per frame (1-based, see imageids).
            metadata["imageIds"] = frame_image_ids(image_id, frames)
    return metadata
