"""Reconstructability and ordering on generated CT stacks: pure unit tests."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metastore.displaysets import Issue, check_multiframe, check_stack
from metastore.displaysets.geometry import number, numbers, scan_normal, sort_by_position

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def tilted(degrees: float) -> tuple[float, ...]:
    """An axial orientation rotated about the patient's x axis (a gantry tilt)."""
    angle = math.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, math.cos(angle), math.sin(angle))


def ct_slice(
    number_: int,
    position: tuple[float, float, float],
    orientation: tuple[float, ...] = AXIAL,
    **extra: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "SOPInstanceUID": f"1.2.3.{number_}",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "Modality": "CT",
        "InstanceNumber": number_,
        "Rows": 512,
        "Columns": 512,
        "SamplesPerPixel": 1,
        "ImagePositionPatient": list(position),
        "ImageOrientationPatient": list(orientation),
    }
    meta.update(extra)
    return meta


def ct_stack(
    count: int,
    spacing: float = 2.5,
    orientation: tuple[float, ...] = AXIAL,
    origin: tuple[float, float, float] = (-200.0, -180.0, 100.0),
    skip: frozenset[int] = frozenset(),
) -> list[dict[str, Any]]:
    """Slices stacked along the normal of ``orientation``, from ``origin`` downwards."""
    normal = scan_normal(tuple(orientation))  # type: ignore[arg-type]
    assert normal is not None
    made = []
    for k in range(count):
        if k in skip:
            continue
        position = tuple(origin[i] - k * spacing * normal[i] for i in range(3))
        made.append(ct_slice(k + 1, position, orientation))  # type: ignore[arg-type]
    return made


def along_normal(instances: list[dict[str, Any]]) -> list[float]:
    normal = scan_normal(tuple(instances[0]["ImageOrientationPatient"]))
    assert normal is not None
    return [
        sum(p * n for p, n in zip(i["ImagePositionPatient"], normal, strict=True))
        for i in instances
    ]


# -- single-frame stacks ---------------------------------------------------------


def test_a_regular_stack_is_reconstructable_with_its_spacing() -> None:
    verdict = check_stack(ct_stack(40, spacing=2.5))
    assert verdict.value is True
    assert verdict.issues == ()
    assert verdict.average_spacing == pytest.approx(2.5)
    assert verdict.missing_frames == 0


def test_an_oblique_stack_along_its_normal_is_reconstructable() -> None:
    verdict = check_stack(ct_stack(30, spacing=1.25, orientation=tilted(17.0)))
    assert verdict.value is True
    assert verdict.average_spacing == pytest.approx(1.25)


def test_a_single_image_is_not() -> None:
    verdict = check_stack(ct_stack(1))
    assert (verdict.value, verdict.issues) == (False, (Issue.SINGLE_IMAGE,))


def test_two_images_are() -> None:
    assert check_stack(ct_stack(2, spacing=4.0)).average_spacing == pytest.approx(4.0)


@pytest.mark.parametrize("missing", ["absent", "None", "two values", "text"])
def test_a_missing_position_makes_it_not_reconstructable(missing: str) -> None:
    stack = ct_stack(10)
    broken = {"absent": None, "None": None, "two values": [1.0, 2.0], "text": "a\\b\\c"}[missing]
    if missing == "absent":
        del stack[4]["ImagePositionPatient"]
    else:
        stack[4]["ImagePositionPatient"] = broken
    verdict = check_stack(stack)
    assert verdict.value is False
    assert Issue.NO_POSITION_INFORMATION in verdict.issues


def test_a_missing_orientation_makes_it_not_reconstructable() -> None:
    stack = ct_stack(10)
    del stack[3]["ImageOrientationPatient"]
    assert check_stack(stack).issues == (Issue.NO_ORIENTATION_INFORMATION,)


