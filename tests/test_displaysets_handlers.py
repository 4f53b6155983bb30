"""Each built-in handler's rule, on generated instances of one study (pure: no database)."""

from __future__ import annotations

from typing import Any

import pytest

from metastore import InvalidMetadata
from metastore.displaysets import handlers, series_display_sets, sopclasses, study_display_sets

STUDY = "1.2.3"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def image(
    series: str, number: int, sop_class: str = sopclasses.CTImageStorage, **extra: Any
) -> dict[str, Any]:
    sop = f"{series}.{number}"
    meta: dict[str, Any] = {
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": sop,
        "SOPClassUID": sop_class,
        "Modality": "CT",
        "InstanceNumber": number,
        "Rows": 512,
        "Columns": 512,
        "ImagePositionPatient": [0.0, 0.0, -2.0 * number],
        "ImageOrientationPatient": AXIAL,
        "url": f"https://pacs/studies/{STUDY}/series/{series}/instances/{sop}",
        "imageId": f"wadors:https://pacs/studies/{STUDY}/series/{series}/instances/{sop}/frames/1",
    }
    meta.update(extra)
    return meta


def study(*series: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "StudyInstanceUID": STUDY,
        "seriesLists": [
            {
                "source": "pacs",
                "series": [
                    {"SeriesInstanceUID": s[0]["SeriesInstanceUID"], "instances": s} for s in series
                ],
            }
        ],
    }


def shown(display_sets: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(d["SOPClassHandlerId"], d["SOPInstanceUIDs"]) for d in display_sets]


def test_a_multiframe_instance_is_its_own_display_set_beside_the_stack() -> None:
    # One SOP class, so one group: the stack handler splits it (OHIF's order).
    series = [image("5", n) for n in (1, 2, 3)] + [image("5", 4, NumberOfFrames=3)]
    made = series_display_sets(series)
    assert shown(made) == [
        (handlers.STACK, ["5.4"]),
        (handlers.STACK, ["5.1", "5.2", "5.3"]),
    ]
    multiframe, stack = made
    assert multiframe["isMultiFrame"] is True
    assert multiframe["numImageFrames"] == 3
    assert [i.rsplit("/", 1)[1] for i in multiframe["imageIds"]] == ["1", "2", "3"]
    assert multiframe["isReconstructable"] is False  # no functional groups to build a volume from
    assert stack["isReconstructable"] is True
    assert multiframe["displaySetInstanceUID"] != stack["displaySetInstanceUID"]


def test_an_instance_s_own_frame_image_ids_are_used_when_it_has_them() -> None:
    given = [f"https://pacs/frame/{n}" for n in (1, 2)]
    [made] = series_display_sets([image("5", 1, NumberOfFrames=2, imageIds=given)])
    assert made["imageIds"] == given


@pytest.mark.parametrize("modality", ["CR", "DX", "MG"])
def test_projection_radiographs_get_a_display_set_each(modality: str) -> None:
    series = [
        image("6", n, sopclasses.DigitalXRayImageStorageForPresentation, Modality=modality)
        for n in (1, 2)
    ]
    made = series_display_sets(series)
    assert shown(made) == [(handlers.STACK, ["6.1"]), (handlers.STACK, ["6.2"])]
    assert {d["isReconstructable"] for d in made} == {False}


def test_instances_are_grouped_by_sop_class_first() -> None:
    report = image(
        "7",
        9,
        sopclasses.BasicTextSRStorage,
        Modality="SR",
        ConceptNameCodeSequence=[{"CodeValue": "18748-4", "CodingSchemeDesignator": "LN"}],
    )
    made = series_display_sets([image("7", 1), report, image("7", 2)])
    assert shown(made) == [(handlers.STACK, ["7.1", "7.2"]), (handlers.SR, ["7.9"])]
    assert made[1]["isImagingMeasurementReport"] is False
    assert (
        made[0]["sopClassUids"]
        == made[1]["sopClassUids"]
        == sorted([sopclasses.CTImageStorage, sopclasses.BasicTextSRStorage])
    )


