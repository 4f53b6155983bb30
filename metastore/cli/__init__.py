"""The ``metastore`` command: parse, configure logging, call the library, print.

Thin on purpose: every command is one library call. One module per command
group (:mod:`~metastore.cli.database`, :mod:`~metastore.cli.read`,
:mod:`~metastore.cli.events`, :mod:`~metastore.cli.ingest`,
:mod:`~metastore.cli.search`, :mod:`~metastore.cli.serve`, :mod:`~metastore.cli.sync`), each adding
its commands with ``add_commands``; what they share is in ``_common``.
Every option has an environment twin named ``METASTORE_<OPTION>`` (``--db``
is ``METASTORE_DATABASE_URL``), shown in its help. Expected errors
(``MetastoreError``) print one line on stderr and exit 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from metastore.cli import database, events, ingest, ohif, read, search, serve, sync
from metastore.cli._common import Handler, command_group, option
from metastore.db import DEFAULT_URL, URL_ENV
from metastore.errors import MetastoreError

__all__ = ["build_parser", "command_group", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (a test walks it to check help and env twins)."""
    parser = argparse.ArgumentParser(
        prog="metastore",
        description="A persistent, SQL-backed index of DICOM study, series and instance metadata.",
    )
    option(
        parser,
        "--db",
        env=URL_ENV,
        metavar="URL",
        default=None,
        help=f"database URL (default {DEFAULT_URL})",
    )
    option(parser, "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (database, read, events, ingest, search, serve, ohif, sync):
        group.add_commands(commands)
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
