"""``metastore serve``: the read-only DICOMweb service over the index."""

from __future__ import annotations

import argparse
import os
from typing import Any

from metastore.cli._common import count_int, option, positive_float, positive_int, repeated
from metastore.dburl import resolve_url
from metastore.errors import ConfigurationError
from metastore.service.settings import SETTINGS


def _serve(args: argparse.Namespace) -> int:
    from metastore.service.server import serve as run_service
    from metastore.service.settings import Settings

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
    run_service(
        resolve_url(args.db),
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def add_commands(commands: Any) -> None:
    """``serve``."""
    defaults = {s.name: s for s in SETTINGS}
    serve = commands.add_parser(
        "serve",
        help="a read-only DICOMweb service over the index (QIDO-RS, WADO-RS, /dicomjson, /changefeed)",
    )
    option(
        serve,
        "--host",
        default="127.0.0.1",
        help="address to listen on",
    )
    option(
        serve,
        "--port",
        type=count_int,
        default=8080,
        help="port to listen on",
    )
    option(
        serve,
        "--workers",
        type=positive_int,
        default=1,
        help="worker processes",
    )
    option(
        serve,
        "--token-env",
        metavar="VAR",
        default=None,
        help="require Authorization: Bearer <the token in this environment variable>",
    )
    repeated(
        serve,
        "--cors-origin",
        metavar="ORIGIN",
        help=defaults["cors_origins"].help,
    )
    option(
        serve,
        "--public-url",
        metavar="URL",
        default=None,
        help=defaults["public_url"].help,
    )
    option(
        serve,
        "--max-limit",
        type=positive_int,
        default=1000,
        help=defaults["max_limit"].help,
    )
    option(
        serve,
        "--upstream-timeout",
        type=positive_float,
        default=30.0,
        help=defaults["upstream_timeout"].help,
    )
    serve.set_defaults(handler=_serve)
