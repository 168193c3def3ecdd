"""Alembic environment: runs on the connection ModelRegistry hands over, inside its transaction."""

from alembic import context

from llm_assets.core.registry.models import Base

VERSION_TABLE = "llm_assets_registry_version"  # not alembic_version: the database may be shared (e.g. Dagster's)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
