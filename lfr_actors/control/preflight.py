"""The checks ``lfr validate`` runs after the files pass, so that "valid" means "will start".

Each is the check ``lfr up`` itself runs, made without writing anything: the watchlist's
photos enrolled with the real enrolment pipeline (:func:`registration.enrolment_pipeline`
and :func:`registration.enrol_watchlist`, as ``up`` does), the authorised window against
the clock (:func:`registration.refuse_ended_window`), the data folder (room on its disk,
and the store's ``quick_check``, schema and evidence of an earlier store:
:func:`registration.check_data`, without the creation marker ``up`` writes; that the
folder can be written is a topology check, made before these), the stored
record against the file (:func:`registration.check_deployment`, over a read-only
connection, only when the store exists and passed), and the API port (bound and closed
again). What needs the running system (Ray, GPUs, a camera's stream) is not checked here.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from lfr_actors.control import registration
from lfr_actors.control.paths import DeploymentError, DeploymentPaths
from lfr_actors.errors import LfrError
from lfr_actors.store.db import Database, StoreError
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.policy import default_policy
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import Topology, Watchlist
from lfr_actors.topology.validate import CheckReport, plural

__all__ = ["Preflight", "port_in_use_message", "port_problem", "preflight"]


@dataclass(frozen=True)
class Preflight:
    """How ``lfr validate`` runs the start-up checks.

    ``home`` holds the models (as for ``lfr up --home``); ``enrol`` False
    (``--offline-only``) skips the model work; ``progress`` allows a progress bar on
    stderr when it is a terminal.
    """

    home: Path
    enrol: bool = True
    progress: bool = True


def port_in_use_message(host: str, port: int) -> str:
    """The one line for an API port something else holds (``lfr up`` and ``validate``)."""
    return (
        f"api.port {port} on {host} is already in use; stop what uses it "
        "or set api.port in the topology (0 picks a free port)"
    )


def preflight(topology: Topology, watchlist: Watchlist | None, options: Preflight) -> CheckReport:
    """Every start-up check that needs no running system; all problems, not the first."""
    report = CheckReport()
    store_usable = _check_data(topology, report)
    known = _check_record(topology, report, watchlist) if store_usable else frozenset()
    # The data and record lines go after the others: photos, window, port, data, record.
    stored_lines = list(report.checked)
    report.checked.clear()
    _check_enrolment(topology, watchlist, options, report, skip=known)
    _check_window(topology, report)
    _check_calibration(topology, report)
    _check_port(topology, report)
    report.checked.extend(stored_lines)
    return report


def _check_data(topology: Topology, report: CheckReport) -> bool:
    """The data folder as ``lfr up`` checks it first; whether the store may be read on."""
    paths = DeploymentPaths(Path(topology.storage.data_dir))
    try:
        registration.check_data(paths, mark=False)
    except LfrError as exc:
        report.problems.append(str(exc))
        return False
    if paths.alerts_db.is_file():
        report.checked.append(f"data         {paths.data_dir}: room on its disk, store checks out")
    else:
        report.checked.append(f"data         {paths.data_dir}: writable, room on its disk")
    return True


def _check_enrolment(
    topology: Topology,
    watchlist: Watchlist | None,
    options: Preflight,
    report: CheckReport,
    *,
    skip: frozenset[str],
) -> None:
    """Enrol the photos of every entry ``lfr up`` would enrol: not those already stored."""
    if watchlist is None:
        return
    entries = len(watchlist.entries)
    photos = sum(len(e.images) for e in watchlist.entries)
    counted = f"{plural(entries, 'entry')}, {plural(photos, 'photo')}"
    stored = f"; {len(skip)} already stored, not enrolled again" if skip else ""
    if not options.enrol:
        report.checked.append(
            f"watchlist    photos not enrolled: --offline-only ({counted}){stored}"
        )
        return
    try:
        pipeline = registration.enrolment_pipeline(
            topology, registration.embedder_spec(topology), options.home, progress=options.progress
        )
        with registration.enrolment_progress(
            watchlist, skip=skip, enabled=options.progress, what="validating"
        ) as progress:
            registration.enrol_watchlist(watchlist, pipeline, skip=skip, progress=progress)
    except DeploymentError as exc:
        report.problems.append(str(exc))
        return
    except LfrError as exc:
        report.problems.append(f"the enrolment models could not be loaded: {exc}")
        return
    report.checked.append(f"watchlist    enrolled: {counted}, all usable{stored}")


def _check_calibration(topology: Topology, report: CheckReport) -> None:
    """The topology's ``alerts.calibration`` file: valid and of the embedder's model."""
    if topology.alerts.calibration is None:
        return
    try:
        calibration = registration.topology_calibration(
            topology, registration.embedder_spec(topology)
        )
    except LfrError as exc:
        report.problems.append(str(exc))
        return
    assert calibration is not None
    report.checked.append(
        f"calibration  {calibration.model.name}, {calibration.gallery.identities} identities, "
        f"{calibration.probes.non_mated} non-mated probes"
    )


def _check_window(topology: Topology, report: CheckReport) -> None:
    declared = registration.declared_deployment(topology)
    try:
        registration.refuse_ended_window(declared.id, declared.ends_at)
    except DeploymentError as exc:
        report.problems.append(str(exc))
        return
    if declared.starts_at > time.time():
        # lfr up starts before the window: the cameras wait for it (the camera actor).
        report.checked.append(
            f"window       opens {iso_utc(declared.starts_at, 'auto')}: lfr up starts, and "
            "the cameras wait until then"
        )
    else:
        report.checked.append("window       open now")


def _check_record(
    topology: Topology, report: CheckReport, watchlist: Watchlist | None
) -> frozenset[str]:
    """Check the stored record and the threshold policy; the ids of entries already stored.

    ``lfr up`` skips the entries already stored.
    """
    store = DeploymentPaths(Path(topology.storage.data_dir)).alerts_db
    if not store.is_file():
        # A new store starts with the default policy: the default model's threshold.
        report.problems.extend(registration.policy_problems(default_policy(), topology, watchlist))
        report.checked.append("record       no stored record yet (no store in the data folder)")
        return frozenset()
    try:
        with Database(store, readonly=True) as db:
            deployments = Deployments(db)
            record = registration.check_deployment(deployments, topology, watchlist)
            known = frozenset(deployments.entry_ids(topology.deployment.id))
    except DeploymentError as exc:
        report.problems.append(str(exc))
        return frozenset()
    except StoreError as exc:
        # An older schema is migrated by lfr up's writer; this reader cannot tell more.
        report.checked.append(f"record       not checked: {exc}")
        return frozenset()
    if record is None:
        report.checked.append(f"record       no stored record yet in {store}")
    else:
        report.checked.append(f"record       matches the stored record in {store}")
    return known


def _check_port(topology: Topology, report: CheckReport) -> None:
    host, port = topology.api.host, topology.api.port
    if port == 0:
        report.checked.append("port         0: lfr up picks a free one")
        return
    problem = port_problem(host, port)
    if problem is None:
        report.checked.append(f"port         {port} on {host} free")
    else:
        report.problems.append(problem)


def port_problem(host: str, port: int) -> str | None:
    """None when ``host:port`` can be bound now (as aiohttp binds it), else the one line.

    Binds every address ``host`` resolves to, with ``SO_REUSEADDR`` as the API's server
    sets it, and closes the sockets at once.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return port_in_use_message(host, port)
                return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None
