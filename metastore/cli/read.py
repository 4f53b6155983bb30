"""``metastore show|stats|changes|displaysets|export``: reading the index."""

from __future__ import annotations

import argparse
from typing import Any

from metastore.cli._common import (
    command_group,
    count_int,
    flag,
    open_store,
    option,
    positive_int,
    print_json,
    print_json_line,
    print_table,
)
from metastore.errors import ConfigurationError, MetastoreError


def _show_study(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        study = store.get_study(args.study_uid)
    if study is None:
        raise MetastoreError(f"study {args.study_uid} is not in the index")
    print_json(study)
    return 0


def _stats(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        rows = store.stats()
    if args.json:
        print_json(rows)
        return 0
    print_table(("source", "modality", "studies", "series", "instances"), rows)
    totals = {k: sum(int(row[k]) for row in rows) for k in ("series", "instances")}
    print(f"total: {totals['series']} series, {totals['instances']} instances")
    return 0


def _changes(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        for event in store.changes(after=args.after, limit=args.limit):
            print_json_line(event.to_dict())
    return 0


def _displaysets(args: argparse.Namespace) -> int:
    from metastore.displaysets import get_display_sets

    with open_store(args, read_only=True) as store:
        if args.source is not None and store.get_source(args.source) is None:
            raise MetastoreError(f"no source named {args.source!r} (see `metastore sources`)")
        display_sets = get_display_sets(store, args.study_uid, source=args.source)
    if display_sets is None:
        raise MetastoreError(f"study {args.study_uid} is not in the index")
    print_json(display_sets)
    return 0


def _export_dicomjson(args: argparse.Namespace) -> int:
    from metastore.launchfile.export import export_launch_file

    if bool(args.study_uids) == bool(args.all):
        raise ConfigurationError("name the studies to export, or give --all")
    with open_store(args, read_only=True) as store:
        summary = export_launch_file(
            store, args.output, None if args.all else args.study_uids, source=args.source
        )
    print(summary)
    return 0


def add_commands(commands: Any) -> None:
    """``show study``, ``stats``, ``changes``, ``displaysets``, ``export dicomjson``."""
    show_commands = command_group(commands, "show", "print indexed metadata as JSON", "WHAT")
    show_study = show_commands.add_parser(
        "study", help="a study with its series lists and instances"
    )
    show_study.add_argument("study_uid", metavar="UID", help="StudyInstanceUID")
    show_study.set_defaults(handler=_show_study)

    stats = commands.add_parser(
        "stats", help="studies, series and instances by source and modality"
    )
    flag(stats, "--json", help="print JSON instead of a table")
    stats.set_defaults(handler=_stats)

    changes = commands.add_parser("changes", help="print change-feed events as JSON lines")
    option(
        changes,
        "--after",
        type=count_int,
        default=0,
        help="only events with a higher sequence number",
    )
    option(changes, "--limit", type=positive_int, default=1000, help="at most this many events")
    changes.set_defaults(handler=_changes)

    displaysets = commands.add_parser(
        "displaysets", help="what a viewer shows of a study: its display sets, as JSON"
    )
    displaysets.add_argument("study_uid", metavar="STUDY_UID", help="StudyInstanceUID")
    option(
        displaysets,
        "--source",
        default=None,
        help="only the series list of this source",
    )
    displaysets.set_defaults(handler=_displaysets)

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
        required=True,
        metavar="FILE",
        help="the launch file to write (.gz: gzip)",
    )
    option(
        launch,
        "--source",
        default=None,
        help="only this source's series lists (default: every series once)",
    )
    flag(launch, "--all", help="export every indexed study")
    launch.set_defaults(handler=_export_dicomjson)
