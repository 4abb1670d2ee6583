"""cupid JSON config -> typed, validated objects. No Airflow import: the CLI, tests and benches use it bare.

Every key of cupid-go's config is accepted with its meaning and default (see README, "Config keys");
the Airflow-side additions are optional camelCase keys. Errors name the file, the JSON path
(``des[1].columns``), the bad value and what was expected, all at once rather than one per run.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from cupid_airflow.dsn import DsnError, parse_go_dsn
from cupid_airflow.jsonc import JsonWithCommentsError, loads_with_comments
from cupid_airflow.signing import SigningError, validate_secret
from cupid_airflow.timeformat import TimeFormat, TimeFormatError, parse_time_format

__all__ = [
    "MAX_CONFIG_BYTES",
    "REDACTED",
    "CallbackNotification",
    "ConfigError",
    "CupidConfig",
    "Destination",
    "Problem",
    "Reconcile",
    "Repair",
    "Source",
    "load_config",
    "parse_config",
    "redact_dsn",
    "redact_url",
    "url_secrets",
]

REDACTED = "***"
#: Bigger config files are refused unread: parsing must stay far inside the dag-processor's import timeout.
MAX_CONFIG_BYTES = 1024 * 1024
#: Destinations per file: each is a DAG built in the one DAG-file import that builds every cupid DAG.
MAX_DESTINATIONS = 500
#: A config nests 4 levels deep (des[0].callbackNotification.url); anything far deeper is not a config.
MAX_NESTING = 16
#: Keys whose values are never shown in an error, a log line or a doc: passwords, send keys, tokens.
SECRET_KEYS = frozenset({"dsn", "url", "secret", "pushbearSendKey"})
_DSN_FORM = "user:password@tcp(host:port)/dbname"
_DSN_NOT_SHOWN = " (the DSN is not shown: it may hold a password)"
_URL_NOT_SHOWN = " (the URL is not shown: it may hold a password or token)"
#: Unquoted SQL identifiers: a letter or underscore, then letters, digits, _ or $; at most 64 (MySQL's limit).
_IDENTIFIER = re.compile(r"[^\W\d][\w$]{0,63}")
#: Airflow's own rule for dag ids and connection ids.
_AIRFLOW_KEY = re.compile(r"[\w.-]{1,250}")
_SCHEDULE_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
)


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain SQL identifier; expected letters, digits, '_' or '$', starting with a "
            "letter or '_', at most 64 characters (quotes, spaces, backticks and ';' are never allowed)"
        )
    return value


def _table_name(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        raise ValueError(
            f"{value!r} is not a table name; expected an identifier (letters, digits, '_' or '$'), "
            "optionally qualified as schema.table"
        )
    return value


def _airflow_key(value: str) -> str:
    if not _AIRFLOW_KEY.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid Airflow id; expected letters, digits, '_', '.' or '-'")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone; expected a name such as 'UTC' or 'Asia/Shanghai'"
        ) from None
    return value


def _checked_by(check: Callable[[str], object], error: type[Exception]) -> Callable[[str], str]:
    """A pydantic validator from a parser: its ``error`` becomes the field's message."""

    def validate(value: str) -> str:
        try:
            check(value)
        except error as e:
            raise ValueError(str(e)) from None
        return value

    return validate


def _dsn(value: str) -> str:
    """Parse errors quote only what follows the credentials; a DSN whose credentials cannot be told
    apart (no ``/dbname`` after the address, ``:`` without ``@``) is not shown at all."""
    slash = value.rfind("/")
    if slash < 0 or "@" in value[slash + 1 :].partition("?")[0]:
        # Without '/dbname', Go's last-'/' rule splits inside the password: any piece could be secret.
        raise ValueError(f"no '/dbname' after the address; expected {_DSN_FORM}{_DSN_NOT_SHOWN}")
    if value.rfind("@", 0, slash) < 0 and ":" in value[:slash].partition("(")[0]:
        raise ValueError(f"'user:password' needs '@' before the address; expected {_DSN_FORM}{_DSN_NOT_SHOWN}")
    try:
        parse_go_dsn(value).client_options()
    except DsnError as e:
        raise ValueError(f"{e} (DSN {redact_dsn(value)!r})") from None
    return value


