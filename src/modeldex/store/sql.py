"""The SQLAlchemy store: SQLite by default, PostgreSQL through the same code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from modeldex.catalog.errors import KeyNameTaken, KeyNotFound, ModelAlreadyExists, ModelNotFound
from modeldex.catalog.keys import ApiKey, Scope
from modeldex.catalog.models import Model, list_order
from modeldex.catalog.state import CatalogState
from modeldex.store import migrate
from modeldex.store.base import StoreError
from modeldex.store.schema import api_keys, catalog_state, models

SQLITE_BUSY_TIMEOUT_MS = 5000


def _configure_sqlite(engine: Engine) -> None:
    """WAL so readers never block the writer; explicit BEGINs so SQLite's locking is ours to choose.

    pysqlite would otherwise open transactions lazily, after a first SELECT, which lets two writers
    deadlock on the lock upgrade. Writes use BEGIN IMMEDIATE and wait their turn instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("modeldex_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_store_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise StoreError("an in-memory SQLite database cannot be shared; use sqlite:///path/to/file.db")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


class SqlStore:
    """CatalogStore on any SQLAlchemy database. Every write bumps `catalog_state.version` first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(modeldex_write=True)
        self._snapshot_reads: dict[str, Any] = (
            {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
        )

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that starts by taking the version row, which serializes writers."""
        with self._writer.begin() as conn:
            conn.execute(update(catalog_state).values(version=catalog_state.c.version + 1))
            yield conn

    def current_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(catalog_state.c.version)).scalar_one())

    def load_state(self) -> CatalogState:
        with self.engine.connect().execution_options(**self._snapshot_reads) as conn, conn.begin():
            version = int(conn.execute(select(catalog_state.c.version)).scalar_one())
            rows = conn.execute(select(models.c.id, models.c.created, models.c.owned_by)).all()
            key_rows = conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None))).all()
        entries = sorted((Model(r.id, int(r.created), r.owned_by) for r in rows), key=list_order)
        return CatalogState(version=version, models=tuple(entries), keys=tuple(map(_key_from_row, key_rows)))

    def seed_once(self, seed: list[Model]) -> bool:
        with self._writer.begin() as conn:
            claimed = conn.execute(
                update(catalog_state).where(catalog_state.c.seeded.is_(False)).values(seeded=True)
            ).rowcount
            if not claimed:
                return False
            conn.execute(update(catalog_state).values(version=catalog_state.c.version + 1))
            if seed:
                conn.execute(insert(models), [_model_row(m) for m in seed])
            return True

    def add_model(self, model: Model) -> None:
        try:
            with self._write() as conn:
                conn.execute(insert(models).values(_model_row(model)))
        except IntegrityError:
            raise ModelAlreadyExists(model.id) from None

    def remove_model(self, model_id: str) -> None:
        with self._write() as conn:
            if conn.execute(delete(models).where(models.c.id == model_id)).rowcount == 0:
                raise ModelNotFound(model_id)

    def insert_key(self, key: ApiKey) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    insert(api_keys).values(
                        name=key.name,
                        scope=key.scope.value,
                        lookup_id=key.lookup_id,
                        secret_hash=key.secret_hash,
                        created_at=key.created_at,
                        revoked_at=key.revoked_at,
                    )
                )
        except IntegrityError:
            raise KeyNameTaken(key.name) from None

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.pk)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_key_from_row(row) for row in conn.execute(query)]

    def revoke_key(self, name: str) -> None:
        with self._write() as conn:
            revoked = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=int(time.time()))
            ).rowcount
            if revoked == 0:
                raise KeyNotFound(name)

    def close(self) -> None:
        self.engine.dispose()


def _model_row(model: Model) -> dict[str, Any]:
    return {"id": model.id, "created": model.created, "owned_by": model.owned_by}


def _key_from_row(row: Any) -> ApiKey:
    return ApiKey(
        name=row.name,
        scope=Scope(row.scope),
        lookup_id=row.lookup_id,
        secret_hash=row.secret_hash,
        created_at=int(row.created_at),
        revoked_at=None if row.revoked_at is None else int(row.revoked_at),
    )


def open_store(url: str, seed: list[Model] | None = None) -> SqlStore:
    """Open (creating on first use) the catalog at `url`, and add `seed` if it was never seeded."""
    engine = create_store_engine(url)
    try:
        migrate.ensure_schema(engine)
        store = SqlStore(engine)
        if seed is not None:
            store.seed_once(seed)
    except OperationalError as exc:
        engine.dispose()
        raise StoreError(f"cannot open the database: {exc.orig}") from None
    except Exception:
        engine.dispose()
        raise
    return store
