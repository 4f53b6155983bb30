"""``metastore ingest dicomweb|dicomjson|folder``, ``worker``, ``jobs``: filling the index."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from metastore.cli._common import (
    add_dicomweb_options,
    add_prefetch_option,
    add_worker_options,
    command_group,
    dicomweb_settings,
    flag,
    key_value,
    open_store,
    option,
    positive_float,
    positive_int,
    print_json_line,
    repeated,
)

if TYPE_CHECKING:
    from metastore.ingest import IngestSummary

#: Job states, for --state (the queue's STATES; a test checks they agree).
JOB_STATES = ("queued", "running", "done", "failed")


def _report(summary: IngestSummary) -> int:
    """The summary on stdout, each failure and skipped file on stderr; 1 if any."""
    print(summary)
    for failure in summary.failures:
        print(f"failed: {failure}", file=sys.stderr)
    for path, reason in summary.unreadable_files:
        print(f"unreadable: {path}: {reason}", file=sys.stderr)
    for path, reason in summary.skipped_files:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0 if summary.ok else 1


def _ingest_dicomweb(args: argparse.Namespace) -> int:
    from metastore.cli.progress import terminal
    from metastore.ingest import ingest_source
    from metastore.sources.dicomweb import auth_headers, dicomweb_config

    headers = auth_headers(args.header, token_env=args.token_env)
    config = dicomweb_config(
        args.root,
        name=args.source,
        static=args.static_wado,
        headers=headers,
        settings=dicomweb_settings(args),
    )
    summary = ingest_source(
        args.db,
        config,
        query=dict(key_value(item) for item in args.query),
        study_uids=args.study,
        workers=args.workers,
        lease=args.lease,
        max_attempts=args.max_attempts,
        prefetch=args.prefetch,
        progress=terminal(),
    )
    code = _report(summary)
    if code:
        print(
            f"metastore: {int(summary.failures)} studies failed or were stored in part: "
            "see `metastore jobs --state failed`"
        )
    return code


def _ingest_dicomjson(args: argparse.Namespace) -> int:
    from metastore.cli.progress import terminal
    from metastore.ingest import ingest_launch_file

    with open_store(args) as store:
        summary = ingest_launch_file(
            store,
            args.location,
            source=args.source,
            keep_going=args.keep_going,
            progress=terminal(),
        )
    return _report(summary)


def _ingest_folder(args: argparse.Namespace) -> int:
    from metastore.cli.progress import terminal
    from metastore.ingest import ingest_folder

    with open_store(args) as store:
        summary = ingest_folder(
            store,
            args.folder,
            url_root=args.url_root,
            source=args.source,
            keep_going=args.keep_going,
            workers=args.workers,
            progress=terminal(),
        )
    return _report(summary)


def _worker(args: argparse.Namespace) -> int:
    from metastore.ingest import serve
    from metastore.sources.dicomweb import auth_headers

    headers = auth_headers(args.header, token_env=args.token_env)
    with open_store(args) as store:
        summary = serve(
            store,
            source=args.source,
            headers=headers,
            lease=args.lease,
            poll=args.poll,
            prefetch=args.prefetch,
            once=args.once,
        )
    print(f"worker: {summary}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from metastore.ingest import JobQueue
    from metastore.sources import Rejected

    with open_store(args, read_only=True) as store:
        found = JobQueue(store).jobs(state=args.state, source=args.source, limit=args.limit)
    for source, job in found:
        if args.json:
            print_json_line({"source": source, **job.to_dict()})
            continue
        line = f"{job.id}  {source}  {job.unit}  {job.state}  attempts {job.attempts}/{job.max_attempts}"
        print(line + (f"  {job.last_error}" if job.last_error and not job.failed_parts else ""))
        for part in job.failed_parts or []:
            print(f"    not read: {Rejected(**part)}")
    return 0


def add_commands(commands: Any) -> None:
    """``ingest dicomweb|dicomjson|folder``, ``worker``, ``jobs``."""
    ingest_commands = command_group(
        commands, "ingest", "pull metadata from a source into the index"
    )
    web = ingest_commands.add_parser(
        "dicomweb",
        help="search a DICOMweb server (or a static DICOMweb tree) and pull its studies",
    )
    add_dicomweb_options(web)
    flag(web, "--static-wado", help="a static tree: it ignores queries, metastore filters")
    repeated(web, "--study", metavar="UID", help="pull this study (repeatable)")
    web.set_defaults(handler=_ingest_dicomweb)
    _add_file_commands(ingest_commands)

    worker = commands.add_parser("worker", help="drain or serve the ingest job queue")
    flag(worker, "--once", help="stop when no job is queued or running")
    option(worker, "--source", metavar="NAME", default=None, help="only this source's jobs")
    option(
        worker,
        "--poll",
        type=positive_float,
        default=2.0,
        help="seconds between looks at an empty queue",
    )
    add_prefetch_option(worker)
    add_worker_options(worker)
    worker.set_defaults(handler=_worker)

    jobs = commands.add_parser("jobs", help="list ingest jobs with their last errors")
    option(jobs, "--state", choices=JOB_STATES, default=None, help="only jobs in this state")
    option(jobs, "--source", metavar="NAME", default=None, help="only this source's jobs")
    option(jobs, "--limit", type=positive_int, default=100, help="at most this many jobs")
    flag(jobs, "--json", help="print JSON lines")
    jobs.set_defaults(handler=_jobs)


def _add_file_commands(kinds: Any) -> None:
    dicomjson = kinds.add_parser(
        "dicomjson", help="an OHIF DICOM JSON launch file (path or http(s) URL, .json or .json.gz)"
    )
    dicomjson.add_argument("location", metavar="PATH_OR_URL", help="the launch file")
    option(
        dicomjson,
        "--source",
        default=None,
        help="source name (default: the file's name without .json/.gz)",
    )
    flag(
        dicomjson,
        "--keep-going",
        help="skip bad studies and list them (exit 1 when any failed)",
    )
    dicomjson.set_defaults(handler=_ingest_dicomjson)

    folder = kinds.add_parser("folder", help="a folder of DICOM files (read without pixel data)")
    folder.add_argument("folder", metavar="DIR", help="the folder (searched recursively)")
    option(
        folder,
        "--url-root",
        default=None,
        help="URL the folder is served at; urls are dicomweb:URL_ROOT/<path> (default: file://DIR)",
    )
    option(
        folder,
        "--source",
        default=None,
        help="source name (default: the folder's name)",
    )
    flag(
        folder,
        "--keep-going",
        help="skip studies the index refuses and list them (exit 1 when any failed)",
    )
    option(
        folder,
        "--workers",
        type=positive_int,
        default=None,
        help="processes reading files (default: the number of cores)",
    )
    folder.set_defaults(handler=_ingest_folder)
