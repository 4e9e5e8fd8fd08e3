"""A ClickHouse-compatible HTTP endpoint over this process's chDB store.

chDB lets one process own a data directory. In the embedded stack that is the ``meterflow dev``
process; every other process reaches the same store with the same code it uses against a
ClickHouse server: ``clickhouse_connect.get_client(dsn="http://127.0.0.1:PORT")``.

What is implemented — the part of the ClickHouse HTTP interface clickhouse-connect uses:

- ``GET|POST /`` with the SQL in the ``query`` parameter, the body, or both (``query`` + newline
  + body, as ClickHouse concatenates them); ``multipart/form-data`` with ``query`` and
  ``param_*`` fields (clickhouse-connect's form encoding); ``GET /`` without a query and
  ``/ping`` answer ``Ok.\\n``.
- ``database``, ``default_format`` (or a trailing ``FORMAT`` clause), ``param_<name>`` bound
  parameters, any other parameter as a ClickHouse setting of that query, ``query_id`` echoed.
- ``session_id``: honoured — one chDB connection per session, so ``SET`` and ``USE`` persist
  within it, expiring after ``session_timeout`` seconds idle (default 60); a concurrent query
  on a busy session fails with SESSION_IS_LOCKED (373) as on a server. Without a session a
  pooled connection runs the query; its settings are the request's only.
- ``INSERT INTO t [(cols)] [SETTINGS …] FORMAT <fmt>`` followed by data (Native from
  clickhouse-connect, or any input format): the data goes to a temporary file ingested with
  ``INSERT … FROM INFILE`` — what clickhouse-connect's own chdb backend does.
- Request bodies with ``Content-Encoding`` lz4 / zstd / gzip / deflate are decompressed;
  responses are never compressed (``enable_http_compression`` is accepted and ignored; the
  client reads uncompressed answers whatever it asked for).
- Response headers ``X-ClickHouse-Format`` (for statements that return a result set),
  ``X-ClickHouse-Summary``, ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Timezone``; errors answer
  with ``X-ClickHouse-Exception-Code``, the ``Code: N. DB::Exception: …`` text in the body,
  and status 400 (parse errors), 404 (unknown table/column/database/function) or 500 (the rest)
  as ClickHouse maps them.

Not implemented: authentication (bind to loopback only; credentials are ignored), external data
(temporary tables in the form), streaming of results (each answer is materialised; analysts'
queries aggregate), progress headers, and response compression.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import gzip
import logging
import os
import re
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import chdb
import orjson
from clickhouse_connect.driver._chdbclient import build_connection_string
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from libs.stack.runtime import HttpServer

log = logging.getLogger(__name__)

# Parameters of the HTTP transport, never applied as settings.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "role",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "http_zlib_compression_level",
        "cancel_http_readonly_queries_on_client_close",
    }
)

# Statements whose answer is a result set (X-ClickHouse-Format is sent, even with zero rows).
_RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "("}
)
# Statements that change connection state: run on a pooled connection, the connection is retired.
_STATE_KEYWORDS = frozenset({"SET", "USE"})

_LEADING = re.compile(rb"^(?:\s+|--[^\n]*\n|/\*.*?\*/)*", re.DOTALL)
_FIRST_WORD = re.compile(rb"\(|[A-Za-z]+")
_INSERT_FORMAT = re.compile(
    rb"^(?P<head>\s*INSERT\s+INTO\s+(?P<target>.+?))\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)",
    re.IGNORECASE | re.DOTALL,
)
_SETTINGS_SPLIT = re.compile(rb"\s+SETTINGS\s+", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code:\s*(\d+)")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ClickHouse's HTTP status per exception code (HTTPHandler's exceptionCodeToHTTPStatus), abridged.
_BAD_REQUEST = frozenset({6, 25, 26, 27, 32, 33, 34, 36, 38, 41, 42, 43, 44, 53, 62, 69, 70, 72, 130, 131})
_NOT_FOUND = frozenset({16, 46, 47, 60, 73, 81, 115})

_CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}


class ProxyError(Exception):
    """A request the proxy refuses before it reaches chDB; carries a ClickHouse error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def connection_string(target: str) -> str:
    """chDB connection string for a ``chdb://…`` DSN or a plain path (same normalisation as
    clickhouse-connect, since chDB compares engine paths literally)."""
    if target.startswith("chdb://"):
        rest = target[len("chdb://") :]
        path = rest if rest.startswith("/") else (":memory:" if rest.split("/")[0] == "memory" else rest)
        return build_connection_string(path, None)
    return build_connection_string(target, None)


