"""Alembic migrations of the model registry, run in code by ModelRegistry on open (no alembic.ini).

A new revision is a file in versions/ whose `down_revision` is the previous one; the registry tests
check that the migrated schema matches models.py.
"""
