"""The README stays true: every SQL example runs on both engines, every command example runs.

SQL examples run as written over the bundled sample (PostgreSQL syntax; on
SQLite ``metadata->>'Key'`` becomes ``json_extract(metadata, '$.Key')``,
as the README says) and each must return rows. Command examples are read
from the README's ``sh`` blocks: every ``metastore`` command must parse,
and those that need nothing outside this machine run against a database
holding the sample.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import sqlalchemy as sa

from metastore import MetaStore
from metastore.cli import build_parser, main
from metastore.ingest import ingest_launch_file

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SAMPLE = ROOT / "metastore" / "data" / "sample.json.gz"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def sql_examples() -> list[tuple[str, str]]:
    found = []
    for block in blocks("sql"):
        for statement in block.split(";"):
            lines = [line for line in statement.strip().splitlines()]
            title = next((line[3:] for line in lines if line.startswith("-- ")), "")
            body = "\n".join(line for line in lines if not line.startswith("--")).strip()
            if body:
                found.append((title, body))
    return found


def command_examples() -> list[list[str]]:
    found = []
    for block in blocks("sh"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            for part in re.split(r"&&|;|\|", line.split("#", 1)[0]):
                words = shlex.split(part)
                if words and words[0].endswith("metastore"):
                    found.append(words[1:])
    return found


def test_the_readme_has_the_examples_we_check() -> None:
    assert len(sql_examples()) >= 5
    assert len(command_examples()) >= 6


@pytest.fixture
def sample_url(db_url: str) -> str:
    with MetaStore(db_url) as store:
        assert ingest_launch_file(store, str(SAMPLE), progress=False).ok
    return db_url


@pytest.mark.parametrize(("title", "query"), sql_examples(), ids=[t for t, _q in sql_examples()])
def test_every_sql_example_runs_and_finds_rows(sample_url: str, title: str, query: str) -> None:
    engine = sa.create_engine(sample_url)
    if engine.dialect.name == "sqlite":
        query = re.sub(r"(\w+\.)?metadata->>'(\w+)'", r"json_extract(\1metadata, '$.\2')", query)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(query)).all()
    finally:
        engine.dispose()
    assert rows, f"{title}: no rows on {engine.dialect.name}"
    if title.startswith("CT studies"):
        assert {row[1] for row in rows} == {"1CT1"}


def test_every_command_example_parses() -> None:
    parser = build_parser()
    for argv in command_examples():
        args = parser.parse_args(argv)
        assert args.handler, argv


def _local(argv: list[str]) -> bool:
    """Whether a command needs nothing beyond this machine (no example hosts, no secrets)."""
    text = " ".join(argv)
    return ".example" not in text and "--token-env" not in text and "--secret-env" not in text


def test_every_local_command_example_runs(
    sample_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    ran = 0
    for argv in command_examples():
        if not _local(argv):
            continue
        # An example's own SQLite file is the test's database (never a file in the repository).
        argv = [sample_url if word == "sqlite:///metastore.db" else word for word in argv]
        code = main(["--db", sample_url, *argv])
        captured = capsys.readouterr()
        assert code == 0, (argv, captured.err)
        ran += 1
    assert ran >= 4