def test_the_newest_report_of_a_series_is_the_one_shown() -> None:
    reports = [image("8", n, sopclasses.EnhancedSRStorage, Modality="SR") for n in (3, 1, 2)]
    [made] = series_display_sets(reports)
    assert made["SOPInstanceUID"] == "8.3"
    assert made["SOPInstanceUIDs"] == ["8.1", "8.2", "8.3"]


@pytest.mark.parametrize(
    ("sop_class", "syntax", "handler"),
    [
        (
            sopclasses.MultiFrameTrueColorSecondaryCaptureImageStorage,
            sopclasses.HEVCMP51,
            handlers.VIDEO,
        ),
        (sopclasses.UltrasoundMultiFrameImageStorage, sopclasses.MPEG4HP41, handlers.VIDEO),
        # A video SOP class is video whatever its transfer syntax (here MPEG-2).
        (sopclasses.VideoEndoscopicImageStorage, "1.2.840.10008.1.2.4.100", handlers.VIDEO),
        (
            sopclasses.MultiFrameTrueColorSecondaryCaptureImageStorage,
            "1.2.840.10008.1.2.1",
            handlers.STACK,
        ),
    ],
)
def test_video_is_told_by_transfer_syntax_or_sop_class(
    sop_class: str, syntax: str, handler: str
) -> None:
    [made] = series_display_sets(
        [image("9", 1, sop_class, NumberOfFrames=120, AvailableTransferSyntaxUID=syntax)]
    )
    assert made["SOPClassHandlerId"] == handler
    assert made["numImageFrames"] == 120
    if handler == handlers.VIDEO:
        assert len(made["imageIds"]) == 1


def test_a_segmentation_without_references_is_unsupported() -> None:
    seg = image("10", 1, sopclasses.SegmentationStorage, Modality="SEG", NumberOfFrames=2)
    [made] = series_display_sets([seg])
    assert made["SOPClassHandlerId"] == handlers.UNSUPPORTED
    assert made["unsupported"] is True
    assert made["messages"] == ["UNSUPPORTED_SOP_CLASS_UID"]


def test_an_rt_structure_set_finds_its_series_through_the_frame_of_reference_tree() -> None:
    ct = [image("11", n) for n in (1, 2, 3)]
    rtstruct = image(
        "12",
        1,
        sopclasses.RTStructureSetStorage,
        Modality="RTSTRUCT",
        ReferencedFrameOfReferenceSequence=[
            {
                "FrameOfReferenceUID": "1.2.3.99",
                "RTReferencedStudySequence": [
                    {"RTReferencedSeriesSequence": [{"SeriesInstanceUID": "11"}]}
                ],
            }
        ],
        StructureSetROISequence=[{"ROINumber": 1, "ROIName": "GTV"}],
    )
    stack, structures = study_display_sets(study(ct, [rtstruct]))
    assert structures["SOPClassHandlerId"] == handlers.RTSTRUCT
    assert structures["referencedSeriesInstanceUID"] == "11"
    assert structures["referencedDisplaySetInstanceUID"] == stack["displaySetInstanceUID"]
    assert structures["isReconstructable"] is True
    assert structures["FrameOfReferenceUID"] == "1.2.3.99"
    assert structures["structureSetROIs"] == [{"ROINumber": 1, "ROIName": "GTV"}]


def test_an_overlay_over_a_series_that_is_not_there_is_not_reconstructable() -> None:
    seg = image(
        "13",
        1,
        sopclasses.SegmentationStorage,
        Modality="SEG",
        ReferencedSeriesSequence=[{"SeriesInstanceUID": "not-indexed"}],
    )
    [made] = study_display_sets(study([seg]))
    assert made["referencedDisplaySetInstanceUID"] is None
    assert made["isReconstructable"] is False


def test_a_parametric_map_is_shown_over_its_volume() -> None:
    ct = [image("14", n) for n in (1, 2, 3)]
    pmap = image(
        "15",
        1,
        sopclasses.ParametricMapStorage,
        Modality="MR",
        NumberOfFrames=3,
        ReferencedSeriesSequence={"SeriesInstanceUID": "14"},  # one dict, as dcmjs may give it
    )
    stack, parametric = study_display_sets(study(ct, [pmap]))
    assert parametric["SOPClassHandlerId"] == handlers.PARAMETRIC_MAP
    assert parametric["Modality"] == "PMAP"
    assert parametric["isReconstructable"] is True
    assert parametric["referencedDisplaySetInstanceUID"] == stack["displaySetInstanceUID"]
    assert parametric["numImageFrames"] == len(parametric["imageIds"]) == 3


