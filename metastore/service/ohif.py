"""The OHIF viewer's ``app-config.js`` for a metastore service.

OHIF v3 reads its configuration from ``window.config``, set by the script
``/app-config.js`` next to its ``index.html``. :func:`app_config` writes that
script with two data sources:

- ``metastore``, a DICOMweb source at ``URL/dicomweb`` whose flags say what
  the service answers: wildcard and fuzzy matching, ``includefield``, the
  series list for lazy study loading, and pixels and bulk data through
  BulkDataURIs and ``/frames`` (WADO-RS, PS3.18 10.4);
- ``dicomjson``, which gives the viewer the route
  ``/viewer/dicomjson?url=URL/dicomjson?StudyInstanceUID=...`` for the
  launch files the service writes.

The viewer then queries the service from the browser, so the service must
allow the viewer's origin (``metastore serve --cors-origin``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from metastore.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8080"
SOURCE_NAME = "metastore"


def dicomweb_source(url: str, *, name: str = SOURCE_NAME) -> dict[str, Any]:
    """The OHIF data-source entry for the DICOMweb root of the service at ``url``."""
    root = f"{service_url(url)}/dicomweb"
    return {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": name,
        "configuration": {
            "friendlyName": "metastore",
            "name": name,
            "qidoRoot": root,
            "wadoRoot": root,
            "wadoUriRoot": root,
            "qidoSupportsIncludeField": True,
            "supportsWildcard": True,
            "supportsFuzzyMatching": True,
            # The service lists a study's series (QIDO-RS) and answers each
            # series' metadata, so the viewer can load a study series by series.
            "enableStudyLazyLoad": True,
            "staticWado": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }


def app_config(url: str = DEFAULT_URL) -> str:
    """The text of OHIF's ``app-config.js`` for the metastore service at ``url``.

    ``url`` is where the service is reached from the browser (scheme, host,
    port and any path prefix it is mounted under), without ``/dicomweb``.
    """
    config: dict[str, Any] = {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "defaultDataSourceName": SOURCE_NAME,
        "dataSources": [
            dicomweb_source(url),
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomjson",
                "sourceName": "dicomjson",
                "configuration": {"friendlyName": "metastore launch files", "name": "json"},
            },
        ],
        # A banner and a first-visit tour would otherwise cover the viewer.
        "investigationalUseDialog": {"option": "never"},
        "customizationService": {"ohif.tours": {"$set": []}},
    }
    body = orjson.dumps(config, option=orjson.OPT_INDENT_2).decode()
    return f"// OHIF configuration for the metastore service at {service_url(url)}\nwindow.config = {body};\n"


def service_url(url: str) -> str:
    """``url`` checked to be an http(s) URL, without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"not an http(s) URL of a metastore service: {url!r}", url=url)
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"the service URL must not carry a query or fragment: {url!r}", url=url
        )
    return url.rstrip("/")
