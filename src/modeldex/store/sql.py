"""The SQLAlchemy store: SQLite by default, PostgreSQL through the same code."""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    null,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from modeldex.catalog.callers import Scope
from modeldex.catalog.changes import Change
from modeldex.catalog.entities import STORED, Alias, Entity, Group, Model, list_order
from modeldex.catalog.errors import AlreadyExists, NotFound, PreconditionFailed, StoreError, StoreUnavailable
from modeldex.catalog.incremental import CatalogDelta
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.keys import ApiKey
from modeldex.catalog.kinds import Kind, kind_of
from modeldex.catalog.policy import ALL_MODELS, AccessPolicy
from modeldex.catalog.repository import UNCHANGED, Unchanged
from modeldex.catalog.retention import Compacted, Retention
from modeldex.catalog.state import CatalogState
from modeldex.catalog.upstreams import Upstream
from modeldex.discovery.health import UpstreamHealth
from modeldex.store import migrate
from modeldex.store.schema import (
    aliases,
    api_keys,
    catalog_state,
    changes,
    console_sessions,
    groups,
    issuers,
    models,
    upstream_health,
    upstreams,
)

LATENCY_HISTORY = 60  # polls kept per upstream for the console's latency chart
DEFAULT_TIMEOUT_S = 5.0  # `serve --database-timeout`: connect, statement, lock and pool waits
NOTIFY_CHANNEL = "modeldex_catalog"
log = logging.getLogger("modeldex.store")


def _configure_sqlite(engine: Engine, timeout_s: float) -> None:
    """WAL so readers never block the writer; explicit BEGINs so SQLite's locking is ours to choose.

    pysqlite would otherwise open transactions lazily, after a first SELECT, which lets two writers
    deadlock on the lock upgrade. Writes use BEGIN IMMEDIATE and wait their turn instead (at most
    `timeout_s`: SQLite's busy timeout).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {round(timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("modeldex_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def postgres_connect_timeout(timeout_s: float) -> int:
    """libpq counts whole seconds and treats less than 2 as 2."""
    return max(2, math.ceil(timeout_s))


def _bound_postgres(engine: Engine, timeout_s: float, connect_timeout_s: float) -> None:
    """Every wait on PostgreSQL ends within about `timeout_s`, even when the server hangs (frozen, or
    behind a stalled network path) instead of going away.

    The server cancels statements and lock waits after `timeout_s` (statement_timeout, lock_timeout), so a
    lock held by a stuck session is an error, not a queue. A hung server cancels nothing, and its kernel
    keeps acknowledging our packets, so TCP never gives up either: each connection also waits at most a
    second longer than that itself, then closes (psycopg's wait timeout), which SQLAlchemy treats as a
    lost connection. A frozen server (SIGSTOP) held writes for 60 s before this; now they get 503."""
    import psycopg

    server_ms = max(1, round(timeout_s * 1000))
    client_s = timeout_s + 1.0

    class BoundedConnection(psycopg.Connection):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            started = time.monotonic()
            try:
                return super().wait(gen, interval=interval, timeout=client_s if timeout is None else timeout)
            except psycopg.OperationalError:
                if timeout is None and time.monotonic() - started >= client_s:
                    self.pgconn.finish()  # its state is unknown now: never reuse it
                    raise psycopg.OperationalError(
                        f"the database did not answer within {client_s:g} s") from None
                raise

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        options = cparams.get("options", "")
        cparams["options"] = f"{options} -c statement_timeout={server_ms} -c lock_timeout={server_ms}".strip()
        cparams.setdefault("connect_timeout", postgres_connect_timeout(connect_timeout_s))
        return BoundedConnection.connect(*cargs, **cparams)


SUPPORTED_URLS = "sqlite:///path/catalog.db or postgresql://user@host/dbname"


def create_store_engine(url: str, timeout_s: float = DEFAULT_TIMEOUT_S, create_dirs: bool = False,
                        connect_timeout_s: float | None = None) -> Engine:
    """An engine on a SQLite file or a PostgreSQL database, whose waits on the database (connecting, a
    statement, a lock, a pooled connection) end within about `timeout_s`: reads are served from memory
    meanwhile, writes answer 503. A SQLite file's folder must exist unless `create_dirs`: a mistyped path is
    an error, not a new, empty catalog somewhere unexpected. `connect_timeout_s` bounds connecting to
    PostgreSQL alone (default: `timeout_s`), for work whose statements may run long (a migration) but whose
    server, if it does not answer at all, should be said so in seconds, not after an hour."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number (`host:5432x`)
        raise StoreError(f"not a database URL; expected {SUPPORTED_URLS}") from None
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_pre_ping=True, pool_timeout=timeout_s)
        _bound_postgres(engine, timeout_s, timeout_s if connect_timeout_s is None else connect_timeout_s)
        return engine
    if parsed.get_backend_name() != "sqlite":
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: modeldex keeps its catalog in "
                         f"SQLite or PostgreSQL ({SUPPORTED_URLS})")
    database = parsed.database
    if not database or database == ":memory:":
        raise StoreError("an in-memory SQLite database cannot be shared; use sqlite:///path/to/file.db")
    folder = Path(database).expanduser().parent
    if not folder.is_dir():
        if not create_dirs:
            raise StoreError(f"no folder {folder.absolute()} for the database: create it first (modeldex creates "
                             "folders only for its default location)")
        folder.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": timeout_s}, pool_timeout=timeout_s)
    _configure_sqlite(engine, timeout_s)
    return engine


