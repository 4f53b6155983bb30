"""The built-in SOP class handlers, after OHIF's.

Ids are OHIF's ``SOPClassHandlerId`` values, so hanging protocols and other
code written against OHIF's display sets can match on them. They are tried
in the order of OHIF's basic viewer mode: video first (it takes the
H.264/HEVC instances of image SOP classes before the stack handler sees
them), then waveforms, segmentations, parametric maps, image stacks, whole
slide microscopy, PDF, 3D SR, SR and RT structure sets; what none takes is
``unsupported``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from metastore.displaysets import geometry, sopclasses
from metastore.displaysets.geometry import first_item, number, number_of_frames
from metastore.displaysets.model import DisplaySet, GetDisplaySets, Instance, SopClassHandler
from metastore.imageids import frame_image_ids

STACK = "@ohif/extension-default.sopClassHandlerModule.stack"
VIDEO = "@ohif/extension-dicom-video.sopClassHandlerModule.dicom-video"
WAVEFORM = "@ohif/extension-cornerstone.sopClassHandlerModule.DicomEcgSopClassHandler"
SEGMENTATION = "@ohif/extension-cornerstone-dicom-seg.sopClassHandlerModule.dicom-seg"
PARAMETRIC_MAP = "@ohif/extension-cornerstone-dicom-pmap.sopClassHandlerModule.dicom-pmap"
WHOLE_SLIDE = "@ohif/extension-cornerstone.sopClassHandlerModule.DicomMicroscopySopClassHandler"
PDF = "@ohif/extension-dicom-pdf.sopClassHandlerModule.dicom-pdf"
SR_3D = "@ohif/extension-cornerstone-dicom-sr.sopClassHandlerModule.dicom-sr-3d"
SR = "@ohif/extension-cornerstone-dicom-sr.sopClassHandlerModule.dicom-sr"
RTSTRUCT = "@ohif/extension-cornerstone-dicom-rt.sopClassHandlerModule.dicom-rt"
UNSUPPORTED = "unsupported"

# One display set per image for projection radiography (OHIF's rule).
SINGLE_IMAGE_MODALITIES = frozenset({"CR", "DX", "MG"})
# TID 1500 Imaging Measurement Report (DCM 126000), the SR a viewer can hydrate.
_MEASUREMENT_REPORT = ("126000", "DCM")


# -- helpers shared by the handlers -------------------------------------------


def by_instance_number(instances: Iterable[Instance]) -> list[Instance]:
    """Instances by InstanceNumber (missing last), then SOPInstanceUID, as the store orders them."""

    def key(instance: Instance) -> tuple[bool, float, str]:
        found = number(instance.get("InstanceNumber"))
        return (found is None, found or 0.0, str(instance.get("SOPInstanceUID") or ""))

    return sorted(instances, key=key)


def frame_ids(instance: Instance) -> list[str]:
    """One imageId per frame: the instance's own ``imageIds``, else derived from ``imageId``."""
    given = instance.get("imageIds")
    if isinstance(given, list) and given and all(isinstance(item, str) for item in given):
        return list(given)
    image_id = instance.get("imageId")
    if not isinstance(image_id, str) or not image_id:
        return []
    return frame_image_ids(image_id, number_of_frames(instance))


def object_ids(instances: Iterable[Instance]) -> list[str]:
    """One imageId per instance (for objects not shown frame by frame)."""
    return [
        image_id
        for image_id in (instance.get("imageId") for instance in instances)
        if isinstance(image_id, str) and image_id
    ]


