"""Check what validation cannot without I/O: that the files a topology names exist.

Every problem names the file and line it comes from, as validation's do: a loaded model
remembers where it was read (:class:`~lfr_actors.topology.loader.Origin`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from lfr_actors.topology.explain import show
from lfr_actors.topology.issues import DOCS, TopologyError, TopologyIssue, fmt_path
from lfr_actors.topology.loader import Origin, load_embedder_spec
from lfr_actors.topology.schema import FileSource, PathKey, SyntheticSource, Topology, Watchlist
from lfr_actors.topology.secrets import SecretError, read_secret
from lfr_actors.topology.yaml import line_of, parse

__all__ = ["check_files", "shown_path"]


def _origin(model: BaseModel, fallback: str) -> Origin:
    origin = getattr(model, "_origin", None)
    return origin if isinstance(origin, Origin) else Origin(Path(fallback), {})


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when inside it, as operators typed it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_files(topology: Topology, watchlist: Watchlist | None) -> list[TopologyIssue]:
    """Check what validation cannot without I/O, and what needs both files.

    That every file the topology and watchlist name exists (videos, sprite images, the
    watchlist, the embedder spec and its ONNX file, the watchlist's images), that the data
    folder can be made, that every webhook's secret can be read (:mod:`.secrets`), and
    that no watchlist entry's own threshold is looser than the
    deployment's ``alerts.max_threshold``. Returns every problem found (empty when none).
    """
    top = _origin(topology, "<topology>")
    issues: list[TopologyIssue] = []

    def missing(origin: Origin, where: PathKey, file: Path, what: str, fix: str) -> None:
        state = "is a folder, not a file" if file.is_dir() else "does not exist"
        issues.append(
            TopologyIssue(
                origin.file,
                origin.line(where),
                fmt_path(where),
                origin.written(where, str(file)),
                f"{what} {state} (looked for {shown_path(file)})",
                fix,
            )
        )

    for i, camera in enumerate(topology.cameras):
        source = camera.source
        if isinstance(source, FileSource) and not source.path.is_file():
            missing(
                top,
                ("cameras", i, "source", "path"),
                source.path,
                "the video file",
                "Correct the path (relative to the topology file's folder) or put the video there.",
            )
        if isinstance(source, SyntheticSource):
            for j, sprite in enumerate(source.sprites):
                if not sprite.image.is_file():
                    missing(
                        top,
                        ("cameras", i, "source", "sprites", j, "image"),
                        sprite.image,
                        "the sprite image",
                        "Correct the path (relative to the topology file's folder).",
                    )

    model_file = topology.embedder.model_file
    if model_file is not None:
        if not model_file.is_file():
            missing(
                top,
                ("embedder", "model_file"),
                model_file,
                "the embedder spec file",
                "Correct the path, or remove model_file to use a default model.",
            )
        else:
            issues.extend(_check_spec(model_file))

    if topology.watchlist is not None and not topology.watchlist.file.is_file():
        missing(
            top,
            ("watchlist", "file"),
            topology.watchlist.file,
            "the watchlist file",
            "Correct the path (relative to the topology file's folder) or write the "
            f"watchlist there; {DOCS} describes it.",
        )

    data_dir = topology.storage.data_dir
    ancestor = data_dir
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if data_dir.exists() and not data_dir.is_dir():
        problem = f"the data folder {shown_path(data_dir)} is a file"
    elif not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        problem = f"the data folder cannot be written: {shown_path(ancestor)} is not writable"
    else:
        problem = ""
    if problem:
        where = ("storage", "data_dir")
        issues.append(
            TopologyIssue(
                top.file,
                top.line(where),
                fmt_path(where),
                top.written(where, str(data_dir)),
                problem,
                "Set storage.data_dir to a folder this user can create and write.",
            )
        )

    for i, webhook in enumerate(topology.alerts.webhooks):
        try:
            read_secret(webhook)
        except SecretError as exc:
            key = "secret_env" if webhook.secret_env is not None else "secret_file"
            hook: PathKey = ("alerts", "webhooks", i, key)
            issues.append(
                TopologyIssue(
                    top.file,
                    top.line(hook),
                    fmt_path(hook),
                    top.written(hook, str(getattr(webhook, key))),
                    str(exc),
                    "Export the variable (the shared secret) where lfr validate and lfr up run."
                    if key == "secret_env"
                    else "Write the shared secret into the file and chmod 600 it.",
                )
            )

    if watchlist is not None:
        issues.extend(_check_watchlist(topology, watchlist))
    return issues


def _check_spec(file: Path) -> list[TopologyIssue]:
    try:
        spec = load_embedder_spec(file)
    except TopologyError as exc:
        return exc.issues
    parsed = parse(file, "embedder spec")
    if spec.path is None:
        return [
            TopologyIssue(
                file,
                line_of(parsed.lines, ()),
                "path",
                None,
                "the embedder spec names no ONNX file",
                "Add path: with the model's ONNX file, relative to the spec file's folder.",
            )
        ]
    if not spec.path.is_file():
        return [
            TopologyIssue(
                file,
                line_of(parsed.lines, ("path",)),
                "path",
                show(shown_path(spec.path)),
                "the ONNX model file does not exist",
                "Correct the path (relative to the spec file's folder).",
            )
        ]
    return []


def _check_watchlist(topology: Topology, watchlist: Watchlist) -> list[TopologyIssue]:
    origin = _origin(watchlist, "<watchlist>")
    issues = []
    cap = topology.alerts.max_threshold
    for i, entry in enumerate(watchlist.entries):
        for j, image in enumerate(entry.images):
            if not image.is_file():
                where: PathKey = ("entries", i, "images", j)
                state = "is a folder, not a file" if image.is_dir() else "does not exist"
                issues.append(
                    TopologyIssue(
                        origin.file,
                        origin.line(where),
                        fmt_path(where),
                        origin.written(where, str(image)),
                        f"the image of entry {entry.id!r} {state} (looked for {shown_path(image)})",
                        "Correct the path (relative to the watchlist file's folder), or "
                        "remove the image from the entry.",
                    )
                )
        if cap is not None and entry.threshold is not None and entry.threshold > cap:
            where = ("entries", i, "threshold")
            issues.append(
                TopologyIssue(
                    origin.file,
                    origin.line(where),
                    fmt_path(where),
                    show(entry.threshold),
                    f"entry {entry.id!r} has a threshold looser than the deployment's "
                    f"alerts.max_threshold {cap}",
                    f"Set its threshold to {cap} or lower, or remove it to use the deployment's.",
                )
            )
    return issues