#: Upper bound of every duration in seconds a config sets (30 days): beyond it Python's timedelta
#: (and Airflow's scheduling) overflows, and no real interval, retry delay or deadline is longer.
MAX_SECONDS = 30 * 86_400


def _schedule(value: str | int) -> str | int:
    if isinstance(value, int):
        if not 1 <= value <= MAX_SECONDS:
            raise ValueError(f"{value} seconds: expected a whole number of seconds from 1 to {MAX_SECONDS} (30 days)")
        return value
    if value.startswith("@"):
        if value not in _SCHEDULE_PRESETS:
            raise ValueError(
                f"{value!r} is not an Airflow preset; expected one of {', '.join(sorted(_SCHEDULE_PRESETS))}"
            )
        return value
    from croniter import croniter  # a plain library (Airflow's own cron parser), no Airflow import

    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression; expected 5 fields such as '*/5 * * * *'")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
TableName = Annotated[str, AfterValidator(_table_name)]
AirflowKey = Annotated[str, AfterValidator(_airflow_key)]
Dsn = Annotated[str, AfterValidator(_dsn)]


#: The most ``inlineRows`` allows: an inline run holds its events in memory and sends them in one pass.
INLINE_ROWS_LIMIT = 10_000
#: The most ``confirmSeconds`` allows: a replica an hour behind is broken, not lagging.
CONFIRM_SECONDS_LIMIT = 3600


class _Model(BaseModel):
    # strict: "3" is not 3 and "true" is not true, as in cupid-go's Go JSON decoding.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class CallbackNotification(_Model):
    """Where a destination's differences are POSTed."""

    url: Annotated[str | None, Field(repr=False)] = None
    timeout_second: Annotated[int | float, Field(gt=0, le=300)] = 3
    secret: Annotated[str | None, AfterValidator(_checked_by(validate_secret, SigningError)), Field(repr=False)] = None


KeyValue = Annotated[int | str, Field()]


class Reconcile(_Model):
    """A full comparison of the pair (not just new and updated rows), on its own schedule: finds
    source deletes (type 3), hand edits and changes made while the scans were off."""

    # None: no schedule, a full pass only when triggered (``airflow dags trigger``, the UI).
    schedule: Annotated[str | int, AfterValidator(_schedule)] | None = "@daily"
    from_key: KeyValue | None = None
    to_key: KeyValue | None = None
    report_only: bool = False
    report_dir: str | None = None
    min_age_seconds: Annotated[int, Field(ge=0, le=MAX_SECONDS)] = 0
    target_query_seconds: Annotated[int | float, Field(gt=0, le=600)] = 1.0
    segment_rows: Annotated[int, Field(ge=1000)] = 500_000


class Repair(_Model):
    """What cupid does with a confirmed divergence besides calling back: writes the statements that
    repair it (``sql``), or applies them too (``apply``), each guarded against a row that moved on
    (:mod:`cupid_airflow.core.repair`)."""

    mode: Literal["sql", "apply"] = "sql"
    # apply: the Airflow connection that writes (the read dsn/connId never does)
    conn_id: AirflowKey | None = None
    # a task that would change more rows than this waits for a person (deletes always do)
    approve_rows: Annotated[int, Field(ge=0)] = 1000
    # how long a repair waits for that person; then nothing is applied
    approval_timeout_seconds: Annotated[int, Field(ge=60, le=30 * 86_400)] = 86_400
    # statements per transaction when applying
    batch_rows: Annotated[int, Field(ge=1, le=10_000)] = 500
    # where the fix SQL goes: <dir>/<dag_id>/<run_id>/repair-NNNN.sql (default $AIRFLOW_HOME/cupid-repairs)
    dir: str | None = None


