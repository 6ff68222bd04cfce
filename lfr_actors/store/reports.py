"""The report of one deployment: the figures the Metropolitan Police publishes.

Read in one snapshot of the store file: the deployment, its watchlist by state, its alerts
and the decision in force on each (:meth:`lfr_actors.store.deployments.Deployments.report`
is where it is asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lfr_actors.store.calibrations import figures as calibration_figures
from lfr_actors.store.calibrations import observed_false_alerts, shown_calibration
from lfr_actors.store.db import Database
from lfr_actors.store.freshness import read_freshness, searched_entry_ids
from lfr_actors.store.monitoring import demographics_breakdown
from lfr_actors.store.policy import read_policy, threshold_history
from lfr_actors.store.records import EntryState, require_deployment
from lfr_actors.store.test_subjects import test_subject_figures


def deployment_report(
    db: Database, deployment_id: str, *, now: float, damaged: Mapping[str, str]
) -> dict[str, Any]:
    """The deployment's figures at ``now``; ``damaged`` names the entries left out of the index.

    Alerts are counted by the decision in force (the latest, corrections included);
    outcomes are those of confirmed matches. ``false_alert_rate`` is false alerts per
    face seen (null before any face was seen). ``tracks_seen`` counts the face tracks: the
    people seen, each once per camera however many frames they were in.
    ``threshold_history`` is the threshold it was created with and each change since (from
    the audit log); ``threshold_policy`` the store's policy in force
    (:mod:`lfr_actors.store.policy`). ``watchlist.stale``
    counts the active entries approved longer ago than ``watchlist_max_age_h`` at ``now``
    (:mod:`lfr_actors.store.freshness`): not searched. The alert figures
    count suspects' alerts only; ``test_subjects`` gives the test subjects' own figures
    (:func:`~lfr_actors.store.test_subjects.test_subject_figures`).
    """
    with db.snapshot() as conn:
        record = require_deployment(conn, deployment_id)
        entries = dict(
            conn.execute(
                "SELECT state, COUNT(*) FROM watchlist_entries WHERE deployment_id = ? "
                "GROUP BY state",
                (deployment_id,),
            ).fetchall()
        )
        approved = conn.execute(
            "SELECT COUNT(*) FROM watchlist_entries WHERE deployment_id = ? "
            "AND approved_at IS NOT NULL",
            (deployment_id,),
        ).fetchone()[0]
        alerts = conn.execute(
            # Suspects' alerts only: a test subject's are counted in test_subjects.
            "SELECT COUNT(*) FROM alerts WHERE deployment_id = ? AND test_subject = 0",
            (deployment_id,),
        ).fetchone()[0]
        decisions = conn.execute(
            "SELECT j.decision, j.outcome, COUNT(*) FROM alerts a JOIN adjudications j "
            "ON j.id = (SELECT MAX(id) FROM adjudications WHERE alert_id = a.id) "
            "WHERE a.deployment_id = ? AND a.test_subject = 0 GROUP BY j.decision, j.outcome",
            (deployment_id,),
        ).fetchall()
        demographics = demographics_breakdown(conn, deployment_id)
        # The threshold over time (from the audit log) and the store's policy in force.
        history = threshold_history(conn, deployment_id)
        policy = read_policy(conn)
        fresh = read_freshness(conn, deployment_id, now)
        calibration, unreadable = shown_calibration(conn, deployment_id)
        searched = searched_entry_ids(conn, deployment_id, now, damaged=damaged)
        all_false = observed_false_alerts(conn, deployment_id)
        test_subjects = test_subject_figures(conn, deployment_id)
    by_decision: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for decision, outcome, count in decisions:
        by_decision[decision] = by_decision.get(decision, 0) + int(count)
        if decision == "match_confirmed" and outcome is not None:
            outcomes[outcome] = outcomes.get(outcome, 0) + int(count)
    adjudicated = sum(by_decision.values())
    false_alerts = by_decision.get("not_a_match", 0)
    faces = record.faces_seen
    return {
        "deployment_id": record.id,
        "state": str(record.state(now)),
        "authorised_by": record.authorised_by,
        "purpose": record.purpose,
        "location": record.location,
        "starts_at": record.starts_at,
        "ends_at": record.ends_at,
        "closed_at": record.closed_at,
        "impact_assessment_ref": record.impact_assessment_ref,
        "threshold": record.threshold,
        "watchlist": {
            "size": int(approved),
            "active": int(entries.get(str(EntryState.ACTIVE), 0)),
            "pending_approval": int(entries.get(str(EntryState.PENDING), 0)),
            "deleted": int(entries.get(str(EntryState.DELETED), 0)),
            "destroyed": int(entries.get(str(EntryState.DESTROYED), 0)),
            # Active entries left out of the index: their templates fail their checksum
            # or are not finite (``damaged_entries`` names them and why).
            "damaged": len(damaged),
            "damaged_entries": sorted(damaged),
            # Active entries approved longer ago than watchlist_max_age_h: not searched now.
            "stale": len(fresh.stale),
            "stale_entries": fresh.stale_ids,
        },
        "watchlist_max_age_h": record.watchlist_max_age_h,
        "frames": record.frames,
        "faces_seen": faces,
        "tracks_seen": record.tracks_seen,
        "alerts": {
            "total": int(alerts),
            "confirmed": by_decision.get("match_confirmed", 0),
            "false": false_alerts,
            "unsure": by_decision.get("unsure", 0),
            "not_adjudicated": int(alerts) - adjudicated,
        },
        "outcomes": dict(sorted(outcomes.items())),
        "false_alert_rate": (false_alerts / faces) if faces else None,
        "test_subjects": test_subjects,
        # Expected false alerts per 1,000 passers-by from the calibration, beside observed,
        # for the entries searched now (active, not damaged, not stale).
        "false_alerts": calibration_figures(
            record,
            calibration,
            searched=len(searched),
            false_alerts=all_false,
            unreadable=unreadable,
        ),
        "generated_at": now,
        # Equality monitoring by category; the API withholds it from most roles.
        "demographics": demographics,
        "demographics_withheld": False,
        "threshold_history": history,
        "threshold_policy": policy.as_dict(),
    }
