"""Topology and watchlist files: the examples load, and every kind of mistake is reported
with its file, line, field path, value and fix."""

from __future__ import annotations

import io
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from lfr_actors.cli.main import main
from lfr_actors.models.centerface import CenterFaceConfig
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.detectors import DETECTOR_NAMES
from lfr_actors.models.quality import QualityConfig
from lfr_actors.topology import (
    DEFAULT_DETECTOR,
    MAX_DEPLOYMENT_WINDOW,
    CenterFaceSettings,
    Deployment,
    DetectorSettings,
    EmbedderConfig,
    FileSource,
    MtcnnSettings,
    SyntheticSource,
    Topology,
    TopologyError,
    TopologyIssue,
    UrlSource,
    Watchlist,
    check_files,
    load_embedder_spec,
    load_topology,
    load_watchlist,
    summary,
    validate_command,
)
from lfr_actors.topology import schema as schema_module
from lfr_actors.tracking.config import LIMITS as TRACKING_LIMITS
from lfr_actors.tracking.config import TrackingConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "topology"
SHARED_DATA = REPO.parent / "shared" / "data"

BASE = """\
version: 1
deployment:
  id: test-deploy
  authorised_by: Supt A. Example
  purpose: testing
  location: a test bench
  start: 2026-11-20T08:00:00Z
  end: 2026-11-20T20:00:00Z
cameras:
  - id: cam_a
    source:
      type: file
      path: videos/a.mp4
    fps: 10
  - id: cam_b
    source: {type: url, url: "rtsp://user:secret@192.0.2.10:554/s1"}
alerts:
  threshold: 0.6
watchlist:
  file: lists/w.yaml
storage:
  data_dir: data
"""

WATCHLIST = """\
version: 1
entries:
  - id: W-1
    display_name: Person One
    images: [img/one.jpg]
    category: wanted
    legal_basis: warrant 1
    source: custody record 1
    image_date: 2025-03-14
  - id: W-2
    display_name: Person Two
    images: [img/two-a.jpg, img/two-b.jpg]
    category: missing person
    legal_basis: risk to life
    source: family
    image_date: 2026-01-02
    threshold: 0.5
"""


def write(folder: Path, text: str, name: str = "topo.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth - 1]


def topology_issues(path: Path) -> list[TopologyIssue]:
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return caught.value.issues


def watchlist_issues(path: Path) -> list[TopologyIssue]:
    with pytest.raises(TopologyError) as caught:
        load_watchlist(path)
    return caught.value.issues


def by_path(issues: list[TopologyIssue]) -> dict[str, TopologyIssue]:
    return {i.path: i for i in issues}


def only(issues: list[TopologyIssue]) -> TopologyIssue:
    assert len(issues) == 1, "\n".join(str(i) for i in issues)
    return issues[0]


def make_files(folder: Path) -> None:
    """The files BASE and WATCHLIST name, so that check_files finds them all."""
    for rel in ("videos/a.mp4", "lists/img/one.jpg", "lists/img/two-a.jpg", "lists/img/two-b.jpg"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    write(folder, WATCHLIST, "lists/w.yaml")


# -- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "site-gpu.yaml", "cluster.yaml", "centerface.yaml"])
def test_examples_load_with_their_watchlists(name: str) -> None:
    topology = load_topology(EXAMPLES / name)
    assert topology.watchlist.file.is_file()
    watchlist = load_watchlist(topology.watchlist.file)
    assert len(watchlist.entries) >= 2


def test_example_shapes() -> None:
    site = load_topology(EXAMPLES / "site-gpu.yaml")
    assert len(site.cameras) == 4
    assert all(isinstance(c.source, UrlSource) for c in site.cameras)
    assert (site.embedder.replicas, site.embedder.device) == (2, "gpu")
    assert (site.index.shards, site.index.mode) == (4, "hnsw")
    cluster = load_topology(EXAMPLES / "cluster.yaml")
    assert len(cluster.cameras) == 12
    assert (cluster.embedder.replicas, cluster.embedder.device) == (4, "gpu")
    assert cluster.index.shards == 8
    demo = load_topology(EXAMPLES / "demo.yaml")
    assert len(demo.cameras) == 1
    assert isinstance(demo.cameras[0].source, FileSource)
    assert (demo.alerts.threshold, demo.alerts.min_sightings) == (0.6, 2)
    assert demo.alerts.fusion_window_s == 30
    assert isinstance(demo.embedder.detector, CenterFaceSettings)
    # The GPU examples name no detector: they get the default.
    assert isinstance(site.embedder.detector, CenterFaceSettings)
    assert site.embedder.detector.min_face_px == 48
    centerface = load_topology(EXAMPLES / "centerface.yaml")
    assert centerface.embedder.detector == CenterFaceSettings(input_size=(640, 384), max_batch=8)
    assert centerface.cameras[0].source == demo.cameras[0].source


@pytest.mark.parametrize("name", ["demo.yaml", "centerface.yaml"])
def test_demo_files_exist_in_shared_data(name: str) -> None:
    if not (SHARED_DATA / "video").is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    topology = load_topology(EXAMPLES / name)
    watchlist = load_watchlist(topology.watchlist.file)
    assert check_files(topology, watchlist) == []
    source = topology.cameras[0].source
    assert isinstance(source, FileSource)
    assert source.path == SHARED_DATA.resolve() / "video" / "short_hamilton_clip.mp4"


def test_every_field_is_described_limited_and_documented() -> None:
    docs = (REPO / "docs" / "topology.md").read_text("utf-8")
    models = [
        obj
        for obj in vars(schema_module).values()
        if isinstance(obj, type)
        and issubclass(obj, schema_module.BaseModel)
        and obj.__module__ == schema_module.__name__
        and not obj.__name__.startswith("_")
        and obj is not schema_module.FileModel
    ]
    assert len(models) >= 18
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        assert model.model_config.get("frozen") is True, model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            assert f"`{name}`" in docs, f"{model.__name__}.{name} missing from docs"


# -- one kind of mistake at a time -------------------------------------------------------


def test_out_of_range_reads_like_the_operator_manual(tmp_path: Path) -> None:
    text = BASE.replace("fps: 10", "fps: 0")
    path = write(tmp_path, text)
    issue = only(topology_issues(path))
    assert issue.file == path
    assert issue.line == line_of(text, "fps: 0")
    assert issue.path == "cameras[0].fps"
    assert issue.value == "0"
    assert str(issue) == (
        f"{path}:{issue.line}: cameras[0].fps: got 0 — fps must be greater than 0 and at "
        "most 60. Set cameras[0].fps to the camera's sampling rate, in frames per second, "
        "e.g. 10."
    )


def test_unknown_key_suggests_the_close_match(tmp_path: Path) -> None:
    text = BASE.replace("fps: 10", "fpss: 10")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "cameras[0].fpss"
    assert issue.line == line_of(text, "fpss")
    assert issue.message == "unknown field 'fpss' — did you mean 'fps'?"
    assert issue.fix == "Rename it to fps."


def test_unknown_key_without_a_close_match_lists_the_fields(tmp_path: Path) -> None:
    text = BASE.replace("  data_dir: data", "  data_dir: data\n  colour: blue")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("storage.colour", line_of(text, "colour"))
    assert issue.message == "unknown field 'colour'"
    assert "storage accepts data_dir" in issue.fix


def test_wrong_type_names_the_expected_type(tmp_path: Path) -> None:
    text = BASE.replace("fps: 10", "fps: fast")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.value) == ("cameras[0].fps", "'fast'")
    assert issue.message == "fps must be a number"
    assert issue.fix.startswith("Set cameras[0].fps to the camera's sampling rate")


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("queue_size", "1.5", "queue_size must be a whole number"),
        ("queue_size", "true", "queue_size must be a whole number"),
        ("reconnect", "5", "reconnect must be a mapping of fields (indented key: value lines)"),
        ("at_end", "loopy", "at_end must be one of stop, loop — did you mean 'loop'?"),
    ],
)
def test_camera_field_types(tmp_path: Path, field: str, bad: str, message: str) -> None:
    text = BASE.replace("fps: 10", f"fps: 10\n    {field}: {bad}")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == f"cameras[0].{field}"
    assert issue.line == line_of(text, f"{field}: {bad}")
    assert issue.message == message


