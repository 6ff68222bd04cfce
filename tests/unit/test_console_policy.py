"""The console page's Content-Security-Policy: its own blocks, and the report's style."""

from __future__ import annotations

import base64
import hashlib
import re

from lfr_actors.api.console import _page
from lfr_actors.api.deployments import REPORT_STYLE, render_report_page
from lfr_actors.calibration import false_alert_figures


def _source(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


def _report() -> dict[str, object]:
    return {
        "deployment_id": "west-1",
        "state": "active",
        "location": "Gate",
        "purpose": "p",
        "authorised_by": "a",
        "impact_assessment_ref": None,
        "starts_at": "2026-12-01T09:00:00Z",
        "ends_at": "2026-12-01T17:00:00Z",
        "closed_at": None,
        "threshold": 0.5,
        "watchlist": {"size": 1},
        "faces_seen": 170,
        "tracks_seen": 8,
        "alerts": {"total": 0, "confirmed": 0, "false": 0, "unsure": 0, "not_adjudicated": 0},
        "outcomes": {},
        "false_alert_rate": 0.0,
        "false_alerts": false_alert_figures(
            None,
            watchlist_size=1,
            threshold=0.5,
            false_alerts=0,
            tracks_seen=8,
            faces_seen=170,
            closed=False,
        ),
        "generated_at": "2026-12-01T10:00:00Z",
    }


def test_the_console_allows_its_blocks_and_the_report_style_and_nothing_else() -> None:
    text, policy = _page()
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    styles = set(directives["style-src"].split())
    scripts = set(directives["script-src"].split())
    page = text.decode()
    own_styles = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    own_scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert styles == {_source(b) for b in own_styles} | {_source(REPORT_STYLE)}
    assert scripts == {_source(b) for b in own_scripts}
    assert "'unsafe-inline'" not in policy


def test_the_report_page_carries_exactly_the_style_the_console_allows() -> None:
    page = render_report_page(_report())
    [style] = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style == REPORT_STYLE
    assert "<script" not in page
