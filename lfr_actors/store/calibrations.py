"""A deployment's calibration: stored, audited, and read as expected beside observed alerts.

The calibration file's document (:mod:`lfr_actors.calibration`: scores only, no faces) is
kept in ``deployments.calibration`` as canonical JSON. Setting it is one transaction with
its audit entry (``deployment.calibration``: the old and new file's model, date and
SHA-256, and who); the same document again changes nothing and writes nothing. A closed
deployment's calibration no longer changes.

:func:`false_alerts` gives what ``GET /v1/deployments/{id}`` and the report show: the
expected false alerts per 1,000 passers-by for the watchlist searched now (active entries
less the damaged ones) at the threshold in force, beside those observed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lfr_actors.calibration import (
    CalibrationError,
    CalibrationFile,
    calibration_summary,
    document_text,
    false_alert_figures,
)
from lfr_actors.store.audit import Action, Actor, append_entry
from lfr_actors.store.freshness import searched_entry_ids
from lfr_actors.store.records import (
    DeploymentRecord,
    closed_error,
    require_deployment,
)

if TYPE_CHECKING:
    import sqlite3

    from lfr_actors.store.watchlist import WatchlistEntries


def stored_calibration(conn: sqlite3.Connection, deployment_id: str) -> CalibrationFile | None:
    """The deployment's calibration as ``conn`` sees it, or None (validated when stored).

    :class:`~lfr_actors.calibration.CalibrationError` when the stored text no longer
    reads as a calibration (changed on disk), naming the deployment.
    """
    row = conn.execute(
        "SELECT calibration FROM deployments WHERE id = ?", (deployment_id,)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    try:
        return CalibrationFile.model_validate_json(row[0])
    except ValidationError as exc:
        raise CalibrationError(
            f"the calibration stored for deployment {deployment_id!r} cannot be read "
            f"({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}); store it "
            "again (PUT /v1/deployments/{id}/calibration, or alerts.calibration and lfr up)"
        ) from exc


def shown_calibration(
    conn: sqlite3.Connection, deployment_id: str
) -> tuple[CalibrationFile | None, str | None]:
    """The calibration to show beside the observed rate, or None and why it cannot be.

    A deployment's answer and its report stay readable when its stored calibration is
    damaged: the expected rate is null with the reason instead.
    """
    try:
        return stored_calibration(conn, deployment_id), None
    except CalibrationError as exc:
        return None, str(exc)


def _audited(text: str | None) -> dict[str, Any] | None:
    """What the audit entry says of a stored calibration: its summary and SHA-256.

    A stored text that no longer reads as a calibration (changed on disk) is named by its
    hash with ``damaged`` true, so it can still be replaced or removed.
    """
    if text is None:
        return None
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    try:
        summary = calibration_summary(CalibrationFile.model_validate_json(text))
    except ValidationError:
        return {"damaged": True, "sha256": sha256}
    return {**summary, "sha256": sha256}


def _store(
    deployments: WatchlistEntries,
    deployment_id: str,
    text: str | None,
    *,
    actor: Actor,
    reason: str | None = None,
) -> tuple[DeploymentRecord, bool]:
    """Store ``text`` (None: no calibration) as the deployment's, audited; whether it changed."""
    with deployments.db.transaction() as conn:
        record = require_deployment(conn, deployment_id)
        if record.closed_at is not None:
            raise closed_error(record)
        old = conn.execute(
            "SELECT calibration FROM deployments WHERE id = ?", (deployment_id,)
        ).fetchone()[0]
        if old == text:
            return record, False
        conn.execute("UPDATE deployments SET calibration = ? WHERE id = ?", (text, deployment_id))
        append_entry(
            conn,
            actor,
            Action.CALIBRATION_SET,
            deployment_id,
            {
                "from": _audited(old),
                "to": _audited(text),
                **({} if reason is None else {"reason": reason}),
            },
            at=deployments.clock(),
        )
    return record, True


def set_calibration(
    deployments: WatchlistEntries,
    deployment_id: str,
    calibration: CalibrationFile,
    *,
    actor: Actor,
) -> tuple[DeploymentRecord, bool]:
    """Store the deployment's calibration (audited with the old and the new one).

    Returns the record and whether it changed. :class:`DeploymentClosedError` for a
    closed deployment, :class:`UnknownDeploymentError` for an unknown id; either way
    nothing is stored or audited.
    """
    return _store(deployments, deployment_id, document_text(calibration), actor=actor)


def remove_calibration(
    deployments: WatchlistEntries, deployment_id: str, *, actor: Actor, reason: str
) -> tuple[DeploymentRecord, bool]:
    """Withdraw the deployment's calibration (audited, ``to`` null): no expected rate is shown.

    For a calibration found unfit (another population, a flawed run) with none to replace
    it; a damaged one may be removed too. ``reason`` (why) is in the audit entry. Returns
    the record and whether anything was stored; errors as :func:`set_calibration`.
    """
    return _store(deployments, deployment_id, None, actor=actor, reason=reason)


def figures(
    record: DeploymentRecord,
    calibration: CalibrationFile | None,
    *,
    searched: int,
    false_alerts: int,
    unreadable: str | None = None,
) -> dict[str, Any]:
    """The ``false_alerts`` figures of ``record`` (see :func:`false_alert_figures`).

    ``searched`` is the watchlist size: the entries in the index now, i.e. active, not
    damaged and not stale (:func:`lfr_actors.store.freshness.searched_entry_ids`).
    """
    return false_alert_figures(
        calibration,
        watchlist_size=searched,
        threshold=record.threshold,
        false_alerts=false_alerts,
        tracks_seen=record.tracks_seen,
        faces_seen=record.faces_seen,
        closed=record.closed_at is not None,
        unreadable=unreadable,
    )


def false_alerts(deployments: WatchlistEntries, deployment_id: str) -> dict[str, Any]:
    """Expected and observed false alerts of one deployment now (one snapshot of the file)."""
    now = deployments.clock()
    damaged = deployments.damaged_ids(deployment_id)  # kept per watchlist revision
    with deployments.db.snapshot() as conn:
        record = require_deployment(conn, deployment_id)
        searched = searched_entry_ids(conn, deployment_id, now, damaged=damaged)
        false_count = observed_false_alerts(conn, deployment_id)
        calibration, unreadable = shown_calibration(conn, deployment_id)
    return figures(
        record,
        calibration,
        searched=len(searched),
        false_alerts=false_count,
        unreadable=unreadable,
    )


def observed_false_alerts(conn: Any, deployment_id: str) -> int:
    """Alerts whose decision in force is not_a_match, in both queues.

    A false match against a test subject's entry is as false as one against a suspect's:
    the expected rate counts every entry searched, so the observed one counts every queue
    (the Met's published ``alerts.false`` counts suspects only).
    """
    row = conn.execute(
        "SELECT COUNT(*) FROM alerts a JOIN adjudications j "
        "ON j.id = (SELECT MAX(id) FROM adjudications WHERE alert_id = a.id) "
        "WHERE a.deployment_id = ? AND j.decision = 'not_a_match'",
        (deployment_id,),
    ).fetchone()
    return int(row[0])