def test_missing_required_field_points_at_its_parent(tmp_path: Path) -> None:
    text = BASE.replace("  threshold: 0.6\n", "  min_sightings: 2\n")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "alerts.threshold"
    assert issue.line == line_of(text, "alerts:")
    assert issue.value is None
    assert issue.message == "required field 'threshold' is missing"
    assert issue.fix.startswith("Add threshold under alerts: the distance at or below which")
    assert "e.g. threshold: 0.6" in issue.fix


def test_missing_section_points_at_the_top(tmp_path: Path) -> None:
    text = BASE.replace("storage:\n  data_dir: data\n", "")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("storage", 1)
    assert "Add a storage: section at the top level" in issue.fix


def test_naive_datetime_asks_for_a_time_zone(tmp_path: Path) -> None:
    text = BASE.replace("start: 2026-11-20T08:00:00Z", "start: 2026-11-20T08:00:00")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("deployment.start", line_of(text, "start:"))
    assert issue.value == "'2026-11-20T08:00:00'"
    assert issue.message == "start has no time zone"
    assert "2026-11-20T08:00:00Z" in issue.fix


def test_a_date_alone_is_offered_a_fix_that_is_itself_valid(tmp_path: Path) -> None:
    text = BASE.replace("start: 2026-11-20T08:00:00Z", "start: '2026-11-20'")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "deployment.start"
    assert "2026-11-20T00:00:00Z" in issue.fix
    fixed = BASE.replace("start: 2026-11-20T08:00:00Z", "start: 2026-11-20T00:00:00Z")
    assert load_topology(write(tmp_path, fixed)).deployment.start.hour == 0


def test_datetime_that_is_a_number_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("start: 2026-11-20T08:00:00Z", "start: 1700000000")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "deployment.start"
    assert issue.message.startswith("start must be an ISO 8601 date and time")


def test_end_before_start_names_both_lines(tmp_path: Path) -> None:
    text = BASE.replace("end: 2026-11-20T20:00:00Z", "end: 2026-11-19T20:00:00Z")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("deployment.end", line_of(text, "end:"))
    assert "is not after start" in issue.message
    assert f"deployment.start (line {line_of(text, 'start:')})" in issue.message


def test_window_longer_than_the_limit(tmp_path: Path) -> None:
    text = BASE.replace("end: 2026-11-20T20:00:00Z", "end: 2027-01-20T20:00:00Z")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "deployment.end"
    assert f"longer than the {MAX_DEPLOYMENT_WINDOW.days} days" in issue.message


def test_duplicate_camera_ids_report_every_use_with_its_line(tmp_path: Path) -> None:
    extra = (
        "  - id: cam_a\n    source: {type: device, index: 0}\n"
        "  - id: cam_a\n    source: {type: device, index: 1}\n"
    )
    text = BASE.replace("alerts:", extra + "alerts:")
    issues = topology_issues(write(tmp_path, text))
    lines = {n: line_of(text, "- id: cam_a", k) for k, n in enumerate((0, 2, 3), start=1)}
    assert [i.path for i in issues] == ["cameras[0].id", "cameras[2].id", "cameras[3].id"]
    assert [i.line for i in issues] == list(lines.values())
    for issue, me in zip(issues, lines, strict=True):
        assert issue.value == "'cam_a'"
        assert issue.message.startswith("camera id 'cam_a' is used 3 times")
        for other in set(lines) - {me}:
            assert f"cameras[{other}].id (line {lines[other]})" in issue.message


def test_duplicate_ids_are_reported_beside_other_sections_errors(tmp_path: Path) -> None:
    text = BASE.replace("- id: cam_b", "- id: cam_a").replace("threshold: 0.6", "threshold: 0")
    text = text.replace("end: 2026-11-20T20:00:00Z", "end: 2026-11-19T20:00:00Z")
    issues = topology_issues(write(tmp_path, text))
    assert [i.path for i in issues] == [
        "deployment.end",
        "cameras[0].id",
        "cameras[1].id",
        "alerts.threshold",
    ]


