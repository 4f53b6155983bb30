"""``metastore db upgrade|current``: schema migrations; ``metastore check``: the index verified."""

from __future__ import annotations

import argparse
from typing import Any

from metastore.cli._common import command_group, flag, open_store, option


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


def _check(args: argparse.Namespace) -> int:
    from metastore.check import check

    with open_store(args) as store:
        report = check(store, repair=args.repair)
    for note in report.notes:
        print(f"note: {note}")
    for finding in report.findings:
        state = ""
        if report.repaired:
            state = " (repaired)" if finding.repairable else " (cannot be repaired)"
        print(f"{finding}{state}")
    found = len(report.findings)
    if not found:
        print("clean")
    elif report.repaired:
        left = len(report.remaining)
        print(f"{found} finding(s), {found - left} repaired, {left} left")
    else:
        print(f"{found} finding(s); `metastore check --repair` fixes the repairable ones")
    return 0 if report.clean else 1


def add_commands(commands: Any) -> None:
    """``db upgrade``, ``db current``, ``check``."""
    checking = commands.add_parser(
        "check", help="verify the index (counts, orphans, feed, leases); exit 1 on findings"
    )
    flag(checking, "--repair", help="fix what can be recomputed, in one transaction")
    checking.set_defaults(handler=_check)
    actions = command_group(commands, "db", "schema migrations", "ACTION")
    upgrade = actions.add_parser("upgrade", help="bring the database to the head revision")
    option(upgrade, "--revision", default="head", help="target revision")
    upgrade.set_defaults(handler=_upgrade)
    current = actions.add_parser("current", help="print the database's schema revision")
    current.set_defaults(handler=_current)