@dataclass
class _Conn:
    """One chDB connection handle and the state the proxy applied to it."""

    conn: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    database: str | None = None  # None = unknown (after a USE inside SQL)
    applied: dict[str, str] = field(default_factory=dict)  # settings applied from request params
    last_used: float = field(default_factory=time.monotonic)
    timeout: float = 60.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@dataclass
class Answer:
    """What one request produced: status, body and headers."""

    status: int
    body: bytes
    headers: dict[str, str]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_word(sql: bytes) -> str:
    rest = sql[_LEADING.match(sql).end() :]  # type: ignore[union-attr]  # the pattern matches empty
    match = _FIRST_WORD.match(rest)
    return match.group(0).decode().upper() if match else ""


def _data_start(sql: bytes, pos: int) -> int:
    """Where inline data begins after ``FORMAT name``: past spaces, then one optional newline
    (ClickHouse's ParserInsertQuery rule; binary data may itself begin with whitespace bytes)."""
    while pos < len(sql) and sql[pos] in b" \t\f":
        pos += 1
    if pos < len(sql) and sql[pos] == 0x0D:
        pos += 1
    if pos < len(sql) and sql[pos] == 0x0A:
        pos += 1
    return pos


def _decompress(body: bytes, encoding: str) -> bytes:
    """A request body sent with ``Content-Encoding`` (what clickhouse-connect may compress with)."""
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    if encoding == "zstd":
        try:
            from compression import zstd  # Python 3.14+
        except ImportError:
            from backports import zstd
        return bytes(zstd.decompress(body))
    raise ProxyError(1001, f"unsupported Content-Encoding {encoding!r}")


def _parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a multipart/form-data body; file parts (external data) are refused."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise ProxyError(48, "external data is not supported by the chDB proxy")
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload.decode() if isinstance(payload, bytes) else ""
    return fields


def _error_answer(exc: Exception, query_id: str, version: str) -> Answer:
    if isinstance(exc, ProxyError):
        code, text = exc.code, f"Code: {exc.code}. DB::Exception: {exc}"
    else:
        text = str(exc).strip()
        idx = text.find("Code: ")
        text = text[idx:] if idx > 0 else text
        match = _CODE.search(text)
        code = int(match.group(1)) if match else 1001
        if not match:
            text = f"Code: 1001. DB::Exception: {text} (STD_EXCEPTION)"
    status = 400 if code in _BAD_REQUEST else 404 if code in _NOT_FOUND else 500
    body = f"{text} (version {version})\n".encode()
    return Answer(
        status,
        body,
        {
            "X-ClickHouse-Exception-Code": str(code),
            "X-ClickHouse-Query-Id": query_id,
            "Content-Type": "text/plain; charset=UTF-8",
        },
    )


