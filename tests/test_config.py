"""Config loading: cupid-go's keys and defaults, our additions, and every kind of error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cupid_airflow.config import (
    ConfigError,
    CupidConfig,
    load_config,
    parse_config,
    redact_url,
    url_secrets,
)
from cupid_airflow.names import pair_dag_ids
from tests.conftest import REPO, sample_config

ORIGINAL_README_EXAMPLE = """{
"workerNumber": 3, //最低值3,前2个进程是manager和callback进程,之后的才是处理进程
"logDir": "/tmp", //日志目录,进程日志会打印到该目录下
"failureJobRetrySecond": 10, //失败队列重试间隔
"src": {
"dsn": "user:password@tcp(127.0.0.1:3306)/db?charset=utf8",//数据库dsn配置
"table": "user",//我们关注的数据库表
"byColumn": "number",//通过该字段对应des的byColumn,进行比对
"insert": true, //是否关注insert的数据
"insertIntervalMillisecond": 2000, //检查insert更新的间隔时间,单位毫秒
"update": true, //是否关注update数据,若为false,则下面update开头的字段可以不用
"updateColumn": "update_time", //update为true时必填,更新的字段名,需要添加索引,不然会扫描全表
"updateIntervalMillisecond": 2000, //update为true时必填,检查update更新的间隔时间,单位毫秒
"updateScanSecond": 5, //update为true时必填,获取数据的时间间隔
"updateTimeFormate": "Y-m-d H:i:s", //update为true时必填,数据库里数据更新字段的时间格式
"cacheFilePath": "/tmp", //若进程有异常退出或者重启,会把当前的遍历信息记录到缓存文件中
"pushbearSendKey": "9724-73bdacb319007f53f83d0123"//若需要pushbear推送微信消息,在这填写
},
"des": [//des是一个数组,意味着我们可同时比对多个数据表
{
"dsn": "user:password@tcp(127.0.0.1:3306)/db2?charset=utf8",//数据库dsn配置
"table": "user",//我们同步的数据库表
"columns": { //关注和同步表的字段对应关系
"number": "number",
"name": "name",
"avatar": "avatar"
},
"byColumn": "number",//与src的byColumn相呼应,形成关联关系来比对
"callbackNotification": {
"url" : "127.0.0.1:20000/test/callback"//当数据不同步时的回调地址
}
}
]
}"""


def problems(text_or_data: str | dict[str, Any], source: str = "conf.json") -> list[str]:
    text = text_or_data if isinstance(text_or_data, str) else json.dumps(text_or_data)
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, source)
    assert all(line.startswith(f"{source}: ") for line in str(excinfo.value).splitlines())
    return [str(p) for p in excinfo.value.problems]


def one_problem(data: str | dict[str, Any]) -> str:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


def with_src(**src: Any) -> dict[str, Any]:
    config = sample_config()
    config["src"].update(src)
    return config


def with_des(**des: Any) -> dict[str, Any]:
    config = sample_config()
    config["des"][0].update(des)
    return config


# ------------------------------------------------------------------ keys and defaults


def test_original_readme_example_loads_with_its_comments() -> None:
    config = parse_config(ORIGINAL_README_EXAMPLE)
    assert config.worker_number == 3
    assert config.log_dir == "/tmp"
    assert config.src.update_time_formate == "Y-m-d H:i:s"
    assert config.src.pushbear_send_key == "9724-73bdacb319007f53f83d0123"
    assert config.des[0].columns == {"number": "number", "name": "name", "avatar": "avatar"}
    assert config.des[0].callback_url == "http://127.0.0.1:20000/test/callback"


def test_defaults_are_cupid_go_defaults() -> None:
    config = parse_config(json.dumps(sample_config()))
    assert (config.worker_number, config.log_dir, config.failure_job_retry_second) == (3, "/apps/log/cupid", 10)
    src = config.src
    assert src.insert is True and src.update is True
    assert src.insert_interval_millisecond == 2000
    assert src.update_interval_millisecond == 2000
    assert src.update_scan_second == 5
    assert src.update_time_formate == "2006-1-2 15:04:05"
    assert src.cache_file_path == "/tmp"
    assert src.pushbear_send_key == ""
    # Airflow-side additions
    assert src.timezone == "UTC"
    assert src.conn_id is None
    assert config.schedule is None
    des = config.des[0]
    assert des.conn_id is None and des.http_conn_id is None and des.dag_id is None


def test_every_key_is_read() -> None:
    config = parse_config(
        json.dumps(
            {
                "workerNumber": 8,
                "logDir": "/var/log/cupid",
                "failureJobRetrySecond": 30,
                "schedule": "*/5 * * * *",
                "src": {
                    "connId": "app_db",
                    "table": "app.user",
                    "byColumn": "number",
                    "insert": False,
                    "insertIntervalMillisecond": 500,
                    "update": True,
                    "updateColumn": "mtime",
                    "updateIntervalMillisecond": 90000,
                    "updateScanSecond": 0,
                    "updateTimeFormate": "2006-01-02 15:04:05",
                    "cacheFilePath": "/var/cache/cupid",
                    "pushbearSendKey": "key-123456",
                    "timezone": "Asia/Shanghai",
                },
                "des": [
                    {
                        "connId": "replica_db",
                        "table": "user_copy",
                        "columns": {"number": "num", "name": "nick"},
                        "byColumn": "num",
                        "httpConnId": "receiver",
                        "callbackNotification": {"url": "/hooks/cupid"},
                        "dagId": "user_to_copy",
                    }
                ],
            }
        )
    )
    assert config.worker_number == 8 and config.log_dir == "/var/log/cupid"
    assert config.failure_job_retry_second == 30 and config.schedule == "*/5 * * * *"
    src = config.src
    assert (src.conn_id, src.table, src.by_column, src.insert, src.update) == (
        "app_db",
        "app.user",
        "number",
        False,
        True,
    )
    assert (src.insert_interval_millisecond, src.update_interval_millisecond, src.update_scan_second) == (500, 90000, 0)
    assert (src.update_column, src.update_time_formate, src.cache_file_path) == (
        "mtime",
        "2006-01-02 15:04:05",
        "/var/cache/cupid",
    )
    assert (src.pushbear_send_key, src.timezone) == ("key-123456", "Asia/Shanghai")
    des = config.des[0]
    assert (des.conn_id, des.table, des.by_column, des.http_conn_id, des.dag_id) == (
        "replica_db",
        "user_copy",
        "num",
        "receiver",
        "user_to_copy",
    )
    assert des.columns == {"number": "num", "name": "nick"}
    assert des.callback_url == "/hooks/cupid"  # a path on the HTTP connection


@pytest.mark.parametrize("schedule", [60, "@hourly", "@continuous", "@once", "0 */2 * * *"])
def test_schedule_forms(schedule: str | int) -> None:
    assert parse_config(json.dumps(sample_config(schedule=schedule))).schedule == schedule


def test_example_configs_in_the_repo_are_valid() -> None:
    for path in sorted((REPO / "dags" / "configs").glob("*.json")):
        load_config(path)


def test_callback_url_scheme() -> None:
    https = parse_config(json.dumps(with_des(callbackNotification={"url": "https://hooks.example.com/x"})))
    assert https.des[0].callback_url == "https://hooks.example.com/x"
    bare = parse_config(json.dumps(with_des(callbackNotification={"url": "localhost:8080/cb?x=1"})))
    assert bare.des[0].callback_url == "http://localhost:8080/cb?x=1"


# ------------------------------------------------------------------ comments and syntax


def test_comments_do_not_touch_strings() -> None:
    text = """{
      /* block
         comment */ "src": {"dsn": "a:b//c@tcp(h:1)/d", "table": "t", "byColumn": "k", "update": false,
      "pushbearSendKey": "has \\"quote\\" and /* not a comment */"},  // trailing
      "des": [{"dsn": "x:y@tcp(h)/z", "table": "t", "columns": {"k": "k"}, "byColumn": "k",
               "callbackNotification": {"url": "http://h/p//q"}}]
    }"""
    config = parse_config(text)
    assert config.src.dsn == "a:b//c@tcp(h:1)/d"
    assert config.src.pushbear_send_key == 'has "quote" and /* not a comment */'
    assert config.des[0].callback_url == "http://h/p//q"


def test_syntax_error_names_line_and_column_despite_comments() -> None:
    text = '{\n  /* one\n  two */\n  "src": {,\n}'
    assert one_problem(text).startswith("line 4 column 11: invalid JSON")


def test_unclosed_comment() -> None:
    assert one_problem('{\n\n  /* never closed\n "a": 1}') == "line 3: '/*' comment is never closed with '*/'"


def test_duplicate_keys_are_errors() -> None:
    assert "duplicate key 'table'" in one_problem('{"src": {"table": "a", "table": "b"}}')


def test_top_level_must_be_an_object() -> None:
    assert one_problem("[1, 2]") == "expected a JSON object at the top, got list"


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ConfigError, match=r"bad\.json: cannot read the file"):
        load_config(path)


# ------------------------------------------------------------------ errors by key


def test_missing_required_keys() -> None:
    found = problems({"src": {"dsn": "a@tcp(h)/d"}, "des": [{"dsn": "a@tcp(h)/d"}]})
    for path in ("src.table", "src.byColumn", "des[0].table", "des[0].columns", "des[0].byColumn"):
        assert f"{path}: required key is missing" in found
    assert problems({})[0] == "src: required key is missing"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"workerNumber": "3"}, 'workerNumber: expected a whole number, got "3"'),
        ({"workerNumber": 0}, "workerNumber: input should be greater than or equal to 1, got 0"),
        ({"failureJobRetrySecond": 1.5}, "failureJobRetrySecond: expected a whole number, got 1.5"),
        ({"des": []}, "des: list should have at least 1 item after validation, not 0, got []"),
        ({"des": {"table": "x"}}, "des: expected an array, got an object"),  # an object may hold a DSN
        ({"src": "mysql://x"}, "src: expected an object, got a string"),
        ({"schedule": 0}, "schedule: 0 seconds: expected a whole number of seconds from 1 to 2592000 (30 days)"),
        ({"schedule": "@minutely"}, "schedule: '@minutely' is not an Airflow preset; expected one of"),
        ({"schedule": "61 * * * *"}, "schedule: '61 * * * *' is not a cron expression"),
        ({"queue": ""}, "queue: string should have at least 1 character, got a string"),
        ({"callbackQueue": 3}, "callbackQueue: expected a string, got 3"),
        ({"queue": "a,b"}, "queue: 'a,b' is not a queue name a worker can serve: expected letters, digits"),
    ],
)
def test_top_level_type_and_range_errors(change: dict[str, Any], expected: str) -> None:
    assert one_problem(sample_config(**change)).startswith(expected)


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ({"insert": "true"}, 'src.insert: expected true or false, got "true"'),
        ({"updateScanSecond": -1}, "src.updateScanSecond: input should be greater than or equal to 0, got -1"),
        ({"insertIntervalMillisecond": 0}, "src.insertIntervalMillisecond: input should be greater than or equal to 1"),
        ({"timezone": "Mars/Olympus"}, "src.timezone: 'Mars/Olympus' is not an IANA time zone"),
        (
            {"updateTimeFormate": "Y-m-d Q"},
            "src.updateTimeFormate: PHP date character 'Q' in 'Y-m-d Q' is not supported",
        ),
        ({"updateColumn": 5}, "src.updateColumn: expected a string, got 5"),
        ({"connId": "app db"}, "src.connId: 'app db' is not a valid Airflow id"),
    ],
)
def test_src_errors(src: dict[str, Any], expected: str) -> None:
    assert one_problem(with_src(**src)).startswith(expected)


def test_update_column_required_only_when_update_is_on() -> None:
    config = sample_config()
    del config["src"]["updateColumn"]
    assert one_problem(config).startswith("src.updateColumn: required when src.update is true")
    config["src"]["update"] = False
    assert parse_config(json.dumps(config)).src.update_column is None


def test_nothing_to_watch() -> None:
    assert one_problem(with_src(insert=False, update=False)) == (
        "src: both 'insert' and 'update' are false: there is nothing to watch"
    )


@pytest.mark.parametrize("where", ["src", "des"])
def test_dsn_or_conn_id_exactly_one(where: str) -> None:
    config = sample_config()
    endpoint = config["src"] if where == "src" else config["des"][0]
    path = "src" if where == "src" else "des[0]"
    endpoint["connId"] = "db"
    assert one_problem(config) == (
        f"{path}: set exactly one of 'dsn' (a Go MySQL DSN) and 'connId' (an Airflow connection id), not both"
    )
    del endpoint["dsn"], endpoint["connId"]
    assert (
        one_problem(config)
        == f"{path}: set exactly one of 'dsn' (a Go MySQL DSN) and 'connId' (an Airflow connection id)"
    )


def test_callback_url_errors() -> None:
    assert one_problem(with_des(callbackNotification={})) == (
        "des[0].callbackNotification.url: required unless httpConnId names an HTTP connection"
    )
    assert one_problem(with_des(callbackNotification={"url": "ftp://files/x"})).startswith(
        "des[0].callbackNotification.url: not an HTTP URL: its scheme 'ftp' is not http or https"
    )
    assert one_problem(with_des(httpConnId="hooks", callbackNotification={"url": "http://h/x"})).startswith(
        "des[0].callbackNotification.url: a full URL (with '://'), but with httpConnId the connection holds the "
        "scheme and host"
    )
    assert parse_config(json.dumps(with_des(httpConnId="hooks", callbackNotification=None))).des[0].callback_url is None


def test_column_map_errors() -> None:
    assert one_problem(with_des(columns={})).startswith("des[0].columns: dictionary should have at least 1 item")
    assert one_problem(with_des(columns={"number": "number", "a": "x", "b": "x"})) == (
        "des[0].columns: destination column 'x' is mapped from both 'a' and 'b'; map each destination column once"
    )


def test_by_column_must_agree_with_the_column_map() -> None:
    assert one_problem(with_des(columns={"number": "num", "name": "name"}, byColumn="number")) == (
        "des[0].byColumn: 'number', but des[0].columns maps src.byColumn 'number' to 'num'; rows are matched "
        "on src.byColumn = des.byColumn, so the two must agree"
    )
    assert one_problem(with_des(columns={"name": "number"}, byColumn="number")).startswith(
        "des[0].byColumn: 'number' is the match key for src.byColumn 'number', but des[0].columns maps 'name' to it"
    )
    # src.byColumn left out of the map is fine: byColumn itself pairs the two key columns.
    config = parse_config(json.dumps(with_des(columns={"name": "nick"}, byColumn="num")))
    assert config.des[0].by_column == "num"


def test_errors_in_several_places_are_reported_together() -> None:
    config = sample_config(workerNumber="x")
    config["src"]["table"] = "a b"
    config["des"].append({**config["des"][0], "byColumn": "1st"})
    found = problems(config)
    assert [f.split(":")[0] for f in found] == ["workerNumber", "src.table", "des[1].byColumn"]


# ------------------------------------------------------------------ identifiers


@pytest.mark.parametrize(
    "table",
    [
        "user; DROP TABLE x",
        "`user`",
        "user`; DROP TABLE x; --",
        "'user'",
        '"user"',
        "user--",
        "a.b.c",
        "",
        "1abc",
        "x" * 65,
    ],
)
def test_table_names_cannot_smuggle_sql(table: str) -> None:
    assert "is not a table name" in one_problem(with_src(table=table))


@pytest.mark.parametrize("column", ["name`", "na me", "name'", 'x"', "a;b", "(select 1)", "a,b"])
def test_column_names_cannot_smuggle_sql(column: str) -> None:
    assert "is not a plain SQL identifier" in one_problem(with_des(columns={"number": "number", column: "name"}))
    assert "is not a plain SQL identifier" in one_problem(with_des(columns={"number": "number", "name": column}))
    assert "is not a plain SQL identifier" in one_problem(with_src(updateColumn=column))


def test_identifier_error_path_quotes_odd_keys() -> None:
    found = one_problem(with_des(columns={"number": "number", "na'me": "name"}))
    assert found.startswith('des[0].columns["na\'me"]: ')


def test_legal_identifiers() -> None:
    config = parse_config(
        json.dumps(with_des(table="shop.order_2024", columns={"number": "number", "名字": "price$usd"}))
    )
    assert config.des[0].table == "shop.order_2024"


# ------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (sample_config(workerNumbr=3), "unknown key 'workerNumbr'; did you mean 'workerNumber'?"),
        (with_src(updateTimeFormat="Y"), "src: unknown key 'updateTimeFormat'; did you mean 'updateTimeFormate'?"),
        (with_src(bycolumn="x"), "src: unknown key 'bycolumn'; did you mean 'byColumn'?"),
        (with_des(column={"a": "b"}), "des[0]: unknown key 'column'; did you mean 'columns'?"),
        (
            with_des(callbackNotification={"uri": "h/x"}),
            "des[0].callbackNotification: unknown key 'uri'; did you mean 'url'?",
        ),
        (with_src(zzz=1), "src: unknown key 'zzz'; expected one of: dsn, connId, table, byColumn,"),
    ],
)
def test_unknown_keys_suggest_the_right_one(data: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(data)), problems(data)


# ------------------------------------------------------------------ secrets


def test_redacted_hides_every_secret() -> None:
    config = parse_config(
        json.dumps(
            with_des(callbackNotification={"url": "https://hook:cb-pass-99@hooks.example.com/x"})
            | {"src": {**sample_config()["src"], "pushbearSendKey": "SENDKEY-123"}}
        )
    )
    dumped = json.dumps(config.redacted())
    for secret in ("s3cret-pw", "other-pw", "SENDKEY-123", "cb-pass-99"):
        assert secret not in dumped
    assert set(config.secrets()) == {"s3cret-pw", "other-pw", "SENDKEY-123", "hook", "cb-pass-99"}
    assert config.redacted()["src"]["dsn"] == "cupid:***@tcp(127.0.0.1:3306)/app?charset=utf8"
    assert config.redacted()["des"][0]["callbackNotification"]["url"] == "https://***@hooks.example.com/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://Tok3n-in-userinfo@127.0.0.1:8080/cb", "http://***@127.0.0.1:8080/cb"),
        ("https://user:pa:ss@word@hooks.example.com/x", "https://***@hooks.example.com/x"),
        ("127.0.0.1:8080/cb?token=Tok3n-in-query&v=2", "127.0.0.1:8080/cb?token=***&v=***"),
        ("/test/callback?Tok3n-bare#Tok3n-frag", "/test/callback?***#***"),
        ("http://u:pa?ss@host/cb", "http://***@host/cb"),  # an unencoded ? in a password: still hidden
        ("http://user:abc/defS3cret==@host/cb", "http://***@host/cb"),  # a raw / in a (base64) password
        ("http://host/a@b/cb?e=x@y", "http://***@b/cb?e=***"),  # an @ in the path may end a password: hidden
        ("http://host/cb?e=x@y#f@g", "http://host/cb?e=***#***"),  # an @ in the query or fragment is not
        ("127.0.0.1:20000/test/callback", "127.0.0.1:20000/test/callback"),
    ],
)
def test_redact_url_hides_user_info_and_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_secrets_are_the_pieces_redact_url_hides() -> None:
    assert url_secrets("http://user:abc/defS3cret==@host/cb") == ["user", "abc/defS3cret=="]
    assert url_secrets("http://host/cb?k=abc1234&token=Tok3nTok3n&json") == ["Tok3nTok3n"]  # 8+ for the masker
    assert url_secrets("http://host/cb?k=abc1234&v=2&json", shortest=3) == ["abc1234", "json"]
    assert url_secrets("http://host/cb?Bare-T0ken-99") == ["Bare-T0ken-99"]


URL_SECRET = "abc/defS3cretPassw0rd=="


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"http://user:{URL_SECRET}@host/cb", "what follows the host's ':' is not a port"),
        (f"user:{URL_SECRET}@127.0.0.1:8080/cb", "what follows the host's ':' is not a port"),
        ("http://host:S3cretPort99/cb", "what follows the host's ':' is not a port"),
        ("http://host:99999/cb", "what follows the host's ':' is not a port"),
        (f"http://user:123/{URL_SECRET}@host/cb", "an '@' after the host, in the path"),
        ("http://u:12?S3cretPassw0rd@host/cb", "the user-info cannot be told from the host or path"),
        ("http://[::1/cb?k=S3cretPassw0rd", "its host has an unmatched '[' or ']'"),
    ],
)
def test_a_callback_url_read_two_ways_is_refused_without_showing_it(url: str, message: str) -> None:
    """urllib would send part of the password as a host, port or path while redact_url hid another
    part: refused, naming the key, with no piece of the URL's secret."""
    found = problems(with_des(callbackNotification={"url": url}))
    assert [p for p in found if p.startswith("des[0].callbackNotification.url: ") and message in p], found
    text = "\n".join(found)
    assert "ValueError" not in text and not [p for p in pieces("S3cretPassw0rd") | pieces("S3cretPort99") if p in text]


