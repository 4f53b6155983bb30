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
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from metastore import db
from metastore.errors import ConfigurationError, MetastoreError
from metastore.export import export_launch_file
from metastore.sources._ingest import IngestSummary
from metastore.sources.dicomjson import ingest_launch_file
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


# -- command groups shared by several areas -----------------------------------


def command_group(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subcommands of group ``name`` (``metastore ingest KIND``), created on first use.

    Each area adds its own kinds: ``command_group(commands, "ingest", ...)
    .add_parser("dicomweb", ...)`` works whichever area created the group.
    """
    parser = commands.choices.get(name)
    if parser is None:
        parser = commands.add_parser(name, help=help)
        return parser.add_subparsers(dest=f"{name}_kind", metavar="KIND", required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError(f"command {name} has no subcommands")  # pragma: no cover


# -- DICOM JSON launch files and folders ---------------------------------------


def _ingest_summary(summary: IngestSummary) -> int:
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


def _add_dicomjson_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = command_group(commands, "ingest", "add metadata to the index from a source")
    dicomjson = ingest.add_parser(
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

    folder = ingest.add_parser("folder", help="a folder of DICOM files (read without pixel data)")
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
    _add_dicomjson_commands(commands)
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
