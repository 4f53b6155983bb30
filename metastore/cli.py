"""The ``metastore`` command: parse, configure logging, call the library, print.

Thin on purpose: every command is one library call. Every option has an
environment twin named ``METASTORE_<OPTION>`` (``--db`` is
``METASTORE_DATABASE_URL``), shown in its help. Expected errors
(``MetastoreError``) print one line on stderr and exit 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import orjson

from metastore import db, events, ingest, relay, runner, search
from metastore.errors import ConfigurationError, MetastoreError, QueryError
from metastore.events import Event
from metastore.export import export_launch_file
from metastore.progress import Progress
from metastore.search import format as search_format
from metastore.sources._ingest import FileIngestSummary
from metastore.sources.dicomjson import ingest_launch_file
from metastore.sources.dicomweb import auth_headers, dicomweb_config
from metastore.sources.folder import ingest_folder
from metastore.store import MetaStore

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


class _EnvDefault(argparse.Action):
    """An option whose default comes from its ``METASTORE_*`` environment twin."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        self.env = env
        kind = kwargs.get("type") or str
        if env in os.environ:
            kwargs["default"] = kind(os.environ[env])
            kwargs["required"] = False
        kwargs["help"] = f"{kwargs.get('help', '')} [env: {env}]".strip()
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


class _EnvFlag(argparse.Action):
    """A boolean flag with an environment twin (1/true/yes turns it on)."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        self.env = env
        default = os.environ.get(env, "").lower() in ("1", "true", "yes", "on")
        kwargs["help"] = f"{kwargs.get('help', '')} [env: {env}]".strip()
        super().__init__(option_strings, dest, nargs=0, default=default, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)


def option(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add an option with its environment twin (``METASTORE_<NAME>`` unless given)."""
    dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
    twin = env or f"METASTORE_{dest.upper()}"
    parser.add_argument(*names, action=_EnvDefault, env=twin, **kwargs)


