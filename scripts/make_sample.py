"""Build the bundled launch file ``metastore/data/sample.json.gz`` from real data.

Two sets of real metadata, none of it written by us:

- the eight studies of the static DICOMweb tree in
  ``metastore/data/static-dicomweb`` (QIDO study and series rows, WADO-RS
  series metadata), each instance's url its WADO-RS path under
  ``--dicomweb-root``; the tree holds no pixel data;
- every DICOM file pydicom ships in ``pydicom/data/test_files`` that it can
  read, turned into launch-file studies the way ``dicom_json_generator.py``
  does, each url under ``--pydicom-root`` (default: those files in pydicom's
  repository at the installed release).

The README's first command ingests the result. Re-run after changing either::

    python scripts/make_sample.py [--out metastore/data/sample.json.gz]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pydicom.data

import metastore
from metastore import naturalize
from metastore.launchfile import launch_studies, write_launch_file
from metastore.records import SERIES_COMPUTED, STUDY_COMPUTED
from metastore.sources.folder import list_folder, read_folder

DATA = Path(metastore.__file__).resolve().parent / "data"
TREE = DATA / "static-dicomweb" / "studies"
PYDICOM_FILES = Path(pydicom.data.__file__).resolve().parent / "test_files"


def _read(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = orjson.loads(gzip.decompress(path.read_bytes()))
    return rows


def _entries(instance: dict[str, Any], url: str) -> list[dict[str, Any]]:
    frames = int(instance.get("NumberOfFrames") or 1)
    if frames <= 1:
        return [{"metadata": instance, "url": url}]
    return [{"metadata": instance, "url": f"{url}?frame={n}"} for n in range(1, frames + 1)]


def tree_studies(root: str) -> Iterator[dict[str, Any]]:
    """The static DICOMweb tree's studies as launch-file studies."""
    for study_dir in sorted(p for p in TREE.iterdir() if p.is_dir()):
        [study_row] = [naturalize(row) for row in _read(study_dir / "index.json.gz")]
        study = {k: v for k, v in study_row.items() if k not in STUDY_COMPUTED}
        rows = {
            row["SeriesInstanceUID"]: row
            for row in (naturalize(r) for r in _read(study_dir / "series" / "index.json.gz"))
        }
        series_out, modalities, count = [], set(), 0
        for series_dir in sorted(p for p in (study_dir / "series").iterdir() if p.is_dir()):
            summary = {
                k: v
                for k, v in rows[series_dir.name].items()
                if k not in SERIES_COMPUTED and k != "StudyInstanceUID"
            }
            entries = []
            for instance in (naturalize(i) for i in _read(series_dir / "metadata.gz")):
                url = (
                    f"dicomweb:{root}/studies/{study['StudyInstanceUID']}/series/"
                    f"{series_dir.name}/instances/{instance['SOPInstanceUID']}"
                )
                entries += _entries(instance, url)
                count += 1
            modalities.add(str(summary.get("Modality")))
            series_out.append({**summary, "instances": entries})
        yield {
            **study,
            "NumInstances": count,
            "Modalities": "/".join(sorted(modalities)),
            "series": series_out,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DATA / "sample.json.gz"), help="file to write")
    parser.add_argument(
        "--dicomweb-root",
        default="http://localhost:5000/dicomweb",
        help="the URL the static DICOMweb tree would be served at",
    )
    parser.add_argument(
        "--pydicom-root",
        default=(
            "https://raw.githubusercontent.com/pydicom/pydicom/"
            f"v{pydicom.__version__}/src/pydicom/data/test_files"
        ),
        help="the URL pydicom's test files are served at",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    tree = list(tree_studies(args.dicomweb_root))
    files = list_folder(PYDICOM_FILES, url_root=args.pydicom_root)
    # pydicom's waveform_ecg.dcm is the tree's ECG study: keep the tree's copy.
    in_tree = {study["StudyInstanceUID"] for study in tree}
    pydicom_studies = (
        s.series for s in read_folder(files) if s.study["StudyInstanceUID"] not in in_tree
    )
    count = write_launch_file(args.out, itertools.chain(tree, launch_studies(pydicom_studies)))
    left_out = len(files.skipped) + len(files.unreadable)
    print(f"wrote {count} studies to {args.out} ({left_out} pydicom files skipped)")


if __name__ == "__main__":
    main()
