"""Where images lie in the patient, how a stack is ordered, and whether it is a volume.

A set of images is *reconstructable* when a viewer can build a volume from
it (for MPR and 3D): after OHIF's ``isDisplaySetReconstructable``, with the
rules written down here and the reason for every "no" kept as a message.

Single-frame images (one instance a slice) are reconstructable when there are
at least two; every one has an ImagePositionPatient and ImageOrientationPatient
(PS3.3 C.7.6.2); they share Rows, Columns, SamplesPerPixel and the
orientation (each direction cosine within 0.01); they do not all lie in one
place or two in one plane; they are stacked along the normal of their plane
(no gantry tilt or shift between slices); and the steps between neighbours
along that normal are regular: each within 20% of the grid spacing, or a
whole multiple of it within 20% of one spacing, which is a gap of missing
slices (counted, and allowed). The grid spacing is the extent of the stack
over its number of grid steps, each step counted as a multiple of the median
step.

A multi-frame image needs pixel measures, an orientation and a position
(PS3.3 C.7.6.16 functional groups, or their classic attributes); a
nuclear-medicine one must be a tomographic reconstruction; and when its
frames carry positions they must pass the same stacking and spacing rules.

Positions along the normal (the cross product of the row and column
direction cosines) order a reconstructable stack, highest first, as OHIF
and Cornerstone do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import median
from typing import Any

Vector = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]

SPACING_TOLERANCE = 0.2
"""A step may differ from the typical step by this fraction of it."""
ORIENTATION_TOLERANCE = 0.01
"""Direction cosines closer than this are the same orientation."""
LOCATION_TOLERANCE = 0.01
"""Millimetres: positions closer than this are one location."""
TILT_TOLERANCE = 0.01
"""In-plane shift between neighbours, as a fraction of their step along the normal.

0.01 is a tilt of about 0.6 degrees: well above rounding in real headers,
well below a gantry tilt (which is whole degrees)."""

_NM_TOMOGRAPHIC = ("RECON TOMO", "RECON GATED TOMO")
_PLAIN_NUMBERS = (float, int)  # exact types: a bool is not a number here


class Issue(StrEnum):
    """Why a set of images is not (or not fully) a regular volume."""

    NO_VALID_INSTANCES = "NO_VALID_INSTANCES"
    SINGLE_IMAGE = "SINGLE_IMAGE"
    NO_POSITION_INFORMATION = "NO_POSITION_INFORMATION"
    NO_ORIENTATION_INFORMATION = "NO_ORIENTATION_INFORMATION"
    INCONSISTENT_DIMENSIONS = "INCONSISTENT_DIMENSIONS"
    INCONSISTENT_COMPONENTS = "INCONSISTENT_COMPONENTS"
    INCONSISTENT_ORIENTATIONS = "INCONSISTENT_ORIENTATIONS"
    INCONSISTENT_POSITION_INFORMATION = "INCONSISTENT_POSITION_INFORMATION"
    SINGLE_LOCATION = "SINGLE_LOCATION"
    DUPLICATE_POSITIONS = "DUPLICATE_POSITIONS"
    IRREGULAR_SPACING = "IRREGULAR_SPACING"
    MISSING_FRAMES = "MISSING_FRAMES"
    MULTIFRAME_NO_PIXEL_MEASUREMENTS = "MULTIFRAME_NO_PIXEL_MEASUREMENTS"
    MULTIFRAME_NO_ORIENTATION = "MULTIFRAME_NO_ORIENTATION"
    MULTIFRAME_NO_POSITION_INFORMATION = "MULTIFRAME_NO_POSITION_INFORMATION"
    NOT_TOMOGRAPHIC = "NOT_TOMOGRAPHIC"


@dataclass(frozen=True, kw_only=True)
class Reconstructability:
    """Whether a set of images is a volume, and what was found on the way."""

    value: bool
    issues: tuple[Issue, ...] = ()
    average_spacing: float | None = None
    """Millimetres between neighbouring slices of the regular grid (gaps included)."""
    missing_frames: int = 0
    order: tuple[int, ...] = ()
    """For a volume: indices of the images along the normal, highest first."""

    def fields(self) -> dict[str, Any]:
        """The display set fields this verdict sets (OHIF's names)."""
        return {
            "isReconstructable": self.value,
            "averageSpacingBetweenFrames": self.average_spacing,
            "missingFrames": self.missing_frames,
            "messages": [str(issue) for issue in self.issues],
        }


def _no(*issues: Issue) -> Reconstructability:
    return Reconstructability(value=False, issues=issues)


# -- reading numbers out of naturalized metadata ------------------------------


def number(value: Any) -> float | None:
    """A finite float from a DS/IS/FD value (number, numeric string, one-item list), else None."""
    kind = type(value)
    if kind is float or kind is int:  # the common case, first
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def numbers(value: Any, count: int) -> tuple[float, ...] | None:
    """Exactly ``count`` finite floats (a list, or a backslash-joined string), else None."""
    if isinstance(value, str):
        value = value.split("\\")
    if not isinstance(value, list | tuple) or len(value) != count:
        return None
    if all(type(item) in _PLAIN_NUMBERS for item in value):  # the common case, first
        floats = tuple(map(float, value))
        return floats if all(map(math.isfinite, floats)) else None
    result = tuple(number(item) for item in value)
    if any(item is None for item in result):
        return None
    return tuple(item for item in result if item is not None)


def first_item(value: Any) -> Mapping[str, Any] | None:
    """The first item of a naturalized sequence (a list of dicts, or one dict)."""
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, Mapping) else None