def items(value: Any) -> list[Mapping[str, Any]]:
    """The items of a naturalized sequence (a list of dicts, or one dict)."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []


def _text(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value.strip() if isinstance(value, str) and value.strip() else None


def _bulk_data_uri(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("BulkDataURI"), str):
        return str(value["BulkDataURI"])
    return None


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))


def _instance_fields(instance: Instance) -> dict[str, Any]:
    return {
        "SOPInstanceUID": instance.get("SOPInstanceUID"),
        "instanceNumber": number(instance.get("InstanceNumber")),
    }


def _referenced_series(instance: Instance) -> list[str]:
    """SeriesInstanceUIDs of ReferencedSeriesSequence (PS3.3 C.7.6.16.2.3 and C.8.20.2)."""
    return _unique(
        _text(item.get("SeriesInstanceUID"))
        for item in items(instance.get("ReferencedSeriesSequence"))
    )


# -- image stacks ---------------------------------------------------------------


def _image_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    """A display set per multi-frame instance and per CR/DX/MG image; one stack of the rest."""
    made: list[DisplaySet] = []
    stack: list[Instance] = []
    for instance in instances:
        if number_of_frames(instance) > 1:
            made.append(_multiframe(instance))
        elif str(instance.get("Modality") or "") in SINGLE_IMAGE_MODALITIES:
            made.append(_single_image(instance))
        else:
            stack.append(instance)
    if stack:
        made.append(_stack(stack))
    return made


def _stack(instances: Sequence[Instance]) -> DisplaySet:
    verdict, ordered = geometry.ordered_stack(instances)
    image_ids = [image_id for instance in ordered for image_id in frame_ids(instance)]
    fields = {
        "isMultiFrame": False,
        "numImageFrames": len(ordered),
        "imageIds": image_ids,
        "FrameOfReferenceUID": ordered[0].get("FrameOfReferenceUID"),
        **verdict.fields(),
    }
    return DisplaySet(instances=ordered, fields=fields, key="stack")


def _multiframe(instance: Instance) -> DisplaySet:
    verdict = geometry.check_multiframe(instance)
    fields = {
        **_instance_fields(instance),
        "isMultiFrame": True,
        "numImageFrames": number_of_frames(instance),
        "imageIds": frame_ids(instance),
        "FrameOfReferenceUID": instance.get("FrameOfReferenceUID"),
        "FrameTime": number(instance.get("FrameTime")),
        **verdict.fields(),
    }
    return DisplaySet(instances=[instance], fields=fields)


def _single_image(instance: Instance) -> DisplaySet:
    fields = {
        **_instance_fields(instance),
        "isMultiFrame": False,
        "numImageFrames": 1,
        "imageIds": frame_ids(instance),
        **geometry.check_stack([instance]).fields(),
    }
    return DisplaySet(instances=[instance], fields=fields)


# -- video, waveforms, documents --------------------------------------------------


def _transfer_syntaxes(instance: Instance) -> set[str]:
    found: set[str] = set()
    for keyword in ("AvailableTransferSyntaxUID", "TransferSyntaxUID", "00083002", "00020010"):
        value = instance.get(keyword)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.update(part.strip() for part in item.split("\\"))
    return found


def is_video(instance: Instance) -> bool:
    """A video SOP class, or pixel data in an H.264/HEVC transfer syntax (PS3.5 8.2.7, 8.2.8)."""
    return instance.get("SOPClassUID") in sopclasses.VIDEO or bool(
        _transfer_syntaxes(instance) & sopclasses.VIDEO_TRANSFER_SYNTAXES
    )


def _video_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    made = []
    for instance in instances:
        if not is_video(instance):
            continue
        syntaxes = sorted(_transfer_syntaxes(instance) & sopclasses.VIDEO_TRANSFER_SYNTAXES)
        fields = {
            **_instance_fields(instance),
            "numImageFrames": number_of_frames(instance),
            "imageIds": object_ids([instance]),
            "isDerivedDisplaySet": True,
            "TransferSyntaxUID": syntaxes[0] if syntaxes else None,
            "FrameTime": number(instance.get("FrameTime")),
            "CineRate": number(instance.get("CineRate")),
            "videoURI": _bulk_data_uri(instance.get("PixelData")),
        }
        made.append(DisplaySet(instances=[instance], fields=fields))
    return made


def _waveform_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    made = []
    for instance in instances:
        groups = []
        for group in items(instance.get("WaveformSequence")):
            samples = number(group.get("NumberOfWaveformSamples"))
            frequency = number(group.get("SamplingFrequency"))
            groups.append(
                {
                    "label": _text(group.get("MultiplexGroupLabel")),
                    "channels": number(group.get("NumberOfWaveformChannels")),
                    "samples": samples,
                    "samplingFrequency": frequency,
                    "durationSeconds": samples / frequency if samples and frequency else None,
                }
            )
        fields = {
            **_instance_fields(instance),
            "numImageFrames": 0,
            "imageIds": object_ids([instance]),
            "isDerivedDisplaySet": False,
            "multiplexGroups": groups,
        }
        made.append(DisplaySet(instances=[instance], fields=fields))
    return made


def _pdf_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    return [
        DisplaySet(
            instances=[instance],
            fields={
                **_instance_fields(instance),
                "numImageFrames": 0,
                "imageIds": object_ids([instance]),
                "isDerivedDisplaySet": True,
                "MIMETypeOfEncapsulatedDocument": _text(
                    instance.get("MIMETypeOfEncapsulatedDocument")
                )
                or "application/pdf",
                "DocumentTitle": _text(instance.get("DocumentTitle")),
                "documentURI": _bulk_data_uri(instance.get("EncapsulatedDocument")),
            },
        )
        for instance in instances
    ]


def _whole_slide_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    """One display set for the pyramid; its smallest level names it (OHIF's thumbnail)."""
    smallest = min(instances, key=number_of_frames)
    fields = {
        "SOPInstanceUID": smallest.get("SOPInstanceUID"),
        "numImageFrames": sum(number_of_frames(instance) for instance in instances),
        "imageIds": object_ids(instances),
        "isReconstructable": False,
    }
    return [DisplaySet(instances=instances, fields=fields, key="series")]


# -- reports and derived objects ----------------------------------------------------


def _sr_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    """One display set per series; the last instance (the newest report) is the one shown."""
    shown = instances[-1]
    concept = first_item(shown.get("ConceptNameCodeSequence")) or {}
    evidence = [
        series_item.get("SeriesInstanceUID")
        for keyword in (
            "CurrentRequestedProcedureEvidenceSequence",
            "PertinentOtherEvidenceSequence",
        )
        for study_item in items(shown.get(keyword))
        for series_item in items(study_item.get("ReferencedSeriesSequence"))
    ]
    fields = {
        **_instance_fields(shown),
        "numImageFrames": 0,
        "imageIds": object_ids(instances),
        "isDerivedDisplaySet": True,
        "isImagingMeasurementReport": (
            _text(concept.get("CodeValue")),
            _text(concept.get("CodingSchemeDesignator")),
        )
        == _MEASUREMENT_REPORT,
        "title": _text(concept.get("CodeMeaning")),
        "referencedSeriesInstanceUIDs": _unique(_text(uid) for uid in evidence),
    }
    return [DisplaySet(instances=instances, fields=fields, key="series")]


def _overlay_fields(shown: Instance, referenced: list[str]) -> dict[str, Any]:
    return {
        **_instance_fields(shown),
        "isDerivedDisplaySet": True,
        "isOverlayDisplaySet": True,
        "referencedSeriesInstanceUID": referenced[0],
        "referencedSeriesInstanceUIDs": referenced,
    }


def _segmentation_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    """The newest SEG of the series over the series it references (none: not a SEG we show)."""
    shown = instances[-1]
    referenced = _referenced_series(shown)
    if not referenced:
        return []
    fields = {
        "Modality": "SEG",
        **_overlay_fields(shown, referenced),
        "numImageFrames": number_of_frames(shown),
        "imageIds": frame_ids(shown),
        "FrameOfReferenceUID": shown.get("FrameOfReferenceUID"),
        # As OHIF: a segmentation is as reconstructable as what it segments.
        "isReconstructable": None,
        "segments": [
            {
                "SegmentNumber": number(segment.get("SegmentNumber")),
                "SegmentLabel": _text(segment.get("SegmentLabel")),
            }
            for segment in items(shown.get("SegmentSequence"))
        ],
    }
    return [DisplaySet(instances=instances, fields=fields, key="series")]


def _rt_referenced_series(instance: Instance) -> list[str]:
    """From ReferencedSeriesSequence, else the frame of reference tree (PS3.3 C.8.8.5)."""
    found = _referenced_series(instance)
    if found:
        return found
    return _unique(
        _text(series_item.get("SeriesInstanceUID"))
        for frame in items(instance.get("ReferencedFrameOfReferenceSequence"))
        for study_item in items(frame.get("RTReferencedStudySequence"))
        for series_item in items(study_item.get("RTReferencedSeriesSequence"))
    )


def _rtstruct_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    shown = instances[-1]
    referenced = _rt_referenced_series(shown)
    if not referenced:
        return []
    frame = first_item(shown.get("ReferencedFrameOfReferenceSequence")) or {}
    fields = {
        "Modality": "RTSTRUCT",
        **_overlay_fields(shown, referenced),
        "numImageFrames": 0,
        "imageIds": object_ids([shown]),
        "FrameOfReferenceUID": _text(frame.get("FrameOfReferenceUID")),
        "isReconstructable": None,
        "structureSetROIs": [
            {"ROINumber": number(roi.get("ROINumber")), "ROIName": _text(roi.get("ROIName"))}
            for roi in items(shown.get("StructureSetROISequence"))
        ],
    }
    return [DisplaySet(instances=instances, fields=fields, key="series")]


def _parametric_map_display_sets(instances: Sequence[Instance]) -> list[DisplaySet]:
    shown = instances[0]
    referenced = _referenced_series(shown)
    if not referenced:
        return []
    fields = {
        # Not a DICOM modality: OHIF's name for a map shown over its volume.
        "Modality": "PMAP",
        **_overlay_fields(shown, referenced),
        "numImageFrames": number_of_frames(shown),
        "imageIds": frame_ids(shown),
        "isReconstructable": True,
    }
    return [DisplaySet(instances=instances, fields=fields, key="series")]


def unsupported_display_set(instances: Sequence[Instance], sop_class_uid: str | None) -> DisplaySet:
    """What is left of a group once every handler has had its turn."""
    issue = "UNSUPPORTED_SOP_CLASS_UID" if sop_class_uid else "MISSING_SOP_CLASS_UID"
    fields = {
        "numImageFrames": len(instances),
        "imageIds": object_ids(instances),
        "unsupported": True,
        "isReconstructable": False,
        "messages": [issue],
    }
    return DisplaySet(instances=instances, fields=fields, key="unsupported")


_BUILTINS: tuple[tuple[str, frozenset[str], GetDisplaySets], ...] = (
    (VIDEO, sopclasses.IMAGE | sopclasses.VIDEO, _video_display_sets),
    (WAVEFORM, sopclasses.WAVEFORM, _waveform_display_sets),
    (SEGMENTATION, sopclasses.SEGMENTATION, _segmentation_display_sets),
    (PARAMETRIC_MAP, sopclasses.PARAMETRIC_MAP, _parametric_map_display_sets),
    (STACK, sopclasses.IMAGE, _image_display_sets),
    (WHOLE_SLIDE, sopclasses.WHOLE_SLIDE, _whole_slide_display_sets),
    (PDF, sopclasses.PDF, _pdf_display_sets),
    (SR_3D, sopclasses.SR_3D, _sr_display_sets),
    (SR, sopclasses.SR, _sr_display_sets),
    (RTSTRUCT, sopclasses.RTSTRUCT, _rtstruct_display_sets),
)
BUILTIN_HANDLERS: tuple[SopClassHandler, ...] = tuple(
    SopClassHandler(id=id_, sop_class_uids=uids, get_display_sets=function)
    for id_, uids, function in _BUILTINS
)
"""The built-in handlers, in the order they are tried."""
