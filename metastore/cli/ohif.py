"""``metastore ohif-config``: the OHIF viewer's ``app-config.js`` for a metastore service."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from metastore.cli._common import option
from metastore.service.ohif import DEFAULT_URL, app_config


def _ohif_config(args: argparse.Namespace) -> int:
    sys.stdout.write(app_config(args.url))
    return 0


def add_commands(commands: Any) -> None:
    """Add ``ohif-config``."""
    parser = commands.add_parser(
        "ohif-config", help="print the OHIF viewer's app-config.js for a metastore service"
    )
    option(
        parser,
        "--url",
        env="METASTORE_OHIF_URL",
        default=DEFAULT_URL,
        help=f"where the browser reaches the service, without /dicomweb (default {DEFAULT_URL})",
    )
    parser.set_defaults(handler=_ohif_config)
