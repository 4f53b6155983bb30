"""Orthanc's change feed: ``GET {root}/changes?since=N&limit=M`` as :class:`ArchiveChange` pages.

Orthanc numbers every change (``Seq``). ``StableStudy`` is the one that
matters: no new instance arrived for ``StableAge`` seconds (an Orthanc
setting, 60 by default), so the study is complete for now. Its
StudyInstanceUID comes from ``GET {root}/studies/{id}``; a study deleted
since answers 404 and is skipped.

Deletions are not in the feed: Orthanc removes the changes of a deleted
resource with it, and logs no ``Deleted`` change there (it only tells
plugins). So :meth:`OrthancFeed.study_count` (``/statistics``) is the cheap
signal, and :meth:`OrthancFeed.study_ids` (``/studies``, every study's id)
what the follower compares with the index when the count moves. An
Orthanc id is the SHA-1 of ``PatientID|StudyInstanceUID``
(Orthanc's ``DicomInstanceHasher``), so :meth:`OrthancFeed.resource_id`
computes it for an indexed study. A ``Deleted`` change of a study, should
a version log one, is passed on as a deletion.

Requests are retried like the DICOMweb source's (timeouts, connection
errors, 429, 5xx), then raise ``SourceUnavailable``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import httpx

from metastore.errors import BadResponse, SourceRefused, SourceUnavailable
from metastore.retry import backoff
from metastore.sources import SourceConfig
from metastore.sources.feeds import DELETED, UPDATED, ArchiveChange, ChangePage
from metastore.sources.stream import split_credentials
from metastore.tls import client_context

log = logging.getLogger(__name__)

_RETRIES = 4


class OrthancFeed:
    """Orthanc's ``/changes``; ``config.root`` is Orthanc's REST root."""

    kind = "orthanc"

    def __init__(
        self, config: SourceConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        root, auth = split_credentials((config.root or "").rstrip("/"))
        self.config = config
        self.root = root
        self._client = httpx.Client(
            timeout=httpx.Timeout(30.0, connect=10.0),
            headers={**auth, **dict(config.headers)},
            transport=transport,
            verify=client_context(),
        )

    def read(self, position: str | None, limit: int) -> ChangePage:
        since = int(position or 0)
        body = self._get("/changes", {"since": since, "limit": limit})
        changes: list[ArchiveChange] = []
        for change in body.get("Changes", []):
            kind, level, resource = change["ChangeType"], change["ResourceType"], change["ID"]
            if kind == "StableStudy":
                uid = self._study_uid(resource)
                if uid is not None:
                    changes.append(ArchiveChange(action=UPDATED, resource=resource, study_uid=uid))
            elif kind == "Deleted" and level == "Study":
                changes.append(ArchiveChange(action=DELETED, resource=resource, study_uid=None))
        last = max(since, int(body.get("Last", since)))
        return ChangePage(changes=changes, position=str(last), done=bool(body.get("Done", True)))

    def latest(self) -> str | None:
        return str(int(self._get("/changes", {"last": ""}).get("Last", 0)))

    def resource_id(self, patient_id: str | None, study_uid: str) -> str | None:
        digest = hashlib.sha1(f"{(patient_id or '').strip()}|{study_uid.strip()}".encode())
        text = digest.hexdigest()
        return "-".join(text[i : i + 8] for i in range(0, 40, 8))

    def study_count(self) -> int | None:
        return int(self._get("/statistics", None)["CountStudies"])

    def study_ids(self) -> set[str]:
        found = self._get_any("/studies", None)
        if not isinstance(found, list):
            raise BadResponse(f"{self.root}/studies answered with no JSON list", url=self.root)
        return {str(item) for item in found}

    def _study_uid(self, resource: str) -> str | None:
        try:
            study = self._get(f"/studies/{resource}", None)
        except SourceRefused as err:
            if err.context.get("status") == 404:
                log.debug("orthanc study %s is gone already", resource)
                return None
            raise
        uid = study.get("MainDicomTags", {}).get("StudyInstanceUID")
        return str(uid) if uid else None

    def _get(self, path: str, params: dict[str, Any] | None) -> dict[str, Any]:
        body = self._get_any(path, params)
        if not isinstance(body, dict):
            raise BadResponse(f"{self.root}{path} answered with no JSON object", url=self.root)
        return body

    def _get_any(self, path: str, params: dict[str, Any] | None) -> Any:
        """The JSON body of a GET, with retries."""
        url = f"{self.root}{path}"
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.get(url, params=params)
            except httpx.TransportError as exc:
                error = SourceUnavailable(f"{url} failed: {type(exc).__name__}", url=url)
            else:
                status = response.status_code
                if status < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise BadResponse(f"{url} answered with no JSON", url=url) from None
                if status != 429 and status < 500:
                    raise SourceRefused(f"{url} answered {status}", url=url, status=status)
                error = SourceUnavailable(f"{url} answered {status}", url=url, status=status)
            if attempt == _RETRIES:
                raise error
            time.sleep(backoff(attempt + 1, 0.5, 10.0))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OrthancFeed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
