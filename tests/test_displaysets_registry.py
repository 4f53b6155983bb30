"""Custom SOP class handlers: precedence, passing on, replacing, entry points, and their faults."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from displaysets_helpers import load_real, with_image_ids

from metastore import ConfigurationError, MetaStore
from metastore.displaysets import (
    DisplaySet,
    SopClassHandler,
    all_handlers,
    get_display_sets,
    handlers,
    refresh,
    register,
    series_display_sets,
    sopclasses,
)

PLUGINS = Path(__file__).resolve().parent / "plugins"
PETCT = "1.3.6.1.4.1.25403.345050719074.3824.20170125113417.1"
WMHI = "1.2.826.0.13854362241694438965858641723883466450351448"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"


def ct(count: int = 4, series: str = "1.2.3.1") -> list[dict[str, Any]]:
    return [
        {
            "StudyInstanceUID": "1.2.3",
            "SeriesInstanceUID": series,
            "SOPInstanceUID": f"{series}.{n}",
            "SOPClassUID": sopclasses.CTImageStorage,
            "Modality": "CT",
            "InstanceNumber": n,
            "imageId": f"wadouri:https://pacs/{series}/{n}.dcm",
        }
        for n in range(1, count + 1)
    ]


@pytest.fixture
def registered() -> Iterator[list[Any]]:
    """Register handlers for one test; every one is removed afterwards."""
    removers: list[Any] = []
    yield removers
    for remove in removers:
        remove()


def odd_ones(instances: Sequence[Mapping[str, Any]]) -> list[DisplaySet]:
    return [
        DisplaySet(instances=[i], fields={"odd": True})
        for i in instances
        if int(i["InstanceNumber"]) % 2
    ]


def test_the_built_ins_are_tried_in_ohif_s_order() -> None:
    assert [h.id for h in all_handlers()] == [
        handlers.VIDEO,
        handlers.WAVEFORM,
        handlers.SEGMENTATION,
        handlers.PARAMETRIC_MAP,
        handlers.STACK,
        handlers.WHOLE_SLIDE,
        handlers.PDF,
        handlers.SR_3D,
        handlers.SR,
        handlers.RTSTRUCT,
    ]


def test_a_higher_priority_goes_first_and_what_it_leaves_passes_on(registered: list[Any]) -> None:
    registered.append(
        register(
            SopClassHandler(
                id="test.odd",
                sop_class_uids=frozenset({sopclasses.CTImageStorage}),
                get_display_sets=odd_ones,
                priority=1,
            )
        )
    )
    assert all_handlers()[0].id == "test.odd"
    made = series_display_sets(ct(5))
    assert [(d["SOPClassHandlerId"], d["SOPInstanceUIDs"]) for d in made] == [
        ("test.odd", ["1.2.3.1.1"]),
        ("test.odd", ["1.2.3.1.3"]),
        ("test.odd", ["1.2.3.1.5"]),
        (handlers.STACK, ["1.2.3.1.2", "1.2.3.1.4"]),
    ]
    assert made[0]["odd"] is True
    assert made[0]["imageIds"] == ["wadouri:https://pacs/1.2.3.1/1.dcm"]


def test_a_handler_that_returns_nothing_passes_everything_on(registered: list[Any]) -> None:
    offered: list[int] = []

    def decline(instances: Sequence[Mapping[str, Any]]) -> list[DisplaySet]:
        offered.append(len(instances))
        return []

    registered.append(
        register(
            SopClassHandler(
                id="test.decline", sop_class_uids=None, get_display_sets=decline, priority=3
            )
        )
    )
    made = series_display_sets(ct(4))
    assert offered == [4]
    assert [d["SOPClassHandlerId"] for d in made] == [handlers.STACK]


def test_priority_zero_only_gets_what_the_built_ins_leave(registered: list[Any]) -> None:
    offered: list[str] = []

    def anything(instances: Sequence[Mapping[str, Any]]) -> list[DisplaySet]:
        offered.extend(str(i["SOPInstanceUID"]) for i in instances)
        return [DisplaySet(instances=instances, fields={"caught": True}, key="all")]

    registered.append(
        register(
            SopClassHandler(id="test.catch-all", sop_class_uids=None, get_display_sets=anything)
        )
    )
    key_object = {**ct(1, series="1.2.3.2")[0], "SOPClassUID": KEY_OBJECT_SELECTION}
    made = series_display_sets(ct(3)) + series_display_sets([key_object])
    assert [d["SOPClassHandlerId"] for d in made] == [handlers.STACK, "test.catch-all"]
    assert offered == ["1.2.3.2.1"]
    assert made[1]["caught"] is True and "unsupported" not in made[1]


def test_a_custom_handler_with_a_built_in_id_replaces_it(registered: list[Any]) -> None:
    def whole_series(instances: Sequence[Mapping[str, Any]]) -> list[DisplaySet]:
        return [DisplaySet(instances=instances, fields={"replaced": True}, key="series")]

    registered.append(
        register(
            SopClassHandler(
                id=handlers.STACK,
                sop_class_uids=frozenset({sopclasses.CTImageStorage}),
                get_display_sets=whole_series,
            )
        )
    )
    ids = [h.id for h in all_handlers()]
    assert ids.count(handlers.STACK) == 1 and ids.index(handlers.STACK) == 4
    [made] = series_display_sets(ct(3))
    assert made["replaced"] is True and "isReconstructable" not in made


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("raise", "failed on series 1.2.3.1 of study 1.2.3: boom"),
        ("not a display set", "returned something other than display sets"),
        ("foreign instance", "returned something other than display sets"),
        ("empty display set", "returned something other than display sets"),
        ("same key twice", "made two display sets with the same key in series 1.2.3.1"),
    ],
)
def test_a_faulty_handler_is_named_with_the_series_it_failed_on(
    registered: list[Any], behaviour: str, message: str
) -> None:
    def faulty(instances: Sequence[Mapping[str, Any]]) -> Any:
        if behaviour == "raise":
            raise ValueError("boom")
        if behaviour == "not a display set":
            return [{"instances": instances}]
        if behaviour == "foreign instance":
            return [DisplaySet(instances=[{"SOPInstanceUID": "9.9"}])]
        if behaviour == "empty display set":
            return [DisplaySet(instances=[])]
        return [DisplaySet(instances=[i], key="same") for i in instances]

    registered.append(
        register(
            SopClassHandler(
                id="test.faulty", sop_class_uids=None, get_display_sets=faulty, priority=1
            )
        )
    )
    with pytest.raises(ConfigurationError) as caught:
        series_display_sets(ct(2))
    assert "test.faulty" in str(caught.value)
    assert message in str(caught.value)
    assert caught.value.context["series_uid"] == "1.2.3.1"


@pytest.mark.parametrize(
    "bad",
    [
        "not a handler",
        SopClassHandler(id="", sop_class_uids=None, get_display_sets=odd_ones),
        SopClassHandler(id="x", sop_class_uids={"1.2"}, get_display_sets=odd_ones),  # type: ignore[arg-type]
        SopClassHandler(id="x", sop_class_uids=None, get_display_sets=odd_ones, priority=1.5),  # type: ignore[arg-type]
    ],
)
def test_registering_something_malformed_is_refused(bad: Any) -> None:
    before = all_handlers()
    with pytest.raises(ConfigurationError):
        register(bad)
    assert all_handlers() == before


# -- entry points ---------------------------------------------------------------------


@pytest.fixture
def sample_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The sample handler package, installed: its directory (package + dist-info) on sys.path."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    refresh()
    yield
    monkeypatch.delitem(sys.modules, "metastore_sample_handlers", raising=False)
    monkeypatch.undo()
    refresh()


def write_distribution(directory: Path, name: str, entry_points: dict[str, str]) -> None:
    """What an installer writes for a distribution with these entry points."""
    dist_info = directory / f"{name}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[metastore.sop_class_handlers]\n{lines}")


def test_installed_handlers_plug_in_through_their_entry_points(
    store: MetaStore, sample_plugin: None
) -> None:
    ids = [h.id for h in all_handlers()]
    assert ids[0] == "sample.large-ct"  # priority 10: before every built-in
    assert ids[-1] == "sample.key-objects"  # priority 0: after them
    load_real(store, only={PETCT, WMHI})
    key_object = {
        **with_image_ids([_key_object_selection()])[0],
    }
    store.add_instances([key_object], source="real")
    made = {
        d["SeriesInstanceUID"]: d
        for study in (PETCT, WMHI)
        for d in get_display_sets(store, study) or []
    }
    volume = made["1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4"]
    assert (volume["SOPClassHandlerId"], volume["volume"], volume["numImageFrames"]) == (
        "sample.large-ct",
        True,
        174,
    )
    # Fewer than 100 CT slices: the custom handler passes them on to the stack handler.
    for small in (
        "1.3.6.1.4.1.25403.345050719074.3824.20170125113608.4",
        "1.2.826.0.13251432571622157432418024103657242430176808",
    ):
        assert made[small]["SOPClassHandlerId"] == handlers.STACK
    keys = made["1.3.6.1.4.1.25403.345050719074.3824.20170125113545.99"]
    assert (keys["SOPClassHandlerId"], keys["keyImages"]) == ("sample.key-objects", 2)


def test_without_the_package_the_built_ins_show_the_same_series(store: MetaStore) -> None:
    assert all(not h.id.startswith("sample.") for h in all_handlers())
    load_real(store, only={PETCT})
    [volume] = [
        d
        for d in get_display_sets(store, PETCT) or []
        if d["SeriesInstanceUID"].endswith("113545.4")
    ]
    assert volume["SOPClassHandlerId"] == handlers.STACK


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_anywhere:X", "cannot load SOP class handler entry point broken"),
        ("os:sep", "gives str, not a SopClassHandler"),
        ("os:getcwd", "gives str, not a SopClassHandler"),
    ],
)
def test_a_broken_entry_point_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    write_distribution(tmp_path, "broken_handlers", {"broken": target})
    monkeypatch.syspath_prepend(str(tmp_path))
    refresh()
    try:
        with pytest.raises(ConfigurationError) as caught:
            all_handlers()
        assert message in str(caught.value)
        assert target in str(caught.value)
    finally:
        monkeypatch.undo()
        refresh()
    assert len(all_handlers()) == 10


def _key_object_selection() -> dict[str, Any]:
    """A Key Object Selection document naming two CT slices, in the PETCT study."""
    return {
        "StudyInstanceUID": PETCT,
        "SeriesInstanceUID": "1.3.6.1.4.1.25403.345050719074.3824.20170125113545.99",
        "SOPInstanceUID": "1.3.6.1.4.1.25403.345050719074.3824.20170125113545.99.1",
        "SOPClassUID": KEY_OBJECT_SELECTION,
        "Modality": "KO",
        "SeriesNumber": 99,
        "InstanceNumber": 1,
        "CurrentRequestedProcedureEvidenceSequence": [
            {
                "StudyInstanceUID": PETCT,
                "ReferencedSeriesSequence": [
                    {
                        "SeriesInstanceUID": "1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4",
                        "ReferencedSOPSequence": [
                            {"ReferencedSOPInstanceUID": "1.2.3.4.1"},
                            {"ReferencedSOPInstanceUID": "1.2.3.4.2"},
                        ],
                    }
                ],
            }
        ],
    }
