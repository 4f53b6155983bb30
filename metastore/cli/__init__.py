"""The ``metastore`` command: parse, configure logging, call the library, print.

Thin on purpose: every command is one library call. One module per command
group (:mod:`~metastore.cli.database`, :mod:`~metastore.cli.read`,
:mod:`~metastore.cli.manage`, :mod:`~metastore.cli.events`,
:mod:`~metastore.cli.ingest`, :mod:`~metastore.cli.search`,
:mod:`~metastore.cli.serve`, :mod:`~metastore.cli.ohif`,
:mod:`~metastore.cli.sync`), each adding
its commands with ``add_commands`` and importing the library only when a
command runs, so ``--help`` is quick. What they share is in ``_common``,
the environment twin rule included. Expected errors (``MetastoreError``)
print one line on stderr and exit 1; bad usage (a bad option, or a bad
value in an option's environment twin) exits 2; an interrupt exits 130,
and a closed pipe (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from metastore.cli import database, events, ingest, manage, ohif, read, search, serve, sync
from metastore.cli._common import Handler, check_env, command_group, option
from metastore.dburl import DEFAULT_URL, URL_ENV
from metastore.errors import MetastoreError
from metastore.version import __version__

__all__ = ["build_parser", "command_group", "main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (a test walks it to check help and env twins)."""
    parser = argparse.ArgumentParser(
        prog="metastore",
        description="A persistent, SQL-backed index of DICOM study, series and instance metadata.",
        epilog=(
            "Every option has an environment twin, shown in its help: METASTORE_ + the "
            "command's words + the option's name (metastore ingest folder --workers: "
            "METASTORE_INGEST_FOLDER_WORKERS); --db's is METASTORE_DATABASE_URL."
        ),
    )
    parser.add_argument("--version", action="version", version=f"metastore {__version__}")
    option(
        parser,
        "--db",
        env=URL_ENV,
        metavar="URL",
        default=None,
        help=f"database URL (default {DEFAULT_URL})",
    )
    option(
        parser,
        "--log-level",
        type=str.upper,
        choices=_LEVELS,
        default="WARNING",
        help="logging level (DEBUG, INFO, WARNING, ERROR)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (database, read, manage, events, ingest, search, serve, ohif, sync):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_env(parser, args)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()
        return code
    except MetastoreError as err:
        print(f"metastore: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from metastore.cli import progress

        done = f" after {progress.last[0].summary()}" if progress.last else ""
        print(f"metastore: interrupted{done}; what was written is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`metastore changes | head -1`): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