@pytest.mark.parametrize(
    "url",
    ["http://[::1]:8080/cb", "https://u:p%2Fw%40d@host:443/cb?e=a@b", "host/cb#x@y", "http://user:pw@host/a%40b"],
)
def test_callback_urls_read_one_way_are_accepted(url: str) -> None:
    parse_config(json.dumps(with_des(callbackNotification={"url": url})))


def test_a_bad_callback_url_is_named_without_its_token() -> None:
    found = problems(with_des(callbackNotification={"url": "ftp://Tok3nTok3n@host/cb?k=Tok3nValue"}))
    assert any("callbackNotification.url: not an HTTP URL: its scheme 'ftp'" in p for p in found), found
    assert not any("Tok3n" in p for p in found)


def test_dsn_errors_never_echo_the_password() -> None:
    found = one_problem(with_src(dsn="cupid:TopSecret!@tcp(127.0.0.1:99999)/app"))
    assert "TopSecret" not in found
    assert found == (
        "src.dsn: address '127.0.0.1:99999': port '99999' is not a number from 1 to 65535 "
        "(DSN 'cupid:***@tcp(127.0.0.1:99999)/app')"
    )


def pieces(secret: str, size: int = 6) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


#: A broken config per way a secret used to be echoed: (JSON path named, the secret, the config).
LEAKY_CONFIGS = {
    "dsn-no-dbname": ("src.dsn", "Pa/ss-Wd-4242-src", with_src(dsn="cupid:Pa/ss-Wd-4242-src@tcp(db:3306)")),
    "dsn-no-at": ("des[0].dsn", "Nq8-ColonPass-77", with_des(dsn="cupid:Nq8-ColonPass-77/replica")),
    "dsn-at-in-db": ("src.dsn", "Zx@pw-9931-at", with_src(dsn="cupid:Zx@pw-9931-at@tcp(db:3306)?x=1")),
    "url-bad-scheme": (
        "des[0].callbackNotification.url",
        "Cb-Sekr1t-55187",
        with_des(callbackNotification={"url": "htps://cb:Cb-Sekr1t-55187@hooks.example.com/x?token=Tok-9981-q"}),
    ),
    "url-with-conn": (
        "des[0].callbackNotification.url",
        "Conn-Token-60321",
        with_des(httpConnId="hooks", callbackNotification={"url": "https://u:Conn-Token-60321@h.example.com/x"}),
    ),
    "sendkey-number": ("src.pushbearSendKey", "972473115529", with_src(pushbearSendKey=972473115529)),
    "secret-number": (
        "des[0].callbackNotification.secret",
        "31415926535",
        with_des(callbackNotification={"url": "h/x", "secret": 31415926535}),
    ),
    "src-as-string": ("src", "StrPw-88417", sample_config(src="root:StrPw-88417@tcp(db:3306)/app")),
    "des-as-object": ("des", "ObjPw-12093", sample_config(des={"dsn": "root:ObjPw-12093@tcp(db)/app"})),
}


