"""``metastore db upgrade|current``: schema migrations."""

from __future__ import annotations

import argparse
from typing import Any

from metastore.cli._common import command_group, option


def _upgrade(args: argparse.Namespace) -> int:
    from metastore import db

    state = db.schema_state(args.db, upgrade_to=args.revision)
    print(f"{state.url}: {state.before or '(empty)'} -> {state.current}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from metastore import db

    state = db.schema_state(args.db)
    where = "at head" if state.at_head else f"behind head {state.head}: run `metastore db upgrade`"
    print(f"{state.current or '(empty)'} ({where})")
    return 0


def add_commands(commands: Any) -> None:
    """``db upgrade``, ``db current``."""
    actions = command_group(commands, "db", "schema migrations", "ACTION")
    upgrade = actions.add_parser("upgrade", help="bring the database to the head revision")
    option(upgrade, "--revision", default="head", help="target revision")
    upgrade.set_defaults(handler=_upgrade)
    current = actions.add_parser("current", help="print the database's schema revision")
    current.set_defaults(handler=_current)
