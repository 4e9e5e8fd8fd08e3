"""The chDB proxy speaks enough ClickHouse HTTP for clickhouse-connect: real client, real chDB."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import clickhouse_connect
import pytest
import urllib3
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from libs.stack.chproxy import ThreadedProxyServer, _data_start, _first_word, connection_string
from libs.stack.clickhouse import migrate, open_client


@pytest.fixture(scope="module")
def proxy(clickhouse: Client, clickhouse_dsn: str) -> Iterator[ThreadedProxyServer]:
    if not clickhouse_dsn.startswith("chdb:"):
        pytest.skip("the proxy fronts chDB only")
    server = ThreadedProxyServer(clickhouse_dsn).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def db(proxy: ThreadedProxyServer, clickhouse: Client) -> Iterator[str]:
    name = f"px_{uuid.uuid4().hex[:10]}"
    clickhouse.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        clickhouse.command(f"DROP DATABASE IF EXISTS {name}")


def _client(proxy: ThreadedProxyServer, db: str, **kw: object) -> Client:
    port = int(proxy.dsn.rsplit(":", 1)[1])
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, database=db, compress=False, **kw)


def test_ping_and_dsn_client(proxy: ThreadedProxyServer) -> None:
    http = urllib3.PoolManager()
    assert http.request("GET", f"{proxy.dsn}/ping").data == b"Ok.\n"
    assert http.request("GET", f"{proxy.dsn}/").data == b"Ok.\n"
    client = open_client(proxy.dsn)  # the adapter's own path, as another process would use it
    assert client.command("SELECT 1") == 1
    assert client.ping()


def test_command_query_and_typed_results(proxy: ThreadedProxyServer, db: str, clickhouse: Client) -> None:
    client = _client(proxy, db)
    client.command(
        "CREATE TABLE t (id UInt32, at DateTime64(3, 'UTC'), amount Decimal(18, 4), "
        "note Nullable(String), kind LowCardinality(String)) ENGINE = MergeTree ORDER BY id"
    )
    at = datetime(2024, 3, 1, 8, 30, 15, 123000, tzinfo=UTC)
    client.insert(
        "t",
        [
            [1, at, Decimal("12.3456"), None, "peak"],
            [2, at + timedelta(days=1), Decimal("-1.5"), "x", "flat"],
        ],
        column_names=["id", "at", "amount", "note", "kind"],
    )
    rows = client.query("SELECT id, at, amount, note, kind FROM t ORDER BY id").result_rows
    naive = at.replace(tzinfo=None)  # clickhouse-connect's rendering of a UTC column on a UTC server
    assert rows == [
        (1, naive, Decimal("12.3456"), None, "peak"),
        (2, naive + timedelta(days=1), Decimal("-1.5000"), "x", "flat"),
    ]
    direct = clickhouse.query(f"SELECT id, at, amount, note, kind FROM {db}.t ORDER BY id").result_rows
    assert rows == direct  # the same answer as the in-process client
    assert client.command("SELECT count() FROM t") == 2
    assert client.command("SELECT id, kind FROM t WHERE id = 2") == ["2", "flat"]
    assert client.command("SELECT id FROM t WHERE id = 99") == ""  # a result set with no rows
    summary = client.command("ALTER TABLE t DELETE WHERE id = 99")
    assert not isinstance(summary, str | int | list)  # a QuerySummary, as from a server
    result = client.query("SELECT count() AS n FROM t")
    assert result.column_names == ("n",) and result.first_row == (2,)
    assert result.summary["query_id"]


def test_insert_thousands_of_rows_and_bound_parameters(proxy: ThreadedProxyServer, db: str) -> None:
    client = _client(proxy, db)
    client.command(
        "CREATE TABLE r (meter String, at DateTime64(3, 'UTC'), v Float64) ENGINE = MergeTree ORDER BY (meter, at)"
    )
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [[f"m{i % 50}", base + timedelta(minutes=i), i * 0.5] for i in range(5000)]
    summary = client.insert("r", rows, column_names=["meter", "at", "v"])
    assert summary.written_rows == 5000
    got = client.query(
        "SELECT count(), sum(v) FROM r WHERE meter = {m:String} AND at >= {t:DateTime64(3, 'UTC')}",
        parameters={"m": "m7", "t": base + timedelta(minutes=100)},
    ).first_row
    expected = [r for r in rows if r[0] == "m7" and r[1] >= base + timedelta(minutes=100)]
    assert got == (len(expected), sum(r[2] for r in expected))
    # client-side binding (%s style) and a string needing escapes
    assert client.query("SELECT %(s)s", parameters={"s": "it's \\ \t ok"}).first_row == ("it's \\ \t ok",)


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip"])
def test_compressed_client_and_form_encoded_parameters(
    proxy: ThreadedProxyServer, db: str, compress: str
) -> None:
    port = int(proxy.dsn.rsplit(":", 1)[1])
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=port, database=db, compress=compress, form_encode_query_params=True
    )
    client.command("CREATE TABLE c (k UInt64, s String) ENGINE = MergeTree ORDER BY k")
    client.insert("c", [[i, f"s{i}"] for i in range(3000)], column_names=["k", "s"])  # compressed body
    assert client.query("SELECT count() FROM c WHERE k < {n:UInt64}", parameters={"n": 1000}).first_row == (
        1000,
    )


def test_errors_are_typed_on_the_client(proxy: ThreadedProxyServer, db: str) -> None:
    client = _client(proxy, db)
    with pytest.raises(DatabaseError) as unknown:
        client.query("SELECT * FROM no_such_table")
    assert unknown.value.code == 60 and "UNKNOWN_TABLE" in str(unknown.value)
    with pytest.raises(DatabaseError) as syntax:
        client.command("SELEC 1")
    assert syntax.value.code == 62
    http = urllib3.PoolManager()
    response = http.request("POST", f"{proxy.dsn}/?database={db}", body=b"SELECT * FROM nope")
    assert response.status == 404
    assert response.headers["X-ClickHouse-Exception-Code"] == "60"
    assert response.data.startswith(b"Code: 60. DB::Exception:")
    assert client.command("SELECT 1") == 1  # the pooled connection survived the errors


def test_sessions_keep_settings_and_refuse_concurrency(proxy: ThreadedProxyServer, db: str) -> None:
    client = _client(proxy, db, session_id=f"s-{uuid.uuid4().hex}")
    client.command("SET max_threads = 3")
    assert client.command("SELECT getSetting('max_threads')") == 3
    other = _client(proxy, db)  # its own session: untouched
    assert other.command("SELECT getSetting('max_threads')") != 3
    http = urllib3.PoolManager()
    answer = http.request("POST", f"{proxy.dsn}/?max_threads=5", body=b"SELECT getSetting('max_threads')")
    assert answer.data == b"5\n"  # a URL setting applies to its request only
    answer = http.request("POST", f"{proxy.dsn}/", body=b"SELECT getSetting('max_threads')")
    assert answer.data != b"5\n"
    session = urlencode({"session_id": "busy"})
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(http.request, "POST", f"{proxy.dsn}/?{session}", body=b"SELECT sleep(0.5)")
        time.sleep(0.2)
        busy = http.request("POST", f"{proxy.dsn}/?{session}", body=b"SELECT 1")
        assert slow.result().status == 200
    assert busy.status == 500 and busy.headers["X-ClickHouse-Exception-Code"] == "373"


def test_raw_formats_default_format_and_inline_insert(proxy: ThreadedProxyServer, db: str) -> None:
    http = urllib3.PoolManager()

    def post(sql: str | bytes, **params: str) -> urllib3.BaseHTTPResponse:
        return http.request("POST", f"{proxy.dsn}/?{urlencode(params)}", body=sql)

    assert post(f"CREATE TABLE {db}.f (a UInt8, b String) ENGINE = Memory").status == 200
    r = post(b"1,x\n2,y\n", query=f"INSERT INTO {db}.f FORMAT CSV")
    assert r.status == 200, r.data
    r = post(f"SELECT * FROM {db}.f ORDER BY a", default_format="JSONEachRow")
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert r.data == b'{"a":1,"b":"x"}\n{"a":2,"b":"y"}\n'
    r = post(f"SELECT count() FROM {db}.f FORMAT CSV")
    assert (r.headers["X-ClickHouse-Format"], r.data) == ("CSV", b"2\n")
    client = _client(proxy, db)
    assert client.raw_query("SELECT a FROM f ORDER BY a", fmt="TSV") == b"1\n2\n"


def test_helpers() -> None:
    assert _first_word(b"  -- c\n/* x */ select 1") == "SELECT"
    assert _first_word(b"(SELECT 1)") == "("
    assert _data_start(b"FORMAT Native \n\n\x0a", 13) == 15  # one newline only: data may start with \n
    assert connection_string("chdb:///tmp/../tmp/x") == "/tmp/x"
    assert connection_string("chdb://memory") == ":memory:"


def test_migrations_apply_through_the_proxy(proxy: ThreadedProxyServer, db: str) -> None:
    client = _client(proxy, db)
    applied = migrate(client)
    assert applied and not migrate(client)
