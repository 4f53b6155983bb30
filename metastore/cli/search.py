"""``metastore search studies|series|instances``: QIDO-RS search over the index."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from metastore.cli._common import command_group, flag, open_store, option, print_json_line, repeated
from metastore.errors import QueryError
from metastore.search import search_instances, search_series, search_studies
from metastore.search.format import query_from_pairs, write_rows


def _search(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"limit": args.limit, "offset": args.offset, "count": args.count}
    try:
        query = query_from_pairs(args.query, args.includefield)
        with open_store(args) as store:
            if args.search_level == "studies":
                result = search_studies(store, query, **options)
            elif args.search_level == "series":
                result = search_series(store, query, study_uid=args.study, **options)
            else:
                result = search_instances(
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
        write_rows(sys.stdout, result.rows, args.format)
    if result.truncated:
        print(
            "metastore: more rows match than one page holds: use --limit/--offset", file=sys.stderr
        )
    if result.total is not None:
        print(f"{result.total} matching", file=sys.stdout if args.format == "table" else sys.stderr)
    return 0


def add_commands(commands: Any) -> None:
    """``search studies|series|instances``."""
    levels = command_group(commands, "search", "QIDO-RS search over the index", metavar="LEVEL")
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
        parser.set_defaults(handler=_search, search_level=level)
