"""Take the README's screenshots of the Airflow UI: a real deployment, real runs, a real browser.

    make screenshot      # needs Debian's chromium (apt-get install chromium) and MariaDB

Starts the deployment the end-to-end test uses (tests/stack.py), loads the compose stack's demo
data into throwaway MariaDB databases, drops the demo config (and a broken one) into its folder,
lets the generated DAG run three times (the first finds the seeded divergences, the next ones
what changed since), and has headless Chromium, logged in, render the run's page into
``docs/img/dag-run.png`` and the cupid view into ``docs/img/cupid-view.png``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cupid_airflow.jsonc import strip_comments  # noqa: E402
from tests.browser import open_view, screenshot_page  # noqa: E402
from tests.stack import AirflowStack, Recorder, demo_seed_statements, wait_for  # noqa: E402

OUT = REPO / "docs" / "img"
DAG_ID = "cupid_user"


def main() -> None:
    import MySQLdb

    prefix = f"cupid_shot_{uuid.uuid4().hex[:6]}"
    conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="", autocommit=True)
    cursor = conn.cursor()
    receiver = Recorder().start()
    home = Path(tempfile.mkdtemp(prefix="cupid-shot-"))
    stack = AirflowStack(home)
    try:
        for statement in demo_seed_statements(prefix):
            cursor.execute(statement)
        stack.start()
        config = json.loads(strip_comments((REPO / "docker" / "configs" / "user.json").read_text()))
        config["src"]["dsn"] = f"root:@tcp(127.0.0.1:3306)/{prefix}?charset=utf8mb4"
        config["des"][0]["dsn"] = f"root:@tcp(127.0.0.1:3306)/{prefix}_replica?charset=utf8mb4"
        config["des"][0]["callbackNotification"]["url"] = f"{receiver.url}/cupid/user"
        config["schedule"] = "@hourly"
        config["watch"] = False
        (stack.configs / "user.json").write_text(json.dumps(config))
        (stack.configs / "orders.json").write_text('{"src": {"table": "orders"}}')  # broken: the view lists it
        wait_for(lambda: stack.dag(DAG_ID), 120, f"{DAG_ID} to appear")
        stack.cli("dags", "trigger", DAG_ID, "--run-id", "manual_start_id_1", "--conf", '{"start_id": 1}')
        run = stack.wait_run_done(DAG_ID, "manual_start_id_1", 180)
        print(f"run {run['dag_run_id']}: {run['state']}, {len(receiver.events)} callbacks received")
        for n, garbled in enumerate((3, 1), start=2):  # later runs: a few new rows the replica missed
            cursor.execute(
                f"INSERT INTO `{prefix}`.`user` (number, name, avatar) SELECT CONCAT('new', {n}, '-', id), name, "
                f"avatar FROM `{prefix}`.`user` ORDER BY id LIMIT {garbled}"
            )
            stack.cli("dags", "trigger", DAG_ID, "--run-id", f"manual_{n}")
            stack.wait_run_done(DAG_ID, f"manual_{n}", 180)
        OUT.mkdir(parents=True, exist_ok=True)
        token = stack.token()
        screenshot_page(stack.url, token, f"dags/{DAG_ID}/runs/manual_start_id_1", OUT / "dag-run.png")
        print(f"wrote {(OUT / 'dag-run.png').relative_to(REPO)}")
        view = open_view(stack.url, token, OUT / "cupid-view.png")
        print(f"wrote {(OUT / 'cupid-view.png').relative_to(REPO)}: {view.summary}")
    finally:
        stack.stop()
        stack.drop_database()
        shutil.rmtree(home, ignore_errors=True)
        receiver.stop()
        cursor.execute(f"DROP DATABASE IF EXISTS `{prefix}`")
        cursor.execute(f"DROP DATABASE IF EXISTS `{prefix}_replica`")


if __name__ == "__main__":
    main()
