"""Database engines and schema migrations.

SQLite (a file, WAL journal) by default; PostgreSQL for ``postgresql://``
URLs (driven by psycopg 3). The schema is owned by the Alembic migrations
shipped in ``agent/collector/migrations``; :func:`migrate` brings any
database to the newest revision."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from agent.errors import AgentError

HERE = Path(__file__).resolve().parent
PG_POOL_SIZE = 16  # connections kept per worker process
PG_MAX_OVERFLOW = 24  # opened for bursts, closed after: 40 = the worker's threadpool


def default_db_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir) / 'collector.db'}"


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` use psycopg 3 (the driver we ship)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def has_password(url: str) -> bool:
    try:
        return bool(make_url(normalize_url(url)).password)
    except ArgumentError:
        return False


def with_password(url: str, password_file: str | None = None, password: str | None = None) -> str:
    """``url`` with the password from a file or a value (environment) put in, for PostgreSQL.

    The password never has to be on the command line. Without either, libpq's own
    PGPASSWORD / PGPASSFILE (~/.pgpass) still apply to a URL without a password."""
    if password_file:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as e:
            raise AgentError(f"cannot read --db-password-file {password_file}: {e.strerror or e}") from e
        if not password:
            raise AgentError(f"--db-password-file {password_file} is empty")
    if not password:
        return url
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError as e:
        raise AgentError(f"invalid database URL {redact(url)}: use sqlite:///PATH or postgresql://...") from e
    if parsed.get_backend_name() != "postgresql":
        raise AgentError("a database password applies to postgresql:// URLs only")
    return parsed.set(password=password).render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise AgentError(f"invalid database URL {redact(url)}: use sqlite:///PATH or postgresql://...") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise AgentError(f"directory of the SQLite database {db} does not exist")
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            if db and db != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if backend == "postgresql":
        # Connections are kept for the concurrency a worker sees (its threadpool runs up to
        # 40 requests at once): a connection opened past pool_size is closed again on return,
        # and opening one (a PostgreSQL backend, SCRAM authentication) costs more CPU than
        # storing a document.
        return create_engine(url, pool_pre_ping=True, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW)
    raise AgentError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision (idempotent)."""
    from alembic import command

    try:
        command.upgrade(alembic_config(engine), "head")
    except SQLAlchemyError as e:
        raise AgentError(f"cannot migrate database {redact(str(engine.url))}: {e.__class__.__name__}: "
                         f"{str(e).splitlines()[0]}") from e


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_schema(engine: Engine) -> None:
    """Fail clearly when a database is not a collector database (for readers)."""
    try:
        names = set(inspect(engine).get_table_names())
    except SQLAlchemyError as e:
        raise AgentError(f"cannot open database {redact(str(engine.url))}: "
                         f"{str(e).splitlines()[0]}") from e
    if not {"nodes", "runs", "results"} <= names:
        raise AgentError(f"database {redact(str(engine.url))} is not a collector database "
                         "(no nodes/runs/results tables): start `agent collector serve --db` on it first")
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    current = current_revision(engine)
    if current != head:
        raise AgentError(f"database {redact(str(engine.url))} has schema revision {current or 'none'}, this agent "
                         f"reads {head}: `agent collector serve --db` of this version upgrades it when it starts")
