"""``metastore sources``, ``delete study|source``: what the index holds, and taking it out."""

from __future__ import annotations

import argparse
from typing import Any

from metastore.cli._common import command_group, flag, open_store, print_json, print_table
from metastore.errors import MetastoreError


def _sources(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        found = store.list_sources()
        counts: dict[str, dict[str, int]] = {}
        for row in store.stats():
            totals = counts.setdefault(row["source"], {"series": 0, "instances": 0})
            totals["series"] += int(row["series"])
            totals["instances"] += int(row["instances"])
    rows = [
        {
            "name": source.name,
            "kind": source.kind,
            "root_url": source.root_url,
            **counts.get(source.name, {"series": 0, "instances": 0}),
        }
        for source in found
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(("name", "kind", "series", "instances", "root_url"), rows)
    return 0


def _delete_study(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if not store.delete_study(args.study_uid):
            raise MetastoreError(f"study {args.study_uid} is not in the index")
    print(f"deleted study {args.study_uid}")
    return 0


def _delete_source(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        removed = store.delete_source(args.name)
    if removed is None:
        raise MetastoreError(f"no source named {args.name!r} (see `metastore sources`)")
    gone = sum(1 for r in removed if r.study_deleted)
    series = sum(len(r.series_uids) for r in removed)
    instances = sum(r.instances for r in removed)
    print(
        f"deleted source {args.name}: {series} series, {instances} instances; "
        f"{gone} studies removed, {len(removed) - gone} kept with other sources' series"
    )
    return 0


def add_commands(commands: Any) -> None:
    """``sources``, ``delete study``, ``delete source``."""
    listing = commands.add_parser("sources", help="the registered sources with their counts")
    flag(listing, "--json", help="print JSON instead of a table")
    listing.set_defaults(handler=_sources)
    delete = command_group(commands, "delete", "take studies or sources out of the index", "WHAT")
    study = delete.add_parser(
        "study", help="a study with every series list and instance (writes STUDY_DELETED)"
    )
    study.add_argument("study_uid", metavar="UID", help="StudyInstanceUID")
    study.set_defaults(handler=_delete_study)
    source = delete.add_parser(
        "source",
        help="a source with its series lists (STUDY_DELETED or SERIES_REMOVED per study)",
    )
    source.add_argument("name", metavar="NAME", help="the source's name")
    source.set_defaults(handler=_delete_source)
