"""docker-compose.yaml: valid for `docker compose`, and a faithful mirror of what the e2e test runs.

The Docker engine cannot run here, so the stack itself is not started. What can be checked is:
``docker compose config`` when the compose plugin exists (the test says so when it does not),
that every Airflow component the e2e test starts is a service with the same command and the
settings that matter, that the image installs this package, that the compose configs validate,
and that the MariaDB seed script builds, on a real server, the tables those configs name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cupid_airflow.config import load_config
from tests.conftest import MYSQL, REPO, MySqlDatabase
from tests.stack import CELERY_ENV, CELERY_WORKER_COMMAND, COMPONENTS, AirflowStack, demo_seed_statements

COMPOSE = REPO / "docker-compose.yaml"
DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _compose_command() -> list[str] | None:
    """``docker compose`` (the v2 plugin) where it exists, else Debian's ``docker-compose`` (v1.29,
    the only one Debian 12 packages; ``.ci/run`` installs it): both validate the file's schema."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (.ci/run installs the latter)")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_component_of_the_e2e_test_is_a_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for component in COMPONENTS:
        name = "airflow-apiserver" if component == "api-server" else f"airflow-{component}"
        assert services[name]["command"] == component, name
        assert services[name]["image"] == "cupid-airflow:local"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["command"] == " ".join(CELERY_WORKER_COMMAND)
    assert {"postgres", "redis", "mysql", "receiver", "airflow-init"} <= set(services)


def test_airflow_settings_match_the_e2e_deployment(compose: dict[str, Any], tmp_path: Path) -> None:
    env = compose["x-airflow-common"]["environment"]
    celery = AirflowStack(tmp_path, celery_workers={"a": "default"}).env  # what tests/test_e2e_celery.py runs
    for key in CELERY_ENV:
        assert env[key] == celery[key], key
    for key, scheme in (
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://"),
        ("AIRFLOW__CELERY__BROKER_URL", "redis://"),
        ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql://"),
    ):
        assert env[key].startswith(scheme) and celery[key].startswith(scheme), key
    # The result backend is the metadata database, as in the test.
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+") == env[
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    ].replace("+psycopg2", "")
    api = compose["services"]["airflow-apiserver"]
    port = api["ports"][0].split(":")[-1]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{port}/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"]  # one secret for every component, as in the e2e test
    assert env["CUPID_CONFIG_DIR"] == "/opt/airflow/cupid-configs"
    volumes = compose["x-airflow-common"]["volumes"]
    assert "./dags:/opt/airflow/dags" in volumes
    assert "./docker/configs:/opt/airflow/cupid-configs" in volumes
    for _, host, _ in (v.partition(":") for v in volumes):
        assert host  # every mount has a target
    for source in (v.split(":")[0] for v in volumes if v.startswith("./") and "logs" not in v):
        assert (REPO / source).is_dir(), source
    receiver = compose["services"]["receiver"]
    assert (REPO / receiver["volumes"][0].split(":")[0]).is_file()


def test_the_image_installs_this_package() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{AIRFLOW_IMAGE\}", dockerfile, re.M)
    version = re.search(r"apache/airflow:(\d+\.\d+\.\d+)", dockerfile)
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert version and pinned and version.group(1) == pinned.group(1)  # the image runs the tested Airflow
    assert "pip install" in dockerfile and "/opt/cupid-airflow" in dockerfile
    for copied in re.findall(r"^COPY \S+ (.+) /opt/cupid-airflow/", dockerfile, re.M):
        for path in copied.split():
            assert (REPO / path).exists(), path


def test_compose_configs_name_tables_the_seed_script_creates(mysql_db: Callable[[str], MySqlDatabase]) -> None:
    configs = sorted((DOCKER / "configs").glob("*.json"))
    assert configs
    scratch = mysql_db("compose")  # the seed's databases get names unique to this run
    prefix = f"{scratch.name}_seed"
    import MySQLdb

    seed = MySQLdb.connect(**MYSQL, autocommit=True)  # no database selected, as in the image's init
    try:
        with seed.cursor() as cursor:
            for statement in demo_seed_statements(prefix):
                cursor.execute(statement)
        seed.close()
        assert scratch.execute(f"SELECT COUNT(*) FROM `{prefix}`.user")[0][0] == 5000
        assert scratch.execute(f"SELECT COUNT(*) FROM `{prefix}_replica`.user")[0][0] == 5000 - 51
        stale = scratch.execute(f"SELECT COUNT(*) FROM `{prefix}_replica`.user WHERE name LIKE '%(stale)'")
        assert stale[0][0] == 56

        for path in configs:
            config = load_config(path)  # raises ConfigError naming the file and key
            src_db = config.src.dsn and config.src.dsn.rsplit("/", 1)[1].split("?")[0]
            wanted = {(src_db, config.src.table, c) for c in [config.src.by_column, "id", *config.des[0].columns]}
            wanted |= {(src_db, config.src.table, config.src.update_column)}
            for des in config.des:
                des_db = des.dsn and des.dsn.rsplit("/", 1)[1].split("?")[0]
                wanted |= {(des_db, des.table, c) for c in [des.by_column, *des.columns.values()]}
            have = {
                (db.replace(prefix, "cupid_demo"), table, column)
                for db, table, column in scratch.execute(
                    "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema IN (%s, %s)",
                    (prefix, f"{prefix}_replica"),
                )
            }
            assert wanted <= have, f"{path}: {sorted(wanted - have)}"
    finally:
        scratch.execute(f"DROP DATABASE IF EXISTS `{prefix}`")
        scratch.execute(f"DROP DATABASE IF EXISTS `{prefix}_replica`")


def test_the_receiver_listens_beyond_loopback_in_a_container(compose: dict[str, Any]) -> None:
    command = compose["services"]["receiver"]["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    url_hosts = {
        load_config(p).des[0].callback_notification.url.split("/")[2] for p in (DOCKER / "configs").glob("*.json")
    }
    assert url_hosts == {f"receiver:{command[command.index('--port') + 1]}"}
