"""Ingest: sources' metadata written into the store, one way for every path in.

- :mod:`~metastore.ingest.write`: :func:`write_study`, the one way a study
  is written (study row, series summaries, then one transaction per series);
- :mod:`~metastore.ingest.queue`: the ``ingest_jobs`` queue with leases;
- :mod:`~metastore.ingest.worker`: workers that claim jobs and pull studies;
- :mod:`~metastore.ingest.runner`: a whole ingest (search, queue, drain
  with N worker processes) and a served worker;
- :mod:`~metastore.ingest.files`: a launch file or a folder in one pass;
- :mod:`~metastore.ingest.summary`: :class:`IngestSummary`, what any of
  them did;
- :mod:`~metastore.ingest.sync` (over :mod:`~metastore.ingest.compare`):
  :func:`sync_source`, pulling only what an archive changed;
- :mod:`~metastore.ingest.follow`: :class:`Follower`, an archive's change
  feed followed into the queue.
"""

from __future__ import annotations

from metastore.ingest.files import ingest_folder, ingest_launch_file
from metastore.ingest.follow import Follower, follow
from metastore.ingest.queue import DONE, FAILED, QUEUED, RUNNING, STATES, Job, JobQueue
from metastore.ingest.runner import WorkerPool, drain, enqueue_studies, ingest_source, serve
from metastore.ingest.summary import Failure, Failures, IngestSummary
from metastore.ingest.sync import SyncReport, sync_source
from metastore.ingest.worker import Worker
from metastore.ingest.write import write_study

__all__ = [
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "STATES",
    "Failure",
    "Failures",
    "Follower",
    "IngestSummary",
    "Job",
    "JobQueue",
    "SyncReport",
    "Worker",
    "WorkerPool",
    "drain",
    "enqueue_studies",
    "follow",
    "ingest_folder",
    "ingest_launch_file",
    "ingest_source",
    "serve",
    "sync_source",
    "write_study",
]