@pytest.mark.parametrize(("rows", "columns"), [(256, 512), (512, 256), (513, 512)])
def test_mixed_sizes_are_not_reconstructable(rows: int, columns: int) -> None:
    stack = ct_stack(12)
    stack[7].update(Rows=rows, Columns=columns)
    assert check_stack(stack).issues == (Issue.INCONSISTENT_DIMENSIONS,)


def test_mixed_samples_per_pixel_are_not_reconstructable() -> None:
    stack = ct_stack(12)
    stack[0]["SamplesPerPixel"] = 3
    assert check_stack(stack).issues == (Issue.INCONSISTENT_COMPONENTS,)


def test_sizes_given_as_strings_still_compare_equal() -> None:
    stack = ct_stack(6)
    stack[2].update(Rows="512", Columns=[512], SamplesPerPixel=None)
    assert check_stack(stack).value is True


def test_one_slice_tilted_differently_is_not_reconstructable() -> None:
    stack = ct_stack(12)
    stack[5]["ImageOrientationPatient"] = list(tilted(5.0))
    assert check_stack(stack).issues == (Issue.INCONSISTENT_ORIENTATIONS,)


def test_orientation_jitter_below_tolerance_is_the_same_orientation() -> None:
    stack = ct_stack(12)
    stack[5]["ImageOrientationPatient"] = [1.0, 0.004, 0.0, -0.004, 1.0, 0.0]
    assert check_stack(stack).value is True


def test_a_gantry_tilt_is_not_reconstructable() -> None:
    """Tilted planes whose positions step along the table (z), not along the normal."""
    orientation = tilted(15.0)
    stack = [ct_slice(k + 1, (0.0, 0.0, -3.0 * k), orientation) for k in range(20)]
    verdict = check_stack(stack)
    assert verdict.value is False
    assert verdict.issues == (Issue.INCONSISTENT_POSITION_INFORMATION,)


def test_a_shift_below_tilt_tolerance_is_ignored() -> None:
    stack = [ct_slice(k + 1, (0.001 * (k % 2), 0.0, -3.0 * k)) for k in range(20)]
    assert check_stack(stack).value is True


def test_irregular_spacing_beyond_twenty_percent_is_not_reconstructable() -> None:
    stack = ct_stack(20, spacing=2.0)
    for later in stack[10:]:
        later["ImagePositionPatient"][2] -= 0.5  # one step of 2.5 mm among 2.0 mm steps
    verdict = check_stack(stack)
    assert (verdict.value, verdict.issues) == (False, (Issue.IRREGULAR_SPACING,))


def test_spacing_jitter_within_twenty_percent_is_regular() -> None:
    stack = ct_stack(20, spacing=2.0)
    for k, slice_ in enumerate(stack):
        slice_["ImagePositionPatient"][2] += 0.3 if k % 2 else 0.0  # steps of 1.7 and 2.3
    verdict = check_stack(stack)
    assert verdict.value is True
    assert verdict.average_spacing == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize(("skip", "missing"), [({5}, 1), ({5, 6, 7}, 3), ({3, 9, 14}, 3)])
def test_gaps_of_whole_multiples_are_reconstructable_and_counted(
    skip: set[int], missing: int
) -> None:
    verdict = check_stack(ct_stack(20, spacing=3.0, skip=frozenset(skip)))
    assert verdict.value is True
    assert verdict.issues == (Issue.MISSING_FRAMES,)
    assert verdict.missing_frames == missing
    assert verdict.average_spacing == pytest.approx(3.0)


def test_a_gap_that_is_not_a_whole_multiple_is_irregular() -> None:
    stack = ct_stack(20, spacing=2.0)
    for later in stack[10:]:
        later["ImagePositionPatient"][2] -= 1.0  # a step of 1.5 times the spacing
    assert check_stack(stack).issues == (Issue.IRREGULAR_SPACING,)


def test_duplicate_positions_are_not_a_volume() -> None:
    stack = ct_stack(10) + [ct_slice(99, tuple(ct_stack(10)[4]["ImagePositionPatient"]))]  # type: ignore[arg-type]
    assert check_stack(stack).issues == (Issue.DUPLICATE_POSITIONS,)


