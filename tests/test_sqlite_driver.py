"""The SQLite driver (storage/sqlite_driver.py) answers SQLAlchemy as aiosqlite would, off the event loop."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, text
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.sqlite_driver import SqliteConnection


NOTES = Table("notes", MetaData(), Column("id", Integer, primary_key=True), Column("key", Text, unique=True),
              Column("body", Text))


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.session() as session, session.begin():
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body TEXT)"))
    yield database
    await database.engine.dispose()


async def test_a_statement_reports_what_it_changed_and_its_rows(db: Database) -> None:
    async with db.session() as session, session.begin():
        first = await session.execute(insert(NOTES).values(key="a", body="一").on_conflict_do_nothing())
        again = await session.execute(insert(NOTES).values(key="a", body="二").on_conflict_do_nothing())
        assert (first.rowcount, again.rowcount) == (1, 0)  # read after SQLAlchemy closed the cursor
        many = await session.execute(insert(NOTES), [{"key": k, "body": k} for k in "bcd"])
        assert many.rowcount == 3
    async with db.session() as session:
        rows = await session.execute(text("SELECT key, body FROM notes ORDER BY id"))
        assert rows.fetchmany(2) == [("a", "一"), ("b", "b")]
        assert rows.fetchall() == [("c", "c"), ("d", "d")]
        assert (await session.execute(text("SELECT body FROM notes WHERE key = 'zz'"))).first() is None


async def test_a_failed_statement_raises_the_database_error_and_rolls_back(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.session() as session, session.begin():
            await session.execute(text("INSERT INTO notes (key, body) VALUES ('k', 'kept?')"))
            await session.execute(text("INSERT INTO notes (key, body) VALUES ('k', 'twice')"))
    async with db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar() == 0


async def test_statements_run_on_the_connections_thread_not_the_event_loops(db: Database) -> None:
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, SqliteConnection) and not driver.on_loop
        ran_on = await driver.run(lambda _sqlite: threading.current_thread())
    assert ran_on is not threading.current_thread()