class ChProxy:
    """Executes ClickHouse HTTP requests on chDB connections to one engine path."""

    def __init__(self, target: str, *, pool_size: int = 8, session_timeout: float = 60.0) -> None:
        self.connection_string = connection_string(target)
        self.pool_size = pool_size
        self.session_timeout = session_timeout
        self._idle: list[_Conn] = []
        self._sessions: dict[str, _Conn] = {}
        self._guard = threading.Lock()
        self._closed = False
        probe = self._open()
        try:
            out = probe.conn.query("SELECT version(), timezone()", "TabSeparated").bytes().decode()
            self.version, self.timezone = out.strip().split("\t")
        finally:
            self._idle.append(probe)
        self.requests = 0
        self.errors = 0

    # ---- connections -------------------------------------------------

    def _open(self) -> _Conn:
        return _Conn(chdb.connect(self.connection_string))

    def _acquire(self, session_id: str | None, timeout: float) -> tuple[_Conn, bool]:
        """A connection for the request, locked; (conn, pooled)."""
        now = time.monotonic()
        with self._guard:
            if self._closed:
                raise ProxyError(1001, "the chDB proxy is closed")
            for sid, held in list(self._sessions.items()):
                if now - held.last_used > held.timeout and not held.lock.locked():
                    del self._sessions[sid]
                    held.close()
            if session_id:
                session = self._sessions.get(session_id)
                if session is None:
                    session = self._sessions[session_id] = self._open()
                session.timeout = timeout
                if not session.lock.acquire(blocking=False):
                    raise ProxyError(
                        373, f"Session {session_id} is locked by a concurrent client. (SESSION_IS_LOCKED)"
                    )
                return session, False
            conn = self._idle.pop() if self._idle else self._open()
        conn.lock.acquire()
        return conn, True

    def _release(self, conn: _Conn, pooled: bool, keep: bool) -> None:
        conn.last_used = time.monotonic()
        conn.lock.release()
        if not pooled:
            return
        with self._guard:
            if keep and not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every connection the proxy holds (the engine stays open for its other users)."""
        with self._guard:
            self._closed = True
            conns = self._idle + list(self._sessions.values())
            self._idle, self._sessions = [], {}
        for conn in conns:
            conn.close()

    @property
    def sessions(self) -> int:
        """Number of live sessions."""
        return len(self._sessions)

    # ---- execution ---------------------------------------------------

    def execute(self, params: Mapping[str, str], body: bytes, *, is_get: bool = False) -> Answer:
        """Run one request: ``params`` are the URL (and form) parameters, ``body`` the request body."""
        self.requests += 1
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            return self._execute(params, body, query_id, is_get)
        except Exception as exc:
            self.errors += 1
            return _error_answer(exc, query_id, self.version)

    def _execute(self, params: Mapping[str, str], body: bytes, query_id: str, is_get: bool) -> Answer:
        query = params.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        if not sql.strip():
            raise ProxyError(62, "Empty query. (SYNTAX_ERROR)")
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        for name in settings:
            if not _SETTING_NAME.match(name):
                raise ProxyError(115, f"Unknown setting {name!r}. (UNKNOWN_SETTING)")
        word = _first_word(sql)
        if is_get and word not in _RESULT_KEYWORDS:
            raise ProxyError(164, "Cannot execute query in readonly mode: use POST. (READONLY)")
        session_id = params.get("session_id") or None
        timeout = float(params.get("session_timeout") or self.session_timeout)
        conn, pooled = self._acquire(session_id, timeout)
        keep = True
        try:
            try:
                self._prepare(conn, params.get("database") or ("default" if pooled else None), settings)
            except Exception:
                keep = False
                raise
            insert = _INSERT_FORMAT.match(sql) if word == "INSERT" else None
            if insert is not None:
                return self._insert(conn, sql, insert, query_id)
            if word in _STATE_KEYWORDS:
                keep = False  # a pooled connection must not carry SET/USE into other requests
                if word == "USE":
                    conn.database = None
            fmt_match = _TRAILING_FORMAT.search(sql)
            fmt = fmt_match.group(1).decode() if fmt_match else params.get("default_format") or "TabSeparated"
            started = time.perf_counter_ns()
            result = conn.conn.query(sql, fmt, params=binds)
            out = result.bytes() or b""
            headers = self._headers(query_id, result, started, written=False, result_bytes=len(out))
            if out or word in _RESULT_KEYWORDS:
                headers["X-ClickHouse-Format"] = fmt
                headers["Content-Type"] = _CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8")
            return Answer(200, out, headers)
        finally:
            self._release(conn, pooled, keep)

    def _prepare(self, conn: _Conn, database: str | None, settings: dict[str, str]) -> None:
        """Bring the connection to the request's database and settings (only what differs)."""
        if database and database != conn.database:
            conn.conn.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
            conn.database = database
        for name, value in settings.items():
            if conn.applied.get(name) != value:
                conn.conn.query(f"SET {name} = {_quote(value)}", "TabSeparated")
                conn.applied[name] = value
        for name in [n for n in conn.applied if n not in settings]:
            conn.conn.query(f"SET {name} = DEFAULT", "TabSeparated")
            del conn.applied[name]

    def _insert(self, conn: _Conn, sql: bytes, match: re.Match[bytes], query_id: str) -> Answer:
        data = sql[_data_start(sql, match.end()) :]
        target, *rest = _SETTINGS_SPLIT.split(match.group("target"), maxsplit=1)
        clause = b" SETTINGS " + rest[0] if rest else b""
        fmt = match.group("fmt").decode()
        started = time.perf_counter_ns()
        if not data:
            return Answer(200, b"", self._headers(query_id, None, started, written=True, result_bytes=0))
        fd, path = tempfile.mkstemp(suffix=".chproxy")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            statement = (
                b"INSERT INTO "
                + target
                + b" FROM INFILE "
                + _quote(path).encode()
                + clause
                + b" FORMAT "
                + fmt.encode()
            )
            result = conn.conn.query(statement, "TabSeparated")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return Answer(200, b"", self._headers(query_id, result, started, written=True, result_bytes=0))

    def _headers(
        self, query_id: str, result: Any, started: int, *, written: bool, result_bytes: int
    ) -> dict[str, str]:
        rows = int(result.rows_read()) if result is not None else 0
        size = int(result.bytes_read()) if result is not None else 0
        summary = {
            "read_rows": str(rows),
            "read_bytes": str(size),
            "written_rows": str(rows if written else 0),
            "written_bytes": str(size if written else 0),
            "total_rows_to_read": "0",
            "result_rows": str(0 if written else rows),
            "result_bytes": str(result_bytes),
            "elapsed_ns": str(time.perf_counter_ns() - started),
        }
        return {
            "X-ClickHouse-Summary": orjson.dumps(summary).decode(),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Server-Display-Name": "meterflow-chproxy",
        }


