"""Watchlist freshness: an entry approved too long ago is stale and is not searched.

The rule. A deployment may declare ``watchlist_max_age_h`` (hours, more than 0; null means
no limit). A watchlist entry is *stale* at a moment ``now`` when it is active and
``now >= approved_at + watchlist_max_age_h * 3600``: its approval is at least that old at
the time it would be searched. An entry approved 20 h before the start of a deployment
limited to 24 h is searched for the first 4 h of the run and stale from then on.

- It is judged when the index is loaded at the start, and again while the deployment runs:
  the reconcile loop (:mod:`lfr_actors.control.follow`) knows the moment the next entry goes
  stale (the earliest ``approved_at + max age`` still ahead, :attr:`Freshness.next_stale_at`)
  and reloads the index without it within about a second of that moment.
- Stale is computed from the clock and the record, never stored. Nothing is written,
  deleted or destroyed because an entry is stale: it keeps its state (active), its image
  and its templates until someone deletes it or the deployment closes, and it is listed as
  stale in ``lfr status``, the console and the report.
- An entry approved later is fresh again: enrol the person again (a new entry id, as ids
  are never reused) and have it approved; the stale one can then be deleted.
- Only active entries can be stale: a pending entry is not searched because it is not yet
  approved, and a deleted or destroyed one has no templates left.

:func:`searched_entry_ids` gives the entries a deployment searches at a moment (active,
not damaged, not stale): the watchlist size that an expected false alert rate is for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from lfr_actors.store.records import EntryRecord, EntryState, StaleEntry, UnknownDeploymentError

HOUR_S = 3600.0


def stale_at(approved_at: float | None, max_age_h: float | None) -> float | None:
    """The moment an entry approved at ``approved_at`` goes stale; None when it never does."""
    if approved_at is None or max_age_h is None:
        return None
    return approved_at + max_age_h * HOUR_S


def entry_stale_at(entry: EntryRecord) -> float | None:
    """When ``entry`` is (or was) stale under its deployment's limit; None for never.

    Only an active entry is ever stale; for the others this is the moment it would be.
    """
    return stale_at(entry.approved_at, entry.watchlist_max_age_h)


def entry_is_stale(entry: EntryRecord, now: float) -> bool:
    """Whether ``entry`` is active but was approved too long ago to be searched at ``now``."""
    when = entry_stale_at(entry)
    return entry.state is EntryState.ACTIVE and when is not None and now >= when


@dataclass(frozen=True)
class Freshness:
    """The deployment's stale entries at one moment, and when the next one goes stale."""

    max_age_h: float | None
    stale: tuple[StaleEntry, ...] = ()
    """Stale active entries, the longest stale first."""
    next_stale_at: float | None = None
    """The earliest moment still ahead at which a fresh active entry goes stale; None: none."""

    @property
    def stale_ids(self) -> list[str]:
        """The stale entries' ids, sorted."""
        return sorted(s.entry_id for s in self.stale)


def judge(
    approvals: Iterable[tuple[str, float | None]], max_age_h: float | None, now: float
) -> Freshness:
    """Which of the active entries ``approvals`` (id, approved_at) are stale at ``now``."""
    stale: list[StaleEntry] = []
    ahead: list[float] = []
    for entry_id, approved_at in approvals:
        when = stale_at(approved_at, max_age_h)
        if when is None or approved_at is None:
            continue
        if now >= when:
            stale.append(StaleEntry(entry_id, approved_at, when))
        else:
            ahead.append(when)
    stale.sort(key=lambda s: (s.stale_since, s.entry_id))
    return Freshness(max_age_h, tuple(stale), min(ahead) if ahead else None)


def max_age_h(conn: Any, deployment_id: str) -> float | None:
    """The deployment's ``watchlist_max_age_h`` as ``conn`` sees it (None: no limit)."""
    row = conn.execute(
        "SELECT watchlist_max_age_h FROM deployments WHERE id = ?", (deployment_id,)
    ).fetchone()
    if row is None:
        raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
    return None if row[0] is None else float(row[0])


def read_freshness(conn: Any, deployment_id: str, now: float) -> Freshness:
    """The deployment's stale entries at ``now``, read over ``conn`` (one snapshot)."""
    limit = max_age_h(conn, deployment_id)
    if limit is None:
        return Freshness(None)
    rows = conn.execute(
        "SELECT id, approved_at FROM watchlist_entries WHERE deployment_id = ? AND state = ?",
        (deployment_id, str(EntryState.ACTIVE)),
    ).fetchall()
    return judge(((str(i), _time(a)) for i, a in rows), limit, now)


def searched_entry_ids(
    conn: Any, deployment_id: str, now: float, *, damaged: Collection[str]
) -> list[str]:
    """The entries the deployment searches at ``now``: active, not damaged, not stale; sorted.

    Their number is the watchlist size an expected false alert rate is computed for.
    ``damaged`` names the damaged entries (the index's load finds them:
    :meth:`~lfr_actors.store.watchlist.WatchlistEntries.damaged_ids` keeps them per
    revision), so only ids and approval times are read, over the covering index
    ``watchlist_entries_searched``, with the rule of :func:`stale_at` in SQL.
    """
    limit = max_age_h(conn, deployment_id)
    fresh = "" if limit is None else " AND (approved_at IS NULL OR approved_at + ? > ?)"
    rows = conn.execute(
        "SELECT id FROM watchlist_entries WHERE deployment_id = ? AND state = ?" + fresh,
        (deployment_id, str(EntryState.ACTIVE), *(() if limit is None else (limit * HOUR_S, now))),
    ).fetchall()
    return sorted(str(r[0]) for r in rows if str(r[0]) not in damaged)


def _time(value: Any) -> float | None:
    return None if value is None else float(value)