def number_of_frames(instance: Mapping[str, Any]) -> int:
    """NumberOfFrames, at least 1."""
    frames = number(instance.get("NumberOfFrames"))
    return max(1, int(frames)) if frames is not None else 1


def _vector(value: Any) -> Vector | None:
    found = numbers(value, 3)
    return None if found is None else (found[0], found[1], found[2])


def _orientation(value: Any) -> Orientation | None:
    found = numbers(value, 6)
    if found is None:
        return None
    return (found[0], found[1], found[2], found[3], found[4], found[5])


def _nested(instance: Mapping[str, Any], *path: str) -> Any:
    """Follow sequence keywords through first items, e.g. (FG, PlanePositionSequence, IPP)."""
    current: Any = instance
    for keyword in path[:-1]:
        current = first_item(current.get(keyword))
        if current is None:
            return None
    return current.get(path[-1])


def image_position(instance: Mapping[str, Any]) -> Vector | None:
    """ImagePositionPatient of a single-frame image."""
    return _vector(instance.get("ImagePositionPatient"))


def image_orientation(instance: Mapping[str, Any]) -> Orientation | None:
    """ImageOrientationPatient: the classic attribute or the shared/first-frame functional group."""
    for path in (
        ("ImageOrientationPatient",),
        ("SharedFunctionalGroupsSequence", "PlaneOrientationSequence", "ImageOrientationPatient"),
        ("PerFrameFunctionalGroupsSequence", "PlaneOrientationSequence", "ImageOrientationPatient"),
        ("DetectorInformationSequence", "ImageOrientationPatient"),
    ):
        found = _orientation(_nested(instance, *path))
        if found is not None:
            return found
    return None


def scan_normal(orientation: Orientation) -> Vector | None:
    """The unit normal of the image plane (row cosines x column cosines), None if degenerate."""
    rx, ry, rz, cx, cy, cz = orientation
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    length = math.sqrt(nx * nx + ny * ny + nz * nz)
    if length < 1e-6:
        return None
    return (nx / length, ny / length, nz / length)


def same_orientation(a: Orientation, b: Orientation) -> bool:
    """Every direction cosine within ``ORIENTATION_TOLERANCE``."""
    return all(abs(x - y) < ORIENTATION_TOLERANCE for x, y in zip(a, b, strict=True))


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _minus(a: Vector, b: Vector) -> Vector:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _length(a: Vector) -> float:
    return math.sqrt(_dot(a, a))


# -- ordering -----------------------------------------------------------------


