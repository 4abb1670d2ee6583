"""Go MySQL DSNs (``user:pass@tcp(host:port)/db?charset=utf8``), parsed the way go-sql-driver/mysql does.

cupid-go configs carry these DSNs; we keep accepting them so a config moves over unchanged,
and turn them into Airflow connection fields (see :mod:`cupid_airflow.connections`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["DsnError", "MySqlDsn", "parse_go_dsn", "qualified_table"]

#: Go-driver options that only steer the Go client; they have no meaning for a Python client.
_GO_ONLY_PARAMS = frozenset(
    {
        "parseTime",
        "loc",
        "allowNativePasswords",
        "allowCleartextPasswords",
        "allowOldPasswords",
        "allowAllFiles",
        "interpolateParams",
        "clientFoundRows",
        "columnsWithAlias",
        "multiStatements",
        "maxAllowedPacket",
        "rejectReadOnly",
        "checkConnLiveness",
        "serverPubKey",
        "strict",
    }
)
#: Options we carry over to the Python client.
_MAPPED_PARAMS = frozenset({"charset", "collation", "timeout", "readTimeout", "writeTimeout", "tls"})

#: Go's tls= values and the ssl_mode that means the same to the MySQL C client.
_TLS_MODES = {"true": "VERIFY_IDENTITY", "skip-verify": "REQUIRED", "preferred": "PREFERRED"}

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class DsnError(ValueError):
    """A DSN that go-sql-driver/mysql would reject too, or an option we cannot honour."""


@dataclass(frozen=True, slots=True)
class MySqlDsn:
    """The parts of a Go MySQL DSN. ``host``/``port`` are set for TCP, ``unix_socket`` for sockets."""

    user: str = ""
    password: str | None = None
    host: str | None = "127.0.0.1"
    port: int | None = 3306
    unix_socket: str | None = None
    database: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def client_options(self) -> dict[str, str | int | float | dict[str, str]]:
        """Connection extras for MySqlHook, from the DSN's parameters."""
        options: dict[str, str | int | float | dict[str, str]] = {}
        charset = self.params.get("charset", "utf8mb4").split(",")[0]
        # utf8 is MySQL's 3-byte utf8mb3: it cannot carry emoji, and utf8mb4 is a strict superset.
        options["charset"] = "utf8mb4" if charset.lower() in ("utf8", "utf-8", "utf8mb3") else charset
        if "collation" in self.params:
            options["collation"] = self.params["collation"]
        for go_name, ours in (
            ("timeout", "connect_timeout"),
            ("readTimeout", "read_timeout"),
            ("writeTimeout", "write_timeout"),
        ):
            if go_name in self.params:
                options[ours] = max(1, round(_parse_go_duration(go_name, self.params[go_name])))
        tls = self.params.get("tls", "false").lower()
        if tls in _TLS_MODES:
            options["ssl_mode"] = _TLS_MODES[tls]
        elif tls != "false":
            raise DsnError(
                f"tls={self.params['tls']!r} names a Go TLS config, which only exists inside a Go program; "
                "use an Airflow connection (connId) with ssl extras instead"
            )
        if self.unix_socket:
            options["unix_socket"] = self.unix_socket
        return options


def _parse_go_duration(name: str, text: str) -> float:
    """``5s``, ``1m30s``, ``500ms`` (Go's time.ParseDuration, without the sign)."""
    rest, total = text.strip(), 0.0
    if not rest:
        raise DsnError(f"{name}: empty duration; expected a Go duration such as '5s' or '500ms'")
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        number, rest = rest[:i], rest[i:]
        unit = next((u for u in sorted(_DURATION_UNITS, key=len, reverse=True) if rest.startswith(u)), None)
        if not number or unit is None:
            raise DsnError(f"{name}={text!r}: expected a Go duration such as '5s', '1m30s' or '500ms'")
        total += float(number) * _DURATION_UNITS[unit]
        rest = rest[len(unit) :]
    return total


def qualified_table(database: str | None, table: str) -> str:
    """``<database>.<table>``, as the DAG tags and OpenLineage name a table; a table already
    qualified (``schema.table``), or one without a database, stays as it is."""
    return table if "." in table or not database else f"{database}.{table}"


def parse_go_dsn(dsn: str) -> MySqlDsn:
    """Parse ``[user[:password]@][net[(addr)]]/dbname[?param=value&...]``.

    Like the Go driver, the *last* ``/`` starts the database name and the *last* ``@`` before it
    ends the credentials, so passwords may contain ``@``, ``:`` and ``/``.
    """
    slash = dsn.rfind("/")
    if slash < 0:
        raise DsnError("missing '/': expected user:password@tcp(host:port)/dbname")
    left, right = dsn[:slash], dsn[slash + 1 :]

    user, password, net_addr = "", None, left
    at = left.rfind("@")
    if at >= 0:
        credentials, net_addr = left[:at], left[at + 1 :]
        user, colon, pw = credentials.partition(":")
        password = pw if colon else None

    net, addr = net_addr, ""
    if "(" in net_addr:
        paren = net_addr.index("(")
        if not net_addr.endswith(")"):
            raise DsnError(f"address {net_addr!r} must end with ')': expected tcp(host:port) or unix(/path/to.sock)")
        net, addr = net_addr[:paren], net_addr[paren + 1 : -1]
    net = net or "tcp"

    dbname, _, query = right.partition("?")
    params: dict[str, str] = {}
    if query:
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            if not eq:
                raise DsnError(f"parameter {pair!r} has no '=': expected key=value")
            if key not in _GO_ONLY_PARAMS and key not in _MAPPED_PARAMS:
                raise DsnError(
                    f"unsupported DSN parameter {key!r}; supported: "
                    + ", ".join(sorted(_MAPPED_PARAMS))
                    + " (Go-only options such as parseTime and loc are accepted and ignored)"
                )
            params[key] = unquote(value)

    if net == "unix":
        return MySqlDsn(user, password, None, None, addr or "/tmp/mysql.sock", unquote(dbname), params)
    if net not in ("tcp", "tcp6", "tcp4"):
        raise DsnError(f"protocol {net!r} is not supported: expected tcp(host:port) or unix(/path)")
    host, port = _split_host_port(addr)
    return MySqlDsn(user, password, host, port, None, unquote(dbname), params)


def _split_host_port(addr: str) -> tuple[str, int]:
    if not addr:
        return "127.0.0.1", 3306
    if addr.startswith("["):  # [::1]:3306
        close = addr.find("]")
        if close < 0:
            raise DsnError(f"address {addr!r}: unclosed '[' in an IPv6 address")
        host, rest = addr[1:close], addr[close + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise DsnError(f"address {addr!r}: expected [ipv6]:port")
    elif addr.count(":") == 1:
        host, port_text = addr.split(":")
    elif ":" in addr:
        raise DsnError(f"address {addr!r}: write an IPv6 address in brackets, as [::1]:3306")
    else:
        host, port_text = addr, ""
    if not port_text:
        return host or "127.0.0.1", 3306
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DsnError(f"address {addr!r}: port {port_text!r} is not a number from 1 to 65535")
    return host or "127.0.0.1", int(port_text)
