"""A version's serving defaults: the system prompt, answer schema and answer length its model file declared when
the version was registered, so a server on another machine (no models/ folder there) serves it as intended.

Revision ID: 0002_serving_defaults
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_serving_defaults"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:  # batch: SQLite cannot ALTER every kind of column
        batch.add_column(sa.Column("serving", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("serving")
