"""The exceptions metastore raises on purpose.

Every error the package raises deliberately derives from one root, so a caller
can catch ``MetastoreError`` and know it is ours::

    MetastoreError
    ├── ConfigurationError       a bad database URL, option or setting
    ├── QueryError               a search query that cannot be read (names the parameter)
    ├── DatabaseError            the database failed or refused a statement
    │   └── SchemaNotAtHead      the database is behind (or ahead of) the code
    ├── StoreClosed              the MetaStore was used after close()
    ├── InvalidMetadata          input that is not DICOM metadata we can index
    ├── UnknownSource            a source name or kind nobody registered
    ├── SourceError              a backend (DICOMweb server, file) failed
    │   ├── SourceUnavailable    a failure that may pass: timeout, refused, 429, 5xx
    │   │   └── SourceTimeout    the backend did not answer in time
    │   ├── BadResponse          an answer that is not what the protocol promises
    │   └── SourceRefused        a 4xx refusal (not found, not authorized): retrying won't help
    ├── LeaseLost                a lease (an ingest job's, a consumer's) ran out and another took over
    ├── ConsumerError            a change-feed consumer cannot go on
    │   └── HandlerFailed        a handler kept failing on an event
    └── DeliveryError            an endpoint did not accept a relayed event

Each class's docstring is its default message. Context travels as attributes,
so a caller can report *where* a problem is (file, JSON path, study, series,
instance, source) without parsing the message.
"""

from __future__ import annotations

from typing import Any


class MetastoreError(Exception):
    """metastore failed."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}
        for key, value in context.items():
            setattr(self, key, value)
        #: The message without the context that ``str()`` may add to it.
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ConfigurationError(MetastoreError):
    """The configuration is not usable."""


class QueryError(MetastoreError):
    """The search query is malformed."""

    def __init__(
        self, message: str | None = None, *, parameter: str | None = None, value: Any = None
    ) -> None:
        super().__init__(message, parameter=parameter, value=value)


class DatabaseError(MetastoreError):
    """The database failed to carry out the operation."""


class SchemaNotAtHead(DatabaseError):
    """The database schema is not at the revision this code expects; run `metastore db upgrade`."""


class StoreClosed(MetastoreError):
    """The store is closed."""


class InvalidMetadata(MetastoreError):
    """The metadata is not valid for the index."""

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        item: int | None = None,
        path: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        file: str | None = None,
        **context: Any,
    ) -> None:
        where = [
            f"{name} {value}"
            for name, value in (
                ("file", file),
                ("at", path),
                ("item", item),
                ("study", study_uid),
                ("series", series_uid),
                ("instance", sop_uid),
                ("field", field),
            )
            if value is not None
        ]
        text = message or (self.__doc__ or "").strip()
        if where:
            text = f"{text} ({', '.join(where)})"
        super().__init__(
            text,
            field=field,
            item=item,
            path=path,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            file=file,
            **context,
        )
        self.message = message or (self.__doc__ or "").strip()


class UnknownSource(MetastoreError):
    """No such source is known."""


class SourceError(MetastoreError):
    """A metadata source failed."""


class SourceUnavailable(SourceError):
    """The source is unavailable for now (a timeout, a refused connection, 429 or 5xx)."""


class SourceTimeout(SourceUnavailable):
    """The source did not answer in time."""


class BadResponse(SourceError):
    """The source answered with something other than DICOM JSON."""


class SourceRefused(SourceError):
    """The source refused the request (a 4xx other than 429); retrying will not help."""


class LeaseLost(MetastoreError):
    """The lease ran out and another process took over (an ingest job, a consumer)."""


class ConsumerError(MetastoreError):
    """The change-feed consumer cannot go on."""


class HandlerFailed(ConsumerError):
    """The consumer's handler kept failing on an event; the cursor stays before it."""


class DeliveryError(MetastoreError):
    """The endpoint did not accept the event."""
