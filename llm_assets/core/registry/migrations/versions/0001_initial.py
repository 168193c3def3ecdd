"""The registry's first schema: models, versions, aliases and the alias history.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("gguf_uri", sa.Text),
        sa.Column("gguf_sha256", sa.String(64)),
        sa.Column("gguf_bytes", sa.BigInteger),
        sa.Column("quantization", sa.String(50)),
        sa.Column("adapter_uri", sa.Text),
        sa.Column("base_model_id", sa.Text),
        sa.Column("base_model_revision", sa.String(200)),
        sa.Column("dataset_version", sa.String(200)),
        sa.Column("dataset_uris", sa.JSON),
        sa.Column("dataset_rows", sa.Integer),
        sa.Column("benchmark_version", sa.String(200)),
        sa.Column("metrics", sa.JSON),
        sa.Column("gate_passed", sa.Boolean),
        sa.Column("gate_reason", sa.Text),
        sa.Column("config", sa.JSON),
        sa.Column("dagster_run_id", sa.String(100)),
        sa.Column("materialization_ids", sa.JSON),
        sa.Column("code_version", sa.String(200)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("lineage", sa.JSON),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    )
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),
    )
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, index=True),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("alias", sa.String(100)),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at", TZ, nullable=False),
    )


def downgrade() -> None:
    for table in ("alias_history", "aliases", "model_versions", "models"):
        op.drop_table(table)
