"""Alembic environment: runs on the connection siyu hands it (see storage.db)."""
from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # Stand-alone `alembic` use by developers (e.g. autogenerate): a sync URL from the environment.
    url = os.environ.get("SIYU_SYNC_DATABASE_URL", "sqlite:///var/alembic-dev.db")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
