"""``lfr status``: the running deployment's cameras, embedders and alerts, from its API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfr_actors.cli.common import EXIT_OK
from lfr_actors.cli.run import run_info
from lfr_actors.errors import LfrError

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def cmd_status(args: argparse.Namespace) -> int:
    """``lfr status FILE``: the running deployment's status, from its API."""
    import os
    import urllib.error
    import urllib.request

    info = {} if args.url else run_info(Path(args.file))
    url = args.url or info["api"]
    # The deployment's own token for this host's `lfr` (in its run file), else the caller's.
    token = info.get("token") or os.environ.get("LFR_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{url}/v1/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise LfrError(_api_refusal(url, exc)) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        where = f" (run file {info['run_file']})" if info.get("run_file") else ""
        raise LfrError(
            f"API unreachable: the deployment's API at {url}{where} does not answer "
            f"({reason}); its `lfr up` may have stopped or crashed: check that process and "
            "its log, and start it again with `lfr up FILE`"
        ) from exc
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    for line in status_lines(status):
        print(line)
    return EXIT_OK


def _why(figures: dict[str, Any]) -> str:
    """Why an actor is not well: unreachable (with the reason), the supervisor's error."""
    parts = []
    if figures.get("unavailable"):
        parts.append(f"actor unavailable: {figures['unavailable']}")
    if figures.get("supervisor_error"):
        parts.append(f"supervisor: {figures['supervisor_error']}")
    if figures.get("store_error"):
        parts.append(f"store: {figures['store_error']}")
    if figures.get("last_error"):
        parts.append(str(figures["last_error"]))
    return "; ".join(parts)


def status_lines(status: dict[str, Any]) -> list[str]:
    """``lfr status``'s table: every camera and embedder, and why any is not well.

    Each camera shows the faces seen in its frames and the face tracks (people) they
    began; each embedder the tracks it is following now (``live``) and has ended. An
    actor that does not answer shows ``unavailable`` and the reason, never a bare ``?``;
    a stale status (the API could not gather it lately) says so and how old it is.
    """
    lines = []
    d = status["deployment"]
    lines.append(f"deployment {d['id']} at {d['location']}  window {d['start']} .. {d['end']}")
    lines.append(f"  api {status['api']}  up {status['uptime_s']} s  threshold {d['threshold']}")
    age = status.get("status_age_s")
    if status.get("status_stale") or status.get("status_error"):
        when = f"{age} s ago" if age is not None else "never"
        why = status.get("status_error") or "no fresh answer"
        lines.append(f"  STATUS STALE: figures last gathered {when}; the last try: {why}")
    if status.get("store_error"):
        lines.append(
            f"  STORE CANNOT BE WRITTEN: {status['store_error']}; writes through the API "
            "are refused until space returns"
        )
    watchlist = d.get("watchlist_entries")
    state = d.get("state", "running")
    closed = "  CLOSED: cameras stopped, watchlist destroyed" if state == "closed" else ""
    lines.append(f"  state {state}  watchlist {watchlist} entries in the index{closed}")
    for damaged in d.get("damaged") or []:
        lines.append(
            f"  DAMAGED entry {damaged['entry_id']} (not indexed): {damaged['reason']}; "
            "see `lfr store check`"
        )
    lines += stale_lines(d)
    lines.append(
        f"  {'camera':<16}{'state':<14}{'fps':>6}{'frames':>8}{'drops':>7}{'faces':>7}"
        f"{'tracks':>7}{'restarts':>9}  error"
    )
    for cam_id, c in status["cameras"].items():
        cam_state = "unavailable" if c.get("unavailable") else c.get("state") or "unknown"
        lines.append(
            f"  {cam_id:<16}{cam_state:<14}{c.get('fps') or 0:>6}"
            f"{c.get('frames_processed', 0):>8}{c.get('frames_dropped', 0):>7}"
            f"{c.get('faces', 0):>7}{c.get('tracks', 0):>7}{c.get('restarts', 0):>9}  {_why(c)}"
        )
    for emb_id, e in status["embedders"].items():
        if e.get("unavailable"):
            lines.append(f"  embedder {emb_id}: restarts {e.get('restarts')}  {_why(e)}")
            continue
        why = _why(e)
        lines.append(
            f"  embedder {emb_id}: {e.get('providers')} frames {e.get('frames')} "
            f"batches {e.get('batches')} mean batch {e.get('batch_size_mean')} "
            f"tracks live {e.get('tracks_live', 0)} ended {e.get('tracks_ended', 0)} "
            f"restarts {e.get('restarts')}" + (f"  {why}" if why else "")
        )
    others = [("index", status.get("index") or {}), ("alerts", status.get("alerts") or {})]
    for section, actors in others:
        for actor_id, figures in actors.items():
            if actor_id == "store" or not isinstance(figures, dict):
                continue
            why = _why(figures)
            if why:
                lines.append(f"  {section} {actor_id}: restarts {figures.get('restarts')}  {why}")
    nodes = status.get("nodes") or {}
    if len(nodes) > 1 or any(not n.get("alive") for n in nodes.values()):
        for node_id, n in nodes.items():
            alive = "alive" if n.get("alive") else "DEAD"
            extra = sorted(k for k in n.get("resources", {}) if k not in ("CPU", "GPU"))
            lines.append(
                f"  node {node_id[:12]} {n.get('address')} {alive}"
                f"{' (driver)' if n.get('driver') else ''} resources {extra or '-'} "
                f"actors {len(n.get('actors', []))}"
            )
    for hook in status.get("webhooks") or []:
        up = "up" if hook.get("up") else "FAILING"
        error = f"  last error: {hook['last_error']}" if hook.get("last_error") else ""
        lines.append(
            f"  webhook {hook.get('name')} {hook.get('target')} {up}: delivered "
            f"{hook.get('delivered', 0)} failed {hook.get('failed', 0)} pending "
            f"{hook.get('pending', 0)} last success {hook.get('last_success') or 'never'}{error}"
        )
    for output in status.get("alert_outputs") or []:
        up = "up" if output.get("up") else "FAILING (retried; nothing is lost)"
        error = f"  last error: {output['last_error']}" if output.get("last_error") else ""
        lines.append(
            f"  alert output {output.get('name')} {up}: delivered {output.get('delivered', 0)} "
            f"up to event {output.get('position', 0)}{error}"
        )
    store = (status.get("alerts") or {}).get("store") or {}
    lines.append(
        f"  alerts stored {store.get('alerts', '?')}  sightings {store.get('sightings', '?')}"
    )
    return lines


def stale_lines(deployment: dict[str, Any]) -> list[str]:
    """The stale entries (approved longer ago than the deployment's limit): not searched."""
    stale = deployment.get("stale") or []
    if not stale:
        return []
    limit = deployment.get("watchlist_max_age_h")
    limit_text = f"{limit:g} h" if isinstance(limit, (int, float)) else "the limit"
    lines = [
        f"  STALE entries {deployment.get('stale_entries', len(stale))} (approved more than "
        f"{limit_text} ago; not searched, nothing deleted; enrol again to refresh):"
    ]
    for s in stale:
        lines.append(
            f"    {s['entry_id']}  approved {s['approved_at']}  stale since {s['stale_since']}"
        )
    return lines


def _api_refusal(url: str, exc: Any) -> str:
    try:
        detail = json.loads(exc.read()).get("detail", "")
    except (OSError, ValueError, AttributeError):
        detail = ""
    message = f"the API at {url} answered {exc.code}"
    if detail:
        message += f": {detail}"
    if exc.code in (401, 403):
        message += (
            " Set LFR_TOKEN to a token with the viewer role or above "
            "(`lfr tokens create --name NAME --role viewer --topology FILE`)."
        )
    return message


def add_status(sub: Commands) -> None:
    """``lfr status [FILE]``."""
    status = sub.add_parser("status", help="cameras, fps, drops, restarts and alerts")
    status.add_argument("file", nargs="?", help="the topology YAML of the running deployment")
    status.add_argument(
        "--url", help="the deployment API's base URL, instead of FILE (sends $LFR_TOKEN)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
