"""``metastore sync dicomweb`` and ``metastore follow orthanc``: staying in sync with an archive."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from metastore.cli._common import (
    add_dicomweb_options,
    add_worker_options,
    command_group,
    dicomweb_settings,
    flag,
    key_value,
    open_store,
    option,
    positive_float,
    positive_int,
    stop_on_signals,
)

if TYPE_CHECKING:
    from metastore.ingest.sync import SyncReport


def _print(report: SyncReport) -> None:
    print(report, flush=True)
    for failure in report.ingest.failures if report.ingest is not None else ():
        print(f"failed: {failure}", file=sys.stderr, flush=True)


def _sync(args: argparse.Namespace) -> int:
    # The library is imported when a command runs, so `--help` stays quick.
    from metastore.cli.progress import terminal
    from metastore.ingest.sync import sync_every, sync_source
    from metastore.sources.dicomweb import auth_headers, dicomweb_config

    headers = auth_headers(args.header, token_env=args.token_env)
    config = dicomweb_config(
        args.root, name=args.source, headers=headers, settings=dicomweb_settings(args)
    )
    query = dict(key_value(item) for item in args.query)
    with stop_on_signals() as stop:

        def once() -> SyncReport:
            return sync_source(
                args.db,
                config,
                query=query,
                prune=args.prune,
                workers=args.workers,
                lease=args.lease,
                max_attempts=args.max_attempts,
                prefetch=args.prefetch,
                progress=terminal() if args.every is None else None,
                stop=stop,
            )

        if args.every is not None:
            sync_every(args.every, stop, _print, once)
            return 0
        report = once()
    _print(report)
    return 0 if report.ok else 1


def _follow(args: argparse.Namespace) -> int:
    from metastore.ingest.follow import follow
    from metastore.sources.dicomweb import auth_headers, dicomweb_config
    from metastore.sources.feeds import open_feed

    headers = auth_headers(args.header, token_env=args.token_env)
    dicomweb = args.dicomweb or f"{args.root.rstrip('/')}/dicom-web"
    config = dicomweb_config(dicomweb, name=args.source, headers=headers)
    with (
        open_store(args) as store,
        open_feed(args.kind, args.root, name=config.name, headers=headers) as feed,
        stop_on_signals() as stop,
    ):
        summary = follow(
            store,
            feed,
            config,
            stop=stop,
            poll=args.poll,
            batch=args.batch,
            start=args.start,
            pull=not args.no_pull,
            lease=args.lease,
            sweep=args.sweep,
            report=lambda step: print(step, flush=True) if step.changes or step.removed else None,
        )
    print(f"follow: {summary}")
    return 0


def add_commands(commands: Any) -> None:
    """``sync dicomweb``, ``follow orthanc``."""
    kinds = command_group(commands, "sync", "bring the index up to date with an archive")
    web = kinds.add_parser(
        "dicomweb",
        help="crawl a DICOMweb archive once (with counts) and pull only what is new or changed",
    )
    add_dicomweb_options(web)
    option(
        web,
        "--every",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="sync again every SECONDS",
    )
    flag(web, "--prune", help="remove studies the archive no longer has (each checked directly)")
    web.set_defaults(handler=_sync)

    feeds = command_group(commands, "follow", "follow an archive's change feed into the index")
    orthanc = feeds.add_parser(
        "orthanc", help="follow Orthanc's /changes (StableStudy, Deleted) and pull each change"
    )
    orthanc.add_argument("root", metavar="ROOT", help="Orthanc's REST root URL")
    orthanc.set_defaults(kind="orthanc")
    option(orthanc, "--source", metavar="NAME", default=None, help="source name (default: host)")
    option(
        orthanc,
        "--dicomweb",
        metavar="URL",
        default=None,
        help="the archive's DICOMweb root (default: ROOT/dicom-web)",
    )
    option(
        orthanc,
        "--poll",
        type=positive_float,
        default=0.5,
        help="seconds between looks at the feed",
    )
    option(orthanc, "--batch", type=positive_int, default=200, help="changes read per request")
    option(
        orthanc,
        "--start",
        choices=("earliest", "latest"),
        default="earliest",
        help="where a new follower begins: the feed's start (indexes everything) or its end",
    )
    option(
        orthanc,
        "--sweep",
        type=positive_float,
        default=300.0,
        help="seconds between full comparisons of the archive's study list with the index",
    )
    flag(orthanc, "--no-pull", help="only queue jobs (for `metastore worker` processes)")
    add_worker_options(orthanc)
    orthanc.set_defaults(handler=_follow)