def test_camera_id_may_not_reuse_another_actors_id(tmp_path: Path) -> None:
    text = BASE.replace("- id: cam_b", "- id: alerts")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "cameras[1].id"
    assert issue.message.startswith("camera id 'alerts' is also the alerts's id")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://192.0.2.10/s1", "url must start with rtsp://, rtsps://, http:// or https://"),
        ("rtsp:///s1", "url has no host"),
    ],
)
def test_bad_url(tmp_path: Path, url: str, message: str) -> None:
    text = BASE.replace("rtsp://user:secret@192.0.2.10:554/s1", url)
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("cameras[1].source.url", line_of(text, url))
    assert issue.value == repr(url)
    assert issue.message == message


def test_stall_timeout_defaults_and_limits(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, BASE))
    assert [c.stall_timeout_s for c in topology.cameras] == [5.0, 5.0]
    assert topology.cameras[0].reconnect.max_backoff_s == 5.0
    text = BASE.replace("fps: 10", "fps: 10\n    stall_timeout_s: 0.1")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("cameras[0].stall_timeout_s", line_of(text, "stall_"))
    assert issue.message == "stall_timeout_s must be at least 0.5 and at most 600"
    assert issue.fix.startswith("Set cameras[0].stall_timeout_s to the time, in seconds, a camera")


def test_stall_timeout_must_span_two_frames(tmp_path: Path) -> None:
    text = BASE.replace("fps: 10", "fps: 1\n    stall_timeout_s: 1.5")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("cameras[0].stall_timeout_s", line_of(text, "stall_"))
    assert issue.value == "1.5"
    assert issue.message.startswith(
        "stall_timeout_s 1.5 is shorter than two frames at fps 1 (2 s); see cameras[0].fps "
        f"(line {line_of(text, 'fps: 1')})"
    )
    assert issue.fix == "Set stall_timeout_s to at least 2, or raise fps."


def test_rtsp_transport(tmp_path: Path) -> None:
    url = "rtsp://user:secret@192.0.2.10:554/s1"
    text = BASE.replace(f'url: "{url}"}}', f'url: "{url}", transport: udp}}')
    source = load_topology(write(tmp_path, text)).cameras[1].source
    assert isinstance(source, UrlSource) and source.transport == "udp"
    assert source.describe() == "url rtsp://user:***@192.0.2.10:554/s1 over udp"
    text = BASE.replace(f'url: "{url}"}}', 'url: "http://192.0.2.10/mjpg", transport: tcp}')
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("cameras[1].source.transport", line_of(text, "mjpg"))
    assert issue.message == "transport applies only to rtsp:// and rtsps:// streams, not http"
    text = BASE.replace(f'url: "{url}"}}', f'url: "{url}", transport: quic}}')
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "cameras[1].source.transport"
    assert issue.message.startswith("transport must be one of tcp, udp")


def test_unknown_source_type(tmp_path: Path) -> None:
    text = BASE.replace("type: url", "type: rtsp")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "cameras[1].source.type"
    assert issue.line == line_of(text, "type: rtsp")
    assert issue.value == "'rtsp'"
    assert "not one of file, url, device, synthetic" in issue.message
    assert "type: url" in issue.fix


def test_source_field_of_another_type_is_unknown(tmp_path: Path) -> None:
    text = BASE.replace("      path: videos/a.mp4", "      url: videos/a.mp4")
    issues = by_path(topology_issues(write(tmp_path, text)))
    assert issues["cameras[0].source.url"].message.startswith("unknown field 'url'")
    assert issues["cameras[0].source.path"].message == "required field 'path' is missing"
    assert issues["cameras[0].source.path"].line == line_of(text, "source:")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    text = BASE.replace("  purpose: testing", "  purpose: testing: more")
    path = write(tmp_path, text)
    issue = only(topology_issues(path))
    assert issue.line == line_of(text, "purpose")
    assert issue.column == 19
    assert issue.message.startswith("invalid YAML: mapping values are not allowed here")
    assert str(issue).startswith(f"{path}:{issue.line}:19: invalid YAML")


def test_tabs_get_their_own_fix(tmp_path: Path) -> None:
    text = BASE.replace("  purpose: testing", "\tpurpose: testing")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.line == line_of(text, "purpose")
    assert "tabs" in issue.fix


def test_many_errors_are_all_listed_in_line_order(tmp_path: Path) -> None:
    text = (
        BASE.replace("id: test-deploy", "id: Test Deploy")
        .replace("fps: 10", "fps: 100")
        .replace("type: url", "type: stream")
        .replace("threshold: 0.6", "threshold: 2.5")
        .replace("data_dir: data", "data_dir: data\n  colour: red")
    )
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    issues = caught.value.issues
    assert [i.path for i in issues] == [
        "deployment.id",
        "cameras[0].fps",
        "cameras[1].source.type",
        "alerts.threshold",
        "storage.colour",
    ]
    assert [i.line for i in issues] == sorted(i.line or 0 for i in issues)
    lines = str(caught.value).splitlines()
    assert len(lines) == 5
    assert all(line.startswith(f"{path}:") for line in lines)
    assert "e.g. test_deploy" in issues[0].fix  # a corrected id is suggested


def test_repeated_key_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("fps: 10", "fps: 10\n    fps: 12")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("cameras[0].fps", line_of(text, "fps: 12"))
    first = line_of(text, "fps: 10")
    assert issue.message == f"'fps' is written twice, at lines {first} and {issue.line}"


def test_yaml_12_scalars(tmp_path: Path) -> None:
    text = BASE.replace("location: a test bench", "location: NO").replace("fps: 10", "fps: 1e1")
    topology = load_topology(write(tmp_path, text))
    assert topology.deployment.location == "NO"
    assert topology.cameras[0].fps == 10.0


