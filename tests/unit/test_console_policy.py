"""The console page's Content-Security-Policy: its own blocks, and the report's style."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path
from typing import Any

from lfr_actors.api.console import _page
from lfr_actors.api.deployments import REPORT_STYLE, render_report_page
from lfr_actors.api.schemas import Report
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.testing.declarations import make_deployment


def _source(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


def _report(tmp_path: Path) -> dict[str, Any]:
    """A real store's report of one deployment, in the form the page is rendered from."""
    with Database(tmp_path / "alerts.sqlite3") as db:
        store = Deployments(db)
        store.create(make_deployment("west-1", time.time(), time.time() + 3600), actor=Actor("a"))
        report = store.report("west-1")
    return Report.model_validate(report).model_dump(mode="json")


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


def test_the_report_page_carries_exactly_the_style_the_console_allows(tmp_path: Path) -> None:
    page = render_report_page(_report(tmp_path))
    [style] = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style == REPORT_STYLE
    assert "<script" not in page
