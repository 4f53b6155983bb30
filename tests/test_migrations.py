"""Migrations: up, down, up on both backends; head matches schema.py; the head check."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from metastore import MetaStore, SchemaNotAtHead, db
from metastore.schema import include_object, metadata


def _tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def test_up_down_up_and_head_matches_models(empty_db_url: str) -> None:
    engine = db.create_engine(empty_db_url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
        assert set(metadata.tables) <= _tables(engine)
        db.downgrade(engine, "base")
        assert _tables(engine) - {"alembic_version"} == set()
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        with engine.connect() as connection:
            options = {
                "compare_type": True,
                "include_object": include_object(connection.dialect.name),
            }
            context = MigrationContext.configure(connection, opts=options)
            differences = compare_metadata(context, metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_brand_new_database_is_brought_to_head(empty_db_url: str) -> None:
    with MetaStore(empty_db_url) as store:
        assert db.current_revision(store.engine) == db.head_revision()


def test_database_behind_head_is_refused(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if this code were one revision newer than the database.
    head = db.head_revision()
    monkeypatch.setattr(db, "head_revision", lambda: "9999")
    with pytest.raises(SchemaNotAtHead) as caught:
        MetaStore(db_url)
    assert "metastore db upgrade" in str(caught.value)
    assert caught.value.current == head
    engine = db.create_engine(db_url)
    try:
        assert db.current_revision(engine) == head  # untouched
    finally:
        engine.dispose()


def test_foreign_tables_without_revision_are_refused(empty_db_url: str) -> None:
    engine = db.create_engine(empty_db_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE somebody_elses (x integer)"))
    engine.dispose()
    with pytest.raises(SchemaNotAtHead, match="metastore db upgrade"):
        MetaStore(empty_db_url)


def test_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.URL_ENV, raising=False)
    assert db.resolve_url(None) == "sqlite:///metastore.db"
    monkeypatch.setenv(db.URL_ENV, "postgresql://u@h:5432/d")
    assert db.resolve_url(None) == "postgresql+psycopg://u@h:5432/d"
    assert db.resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    assert db.redact("postgresql+psycopg://u:secret@h/d") == "postgresql+psycopg://u:***@h/d"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "postgresql+psycopg2://u@h/d", "not a url"])
def test_unsupported_urls_are_configuration_errors(url: str) -> None:
    from metastore import ConfigurationError

    with pytest.raises(ConfigurationError):
        db.create_engine(url)
