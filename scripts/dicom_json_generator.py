"""Write an OHIF DICOM JSON launch file for a folder of DICOM files.

Our counterpart of OHIF's ``.scripts/dicom-json-generator.js``::

    python scripts/dicom_json_generator.py DIR URL_ROOT OUT.json[.gz]

Every DICOM file under DIR becomes an instance whose url is
``dicomweb:`` + URL_ROOT + its path relative to DIR, with the metadata OHIF
needs to display it (see ``metastore.sources.folder.LAUNCH_INSTANCE_KEYS``).
Unlike OHIF's script, a file that cannot be read is reported and skipped,
multi-frame instances get every frame and their NumberOfFrames, and pixel
data is never read. Exit code 0 when every file was used, 1 when some were
skipped, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys

from metastore.errors import MetastoreError
from metastore.launchfile import launch_studies, write_launch_file
from metastore.sources.folder import scan_folder, series_by_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", metavar="DIR", help="folder of DICOM files (searched recursively)"
    )
    parser.add_argument("url_root", metavar="URL_ROOT", help="URL the folder is served at")
    parser.add_argument("out", metavar="OUT.json", help="launch file to write (.gz: gzip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        index = scan_folder(args.folder, url_root=args.url_root)
        studies = write_launch_file(args.out, launch_studies(series_by_study(index)))
    except MetastoreError as err:
        print(f"dicom_json_generator: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {studies} studies ({index.file_count} files) to {args.out}")
    for path, reason in index.unreadable:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 1 if index.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
