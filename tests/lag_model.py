"""A replica that applies each source change some seconds late, in commit order, and loses some: a
model of canal or Debezium under load, for tests of the confirmation core (``tests/test_confirm.py``)
in simulated time. The end-to-end tests and ``make bench-lag`` run a real one (``tests/lag.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cupid_airflow.core.confirm import Confirmer, Found, Observed, Recheck, new_state
from cupid_airflow.core.events import Event


@dataclass
class Change:
    at: float  # commit time
    key: str
    version: int
    lost: bool = False
    applied_at: float | None = None  # when the replica applies it (None: never)


@dataclass
class Replica:
    """Source changes, and when a replica with lag ``lag(commit time)`` applies each of them:
    in commit order (a change is never applied before the one committed before it)."""

    lag: Callable[[float], float]
    changes: list[Change] = field(default_factory=list)
    _last_apply: float = 0.0

    def commit(self, at: float, key: str, lost: bool = False) -> Change:
        version = sum(1 for c in self.changes if c.key == key) + 1
        change = Change(at, key, version, lost)
        self._last_apply = max(self._last_apply, at + self.lag(at))
        change.applied_at = None if lost else self._last_apply
        self.changes.append(change)
        return change

    def source(self, key: str, now: float) -> Change | None:
        """The key's newest committed version."""
        return next((c for c in reversed(self.changes) if c.key == key and c.at <= now), None)

    def replica(self, key: str, now: float) -> int:
        """The key's newest version the replica holds (0: the row is missing)."""
        applied = [c.version for c in self.changes if c.key == key and c.applied_at is not None and c.applied_at <= now]
        return max(applied, default=0)


def _event(key: str, src: int, des: int) -> Event:
    return Event(
        type=1 if des == 0 else 2, srcColumn={"number": key, "v": str(src)}, eventId=f"{key}-{src}", byValue=key,
        **({"desColumn": {"number": key, "v": str(des)}} if des else {}),  # type: ignore[typeddict-item]
    )  # fmt: skip


@dataclass
class Run:
    """The scans of one pair over a simulated timeline, as the scan task drives the confirmer."""

    replica: Replica
    cap: float = 60.0
    version_mapped: bool = True  # the replica keeps src.updateColumn: equality proves a version arrived
    confirmer: Confirmer = field(init=False)
    called_back: list[tuple[float, Event]] = field(default_factory=list)
    scanned_until: float = -1.0
    look: float | None = None  # when the scan asked to be run again (the watcher starts a run then)

    def __post_init__(self) -> None:
        self.confirmer = Confirmer(new_state(), self.cap, version=self.version_mapped)

    def scan(self, now: float) -> None:
        """Compare what changed since the last scan, then look at the waiting candidates again."""
        keys = list(dict.fromkeys(c.key for c in self.replica.changes if self.scanned_until < c.at <= now))
        self.scanned_until = now
        observed, found = Observed(), []
        probe = self.confirmer.probe(f"scan at {now}")
        for key in keys:
            change = self.replica.source(key, now)
            assert change is not None
            held = self.replica.replica(key, now)
            if held == change.version:
                observed.applied(change.at, _id(key), now, self.cap, version=self.version_mapped, present=True,
                                 first_sight=True)  # fmt: skip
                observed.arrived_since(probe, _id(key), now, self.cap)
            else:
                new = change.version == 1 and probe is not None and _id(key) > probe[0]
                found.append(Found(_event(key, change.version, held), change.at, _id(key), new=new))
        confirmer = self.confirmer
        confirmer.observe(observed, now)
        verdict = confirmer.add(found, now, frontier=self.frontier(now))
        self.called_back += [(now, e) for e in verdict.confirmed]
        rechecks = []
        for key in confirmer.due(now):
            if any(f.event["byValue"] == key for f in found):
                continue  # just found
            change = self.replica.source(key, now)
            assert change is not None
            held = self.replica.replica(key, now)
            event = None if held == change.version else _event(key, change.version, held)
            rechecks.append(Recheck(key, event, change.at, _id(key)))
        verdict = confirmer.recheck(rechecks, now, frontier=self.frontier(now))
        self.called_back += [(now, e) for e in verdict.confirmed]
        confirmer.probed(f"scan at {now}", self.frontier(now), now)
        self.look = confirmer.next_look(now)

    def frontier(self, now: float) -> int:
        """The source's highest id, read after the scan's compare."""
        return max((_id(c.key) for c in self.replica.changes if c.at <= now), default=0)

    def play(self, until: float, detect: float = 2.5, gap: float = 3.0) -> None:
        """Scans as the watcher starts them: ``detect`` s after a change (at most one per ``gap``
        s), and when the confirmer asks to look again."""
        now = 0.0
        last = -gap
        while now <= until:
            changed = any(self.scanned_until < c.at <= now - detect for c in self.replica.changes)
            if (changed and now - last >= gap) or (self.look is not None and now >= self.look):
                self.scan(now)
                last = now
            now = round(now + 0.25, 2)

    def false_callbacks(self) -> list[Event]:
        """Called back although the version it reported reached the replica."""
        return [e for _, e in self.called_back if self._change(e).lost is False]

    def missed(self) -> list[Change]:
        """Lost changes never called back."""
        reported = {(e["byValue"], int(e["srcColumn"]["v"])) for _, e in self.called_back if e["srcColumn"]}
        return [c for c in self.replica.changes if c.lost and (c.key, c.version) not in reported]

    def delays(self) -> list[float]:
        """Seconds from each lost change's commit to its callback."""
        return [at - self._change(e).at for at, e in self.called_back if self._change(e).lost]

    def _change(self, event: Event) -> Change:
        assert event["srcColumn"] is not None
        version = int(event["srcColumn"]["v"])
        return next(c for c in self.replica.changes if c.key == event["byValue"] and c.version == version)


def _id(key: str) -> int:
    return int(key.lstrip("n"))
