"""Registration: the checks before a start, the deployment's record, and the watchlist file.

In start-up order (:mod:`lfr_actors.control.deployment` runs them):

- :func:`check_data`: the data folder's disk has room and the store passes its checks;
  a fault is one line and nothing is written;
- :func:`revoke_earlier_local_tokens`: the local admin tokens of earlier runs stop
  working before this run's API answers;
- :func:`prepare_and_enrol`: the deployment's record is found and checked against the
  topology's ``deployment`` section and its thresholds against the store's threshold
  policy (:func:`check_deployment`), the models are prepared,
  the watchlist file's new entries are enrolled, and only then is the record created
  (when there was none) and the entries stored as active entries, approved by the
  deployment's authority; a start refused before that writes no record. The topology's
  ``alerts.calibration`` file is read and checked against the embedder's model first
  (:func:`check_calibration`) and stored with the record (audited when it changes);
- :func:`write_run_file`: once running, this run's local admin token and API address.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lfr_actors.actors.settings import pipeline_config
from lfr_actors.calibration import CalibrationError, CalibrationFile, check_model, load_calibration
from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentError, DeploymentPaths, disk_full_is_one_line
from lfr_actors.control.thresholds import entry_thresholds
from lfr_actors.enrolment import MAX_ENROL_PIXELS, combine, enrol_image, pipeline_enroller
from lfr_actors.errors import EnrolmentRejectedError, ImageError
from lfr_actors.fsutil import atomic_write
from lfr_actors.index.snapshot import SNAPSHOT_MANIFEST
from lfr_actors.logs import get_logger
from lfr_actors.models.cache import ModelCache, default_fetcher, prepare
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline, enrolment_config
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC, EmbedderSpec
from lfr_actors.store.audit import SYSTEM, Actor
from lfr_actors.store.calibrations import set_calibration, stored_calibration
from lfr_actors.store.check import check_before_start, require_free_space
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.policy import (
    ThresholdPolicies,
    ThresholdPolicy,
    deployment_refusal,
    entry_refusal,
)
from lfr_actors.store.records import DeploymentRecord, Enrolled, Origin
from lfr_actors.store.tokens import TokenStore, issue_local_token
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.loader import load_embedder_spec
from lfr_actors.topology.schema import NewDeployment, NewEntry, Topology, Watchlist

log = get_logger("lfr.deployment")


def embedder_spec(topology: Topology) -> EmbedderSpec:
    """The embedding model the topology asks for: the default, or an operator's declared one."""
    if topology.embedder.model_file is not None:
        return load_embedder_spec(Path(topology.embedder.model_file))
    return DEFAULT_EMBEDDER_SPEC


def check_data(paths: DeploymentPaths, *, mark: bool = True) -> None:
    """Refuse, in one line and before anything is written, a start that would lose data.

    The data folder's disk must have room (that the folder can be written is a topology
    check), and the store must pass :func:`lfr_actors.store.check.check_before_start`
    (``mark`` as there: ``lfr validate`` writes nothing); index snapshot manifests left by
    an earlier run are evidence that a store existed.
    """
    require_free_space(paths.data_dir)
    evidence: list[Path] = []
    if paths.index_dir.is_dir():
        evidence = [p / SNAPSHOT_MANIFEST for p in paths.index_dir.iterdir()]
    with disk_full_is_one_line(paths.data_dir):
        check_before_start(paths.alerts_db, evidence=evidence, mark=mark)


def declared_deployment(topology: Topology) -> NewDeployment:
    """The deployment record a topology file declares."""
    return NewDeployment.of(topology)


def check_deployment(
    deployments: Deployments, topology: Topology, watchlist: Watchlist | None = None
) -> DeploymentRecord | None:
    """The stored record of the topology's deployment, checked against the file; None if none.

    Then the store's threshold policy (:mod:`lfr_actors.store.policy`): the threshold in
    force (the store's once recorded, else the file's ``alerts.threshold``) and the own
    threshold of each ``watchlist`` entry not stored yet must be within it, or
    :class:`DeploymentError` says which, with the policy's value and how it changes.
    Writes nothing.
    """
    record = _check_stored(deployments, topology)
    known = deployments.entry_ids(record.id) if record is not None else set()
    problems = policy_problems(
        ThresholdPolicies(deployments.db).get(), topology, watchlist, record=record, skip=known
    )
    if problems:
        raise DeploymentError("\n".join(problems))
    return record


