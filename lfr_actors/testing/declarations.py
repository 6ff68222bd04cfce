"""Deployment and watchlist-entry declarations for tests, in the store's terms.

:func:`make_deployment` takes its window in Unix seconds, as tests keep their clocks;
both fill the texts a test does not care about with plain placeholders.
"""

from __future__ import annotations

from datetime import UTC, datetime

from lfr_actors.topology.schema import NewDeployment, NewEntry

__all__ = ["make_deployment", "make_entry"]


def make_deployment(
    deployment_id: str,
    starts_at: float,
    ends_at: float,
    threshold: float = 0.6,
    *,
    authorised_by: str = "Supt Test",
    purpose: str = "testing",
    location: str = "a test bench",
    impact_assessment_ref: str | None = None,
    watchlist_max_age_h: float | None = None,
) -> NewDeployment:
    """A deployment declaration whose window runs from ``starts_at`` to ``ends_at``."""
    return NewDeployment(
        id=deployment_id,
        authorised_by=authorised_by,
        purpose=purpose,
        location=location,
        start=datetime.fromtimestamp(starts_at, UTC),
        end=datetime.fromtimestamp(ends_at, UTC),
        threshold=threshold,
        impact_assessment_ref=impact_assessment_ref,
        watchlist_max_age_h=watchlist_max_age_h,
    )


def make_entry(
    entry_id: str,
    *,
    display_name: str = "A Person",
    category: str = "wanted",
    legal_basis: str = "PACE s.24",
    source: str = "custody record",
    image_date: str = "2026-01-01",
    threshold: float | None = None,
    consent_ref: str | None = None,
) -> NewEntry:
    """A watchlist entry's declaration, as an upload's text fields would make it.

    With ``consent_ref``, a test subject: the consent in place of a legal basis.
    """
    fields: dict[str, object] = {
        "id": entry_id,
        "display_name": display_name,
        "category": category,
        "legal_basis": legal_basis,
        "source": source,
        "image_date": image_date,
        "threshold": threshold,
    }
    if consent_ref is not None:
        del fields["legal_basis"]
        fields.update(test_subject=True, consent_ref=consent_ref)
    return NewEntry.model_validate(fields)
