"""OHIF "DICOM JSON" launch files: the format, read and written side by side.

- :mod:`~metastore.launchfile.format`: the structural fields and what a
  written file keeps of each study, series and instance;
- :mod:`~metastore.launchfile.read`: :func:`read_studies`, one checked
  study at a time (the ``dicomjson`` source and ``ingest dicomjson``);
- :mod:`~metastore.launchfile.write`: launch studies from indexed studies
  or from a folder's, and :func:`write_launch_file`;
- :mod:`~metastore.launchfile.export`: indexed studies out to a file
  (``metastore export dicomjson``); it reads the store, so it is imported
  on its own, not from here.
"""

from __future__ import annotations

from metastore.launchfile.format import (
    LAUNCH_INSTANCE_KEYS,
    LAUNCH_SERIES_KEYS,
    LAUNCH_STUDY_KEYS,
    SERIES_EXTRAS,
    STUDY_EXTRAS,
)
from metastore.launchfile.read import LaunchStudy, StudyFailure, read_studies
from metastore.launchfile.write import launch_studies, launch_study, write_launch_file

__all__ = [
    "LAUNCH_INSTANCE_KEYS",
    "LAUNCH_SERIES_KEYS",
    "LAUNCH_STUDY_KEYS",
    "SERIES_EXTRAS",
    "STUDY_EXTRAS",
    "LaunchStudy",
    "StudyFailure",
    "launch_studies",
    "launch_study",
    "read_studies",
    "write_launch_file",
]