def test_unquoted_hex_colour_is_explained(tmp_path: Path) -> None:
    text = BASE.replace(
        "type: file\n      path: videos/a.mp4", "type: synthetic\n      background: #102030"
    )
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "cameras[0].source.background"
    assert "an unquoted # starts a YAML comment" in issue.message


def test_thresholds_need_three_values(tmp_path: Path) -> None:
    text = BASE.replace(
        "alerts:", "embedder:\n  detector: {model: mtcnn, thresholds: [0.6, 0.7]}\nalerts:"
    )
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "embedder.detector.thresholds"
    assert issue.message == "thresholds needs exactly 3 values"
    assert issue.value == "[0.6, 0.7]"


def test_model_and_model_file_are_exclusive(tmp_path: Path) -> None:
    text = BASE.replace(
        "alerts:", "embedder:\n  model: dlib_resnet_v1\n  model_file: mine.yaml\nalerts:"
    )
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("embedder.model", line_of(text, "model: dlib"))
    assert f"embedder.model_file (line {line_of(text, 'model_file')})" in issue.message


def test_unknown_model_lists_the_defaults(tmp_path: Path) -> None:
    text = BASE.replace("alerts:", "embedder:\n  model: facenet\nalerts:")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "embedder.model"
    assert issue.message == "unknown model 'facenet'; the default models are dlib_resnet_v1"


def test_gpus_per_replica_needs_a_gpu_device(tmp_path: Path) -> None:
    text = BASE.replace("alerts:", "embedder:\n  gpus_per_replica: 0.5\nalerts:")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "embedder.gpus_per_replica"
    assert "embedder.device (not written: its default)" in issue.message


def test_threshold_above_governance_cap(tmp_path: Path) -> None:
    text = BASE.replace("threshold: 0.6", "threshold: 0.7\n  max_threshold: 0.6")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("alerts.threshold", line_of(text, "threshold: 0.7"))
    assert issue.message.startswith("threshold 0.7 is looser than max_threshold 0.6")
    assert issue.fix.startswith("Set alerts.threshold to 0.6 or lower")


def test_version_must_be_1(tmp_path: Path) -> None:
    issue = only(topology_issues(write(tmp_path, BASE.replace("version: 1", "version: 2"))))
    assert (issue.path, issue.line, issue.value) == ("version", 1, "2")
    assert issue.message == "version must be 1"


def test_empty_missing_and_non_mapping_files(tmp_path: Path) -> None:
    empty = only(topology_issues(write(tmp_path, "# nothing\n", "empty.yaml")))
    assert (empty.line, empty.path, empty.message) == (None, "", "the topology file is empty")
    missing = only(topology_issues(tmp_path / "absent.yaml"))
    assert missing.message == "topology file not found"
    listed = only(topology_issues(write(tmp_path, "- a\n- b\n", "list.yaml")))
    assert listed.message.startswith("the file must be a mapping of fields")


def test_programmatic_models_keep_the_rules() -> None:
    with pytest.raises(ValidationError, match="is not after start"):
        Deployment(
            id="x",
            authorised_by="a",
            purpose="p",
            location="l",
            start=datetime(2026, 1, 2, tzinfo=UTC),
            end=datetime(2026, 1, 1, tzinfo=UTC),
        )


def test_settings_build_the_model_layer_configs(tmp_path: Path) -> None:
    embedder = load_topology(write(tmp_path, BASE)).embedder
    # The default detector is CenterFace, whose scores set the quality gate's minimum.
    assert QualityConfig(**embedder.quality.model_dump()) == QualityConfig(min_score=0.5)
    assert isinstance(embedder.detector, CenterFaceSettings)
    text = with_embedder("  detector:", "    model: mtcnn")
    embedder = load_topology(write(tmp_path, text)).embedder
    assert QualityConfig(**embedder.quality.model_dump()) == QualityConfig()
    assert isinstance(embedder.detector, MtcnnSettings)
    detector = DetectorConfig(**embedder.detector.model_dump(exclude={"model"}))
    assert (detector.min_face_px, detector.thresholds) == (40, (0.6, 0.7, 0.7))


# -- the face detector -------------------------------------------------------------------


def test_detector_models_are_the_model_layers_detectors() -> None:
    members = get_args(get_args(DetectorSettings)[0])
    assert tuple(m.model_fields["model"].default for m in members) == DETECTOR_NAMES
    devices = get_args(EmbedderConfig.model_fields["device"].annotation)
    assert set(DEFAULT_DETECTOR) == set(devices)
    assert set(DEFAULT_DETECTOR.values()) <= set(DETECTOR_NAMES)
    assert DEFAULT_DETECTOR["gpu"] == DEFAULT_DETECTOR["auto"] == "centerface"


def test_centerface_defaults_are_the_model_layers() -> None:
    settings = CenterFaceSettings()
    config = CenterFaceConfig()
    assert settings.input_size == (config.input_width, config.input_height)
    for name in ("score_threshold", "nms_threshold", "min_face_px", "max_batch"):
        assert getattr(settings, name) == getattr(config, name), name


@pytest.mark.parametrize(
    ("device", "kind"),
    [("cpu", CenterFaceSettings), ("gpu", CenterFaceSettings), ("auto", CenterFaceSettings)],
)
def test_the_device_picks_the_default_detector(tmp_path: Path, device: str, kind: type) -> None:
    without = load_topology(write(tmp_path, with_embedder(f"  device: {device}")))
    assert type(without.embedder.detector) is kind
    assert without.embedder.detector.model == DEFAULT_DETECTOR[device]
    # A section that names no model keeps the device's default; its shared field is read.
    text = with_embedder(f"  device: {device}", "  detector:", "    min_face_px: 24")
    detector = load_topology(write(tmp_path, text)).embedder.detector
    assert type(detector) is kind
    assert detector.min_face_px == 24
    # A model written in the file wins over the device.
    other = "mtcnn" if kind is CenterFaceSettings else "centerface"
    text = with_embedder(f"  device: {device}", "  detector:", f"    model: {other}")
    assert load_topology(write(tmp_path, text)).embedder.detector.model == other
    # The programmatic models apply the same default.
    assert EmbedderConfig(device=device).detector.model == DEFAULT_DETECTOR[device]