class Destination(_Model):
    """One replica of the source table; each gets its own DAG."""

    dsn: Annotated[Dsn | None, Field(repr=False)] = None
    conn_id: AirflowKey | None = None
    table: TableName
    columns: Annotated[dict[Identifier, Identifier], Field(min_length=1)]
    by_column: Identifier
    callback_notification: CallbackNotification | None = None
    http_conn_id: AirflowKey | None = None
    dag_id: AirflowKey | None = None
    reconcile: Reconcile | None = None
    repair: Repair | None = None

    @property
    def callback_url(self) -> str | None:
        """The callback URL with a scheme (cupid's examples leave it out; ``http://`` is meant)."""
        url = self.callback_notification.url if self.callback_notification else None
        if url is None or self.http_conn_id is not None:
            return url
        return url if "://" in url else f"http://{url}"


class Source(_Model):
    """The table cupid watches."""

    dsn: Annotated[Dsn | None, Field(repr=False)] = None
    conn_id: AirflowKey | None = None
    table: TableName
    by_column: Identifier
    insert: bool = True
    insert_interval_millisecond: Annotated[int, Field(ge=1, le=MAX_SECONDS * 1000)] = 2000
    # How long an id missing inside a claimed range is watched for a late commit (0: not at all).
    insert_settle_seconds: Annotated[int, Field(ge=0, le=86_400)] = 300
    update: bool = True
    update_column: Identifier | None = None
    update_interval_millisecond: Annotated[int, Field(ge=1, le=MAX_SECONDS * 1000)] = 2000
    update_scan_second: Annotated[int, Field(ge=0, le=MAX_SECONDS)] = 5
    update_time_formate: Annotated[str, AfterValidator(_checked_by(parse_time_format, TimeFormatError))] = (
        "2006-1-2 15:04:05"
    )
    cache_file_path: str = "/tmp"
    pushbear_send_key: Annotated[str, Field(repr=False)] = ""
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    start_id: Annotated[int, Field(ge=1)] = 1

    @property
    def time_format(self) -> TimeFormat:
        return parse_time_format(self.update_time_formate)


