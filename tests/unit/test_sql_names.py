"""The lake's SQL names: one per table, the same in the code and docs/sql.md; the endpoint refuses to
listen beyond loopback without a password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetstream.config import Settings, SqlSettings
from fleetstream.errors import FleetstreamError
from fleetstream.lake.catalog import NAMED, sql_name, table_of
from fleetstream.sql.server import check_exposure


def test_every_table_has_one_name_listed_in_the_docs(repo_root: Path) -> None:
    names = {sql_name(t) for t in NAMED}
    assert len(names) == len(NAMED)
    assert all(table_of(sql_name(t)) == t for t in NAMED)
    text = (repo_root / "docs" / "sql.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| ([a-z_]+/[a-z_]+) \| `(fleet\.[a-z_]+)` \|$", text, flags=re.M))
    assert listed == {t: sql_name(t) for t in NAMED}


def test_the_endpoint_needs_a_password_beyond_loopback() -> None:
    check_exposure(Settings(sql=SqlSettings(host="127.0.0.1")))
    with pytest.raises(FleetstreamError, match="FLEETSTREAM_SQL__PASSWORD"):
        check_exposure(Settings(sql=SqlSettings(host="0.0.0.0")))
    check_exposure(Settings(sql=SqlSettings(host="0.0.0.0", password=SecretStr("s"))))


def test_the_cli_says_what_to_do_without_an_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleetstream.cli import app
    from fleetstream.testing import free_port_base

    monkeypatch.setenv("FLEETSTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FLEETSTREAM_SQL__PORT", str(free_port_base(1)))  # nothing listens there
    shell = CliRunner().invoke(app, ["sql"])
    assert shell.exit_code == 1
    assert "no SQL endpoint answers" in shell.output
    assert "fleetstream sql serve" in shell.output

    monkeypatch.setenv("FLEETSTREAM_SQL__HOST", "0.0.0.0")
    monkeypatch.setenv("FLEETSTREAM_SQL__PASSWORD", "sql-very-secret")
    shown = CliRunner().invoke(app, ["config"])
    assert shown.exit_code == 0
    assert "sql-very-secret" not in shown.output
    assert '"password": "**********"' in shown.output
    monkeypatch.delenv("FLEETSTREAM_SQL__PASSWORD")
    exposed = CliRunner().invoke(app, ["sql", "serve"])
    assert exposed.exit_code == 1
    assert "FLEETSTREAM_SQL__PASSWORD" in exposed.output
