"""Every name cupid gives an Airflow object, built in one place: DAG ids, tags, Variable keys,
asset and watcher names, connection ids.

The DAG factory, the catalog, the operators, the watcher and the plugin all find one another's
objects by these names, so a name is never spelled twice. Nothing here imports Airflow or reads
a config: the functions take what the names are made of.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cupid_airflow.config import CupidConfig

__all__ = [
    "CONFIG_ERROR_TAG",
    "CONFIG_TAG_PREFIX",
    "CUPID_TAG",
    "DES_TAG_PREFIX",
    "MAX_DAG_ID_LENGTH",
    "RECONCILE_SUFFIX",
    "RECONCILE_TAG",
    "SRC_TAG_PREFIX",
    "TAG_MAX_LEN",
    "alert_mark_key",
    "backlog_alias_name",
    "broken_description",
    "broken_problem",
    "config_tag",
    "confirm_spill_key",
    "confirm_state_key",
    "connection_id",
    "insert_cursor_key",
    "is_factory_dag",
    "pair_dag_ids",
    "pair_of",
    "path_part",
    "placeholder_dag_id",
    "reconcile_dag_id",
    "stem_dag_id",
    "table_tags",
    "update_mark_key",
    "watch_asset_identity",
    "watcher_name",
]

#: Airflow's limit on dag ids (``airflow.models.base.ID_LEN``); longer ones fail the whole DAG file's import.
MAX_DAG_ID_LENGTH = 250
#: Airflow's limit on a tag (``airflow.sdk.definitions.dag.TAG_MAX_LEN``): a longer one fails the import.
TAG_MAX_LEN = 100

#: Every DAG the factory builds: the DAG list's filter, and what the cupid view lists.
CUPID_TAG = "cupid"
RECONCILE_TAG = "cupid-reconcile"
CONFIG_ERROR_TAG = "cupid-config-error"
#: ``config:<file name>``: every DAG of a config file, one filter in the UI (and the cupid view's key).
CONFIG_TAG_PREFIX = "config:"
SRC_TAG_PREFIX = "src:"
DES_TAG_PREFIX = "des:"
RECONCILE_SUFFIX = "_reconcile"

# ---------------------------------------------------------------------------- DAG ids


def stem_dag_id(stem: str) -> str:
    """``cupid_<stem>``, with characters Airflow refuses in ids replaced by ``_``."""
    return "cupid_" + re.sub(r"[^\w.-]", "_", stem)


def pair_dag_ids(config: CupidConfig, stem: str) -> list[str]:
    """One dag id per destination: its ``dagId``, else ``cupid_<stem>``, else ``cupid_<stem>_<n>``."""
    base = stem_dag_id(stem)
    if len(config.des) == 1:
        return [config.des[0].dag_id or base]
    return [des.dag_id or f"{base}_{n}" for n, des in enumerate(config.des, start=1)]


def reconcile_dag_id(pair_dag_id: str) -> str:
    """The reconcile DAG of a pair: ``<dag_id>_reconcile``."""
    return f"{pair_dag_id}{RECONCILE_SUFFIX}"


def pair_of(dag_id: str) -> str:
    """The pair DAG's id of a pair or reconcile DAG: both report a divergence under one event id."""
    return dag_id.removesuffix(RECONCILE_SUFFIX)


def placeholder_dag_id(stem_id: str, taken: Collection[str]) -> str:
    """A free id for a broken config's placeholder, within Airflow's length limit: the file's own
    DAG id, else ``cupid_config_error_...``; too long ones are cut and end in a hash of the whole."""
    for candidate in (stem_id, stem_id.replace("cupid_", "cupid_config_error_", 1)):
        if len(candidate) > MAX_DAG_ID_LENGTH:
            digest = hashlib.sha256(candidate.encode()).hexdigest()[:10]
            candidate = f"{candidate[: MAX_DAG_ID_LENGTH - 11]}_{digest}"
        if candidate not in taken:
            return candidate
    n = 2
    while f"{candidate[: MAX_DAG_ID_LENGTH - 8]}_{n}" in taken:
        n += 1
    return f"{candidate[: MAX_DAG_ID_LENGTH - 8]}_{n}"


def broken_description(file_name: str, problem: str) -> str:
    """A broken config's placeholder DAG's description: the file and its first problem."""
    return f"{_BROKEN}{file_name}: {problem}"[:200]


def broken_problem(description: str, file_name: str) -> str:
    """The problem a placeholder's description names (the cupid view lists it)."""
    return description.removeprefix(f"{_BROKEN}{file_name}: ")


_BROKEN = "BROKEN cupid config "

# ---------------------------------------------------------------------------- tags


def config_tag(file_name: str) -> str:
    return f"{CONFIG_TAG_PREFIX}{file_name}"[:TAG_MAX_LEN]


def table_tags(src_table: str, des_table: str) -> list[str]:
    """``src:<database>.<table>`` and ``des:<database>.<table>``, cut to Airflow's tag limit."""
    return [f"{SRC_TAG_PREFIX}{src_table}"[:TAG_MAX_LEN], f"{DES_TAG_PREFIX}{des_table}"[:TAG_MAX_LEN]]


def is_factory_dag(tags: Collection[str]) -> bool:
    """Whether a DAG with these tags is one the DAG factory built from a config (not a DAG whose
    task merely pushed an XCom of one of cupid's keys)."""
    return CUPID_TAG in tags and any(t.startswith(CONFIG_TAG_PREFIX) for t in tags)


# ---------------------------------------------------------------------------- Variables


def insert_cursor_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.insert_cursor"


def update_mark_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.update_hwm"


def alert_mark_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.last_alert"


def confirm_state_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.confirm"


def confirm_spill_key(dag_id: str) -> str:
    """Where candidates beyond what a pair keeps waiting are kept aside (rarely written)."""
    return f"cupid.{dag_id}.confirm.spill"


# ---------------------------------------------------------------------------- assets, watchers, connections


def watch_asset_identity(pair_id: str) -> tuple[str, str]:
    """Name and URI of a watched pair's asset, whose events start the pair's runs: its watcher's,
    and a scan's that left a backlog."""
    return f"cupid-watch/{pair_id}", f"cupid-watch://{pair_id}/"


def backlog_alias_name(pair_id: str) -> str:
    """The scan's outlet alias: an event (a next run) is emitted only when the scan adds one."""
    return f"cupid-backlog/{pair_id}"


def watcher_name(pair_id: str) -> str:
    return f"cupid_watch_{pair_id}"


def connection_id(pair_id: str, side: str) -> str:
    """The id of the in-memory connection a DSN becomes (``side``: ``src`` or ``des``)."""
    return f"cupid_{pair_id}_{side}"


def path_part(name: str) -> str:
    """An id as one folder name inside a report or repair folder: run ids come from whoever triggers a run, and
    ``..`` or ``/`` in one must not move a file out of it. ``:`` and ``+`` become ``_`` (as
    always); a name that needed more gets a hash of the original, so two ids never share a folder."""
    safe = name.replace(":", "_").replace("+", "_")
    if re.fullmatch(r"[\w-][\w.-]*", safe) and len(safe.encode()) <= 200:
        return safe
    cleaned = re.sub(r"[^\w.-]", "_", safe).lstrip(".")[:100]
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
