"""Every body the API answers with, as pydantic models: the one source of the wire shapes.

Handlers build these models from the store's records and send
``model.model_dump(mode="json")``; the OpenAPI document's components are the models' JSON
Schemas (:mod:`lfr_actors.api.openapi`), so what the document promises and what a client
receives come from the same declaration. Promises, in plain words:

- Field order is wire order: a model dumps its fields in the order they are declared here,
  the order the API has always sent them in.
- Times are stored as Unix seconds and sent as ISO 8601 UTC with milliseconds
  (:data:`UtcTime`); a model takes the stored number and writes the text.
- Every field a model declares is always sent (``null`` where there is no value), so the
  JSON Schema of each response lists every field as required; only a problem's
  ``invalid_params`` is sent just when there are some.
- No model carries a token id, an image or an embedding.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from lfr_actors.store.adjudications import Decision, Outcome
from lfr_actors.store.records import DeploymentState, EntryState, Origin
from lfr_actors.store.tokens import Role
from lfr_actors.timefmt import iso_utc

__all__ = [
    "AdjudicationRecord",
    "Alert",
    "AlertDetail",
    "AlertPage",
    "AuditEntry",
    "AuditHead",
    "AuditPage",
    "AuditVerification",
    "CalibrationChanged",
    "CalibrationInfo",
    "ClosedDeployment",
    "Deployment",
    "DeploymentLinks",
    "DeploymentList",
    "DeploymentStatus",
    "Entry",
    "EntryList",
    "FalseAlerts",
    "Hold",
    "HoldState",
    "InvalidParam",
    "MonitoringCategories",
    "MonitoringCategoriesChanged",
    "Principal",
    "Problem",
    "Report",
    "ReportAlerts",
    "ReportDemographics",
    "ReportDemographicsByDecision",
    "ReportTestSubjects",
    "ReportWatchlist",
    "Status",
    "StatusFreshness",
    "TestPass",
    "TestPassList",
    "ThresholdChanged",
    "ThresholdPolicy",
    "ThresholdPolicyChanged",
    "ThresholdStep",
    "UtcTime",
]

UtcTime = Annotated[
    float,
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A stored time (Unix seconds), sent as ISO 8601 UTC, e.g. ``2025-01-31T12:00:00.250Z``."""

Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
"""A number sent as stored: an integer stays an integer, a float a float."""

Count = Annotated[int, Field(ge=0)]


class _Response(BaseModel):
    """A response body: every field is always sent, so every field is required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# -- health and the caller -------------------------------------------------------------


class Status(_Response):
    """A health answer (``ok`` from /healthz, ``ready`` from /readyz)."""

    status: str


class Principal(_Response):
    """Who the token belongs to."""

    name: str
    role: Role
    deployments: list[str] | None = Field(
        default=None,
        description="The deployments the token is limited to; null: every deployment.",
    )


class StatusFreshness(_Response):
    """How fresh the deployment's cached status is (appended to its figures)."""

    status_age_s: float | None = Field(description="How old the figures are (seconds).")
    status_error: str | None = Field(
        description="Why the last gather failed (the figures are then the last good ones)."
    )
    status_stale: bool = Field(description="Whether the figures are too old to trust.")
    store_error: str | None = Field(description="Why the API cannot write the store, if so.")


class DeploymentStatus(StatusFreshness):
    """The deployment's status as last gathered: its figures (by section) and freshness."""

    model_config = ConfigDict(extra="allow")


# -- problems --------------------------------------------------------------------------


class InvalidParam(_Response):
    """One bad parameter or field and why."""

    name: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem; routes may add extension members."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str
    invalid_params: list[InvalidParam] | None = Field(
        default=None, description="Every bad parameter or field (sent only when some are)."
    )


# -- alerts ----------------------------------------------------------------------------


class Alert(_Response):
    """An alert: one watchlist entry seen on one or more cameras, one person per face track.

    One face track never raises two alerts; ``tracks`` lists every track fused into it.
    """

    id: str
    deployment_id: str
    entry_id: str
    first_camera_id: str
    cameras: list[str]
    first_seen: UtcTime
    last_seen: UtcTime
    sightings: Count
    best_distance: float
    best_sighting_id: str
    best_box: list[Number]
    best_quality: dict[str, Any]
    status: str
    created_at: UtcTime
    updated_at: UtcTime
    track_id: str | None = Field(
        description="The face track that raised the alert (null for a sighting without one)."
    )
    tracks: list[str] = Field(description="Every face track fused into the alert, sorted.")
    track_frames: Annotated[int, Field(ge=1)] = Field(
        description="How many faces of its track the best sighting's decision rests on."
    )
    media_index: Annotated[int, Field(ge=0)] | None = Field(
        description="Frame number (from 0) of the best face in the recording; null when live."
    )
    media_time_s: float | None = Field(
        description="Media time (seconds) of the best face in the recording; null when live."
    )
    test_subject: bool = Field(
        default=False,
        description="The entry matched is a test subject (a volunteer measuring live "
        "accuracy): the alert is in the test-subject queue, not the officers' suspect queue.",
    )
    crop_url: str = Field(description="Where the face crop is (JPEG).")
    entry_url: str = Field(description="The watchlist entry matched.")
    entry_image_url: str = Field(description="The entry's photo, to compare with the crop (JPEG).")


