"""imageIds: how a viewer addresses the frames of an instance.

A single-frame instance has one imageId; a multi-frame instance has one per
frame. Two spellings of a frame are in use:

- WADO-RS (PS3.18 10.4.1.1.3): ``wadors:{root}/studies/{s}/series/{r}/instances/{i}/frames/{n}``;
- a ``frame`` query parameter on a retrieval URL, as OHIF's DICOM JSON
  launch files and Cornerstone's WADO-URI loader spell it:
  ``dicomweb:https://host/path/file.dcm?frame=2`` (``&frame=2`` when the
  URL has a query already). OHIF's ``dicom-json-generator.js`` writes
  ``?frame=N``; its newer data source appends the parameter to the
  instance's url (``appendFrameQueryToImageId``); Cornerstone's loader
  reads the parameter as a 1-based frame number.

Frame numbers are 1-based everywhere, as DICOM numbers frames (PS3.3
C.7.6.6): the first frame is ``frames/1`` and ``frame=1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_WADORS_FRAME = re.compile(r"/frames/(\d+)$")
_QUERY_FRAME = re.compile(r"([?&])frame=(\d+)(?=&|$)")


def strip_frame(image_id: str) -> str:
    """The imageId without its frame part (unchanged when it names no frame)."""
    if _WADORS_FRAME.search(image_id):
        return _WADORS_FRAME.sub("", image_id)
    if "frame=" not in image_id:
        return image_id
    stripped = _QUERY_FRAME.sub(lambda m: m.group(1), image_id)
    # Tidy a separator left dangling where the frame parameter stood.
    return stripped.replace("?&", "?").replace("&&", "&").rstrip("?&")


def frame_number(image_id: str) -> int | None:
    """The frame an imageId names (``frames/N`` or ``frame=N``), or None."""
    found = _WADORS_FRAME.search(image_id)
    if found is None and "frame=" in image_id:
        found = _QUERY_FRAME.search(image_id)
        return None if found is None else int(found.group(2))
    return None if found is None else int(found.group(1))


def frame_image_ids(image_id: str, number_of_frames: int | None) -> list[str]:
    """One imageId per frame (just ``image_id`` for a single-frame instance)."""
    if not number_of_frames or number_of_frames <= 1:
        return [image_id]
    base = strip_frame(image_id)
    if _WADORS_FRAME.search(image_id) or image_id.startswith("wadors:"):
        return [f"{base}/frames/{n}" for n in range(1, number_of_frames + 1)]
    separator = "&" if "?" in base else "?"
    return [f"{base}{separator}frame={n}" for n in range(1, number_of_frames + 1)]


def _frames(value: object) -> int | None:
    """NumberOfFrames as given in naturalized metadata (an IS: number, digits, one-item list)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def instance_image_ids(instance: Mapping[str, Any]) -> list[str]:
    """The imageIds of an instance dict: one per frame, from its imageId (else url).

    Empty when the instance has neither. This is a source's
    ``get_image_ids`` for instances that carry a ``url`` (DICOM JSON, folders).
    """
    image_id = instance.get("imageId") or instance.get("url")
    if not isinstance(image_id, str):
        return []
    return frame_image_ids(image_id, _frames(instance.get("NumberOfFrames")))
