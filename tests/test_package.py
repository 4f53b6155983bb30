"""The package surface: exports, the error tree, the mapping of foreign errors."""

from __future__ import annotations

import inspect

import pytest
from sqlalchemy import exc

import metastore
from metastore import db, errors


def test_all_is_sorted_and_complete() -> None:
    assert metastore.__all__ == sorted(metastore.__all__)
    for name in metastore.__all__:  # loaded on first use
        assert getattr(metastore, name) is not None
    public = {
        name
        for name, value in vars(metastore).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name not in {"annotations", "logging", "importlib", "TYPE_CHECKING", "Any"}
    }
    assert set(metastore.__all__) == public


def test_every_error_derives_from_the_root_and_has_a_message() -> None:
    classes = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, Exception)]
    assert len(classes) >= 8
    for cls in classes:
        assert issubclass(cls, errors.MetastoreError)
        assert cls.__doc__ and str(cls()) == cls.__doc__.strip()
        assert cls.__name__ in (errors.__doc__ or "")


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


@pytest.mark.parametrize("cls", _subclasses(exc.SQLAlchemyError), ids=lambda c: c.__name__)
def test_every_sqlalchemy_error_becomes_a_database_error(cls: type[exc.SQLAlchemyError]) -> None:
    try:
        if issubclass(cls, exc.StatementError):
            instance = cls("boom", "SELECT 1", {}, Exception("driver said no"))  # type: ignore[call-arg]
        else:
            instance = cls("boom")
    except TypeError:
        instance = cls.__new__(cls)
        Exception.__init__(instance, "boom")
    with pytest.raises(errors.DatabaseError) as caught, db.translate_errors("testing"):
        raise instance
    assert caught.value.__cause__ is instance
    assert str(caught.value).startswith("testing failed")


def test_invalid_metadata_names_where() -> None:
    err = errors.InvalidMetadata(
        "SOPInstanceUID is empty",
        field="SOPInstanceUID",
        item=3,
        study_uid="1.2",
        series_uid="1.2.3",
    )
    assert (
        str(err)
        == "SOPInstanceUID is empty (item 3, study 1.2, series 1.2.3, field SOPInstanceUID)"
    )
    assert err.context == {
        "field": "SOPInstanceUID",
        "item": 3,
        "study_uid": "1.2",
        "series_uid": "1.2.3",
    }


def test_the_command_line_loads_without_the_library() -> None:
    """``metastore --help`` imports only the command line: no SQLAlchemy, pydicom, httpx."""
    import subprocess
    import sys

    code = (
        "import sys, metastore.cli as c; c.build_parser().format_help(); "
        "heavy = {'sqlalchemy', 'pydicom', 'httpx', 'alembic', 'psycopg', 'starlette'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