class AlertPage(_Response):
    """A page of alerts, newest first."""

    alerts: list[Alert]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last."
    )
    last_event_id: Count = Field(
        description="The newest alert event this page reflects: open the stream with "
        "?after= it to miss nothing that happens next."
    )


class AdjudicationRecord(_Response):
    """An officer's decision on an alert, as stored."""

    id: int
    alert_id: str
    decision: Decision
    outcome: Outcome | None
    note: str | None
    officer: str
    decided_at: UtcTime
    correction: bool
    correction_reason: str | None
    supersedes: int | None = Field(description="The id corrected.")
    demographics: dict[str, str] | None = Field(
        default=None,
        description="Equality-monitoring categories recorded with the decision (category -> "
        "value); null when none were, and always null for a viewer's token.",
    )


class Hold(_Response):
    """An evidential hold: the alert's crop is kept past retention."""

    id: int
    alert_id: str
    set_by: str
    reason: str
    at: UtcTime
    released_at: UtcTime | None
    released_by: str | None
    release_reason: str | None


class HoldState(_Response):
    """An alert's hold after a hold or release request."""

    alert_id: str
    hold: Hold | None
    changed: bool = Field(description="Whether this call changed it.")


class AlertDetail(Alert):
    """One alert with its decisions, its hold and whether its crop was purged."""

    adjudications: list[AdjudicationRecord] = Field(
        description="Decisions on the alert, oldest first."
    )
    hold: Hold | None = Field(description="The evidential hold in force, if any.")
    crop_purged_at: UtcTime | None = Field(description="When retention purged the crop, if it did.")


# -- audit -----------------------------------------------------------------------------


class AuditEntry(_Response):
    """One audit entry, with what is needed to recompute its hash outside the API."""

    seq: int = Field(ge=1)
    at: UtcTime
    at_unix: float
    actor: str
    actor_token: str | None
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(_Response):
    """Audit entries in seq order; pass ``next_after`` as ``?after=`` for the next page."""

    entries: list[AuditEntry]
    next_after: int | None


class AuditHead(_Response):
    """The last intact entry of the chain."""

    seq: int
    hash: str


class AuditVerification(_Response):
    """The audit chain's check: intact or where it breaks."""

    entries: Count
    intact: bool
    head: AuditHead
    bad_seq: int | None
    reason: str | None


# -- deployments and their watchlists --------------------------------------------------


class DeploymentLinks(_Response):
    """Where a deployment's parts are."""

    entries: str
    report: str
    report_page: str
    alerts: str


class CalibrationInfo(_Response):
    """The calibration a deployment's expected false alerts come from (scores only)."""

    model: str
    model_version: str
    metric: str
    method: str
    created_at: str
    gallery_identities: Count
    non_mated_probes: Count
    non_mated_comparisons: Count
    thresholds: list[float] = Field(description="The calibrated range: lowest and highest.")


class FalseAlerts(_Response):
    """Expected false alerts from the calibration, beside those observed."""

    watchlist_size: Count = Field(description="Entries searched now: active, not damaged.")
    threshold: float
    expected_per_1000: float | None = Field(
        description="False alerts expected per 1,000 passers-by (face tracks) not on the "
        "watchlist, for watchlist_size and threshold; null with expected_reason."
    )
    expected_upper_per_1000: float | None = Field(description="Its 95 % upper bound.")
    expected_reason: str | None
    false_alerts: Count = Field(description="Alerts decided not a match.")
    observed_per_1000: float | None = Field(
        description="False alerts per 1,000 face tracks (people) seen; null with observed_reason."
    )
    observed_per_1000_faces: float | None = Field(description="False alerts per 1,000 faces.")
    observed_reason: str | None
    calibration: CalibrationInfo | None


