"""Shared by the display set tests: real data with imageIds, and what a viewer shows of it."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from helpers import real_studies

from metastore import MetaStore
from metastore.displaysets.handlers import PDF, SR, SR_3D, STACK, VIDEO, WAVEFORM

ROOT = "https://pacs.example/dicomweb"


def with_image_ids(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instances with the ``url`` and ``imageId`` a DICOMweb source gives them."""
    made = []
    for instance in instances:
        url = (
            f"{ROOT}/studies/{instance['StudyInstanceUID']}/series/"
            f"{instance['SeriesInstanceUID']}/instances/{instance['SOPInstanceUID']}"
        )
        made.append({**instance, "url": url, "imageId": f"wadors:{url}/frames/1"})
    return made


def load_real(
    store: MetaStore, source: str = "real", only: Collection[str] | None = None
) -> list[str]:
    """Index the bundled real studies (``only`` these) from ``source``; returns their UIDs."""
    loaded = []
    for study, series_rows, per_series in real_studies():
        if only is not None and study["StudyInstanceUID"] not in only:
            continue
        store.add_study(study, source=source)
        store.add_series_metadata(series_rows, source=source)
        for batch in per_series:
            store.add_instances(with_image_ids(batch), source=source)
        loaded.append(study["StudyInstanceUID"])
    return loaded


# What OHIF shows of each real series: (handler, instances, frames, isReconstructable).
EXPECTED: dict[str, list[tuple[str, int, int, bool | None]]] = {
    # WMHI: an encapsulated PDF report and a FLAIR stack with whole-multiple gaps.
    "1.2.826.0.1.3680043.8.498.12922197173025695370821667732613712885": [(PDF, 1, 0, None)],
    "1.2.826.0.13251432571622157432418024103657242430176808": [(STACK, 36, 36, True)],
    # BRAIN SELLA: a three-plane localizer, two MR stacks, two Enhanced SRs.
    "1.2.840.113619.2.5.1762583153.215519.978957063.79": [(STACK, 26, 26, False)],
    "1.2.840.113619.2.5.1762583153.215519.978957063.121": [(STACK, 13, 13, True)],
    "1.2.840.113619.2.5.1762583153.215519.978957063.135": [(STACK, 20, 20, True)],
    "2.25.419303365440983205264849749108051206092": [(SR, 1, 0, None)],
    "2.25.944308842816891584999489364426779656922": [(SR, 1, 0, None)],
    # NLST-LSS: a CT volume and a Comprehensive 3D SR over it.
    "1.2.840.113654.2.55.214483182570512319377495527619089952642": [(STACK, 143, 143, True)],
    "1.2.826.0.1.3680043.8.498.47502524225961833066018243059961648991": [(SR_3D, 1, 0, None)],
    # Thorax: one DX image, a display set of its own.
    "1.3.46.670589.30.1.3.1.1625260923.1632320560703.1": [(STACK, 1, 1, False)],
    # PETCT: a whole-body CT volume and two single-image topograms.
    "1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4": [(STACK, 174, 174, True)],
    "1.3.6.1.4.1.25403.345050719074.3824.20170125113608.4": [(STACK, 1, 1, False)],
    "1.3.6.1.4.1.25403.345050719074.3824.20170125113608.5": [(STACK, 1, 1, False)],
    # ECG: a 12-lead waveform.
    "1.3.6.1.4.1.20029.40.20130125105919.5407.1": [(WAVEFORM, 1, 0, None)],
    # Noise 1K: secondary captures without geometry.
    "2.16.124.113543.6004.101.103.20021117.123455.1.001": [(STACK, 1, 1, False)],
    "2.16.124.113543.6004.101.103.20021117.123455.1.002": [(STACK, 3, 3, False)],
    # Four secondary captures and a 3,360-frame true-colour multi-frame in H.264.
    "2.25.15054212212536476297201250326674987992": [
        (STACK, 4, 4, False),
        (VIDEO, 1, 3360, None),
    ],
}


def summary(display_set: dict[str, Any]) -> tuple[str, int, int, bool | None]:
    return (
        display_set["SOPClassHandlerId"],
        display_set["numInstances"],
        display_set["numImageFrames"],
        display_set.get("isReconstructable"),
    )
