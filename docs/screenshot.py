"""Take the README's screenshots of the Airflow UI: a real deployment, a real run, a real browser.

    make screenshot      # needs Debian's chromium (apt-get install chromium) and MariaDB

Starts the deployment the end-to-end test uses (tests/stack.py), loads the compose stack's demo
data into throwaway MariaDB databases, lets the generated DAG run once, and has headless
Chromium render the run's page from the api-server into ``docs/img/dag-run.png``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cupid_airflow.jsonc import strip_comments  # noqa: E402
from tests.stack import AirflowStack, Recorder, demo_seed_statements, wait_for  # noqa: E402

OUT = REPO / "docs" / "img"
DAG_ID = "cupid_user"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--hide-scrollbars",
    "--window-size=1400,860",
    "--virtual-time-budget=20000",
]


def shoot(url: str, path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--screenshot={path}", url], check=True, capture_output=True)
    print(f"wrote {path.relative_to(REPO)}")


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
        (stack.configs / "user.json").write_text(json.dumps(config))
        wait_for(lambda: stack.dag(DAG_ID), 120, f"{DAG_ID} to appear")
        stack.cli("dags", "trigger", DAG_ID, "--run-id", "manual_start_id_1", "--conf", '{"start_id": 1}')
        run = stack.wait_run_done(DAG_ID, "manual_start_id_1", 180)
        print(f"run {run['dag_run_id']}: {run['state']}, {len(receiver.events)} callbacks received")
        OUT.mkdir(parents=True, exist_ok=True)
        shoot(f"{stack.url}/dags/{DAG_ID}/runs/manual_start_id_1", OUT / "dag-run.png")
    finally:
        stack.stop()
        stack.drop_database()
        shutil.rmtree(home, ignore_errors=True)
        receiver.stop()
        cursor.execute(f"DROP DATABASE IF EXISTS `{prefix}`")
        cursor.execute(f"DROP DATABASE IF EXISTS `{prefix}_replica`")


if __name__ == "__main__":
    main()
