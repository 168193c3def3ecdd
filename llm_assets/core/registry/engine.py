"""Database URL handling, engines with bounded waits, and running the Alembic migrations to head."""

from __future__ import annotations

import importlib.util
import math
import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from llm_assets.core.registry.errors import RegistryError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works: it serializes concurrent first-time migrations on one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x6C6C6D5F72656721
WRITE_OPTION = "llm_assets_registry_write"


def default_registry_url() -> str:
    """LLM_ASSETS_REGISTRY_URL, else registry.db in $DAGSTER_HOME, else in ./.dagster_home."""
    if os.environ.get("LLM_ASSETS_REGISTRY_URL"):
        return os.environ["LLM_ASSETS_REGISTRY_URL"]
    home = os.environ.get("DAGSTER_HOME") or ".dagster_home"
    return f"sqlite:///{Path(home).resolve() / 'registry.db'}"


def normalize_url(url: str) -> str:
    """A plain path means a SQLite file; `postgres://` (Heroku style) means `postgresql://`."""
    url = str(url).strip()
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    return url


def mask_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def masking(url: str):
    """A function that blanks the URL's password out of any text (driver messages included)."""
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None

    def mask(message: str) -> str:
        return message.replace(str(password), "***") if password else message

    return mask


def create_registry_engine(url: str, timeout_s: float) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise RegistryError(f"not a database URL: {mask_url(url)!r} (want sqlite:///PATH or "
                            f"postgresql://USER:PASSWORD@HOST:PORT/DB)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, timeout_s)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 defaults to psycopg 3; the project installs psycopg2-binary.
            driver = "psycopg2" if importlib.util.find_spec("psycopg2") else "psycopg"
            parsed = parsed.set(drivername=f"postgresql+{driver}")
        if not importlib.util.find_spec(parsed.get_driver_name()):
            raise RegistryError(f"{mask_url(url)}: PostgreSQL needs the {parsed.get_driver_name()} driver "
                                f"(pip install psycopg2-binary)")
        ms = max(1, int(timeout_s * 1000))
        # A lock wait counts toward the statement too: the longer statement bound lets "lock timeout" be the
        # error a waiting writer sees. connect_args replace the URL's own ?options= (e.g.
        # -csearch_path=registry): keep those too.
        options = " ".join(filter(None, [parsed.query.get("options"), f"-c lock_timeout={ms}",
                                         f"-c statement_timeout={2 * ms}"]))
        return create_engine(
            parsed.difference_update_query(["options"]),
            pool_pre_ping=True,
            pool_timeout=timeout_s,
            connect_args={"connect_timeout": max(2, math.ceil(timeout_s)), "options": options},  # libpq min: 2 s
        )
    raise RegistryError(f"unsupported registry database {mask_url(url)!r}: use sqlite:/// or postgresql://")


def _sqlite_engine(parsed, timeout_s: float) -> Engine:
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # SQLAlchemy's recipe: the driver stops issuing BEGIN itself, the "begin" hook below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        _use_wal(cursor, timeout_s)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock up front, so two writers serialize instead of deadlocking on upgrade.
        immediate = connection.get_execution_options().get(WRITE_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _use_wal(cursor, timeout_s: float) -> None:
    """WAL: readers (the server, the CLI) never wait for a writer, nor block one.

    Switching a fresh file to WAL needs it exclusively and SQLite answers "locked" at once, without its busy
    timeout, while other connections open it: retry for up to timeout_s, then go on in the default journal
    mode (correct, only less concurrent).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            if cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def upgrade_to_head(engine: Engine) -> None:
    """Run the migrations in one transaction; concurrent openers wait for each other, then find head."""
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as exc:  # e.g. a database migrated by a newer llm-assets than this one
            raise RegistryError(f"registry schema migration failed: {exc}") from exc
