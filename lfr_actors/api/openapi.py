"""``GET /v1/openapi.json``: the API's OpenAPI 3.1 document, built from the code itself.

Nothing here is hand-written YAML that could drift from the routes: the paths and methods
come from the application's router, who may call each operation from
:data:`lfr_actors.api.auth.ROLE_MATRIX` (``security`` and ``x-roles``), the adjudication
body from its pydantic model (``model_json_schema()``), and the query limits from the
constants the handlers check them with. Only each operation's parameters and responses are
described here, keyed by route name; a route without a description is a programming error
(:class:`OpenApiError`), so a new route cannot be served undocumented.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lfr_actors.api import audit as audit_api
from lfr_actors.api import deployments as deployments_api
from lfr_actors.api import retention as retention_api
from lfr_actors.api import watchlist as watchlist_api
from lfr_actors.api.adjudication import MAX_BODY_BYTES, AdjudicationBody
from lfr_actors.api.auth import ROLE_MATRIX, Rule, route_key
from lfr_actors.api.common import PROBLEM_CONTENT_TYPE
from lfr_actors.enrolment import MAX_ENROL_PIXELS
from lfr_actors.errors import LfrError
from lfr_actors.store.audit import Action
from lfr_actors.store.tokens import Role
from lfr_actors.topology.schema import NewDeployment, NewEntry

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearerAuth"
_REF = "#/components/schemas/"

Json = dict[str, Any]


class OpenApiError(LfrError):
    """A route has no description in the OpenAPI builder."""


@dataclass(frozen=True)
class PageLimits:
    """A list route's ``limit`` parameter: its default and its largest value."""

    default: int
    maximum: int


# -- small builders ------------------------------------------------------------------


def _ref(name: str) -> Json:
    return {"$ref": _REF + name}


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> Json:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _ref("Problem")}},
    }


def _query(name: str, schema: Json, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _limit(limits: PageLimits) -> Json:
    return _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": limits.maximum, "default": limits.default},
        f"Page size, 1..{limits.maximum} (default {limits.default}).",
    )


ALERT_ID = {
    "name": "alert_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The alert's id.",
}

DEPLOYMENT_ID = {
    "name": "deployment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The deployment's id.",
}
ENTRY_ID = {
    "name": "entry_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The watchlist entry's id.",
}

_TIME = {
    "anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
    "description": "Unix seconds, or ISO 8601 with a UTC offset (e.g. 2025-01-31T12:00:00Z).",
}


# -- component schemas ---------------------------------------------------------------