# --- rows <-> entities -------------------------------------------------------------------------------


def _model_from_row(row: Any) -> Model:
    meta = row.meta
    if isinstance(meta, str):  # read as text (_MODEL_COLUMNS): decode only what is more than 'null'
        meta = None if meta == "null" else orjson.loads(meta)
    if meta is None:  # the common case, and the fast one: fields were validated on the way in
        return Model.stored(row.id, int(row.created), row.owned_by, row.source, row.stale_since)
    discovery = {k: v for k, v in (("source", row.source), ("stale_since", row.stale_since)) if v is not None}
    return Model.model_validate({"id": row.id, "created": int(row.created), "owned_by": row.owned_by,
                                 **meta, **discovery}, context=STORED)


def _model_to_row(model: Model) -> dict[str, Any]:
    return {"id": model.id, "created": model.created, "owned_by": model.owned_by,
            "meta": model.metadata() or None, "source": model.source, "stale_since": model.stale_since}


def _alias_from_row(row: Any) -> Alias:
    return Alias.model_construct(id=row.id, target=row.target, hidden=bool(row.hidden))


def _group_from_row(row: Any) -> Group:
    return Group.model_validate({"name": row.name, "members": row.members, "description": row.description},
                                context=STORED)


def _upstream_from_row(row: Any) -> Upstream:
    return Upstream.model_validate({
        name: getattr(row, name) for name in Upstream.model_fields if getattr(row, name) is not None})


def _upstream_to_row(upstream: Upstream) -> dict[str, Any]:
    row = upstream.model_dump(mode="json")
    return {**row, "include": list(upstream.include), "exclude": list(upstream.exclude)}


def _issuer_from_row(row: Any) -> Issuer:
    return Issuer.model_validate({**row.config, "name": row.name}, context=STORED)


def _issuer_to_row(issuer: Issuer) -> dict[str, Any]:
    config = issuer.document()
    return {"name": config.pop("name"), "config": config}


def _upstream_written(conn: Connection, name: str, op: str) -> None:
    """An upstream's health row lives and dies with it; a changed upstream is due for a poll at once."""
    if op == "create":
        conn.execute(delete(upstream_health).where(upstream_health.c.name == name))
        conn.execute(insert(upstream_health).values(name=name))
    elif op == "update":
        conn.execute(update(upstream_health).where(upstream_health.c.name == name).values(next_poll_at=None))
    else:
        conn.execute(delete(upstream_health).where(upstream_health.c.name == name))


def _health_from_row(row: Any, now: float) -> UpstreamHealth:
    leased = row.lease_owner is not None and row.lease_until is not None and row.lease_until >= now
    return UpstreamHealth(
        last_attempt_at=row.last_attempt_at, last_success_at=row.last_success_at, last_error=row.last_error,
        last_error_at=row.last_error_at, latency_ms=row.latency_ms, model_count=int(row.model_count or 0),
        failing_since=row.failing_since, shadowed=tuple(row.shadowed or ()), next_poll_at=row.next_poll_at,
        polling_by=row.lease_owner if leased else None,
        latency_history=tuple(tuple(point) for point in row.latency_history or ()),
    )


def _change_from_row(r: Any) -> Change:
    return Change(version=int(r.version), at=r.at, actor=r.actor, entity=r.entity, id=r.entity_id, op=r.op,
                  before=r.before, after=r.after)


