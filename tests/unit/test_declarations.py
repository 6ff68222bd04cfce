"""One declaration of a deployment and one of a watchlist entry, for files, API and store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from lfr_actors.topology import (
    MAX_DEPLOYMENT_WINDOW,
    MAX_LEAD,
    NewDeployment,
    NewEntry,
    WatchlistEntry,
    load_topology,
    load_watchlist,
)
from lfr_actors.topology.schema import FORM_FIELDS, window_violations

EXAMPLES = Path(__file__).resolve().parents[2] / "topology"
START = datetime(2026, 11, 20, 8, tzinfo=UTC)

TOPOLOGY = """\
version: 1
deployment:
  id: west-1
  authorised_by: Supt A. Example
  purpose: testing
  location: a test bench
  start: 2026-11-20T08:00:00Z
  end: 2026-11-20T20:00:00Z
  impact_assessment_ref: DPIA-1
cameras:
  - {id: cam_a, source: {type: device, index: 0}}
alerts:
  threshold: 0.55
storage:
  data_dir: data
"""

BODY = {
    "id": "west-1",
    "authorised_by": "Supt A. Example",
    "purpose": "testing",
    "location": "a test bench",
    "start": "2026-11-20T08:00:00Z",
    "end": "2026-11-20T20:00:00Z",
    "impact_assessment_ref": "DPIA-1",
    "threshold": 0.55,
}


def from_json(body: dict[str, object]) -> NewDeployment:
    """As ``POST /v1/deployments`` reads its body: strictly, from JSON."""
    return NewDeployment.model_validate_json(json.dumps(body), strict=True)


def test_a_topology_and_an_api_body_make_the_same_declaration(tmp_path: Path) -> None:
    path = tmp_path / "topo.yaml"
    path.write_text(TOPOLOGY, "utf-8")
    declared = NewDeployment.of(load_topology(path))
    assert declared == from_json(BODY)
    assert declared.as_dict() == {
        "id": "west-1",
        "authorised_by": "Supt A. Example",
        "purpose": "testing",
        "location": "a test bench",
        "starts_at": START.timestamp(),
        "ends_at": (START + timedelta(hours=12)).timestamp(),
        "threshold": 0.55,
        "impact_assessment_ref": "DPIA-1",
        "watchlist_max_age_h": None,
    }


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"start": 1_800_000_000}, "datetime_type"),
        ({"start": "2026-11-20T08:00:00"}, "timezone_aware"),
        ({"start": "soon"}, "datetime_parsing"),
        ({"threshold": "0.5"}, "text_not_number"),
        ({"threshold": True}, "bool_not_number"),
        ({"location": "   "}, "string_pattern_mismatch"),
    ],
)
def test_a_json_body_is_read_strictly(change: dict[str, object], kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        from_json({**BODY, **change})
    (error,) = caught.value.errors()
    assert (error["loc"], error["type"]) == ((next(iter(change)),), kind)


def test_the_window_rules_hold_for_every_declaration() -> None:
    for end in (START, START - timedelta(hours=1), START + MAX_DEPLOYMENT_WINDOW * 2):
        with pytest.raises(ValidationError):
            from_json({**BODY, "end": end.isoformat()})
    longest = from_json({**BODY, "end": (START + MAX_DEPLOYMENT_WINDOW).isoformat()})
    assert longest.duration == MAX_DEPLOYMENT_WINDOW


def test_rules_that_need_now_are_for_declarations_made_now() -> None:
    end = START + timedelta(hours=1)
    assert window_violations(START, end) == []
    assert window_violations(START, end, now=START) == []
    past = window_violations(START, end, now=end)
    assert [(v.path, v.message) for v in past] == [
        (("end",), "end 2026-11-20T09:00:00Z is in the past: the window would already be over")
    ]
    ahead = window_violations(START, end, now=START - MAX_LEAD - timedelta(seconds=1))
    assert [v.path for v in ahead] == [("start",)]
    assert ahead[0].message.endswith("is more than 366 days ahead; authorise it nearer the time")


def test_a_watchlist_file_entry_is_an_entry_declaration_with_photos() -> None:
    topology = load_topology(EXAMPLES / "demo.yaml")
    assert topology.watchlist is not None
    entry = load_watchlist(topology.watchlist.file).entries[0]
    assert isinstance(entry, NewEntry)
    assert set(WatchlistEntry.model_fields) - set(NewEntry.model_fields) == {"images"}
    # As the upload form sends them: text, with no threshold of its own.
    fields = {  # a form leaves out the fields it has no value for (consent_ref here)
        name: str(value)
        for name in NewEntry.model_fields
        if (value := getattr(entry, name)) is not None
    }
    upload = NewEntry.model_validate({**fields, "threshold": None})
    assert upload == NewEntry(**{n: getattr(entry, n) for n in NewEntry.model_fields})


def test_a_forms_number_text_is_a_number_but_a_files_is_refused() -> None:
    topology = load_topology(EXAMPLES / "demo.yaml")
    assert topology.watchlist is not None
    entry = load_watchlist(topology.watchlist.file).entries[0]
    fields = {  # a form leaves out the fields it has no value for (consent_ref here)
        name: str(value)
        for name in NewEntry.model_fields
        if (value := getattr(entry, name)) is not None
    }
    # An upload form sends every field as text: there "0.55" is the number 0.55.
    upload = NewEntry.model_validate({**fields, "threshold": "0.55"}, context=FORM_FIELDS)
    assert upload.threshold == 0.55
    # Anywhere else (a YAML file's quoted value) the same text is a slip, and says so.
    with pytest.raises(ValidationError, match="remove the quotes"):
        NewEntry.model_validate({**fields, "threshold": "0.55"})
