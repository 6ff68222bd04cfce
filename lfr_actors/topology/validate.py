"""``lfr validate``: load a topology and its watchlist, check their files, and summarise.

Exit status 0 with a one-screen summary when everything is valid; 2 with every problem
on stderr ("file:line: field: got V — what. Fix.") when not. The command
then puts files that pass through ``lfr up``'s own start-up checks that need no running
system (:mod:`lfr_actors.control.preflight`): valid then means ``lfr up`` will start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lfr_actors.timefmt import iso_z
from lfr_actors.topology.checks import check_files, shown_path
from lfr_actors.topology.explain import yaml_text
from lfr_actors.topology.issues import TopologyError, TopologyIssue
from lfr_actors.topology.loader import load_topology, load_watchlist
from lfr_actors.topology.schema import FileSource, PathKey, Topology, Watchlist
from lfr_actors.topology.yaml import lookup

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CheckReport", "plural", "summary", "validate_command"]


@dataclass
class CheckReport:
    """What the checks after the files' own checked (one line each), and what they refused."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1 ("1 entry", "2 entries")."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _written(topology: Topology, path: PathKey) -> bool:
    """Whether the file ``topology`` was read from writes ``path``.

    False when it was not read from a file: a value given in code is not told apart from
    a default.
    """
    origin = topology._origin
    return origin is not None and lookup(origin.data, path)[0]


def summary(topology: Topology, watchlist: Watchlist | None, *, now: datetime | None = None) -> str:
    """A one-screen account of what this topology would run, for operators."""
    now = now or datetime.now(UTC)
    d = topology.deployment
    if d.is_active(now):
        state = f"ACTIVE now, ends in {_span(d.end - now)}"
    elif now < d.start:
        state = f"not active: starts in {_span(d.start - now)}"
    else:
        state = f"not active: ended {_span(now - d.end)} ago"

    window = f"{iso_z(d.start, 'minutes')} -> {iso_z(d.end, 'minutes')}"
    rows = [
        f"deployment   {d.id}",
        f"  authorised {d.authorised_by}",
        f"  purpose    {d.purpose}",
        f"  location   {d.location}",
        f"  window     {window} ({_span(d.duration)}); {state}",
    ]
    if d.impact_assessment_ref:
        rows.append(f"  assessment {d.impact_assessment_ref}")
    rows.append(f"cameras      {len(topology.cameras)}")
    width = max(len(c.id) for c in topology.cameras)
    for c in topology.cameras:
        source = c.source
        text = (
            f"file {shown_path(source.path)}"
            if isinstance(source, FileSource)
            else source.describe()
        )
        rows.append(f"  {c.id:<{width}}  {text}, {yaml_text(c.fps)} fps")
    e = topology.embedder
    device = e.device if e.device == "cpu" else f"{e.device}, {yaml_text(e.gpus_per_replica)} GPU"
    model = f"model file {shown_path(e.model_file)}" if e.model_file else f"model {e.model}"
    rows.append(
        f"embedder     {e.id}: {plural(e.replicas, 'replica')} ({device}), {model}, "
        f"batch <= {e.max_batch} within {yaml_text(e.max_wait_ms)} ms"
    )
    chosen = (
        ""
        if _written(topology, ("embedder", "detector", "model"))
        else (f" (the default on {e.device})")
    )
    rows.append(f"  detector   {e.detector.describe()}{chosen}")
    t = e.tracking
    rows.append(
        f"  tracks     overlap >= {yaml_text(t.min_iou)}, "
        f"{plural(t.max_missed_frames, 'missed frame')}, <= {t.max_tracks} per camera, "
        f"decided from {plural(t.min_track_frames, 'face')}; crop {e.crop_size} px"
    )
    ix = topology.index
    mode = f"auto (exact below {ix.exact_below} entries)" if ix.mode == "auto" else ix.mode
    rows.append(f"index        {ix.id}: {plural(ix.shards, 'shard')}, {mode}, {ix.dtype}")
    a = topology.alerts
    cap = f" (max {yaml_text(a.max_threshold)})" if a.max_threshold is not None else ""
    rows.append(
        f"alerts       {a.id}: threshold {yaml_text(a.threshold)}{cap}, "
        f"{plural(a.min_sightings, 'sighting')} within {yaml_text(a.fusion_window_s)} s, "
        f"top {a.top_k}"
    )
    for name, hook in zip(a.webhook_names(), a.webhooks, strict=True):
        rows.append(f"webhook      {name}: {hook.shown()}, {', '.join(hook.events)}")
    if topology.watchlist is None:
        rows.append("watchlist    none in a file: entries are enrolled through the API")
    else:
        if watchlist is None:
            listed = "not loaded"
        else:
            images = sum(len(x.images) for x in watchlist.entries)
            listed = f"{plural(len(watchlist.entries), 'entry')}, {plural(images, 'image')}"
        rows.append(f"watchlist    {shown_path(topology.watchlist.file)}: {listed}")
    rows.append(f"api          http://{topology.api.host}:{topology.api.port}")
    rows.append(f"data         {shown_path(topology.storage.data_dir)}")
    rows.append(f"logging      {topology.logging.level}, {topology.logging.format}")
    return "\n".join(rows)


def validate_command(
    path: Path,
    stdout: TextIO,
    stderr: TextIO,
    *,
    checks: Callable[[Topology, Watchlist | None], CheckReport] | None = None,
) -> int:
    """``lfr validate FILE``: 0 and a summary when valid, else 2 and every issue on stderr.

    ``checks`` runs once the files pass (the command gives it
    :func:`lfr_actors.control.preflight.preflight`); without it only the files are checked.
    """
    issues: list[TopologyIssue] = []
    watchlist: Watchlist | None = None
    try:
        topology = load_topology(path)
    except TopologyError as exc:
        return _report(path, exc.issues, stderr)
    if topology.watchlist is not None and topology.watchlist.file.is_file():
        try:
            watchlist = load_watchlist(Path(shown_path(topology.watchlist.file)))
        except TopologyError as exc:
            issues.extend(exc.issues)
    issues.extend(check_files(topology, watchlist))
    if issues:
        return _report(path, issues, stderr)
    checked: list[str] = []
    if checks is not None:
        report = checks(topology, watchlist)
        if report.problems:
            return _report(path, [f"{path}: {p}" for p in report.problems], stderr)
        checked = report.checked
    print(summary(topology, watchlist), file=stdout)
    if checked:
        print("checked", file=stdout)
        for line in checked:
            print(f"  {line}", file=stdout)
    print(f"{path}: valid", file=stdout)
    return 0


def _report(path: Path, issues: list[TopologyIssue] | list[str], stderr: TextIO) -> int:
    for issue in issues:
        print(issue, file=stderr)
    print(f"{path}: {plural(len(issues), 'problem')}; nothing was started.", file=stderr)
    return 2