def _key_from_row(row: Any) -> ApiKey:
    return ApiKey(
        name=row.name,
        scope=Scope(row.scope),
        lookup_id=row.lookup_id,
        secret_hash=row.secret_hash,
        created_at=int(row.created_at),
        revoked_at=None if row.revoked_at is None else int(row.revoked_at),
        policy=ALL_MODELS if row.policy is None else AccessPolicy.model_validate(row.policy),
        revision=int(row.revision),
        rate_limit=row.rate_limit,
    )


@dataclass(frozen=True)
class _Table:
    """How one kind of entity (catalog/kinds.py) is stored."""

    kind: Kind[Any]
    table: Table
    columns: tuple[Any, ...]  # what a read selects
    from_row: Callable[[Any], Any]
    to_row: Callable[[Any], dict[str, Any]]
    written: Callable[[Connection, str, str], None] | None = None  # (conn, key, op), in the same transaction

    @property
    def key_column(self) -> Any:
        return self.table.c[self.kind.key_field]

    # Statements built once and executed with parameters: building one per call (and its cache key) was
    # 40 % of applying a 25,000-model catalog file (cProfile).
    @functools.cached_property
    def select_by_key(self) -> Any:
        return select(*self.columns).where(self.key_column == bindparam("key"))

    @functools.cached_property
    def insert_row(self) -> Any:
        return insert(self.table)

    @functools.cached_property
    def update_by_key(self) -> Any:  # the new column values, and the row's key as `match_key`
        return update(self.table).where(self.key_column == bindparam("match_key"))

    @functools.cached_property
    def delete_by_key(self) -> Any:
        return delete(self.table).where(self.key_column == bindparam("key"))


# `meta` as the stored JSON text, where the driver leaves it so (SQLite): most rows hold 'null', and
# decoding 100,000 of those is 0.1 s of a full load (measured).
_MODEL_COLUMNS = (models.c.id, models.c.created, models.c.owned_by,
                  type_coerce(models.c.meta, Text).label("meta"), models.c.source, models.c.stale_since,
                  models.c.revision)

_TABLES: dict[type[Entity], _Table] = {
    Model: _Table(kind_of(Model), models, _MODEL_COLUMNS, _model_from_row, _model_to_row),
    Alias: _Table(kind_of(Alias), aliases, (aliases,), _alias_from_row, lambda a: a.model_dump()),
    Group: _Table(kind_of(Group), groups, (groups,), _group_from_row,
                  lambda g: {"name": g.name, "members": list(g.members), "description": g.description}),
    Upstream: _Table(kind_of(Upstream), upstreams, (upstreams,), _upstream_from_row, _upstream_to_row,
                     _upstream_written),
    Issuer: _Table(kind_of(Issuer), issuers, (issuers,), _issuer_from_row, _issuer_to_row),
}
_BY_KIND_NAME = {table.kind.name: table for table in _TABLES.values()}
_INSERT_CHANGE = insert(changes)
_IN_CHUNK = 500  # ids per IN (...): well under SQLite's bound on query parameters
E = TypeVar("E", bound=Entity)


def _read_current(conn: Connection, entity: str, ids: set[str]) -> dict[str, Any]:
    """Each of `ids` mapped to its stored entity of kind `entity` (a kind's name, or "key"), or to None
    where none is stored."""
    from_row: Callable[[Any], Any]
    key_of: Callable[[Any], str]
    if entity == "key":
        columns, key_column, condition = (api_keys,), api_keys.c.name, api_keys.c.revoked_at.is_(None)
        from_row, key_of = _key_from_row, (lambda k: k.name)
    else:
        table = _BY_KIND_NAME[entity]
        columns, key_column, condition = table.columns, table.key_column, None
        from_row, key_of = table.from_row, table.kind.key_of
    current: dict[str, Any] = dict.fromkeys(ids)
    ordered = sorted(ids)
    for start in range(0, len(ordered), _IN_CHUNK):
        query = select(*columns).where(key_column.in_(ordered[start:start + _IN_CHUNK]))
        if condition is not None:
            query = query.where(condition)
        for row in conn.execute(query):
            found = from_row(row)
            current[key_of(found)] = found
    return current


# --- the write unit ----------------------------------------------------------------------------------