def sort_by_position(instances: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Single-frame images by position along the normal, highest first.

    Instances without a usable position or orientation keep their order,
    after the others. The normal is that of the middle image (a scout at
    either end does not set it).
    """
    if len(instances) < 2:
        return list(instances)
    orientation = image_orientation(instances[len(instances) // 2])
    normal = scan_normal(orientation) if orientation is not None else None
    if normal is None:
        return list(instances)
    placed: list[tuple[float, int]] = []
    unplaced: list[int] = []
    for index, instance in enumerate(instances):
        position = image_position(instance)
        if position is None:
            unplaced.append(index)
        else:
            placed.append((-_dot(position, normal), index))
    order = [index for _, index in sorted(placed)] + unplaced
    return [instances[index] for index in order]


# -- the verdicts -------------------------------------------------------------


def check_stack(instances: Sequence[Mapping[str, Any]]) -> Reconstructability:
    """Whether single-frame images (one slice each) form a volume."""
    if not instances:
        return _no(Issue.NO_VALID_INSTANCES)
    if len(instances) == 1:
        return _no(Issue.SINGLE_IMAGE)
    issues: list[Issue] = []
    positions = [image_position(instance) for instance in instances]
    orientations = [image_orientation(instance) for instance in instances]
    if any(position is None for position in positions):
        issues.append(Issue.NO_POSITION_INFORMATION)
    if any(orientation is None for orientation in orientations):
        issues.append(Issue.NO_ORIENTATION_INFORMATION)
    if len({(_int(i.get("Rows")), _int(i.get("Columns"))) for i in instances}) > 1:
        issues.append(Issue.INCONSISTENT_DIMENSIONS)
    if len({_int(i.get("SamplesPerPixel")) or 1 for i in instances}) > 1:
        issues.append(Issue.INCONSISTENT_COMPONENTS)
    known = [orientation for orientation in orientations if orientation is not None]
    if known and not all(same_orientation(known[0], other) for other in known[1:]):
        issues.append(Issue.INCONSISTENT_ORIENTATIONS)
    if issues:
        return _no(*issues)
    return _check_planes(
        [p for p in positions if p is not None], [o for o in orientations if o is not None]
    )


def ordered_stack(
    instances: Sequence[Mapping[str, Any]],
) -> tuple[Reconstructability, list[Mapping[str, Any]]]:
    """``check_stack`` and the display order: along the normal when a volume, else as given."""
    verdict = check_stack(instances)
    if not verdict.value:
        return verdict, list(instances)
    return verdict, [instances[index] for index in verdict.order]


def check_multiframe(instance: Mapping[str, Any]) -> Reconstructability:
    """Whether one multi-frame image forms a volume."""
    issues: list[Issue] = []
    if not _has_pixel_measures(instance):
        issues.append(Issue.MULTIFRAME_NO_PIXEL_MEASUREMENTS)
    orientation = image_orientation(instance)
    if orientation is None:
        issues.append(Issue.MULTIFRAME_NO_ORIENTATION)
    if not _has_position(instance):
        issues.append(Issue.MULTIFRAME_NO_POSITION_INFORMATION)
    if "NM" in str(instance.get("Modality") or "") and _image_type(instance, 2) not in (
        _NM_TOMOGRAPHIC
    ):
        issues.append(Issue.NOT_TOMOGRAPHIC)
    if issues or orientation is None:
        return _no(*issues)
    per_frame = instance.get("PerFrameFunctionalGroupsSequence")
    if isinstance(per_frame, list) and per_frame:
        positions = [
            _vector(_nested(group, "PlanePositionSequence", "ImagePositionPatient"))
            if isinstance(group, Mapping)
            else None
            for group in per_frame
        ]
        if any(position is not None for position in positions):
            if any(position is None for position in positions):
                return _no(Issue.MULTIFRAME_NO_POSITION_INFORMATION)
            orientations = [
                _orientation(_nested(group, "PlaneOrientationSequence", "ImageOrientationPatient"))
                or orientation
                for group in per_frame
                if isinstance(group, Mapping)
            ]
            if not all(same_orientation(orientation, other) for other in orientations):
                return _no(Issue.INCONSISTENT_ORIENTATIONS)
            return _check_planes([p for p in positions if p is not None], orientations)
    shared = _nested(
        instance, "SharedFunctionalGroupsSequence", "PlanePositionSequence", "ImagePositionPatient"
    )
    if _vector(shared) is not None and number_of_frames(instance) > 1:
        # One position for every frame: a cine at one location, not a volume.
        return _no(Issue.SINGLE_LOCATION)
    return Reconstructability(value=True)


def _check_planes(positions: list[Vector], orientations: list[Orientation]) -> Reconstructability:
    """Stacking and spacing of slices that share an orientation."""
    if len(positions) < 2:
        return _no(Issue.SINGLE_IMAGE)
    normal = scan_normal(orientations[len(orientations) // 2])
    if normal is None:
        return _no(Issue.NO_ORIENTATION_INFORMATION)
    if all(_length(_minus(p, positions[0])) < LOCATION_TOLERANCE for p in positions):
        return _no(Issue.SINGLE_LOCATION)
    order = sorted(range(len(positions)), key=lambda index: -_dot(positions[index], normal))
    ordered = [positions[index] for index in order]
    steps: list[float] = []
    tilted = False
    for upper, lower in zip(ordered, ordered[1:], strict=False):
        delta = _minus(upper, lower)
        along = _dot(delta, normal)
        across = _length(
            (
                delta[0] - along * normal[0],
                delta[1] - along * normal[1],
                delta[2] - along * normal[2],
            )
        )
        steps.append(along)
        tilted = tilted or across > TILT_TOLERANCE * max(along, LOCATION_TOLERANCE)
    if min(steps) < LOCATION_TOLERANCE:
        return _no(Issue.DUPLICATE_POSITIONS)
    if tilted:
        return _no(Issue.INCONSISTENT_POSITION_INFORMATION)
    grid = _grid_spacing(steps)
    if grid is None:
        return _no(Issue.IRREGULAR_SPACING)
    missing = 0
    for step in steps:
        multiple = round(step / grid)
        if multiple < 1 or abs(step - multiple * grid) > SPACING_TOLERANCE * grid:
            return _no(Issue.IRREGULAR_SPACING)
        missing += multiple - 1
    return Reconstructability(
        value=True,
        issues=(Issue.MISSING_FRAMES,) if missing else (),
        average_spacing=grid,
        missing_frames=missing,
        order=tuple(order),
    )


def _grid_spacing(steps: list[float]) -> float | None:
    """The spacing of the regular grid the slices sit on, gaps included.

    The median step says how many grid steps each step spans; the grid
    spacing is then the whole extent over the number of grid steps (an
    average, so jitter around it evens out, unlike the median alone).
    """
    typical = median(steps)
    multiples = [round(step / typical) for step in steps]
    if min(multiples) < 1:
        return None
    return sum(steps) / sum(multiples)


def _has_pixel_measures(instance: Mapping[str, Any]) -> bool:
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if _nested(instance, groups, "PixelMeasuresSequence") is not None:
            return True
    spacing = numbers(instance.get("PixelSpacing"), 2)
    thickness = number(instance.get("SliceThickness")) or number(
        instance.get("SpacingBetweenSlices")
    )
    return spacing is not None and thickness is not None


def _has_position(instance: Mapping[str, Any]) -> bool:
    return any(
        _nested(instance, *path) is not None
        for path in (
            ("PerFrameFunctionalGroupsSequence", "PlanePositionSequence"),
            ("PerFrameFunctionalGroupsSequence", "CTPositionSequence"),
            ("SharedFunctionalGroupsSequence", "PlanePositionSequence"),
            ("ImagePositionPatient",),
            ("DetectorInformationSequence", "ImagePositionPatient"),
        )
    )


def _image_type(instance: Mapping[str, Any], index: int) -> str | None:
    value = instance.get("ImageType")
    if isinstance(value, str):
        value = value.split("\\")
    if isinstance(value, list) and len(value) > index and isinstance(value[index], str):
        return str(value[index]).strip().upper()
    return None


def _int(value: Any) -> int | None:
    found = number(value)
    return None if found is None else int(found)