def component_schemas() -> Json:
    """The bodies the API answers with, and the adjudication and hold request bodies."""
    body = AdjudicationBody.model_json_schema(ref_template=_REF + "{model}")
    defs = body.pop("$defs", {})
    hold_body = retention_api.HoldBody.model_json_schema(ref_template=_REF + "{model}")
    release_body = retention_api.ReleaseBody.model_json_schema(ref_template=_REF + "{model}")
    nullable_str = {"type": ["string", "null"]}
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    new_deployment = NewDeployment.model_json_schema(ref_template=_REF + "{model}")
    close_body = deployments_api.CloseBody.model_json_schema(ref_template=_REF + "{model}")
    threshold_body = deployments_api.ThresholdBody.model_json_schema(ref_template=_REF + "{model}")
    delete_body = watchlist_api.DeleteBody.model_json_schema(ref_template=_REF + "{model}")
    entry_fields = NewEntry.model_json_schema(ref_template=_REF + "{model}")
    entry_upload = {
        **entry_fields,
        "title": "EntryUpload",
        "required": [*entry_fields.get("required", []), "image"],
        "properties": {
            **entry_fields["properties"],
            "image": {
                "type": "array",
                "minItems": 1,
                "maxItems": watchlist_api.MAX_IMAGES,
                "items": {"type": "string", "format": "binary", "contentMediaType": "image/jpeg"},
                "description": f"1 to {watchlist_api.MAX_IMAGES} photos of the person, each "
                "a part named image: JPEG, PNG, BMP, WebP or TIFF, "
                f"{watchlist_api.MAX_IMAGE_BYTES:,} bytes in all, one clear frontal face "
                "each. Each gives the entry a template; the first is shown to officers.",
            },
        },
    }
    deployment = {
        "type": "object",
        "description": "A deployment: the authority, place and window, and its state.",
        "required": ["id", "state", "authorised_by", "location", "starts_at", "ends_at"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": ["scheduled", "active", "ended", "closed"]},
            "authorised_by": {"type": "string"},
            "purpose": {"type": "string"},
            "location": {"type": "string"},
            "starts_at": {"type": "string", "format": "date-time"},
            "ends_at": {"type": "string", "format": "date-time"},
            "impact_assessment_ref": nullable_str,
            "threshold": {"type": "number"},
            "origin": {"type": "string", "enum": ["api", "file"]},
            "created_by": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "closed_at": nullable_time,
            "closed_by": nullable_str,
            "close_reason": nullable_str,
            "watchlist_revision": {"type": "integer", "minimum": 0},
            "frames": {"type": "integer", "minimum": 0, "description": "Frames processed."},
            "faces_seen": {"type": "integer", "minimum": 0, "description": "Faces seen."},
            "counters_at": {
                **nullable_time,
                "description": "When frames and faces were last recorded.",
            },
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
            "changed": {
                "type": "boolean",
                "description": "On a threshold change: whether the value changed.",
            },
            "entries_destroyed": {
                "type": "object",
                "description": "On close: entries destroyed, by their state before.",
                "additionalProperties": {"type": "integer"},
            },
        },
    }
    entry = {
        "type": "object",
        "description": "A watchlist entry (its image is at image_url; embeddings never leave).",
        "required": ["deployment_id", "id", "state", "category", "legal_basis", "added_by"],
        "properties": {
            "deployment_id": {"type": "string"},
            "id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["pending_approval", "active", "deleted", "destroyed"],
            },
            "display_name": nullable_str,
            "category": {"type": "string"},
            "legal_basis": {"type": "string"},
            "source": nullable_str,
            "image_date": {"type": ["string", "null"], "format": "date"},
            "threshold": {"type": ["number", "null"]},
            "origin": {"type": "string", "enum": ["api", "file"]},
            "has_image": {"type": "boolean"},
            "templates": {"type": "integer", "minimum": 0},
            "quality": {"type": ["object", "null"]},
            "added_by": {"type": "string"},
            "added_at": {"type": "string", "format": "date-time"},
            "approved_by": nullable_str,
            "approved_at": nullable_time,
            "removed_by": nullable_str,
            "removed_at": nullable_time,
            "remove_reason": nullable_str,
            "image_url": nullable_str,
        },
    }
    count = {"type": "integer", "minimum": 0}
    report = {
        "type": "object",
        "description": "The figures published per deployment.",
        "required": ["deployment_id", "watchlist", "faces_seen", "alerts", "outcomes"],
        "properties": {
            "deployment_id": {"type": "string"},
            "state": {"type": "string"},
            "authorised_by": {"type": "string"},
            "purpose": {"type": "string"},
            "location": {"type": "string"},
            "starts_at": {"type": "string", "format": "date-time"},
            "ends_at": {"type": "string", "format": "date-time"},
            "closed_at": nullable_time,
            "impact_assessment_ref": nullable_str,
            "threshold": {"type": "number"},
            "watchlist": {
                "type": "object",
                "description": "size: entries ever approved; the others by state now.",
                "properties": {
                    k: count for k in ("size", "active", "pending_approval", "deleted", "destroyed")
                },
            },
            "frames": count,
            "faces_seen": count,
            "alerts": {
                "type": "object",
                "description": "Alerts by the decision in force.",
                "properties": {
                    k: count for k in ("total", "confirmed", "false", "unsure", "not_adjudicated")
                },
            },
            "outcomes": {
                "type": "object",
                "description": "Outcomes of confirmed alerts.",
                "additionalProperties": count,
            },
            "false_alert_rate": {
                "type": ["number", "null"],
                "description": "False alerts per face seen.",
            },
            "generated_at": {"type": "string", "format": "date-time"},
        },
    }
    hold = {
        "type": "object",
        "description": "An evidential hold: the alert's crop is kept past retention.",
        "required": ["id", "alert_id", "set_by", "reason", "at"],
        "properties": {
            "id": {"type": "integer"},
            "alert_id": {"type": "string"},
            "set_by": {"type": "string"},
            "reason": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "released_at": nullable_time,
            "released_by": nullable_str,
            "release_reason": nullable_str,
        },
    }
    alert = {
        "type": "object",
        "description": "An alert: one watchlist entry seen on one or more cameras.",
        "required": ["id", "entry_id", "first_seen", "last_seen", "status", "crop_url"],
        "properties": {
            "id": {"type": "string"},
            "deployment_id": {"type": "string"},
            "entry_id": {"type": "string"},
            "first_camera_id": {"type": "string"},
            "cameras": {"type": "array", "items": {"type": "string"}},
            "first_seen": {"type": "string", "format": "date-time"},
            "last_seen": {"type": "string", "format": "date-time"},
            "sightings": {"type": "integer", "minimum": 0},
            "best_distance": {"type": "number"},
            "best_sighting_id": {"type": "string"},
            "best_box": {"type": "array", "items": {"type": "number"}},
            "best_quality": {"type": "object"},
            "status": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "crop_url": {"type": "string", "description": "Where the face crop is (JPEG)."},
            "entry_url": {"type": "string", "description": "The watchlist entry matched."},
            "entry_image_url": {
                "type": "string",
                "description": "The entry's photo, to compare with the crop (JPEG).",
            },
        },
    }
    adjudication = {
        "type": "object",
        "description": "An officer's decision on an alert, as stored.",
        "required": ["id", "alert_id", "decision", "officer", "decided_at", "correction"],
        "properties": {
            "id": {"type": "integer"},
            "alert_id": {"type": "string"},
            "decision": _ref("Decision"),
            "outcome": {"anyOf": [_ref("Outcome"), {"type": "null"}]},
            "note": nullable_str,
            "officer": {"type": "string"},
            "decided_at": {"type": "string", "format": "date-time"},
            "correction": {"type": "boolean"},
            "correction_reason": nullable_str,
            "supersedes": {"type": ["integer", "null"], "description": "The id corrected."},
        },
    }
    audit_entry = {
        "type": "object",
        "required": ["seq", "at", "at_unix", "actor", "action", "subject", "hash"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "at": {"type": "string", "format": "date-time"},
            "at_unix": {"type": "number"},
            "actor": {"type": "string"},
            "actor_token": nullable_str,
            "action": {"type": "string"},
            "subject": {"type": "string"},
            "details": {"type": "object"},
            "prev_hash": {"type": "string"},
            "hash": {"type": "string"},
        },
    }
    return {
        **defs,
        "NewDeployment": new_deployment,
        "CloseDeployment": close_body,
        "ThresholdChange": threshold_body,
        "DeleteEntry": delete_body,
        "EntryUpload": entry_upload,
        "Deployment": deployment,
        "DeploymentList": {
            "type": "object",
            "required": ["deployments"],
            "properties": {"deployments": {"type": "array", "items": _ref("Deployment")}},
        },
        "Entry": entry,
        "EntryList": {
            "type": "object",
            "required": ["entries"],
            "properties": {"entries": {"type": "array", "items": _ref("Entry")}},
        },
        "Report": report,
        "Principal": {
            "type": "object",
            "required": ["name", "role"],
            "properties": {
                "name": {"type": "string"},
                "role": {"type": "string", "enum": [str(r) for r in Role]},
            },
        },
        "Adjudication": body,
        "AdjudicationRecord": adjudication,
        "Alert": alert,
        "AlertDetail": {
            "allOf": [
                _ref("Alert"),
                {
                    "type": "object",
                    "required": ["adjudications", "hold", "crop_purged_at"],
                    "properties": {
                        "adjudications": {
                            "type": "array",
                            "items": _ref("AdjudicationRecord"),
                            "description": "Decisions on the alert, oldest first.",
                        },
                        "hold": {
                            "anyOf": [_ref("Hold"), {"type": "null"}],
                            "description": "The evidential hold in force, if any.",
                        },
                        "crop_purged_at": {
                            **nullable_time,
                            "description": "When retention purged the crop, if it did.",
                        },
                    },
                },
            ]
        },
        "AlertPage": {
            "type": "object",
            "required": ["alerts", "next_cursor", "last_event_id"],
            "properties": {
                "alerts": {"type": "array", "items": _ref("Alert")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as ?cursor= for the next page; null on the last.",
                },
                "last_event_id": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The newest alert event this page reflects: open the "
                    "stream with ?after= it to miss nothing that happens next.",
                },
            },
        },
        "AuditEntry": audit_entry,
        "Hold": hold,
        "HoldRequest": hold_body,
        "HoldState": {
            "type": "object",
            "required": ["alert_id", "hold", "changed"],
            "properties": {
                "alert_id": {"type": "string"},
                "hold": {"anyOf": [_ref("Hold"), {"type": "null"}]},
                "changed": {"type": "boolean", "description": "Whether this call changed it."},
            },
        },
        "ReleaseRequest": release_body,
        "AuditPage": {
            "type": "object",
            "required": ["entries", "next_after"],
            "properties": {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "next_after": {"type": ["integer", "null"]},
            },
        },
        "AuditVerification": {
            "type": "object",
            "required": ["entries", "intact", "head"],
            "properties": {
                "entries": {"type": "integer", "minimum": 0},
                "intact": {"type": "boolean"},
                "head": {"type": "object"},
                "bad_seq": {"type": ["integer", "null"]},
                "reason": nullable_str,
            },
        },
        "Problem": {
            "type": "object",
            "description": "An RFC 9457 problem; routes may add extension members.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "invalid_params": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "reason"],
                        "properties": {"name": {"type": "string"}, "reason": {"type": "string"}},
                    },
                },
            },
        },
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
    }


