"""siyu's memory: SQLAlchemy models, queries and Alembic migrations. Knows nothing of the engine."""