def build_app(proxy: ChProxy) -> FastAPI:
    """The HTTP face of ``proxy``: ``/``, ``/ping`` and ``/replicas_status``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ping")
    @app.get("/replicas_status")
    async def ping() -> Response:
        return Response(b"Ok.\n", media_type="text/plain; charset=UTF-8")

    @app.api_route("/", methods=["GET", "POST"])
    async def root(request: Request) -> Response:
        params = dict(request.query_params)
        body = await request.body()
        encoding = request.headers.get("content-encoding")
        content_type = request.headers.get("content-type", "")
        try:
            if body and encoding and encoding != "identity":
                body = _decompress(body, encoding)
            if content_type.startswith("multipart/form-data"):
                params.update(_parse_form(content_type, body))
                body = b""
        except Exception as exc:
            answer = _error_answer(
                exc
                if isinstance(exc, ProxyError)
                else ProxyError(1001, f"cannot read the request body: {exc}"),
                params.get("query_id", ""),
                proxy.version,
            )
            return Response(answer.body, answer.status, answer.headers)
        if request.method == "GET" and not params.get("query") and not body:
            return Response(b"Ok.\n", media_type="text/plain; charset=UTF-8")
        answer = await run_in_threadpool(proxy.execute, params, body, is_get=request.method == "GET")
        return Response(answer.body, answer.status, answer.headers)

    return app


class ProxyServer:
    """The proxy served on host:port inside the running event loop (port 0 = a free port)."""

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.proxy = ChProxy(target)
        self.http = HttpServer(build_app(self.proxy), host, port)
        self.host = host

    async def start(self) -> None:
        """Start serving; raises OSError when the port is taken."""
        await self.http.start()

    @property
    def port(self) -> int:
        """The port actually bound."""
        servers = self.http.server.servers
        return int(servers[0].sockets[0].getsockname()[1])

    @property
    def dsn(self) -> str:
        """What other processes pass to ``open_client``."""
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving and close the proxy's connections."""
        await self.http.stop()
        await asyncio.to_thread(self.proxy.close)


class ThreadedProxyServer:
    """The proxy on its own thread and event loop (for synchronous callers and tests)."""

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = ProxyServer(target, host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chproxy", daemon=True)

    def start(self) -> ThreadedProxyServer:
        """Start serving; returns self once the port is bound."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    @property
    def dsn(self) -> str:
        """``http://host:port`` of the running proxy."""
        return self.server.dsn

    def stop(self) -> None:
        """Stop serving, then stop and close the thread's loop."""
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