def _queue_name(value: str) -> str:
    """A queue a worker can serve: ``airflow celery worker --queues`` takes a comma-separated list."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", value):
        raise ValueError(
            f"{value!r} is not a queue name a worker can serve: expected letters, digits and _ . : - "
            "(airflow celery worker --queues takes a comma-separated list)"
        )
    return value


QueueName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_queue_name)]


class CupidConfig(_Model):
    """A whole cupid config file: one source, one or more destinations."""

    worker_number: Annotated[int, Field(ge=1)] = 3
    log_dir: str = "/apps/log/cupid"
    failure_job_retry_second: Annotated[int, Field(ge=1, le=MAX_SECONDS)] = 10
    callback_retries: Annotated[int, Field(ge=0, le=1000)] = 15
    sla_seconds: Annotated[int, Field(ge=1, le=MAX_SECONDS)] | None = None
    src: Source
    des: Annotated[list[Destination], Field(min_length=1)]
    schedule: Annotated[str | int, AfterValidator(_schedule)] | None = None
    # Run when the triggerer sees the source change (plus ``schedule`` as a safety net).
    watch: bool = True
    catchup: bool = False
    paused_at_creation: bool = False
    pool: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Executor queues (CeleryExecutor): workers near the databases for the tasks that query them,
    # others for the callbacks; none: Airflow's ``[operators] default_queue``.
    queue: QueueName | None = None
    callback_queue: QueueName | None = None
    reconcile: Reconcile | None = None
    chunk_size: Annotated[int, Field(ge=1)] = 200_000
    max_rows_per_run: Annotated[int, Field(ge=1)] = 1_000_000
    # A run with at most this many rows to compare compares them and sends their callbacks in its
    # scan task (one task process instead of three); 0: always through the mapped tasks.
    inline_rows: Annotated[int, Field(ge=0, le=INLINE_ROWS_LIMIT)] = 1000
    # The longest a divergence waits for the destination to apply a change in flight before it
    # is called back (core/confirm.py); 0: called back at once, as cupid-go does.
    confirm_seconds: Annotated[int, Field(ge=0, le=CONFIRM_SECONDS_LIMIT)] = 60

    def redacted(self, index: int | None = None) -> dict[str, Any]:
        """The config as JSON data with passwords and keys replaced by ``***``: safe for DAG docs and logs.

        With ``index``, ``des`` holds only that destination: a pair DAG's docs stay the same size
        however many destinations the file has (embedding all of them made parsing quadratic).
        """
        if index is None:
            data = self.model_dump(by_alias=True, exclude_unset=True)
        else:
            data = self.model_dump(by_alias=True, exclude_unset=True, exclude={"des"})
            data["des"] = [self.des[index].model_dump(by_alias=True, exclude_unset=True)]
        endpoint: dict[str, Any]
        for endpoint in [data["src"], *data["des"]]:
            if endpoint.get("dsn"):
                endpoint["dsn"] = redact_dsn(endpoint["dsn"])
            callback = endpoint.get("callbackNotification") or {}
            if callback.get("url"):
                callback["url"] = redact_url(callback["url"])
            if callback.get("secret"):
                callback["secret"] = REDACTED
        if data["src"].get("pushbearSendKey"):
            data["src"]["pushbearSendKey"] = REDACTED
        return data

    def reconcile_for(self, index: int) -> Reconcile | None:
        """The destination's own ``reconcile`` object, else the top-level one (for every destination)."""
        return self.des[index].reconcile or self.reconcile

    def secrets(self) -> list[str]:
        """Every secret in this config, for Airflow's log masker."""
        found = [self.src.pushbear_send_key]
        endpoints: list[Source | Destination] = [self.src, *self.des]
        for endpoint in endpoints:
            if endpoint.dsn:
                found.append(parse_go_dsn(endpoint.dsn).password or "")
        for des in self.des:
            found += url_secrets(des.callback_url or "")
            if des.callback_notification and des.callback_notification.secret:
                found.append(des.callback_notification.secret)
        return [s for s in found if s]


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (same split rules as :func:`parse_go_dsn`)."""
    slash = dsn.rfind("/")
    at = dsn.rfind("@", 0, max(slash, 0))
    colon = dsn.find(":", 0, at) if at >= 0 else -1
    if colon < 0:
        return dsn
    return f"{dsn[: colon + 1]}{REDACTED}{dsn[at:]}"


def _url_parts(url: str) -> tuple[str, str, str, str | None, str | None]:
    """``(scheme://, user-info, host and path, query, fragment)`` of a full URL, a ``host:port/path``
    or a bare path, split on the characters alone: nothing to fail on, nothing guessed. The
    user-info ends at the last ``@`` before the first ``?`` or ``#`` (a password with a raw ``/``,
    as base64 tokens have, is still user-info), or at the last ``@`` before the first ``/`` if that
    is later (a raw ``?`` or ``#`` in a password): hiding too much is the safe mistake."""
    scheme, sep, rest = url.partition("://")
    head = f"{scheme}{sep}" if sep else ""
    rest = rest if sep else url
    at = -1
    if sep or not rest.startswith("/"):
        query_at = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        slash = rest.find("/")
        at = max(rest.rfind("@", 0, query_at), rest.rfind("@", 0, slash if slash >= 0 else len(rest)))
    userinfo = rest[:at] if at >= 0 else ""
    rest = rest[at + 1 :]
    rest, hash_, fragment = rest.partition("#")
    rest, mark, query = rest.partition("?")
    return head, userinfo, rest, query if mark else None, fragment if hash_ else None


def redact_url(url: str) -> str:
    """The URL as it may be shown: user-info (``token@``, ``user:password@``) and every query value
    (``?token=***``) replaced by ``***``, keys kept so a reader still sees which URL it is."""
    head, userinfo, rest, query, fragment = _url_parts(url)
    shown = f"{head}{REDACTED}@{rest}" if userinfo else f"{head}{rest}"
    if query is not None:
        items = (f"{k}={REDACTED}" if eq else REDACTED for k, eq, _ in (i.partition("=") for i in query.split("&")))
        shown += "?" + "&".join(items) if query else "?"
    if fragment is not None:
        shown += f"#{REDACTED}"
    return shown


def url_secrets(url: str, shortest: int = 8) -> list[str]:
    """The pieces of a URL :func:`redact_url` hides that look like credentials: user-info parts, and
    query values (or bare query items) of ``shortest`` characters or more. For Airflow's masker, 8:
    shorter ones are words like ``json`` that would be masked all over the logs (they are still never
    shown); for scrubbing a receiver's answer, which may echo the request, fewer."""
    _, userinfo, _, query, _ = _url_parts(url)
    found = [unquote(p) for p in userinfo.split(":") if p]
    values = [v if eq else k for k, eq, v in (i.partition("=") for i in (query or "").split("&"))]  # ?token bare
    found += [unquote(v) for v in values if len(v) >= shortest]
    return found


# ---------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # JSON path such as des[1].columns; "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """Every problem found in one config file."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _json_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        elif not _IDENTIFIER.fullmatch(part):
            path += f"[{json.dumps(part, ensure_ascii=False)}]"
        else:
            path += f".{part}" if path else part
    return path


def _model_at(loc: tuple[int | str, ...]) -> type[_Model] | None:
    """The model class that validates the object at ``loc``, to list its keys in a did-you-mean."""
    annotation: Any = CupidConfig
    for part in loc:
        while get_origin(annotation) in (Annotated, Union, list) or type(annotation).__name__ == "UnionType":
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        if isinstance(part, int):
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, _Model)):
            return None
        field = next((f for f in annotation.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        annotation = field.annotation
    while get_origin(annotation) in (Annotated, Union) or type(annotation).__name__ == "UnionType":
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation if isinstance(annotation, type) and issubclass(annotation, _Model) else None


def _did_you_mean(key: str, choices: list[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    match = lowered.get(key.lower()) or next(iter(difflib.get_close_matches(key, choices, n=1, cutoff=0.6)), None)
    return f"; did you mean {match!r}?" if match else f"; expected one of: {', '.join(choices)}"


_EXPECTED = {
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "an object",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


_KINDS = {bool: "true or false", int: "a number", float: "a number", str: "a string", list: "an array"}


def _shown(loc: tuple[int | str, ...], value: Any, scalar_expected: bool) -> str:
    """What an error says it got: the value itself only when it cannot be a secret (not under a
    secret key, and a plain scalar where one was expected); else only its kind."""
    empty = value in ([], {}) and not isinstance(value, bool)
    if not empty and (SECRET_KEYS.intersection(map(str, loc)) or not (scalar_expected or value is None)):
        return "null" if value is None else _KINDS.get(type(value), "an object")
    if isinstance(value, (list, dict)) and not empty:
        return _KINDS.get(type(value), "an object")
    got = json.dumps(value, ensure_ascii=False, default=str)
    return got if len(got) <= 80 else got[:77] + "..."


def _problem_from_pydantic(error: Any) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    scalars = ("int_type", "bool_type", "string_type", "float_type", "literal_error")
    scalar_expected = kind in scalars or kind.startswith(("greater_than", "less_than"))
    got = _shown(loc, error.get("input"), scalar_expected)
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        choices = [f.alias for f in model.model_fields.values() if f.alias] if model else []
        return Problem(_json_path(loc[:-1]), f"unknown key {loc[-1]!r}{_did_you_mean(str(loc[-1]), choices)}")
    if kind == "missing":
        return Problem(_json_path(loc), "required key is missing")
    if kind in _EXPECTED:
        # Unions report once per branch; the last element names the branch type, not a key.
        while loc and loc[-1] in ("str", "int", "constrained-int", "function-after[_schedule(), union[str,int]]"):
            loc = loc[:-1]
        return Problem(_json_path(loc), f"expected {_EXPECTED[kind]}, got {got}")
    if kind == "literal_error":
        return Problem(_json_path(loc), f"expected {error['ctx']['expected']}, got {got}")
    message = error["msg"].removeprefix("Value error, ")
    if kind.startswith(("greater_than", "less_than", "too_short", "too_long", "string_too_")):
        message = f"{message[0].lower()}{message[1:]}, got {got}"
    return Problem(_json_path(loc), message)


# ---------------------------------------------------------------------------- checks across keys


def _endpoint_problems(path: str, endpoint: Source | Destination) -> Iterator[Problem]:
    if (endpoint.dsn is None) == (endpoint.conn_id is None):
        yield Problem(
            path,
            "set exactly one of 'dsn' (a Go MySQL DSN) and 'connId' (an Airflow connection id)"
            + (", not both" if endpoint.dsn else ""),
        )


def _reconcile_problems(path: str, settings: Reconcile | None) -> Iterator[Problem]:
    if settings is None or settings.from_key is None or settings.to_key is None:
        return
    low, high = settings.from_key, settings.to_key
    if type(low) is not type(high):
        yield Problem(f"{path}.toKey", f"{high!r} and fromKey {low!r} must both be numbers or both be strings")
    elif low >= high:  # type: ignore[operator]
        yield Problem(
            f"{path}.toKey", f"{high!r} must be greater than fromKey {low!r} (the range is fromKey <= key < toKey)"
        )


def _callback_url_problems(path: str, url: str) -> Iterator[Problem]:
    """What keeps a callback URL from being read one way only. The URL may carry user:password@ or a
    token: name what is wrong, never the URL. Where urllib (which sends) and :func:`redact_url` (which
    hides) could split it differently, a password would be sent as a host or port and shown in clear."""
    expected = "; expected host:port/path or http(s)://host:port/path" + _URL_NOT_SHOWN
    encode = "if it ends a user:password, percent-encode the password's '/', '?', '#' and '@' (as %2F, %3F, %23, %40)"
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": an unmatched '[' or ']'
        yield Problem(path, f"not an HTTP URL: its host has an unmatched '[' or ']' (IPv6 is written [::1]){expected}")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        wrong = (
            f"its scheme {parts.scheme!r} is not http or https"
            if parts.scheme not in ("http", "https") and re.fullmatch(r"[a-zA-Z][\w+.-]{0,15}", parts.scheme)
            else "it has no host"
            if parts.scheme in ("http", "https")
            else "it does not start with a scheme or host"
        )
        yield Problem(path, f"not an HTTP URL: {wrong}{expected}")
        return
    try:
        parts.port  # noqa: B018 (urllib checks the port only when asked)
    except ValueError:
        yield Problem(path, f"what follows the host's ':' is not a port from 0 to 65535 ({encode}){expected}")
        return
    if "@" in parts.path:
        yield Problem(path, f"an '@' after the host, in the path: {encode}; in a path, write '@' as %40{expected}")
    elif _url_parts(url)[1] != parts.netloc.rpartition("@")[0]:
        yield Problem(path, f"the user-info cannot be told from the host or path: {encode}{expected}")


def _cross_problems(config: CupidConfig) -> Iterator[Problem]:
    src = config.src
    yield from _reconcile_problems("reconcile", config.reconcile)
    yield from _endpoint_problems("src", src)
    if src.update and src.update_column is None:
        yield Problem("src.updateColumn", "required when src.update is true (the last-modified column, indexed)")
    if not src.insert and not src.update:
        yield Problem("src", "both 'insert' and 'update' are false: there is nothing to watch")
    for i, des in enumerate(config.des):
        path = f"des[{i}]"
        yield from _endpoint_problems(path, des)
        yield from _reconcile_problems(f"{path}.reconcile", des.reconcile)
        if des.repair is not None and des.repair.mode == "apply" and des.repair.conn_id is None:
            yield Problem(
                f"{path}.repair.connId",
                "required when repair.mode is 'apply': the Airflow connection that writes to the destination "
                "(SELECT, INSERT, UPDATE and DELETE on des.table; the read dsn/connId never writes)",
            )
        url = des.callback_notification.url if des.callback_notification else None
        if des.http_conn_id is None:
            if url is None:
                yield Problem(f"{path}.callbackNotification.url", "required unless httpConnId names an HTTP connection")
            else:
                yield from _callback_url_problems(f"{path}.callbackNotification.url", des.callback_url or "")
        elif url is not None and "://" in url:
            yield Problem(
                f"{path}.callbackNotification.url",
                "a full URL (with '://'), but with httpConnId the connection holds the scheme and host; give only "
                "the path, such as '/test/callback'" + _URL_NOT_SHOWN,
            )
        targets: dict[str, str] = {}
        for src_col, des_col in des.columns.items():
            if des_col in targets:
                yield Problem(
                    f"{path}.columns",
                    f"destination column {des_col!r} is mapped from both {targets[des_col]!r} and {src_col!r}; "
                    "map each destination column once",
                )
            targets[des_col] = src_col
        mapped_by = des.columns.get(src.by_column)
        if mapped_by is not None and mapped_by != des.by_column:
            yield Problem(
                f"{path}.byColumn",
                f"{des.by_column!r}, but {path}.columns maps src.byColumn {src.by_column!r} to {mapped_by!r}; "
                "rows are matched on src.byColumn = des.byColumn, so the two must agree",
            )
        elif des.by_column in targets and targets[des.by_column] != src.by_column:
            yield Problem(
                f"{path}.byColumn",
                f"{des.by_column!r} is the match key for src.byColumn {src.by_column!r}, but {path}.columns maps "
                f"{targets[des.by_column]!r} to it; map src.byColumn to it or leave it out of columns",
            )


# ---------------------------------------------------------------------------- entry points


def parse_config(text: str, source: str = "<config>") -> CupidConfig:
    """Validate a config's text; raise :class:`ConfigError` listing every problem found."""
    try:
        data = loads_with_comments(text)
    except JsonWithCommentsError as e:
        raise ConfigError(source, [Problem("", str(e))]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", f"expected a JSON object at the top, got {type(data).__name__}")])
    if _nesting(data) > MAX_NESTING:
        raise ConfigError(source, [Problem("", f"arrays or objects are nested more than {MAX_NESTING} levels deep")])
    des = data.get("des")
    if isinstance(des, list) and len(des) > MAX_DESTINATIONS:
        raise ConfigError(
            source,
            [
                Problem(
                    "des",
                    f"{len(des)} destinations; at most {MAX_DESTINATIONS} per file (each one is a DAG); "
                    "split them over several files",
                )
            ],
        )
    try:
        config = CupidConfig.model_validate(data)
    except ValidationError as e:
        problems = list(dict.fromkeys(_problem_from_pydantic(err) for err in e.errors()))
        raise ConfigError(source, problems) from None
    problems = list(_cross_problems(config))
    if problems:
        raise ConfigError(source, problems)
    return config


def _nesting(data: Any) -> int:
    """How deep arrays and objects nest, without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, depth = todo.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                todo.extend((child, depth + 1) for child in children)
    return deepest


def load_config(path: str | Path) -> CupidConfig:
    """Read and validate one file; a file over :data:`MAX_CONFIG_BYTES` is refused before it is read."""
    path = Path(path)
    too_big = Problem("", f"the file is larger than {MAX_CONFIG_BYTES:,} bytes, the limit for a cupid config")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(str(path), [too_big])
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # it may have grown since stat()
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(str(path), [too_big])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [Problem("", f"cannot read the file: {e}")]) from None
    return parse_config(text, str(path))
