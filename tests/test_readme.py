"""The README is the user's manual: every command in its shell blocks must be one a test runs.

Each command is matched to the test that runs it (and that test must still contain the call), so
a command added to the README without a test, or a test that stops running it, fails here.
"""

from __future__ import annotations

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()

#: README command (regex) -> (file that runs it, text that file must contain).
RUN_BY: dict[str, tuple[str, str]] = {
    r"make demo": ("tests/test_demo.py", '"cupid_airflow", "demo"'),
    r"make test": (".ci/run", "make test"),
    r"AIRFLOW_HOME=\S+ AIRFLOW__CORE__DAGS_FOLDER=\S+ AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True "
    r"\S+airflow api-server --host 127.0.0.1 --port 8080": ("tests/test_demo.py", '"see it in the UI:"'),
    r"docker compose (up -d --build|down -v)": ("tests/test_compose.py", '"-f", str(COMPOSE), "config", "--quiet"'),
    # The CeleryExecutor deployment tests/test_e2e_celery.py runs (settings and commands in tests/stack.py).
    r"export AIRFLOW__CORE__EXECUTOR=CeleryExecutor": ("tests/stack.py", '"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"'),
    r"export AIRFLOW__CELERY__BROKER_URL=redis://\S+": ("tests/stack.py", '"AIRFLOW__CELERY__BROKER_URL": f"redis://'),
    r"export AIRFLOW__CELERY__RESULT_BACKEND=db\+postgresql://\S+": (
        "tests/stack.py",
        '"AIRFLOW__CELERY__RESULT_BACKEND": (\n                        f"db+postgresql://',
    ),
    r"export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=86400": (
        "tests/stack.py",
        '"AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400"',
    ),
    r"export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://\S+/execution/": (
        "tests/stack.py",
        '"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/"',
    ),
    r"airflow scheduler & airflow dag-processor & airflow triggerer & airflow api-server &": (
        "tests/stack.py",
        'COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")',
    ),
    r"airflow celery worker --celery-hostname \S+@%h --queues \S+": (
        "tests/stack.py",
        '[*CELERY_WORKER_COMMAND, "--celery-hostname", f"{name}@%h", "--queues"',
    ),
    # Metrics on (README "Metrics"): tests/test_metrics.py sends to its StatsD listener with these settings.
    r"export AIRFLOW__METRICS__STATSD_(ON=True|HOST=\S+|PORT=\d+)": (
        "tests/test_metrics.py",
        'env.setenv("AIRFLOW__METRICS__STATSD_ON", "True")',
    ),
    r"python -m cupid_airflow validate --connect .*": ("tests/test_validate_connect.py", '"validate", "--connect"'),
    r"python -m cupid_airflow validate( .*)?": ("tests/test_cli.py", '"validate"'),
    r"airflow dags trigger cupid_user": ("tests/test_e2e.py", '"dags", "trigger", DAG_ID, "--run-id", "e2e_gone"'),
    # README "Repair": the write connection and an answer to the approval, as the e2e gives them.
    r"airflow connections add user_replica_write --conn-uri 'mysql://\S+'": (
        "tests/test_e2e.py",
        'stack.cli("connections", "add", "cupid_e2e_write", "--conn-uri", f"mysql://',
    ),
    r"curl -X PATCH \S+/taskInstances/repair/0/hitlDetails\S* .*": (
        "tests/test_e2e.py",
        'stack.api(hitl(run_id), "PATCH", {"chosen_options": [option], "params_input": {}})',
    ),
    r"airflow dags trigger cupid_user_reconcile": ("tests/test_e2e.py", '"dags", "trigger", reconcile_id'),
    r"airflow dags test cupid_user_reconcile": ("tests/test_reconcile.py", '"dags", "test", dag_id'),
    r"airflow dags trigger cupid_user --conf '\{\"start_id\": 1\}'": (
        "tests/test_e2e.py",
        '"--conf", \'{"start_id": 1}\'',
    ),
    r"airflow backfill create --dag-id cupid_user --from-date \S+ --to-date \S+": (
        "tests/test_e2e.py",
        '"backfill", "create", "--dag-id", DAG_ID',
    ),
    r"curl -X POST \"\$AIRFLOW_URL/api/v2/dags/cupid_user/clearTaskInstances\" .*": (
        "tests/test_e2e.py",
        'f"dags/{DAG_ID}/clearTaskInstances", "POST"',
    ),
}


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+", " ", line.split(" # ")[0]).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_every_readme_command_is_run_by_a_test() -> None:
    commands = readme_commands()
    assert len(commands) >= 10
    unmatched = [c for c in commands if not any(re.fullmatch(pattern, c) for pattern in RUN_BY)]
    assert not unmatched, f"README commands no test runs (add one, then map it in RUN_BY): {unmatched}"


def test_the_tests_still_run_them() -> None:
    for pattern, (path, needle) in RUN_BY.items():
        assert needle in (REPO / path).read_text(), f"{path} no longer runs the README's `{pattern}`"
