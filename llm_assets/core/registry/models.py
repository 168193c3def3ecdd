"""The registry's tables (SQLAlchemy 2.x). The schema itself is created by the Alembic migrations.

A test compares these classes with the migrated database, so the two never drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("candidate", "rejected", "promoted", "retired")
PRODUCTION, PREVIOUS, STAGING = "production", "previous", "staging"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="candidate")
    gguf_uri: Mapped[str | None] = mapped_column(Text)
    gguf_sha256: Mapped[str | None] = mapped_column(String(64))
    gguf_bytes: Mapped[int | None] = mapped_column(BigInteger)
    quantization: Mapped[str | None] = mapped_column(String(50))
    adapter_uri: Mapped[str | None] = mapped_column(Text)
    base_model_id: Mapped[str | None] = mapped_column(Text)
    base_model_revision: Mapped[str | None] = mapped_column(String(200))
    dataset_version: Mapped[str | None] = mapped_column(String(200))
    dataset_uris: Mapped[list | None] = mapped_column(JSON)
    dataset_rows: Mapped[int | None] = mapped_column(Integer)
    benchmark_version: Mapped[str | None] = mapped_column(String(200))
    metrics: Mapped[dict | None] = mapped_column(JSON)
    gate_passed: Mapped[bool | None] = mapped_column(Boolean)
    gate_reason: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict | None] = mapped_column(JSON)
    dagster_run_id: Mapped[str | None] = mapped_column(String(100))
    materialization_ids: Mapped[dict | list | None] = mapped_column(JSON)
    code_version: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lineage: Mapped[list | dict | None] = mapped_column(JSON)
    serving: Mapped[dict | None] = mapped_column(JSON)  # the model file's serving defaults at registration


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasHistory(Base):
    """Append-only: every alias move, status change and note, in order of id."""

    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    event: Mapped[str] = mapped_column(String(20))  # promote | rollback | stage | status | note
    alias: Mapped[str | None] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# The fields a caller may pass to ModelRegistry.register (everything but keys, numbering and timestamps).
VERSION_FIELDS = tuple(
    c.name for c in ModelVersion.__table__.columns if c.name not in ("id", "model_id", "version", "created_at")
)