@pytest.mark.parametrize("case", sorted(LEAKY_CONFIGS))
def test_errors_name_the_key_never_a_secret_value(case: str) -> None:
    """Broken configs reach validate, the dag-processor's log and the broken DAG's description: the
    problem names the key and what is wrong, and holds no 6-character piece of the secret."""
    path, secret, config = LEAKY_CONFIGS[case]
    found = problems(config)
    assert any(p.startswith(f"{path}: ") for p in found), found
    text = "\n".join(found)
    assert not [piece for piece in pieces(secret) if piece in text], text


def test_dsn_without_dbname_says_so() -> None:
    assert one_problem(with_src(dsn="cupid:Pa/ss@tcp(db:3306)")) == (
        "src.dsn: no '/dbname' after the address; expected user:password@tcp(host:port)/dbname "
        "(the DSN is not shown: it may hold a password)"
    )
    assert one_problem(with_src(pushbearSendKey=123456789)) == "src.pushbearSendKey: expected a string, got a number"


# ------------------------------------------------------------------ dag ids


def test_dag_ids() -> None:
    one = CupidConfig.model_validate(sample_config())
    assert pair_dag_ids(one, "user") == ["cupid_user"]
    assert pair_dag_ids(one, "my table") == ["cupid_my_table"]
    two = CupidConfig.model_validate(sample_config(des=[*sample_config()["des"], sample_config()["des"][0]]))
    assert pair_dag_ids(two, "user") == ["cupid_user_1", "cupid_user_2"]
    named = sample_config()
    named["des"] = [named["des"][0], {**named["des"][0], "dagId": "custom"}]
    assert pair_dag_ids(CupidConfig.model_validate(named), "user") == ["cupid_user_1", "custom"]
    assert one_problem(with_des(dagId="bad id!")).startswith("des[0].dagId: 'bad id!' is not a valid Airflow id")


