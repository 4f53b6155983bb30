"""``metastore serve``: the read-only DICOMweb service over the index."""

from __future__ import annotations

import argparse
import os
from typing import Any

from metastore.cli._common import option, repeated
from metastore.db import resolve_url
from metastore.errors import ConfigurationError
from metastore.service import SETTINGS, Settings
from metastore.service.server import serve as run_service


def _serve(args: argparse.Namespace) -> int:
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
