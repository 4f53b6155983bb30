"""The README's main job: index the bundled real studies, then show what is in the index.

Reads the static DICOMweb tree shipped in ``metastore/data/static-dicomweb``
(eight real studies: their QIDO study and series rows and WADO-RS series
metadata), naturalizes it and adds it through the ``MetaStore`` API under
the source ``sample``. Run it twice: the second run changes nothing.

    python scripts/demo.py [--db URL]
"""

from __future__ import annotations

import argparse
import gzip
import logging
from pathlib import Path
from typing import Any

import orjson

import metastore
from metastore import MetaStore, naturalize

TREE = Path(metastore.__file__).resolve().parent / "data" / "static-dicomweb" / "studies"


def _read(path: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = orjson.loads(gzip.decompress(path.read_bytes()))
    return data


def index_tree(store: MetaStore, tree: Path = TREE, source: str = "sample") -> tuple[int, int]:
    """Add every study of a local static DICOMweb tree; returns (instances added, events)."""
    added = events = 0
    for study_dir in sorted(p for p in tree.iterdir() if p.is_dir()):
        for row in _read(study_dir / "index.json.gz"):
            store.add_study(naturalize(row), source=source)
        series_rows = [naturalize(row) for row in _read(study_dir / "series" / "index.json.gz")]
        events += len(store.add_series_metadata(series_rows, source=source).events)
        for series_dir in sorted(p for p in (study_dir / "series").iterdir() if p.is_dir()):
            result = store.add_instances(
                [naturalize(item) for item in _read(series_dir / "metadata.gz")], source=source
            )
            added += result.inserted
            events += len(result.events)
        logging.info("indexed study %s", study_dir.name)
    return added, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        default=None,
        help="database URL (default: METASTORE_DATABASE_URL or sqlite:///metastore.db)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with MetaStore(args.db) as store:
        added, events = index_tree(store)
        print(
            f"indexed the bundled studies into {store.url}: "
            f"{added} new instances, {events} change-feed events"
        )


if __name__ == "__main__":
    main()
