"""`metastore.service.ohif`: the viewer's app-config.js for a metastore service.

That the viewer accepts it is proven in the browser (tests/test_ohif_viewer.py);
here, what it says.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from metastore.cli import main
from metastore.errors import ConfigurationError
from metastore.service.ohif import DEFAULT_URL, app_config


def window_config(script: str) -> dict[str, Any]:
    """The object the script assigns to ``window.config`` (it is written as JSON)."""
    _, _, assignment = script.partition("window.config = ")
    assert assignment.endswith(";\n")
    config: dict[str, Any] = orjson.loads(assignment.removesuffix(";\n"))
    return config


def test_the_dicomweb_source_points_at_the_service_and_says_what_it_supports() -> None:
    config = window_config(app_config("http://127.0.0.1:8042/prefix/"))
    assert config["defaultDataSourceName"] == "metastore"
    sources = {source["sourceName"]: source for source in config["dataSources"]}
    assert set(sources) == {"metastore", "dicomjson"}
    dicomweb = sources["metastore"]
    assert dicomweb["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    settings = dicomweb["configuration"]
    root = "http://127.0.0.1:8042/prefix/dicomweb"
    assert (settings["qidoRoot"], settings["wadoRoot"], settings["wadoUriRoot"]) == (root,) * 3
    for supported in (
        "supportsWildcard",
        "supportsFuzzyMatching",
        "qidoSupportsIncludeField",
        "enableStudyLazyLoad",
        "omitQuotationForMultipartRequest",
    ):
        assert settings[supported] is True, supported
    assert settings["staticWado"] is False
    assert settings["bulkDataURI"] == {"enabled": True, "relativeResolution": "studies"}
    assert (settings["imageRendering"], settings["thumbnailRendering"]) == ("wadors", "wadors")
    assert settings["singlepart"] == "bulkdata,video"
    assert sources["dicomjson"]["namespace"].endswith("dataSourcesModule.dicomjson")


def test_the_viewer_opens_on_the_study_list_without_banner_or_tour() -> None:
    config = window_config(app_config())
    assert config["routerBasename"] == "/" and config["showStudyList"] is True
    assert config["investigationalUseDialog"] == {"option": "never"}
    assert config["customizationService"] == {"ohif.tours": {"$set": []}}
    roots = config["dataSources"][0]["configuration"]["qidoRoot"]
    assert roots == f"{DEFAULT_URL}/dicomweb"


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8080", "ftp://host/x", "http://", "http://host/?token=1", "http://host/#x", ""],
)
def test_a_url_that_is_no_service_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        app_config(url)
    assert repr(url) in str(caught.value)
    assert caught.value.context["url"] == url


def test_the_command_prints_the_script_and_reads_its_env_twin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["ohif-config", "--url", "http://127.0.0.1:9999"]) == 0
    out = capsys.readouterr().out
    assert out == app_config("http://127.0.0.1:9999")
    monkeypatch.setenv("METASTORE_OHIF_URL", "https://viewer.example/metastore")
    assert main(["ohif-config"]) == 0
    config = window_config(capsys.readouterr().out)
    assert config["dataSources"][0]["configuration"]["wadoRoot"] == (
        "https://viewer.example/metastore/dicomweb"
    )


def test_the_command_names_a_bad_url_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ohif-config", "--url", "viewer.example"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == "metastore: error: not an http(s) URL of a metastore service: 'viewer.example'\n"
    )