def flag(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add a boolean flag with its environment twin."""
    dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
    twin = env or f"METASTORE_{dest.upper()}"
    parser.add_argument(*names, action=_EnvFlag, env=twin, **kwargs)


class _EnvAppend(_EnvDefault):
    """A repeatable option; its environment twin holds one value a line."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, env, **kwargs)
        if env in os.environ:
            self.default = [line for line in os.environ[env].splitlines() if line.strip()]
        elif self.default is None:
            self.default = []

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        if current is None or current is self.default:
            current = []
        setattr(namespace, self.dest, [*current, values])


def repeated(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add a repeatable option with its environment twin (one value a line)."""
    dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
    twin = env or f"METASTORE_{dest.upper()}"
    parser.add_argument(*names, action=_EnvAppend, env=twin, **kwargs)


def command_group(commands: Any, name: str, help: str) -> Any:
    """The subcommands of the group ``name`` (``ingest``...), created on first use.

    Several areas add commands to one group; whoever comes first creates it.
    """
    parser = commands.choices.get(name)
    if parser is None:
        parser = commands.add_parser(name, help=help)
        group = parser.add_subparsers(dest=f"{name}_command", metavar="KIND", required=True)
        parser.set_defaults(**{f"_{name}_group": group})
    return parser.get_default(f"_{name}_group")


def print_json(value: Any) -> None:
    """One JSON document on stdout (indented for a person)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def print_json_line(value: Any) -> None:
    """One JSON line on stdout (for pipes)."""
    sys.stdout.write(orjson.dumps(value, default=str).decode() + "\n")


def open_store(args: argparse.Namespace) -> MetaStore:
    """The store named by ``--db`` / ``METASTORE_DATABASE_URL`` / the default."""
    return MetaStore(args.db)


# -- db ---------------------------------------------------------------------


def _db_upgrade(args: argparse.Namespace) -> int:
    engine = db.create_engine(args.db)
    try:
        before = db.current_revision(engine)
        db.upgrade(engine, args.revision)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    print(f"{db.redact(db.resolve_url(args.db))}: {before or '(empty)'} -> {after}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    engine = db.create_engine(args.db)
    try:
        current = db.current_revision(engine)
    finally:
        engine.dispose()
    head = db.head_revision()
    state = "at head" if current == head else f"behind head {head}: run `metastore db upgrade`"
    print(f"{current or '(empty)'} ({state})")
    return 0


# -- reading ----------------------------------------------------------------


def _show_study(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        study = store.get_study(args.study_uid)
    if study is None:
        raise MetastoreError(f"study {args.study_uid} is not in the index")
    print_json(study)
    return 0


def _stats(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = store.stats()
    if args.json:
        print_json(rows)
        return 0
    header = ("source", "modality", "studies", "series", "instances")
    table = [header] + [
        tuple(str(row[k] if row[k] is not None else "-") for k in header) for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    totals = {k: sum(int(row[k]) for row in rows) for k in ("series", "instances")}
    print(f"total: {totals['series']} series, {totals['instances']} instances")
    return 0


def _changes(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        for event in store.changes(after=args.after, limit=args.limit):
            print_json_line(event.to_dict())
    return 0


# -- the change feed: events, consumers, relays --------------------------------


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so live commands finish their current event."""
    stop = threading.Event()

    def _set(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, _set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_event(event: Event) -> None:
    print_json_line(event.to_dict())
    sys.stdout.flush()


def _events_tail(args: argparse.Namespace) -> int:
    with open_store(args) as store, _stop_on_signals() as stop:
        events.tail(
            store,
            _print_event,
            consumer=args.consumer,
            after=args.after,
            events=args.type,
            follow=args.follow,
            stop=stop,
            poll_interval=args.poll_interval,
        )
    return 0


def _events_prune(args: argparse.Namespace) -> int:
    older = None if args.older_than is None else timedelta(days=args.older_than)
    with open_store(args) as store:
        deleted = events.prune(store, before=args.before, older_than=older, force=args.force)
    print(f"deleted {deleted} events")
    return 0


def _relay_webhook(args: argparse.Namespace) -> int:
    secret = None
    if args.secret_env:
        value = os.environ.get(args.secret_env)
        if not value:
            raise ConfigurationError(f"the environment variable {args.secret_env} is not set")
        secret = value.encode()
    with open_store(args) as store, _stop_on_signals() as stop:
        delivered = relay.relay_webhook(
            store,
            args.url,
            consumer=args.consumer,
            secret=secret,
            events=args.type,
            stop=stop,
            timeout=args.timeout,
            poll_interval=args.poll_interval,
            max_retry_delay=args.max_retry_delay,
            start=args.start,
        )
    print(f"delivered {delivered} events", file=sys.stderr)
    return 0


def _consumers(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.remove:
            if not events.remove_consumer(store, args.remove):
                raise MetastoreError(f"no consumer named {args.remove!r}")
            print(f"removed consumer {args.remove}")
            return 0
        rows = [info.to_dict() for info in events.list_consumers(store)]
    if args.json:
        print_json(rows)
        return 0
    header = ("name", "last_seq", "lag", "lease_owner", "lease_expires_at")
    table = [header] + [tuple("-" if r[k] is None else str(r[k]) for k in header) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _add_events_commands(commands: Any) -> None:
    """``events tail|prune``, ``relay webhook``, ``consumers``."""
    feed = commands.add_parser("events", help="follow and prune the change feed")
    feed_commands = feed.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    tail = feed_commands.add_parser("tail", help="print events as JSON lines")
    option(tail, "--consumer", metavar="NAME", help="read as this consumer, advancing its cursor")
    flag(tail, "--follow", help="keep printing new events until interrupted")
    option(
        tail,
        "--type",
        env="METASTORE_EVENT_TYPES",
        metavar="TYPE[,TYPE]",
        help="only these event types (SERIES_ADDED, INSTANCES_ADDED, STUDY_DELETED)",
    )
    option(tail, "--after", type=int, default=0, help="without --consumer: start after this seq")
    option(tail, "--poll-interval", type=float, default=1.0, help="seconds between polls (SQLite)")
    tail.set_defaults(handler=_events_tail)

    prune = feed_commands.add_parser(
        "prune", help="delete events every registered consumer has processed"
    )
    option(
        prune,
        "--before",
        type=int,
        env="METASTORE_PRUNE_BEFORE",
        metavar="SEQ",
        help="events with a lower sequence number",
    )
    option(
        prune,
        "--older-than",
        type=float,
        env="METASTORE_PRUNE_OLDER_THAN",
        metavar="DAYS",
        help="events written more than DAYS ago",
    )
    flag(
        prune,
        "--force",
        env="METASTORE_PRUNE_FORCE",
        help="delete them even if a consumer has not processed them",
    )
    prune.set_defaults(handler=_events_prune)

    relays = commands.add_parser("relay", help="push the change feed to other systems")
    relay_commands = relays.add_subparsers(dest="relay_command", metavar="KIND", required=True)
    webhook = relay_commands.add_parser(
        "webhook", help="POST each event as JSON to a URL, as a durable consumer"
    )
    webhook.add_argument("url", metavar="URL", help="the endpoint (http or https)")
    option(webhook, "--consumer", metavar="NAME", required=True, help="the consumer's name")
    option(
        webhook,
        "--secret-env",
        env="METASTORE_WEBHOOK_SECRET_ENV",
        metavar="VAR",
        help="sign each body with HMAC-SHA256 under the secret in this environment variable",
    )
    option(
        webhook,
        "--type",
        env="METASTORE_EVENT_TYPES",
        metavar="TYPE[,TYPE]",
        help="only these event types",
    )
    option(
        webhook,
        "--timeout",
        type=float,
        default=10.0,
        env="METASTORE_WEBHOOK_TIMEOUT",
        help="seconds to wait for the endpoint",
    )
    option(
        webhook,
        "--max-retry-delay",
        type=float,
        default=30.0,
        env="METASTORE_WEBHOOK_MAX_RETRY_DELAY",
        help="the longest wait between retries of a failing endpoint, in seconds",
    )
    option(
        webhook, "--poll-interval", type=float, default=1.0, help="seconds between polls (SQLite)"
    )
    option(
        webhook,
        "--start",
        choices=("earliest", "latest"),
        default="earliest",
        env="METASTORE_CONSUMER_START",
        help="where a new consumer begins",
    )
    webhook.set_defaults(handler=_relay_webhook)

    registry = commands.add_parser("consumers", help="list consumers, their cursor and lag")
    flag(registry, "--json", env="METASTORE_CONSUMERS_JSON", help="print JSON instead of a table")
    option(
        registry,
        "--remove",
        env="METASTORE_CONSUMERS_REMOVE",
        metavar="NAME",
        help="forget this consumer (it no longer holds back prune)",
    )
    registry.set_defaults(handler=_consumers)


# -- display sets -----------------------------------------------------------


def _add_displaysets_commands(commands: Any) -> None:
    displaysets = commands.add_parser(
        "displaysets", help="what a viewer shows of a study: its display sets, as JSON"
    )
    displaysets.add_argument("study_uid", metavar="STUDY_UID", help="StudyInstanceUID")
    option(
        displaysets,
        "--source",
        env="METASTORE_DISPLAYSETS_SOURCE",
        default=None,
        help="only the series list of this source",
    )
    displaysets.set_defaults(handler=_displaysets)


def _displaysets(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        display_sets = store.get_display_sets(args.study_uid, source=args.source)
    if display_sets is None:
        raise MetastoreError(f"study {args.study_uid} is not in the index")
    print_json(display_sets)
    return 0


# -- dicomweb ingestion, workers, jobs ------------------------------------------


def _ingest_dicomweb(args: argparse.Namespace) -> int:
    headers = auth_headers(args.header, token_env=args.token_env)
    settings = {"page_size": args.page_size, "timeout": args.timeout, "retries": args.retries}
    config = dicomweb_config(
        args.root, name=args.source, static=args.static_wado, headers=headers, settings=settings
    )
    query = dict(_key_value(item) for item in args.query)
    with Progress(f"ingest {config.name}", unit="studies") as progress:
        summary = runner.ingest_source(
            db.resolve_url(args.db),
            config,
            query=query,
            study_uids=args.study,
            workers=args.workers,
            lease=args.lease,
            max_attempts=args.max_attempts,
            on_progress=runner.reporter(progress),
            on_queued=progress.set_total,
        )
    print(summary.describe())
    for error in summary.errors:
        print(f"  failed: {error}")
    if summary.failures:
        print(f"metastore: {summary.failures} studies failed: see `metastore jobs --state failed`")
        return 1
    return 0


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigurationError(f"--query {item!r} is not KEY=VALUE")
    return key, value


def _worker(args: argparse.Namespace) -> int:
    headers = auth_headers(args.header, token_env=args.token_env)
    if headers and not args.source:
        raise ConfigurationError(
            "--header and --token-env need --source: credentials go to one source"
        )
    with open_store(args) as store:
        stats = runner.serve(
            store,
            source=args.source,
            secrets={args.source: headers} if args.source else {},
            lease=args.lease,
            poll=args.poll,
            once=args.once,
        )
    print(
        f"worker: {stats.jobs} jobs, {stats.studies} studies, {stats.series} series, "
        f"{stats.instances} instances, {stats.retries} retries, {stats.failures} failed"
    )
    return 0


def _jobs(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        found = ingest.JobQueue(store).jobs(state=args.state, source=args.source, limit=args.limit)
    for source, job in found:
        if args.json:
            print_json_line({"source": source, **job.to_dict()})
            continue
        line = f"{job.id}  {source}  {job.unit}  {job.state}  attempts {job.attempts}/{job.max_attempts}"
        print(line + (f"  {job.last_error}" if job.last_error else ""))
    return 0


def _add_dicomweb_commands(commands: Any) -> None:
    ingest_commands = command_group(
        commands, "ingest", "pull metadata from a source into the index"
    )
    web = ingest_commands.add_parser(
        "dicomweb",
        help="search a DICOMweb server (or a static DICOMweb tree) and pull its studies",
    )
    web.add_argument("root", metavar="ROOT", help="the DICOMweb root URL (QIDO-RS and WADO-RS)")
    option(web, "--source", metavar="NAME", default=None, help="source name (default: the host)")
    flag(web, "--static-wado", help="a static tree: it ignores queries, metastore filters")
    repeated(web, "--query", metavar="KEY=VALUE", help="a QIDO-RS query parameter (repeatable)")
    repeated(web, "--study", metavar="UID", help="pull this study (repeatable)")
    option(web, "--workers", type=int, default=1, help="worker processes")
    option(web, "--page-size", type=int, default=None, help="QIDO-RS page size")
    option(web, "--timeout", type=float, default=None, help="seconds to wait for a response")
    option(web, "--retries", type=int, default=None, help="tries after the first, per request")
    option(web, "--max-attempts", type=int, default=5, help="attempts per study before it fails")
    _add_worker_options(web)
    web.set_defaults(handler=_ingest_dicomweb)

    worker = commands.add_parser("worker", help="drain or serve the ingest job queue")
    flag(worker, "--once", help="stop when no job is queued or running")
    option(worker, "--source", metavar="NAME", default=None, help="only this source's jobs")
    option(
        worker, "--poll", type=float, default=2.0, help="seconds between looks at an empty queue"
    )
    _add_worker_options(worker)
    worker.set_defaults(handler=_worker)

    jobs = commands.add_parser("jobs", help="list ingest jobs with their last errors")
    option(jobs, "--state", choices=ingest.STATES, default=None, help="only jobs in this state")
    option(jobs, "--source", metavar="NAME", default=None, help="only this source's jobs")
    option(jobs, "--limit", type=int, default=100, help="at most this many jobs")
    flag(jobs, "--json", env="METASTORE_JOBS_JSON", help="print JSON lines")
    jobs.set_defaults(handler=_jobs)


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    repeated(
        parser, "--header", metavar="'NAME: VALUE'", help="an HTTP header to send (repeatable)"
    )
    option(parser, "--token-env", metavar="VAR", default=None, help="send the bearer token in $VAR")
    option(parser, "--lease", type=float, default=60.0, help="seconds a worker holds a job")


# -- DICOM JSON launch files and folders ---------------------------------------


def _ingest_summary(summary: FileIngestSummary) -> int:
    print(summary)
    for failure in summary.failures:
        print(f"failed: {failure}", file=sys.stderr)
    for path, reason in summary.skipped_files:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0 if summary.ok else 1


def _ingest_dicomjson(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        summary = ingest_launch_file(
            store, args.location, source=args.source, keep_going=args.keep_going
        )
    return _ingest_summary(summary)


def _ingest_folder(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        summary = ingest_folder(
            store,
            args.folder,
            url_root=args.url_root,
            source=args.source,
            keep_going=args.keep_going,
        )
    return _ingest_summary(summary)


def _export_dicomjson(args: argparse.Namespace) -> int:
    if bool(args.study_uids) == bool(args.all):
        raise ConfigurationError("name the studies to export, or give --all")
    with open_store(args) as store:
        summary = export_launch_file(
            store, args.output, None if args.all else args.study_uids, source=args.source
        )
    print(summary)
    return 0


def _add_dicomjson_commands(commands: Any) -> None:
    kinds = command_group(commands, "ingest", "pull metadata from a source into the index")
    dicomjson = kinds.add_parser(
        "dicomjson", help="an OHIF DICOM JSON launch file (path or http(s) URL, .json or .json.gz)"
    )
    dicomjson.add_argument("location", metavar="PATH_OR_URL", help="the launch file")
    option(
        dicomjson,
        "--source",
        env="METASTORE_DICOMJSON_SOURCE",
        default=None,
        help="source name (default: the file's name without .json/.gz)",
    )
    flag(
        dicomjson,
        "--keep-going",
        env="METASTORE_DICOMJSON_KEEP_GOING",
        help="skip bad studies and list them (exit 1 when any failed)",
    )
    dicomjson.set_defaults(handler=_ingest_dicomjson)

    folder = kinds.add_parser("folder", help="a folder of DICOM files (read without pixel data)")
    folder.add_argument("folder", metavar="DIR", help="the folder (searched recursively)")
    option(
        folder,
        "--url-root",
        env="METASTORE_FOLDER_URL_ROOT",
        default=None,
        help="URL the folder is served at; urls are dicomweb:URL_ROOT/<path> (default: file://DIR)",
    )
    option(
        folder,
        "--source",
        env="METASTORE_FOLDER_SOURCE",
        default=None,
        help="source name (default: the folder's name)",
    )
    flag(
        folder,
        "--keep-going",
        env="METASTORE_FOLDER_KEEP_GOING",
        help="skip studies the index refuses and list them (exit 1 when any failed)",
    )
    folder.set_defaults(handler=_ingest_folder)

    export = command_group(commands, "export", "write indexed metadata out")
    launch = export.add_parser(
        "dicomjson", help="an OHIF DICOM JSON launch file of indexed studies"
    )
    launch.add_argument("study_uids", metavar="STUDY_UID", nargs="*", help="studies to export")
    option(
        launch,
        "-o",
        "--output",
        dest="output",
        env="METASTORE_EXPORT_OUTPUT",
        required=True,
        metavar="FILE",
        help="the launch file to write (.gz: gzip)",
    )
    option(
        launch,
        "--source",
        env="METASTORE_EXPORT_SOURCE",
        default=None,
        help="only this source's series lists (default: every series once)",
    )
    flag(launch, "--all", env="METASTORE_EXPORT_ALL", help="export every indexed study")
    launch.set_defaults(handler=_export_dicomjson)


# -- the parser -------------------------------------------------------------


# -- serve ------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from metastore.service import Settings
    from metastore.service.server import serve

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise ConfigurationError(f"the environment variable {args.token_env} holds no token")
    settings = Settings(
        token=token,
        cors_origins=tuple(args.cors_origin),
        public_url=args.public_url,
        max_limit=args.max_limit,
        upstream_timeout=args.upstream_timeout,
    )
    serve(
        db.resolve_url(args.db),
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def _add_serve_command(commands: Any) -> None:
    from metastore.service.settings import SETTINGS

    defaults = {s.name: s for s in SETTINGS}
    serve = commands.add_parser(
        "serve",
        help="a read-only DICOMweb service over the index (QIDO-RS, WADO-RS, /dicomjson, /changefeed)",
    )
    option(
        serve,
        "--host",
        env="METASTORE_SERVE_HOST",
        default="127.0.0.1",
        help="address to listen on",
    )
    option(
        serve,
        "--port",
        env="METASTORE_SERVE_PORT",
        type=int,
        default=8080,
        help="port to listen on",
    )
    option(
        serve,
        "--workers",
        env="METASTORE_SERVE_WORKERS",
        type=int,
        default=1,
        help="worker processes",
    )
    option(
        serve,
        "--token-env",
        env="METASTORE_SERVE_TOKEN_ENV",
        metavar="VAR",
        default=None,
        help="require Authorization: Bearer <the token in this environment variable>",
    )
    repeated(
        serve,
        "--cors-origin",
        env="METASTORE_SERVE_CORS_ORIGIN",
        metavar="ORIGIN",
        help=defaults["cors_origins"].help,
    )
    option(
        serve,
        "--public-url",
        env="METASTORE_SERVE_PUBLIC_URL",
        metavar="URL",
        default=None,
        help=defaults["public_url"].help,
    )
    option(
        serve,
        "--max-limit",
        env="METASTORE_SERVE_MAX_LIMIT",
        type=int,
        default=1000,
        help=defaults["max_limit"].help,
    )
    option(
        serve,
        "--upstream-timeout",
        env="METASTORE_SERVE_UPSTREAM_TIMEOUT",
        type=float,
        default=30.0,
        help=defaults["upstream_timeout"].help,
    )
    serve.set_defaults(handler=_serve)


# -- search -------------------------------------------------------------------


def _add_search_commands(commands: Any) -> None:
    search = commands.add_parser(
        "search", help="QIDO-RS search over the index (PS3.18 8.3.4 rules)"
    )
    levels = search.add_subparsers(dest="search_level", metavar="LEVEL", required=True)
    for level in ("studies", "series", "instances"):
        parser = levels.add_parser(level, help=f"{level} matching KEY=VALUE query parameters")
        parser.add_argument(
            "query",
            nargs="*",
            metavar="KEY=VALUE",
            help="a keyword or 8-hex tag and its value (wildcards, ranges, UID lists)",
        )
        repeated(
            parser,
            "--includefield",
            env="METASTORE_SEARCH_INCLUDEFIELD",
            metavar="TAG",
            help="also return this attribute (keyword, tag or all)",
        )
        option(
            parser,
            "--limit",
            env="METASTORE_SEARCH_LIMIT",
            type=int,
            default=None,
            help="at most this many rows",
        )
        option(
            parser,
            "--offset",
            env="METASTORE_SEARCH_OFFSET",
            type=int,
            default=0,
            help="skip this many rows",
        )
        flag(
            parser, "--count", env="METASTORE_SEARCH_COUNT", help="print the number of matches too"
        )
        option(
            parser,
            "--format",
            env="METASTORE_SEARCH_FORMAT",
            choices=("table", "json", "csv"),
            default="table",
            help="a table for people, DICOM JSON lines or CSV for scripts",
        )
        if level != "studies":
            option(
                parser,
                "--study",
                env="METASTORE_SEARCH_STUDY",
                default=None,
                help="within this study",
            )
        if level == "instances":
            option(
                parser,
                "--series",
                env="METASTORE_SEARCH_SERIES",
                default=None,
                help="within this series",
            )
        parser.set_defaults(handler=_search)


def _search(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"limit": args.limit, "offset": args.offset, "count": args.count}
    try:
        query = search_format.query_from_pairs(args.query, args.includefield)
        with open_store(args) as store:
            if args.search_level == "studies":
                result = search.search_studies(store, query, **options)
            elif args.search_level == "series":
                result = search.search_series(store, query, study_uid=args.study, **options)
            else:
                result = search.search_instances(
                    store, query, study_uid=args.study, series_uid=args.series, **options
                )
    except QueryError as err:
        print(f"metastore: malformed query: {err}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"metastore: warning: {warning}", file=sys.stderr)
    if args.format == "json":
        for row in result.rows:
            print_json_line(row)
    else:
        search_format.write_rows(sys.stdout, result.rows, args.format)
    if result.truncated:
        print(
            "metastore: more rows match than one page holds: use --limit/--offset", file=sys.stderr
        )
    if result.total is not None:
        print(f"{result.total} matching", file=sys.stderr if args.format != "table" else sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (a test walks it to check help and env twins)."""
    parser = argparse.ArgumentParser(
        prog="metastore",
        description="A persistent, SQL-backed index of DICOM study, series and instance metadata.",
    )
    option(
        parser,
        "--db",
        env=db.URL_ENV,
        metavar="URL",
        default=None,
        help=f"database URL (default {db.DEFAULT_URL})",
    )
    option(parser, "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db_parser = commands.add_parser("db", help="schema migrations")
    db_commands = db_parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="bring the database to the head revision")
    option(upgrade, "--revision", default="head", help="target revision")
    upgrade.set_defaults(handler=_db_upgrade)
    current = db_commands.add_parser("current", help="print the database's schema revision")
    current.set_defaults(handler=_db_current)

    show = commands.add_parser("show", help="print indexed metadata as JSON")
    show_commands = show.add_subparsers(dest="show_command", metavar="WHAT", required=True)
    show_study = show_commands.add_parser(
        "study", help="a study with its series lists and instances"
    )
    show_study.add_argument("study_uid", metavar="UID", help="StudyInstanceUID")
    show_study.set_defaults(handler=_show_study)

    stats = commands.add_parser(
        "stats", help="studies, series and instances by source and modality"
    )
    flag(stats, "--json", env="METASTORE_STATS_JSON", help="print JSON instead of a table")
    stats.set_defaults(handler=_stats)

    changes = commands.add_parser("changes", help="print change-feed events as JSON lines")
    option(
        changes, "--after", type=int, default=0, help="only events with a higher sequence number"
    )
    option(changes, "--limit", type=int, default=1000, help="at most this many events")
    changes.set_defaults(handler=_changes)
    _add_events_commands(commands)
    _add_displaysets_commands(commands)
    _add_dicomweb_commands(commands)
    _add_dicomjson_commands(commands)
    _add_serve_command(commands)
    _add_search_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except MetastoreError as err:
        print(f"metastore: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("metastore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