class Deployment(_Response):
    """A deployment: the authority, place and window, and its state."""

    id: str
    state: DeploymentState
    authorised_by: str
    purpose: str
    location: str
    starts_at: UtcTime
    ends_at: UtcTime
    impact_assessment_ref: str | None
    threshold: float
    origin: Origin
    created_by: str
    created_at: UtcTime
    closed_at: UtcTime | None
    closed_by: str | None
    close_reason: str | None
    watchlist_revision: Count
    frames: Count = Field(description="Frames processed.")
    faces_seen: Count = Field(description="Faces seen.")
    tracks_seen: Count = Field(
        description="Face tracks seen: people, each counted once per camera it was seen on."
    )
    counters_at: UtcTime | None = Field(
        description="When frames, faces and tracks were last recorded."
    )
    watchlist_max_age_h: float | None = Field(
        description="Hours after its approval that a watchlist entry is stale and no longer "
        "searched; null: no limit."
    )
    false_alerts: FalseAlerts
    links: DeploymentLinks


class ClosedDeployment(Deployment):
    """A deployment just closed, with the watchlist entries its closing destroyed."""

    entries_destroyed: dict[str, int] = Field(
        description="Entries destroyed, by their state before."
    )


class ThresholdChanged(Deployment):
    """A deployment after a threshold change."""

    changed: bool = Field(description="Whether the value changed.")
    expected_false_alerts_per_1000: float | None = Field(
        description="At the new threshold: false_alerts.expected_per_1000."
    )


class CalibrationChanged(Deployment):
    """A deployment after its calibration was set."""

    changed: bool = Field(description="Whether the stored calibration changed.")


class DeploymentList(_Response):
    """Every deployment, the newest window first."""

    deployments: list[Deployment]


class Entry(_Response):
    """A watchlist entry (its image is at image_url; embeddings never leave)."""

    deployment_id: str
    id: str
    state: EntryState
    display_name: str | None
    category: str
    legal_basis: str | None = Field(description="The legal power (null for a test subject).")
    source: str | None
    image_date: Annotated[str, WithJsonSchema({"type": "string", "format": "date"})] | None
    threshold: float | None
    origin: Origin
    has_image: bool
    templates: Count
    quality: dict[str, Any] | None
    added_by: str
    added_at: UtcTime
    approved_by: str | None
    approved_at: UtcTime | None
    removed_by: str | None
    removed_at: UtcTime | None
    remove_reason: str | None
    test_subject: bool = Field(
        description="A consenting volunteer measuring live accuracy; their alerts go to the "
        "test-subject queue only."
    )
    consent_ref: str | None = Field(
        description="A test subject's consent reference (null otherwise, and once destroyed)."
    )
    image_url: str | None
    stale: bool = Field(
        description="Active but approved longer ago than the deployment's watchlist_max_age_h: "
        "not searched now (nothing is deleted because of it)."
    )
    stale_at: UtcTime | None = Field(
        description="When the entry is or was stale (approved_at + watchlist_max_age_h); null "
        "without a limit or an approval."
    )


class EntryList(_Response):
    """A deployment's watchlist entries, in the order added."""

    entries: list[Entry]


class ReportWatchlist(_Response):
    """size: entries ever approved; the others by state now, and the damaged ones."""

    size: Count
    active: Count
    pending_approval: Count
    deleted: Count
    destroyed: Count
    damaged: Count = Field(description="Active entries left out of the index.")
    damaged_entries: list[str] = Field(description="Their ids (their checksums fail).")
    stale: Count = Field(
        description="Active entries approved longer ago than watchlist_max_age_h: not searched."
    )
    stale_entries: list[str] = Field(description="Their ids.")


class ReportAlerts(_Response):
    """Alerts by the decision in force."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    total: Count
    confirmed: Count
    false_: Count = Field(alias="false")
    unsure: Count
    not_adjudicated: Count


class ReportDemographicsByDecision(_Response):
    """Alerts of one decision (in force) by monitoring category and value."""

    alerts: Count = Field(description="Alerts with this decision in force.")
    by_category: dict[str, dict[str, Count]] = Field(
        description="Category -> value -> alerts; every configured value is listed (0 where "
        "none), then 'not recorded' (the alerts where the officer recorded none)."
    )


class ReportDemographics(_Response):
    """False and confirmed alerts by the equality-monitoring categories officers recorded."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    false_: ReportDemographicsByDecision = Field(alias="false")
    confirmed: ReportDemographicsByDecision


class ThresholdPolicy(_Response):
    """The store's threshold policy in force: the loosest distances allowed, and its origin."""

    deployment_max: float = Field(description="The loosest threshold a deployment may use.")
    entry_max: float = Field(description="The loosest own threshold a watchlist entry may use.")
    default: bool = Field(
        description="True while no admin has set a policy: the default model's declared "
        "threshold is in force."
    )
    set_by: str | None = Field(description="Who set it (null for the model's default).")
    set_at: UtcTime | None = Field(description="When it was set.")
    reason: str | None = Field(description="Why, as recorded in the audit log.")
    origin: str = Field(description="Where the policy came from, in one line.")


