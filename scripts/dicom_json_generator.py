"""Write an OHIF DICOM JSON launch file for a folder of DICOM files.

Our counterpart of OHIF's ``.scripts/dicom-json-generator.js``::

    python scripts/dicom_json_generator.py DIR URL_ROOT OUT.json[.gz]

Every DICOM file under DIR becomes an instance whose url is
``dicomweb:`` + URL_ROOT + its path relative to DIR, with the metadata OHIF
needs to display it (see ``metastore.sources.folder.LAUNCH_INSTANCE_KEYS``).
Files are read once, in parallel (``--workers``, default the number of
cores), by the same reader as ``metastore ingest folder``. Unlike OHIF's
script, a file that cannot be read is reported and skipped, multi-frame
instances get every frame and their NumberOfFrames, and pixel data is never
read. Exit code 0 when every DICOM file was used (files that are not DICOM
are listed and skipped), 1 when a DICOM file could not be read, 2 on bad
usage.
"""

from __future__ import annotations

import argparse
import logging
import sys

from metastore.errors import MetastoreError
from metastore.launchfile import launch_studies, write_launch_file
from metastore.sources.folder import list_folder, read_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", metavar="DIR", help="folder of DICOM files (searched recursively)"
    )
    parser.add_argument("url_root", metavar="URL_ROOT", help="URL the folder is served at")
    parser.add_argument("out", metavar="OUT.json", help="launch file to write (.gz: gzip)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes reading files (default: cores)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        files = list_folder(args.folder, url_root=args.url_root)
        studies = read_folder(files, workers=args.workers)
        written = write_launch_file(args.out, launch_studies(s.series for s in studies))
    except MetastoreError as err:
        print(f"dicom_json_generator: error: {err}", file=sys.stderr)
        return 1
    used = len(files.paths) - len(files.skipped) - len(files.unreadable)
    print(f"wrote {written} studies ({used} files) to {args.out}")
    for path, reason in files.unreadable:
        print(f"unreadable: {path}: {reason}", file=sys.stderr)
    for path, reason in files.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 1 if files.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