def test_all_at_one_location_is_not_a_volume() -> None:
    stack = [ct_slice(k, (0.0, 0.0, 10.0)) for k in range(1, 8)]
    assert check_stack(stack).issues == (Issue.SINGLE_LOCATION,)


def test_backslash_joined_and_string_values_are_read() -> None:
    stack = ct_stack(8, spacing=1.5)
    for slice_ in stack:
        slice_["ImagePositionPatient"] = "\\".join(str(v) for v in slice_["ImagePositionPatient"])
        slice_["ImageOrientationPatient"] = [str(v) for v in slice_["ImageOrientationPatient"]]
    verdict = check_stack(stack)
    assert verdict.value is True
    assert verdict.average_spacing == pytest.approx(1.5)


def test_numbers_refuse_what_is_not_numeric() -> None:
    assert number(True) is None
    assert number("nan") is None
    assert number(" 2.5 ") == 2.5
    assert number([3]) == 3.0
    assert numbers([1, "2", 3.5], 3) == (1.0, 2.0, 3.5)
    assert numbers([1, None, 3], 3) is None
    assert numbers("1\\2", 3) is None


# -- ordering ---------------------------------------------------------------------


def test_sort_by_position_orders_shuffled_slices_highest_first() -> None:
    stack = ct_stack(25, orientation=SAGITTAL)
    shuffled = stack[:]
    random.Random(7).shuffle(shuffled)
    ordered = sort_by_position(shuffled)
    assert [s["SOPInstanceUID"] for s in ordered] == [s["SOPInstanceUID"] for s in stack]
    distances = along_normal(ordered)
    assert distances == sorted(distances, reverse=True)


