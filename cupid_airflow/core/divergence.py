"""The kinds of divergence cupid reports: one definition for the callback contract, the tallies,
the run notes, the cupid view, the metrics and the lineage facets."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Divergence"]


class Divergence(IntEnum):
    """A divergence's ``type`` in the callback body (cupid-go's numbers)."""

    MISSING = 1  # no destination row has the source row's key
    DIFFERENT = 2  # a destination row exists, and a mapped column differs
    GONE = 3  # a destination row whose key no source row has (reconcile only: a delete that did not replicate)

    @property
    def key(self) -> str:
        """How tallies, the view's JSON and metrics tags count it: ``"1"``, ``"2"``, ``"3"``."""
        return str(int(self))

    @property
    def label(self) -> str:
        """What a person reads: ``missing``, ``different``, ``gone from the source``."""
        return _LABELS[self]

    @property
    def assertion(self) -> str:
        """Its OpenLineage data-quality assertion on the destination table."""
        return _ASSERTIONS[self][0]

    @property
    def assertion_text(self) -> str:
        return _ASSERTIONS[self][1]

    @classmethod
    def scanned(cls) -> tuple[Divergence, ...]:
        """What the scans look for; reconcile looks for all three."""
        return (cls.MISSING, cls.DIFFERENT)


_LABELS = {Divergence.MISSING: "missing", Divergence.DIFFERENT: "different", Divergence.GONE: "gone from the source"}
_ASSERTIONS = {
    Divergence.MISSING: ("missing_rows", "no source row is missing from the destination (cupid type 1)"),
    Divergence.DIFFERENT: ("different_rows", "no mapped column differs from the source (cupid type 2)"),
    Divergence.GONE: ("gone_rows", "no destination row is gone from the source (cupid type 3, reconcile)"),
}