class ThresholdPolicyChanged(ThresholdPolicy):
    """The policy after a change."""

    changed: bool = Field(description="Whether it changed (the same values write nothing).")


class ThresholdStep(_Response):
    """One step of a deployment's threshold over time: its creation, or a change."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    at: UtcTime
    change: str = Field(description="created or changed.")
    from_: float | None = Field(alias="from", description="The value before (null at creation).")
    to: float
    by: str = Field(description="Who made the change.")
    reason: str | None = Field(description="Why (from the audit log; null at creation).")


class SecondsToAlert(_Response):
    """Seconds from a recorded pass to the first sighting of its alert on that camera."""

    median: float | None = Field(description="Over the alerted passes (null before any).")
    max: float | None = Field(description="The slowest alerted pass (null before any).")


class PassTolerance(_Response):
    """How far from a recorded pass an alert's sighting may be and still count for it."""

    before: float = Field(description="Seconds before the pass time.")
    after: float = Field(description="Seconds after the pass time.")


class ReportTestSubjects(_Response):
    """The test subjects' figures: the deployment's live true-positive rate."""

    entries: Count = Field(description="Test subjects ever on the watchlist.")
    alerts: Count = Field(description="Their alerts (not counted in the suspects' alerts).")
    passes_recorded: Count = Field(description="Passes of test subjects recorded.")
    passes_alerted: Count = Field(
        description="Recorded passes with an alert of that entry sighted on that camera "
        "within the tolerance."
    )
    true_positive_rate: float | None = Field(
        description="passes_alerted / passes_recorded (null before any pass)."
    )
    seconds_to_alert: SecondsToAlert
    tolerance_s: PassTolerance


class TestPass(_Response):
    """A recorded pass of a test subject past a camera, and whether an alert saw it."""

    __test__ = False  # not a pytest test class

    id: int
    deployment_id: str
    entry_id: str
    camera_id: str
    passed_at: UtcTime
    note: str | None
    recorded_by: str
    recorded_at: UtcTime
    alerted: bool = Field(description="An alert of the entry was sighted on the camera then.")
    alert_id: str | None = Field(description="That alert (null while not alerted).")
    alerted_at: UtcTime | None = Field(description="When that sighting was captured.")
    seconds_to_alert: float | None = Field(
        description="Seconds from the pass to that sighting (negative: seen before the time "
        "noted); null while not alerted."
    )


class TestPassList(_Response):
    """A deployment's recorded passes, in pass-time order."""

    __test__ = False  # not a pytest test class

    passes: list[TestPass]


class Report(_Response):
    """The figures published per deployment."""

    deployment_id: str
    state: DeploymentState
    authorised_by: str
    purpose: str
    location: str
    starts_at: UtcTime
    ends_at: UtcTime
    closed_at: UtcTime | None
    impact_assessment_ref: str | None
    threshold: float
    watchlist: ReportWatchlist
    watchlist_max_age_h: float | None = Field(
        description="Hours after approval that an entry is stale; null: no limit."
    )
    frames: Count
    faces_seen: Count
    tracks_seen: Count = Field(
        description="Face tracks seen: people, each counted once per camera it was seen on."
    )
    alerts: ReportAlerts
    outcomes: dict[str, Count] = Field(description="Outcomes of confirmed alerts.")
    false_alert_rate: float | None = Field(description="False alerts per face seen.")
    test_subjects: ReportTestSubjects = Field(
        description="Test subjects' passes and alerts; the figures above count suspects only."
    )
    false_alerts: FalseAlerts
    generated_at: UtcTime
    demographics: ReportDemographics | None = Field(
        description="False and confirmed alerts by monitoring category; null when withheld.",
    )
    demographics_withheld: bool = Field(
        description="True when the caller's role may not read the demographic breakdown "
        "(only auditor, authoriser and admin tokens may).",
    )
    threshold_history: list[ThresholdStep] = Field(
        description="The threshold it was created with, then each change (from the audit log)."
    )
    threshold_policy: ThresholdPolicy = Field(description="The store's policy in force.")


# -- store-wide policy -----------------------------------------------------------------


class MonitoringCategories(_Response):
    """The store's equality-monitoring categories: what an officer may record on a decision."""

    categories: dict[str, list[str]] = Field(
        description="Category -> its allowed values, in the order the admin gave them."
    )
    not_recorded: str = Field(description="Always allowed for every category, never listed.")
    configured: bool = Field(description="Whether any category is configured.")
    set_by: str | None = Field(description="Who set the lists (null: never set).")
    set_at: UtcTime | None


class MonitoringCategoriesChanged(MonitoringCategories):
    """The categories after a change."""

    changed: bool = Field(description="Whether this call changed them.")