@pytest.mark.parametrize(
    ("model", "min_score", "high_score"), [("mtcnn", 0.9, 0.9), ("centerface", 0.5, 0.7)]
)
def test_the_score_defaults_follow_the_detectors_scale(
    tmp_path: Path, model: str, min_score: float, high_score: float
) -> None:
    text = with_embedder("  detector:", f"    model: {model}")
    embedder = load_topology(write(tmp_path, text)).embedder
    assert embedder.quality.min_score == min_score
    assert embedder.tracking.high_score == high_score
    # A value written in the file wins, and the other field keeps the detector's default.
    text = with_embedder("  detector:", f"    model: {model}", "  quality:", "    min_score: 0.42")
    embedder = load_topology(write(tmp_path, text)).embedder
    assert embedder.quality.min_score == 0.42
    assert embedder.tracking.high_score == high_score
    text = with_embedder(
        "  detector:", f"    model: {model}", "  tracking:", "    high_score: 0.55"
    )
    embedder = load_topology(write(tmp_path, text)).embedder
    assert embedder.tracking.high_score == 0.55
    assert embedder.quality.min_score == min_score


def test_default_topology_has_the_cpu_default() -> None:
    assert EmbedderConfig().detector.model == DEFAULT_DETECTOR["cpu"]


def test_a_centerface_section_round_trips(tmp_path: Path) -> None:
    text = with_embedder(
        "  detector:",
        "    model: centerface",
        "    input_size: [1280, 736]",
        "    score_threshold: 0.4",
        "    nms_threshold: 0.35",
        "    min_face_px: 12",
        "    max_batch: 8",
    )
    detector = load_topology(write(tmp_path, text)).embedder.detector
    assert detector == CenterFaceSettings(
        input_size=(1280, 736),
        score_threshold=0.4,
        nms_threshold=0.35,
        min_face_px=12,
        max_batch=8,
    )
    assert (detector.input_width, detector.input_height) == (1280, 736)
    assert CenterFaceSettings.model_validate(detector.model_dump()) == detector
    dumped = detector.model_dump()
    assert dumped["model"] == "centerface"
    assert dumped["input_size"] == (1280, 736)


@pytest.mark.parametrize(
    ("field", "below", "above", "limits"),
    [
        ("score_threshold", "0", "1", "greater than 0 and less than 1"),
        ("nms_threshold", "0", "1.5", "greater than 0 and at most 1"),
        ("min_face_px", "0", "1001", "at least 1 and at most 1000"),
        ("max_batch", "0", "65", "at least 1 and at most 64"),
        ("input_size", "[32, 384]", "[640, 4096]", "at least 64 and at most 2048"),
    ],
)
def test_centerface_setting_out_of_range_names_its_line_and_range(
    tmp_path: Path, field: str, below: str, above: str, limits: str
) -> None:
    for value in (below, above):
        text = with_embedder("  detector:", "    model: centerface", f"    {field}: {value}")
        path = write(tmp_path, text)
        issue = only(topology_issues(path))
        assert (issue.file, issue.line) == (path, line_of(text, f"{field}: "))
        assert issue.path.startswith(f"embedder.detector.{field}")
        assert issue.message == f"{field} must be {limits}"
        assert issue.fix.startswith(f"Set {issue.path} to the ")


@pytest.mark.parametrize(
    ("size", "where", "nearest"),
    [
        ("[650, 384]", 0, "640 or 672"),
        ("[640, 380]", 1, "352 or 384"),
        ("[2047, 384]", 0, "2016 or 2048"),
    ],
)
def test_input_size_must_be_a_multiple_of_32(
    tmp_path: Path, size: str, where: int, nearest: str
) -> None:
    text = with_embedder("  detector:", "    model: centerface", f"    input_size: {size}")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == (
        f"embedder.detector.input_size[{where}]",
        line_of(text, "input_size"),
    )
    assert issue.message == "input_size must be a multiple of 32, at least 64 and at most 2048"
    assert issue.fix == (
        f"Set embedder.detector.input_size[{where}] to {nearest}, the nearest valid values."
    )


def test_input_size_needs_two_whole_numbers(tmp_path: Path) -> None:
    text = with_embedder("  detector:", "    model: centerface", "    input_size: [640]")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.message == "input_size needs exactly 2 values"
    text = with_embedder("  detector:", "    model: centerface", "    input_size: [true, 384]")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "embedder.detector.input_size[0]"
    assert issue.message.startswith("input_size must be a whole number")


