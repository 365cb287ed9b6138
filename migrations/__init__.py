"""Alembic migrations; run with `trainserve db upgrade`."""