def test_sort_by_position_keeps_slices_without_position_last() -> None:
    stack = ct_stack(5)
    del stack[0]["ImagePositionPatient"]
    ordered = sort_by_position(list(reversed(stack)))
    assert ordered[-1]["SOPInstanceUID"] == stack[0]["SOPInstanceUID"]
    assert [s["InstanceNumber"] for s in ordered[:-1]] == [2, 3, 4, 5]


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=5, max_value=60),
    spacing=st.floats(min_value=0.5, max_value=10.0),
    rotation=st.tuples(*(st.floats(min_value=-math.pi, max_value=math.pi) for _ in range(3))),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_rotated_shuffled_stack_with_gaps_is_a_volume(
    count: int, spacing: float, rotation: tuple[float, float, float], seed: int
) -> None:
    """Property: orientation, order and a minority of missing slices never change the verdict."""
    rng = random.Random(seed)
    orientation = _rotated(AXIAL, rotation)
    interior = list(range(1, count - 1))
    removed = frozenset(rng.sample(interior, k=rng.randint(0, (count - 2) // 3)))
    stack = ct_stack(count, spacing=spacing, orientation=orientation, skip=removed)
    rng.shuffle(stack)
    verdict = check_stack(stack)
    assert verdict.value is True
    assert verdict.missing_frames == len(removed)
    assert verdict.average_spacing == pytest.approx(spacing, rel=1e-6)
    distances = along_normal(sort_by_position(stack))
    assert distances == sorted(distances, reverse=True)


def _rotated(
    orientation: tuple[float, ...], angles: tuple[float, float, float]
) -> tuple[float, ...]:
    a, b, c = angles
    rx = ((1, 0, 0), (0, math.cos(a), -math.sin(a)), (0, math.sin(a), math.cos(a)))
    ry = ((math.cos(b), 0, math.sin(b)), (0, 1, 0), (-math.sin(b), 0, math.cos(b)))
    rz = ((math.cos(c), -math.sin(c), 0), (math.sin(c), math.cos(c), 0), (0, 0, 1))

    def apply(m: tuple[tuple[float, ...], ...], v: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sum(m[i][j] * v[j] for j in range(3)) for i in range(3))

    row, col = orientation[:3], orientation[3:]
    for matrix in (rx, ry, rz):
        row, col = apply(matrix, row), apply(matrix, col)
    return (*row, *col)


# -- multi-frame images -------------------------------------------------------------


def enhanced_ct(
    frames: int = 30, spacing: float = 1.0, positions: list[list[float]] | None = None
) -> dict[str, Any]:
    positions = positions or [[0.0, 0.0, -spacing * k] for k in range(frames)]
    return {
        "SOPInstanceUID": "1.2.3.900",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2.1",
        "Modality": "CT",
        "NumberOfFrames": len(positions),
        "Rows": 512,
        "Columns": 512,
        "SharedFunctionalGroupsSequence": [
            {
                "PixelMeasuresSequence": [{"PixelSpacing": [0.7, 0.7], "SliceThickness": spacing}],
                "PlaneOrientationSequence": [{"ImageOrientationPatient": list(AXIAL)}],
            }
        ],
        "PerFrameFunctionalGroupsSequence": [
            {"PlanePositionSequence": [{"ImagePositionPatient": position}]}
            for position in positions
        ],
    }


def test_an_enhanced_ct_with_regular_frames_is_reconstructable() -> None:
    verdict = check_multiframe(enhanced_ct(30, spacing=1.25))
    assert verdict.value is True
    assert verdict.average_spacing == pytest.approx(1.25)


def test_an_enhanced_ct_with_irregular_frames_is_not() -> None:
    positions = [[0.0, 0.0, -1.0 * k] for k in range(20)]
    positions[10][2] -= 0.45
    assert check_multiframe(enhanced_ct(positions=positions)).issues == (Issue.IRREGULAR_SPACING,)


def test_an_enhanced_ct_with_a_frame_without_position_is_not() -> None:
    instance = enhanced_ct(10)
    instance["PerFrameFunctionalGroupsSequence"][3] = {}
    assert check_multiframe(instance).issues == (Issue.MULTIFRAME_NO_POSITION_INFORMATION,)


def test_a_multiframe_without_pixel_measures_is_not() -> None:
    instance = enhanced_ct(10)
    del instance["SharedFunctionalGroupsSequence"][0]["PixelMeasuresSequence"]
    assert check_multiframe(instance).issues == (Issue.MULTIFRAME_NO_PIXEL_MEASUREMENTS,)


def test_a_multiframe_without_orientation_or_position_says_both() -> None:
    instance = {"NumberOfFrames": 10, "PixelSpacing": [1, 1], "SliceThickness": 2, "Modality": "MR"}
    assert check_multiframe(instance).issues == (
        Issue.MULTIFRAME_NO_ORIENTATION,
        Issue.MULTIFRAME_NO_POSITION_INFORMATION,
    )


def test_a_cine_at_one_shared_position_is_not_a_volume() -> None:
    instance = enhanced_ct(10)
    del instance["PerFrameFunctionalGroupsSequence"]
    instance["SharedFunctionalGroupsSequence"][0]["PlanePositionSequence"] = [
        {"ImagePositionPatient": [0.0, 0.0, 0.0]}
    ]
    assert check_multiframe(instance).issues == (Issue.SINGLE_LOCATION,)


@pytest.mark.parametrize(
    ("image_type", "expected"),
    [("ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION", True), (["ORIGINAL", "PRIMARY", "STATIC"], False)],
)
def test_nuclear_medicine_must_be_tomographic(image_type: Any, expected: bool) -> None:
    instance = {
        "Modality": "NM",
        "NumberOfFrames": 64,
        "ImageType": image_type,
        "PixelSpacing": [4.4, 4.4],
        "SliceThickness": 4.4,
        "DetectorInformationSequence": [
            {"ImageOrientationPatient": list(AXIAL), "ImagePositionPatient": [0, 0, 0]}
        ],
    }
    verdict = check_multiframe(instance)
    assert verdict.value is expected
    assert (Issue.NOT_TOMOGRAPHIC in verdict.issues) is not expected
