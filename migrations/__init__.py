"""Alembic migrations. They own the schema: the service never calls ``create_all``."""
