"""Launch files served by the service point at the service, not at the archives.

A launch file written for disk (``metastore export dicomjson``) keeps each
instance's own URLs, which name the archive it was indexed from. A browser
that reaches only this service cannot fetch those (other origin, no CORS,
credentials), so the ``/dicomjson`` route rewrites, per instance, its
``url``, ``imageId`` and ``imageIds`` to this service's WADO-RS routes
(``{base}/studies/{s}/series/{se}/instances/{i}``, the frame kept as
``/frames/N`` or ``?frame=N``, the imageId scheme kept), and every
BulkDataURI in its metadata to ``.../bulk/{tag path}``, the same URLs the
service writes into ``/metadata``. The service resolves each to the
archive's bytes. A ``RetrieveURL`` (0008,1190) of a study, series or
instance names the service's URL of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from metastore.dicom import tag_for_keyword
from metastore.imageids import frame_number
from metastore.service.metadata import series_path

#: The imageId schemes OHIF puts before an instance URL.
_SCHEMES = ("dicomweb:", "wadouri:", "wadors:")


def served_study(study: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A ``MetaStore.get_study`` result with every instance's URLs on the service at ``base``.

    ``base`` is the service's DICOMweb root (``handlers.dicomweb_base``).
    """
    study_uid = str(study.get("StudyInstanceUID", ""))
    study_url = f"{base}/studies/{quote(study_uid, safe='')}"
    lists = []
    for series_list in study.get("seriesLists", []):
        served = []
        for one in series_list["series"]:
            series_url = series_path(base, study_uid, str(one.get("SeriesInstanceUID", "")))
            instances = [served_instance(i, series_url) for i in one.get("instances", [])]
            served.append({**_retrieved_at(one, series_url), "instances": instances})
        lists.append({**series_list, "series": served})
    return {**_retrieved_at(study, study_url), "seriesLists": lists}


def _retrieved_at(record: Mapping[str, Any], url: str) -> dict[str, Any]:
    """A copy of a study, series or instance record with its RetrieveURL (if any) at ``url``."""
    return {**record, "RetrieveURL": url} if "RetrieveURL" in record else dict(record)


def served_instance(instance: Mapping[str, Any], series_url: str) -> dict[str, Any]:
    """One instance (naturalized) with its URLs on the service (``series_url``: its series')."""
    sop = quote(str(instance.get("SOPInstanceUID", "")), safe="")
    instance_url = f"{series_url}/instances/{sop}"
    out = _retrieved_at(_natural_bulkdata_at(instance, f"{instance_url}/bulk"), instance_url)
    for key in ("url", "imageId"):
        if isinstance(out.get(key), str):
            out[key] = _served_url(out[key], instance_url)
    if isinstance(out.get("imageIds"), list):
        out["imageIds"] = [_served_url(str(url), instance_url) for url in out["imageIds"]]
    return out


def _served_url(url: str, instance_url: str) -> str:
    """``url`` (an imageId or instance URL) as the same frame of the instance on the service."""
    scheme = next((s for s in _SCHEMES if url.startswith(s)), "")
    frame = frame_number(url)
    if frame is None:
        return f"{scheme}{instance_url}"
    if scheme == "wadors:":
        return f"{scheme}{instance_url}/frames/{frame}"
    return f"{scheme}{instance_url}?frame={frame}"


def _natural_bulkdata_at(dataset: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of naturalized metadata with each ``{"BulkDataURI": ...}`` at ``{prefix}/{tag path}``.

    The tag path is the one ``metadata.point_bulkdata_at`` writes:
    ``7FE00010``, through sequences ``00540016/0/00181072``.
    """
    out: dict[str, Any] = {}
    for key, value in dataset.items():
        tag = tag_for_keyword(key) or key.upper()
        if isinstance(value, dict) and "BulkDataURI" in value:
            value = {**value, "BulkDataURI": f"{prefix}/{tag}"}
        elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
            value = [
                _natural_bulkdata_at(item, f"{prefix}/{tag}/{index}")
                if isinstance(item, dict)
                else item
                for index, item in enumerate(value)
            ]
        out[key] = value
    return out