# -- operations, by route name -------------------------------------------------------


def _operations(alert_page: PageLimits) -> dict[str, Callable[[], Json]]:
    audit_page = PageLimits(audit_api.DEFAULT_PAGE, audit_api.MAX_PAGE)
    return {
        "healthz": lambda: {
            "summary": "Liveness: the process answers.",
            "responses": {"200": _json(_ref("Status"), "Alive.")},
        },
        "readyz": lambda: {
            "summary": "Readiness, from the status gathered once a second: the store can be "
            "read and written, the status is fresh, every camera and embedder is reachable "
            "and at least one camera is running.",
            "responses": {
                "200": _json(_ref("Status"), "Ready."),
                "503": _problem("Not ready; not_ready names what is not."),
            },
        },
        "metrics": lambda: {
            "summary": "Prometheus text exposition of the deployment and the store.",
            "responses": {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
        "status": lambda: {
            "summary": "The deployment's status, as last gathered (status_age_s says when).",
            "responses": {
                "200": _json(
                    {"type": "object"},
                    "The deployment's status, with status_age_s, status_error, status_stale "
                    "and store_error.",
                ),
                "503": _problem("No status source, or it could not be read."),
            },
        },
        "alerts": lambda: {
            "summary": "Alerts, newest first, filtered and paged.",
            "parameters": [
                _query("deployment", {"type": "string"}, "Only this deployment's alerts."),
                _query(
                    "status",
                    {"type": "string", "enum": ["open", "adjudicated"]},
                    "Only open (not yet decided) or adjudicated alerts.",
                ),
                _query("camera", {"type": "string"}, "Only alerts seen on this camera."),
                _query("entry", {"type": "string"}, "Only alerts of this watchlist entry."),
                _query("since", _TIME, "Only alerts last seen at or after this time."),
                _query("until", _TIME, "Only alerts first seen at or before this time."),
                _limit(alert_page),
                _query(
                    "cursor",
                    {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    "The next_cursor of the previous page (opaque).",
                ),
            ],
            "responses": {
                "200": _json(_ref("AlertPage"), "A page of alerts."),
                "400": _problem("Invalid query parameters (all listed in invalid_params)."),
            },
        },
        "alert_stream": lambda: {
            "summary": "Server-Sent Events: stored alert events after the client's, then live.",
            "description": "Each event is `id: <event_id>`, `event: raised|updated|adjudicated` "
            "and "
            "`data: <Alert JSON>`; idle streams get a comment line as a heartbeat. "
            "Without Last-Event-ID or after, the stream starts at the newest event.",
            "parameters": [
                _query(
                    "after",
                    {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    "Resume after this event id.",
                ),
                _query("deployment", {"type": "string"}, "Only this deployment's alerts."),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    "description": "Resume after this event id (as browsers send it).",
                },
            ],
            "responses": {
                "200": {
                    "description": "An endless event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _problem("An unknown parameter or a bad event id."),
                "404": _problem("No such deployment."),
            },
        },
        "alert": lambda: {
            "summary": "One alert with its adjudications (the crop is at crop_url).",
            "parameters": [ALERT_ID],
            "responses": {
                "200": _json(_ref("AlertDetail"), "The alert."),
                "404": _problem("No such alert."),
            },
        },
        "alert_crop": lambda: {
            "summary": "The alert's best face crop; never cached; each view is audited.",
            "parameters": [ALERT_ID],
            "responses": {
                "200": {
                    "description": "The crop.",
                    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": _problem("No such alert."),
                "410": _problem("Retention purged the crop; the alert remains."),
            },
        },
        "alert_hold": lambda: {
            "summary": "Put the alert on evidential hold: its crop is kept past retention.",
            "description": "Audited as alert.hold. A second hold answers 200 with the first.",
            "parameters": [ALERT_ID],
            "requestBody": {
                "required": True,
                "description": f"At most {retention_api.MAX_BODY_BYTES} bytes.",
                "content": {"application/json": {"schema": _ref("HoldRequest")}},
            },
            "responses": {
                "200": _json(_ref("HoldState"), "The alert was already on hold."),
                "201": _json(_ref("HoldState"), "The hold was set."),
                "400": _problem("The body is not well-formed JSON."),
                "404": _problem("No such alert."),
                "413": _problem(f"The body is over {retention_api.MAX_BODY_BYTES} bytes."),
                "415": _problem("The body is not declared as JSON."),
                "422": _problem("Invalid fields (all listed in invalid_params)."),
            },
        },
        "alert_release": lambda: {
            "summary": "Release the alert's evidential hold (audited as alert.release).",
            "description": "hold is null and changed false when no hold was in force.",
            "parameters": [ALERT_ID],
            "requestBody": {
                "required": False,
                "description": f"Optional; at most {retention_api.MAX_BODY_BYTES} bytes.",
                "content": {"application/json": {"schema": _ref("ReleaseRequest")}},
            },
            "responses": {
                "200": _json(_ref("HoldState"), "The hold released, or none was in force."),
                "400": _problem("The body is not well-formed JSON."),
                "404": _problem("No such alert."),
                "413": _problem(f"The body is over {retention_api.MAX_BODY_BYTES} bytes."),
                "415": _problem("The body is not declared as JSON."),
                "422": _problem("Invalid fields (all listed in invalid_params)."),
            },
        },
        "alert_adjudication": lambda: {
            "summary": "Record the caller's decision on an alert.",
            "parameters": [ALERT_ID],
            "requestBody": {
                "required": True,
                "description": f"At most {MAX_BODY_BYTES} bytes.",
                "content": {"application/json": {"schema": _ref("Adjudication")}},
            },
            "responses": {
                "200": _json(_ref("AdjudicationRecord"), "The same decision was already stored."),
                "201": _json(_ref("AdjudicationRecord"), "The decision was recorded."),
                "400": _problem("The body is not well-formed JSON."),
                "404": _problem("No such alert."),
                "409": _problem("Contradicts the decision in force (see current)."),
                "413": _problem(f"The body is over {MAX_BODY_BYTES} bytes."),
                "415": _problem("The body is not declared as JSON."),
                "422": _problem("Invalid fields (all listed in invalid_params)."),
            },
        },
        "audit": lambda: {
            "summary": "Audit entries after a seq, oldest first, with their hash chain.",
            "parameters": [
                _query("after", {"type": "integer", "minimum": 0}, "Entries after this seq."),
                _limit(audit_page),
                _query(
                    "action",
                    {"type": "string", "enum": sorted(str(a) for a in Action)},
                    "Only entries of this action.",
                ),
                _query(
                    "subject",
                    {"type": "string", "maxLength": audit_api.MAX_SUBJECT_CHARS},
                    "Only entries about this subject.",
                ),
            ],
            "responses": {
                "200": _json(_ref("AuditPage"), "A page of entries."),
                "400": _problem("Invalid query parameters (all listed in invalid_params)."),
            },
        },
        "audit_verify": lambda: {
            "summary": "Recompute the audit hash chain (the check is itself audited).",
            "responses": {"200": _json(_ref("AuditVerification"), "Intact or not.")},
        },
        **_governance_operations(),
        "openapi": lambda: {
            "summary": "This document.",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
        },
    }


def _json_body(schema: str, max_bytes: int, *, required: bool = True) -> Json:
    return {
        "required": required,
        "description": f"At most {max_bytes:,} bytes.",
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _body_problems(max_bytes: int) -> Json:
    return {
        "400": _problem("The body is not well-formed JSON."),
        "413": _problem(f"The body is over {max_bytes:,} bytes."),
        "415": _problem("The body is not declared as JSON."),
        "422": _problem("Invalid fields (all listed in invalid_params)."),
    }


def _governance_operations() -> dict[str, Callable[[], Json]]:
    dep_max = deployments_api.MAX_BODY_BYTES
    no_deployment = _problem("No such deployment.")
    not_found = _problem("No such deployment or entry.")
    return {
        "console": lambda: {
            "summary": "The adjudicating officer's web page (it asks for a token).",
            "responses": {
                "200": {
                    "description": "The page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        },
        "whoami": lambda: {
            "summary": "Who the token belongs to: its holder's name and role.",
            "responses": {"200": _json(_ref("Principal"), "The caller.")},
        },
        "favicon": lambda: {
            "summary": "No icon (204), so browsers asking for one get no error.",
            "responses": {"204": {"description": "No content."}},
        },
        "deployments": lambda: {
            "summary": "Every deployment, the newest window first.",
            "responses": {
                "200": _json(_ref("DeploymentList"), "The deployments."),
                "400": _problem("An unknown parameter."),
            },
        },
        "deployment_create": lambda: {
            "summary": "Record a new deployment (audited as deployment.create).",
            "requestBody": _json_body("NewDeployment", dep_max),
            "responses": {
                "201": _json(_ref("Deployment"), "The deployment was recorded."),
                "409": _problem("A deployment with that id exists."),
                **_body_problems(dep_max),
            },
        },
        "deployment": lambda: {
            "summary": "One deployment, with its state now.",
            "parameters": [DEPLOYMENT_ID],
            "responses": {
                "200": _json(_ref("Deployment"), "The deployment."),
                "404": no_deployment,
            },
        },
        "deployment_close": lambda: {
            "summary": "Close the deployment: its cameras stop and its watchlist is destroyed.",
            "description": "Audited as deployment.close. The alerts, the audit trail and "
            "the report remain.",
            "parameters": [DEPLOYMENT_ID],
            "requestBody": _json_body("CloseDeployment", dep_max),
            "responses": {
                "200": _json(_ref("Deployment"), "Closed; entries_destroyed counts them."),
                "404": no_deployment,
                "409": _problem("Already closed."),
                **_body_problems(dep_max),
            },
        },
        "deployment_threshold": lambda: {
            "summary": "Change the deployment's threshold (audited as deployment.threshold "
            "with the old and new values and the reason).",
            "description": "A running deployment applies it within about a second. An "
            "entry's own threshold, where it has one, still replaces it for that entry.",
            "parameters": [DEPLOYMENT_ID],
            "requestBody": _json_body("ThresholdChange", dep_max),
            "responses": {
                "200": _json(_ref("Deployment"), "The deployment; changed says if it did."),
                "404": no_deployment,
                "409": _problem("The deployment is closed."),
                **_body_problems(dep_max),
            },
        },
        "deployment_report": lambda: {
            "summary": "The deployment's published figures (audited as report.export).",
            "parameters": [DEPLOYMENT_ID],
            "responses": {
                "200": _json(_ref("Report"), "The report."),
                "400": _problem("An unknown parameter."),
                "404": no_deployment,
            },
        },
        "deployment_report_page": lambda: {
            "summary": "The report as a printable page (audited as report.export).",
            "parameters": [DEPLOYMENT_ID],
            "responses": {
                "200": {
                    "description": "The page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "400": _problem("An unknown parameter."),
                "404": no_deployment,
            },
        },
        "entries": lambda: {
            "summary": "The deployment's watchlist entries, in the order added.",
            "parameters": [
                DEPLOYMENT_ID,
                _query(
                    "state",
                    {
                        "type": "string",
                        "enum": ["pending_approval", "active", "deleted", "destroyed"],
                    },
                    "Only entries in this state.",
                ),
            ],
            "responses": {
                "200": _json(_ref("EntryList"), "The entries."),
                "400": _problem("Invalid query parameters."),
                "404": no_deployment,
            },
        },
        "entry_create": lambda: {
            "summary": "Enrol an entry from a photo; it is inactive until an authoriser "
            "approves it.",
            "description": "Audited as entry.create. 422 with reason (too_many_pixels, "
            "unreadable, no_face, multiple_faces, face_too_small, ...) when the photo does "
            f"not qualify; a photo may declare at most {MAX_ENROL_PIXELS:,} pixels, checked "
            f"from its header before it is decoded. At most {watchlist_api.MAX_PARTS} parts.",
            "parameters": [DEPLOYMENT_ID],
            "requestBody": {
                "required": True,
                "description": f"At most {watchlist_api.MAX_BODY_BYTES:,} bytes.",
                "content": {"multipart/form-data": {"schema": _ref("EntryUpload")}},
            },
            "responses": {
                "201": _json(_ref("Entry"), "The entry, pending approval."),
                "400": _problem("The multipart body is malformed."),
                "404": no_deployment,
                "409": _problem("The deployment is closed, or the entry id was used."),
                "413": _problem("The upload is over the size limit or the part limit."),
                "415": _problem("Not multipart, or the image part is not an image."),
                "422": _problem("Invalid fields, or a photo that does not qualify."),
                "503": _problem("No enrolment models are attached to this API."),
            },
        },
        "entry": lambda: {
            "summary": "One watchlist entry (no image; see image_url).",
            "parameters": [DEPLOYMENT_ID, ENTRY_ID],
            "responses": {"200": _json(_ref("Entry"), "The entry."), "404": not_found},
        },
        "entry_delete": lambda: {
            "summary": "Delete an entry: it is no longer searched; image and embeddings "
            "are wiped (audited as entry.delete).",
            "parameters": [DEPLOYMENT_ID, ENTRY_ID],
            "requestBody": _json_body("DeleteEntry", watchlist_api.MAX_JSON_BYTES, required=False),
            "responses": {
                "200": _json(_ref("Entry"), "The deleted entry."),
                "404": not_found,
                "409": _problem("The deployment is closed."),
                **_body_problems(watchlist_api.MAX_JSON_BYTES),
            },
        },
        "entry_image": lambda: {
            "summary": "The entry's photo (JPEG); never cached; each view is audited.",
            "description": "While the entry waits for approval, only watchlist managers, "
            "authorisers and admins see its photo (403 for the other roles).",
            "parameters": [DEPLOYMENT_ID, ENTRY_ID],
            "responses": {
                "200": {
                    "description": "The photo.",
                    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": not_found,
                "410": _problem("Destroyed: the entry was deleted or its deployment closed."),
            },
        },
        "entry_approve": lambda: {
            "summary": "Approve a pending entry: a second person with the authoriser role "
            "(audited as entry.approve).",
            "parameters": [DEPLOYMENT_ID, ENTRY_ID],
            "responses": {
                "200": _json(_ref("Entry"), "It was already approved."),
                "201": _json(_ref("Entry"), "Approved: the entry is active."),
                "400": _problem("A body was sent; approval takes none."),
                "404": not_found,
                "409": _problem(
                    "Self-approval (four eyes), a deleted entry, or a closed deployment."
                ),
            },
        },
    }


def _security(operation: Json, rule: Rule) -> None:
    if rule.public:
        operation["security"] = []
        operation["x-public"] = True
        operation["x-roles"] = []
        return
    operation["security"] = [{SECURITY_SCHEME: []}]
    operation["x-roles"] = sorted(str(r) for r in rule.roles)
    responses = operation["responses"]
    responses["401"] = _problem("No token, or a malformed, unknown or revoked one.")
    responses["403"] = _problem("The token's role may not call this route.")


def build_document(
    routes: Iterable[web.AbstractRoute],
    *,
    alert_page: PageLimits,
    matrix: Mapping[tuple[str, str], Rule] = ROLE_MATRIX,
) -> Json:
    """The OpenAPI 3.1 document of ``routes`` (HEAD, served for every GET, is implied).

    Raises :class:`OpenApiError` listing every route that has no name, no description
    here, or no entry in ``matrix``.
    """
    described = _operations(alert_page)
    paths: dict[str, Json] = {}
    problems = []
    for route in routes:
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        key = route_key(route.method, route.name)
        if route.name not in described or key not in matrix:
            problems.append(f"{route.method} {path} (name {route.name!r})")
            continue
        operation = {"operationId": route.name, **described[route.name]()}
        _security(operation, matrix[key])
        paths.setdefault(path, {})[route.method.lower()] = operation
    if problems:
        raise OpenApiError(
            "routes without an OpenAPI description (lfr_actors/api/openapi.py) or a "
            "ROLE_MATRIX entry: " + "; ".join(problems)
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "lfr-actors alert API",
            "version": "1",
            "description": "Alerts of a live facial recognition deployment. Every error "
            "is an RFC 9457 problem (application/problem+json).",
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `lfr tokens create`; its role must be in "
                    "the operation's x-roles.",
                }
            },
        },
    }