def policy_problems(
    policy: ThresholdPolicy,
    topology: Topology,
    watchlist: Watchlist | None,
    *,
    record: DeploymentRecord | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Every threshold of the start that ``policy`` refuses, one line each (empty: none).

    The deployment's threshold in force (``record``'s, else the file's) and the own
    threshold of each watchlist entry but those in ``skip`` (already stored, so checked
    when they were added). The topology's ``alerts.max_threshold`` is a cap of its own
    beneath the policy, checked with the file.
    """
    if record is None:
        refusal = deployment_refusal(policy, topology.alerts.threshold, what="alerts.threshold")
    else:
        what = f"the store's threshold of deployment {record.id!r}"
        refusal = deployment_refusal(policy, record.threshold, what=what)
    refusals = [] if refusal is None else [refusal]
    for entry in [] if watchlist is None else watchlist.entries:
        if entry.id in skip:
            continue
        found = entry_refusal(
            policy, entry.threshold, what=f"watchlist entry {entry.id!r}'s threshold"
        )
        if found is not None:
            refusals.append(found)
    return [str(r) for r in refusals]


def _check_stored(deployments: Deployments, topology: Topology) -> DeploymentRecord | None:
    """The stored record of the topology's deployment, checked against the file; None if none.

    Writes nothing, so a start refused later (models, enrolment, an ended window) leaves
    no record behind to block the next one. Raises :class:`DeploymentError` when the
    deployment was closed (it never runs again) or when the stored record (created through
    the API, or by an earlier start that got as far as enrolling the watchlist) differs
    from the file, naming every field that differs and the command that prints the record
    as a topology section. The threshold is the exception: it may have been changed
    through the API (audited), and the store's value is the one in force; the file's
    ``alerts.threshold`` only sets the first one.
    """
    declared = declared_deployment(topology)
    record = deployments.find(declared.id)
    if record is None:
        return None
    if record.closed_at is not None:
        raise DeploymentError(
            f"deployment {record.id!r} was closed {iso_utc(record.closed_at, 'auto')} by "
            f"{record.closed_by} ({record.close_reason}); its watchlist was destroyed and it "
            "cannot run again. A new deployment needs a new authority and a new deployment.id."
        )
    stored = record.declared().as_dict()
    differences = [
        f"  deployment {name}: the store has {_shown(stored[name], name)}, the file "
        f"{_shown(value, name)}"
        for name, value in declared.as_dict().items()
        if stored[name] != value and name != "threshold"
    ]
    if differences:
        raise DeploymentError(
            f"the store's record of deployment {record.id!r} (created by {record.created_by}) "
            "differs from the topology file; make the file match the authority as recorded "
            "(the threshold is governed in the store and may differ):\n"
            + "\n".join(differences)
            + f"\n`lfr deployments topology {record.id} --db {deployments.db.path}` prints "
            "the recorded section to paste into the file's `deployment:`; a different "
            "authority is a new deployment: give it a new deployment.id"
        )
    if record.threshold != declared.threshold:
        log.warning(
            "threshold_from_store",
            deployment=record.id,
            threshold=record.threshold,
            file_threshold=declared.threshold,
        )
    return record


def topology_calibration(topology: Topology, spec: EmbedderSpec) -> CalibrationFile | None:
    """The topology's ``alerts.calibration`` file, validated and of ``spec``'s model; or None.

    :class:`DeploymentError` (one line) for an unreadable, corrupt, other-version or
    other-model file.
    """
    path = topology.alerts.calibration
    if path is None:
        return None
    try:
        calibration = load_calibration(Path(path))
        check_model(
            calibration,
            name=spec.name,
            version=spec.version,
            metric=spec.metric,
            source=f"alerts.calibration {path}",
        )
    except CalibrationError as exc:
        raise DeploymentError(str(exc)) from exc
    return calibration


def check_calibration(
    deployments: Deployments,
    topology: Topology,
    spec: EmbedderSpec,
    record: DeploymentRecord | None,
) -> CalibrationFile | None:
    """The topology's ``alerts.calibration``, read and checked against the embedder's model.

    Writes nothing (the caller stores it once the start has passed its checks). Raises
    :class:`DeploymentError` when the file is unreadable, corrupt, of another version or
    of another model, and when the topology names none but the store holds one (set
    through the API) of another model than the embedder's: its expected rates would be
    another model's.
    """
    calibration = topology_calibration(topology, spec)
    if calibration is not None:
        return calibration
    if record is not None:
        try:
            with deployments.db.snapshot() as conn:
                stored = stored_calibration(conn, record.id)
        except CalibrationError as exc:
            raise DeploymentError(
                f"{exc}; or name one in the topology's alerts.calibration"
            ) from exc
        if stored is not None:
            try:
                check_model(
                    stored,
                    name=spec.name,
                    version=spec.version,
                    metric=spec.metric,
                    source=f"the calibration stored for deployment {record.id!r}",
                )
            except CalibrationError as exc:
                raise DeploymentError(
                    f"{exc}; or name one in the topology's alerts.calibration"
                ) from exc
    return None


def register_deployment(deployments: Deployments, topology: Topology) -> DeploymentRecord:
    """The topology's deployment record, checked against the file or created from it.

    :func:`check_deployment`, then an audited create when the store has none.
    """
    record = check_deployment(deployments, topology)
    if record is None:
        record = _create(deployments, topology)
    return record


def _create(deployments: Deployments, topology: Topology) -> DeploymentRecord:
    return deployments.create(
        declared_deployment(topology), actor=Actor("topology file"), origin=Origin.FILE
    )


def refuse_ended_window(deployment_id: str, ends_at: float) -> None:
    """:class:`DeploymentError` when the authorised window ended at ``ends_at`` (Unix s)."""
    if ends_at <= time.time():
        raise DeploymentError(
            f"deployment {deployment_id!r}'s authorised window ended "
            f"{iso_utc(ends_at, 'auto')}; cameras run only inside it"
        )


def _shown(value: Any, name: str) -> str:
    if name in ("starts_at", "ends_at") and isinstance(value, float):
        return iso_utc(value, "auto")
    if name == "watchlist_max_age_h":
        return "no limit" if value is None else f"{value:g} h"
    return repr(value)


def enrolment_pipeline(
    topology: Topology, spec: EmbedderSpec, home: Path, *, progress: bool = True
) -> FacePipeline:
    """The enrolment pipeline ``lfr up`` and ``lfr validate`` use: models from ``home``.

    Prepares the models (a download only when they are not in ``home/models`` yet) and
    builds the detector and embedder on the CPU with the topology's settings. With
    ``progress`` (and stderr a terminal) the preparation shows its bars: a first run
    downloads about 100 MB.
    """
    cache = ModelCache(home / "models")
    prepare(cache, default_fetcher(home), progress=progress and sys.stderr.isatty())
    return FacePipeline.build(
        RuntimeConfig(device="cpu"),
        enrolment_config(pipeline_config(topology.embedder, spec)),
        cache=cache,
    )


@contextlib.contextmanager
def enrolment_progress(
    watchlist: Watchlist,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    enabled: bool = True,
    what: str = "enrolling",
) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr, one step per entry, for :func:`enrol_watchlist`'s ``progress``.

    Shown only when ``enabled`` and stderr is a terminal; off one (a log file, a pipe)
    nothing is written.
    """
    total = sum(1 for e in watchlist.entries if e.id not in skip)
    show = enabled and total > 0 and sys.stderr.isatty()
    with tqdm(
        total=total, desc=f"{what} watchlist", unit="entry", file=sys.stderr, disable=not show
    ) as bar:
        yield lambda _entry_id: bar.update(1)


def enrol_watchlist(
    watchlist: Watchlist,
    pipeline: FacePipeline,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Enrolled]:
    """Each entry's templates (one per image) and first image, except the ids in ``skip``.

    Every rejected image is listed in one :class:`DeploymentError`.
    """
    enrolled: dict[str, Enrolled] = {}
    failures: list[str] = []
    for entry in watchlist.entries:
        if entry.id in skip:
            continue
        photos = []
        for image_path in entry.images:
            try:
                image = load_image(Path(image_path), max_pixels=MAX_ENROL_PIXELS)
                photos.append(enrol_image(pipeline, image))
            except EnrolmentRejectedError as exc:
                failures.append(f"  {entry.id}: {image_path}: {exc.reason}: {exc.detail}")
            except ImageError as exc:
                failures.append(f"  {entry.id}: {exc}")
        if photos:
            enrolled[entry.id] = combine(photos)
        if progress:
            progress(entry.id)
    if failures:
        raise DeploymentError(
            "watchlist enrolment failed; fix or remove these images and run again:\n"
            + "\n".join(failures)
        )
    return enrolled


def prepare_and_enrol(
    topology: Topology,
    watchlist: Watchlist | None,
    *,
    live: Live,
    paths: DeploymentPaths,
    home: Path,
    spec: EmbedderSpec,
) -> None:
    """Register the deployment, load the models, store the watchlist file's new entries.

    Leaves in ``live`` the store connection, the thresholds in force, the enrolment
    pipeline and the API's enroller.
    """
    namespace = topology.deployment.id
    db = Database(paths.alerts_db)
    live.db = db
    deployments = Deployments(db)
    # Checked here, written only once the watchlist file has enrolled: a refused start
    # leaves no record that would block the next one (from a corrected file).
    record = check_deployment(deployments, topology, watchlist)
    if record is None:
        refuse_ended_window(namespace, declared_deployment(topology).ends_at)
    live.threshold = topology.alerts.threshold if record is None else record.threshold
    calibration = check_calibration(deployments, topology, spec, record)
    pipeline = enrolment_pipeline(topology, spec, home)
    enrolled: dict[str, Enrolled] = {}
    if watchlist is not None:
        # Entries already stored (from an earlier run, or deleted through the API since)
        # are not enrolled again: a deleted entry stays deleted.
        known = deployments.entry_ids(namespace)
        with enrolment_progress(watchlist, skip=known) as progress:
            enrolled = enrol_watchlist(watchlist, pipeline, skip=known, progress=progress)
    if record is None:
        _create(deployments, topology)
    if calibration is not None:
        set_calibration(deployments, namespace, calibration, actor=Actor("topology file"))
    if watchlist is not None:
        file_name = (
            "watchlist file"
            if topology.watchlist is None
            else (f"watchlist file {topology.watchlist.file.name}")
        )
        authority = Actor(topology.deployment.authorised_by)
        for entry in watchlist.entries:
            if entry.id not in enrolled:
                continue
            deployments.add_entry(
                namespace,
                NewEntry(
                    id=entry.id,
                    display_name=entry.display_name,
                    category=entry.category,
                    legal_basis=entry.legal_basis,
                    test_subject=entry.test_subject,
                    consent_ref=entry.consent_ref,
                    source=entry.source,
                    image_date=entry.image_date,
                    threshold=entry.threshold,
                ),
                enrolled[entry.id],
                actor=Actor(file_name),
                origin=Origin.FILE,
                approved_by=authority,
            )
    live.pipeline = pipeline
    live.entry_thresholds = entry_thresholds(topology, watchlist, db)
    live.enroller = pipeline_enroller(pipeline)


def revoke_earlier_local_tokens(paths: DeploymentPaths, namespace: str) -> None:
    """Revoke the local admin tokens of earlier runs, before this run's API answers.

    A driver that died (kill -9, a power cut) left its token in the run file; it
    expires by itself within minutes (``tokens.LOCAL_TOKEN_TTL_S``), and is revoked here
    outright, so no API over this store accepts it again.
    """
    with Database(paths.alerts_db) as db:
        revoked = TokenStore(db).revoke_internal(by=SYSTEM)
    if revoked:
        log.warning(
            "earlier_local_tokens_revoked",
            deployment=namespace,
            tokens=[r.id for r in revoked],
        )


def write_run_file(paths: DeploymentPaths, live: Live) -> None:
    """Issue this run's local admin token and write the run file (mode 0600) with it.

    The token is for the operator's ``lfr status`` on this host. It is revoked when the
    deployment stops, renewed while it runs (:mod:`lfr_actors.control.follow`), and
    expires by itself minutes after a crash. Issuing revokes any earlier one.
    """
    issued = issue_local_token(paths.alerts_db)
    live.local_token_id = issued.record.id
    run_info = {"pid": os.getpid(), "api": live.api_url, "token": issued.secret}
    atomic_write(paths.run_file, json.dumps(run_info).encode())