def test_unknown_detector_lists_the_known_ones(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make_files(tmp_path)
    text = with_embedder("  detector:", "    model: yolo", "    min_face_px: 20")
    path = write(tmp_path, text)
    issue = only(topology_issues(path))
    assert (issue.path, issue.line) == ("embedder.detector.model", line_of(text, "yolo"))
    assert issue.value == "'yolo'"
    assert issue.message == "detector model 'yolo' is not one of mtcnn, centerface"
    assert "leave model out for the embedder device's default" in issue.fix
    assert main(["validate", str(path)]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith(
        f"{path}:{line_of(text, 'yolo')}: embedder.detector.model: got 'yolo' — "
        "detector model 'yolo' is not one of mtcnn, centerface."
    )
    assert lines[1] == f"{path}: 1 problem; nothing was started."


def test_a_misspelt_detector_gets_a_suggestion(tmp_path: Path) -> None:
    text = with_embedder("  detector: {model: centreface}")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.message.endswith("— did you mean 'centerface'?")


@pytest.mark.parametrize(
    ("lines", "field", "message"),
    [
        (
            ("    model: centerface", "    thresholds: [0.6, 0.7, 0.7]"),
            "thresholds",
            "unknown field 'thresholds' for model: centerface — it is a field of model: mtcnn",
        ),
        (
            ("    model: mtcnn", "    input_size: [640, 384]"),
            "input_size",
            "unknown field 'input_size' for model: mtcnn — it is a field of model: centerface",
        ),
    ],
)
def test_a_field_of_the_other_detector_names_both(
    tmp_path: Path, lines: tuple[str, ...], field: str, message: str
) -> None:
    text = with_embedder("  detector:", *lines)
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == (f"embedder.detector.{field}", line_of(text, field))
    assert issue.message == message
    other = "mtcnn" if "model: mtcnn" in message.split("—")[1] else "centerface"
    assert issue.fix == f"Remove it, or set embedder.detector.model to {other} to use it."


def test_a_field_of_the_other_detector_under_the_device_default(tmp_path: Path) -> None:
    text = with_embedder("  device: gpu", "  detector:", "    scale_factor: 0.8")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "embedder.detector.scale_factor"
    assert issue.message == (
        "unknown field 'scale_factor' for model: centerface — it is a field of model: mtcnn "
        "(embedder.detector.model is not written, so it is centerface here)"
    )


def test_an_unknown_detector_field_is_still_close_matched(tmp_path: Path) -> None:
    text = with_embedder("  detector:", "    model: centerface", "    score_treshold: 0.4")
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.message == "unknown field 'score_treshold' — did you mean 'score_threshold'?"


def test_summary_shows_the_detector(tmp_path: Path) -> None:
    text = with_embedder("  detector:", "    model: centerface", "    input_size: [1280, 736]")
    shown = summary(load_topology(write(tmp_path, text)), None)
    assert "  detector   centerface, input 1280x736, score >= 0.5, faces from 10 px\n" in shown
    shown = summary(load_topology(write(tmp_path, with_embedder("  device: auto"))), None)
    assert (
        "detector   centerface, input 640x384, score >= 0.5, faces from 10 px (the default on auto)"
        in shown
    )
    shown = summary(load_topology(write(tmp_path, BASE)), None)
    assert (
        "detector   centerface, input 640x384, score >= 0.5, faces from 10 px (the default on cpu)"
        in shown
    )
    text = with_embedder("  detector:", "    model: mtcnn")
    shown = summary(load_topology(write(tmp_path, text)), None)
    assert "  detector   mtcnn, faces from 40 px\n" in shown


# -- face tracks and the alert crop ------------------------------------------------------


def with_embedder(*lines: str) -> str:
    """BASE with an ``embedder`` section of these (already indented) lines."""
    return BASE.replace("alerts:", "embedder:\n" + "".join(f"{x}\n" for x in lines) + "alerts:")


def test_tracking_settings_mirror_the_tracking_config() -> None:
    fields = schema_module.TrackingSettings.model_fields
    assert list(fields) == list(TrackingConfig.__dataclass_fields__)
    for name, field in fields.items():
        assert field.default == getattr(TrackingConfig, name), name
        bounds = {type(c).__name__: c for c in field.metadata}
        assert (bounds["Ge"].ge, bounds["Le"].le) == TRACKING_LIMITS[name], name
        whole = isinstance(getattr(TrackingConfig, name), int)
        assert field.annotation is (int if whole else float), name
    assert TrackingConfig(**schema_module.TrackingSettings().model_dump()) == TrackingConfig()


def test_tracking_settings_from_a_file_build_the_tracking_config(tmp_path: Path) -> None:
    text = with_embedder(
        "  tracking:",
        "    min_iou: 0.3",
        "    max_missed_frames: 0",
        "    full_face_px: 100",
        "    max_tracks: 10000",
    )
    tracking = load_topology(write(tmp_path, text)).embedder.tracking
    config = TrackingConfig(**tracking.model_dump())
    assert (config.min_iou, config.max_missed_frames, config.full_face_px) == (0.3, 0, 100.0)
    assert config.tracker.max_tracks == 10000
    # Left out, the tracking section is TrackingSettings' own but for the score a track
    # starts from, which follows the default detector's (CenterFace's) scale.
    assert load_topology(write(tmp_path, BASE)).embedder.tracking == (
        schema_module.TrackingSettings(high_score=0.7)
    )


@pytest.mark.parametrize("name", list(TRACKING_LIMITS))
def test_tracking_setting_out_of_range_names_its_line_and_range(tmp_path: Path, name: str) -> None:
    low, high = TRACKING_LIMITS[name]
    whole = isinstance(getattr(TrackingConfig, name), int)
    below, above = (low - 1, high + 1) if whole else (low - 0.01, high + 0.5)
    for value in (below, above):
        text = with_embedder("  tracking:", f"    {name}: {value:g}")
        path = write(tmp_path, text)
        issue = only(topology_issues(path))
        assert (issue.file, issue.line) == (path, line_of(text, f"{name}: "))
        assert issue.path == f"embedder.tracking.{name}"
        assert issue.message == f"{name} must be at least {low:g} and at most {high:g}"
        default = getattr(TrackingConfig, name)
        assert issue.fix.startswith(f"Set embedder.tracking.{name} to the ")
        assert issue.fix.endswith(f", e.g. {default:g}.")


def test_tracking_whole_numbers_and_unknown_keys(tmp_path: Path) -> None:
    text = with_embedder("  tracking:", "    max_missed_frames: 2.5", "    max_missed: 3")
    issues = by_path(topology_issues(write(tmp_path, text)))
    assert issues["embedder.tracking.max_missed_frames"].message == (
        "max_missed_frames must be a whole number"
    )
    assert issues["embedder.tracking.max_missed"].message == (
        "unknown field 'max_missed' — did you mean 'max_missed_frames'?"
    )


def test_full_face_px_below_min_face_px_names_both_lines(tmp_path: Path) -> None:
    text = with_embedder("  tracking:", "    min_face_px: 50", "    full_face_px: 30")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("embedder.tracking.full_face_px", line_of(text, "full_"))
    assert issue.message.startswith("full_face_px 30 is smaller than min_face_px 50")
    assert f"embedder.tracking.min_face_px (line {line_of(text, 'min_face_px')})" in issue.message
    assert issue.fix == (
        "Set embedder.tracking.full_face_px to at least 50, or lower embedder.tracking.min_face_px."
    )


def test_alert_crop_is_at_least_160_px_and_says_why(tmp_path: Path) -> None:
    assert load_topology(write(tmp_path, BASE)).embedder.crop_size == 160
    assert load_topology(write(tmp_path, with_embedder("  crop_size: 160"))).embedder.crop_size
    text = with_embedder("  crop_size: 112")
    issue = only(topology_issues(write(tmp_path, text)))
    assert (issue.path, issue.line) == ("embedder.crop_size", line_of(text, "crop_size"))
    assert issue.message == "crop_size must be at least 160 and at most 1024"
    assert "so that an officer can judge the match" in issue.fix
    assert issue.fix.endswith("e.g. 160.")


def test_lfr_validate_refuses_a_tracking_setting_out_of_range(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make_files(tmp_path)
    text = with_embedder("  crop_size: 100", "  tracking:", "    max_tracks: 0")
    path = write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith(f"{path}:{line_of(text, 'crop_size')}: embedder.crop_size: got 100")
    assert lines[1].startswith(
        f"{path}:{line_of(text, 'max_tracks')}: embedder.tracking.max_tracks: got 0 — "
        "max_tracks must be at least 1 and at most 10000."
    )
    assert lines[2] == f"{path}: 2 problems; nothing was started."
    # The files' checks only: BASE's window has ended, which lfr validate also refuses.
    valid = write(tmp_path, with_embedder("  tracking:", "    max_tracks: 64"))
    out = io.StringIO()
    assert validate_command(valid, out, io.StringIO()) == 0
    assert out.getvalue().rstrip().endswith("valid")


# -- paths -------------------------------------------------------------------------------


def test_relative_paths_start_from_the_files_folder(tmp_path: Path) -> None:
    text = BASE.replace("alerts:", "embedder:\n  model_file: ../models/mine.yaml\nalerts:").replace(
        "data_dir: data", f"data_dir: {tmp_path / 'abs-data'}"
    )
    path = write(tmp_path, text, "conf/topo.yaml")
    topology = load_topology(path)
    conf = (tmp_path / "conf").resolve()
    source = topology.cameras[0].source
    assert isinstance(source, FileSource)
    assert source.path == conf / "videos" / "a.mp4"
    assert topology.watchlist.file == conf / "lists" / "w.yaml"
    assert topology.embedder.model_file == (tmp_path / "models" / "mine.yaml").resolve()
    assert topology.storage.data_dir == tmp_path / "abs-data"

    watchlist = load_watchlist(write(tmp_path, WATCHLIST, "conf/lists/w.yaml"))
    assert watchlist.entries[1].images == (
        conf / "lists" / "img" / "two-a.jpg",
        conf / "lists" / "img" / "two-b.jpg",
    )


def test_sprite_images_resolve_too(tmp_path: Path) -> None:
    text = BASE.replace(
        "type: file\n      path: videos/a.mp4",
        "type: synthetic\n      frames: 20\n      sprites:\n"
        "        - {image: faces/p.png, start: [0.2, 0.5], velocity: [0.1, 0], height: 0.3}",
    )
    topology = load_topology(write(tmp_path, text))
    source = topology.cameras[0].source
    assert isinstance(source, SyntheticSource)
    assert source.sprites[0].image == tmp_path.resolve() / "faces" / "p.png"


# -- watchlists --------------------------------------------------------------------------


def test_watchlist_loads(tmp_path: Path) -> None:
    watchlist = load_watchlist(write(tmp_path, WATCHLIST, "w.yaml"))
    assert isinstance(watchlist, Watchlist)
    assert [e.id for e in watchlist.entries] == ["W-1", "W-2"]
    assert str(watchlist.entries[0].image_date) == "2025-03-14"
    assert watchlist.entries[1].threshold == 0.5


def test_watchlist_duplicate_ids_report_both_lines(tmp_path: Path) -> None:
    text = WATCHLIST.replace("id: W-2", "id: W-1")
    issues = watchlist_issues(write(tmp_path, text, "w.yaml"))
    assert [(i.path, i.line) for i in issues] == [
        ("entries[0].id", line_of(text, "id: W-1", 1)),
        ("entries[1].id", line_of(text, "id: W-1", 2)),
    ]
    assert f"entries[1].id (line {line_of(text, 'id: W-1', 2)})" in issues[0].message


WATCHLIST_MISTAKES = [
    ("images: [img/one.jpg]", "images: []", "entries[0].images", "images needs at least 1 item"),
    (
        "image_date: 2025-03-14",
        "image_date: 14/03/2025",
        "entries[0].image_date",
        "image_date must be a date, YYYY-MM-DD (invalid character in year)",
    ),
    (
        "threshold: 0.5",
        "threshold: 2",
        "entries[1].threshold",
        "threshold must be greater than 0 and less than 2",
    ),
    (
        "id: W-1",
        "id: -W1",
        "entries[0].id",
        "id must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    ),
    ("category: wanted", "category: ''", "entries[0].category", "category must be non-empty text"),
    (
        "legal_basis: warrant 1",
        "legal_basis: warrant 1\n    approved: yes",
        "entries[0].approved",
        "unknown field 'approved'",
    ),
]


@pytest.mark.parametrize(("old", "new", "path", "message"), WATCHLIST_MISTAKES)
def test_watchlist_errors(tmp_path: Path, old: str, new: str, path: str, message: str) -> None:
    text = WATCHLIST.replace(old, new)
    issue = only(watchlist_issues(write(tmp_path, text, "w.yaml")))
    assert issue.path == path
    assert issue.line == line_of(text, new.splitlines()[-1].split(":")[0] + ":")
    assert issue.message == message


def test_watchlist_missing_field_points_at_its_entry(tmp_path: Path) -> None:
    text = WATCHLIST.replace("    legal_basis: risk to life\n", "")
    issue = only(watchlist_issues(write(tmp_path, text, "w.yaml")))
    assert (issue.path, issue.line) == ("entries[1].legal_basis", line_of(text, "id: W-2"))


# -- check_files -------------------------------------------------------------------------


def test_check_files_passes_when_everything_exists(tmp_path: Path) -> None:
    make_files(tmp_path)
    topology = load_topology(write(tmp_path, BASE))
    watchlist = load_watchlist(topology.watchlist.file)
    assert check_files(topology, watchlist) == []


def test_check_files_names_missing_files_and_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    (tmp_path / "data").write_text("not a folder")
    topology = load_topology(path)
    issues = by_path(check_files(topology, None))
    video = issues["cameras[0].source.path"]
    assert (video.file, video.line) == (path, line_of(BASE, "path: videos/a.mp4"))
    assert video.value == "'videos/a.mp4'"
    assert video.message.startswith("the video file does not exist (looked for ")
    assert issues["watchlist.file"].line == line_of(BASE, "file: lists/w.yaml")
    assert issues["storage.data_dir"].message.endswith("is a file")


def test_check_files_checks_watchlist_images_and_thresholds(tmp_path: Path) -> None:
    make_files(tmp_path)
    (tmp_path / "lists/img/two-b.jpg").unlink()
    text = BASE.replace("threshold: 0.6", "threshold: 0.45\n  max_threshold: 0.45")
    topology = load_topology(write(tmp_path, text))
    watchlist = load_watchlist(topology.watchlist.file)
    issues = by_path(check_files(topology, watchlist))
    assert set(issues) == {"entries[1].images[1]", "entries[1].threshold"}
    image = issues["entries[1].images[1]"]
    assert image.file == topology.watchlist.file
    assert image.line == line_of(WATCHLIST, "two-b.jpg")
    assert image.value == "'img/two-b.jpg'"
    cap = issues["entries[1].threshold"]
    assert cap.line == line_of(WATCHLIST, "threshold: 0.5")
    assert "looser than the deployment's alerts.max_threshold 0.45" in cap.message


def test_check_files_reads_the_embedder_spec(tmp_path: Path) -> None:
    make_files(tmp_path)
    spec_text = "name: mine\nversion: '1'\npath: mine.onnx\nchip_size: 112\ntemplate: []\n"
    spec_path = write(tmp_path, spec_text, "models/mine.yaml")
    text = BASE.replace("alerts:", "embedder:\n  model_file: models/mine.yaml\nalerts:")
    topology = load_topology(write(tmp_path, text))
    issues = by_path(check_files(topology, None))
    assert issues["template"].file == spec_path
    assert issues["template"].line == line_of(spec_text, "template")
    assert issues["dimension"].message == "required field 'dimension' is missing"


def test_embedder_spec_path_resolves_against_the_spec_file(tmp_path: Path) -> None:
    spec_text = (
        "name: mine\nversion: '1'\npath: mine.onnx\nchip_size: 112\n"
        "template: [[38, 51], [73, 51], [56, 71], [41, 92], [70, 92]]\n"
        "dimension: 512\nmetric: cosine\nl2_normalise: true\ndefault_threshold: 0.4\n"
    )
    spec = load_embedder_spec(write(tmp_path, spec_text, "models/mine.yaml"))
    assert spec.path == (tmp_path / "models" / "mine.onnx").resolve()


# -- summary and validate ----------------------------------------------------------------


def test_summary_has_the_key_facts(tmp_path: Path) -> None:
    make_files(tmp_path)
    topology = load_topology(write(tmp_path, BASE))
    watchlist = load_watchlist(topology.watchlist.file)
    during = summary(topology, watchlist, now=datetime(2026, 11, 20, 12, tzinfo=UTC))
    for fact in [
        "test-deploy",
        "2026-11-20T08:00Z -> 2026-11-20T20:00Z (12 h 0 min)",
        "ACTIVE now, ends in 8 h 0 min",
        "cam_a",
        "10 fps",
        "url rtsp://user:***@192.0.2.10:554/s1",
        "embedder: 1 replica (cpu)",
        "tracks     overlap >= 0.2, 10 missed frames, <= 256 per camera, decided from 5 "
        "faces; crop 160 px",
        "index: 1 shard, auto",
        "threshold 0.6",
        "1 sighting within 30 s",
        "2 entries, 3 images",
        "http://127.0.0.1:8080",
    ]:
        assert fact in during
    assert "secret" not in during
    before = summary(topology, None, now=datetime(2026, 11, 19, 8, tzinfo=UTC))
    assert "not active: starts in 1 d 0 h" in before
    assert "not loaded" in before


def test_validate_command_valid(tmp_path: Path) -> None:
    make_files(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert validate_command(write(tmp_path, BASE), out, err) == 0
    assert err.getvalue() == ""
    assert "test-deploy" in out.getvalue()
    assert out.getvalue().rstrip().endswith("valid")


def test_validate_command_invalid_writes_every_issue_to_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("fps: 10", "fps: 0").replace("type: url", "type: x"))
    out, err = io.StringIO(), io.StringIO()
    assert validate_command(path, out, err) == 2
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert len(lines) == 3
    assert re.match(rf"{re.escape(str(path))}:\d+: cameras\[0\]\.fps: got 0 — ", lines[0])
    assert "cameras[1].source.type" in lines[1]
    assert lines[2] == f"{path}: 2 problems; nothing was started."


def test_validate_command_reports_file_problems(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    out, err = io.StringIO(), io.StringIO()
    assert validate_command(path, out, err) == 2
    assert "cameras[0].source.path" in err.getvalue()
    assert "watchlist.file" in err.getvalue()


def test_topology_is_frozen(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, BASE))
    assert isinstance(topology, Topology)
    with pytest.raises(ValidationError):
        topology.cameras[0].fps = 5


def test_a_quoted_number_is_refused_with_the_fix(tmp_path: Path) -> None:
    text = BASE.replace("alerts:", 'api:\n  port: "18103"\nalerts:')
    issue = only(topology_issues(write(tmp_path, text)))
    assert issue.path == "api.port"
    assert "expected a number, got text: remove the quotes" in issue.message