def test_a_whole_slide_pyramid_is_one_display_set_named_by_its_smallest_level() -> None:
    levels = [
        image(
            "16", n, sopclasses.VLWholeSlideMicroscopyImageStorage, Modality="SM", NumberOfFrames=f
        )
        for n, f in ((1, 1024), (2, 64), (3, 4))
    ]
    [made] = series_display_sets(levels)
    assert made["SOPClassHandlerId"] == handlers.WHOLE_SLIDE
    assert made["SOPInstanceUID"] == "16.3"
    assert made["numImageFrames"] == 1092
    assert len(made["imageIds"]) == 3


def test_each_pdf_is_a_display_set() -> None:
    documents = [
        image(
            "17",
            n,
            sopclasses.EncapsulatedPDFStorage,
            Modality="DOC",
            DocumentTitle=f"report {n}",
            EncapsulatedDocument={"BulkDataURI": f"bulk/{n}"},
        )
        for n in (1, 2)
    ]
    made = series_display_sets(documents)
    assert [(d["DocumentTitle"], d["documentURI"], d["numImageFrames"]) for d in made] == [
        ("report 1", "bulk/1", 0),
        ("report 2", "bulk/2", 0),
    ]


def test_waveforms_other_than_ecg_are_charts_too() -> None:
    eeg = image(
        "18",
        1,
        sopclasses.RoutineScalpElectroencephalogramWaveformStorage,
        Modality="EEG",
        WaveformSequence=[
            {
                "NumberOfWaveformChannels": 21,
                "NumberOfWaveformSamples": 5000,
                "SamplingFrequency": 250,
            }
        ],
    )
    [made] = series_display_sets([eeg])
    assert made["SOPClassHandlerId"] == handlers.WAVEFORM
    assert made["multiplexGroups"][0]["durationSeconds"] == 20.0


def test_what_no_handler_claims_is_unsupported() -> None:
    key_objects = image("19", 1, "1.2.840.10008.5.1.4.1.1.88.59", Modality="KO")
    nameless = image("19", 2, Modality="OT")
    del nameless["SOPClassUID"]
    made = series_display_sets([key_objects, nameless])
    assert shown(made) == [(handlers.UNSUPPORTED, ["19.1"]), (handlers.UNSUPPORTED, ["19.2"])]
    assert [d["messages"] for d in made] == [
        ["UNSUPPORTED_SOP_CLASS_UID"],
        ["MISSING_SOP_CLASS_UID"],
    ]
    assert made[1]["SOPClassUID"] is None
    assert {d["isReconstructable"] for d in made} == {False}


def test_series_fields_come_from_the_series_row_before_the_instances() -> None:
    series = [image("20", 1, SeriesDescription="from instance", SeriesNumber=7)]
    [made] = study_display_sets(
        {
            "StudyInstanceUID": STUDY,
            "seriesLists": [
                {
                    "source": "pacs",
                    "series": [
                        {
                            "SeriesInstanceUID": "20",
                            "SeriesDescription": "from series",
                            "instances": series,
                        }
                    ],
                }
            ],
        }
    )
    assert (made["SeriesDescription"], made["SeriesNumber"]) == ("from series", 7)


def test_an_instance_without_sop_instance_uid_is_named_in_the_error() -> None:
    broken = image("21", 2)
    del broken["SOPInstanceUID"]
    with pytest.raises(InvalidMetadata) as caught:
        series_display_sets([image("21", 1), broken])
    assert "series 21" in str(caught.value) and "item 1" in str(caught.value)
    assert caught.value.context["field"] == "SOPInstanceUID"


def test_a_series_without_instances_has_no_display_sets() -> None:
    assert series_display_sets([]) == []
    assert study_display_sets({"StudyInstanceUID": STUDY, "seriesLists": []}) == []
