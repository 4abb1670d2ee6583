"""Go MySQL DSNs, parsed like go-sql-driver/mysql, and turned into real Airflow connections."""

from __future__ import annotations

import pytest

from cupid_airflow.config import redact_dsn
from cupid_airflow.dsn import DsnError, MySqlDsn, parse_go_dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "user:password@tcp(127.0.0.1:3306)/db?charset=utf8",
            MySqlDsn("user", "password", "127.0.0.1", 3306, None, "db", {"charset": "utf8"}),
        ),
        # The last '@' ends the credentials and the first ':' splits them: passwords keep '@', ':' and '/'.
        ("u:p@ss:w/rd@tcp(db:3307)/app", MySqlDsn("u", "p@ss:w/rd", "db", 3307, None, "app")),
        ("u:@tcp(db)/app", MySqlDsn("u", "", "db", 3306, None, "app")),
        ("u@tcp(db:1)/app", MySqlDsn("u", None, "db", 1, None, "app")),
        ("/app", MySqlDsn("", None, "127.0.0.1", 3306, None, "app")),
        ("tcp(db:1)/", MySqlDsn("", None, "db", 1, None, "")),
        ("u:p@/app", MySqlDsn("u", "p", "127.0.0.1", 3306, None, "app")),
        ("u:p@tcp/app", MySqlDsn("u", "p", "127.0.0.1", 3306, None, "app")),
        ("u:p@tcp([::1]:3310)/app", MySqlDsn("u", "p", "::1", 3310, None, "app")),
        ("u:p@tcp([fe80::1])/app", MySqlDsn("u", "p", "fe80::1", 3306, None, "app")),
        ("u:p@unix(/run/mysqld/mysqld.sock)/app", MySqlDsn("u", "p", None, None, "/run/mysqld/mysqld.sock", "app")),
        ("u:p@unix/app", MySqlDsn("u", "p", None, None, "/tmp/mysql.sock", "app")),
        ("u:p@tcp(h:1)/my%20db?loc=Asia%2FShanghai&parseTime=true",
         MySqlDsn("u", "p", "h", 1, None, "my db", {"loc": "Asia/Shanghai", "parseTime": "true"})),
    ],
)  # fmt: skip
def test_parse(dsn: str, expected: MySqlDsn) -> None:
    assert parse_go_dsn(dsn) == expected


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("user:password@tcp(127.0.0.1:3306)", "missing '/'"),
        ("", "missing '/'"),
        ("u:p@tcp(h:1/db", r"must end with '\)'"),
        ("u:p@tcp(h:port)/db", "port 'port' is not a number"),
        ("u:p@tcp(h:0)/db", "port '0' is not a number from 1 to 65535"),
        ("u:p@tcp(::1)/db", "write an IPv6 address in brackets"),
        ("u:p@udp(h)/db", "protocol 'udp' is not supported"),
        ("u:p@tcp(h)/db?autocommit", "parameter 'autocommit' has no '='"),
        ("u:p@tcp(h)/db?sql_mode=ANSI", "unsupported DSN parameter 'sql_mode'"),
    ],
)
def test_rejected(dsn: str, message: str) -> None:
    with pytest.raises(DsnError, match=message):
        parse_go_dsn(dsn)


def test_client_options() -> None:
    dsn = parse_go_dsn("u:p@tcp(h)/db?charset=utf8&timeout=1m30s&readTimeout=500ms&writeTimeout=2s&tls=skip-verify")
    assert dsn.client_options() == {
        "charset": "utf8mb4",  # utf8 is 3-byte utf8mb3 in MySQL: widened so emoji survive
        "connect_timeout": 90,
        "read_timeout": 1,
        "write_timeout": 2,
        "ssl_mode": "REQUIRED",
    }
    assert parse_go_dsn("u@tcp(h)/db?charset=latin1,utf8").client_options()["charset"] == "latin1"
    assert parse_go_dsn("u@unix(/s.sock)/db").client_options() == {"charset": "utf8mb4", "unix_socket": "/s.sock"}
    with pytest.raises(DsnError, match="expected a Go duration"):
        parse_go_dsn("u@tcp(h)/db?timeout=soon").client_options()
    with pytest.raises(DsnError, match="names a Go TLS config"):
        parse_go_dsn("u@tcp(h)/db?tls=custom").client_options()


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("u:p@ss:w/rd@tcp(db:3307)/app", "u:***@tcp(db:3307)/app"),
        ("u@tcp(db)/app", "u@tcp(db)/app"),
        ("/app", "/app"),
        ("u:pw@unix(/x/y.sock)/app?charset=utf8", "u:***@unix(/x/y.sock)/app?charset=utf8"),
    ],
)
def test_redact(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


def test_dsn_becomes_a_working_airflow_connection() -> None:
    """The in-memory connection reaches the real MariaDB server through MySqlHook."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    from cupid_airflow.hooks.connections import connection_from_dsn

    conn = connection_from_dsn("root:@tcp(127.0.0.1:3306)/mysql?charset=utf8&timeout=5s", "cupid_test_src")
    assert (conn.conn_type, conn.host, conn.port, conn.login, conn.schema) == (
        "mysql",
        "127.0.0.1",
        3306,
        "root",
        "mysql",
    )
    assert conn.extra_dejson == {"charset": "utf8mb4", "connect_timeout": 5}
    hook = MySqlHook(connection=conn)
    assert hook.get_first("SELECT DATABASE(), @@character_set_client") == ("mysql", "utf8mb4")


def test_dsn_password_is_masked_in_logs() -> None:
    from airflow.sdk._shared.secrets_masker import redact

    from cupid_airflow.hooks.connections import connection_from_dsn

    connection_from_dsn("cupid:Very-Secret-42@tcp(127.0.0.1:3306)/db", "cupid_test_mask")
    assert "Very-Secret-42" not in str(redact("connecting with Very-Secret-42"))


@pytest.mark.timeout(60)
def test_dsn_timeouts_reach_the_client_so_a_silent_server_fails_the_connect() -> None:
    """A server that accepts and never answers (a hung proxy, a half-open route): the DSN's
    timeout must bound the connect. providers-mysql passes no timeout to mysqlclient itself;
    CupidMySqlHook adds them, and this pins that the provider still builds its config the way the
    override expects."""
    import socket

    import MySQLdb

    from cupid_airflow.hooks.connections import connection_from_dsn
    from cupid_airflow.hooks.table import CupidMySqlHook

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        hook = CupidMySqlHook(connection=connection_from_dsn(f"root:@tcp(127.0.0.1:{port})/db?timeout=1s", "silent"))
        with pytest.raises(MySQLdb.OperationalError) as error:
            hook.get_conn()
    assert error.value.args[0] in (2013, 2002, 2003, 2006)  # lost / cannot connect: a retryable error