def test_reconcile_settings_are_checked() -> None:
    good = parse_config(json.dumps(sample_config(reconcile={"schedule": "@hourly", "fromKey": 10, "toKey": 20})))
    assert good.reconcile_for(0) is not None and good.reconcile_for(0).schedule == "@hourly"  # type: ignore[union-attr]
    manual = parse_config(json.dumps(sample_config(reconcile={"schedule": None})))
    assert manual.reconcile_for(0).schedule is None  # type: ignore[union-attr]
    own = sample_config(reconcile={"reportOnly": True})
    own["des"][0]["reconcile"] = {"reportOnly": False}
    assert parse_config(json.dumps(own)).reconcile_for(0).report_only is False  # type: ignore[union-attr]
    for bad, message in [
        ({"fromKey": 20, "toKey": 10}, "reconcile.toKey: 10 must be greater than fromKey 20"),
        ({"fromKey": "a", "toKey": 10}, "reconcile.toKey: 10 and fromKey 'a' must both be numbers or both be strings"),
        ({"minAgeSeconds": -1}, "reconcile.minAgeSeconds"),
        ({"schedule": "every day"}, "reconcile.schedule"),
        ({"reportonly": True}, "did you mean 'reportOnly'"),
    ]:
        with pytest.raises(ConfigError) as error:
            parse_config(json.dumps(sample_config(reconcile=bad)), source="c.json")
        assert message in str(error.value), str(error.value)