class SqlWriter:
    def __init__(self, conn: Connection, version: int, actor: str, dry_run: bool) -> None:
        self.conn = conn
        self.version = version
        self.actor = actor
        self.dry_run = dry_run
        self.changed = False
        # The rows of each kind this unit has read whole (`all`, `all_revisions`), by key, kept current by its
        # own writes: writers are serialized (the version row), and no other statement touches these tables,
        # so a later lookup or full read of that kind needs no query. Applying a catalog file reads every kind
        # first, then checked each entry with two lookups: 2 of the 4 statements it ran a model.
        self._read_whole: dict[type[Entity], dict[str, tuple[Any, int]]] = {}

    def _record(self, entity: str, key: str, op: str, before: dict[str, Any] | None,
                after: dict[str, Any] | None) -> None:
        self.changed = True
        self.conn.execute(_INSERT_CHANGE, {
            "version": self.version, "at": time.time(), "actor": self.actor, "entity": entity, "entity_id": key,
            "op": op, "before": before, "after": after,
        })
        table = _BY_KIND_NAME.get(entity)  # every committed change passes here
        if table is not None and table.written is not None:
            table.written(self.conn, key, op)

    def get_revision(self, entity_type: type[E], key: str) -> tuple[E, int] | None:
        if "\x00" in key:  # no entity has one (the domain refuses NUL), and PostgreSQL cannot even compare it
            return None
        known = self._read_whole.get(entity_type)
        if known is not None:
            return known.get(key)
        table = _TABLES[entity_type]
        row = self.conn.execute(table.select_by_key, {"key": key}).first()
        return None if row is None else (table.from_row(row), int(row.revision))

    def get(self, entity_type: type[E], key: str) -> E | None:
        found = self.get_revision(entity_type, key)
        return None if found is None else found[0]

    def all_revisions(self, entity_type: type[E]) -> list[tuple[E, int]]:
        known = self._read_whole.get(entity_type)
        if known is None:
            table = _TABLES[entity_type]
            rows = [(table.from_row(row), int(row.revision)) for row in self.conn.execute(select(*table.columns))]
            known = self._read_whole[entity_type] = {table.kind.key_of(entity): (entity, revision)
                                                     for entity, revision in rows}
        return list(known.values())

    def all(self, entity_type: type[E]) -> list[E]:
        return [entity for entity, _revision in self.all_revisions(entity_type)]

    def _remember(self, entity_type: type[Entity], key: str, found: tuple[Entity, int] | None) -> None:
        """Keep a kind read whole current after this unit's write of `key` (None: deleted)."""
        known = self._read_whole.get(entity_type)
        if known is not None:
            if found is None:
                known.pop(key, None)
            else:
                known[key] = found

    def create(self, entity: Entity) -> int:
        table = _TABLES[type(entity)]
        kind, key = table.kind.name, table.kind.key_of(entity)
        if self.get_revision(type(entity), key) is not None:
            raise AlreadyExists(kind, key)
        self.conn.execute(table.insert_row, {**table.to_row(entity), "revision": 1})
        self._remember(type(entity), key, (entity, 1))
        self._record(kind, key, "create", None, entity.document())
        return 1

    def _current(self, entity_type: type[E], key: str, if_match: int | None) -> tuple[E, int]:
        current = self.get_revision(entity_type, key)
        name = _TABLES[entity_type].kind.name
        if current is None:
            raise NotFound(name, key)
        if if_match is not None and if_match != current[1]:
            raise PreconditionFailed(name, key, if_match, current[1])
        return current

    def update(self, entity: Entity, if_match: int | None = None) -> int:
        table = _TABLES[type(entity)]
        key = table.kind.key_of(entity)
        before, revision = self._current(type(entity), key, if_match)
        if before == entity:
            return revision
        self.conn.execute(table.update_by_key, {**table.to_row(entity), "revision": revision + 1, "match_key": key})
        self._remember(type(entity), key, (entity, revision + 1))
        self._record(table.kind.name, key, "update", before.document(), entity.document())
        return revision + 1

    def delete(self, entity_type: type[Entity], key: str, if_match: int | None = None) -> None:
        table = _TABLES[entity_type]
        before, _revision = self._current(entity_type, key, if_match)
        self.conn.execute(table.delete_by_key, {"key": key})
        self._remember(entity_type, key, None)
        self._record(table.kind.name, key, "delete", before.document(), None)

    def get_key(self, name: str) -> ApiKey | None:
        row = self.conn.execute(
            select(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
        return None if row is None else _key_from_row(row)

    def insert_key(self, key: ApiKey) -> None:
        if self.get_key(key.name) is not None:
            raise AlreadyExists("key", key.name)
        self.conn.execute(insert(api_keys).values(
            name=key.name, scope=key.scope.value, lookup_id=key.lookup_id, secret_hash=key.secret_hash,
            created_at=key.created_at, revoked_at=key.revoked_at,
            policy=None if key.policy.all else key.policy.document(), revision=1, rate_limit=key.rate_limit,
        ))
        self._record("key", key.name, "create", None, key.document())

    def _active_key(self, name: str, if_match: int | None) -> ApiKey:
        key = self.get_key(name)
        if key is None:
            raise NotFound("key", name)
        if if_match is not None and if_match != key.revision:
            raise PreconditionFailed("key", name, if_match, key.revision)
        return key

    def update_key(self, name: str, scope: Scope | None, policy: AccessPolicy | None,
                   if_match: int | None = None, rate_limit: str | Unchanged | None = UNCHANGED) -> ApiKey:
        before = self._active_key(name, if_match)
        after = ApiKey(**{**_fields(before), "scope": scope or before.scope, "policy": policy or before.policy,
                          "rate_limit": before.rate_limit if rate_limit is UNCHANGED else rate_limit,
                          "revision": before.revision + 1})
        if (after.scope, after.policy, after.rate_limit) == (before.scope, before.policy, before.rate_limit):
            return before
        self.conn.execute(update(api_keys).where(api_keys.c.lookup_id == before.lookup_id).values(
            scope=after.scope.value, policy=None if after.policy.all else after.policy.document(),
            revision=after.revision, rate_limit=after.rate_limit,
        ))
        self._record("key", name, "update", before.document(), after.document())
        return after

    def revoke_key(self, name: str, if_match: int | None = None) -> None:
        before = self._active_key(name, if_match)
        self.conn.execute(update(api_keys).where(api_keys.c.lookup_id == before.lookup_id)
                          .values(revoked_at=int(time.time()), revision=before.revision + 1))
        self._record("key", name, "delete", before.document(), None)


def _fields(key: ApiKey) -> dict[str, Any]:
    return {name: getattr(key, name) for name in key.__dataclass_fields__}


# --- the store ---------------------------------------------------------------------------------------


def is_unavailable(exc: BaseException, dialect: str) -> bool:
    """Whether a database error means "not reachable now" rather than a bug or a bad schema."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    if dialect == "postgresql":
        return True  # psycopg's OperationalError is about the connection, never about SQL
    message = str(exc.orig).lower()
    return "locked" in message or "unable to open" in message or "disk i/o" in message


F = Callable[..., Any]


def _translated(method: F) -> F:
    """Database-unreachable errors leave the store as StoreUnavailable; everything else as it was."""

    @functools.wraps(method)
    def wrapper(self: SqlStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DBAPIError as exc:
            if is_unavailable(exc, self.engine.dialect.name):
                raise StoreUnavailable(f"the catalog database is unreachable: {exc.orig}") from None
            raise

    return wrapper


class SqlStore:
    """The catalog's repository (catalog/repository.py) and discovery's health store (discovery/health.py)
    on any SQLAlchemy database. Every write takes the version row first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(modeldex_write=True)
        self._notifies = engine.dialect.name == "postgresql"
        self._snapshot_reads: dict[str, Any] = {"isolation_level": "REPEATABLE READ"} if self._notifies else {}
        self.seeded_now = False  # set by open_store: this open created (seeded) the catalog

    @contextmanager
    def write(self, actor: str, dry_run: bool = False) -> Iterator[SqlWriter]:
        """One write unit. Taking the version row first serializes writers, so read-check-write inside
        a unit is safe; a unit that changed nothing (or a dry run) is rolled back and bumps nothing.
        On PostgreSQL the commit also notifies every listening replica."""
        try:
            with self._writer.connect() as conn:
                transaction = conn.begin()
                try:
                    conn.execute(update(catalog_state).values(version=catalog_state.c.version + 1))
                    version = int(conn.execute(select(catalog_state.c.version)).scalar_one())
                    writer = SqlWriter(conn, version, actor, dry_run)
                    yield writer
                    if writer.changed and not dry_run:
                        if self._notifies:
                            conn.execute(text("SELECT pg_notify(:channel, :version)"),
                                         {"channel": NOTIFY_CHANNEL, "version": str(version)})
                        transaction.commit()
                    else:
                        transaction.rollback()
                except BaseException:
                    if transaction.is_active:
                        transaction.rollback()
                    raise
        except DBAPIError as exc:
            if is_unavailable(exc, self.engine.dialect.name):
                raise StoreUnavailable(f"the catalog database is unreachable: {exc.orig}") from None
            raise

    @_translated
    def current_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(catalog_state.c.version)).scalar_one())

    def _snapshot(self) -> Any:
        """A read transaction in which every query sees the same committed catalog version."""
        return self.engine.connect().execution_options(**self._snapshot_reads)

    @_translated
    def load_state(self) -> CatalogState:
        with self._snapshot() as conn, conn.begin():
            version = int(conn.execute(select(catalog_state.c.version)).scalar_one())
            model_rows = conn.execute(select(*_MODEL_COLUMNS)).all()
            alias_rows = conn.execute(select(aliases)).all()
            group_rows = conn.execute(select(groups)).all()
            key_rows = conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None))).all()
            upstream_rows = conn.execute(select(upstreams)).all()
            issuer_rows = conn.execute(select(issuers)).all()
        return CatalogState(
            version=version,
            models=tuple(sorted(map(_model_from_row, model_rows), key=list_order)),
            keys=tuple(sorted(map(_key_from_row, key_rows), key=lambda k: k.name)),
            aliases=tuple(sorted(map(_alias_from_row, alias_rows), key=lambda a: a.id)),
            groups=tuple(sorted(map(_group_from_row, group_rows), key=lambda g: g.name)),
            upstreams=tuple(sorted(map(_upstream_from_row, upstream_rows), key=lambda u: u.name)),
            issuers=tuple(sorted(map(_issuer_from_row, issuer_rows), key=lambda i: i.name)),
        )

    @_translated
    def load_delta(self, since: int, max_changes: int) -> CatalogDelta | None:
        """What changed after version `since`, read in one snapshot: the entities the change feed names,
        as stored now. None when the feed cannot vouch for the whole gap (more than `max_changes`
        entries, or a version without entries: trimmed, or bumped by something that wrote no feed)."""
        with self._snapshot() as conn, conn.begin():
            version = int(conn.execute(select(catalog_state.c.version)).scalar_one())
            if not since <= version <= since + max_changes:
                return None  # behind us (a restored database?) or too far ahead to be worth it
            feed = conn.execute(
                select(changes.c.version, changes.c.entity, changes.c.entity_id)
                .where(changes.c.version > since, changes.c.version <= version)
                .order_by(changes.c.seq).limit(max_changes + 1)).all()
            if len(feed) > max_changes or {row.version for row in feed} != set(range(since + 1, version + 1)):
                return None
            written: dict[str, set[str]] = {}
            for row in feed:
                written.setdefault(row.entity, set()).add(row.entity_id)
            if not written.keys() <= {*_BY_KIND_NAME, "key"}:
                return None  # an entity this code does not know: let a full load decide
            found = {entity: _read_current(conn, entity, ids) for entity, ids in written.items()}
        return CatalogDelta(since=since, version=version, models=found.get("model", {}),
                            aliases=found.get("alias", {}), groups=found.get("group", {}),
                            keys=found.get("key", {}), upstreams=found.get("upstream", {}),
                            issuers=found.get("issuer", {}))

    @_translated
    def seed_once(self, seed: list[Model]) -> bool:
        with self._writer.begin() as conn:
            claimed = conn.execute(
                update(catalog_state).where(catalog_state.c.seeded.is_(False)).values(seeded=True)
            ).rowcount
            if not claimed:
                return False
            version = conn.execute(update(catalog_state).values(version=catalog_state.c.version + 1)
                                   .returning(catalog_state.c.version)).scalar_one()
            writer = SqlWriter(conn, int(version), "seed", dry_run=False)
            for model in seed:
                writer.create(model)
            return True

    @_translated
    def get(self, entity_type: type[E], key: str) -> E | None:
        with self.engine.connect() as conn:
            return SqlWriter(conn, 0, "", True).get(entity_type, key)

    @_translated
    def get_revision(self, entity_type: type[E], key: str) -> tuple[E, int] | None:
        with self.engine.connect() as conn:
            return SqlWriter(conn, 0, "", True).get_revision(entity_type, key)

    @_translated
    def all(self, entity_type: type[E]) -> list[E]:
        with self.engine.connect() as conn:
            return SqlWriter(conn, 0, "", True).all(entity_type)

    @_translated
    def all_revisions(self, entity_type: type[E]) -> list[tuple[E, int]]:
        with self.engine.connect() as conn:
            return SqlWriter(conn, 0, "", True).all_revisions(entity_type)

    @_translated
    def count(self, entity_type: type[Entity]) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_TABLES[entity_type].table)).scalar_one())

    @_translated
    def compact(self, retention: Retention, now: float) -> Compacted:
        with self._writer.connect() as conn, conn.begin():
            if retention.versions is not None:
                version = int(conn.execute(select(catalog_state.c.version)).scalar_one())
                oldest_kept = version - retention.versions
                removed = conn.execute(delete(changes).where(changes.c.version <= oldest_kept)).rowcount
                # Revoked keys go with the changes that recorded their revocation.
                kept_since = conn.execute(select(func.min(changes.c.at))).scalar_one()
                before = float(kept_since) if kept_since is not None else now
            else:
                assert retention.max_age_s is not None
                before = now - retention.max_age_s
                # Whole versions, from the oldest up to the first that has an entry as young as `before`: an
                # entry's time is when it was written (a large unit's span seconds, and writers' clocks
                # differ), so removing by time alone left part of a version, or a hole below kept versions,
                # which readers of the feed (and servers catching up from it) took for the whole.
                first_kept = conn.execute(select(func.min(changes.c.version))
                                          .where(changes.c.at >= before)).scalar_one()
                removed = conn.execute(delete(changes).where(
                    changes.c.version < first_kept if first_kept is not None else changes.c.at < before)).rowcount
            revoked = conn.execute(delete(api_keys).where(api_keys.c.revoked_at.is_not(None),
                                                          api_keys.c.revoked_at < before)).rowcount
        return Compacted(changes=removed, revoked_keys=revoked)

    @_translated
    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.pk)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_key_from_row(row) for row in conn.execute(query)]

    @_translated
    def changes(self, since: int, limit: int) -> list[Change]:
        query = select(changes).where(changes.c.version > since).order_by(changes.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [_change_from_row(r) for r in conn.execute(query)]

    @_translated
    def history(self, limit: int, before: int | None = None, entity: str | None = None,
                entity_id: str | None = None) -> list[Change]:
        query = select(changes).order_by(changes.c.seq.desc()).limit(limit)
        if before is not None:
            query = query.where(changes.c.version < before)
        if entity is not None:
            query = query.where(changes.c.entity == entity)
        if entity_id is not None:
            query = query.where(changes.c.entity_id == entity_id)
        with self.engine.connect() as conn:
            return [_change_from_row(r) for r in conn.execute(query)]

    # --- upstream health and poll leases (outside the catalog: no version, no change feed) ---------------

    @_translated
    def upstream_health(self, now: float) -> dict[str, UpstreamHealth]:
        with self.engine.connect() as conn:
            return {row.name: _health_from_row(row, now) for row in conn.execute(select(upstream_health))}

    @_translated
    def due_upstreams(self, now: float) -> list[str]:
        """Upstreams due for a poll that nobody is polling: a cheap read, so idle pollers never write.
        Routing-only upstreams are never due (`sync-now` still polls them when asked)."""
        query = select(upstream_health.c.name).join(upstreams, upstreams.c.name == upstream_health.c.name).where(
            upstreams.c.routing_only.is_(False),
            (upstream_health.c.next_poll_at.is_(None)) | (upstream_health.c.next_poll_at <= now),
            (upstream_health.c.lease_until.is_(None)) | (upstream_health.c.lease_until < now),
        ).order_by(upstream_health.c.name)
        with self.engine.connect() as conn:
            return [row.name for row in conn.execute(query)]

    @_translated
    def claim_upstream(self, name: str, owner: str, now: float, lease_s: float, force: bool = False) -> bool:
        """Take the poll lease of `name` if nobody holds it (and, unless `force`, if it is due). One UPDATE
        whose WHERE the database re-checks under the row lock, so of several racing processes (workers,
        replicas) exactly one wins, on SQLite and PostgreSQL alike."""
        free = (upstream_health.c.lease_until.is_(None)) | (upstream_health.c.lease_until < now)
        due = (upstream_health.c.next_poll_at.is_(None)) | (upstream_health.c.next_poll_at <= now)
        query = update(upstream_health).where(upstream_health.c.name == name, free)
        if not force:
            query = query.where(due)
        # While polling, next_poll_at is the lease's end; an upstream edited meanwhile resets it to NULL.
        query = query.values(lease_owner=owner, lease_until=now + lease_s, next_poll_at=now + lease_s)
        with self._writer.begin() as conn:
            return bool(conn.execute(query).rowcount)

    @_translated
    def finish_upstream(self, name: str, owner: str, health: UpstreamHealth, next_poll_at: float,
                        credential: str | None = None) -> None:
        """Record how a poll went and give the lease back. If the upstream was edited during the poll,
        it stays due at once (its next_poll_at was reset to NULL)."""
        values: dict[str, Any] = {
            "last_attempt_at": health.last_attempt_at, "last_success_at": health.last_success_at,
            "last_error": health.last_error, "last_error_at": health.last_error_at,
            "latency_ms": health.latency_ms, "model_count": health.model_count,
            "failing_since": health.failing_since, "shadowed": list(health.shadowed),
            "next_poll_at": case((upstream_health.c.next_poll_at.is_(None), null()), else_=next_poll_at),
        }
        if credential is not None:
            values["credential"] = credential
        with self._writer.begin() as conn:
            history = conn.execute(select(upstream_health.c.latency_history)
                                   .where(upstream_health.c.name == name)).scalar_one_or_none() or []
            point = [health.last_attempt_at, health.latency_ms, health.failing_since is None]
            values["latency_history"] = [*history, point][-LATENCY_HISTORY:]
            conn.execute(update(upstream_health).where(upstream_health.c.name == name).values(**values))
            conn.execute(update(upstream_health)
                         .where(upstream_health.c.name == name, upstream_health.c.lease_owner == owner)
                         .values(lease_owner=None, lease_until=None))

    @_translated
    def upstream_credentials(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return {row.name: row.credential
                    for row in conn.execute(select(upstream_health.c.name, upstream_health.c.credential))}

    @_translated
    def poll_at_once(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            with self._writer.begin() as conn:
                conn.execute(update(upstream_health).where(upstream_health.c.name.in_(names)).values(next_poll_at=None))

    # --- web console sessions (console/sessions.py): outside the catalog, like health ------------------

    @_translated
    def create_session(self, record: dict[str, Any]) -> None:
        with self._writer.begin() as conn:
            conn.execute(insert(console_sessions).values(**record))

    @_translated
    def find_session(self, id_hash: str, now: float) -> dict[str, Any] | None:
        query = select(console_sessions).where(console_sessions.c.id_hash == id_hash,
                                               console_sessions.c.expires_at > now)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else dict(row._mapping)

    @_translated
    def end_session(self, id_hash: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(delete(console_sessions).where(console_sessions.c.id_hash == id_hash))

    @_translated
    def purge_sessions(self, now: float) -> int:
        with self._writer.begin() as conn:
            return int(conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now)).rowcount)

    def subscribe(self, on_change: Callable[[], None]) -> Callable[[], None]:
        if not self._notifies:
            return lambda: None
        listener = _Listener(self.engine.url, on_change)
        listener.start()
        return listener.stop

    def close(self) -> None:
        self.engine.dispose()


class _Listener:
    """LISTENs on its own connection in a thread; reconnects (and reports a change, to catch up on any
    notification it missed) whenever the connection was lost."""

    def __init__(self, url: Any, on_change: Callable[[], None]) -> None:
        import psycopg

        self._psycopg = psycopg
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_change = on_change
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modeldex-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._psycopg.connect(self._dsn, autocommit=True,
                                           connect_timeout=postgres_connect_timeout(DEFAULT_TIMEOUT_S)) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._on_change()  # anything committed while we were not listening
                    while not self._stopping.is_set():
                        for _notice in conn.notifies(timeout=0.5, stop_after=1):
                            self._on_change()
            except self._psycopg.Error as exc:
                log.debug("catalog listener lost its connection: %s", exc)
                self._stopping.wait(0.5)


def open_store(url: str, seed: list[Model] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
               create_dirs: bool = False) -> SqlStore:
    """Open the catalog at `url` (a new SQLite file is created), and add `seed` if it was never seeded
    (`store.seeded_now` then says so: a new catalog). No wait on the database lasts much longer than
    `timeout_s` (`create_store_engine`)."""
    engine = create_store_engine(url, timeout_s, create_dirs=create_dirs)
    try:
        migrate.ensure_schema(engine, create_if_empty=engine.dialect.name == "sqlite")
        store = SqlStore(engine)
        if seed is not None:
            store.seeded_now = store.seed_once(seed)
    except OperationalError as exc:
        engine.dispose()
        # SQLite's own words ("unable to open database file") do not say which file, nor that a folder is not one.
        where = f" {engine.url.database}" if engine.dialect.name == "sqlite" and engine.url.database else ""
        raise StoreUnavailable(f"cannot open the database{where}: {exc.orig}") from None
    except Exception:
        engine.dispose()
        raise
    return store
