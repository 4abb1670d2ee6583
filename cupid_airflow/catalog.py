"""A folder of cupid configs: every file loaded on its own, dag ids checked across files.

Shared by the DAG factory and ``python -m cupid_airflow validate`` so both judge a folder the same
way. One broken file never stops the others from loading.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cupid_airflow.config import MAX_CONFIG_BYTES, ConfigError, CupidConfig, Problem, load_config
from cupid_airflow.names import MAX_DAG_ID_LENGTH, pair_dag_ids, pair_of, reconcile_dag_id, stem_dag_id

__all__ = ["CONFIG_DIR_ENV", "ConfigEntry", "config_files", "default_config_dir", "files_for_dag", "load_catalog"]

CONFIG_DIR_ENV = "CUPID_CONFIG_DIR"


@dataclass(slots=True)
class ConfigEntry:
    """One config file: its DAG ids, and either its config or the error that stops it."""

    path: Path
    config: CupidConfig | None = None
    error: ConfigError | None = None
    dag_ids: list[str] = field(default_factory=list)

    @property
    def stem_dag_id(self) -> str:
        return stem_dag_id(self.path.stem)

    @property
    def reconcile_dag_ids(self) -> dict[int, str]:
        """Destination index -> its reconcile DAG's id, for the destinations that reconcile."""
        return _reconcile_ids(self.config, self.dag_ids) if self.config is not None else {}

    @property
    def all_dag_ids(self) -> list[str]:
        """Every DAG this file builds: pair DAGs, then reconcile DAGs."""
        return [*self.dag_ids, *self.reconcile_dag_ids.values()]


def _reconcile_ids(config: CupidConfig, pair_ids: list[str]) -> dict[int, str]:
    return {i: reconcile_dag_id(d) for i, d in enumerate(pair_ids) if config.reconcile_for(i) is not None}


def config_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``*.json`` files among ``paths`` (folders are listed, not recursed), sorted for stable order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.glob("*.json") if f.is_file() and not f.name.startswith(".")))
        else:
            found.append(p)
    return found


def files_for_dag(dag_id: str, files: Sequence[Path]) -> list[Path] | None:
    """The one file that builds ``dag_id``, for a task process (Airflow's parsing context names the
    DAG it runs), or None when only loading every file can tell.

    A task needs only its own DAG: loading and building every config costs each task start about
    2.6 ms per config (1.3 s with 500). The owner is the file named for the id (``cupid_<stem>``,
    with ``_<n>`` and ``_reconcile``), unless another file mentions the id: a ``dagId`` there may
    claim it, and then the whole catalog decides, as the dag-processor did.
    """
    ids = {dag_id, pair_of(dag_id)}
    named = [
        f for f in files
        if any(i == (stem := stem_dag_id(f.stem)) or re.fullmatch(re.escape(stem) + r"_\d+", i) for i in ids)
    ]  # fmt: skip
    if len(named) != 1:
        return None
    for other in files:
        if other == named[0]:
            continue
        try:
            if other.stat().st_size > MAX_CONFIG_BYTES or any(i in other.read_text(errors="replace") for i in ids):
                return None
        except OSError:
            return None
    return named


def load_catalog(files: Iterable[Path]) -> list[ConfigEntry]:
    """Load each file; a dag id claimed by an earlier file (in the given order) is an error for the later one."""
    owners: dict[str, Path] = {}
    entries: list[ConfigEntry] = []
    for path in files:
        entry = ConfigEntry(path)
        entries.append(entry)
        try:
            entry.config = load_config(path)
        except ConfigError as e:
            entry.error = e
            continue
        except Exception as e:  # one file never hides the others; the message may quote its text: not shown
            entry.error = ConfigError(str(path), [Problem("", f"cannot be loaded: {type(e).__name__}")])
            continue
        ids = pair_dag_ids(entry.config, path.stem)
        # Pair and reconcile DAGs share one namespace: a dagId of "cupid_user_reconcile" must not
        # silently replace user.json's reconcile DAG.
        generated = [(i, d, "dag id") for i, d in enumerate(ids)]
        generated += [(i, d, "reconcile dag id") for i, d in _reconcile_ids(entry.config, ids).items()]
        problems = [_too_long(entry.config, i, d, what) for i, d, what in generated if len(d) > MAX_DAG_ID_LENGTH]
        if problems:  # Airflow would fail the import of the DAG file, and every cupid DAG with it
            entry.config, entry.error = None, ConfigError(str(path), problems)
            continue
        mine: set[str] = set()
        for i, dag_id, what in generated:
            owner = owners.get(dag_id)
            if owner is not None or dag_id in mine:
                where = f"{owner}" if owner is not None else "this file"
                problems.append(
                    Problem(f"des[{i}]", f"{what} {dag_id!r} is already used by {where}; set a unique 'dagId'")
                )
            mine.add(dag_id)
        if problems:
            entry.config, entry.error = None, ConfigError(str(path), problems)
            continue
        entry.dag_ids = ids
        owners.update(dict.fromkeys(mine, path))
    return entries


def _too_long(config: CupidConfig, index: int, dag_id: str, what: str) -> Problem:
    size = f"the {what} {dag_id[:40]!r}... of {len(dag_id)} characters; Airflow allows at most {MAX_DAG_ID_LENGTH}"
    if config.des[index].dag_id:
        return Problem(f"des[{index}].dagId", f"makes {size}; shorten dagId")
    return Problem("", f"the file name makes {size}; shorten the file name or set a shorter des[{index}].dagId")


def default_config_dir(dag_file: str | Path | None = None) -> Path:
    """``$CUPID_CONFIG_DIR``, else ``configs/`` beside the DAG file (or ``dags/configs`` from here)."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    if dag_file is not None:
        return Path(dag_file).resolve().parent / "configs"
    for candidate in (Path("dags/configs"), Path("configs")):
        if candidate.is_dir():
            return candidate
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return home / "dags" / "configs"
