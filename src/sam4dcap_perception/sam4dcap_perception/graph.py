"""The sam4dcap ROS 2 graph, defined once: topics, nodes, and each node's parameters.

Used by `launch/sam4dcap.launch.py` (ros2 launch), by `graph_runner` (`sam4dcap graph`), by
the recorder (which topics exist, their types and QoS) and by the docs/tests (RViz config,
console scripts). ROS-free: plain data only.

Topic and frame names and the QoS kinds of the topics (image | results | deep | latched) are
defined in sam4dcap_biomech.ros.topics, the profiles in sam4dcap_biomech.ros.node_plumbing.

Offline flow control ("frame acks"): every stage listed with `acks=True` publishes a
std_msgs/Header on PROGRESS_TOPIC after it has consumed each input frame (stamp = the frame's
capture stamp, frame_id = node name), whether or not it produced an output for it. A file or
bag source publishes frame i only while fewer than `max_queue_frames` frames are un-acked by
each of its `ack_nodes`; it starts once those nodes exist, and exits when all frames are acked.
A stage that holds frames back (markers_node while its ground-plane window fills, offline)
announces it with a Header whose frame_id is "<node>/held" (stamp = newest held frame): the
source then does not count those frames as in flight to the nodes downstream of it (they
cannot ack frames they have not been sent) until the final wait, which needs every ack.
(The source's side of this protocol: frame_flow.FrameFlow.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


def _topics_beside_this_file() -> None:
    """A system ROS Python runs the launch file without the project venv and loads this file from
    the package's share folder; the stdlib-only topics.py is installed beside it (setup.py,
    scripts/setup.sh) and stands in for sam4dcap_biomech.ros.topics."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("sam4dcap_biomech.ros.topics", Path(__file__).with_name("topics.py"))
    if spec is None or spec.loader is None:
        raise ImportError("sam4dcap_biomech.ros.topics: not installed, and no topics.py beside graph.py")
    for parent in ("sam4dcap_biomech", "sam4dcap_biomech.ros"):
        sys.modules.setdefault(parent, types.ModuleType(parent)).__path__ = []
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


try:
    import sam4dcap_biomech.ros.topics  # noqa: F401 - the project's ROS layer
except ImportError:
    _topics_beside_this_file()
# Topic names and the QoS kinds are defined once in the shared ROS layer (stdlib only, like this
# module); they are re-exported here so `graph.IMAGE_TOPIC` etc. name the same strings.
from sam4dcap_biomech.ros.topics import (  # noqa: E402,F401 - after the fallback; re-exported
    CAMERA_INFO_TOPIC, DIAGNOSTICS_TOPIC, END_OF_STREAM_TOPIC, IMAGE_TOPIC, KEYPOINTS_TOPIC, KINEMATICS_TOPIC,
    KINETICS_TOPIC, MARKERS_TOPIC, MASK_TOPIC, MESH_TOPIC, MODEL_PATH_TOPIC, PROGRESS_TOPIC, PROMPT_TOPIC, QOS_KINDS,
    READY_TOPIC, SEGMENTATION_TOPIC, TF_STATIC_TOPIC, TF_TOPIC, TRACKED_BODIES_TOPIC, VISUALIZATION_TOPIC, body_id,
    body_roi_topic, joint_states_topic)

# Publisher of topics that come from outside the graph (a user, a GUI).
EXTERNAL_PUBLISHER = "user / GUI"


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str          # "pkg/msg/Name"
    qos: str              # one of QOS_KINDS: image | results | deep | latched
    publisher: str        # node name
    description: str
    record: bool = True   # recorded by recorder_node topics=[all]


TOPICS: tuple[Topic, ...] = (
    Topic(IMAGE_TOPIC, "sensor_msgs/msg/Image", "image", "video_source_node",
          "Source frames, rgb8, stamp = capture time."),
    Topic(CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", "image", "video_source_node",
          "Pinhole intrinsics of the source (one per frame, same stamp)."),
    Topic(SEGMENTATION_TOPIC, "sam4dcap_msgs/msg/PersonSegmentation", "results", "body_estimator_node",
          "Person mask + box + prompt; one per frame (tracked=false when lost)."),
    Topic(MASK_TOPIC, "sensor_msgs/msg/Image", "results", "body_estimator_node",
          "The person mask alone (mono8) for image viewers; only while someone subscribes.", record=False),
    Topic(KEYPOINTS_TOPIC, "sam4dcap_msgs/msg/BodyKeypoints", "results", "body_estimator_node",
          "2D + metric 3D keypoints in the camera frame; one per frame (NaN when lost)."),
    Topic(MESH_TOPIC, "sam4dcap_msgs/msg/BodyMesh", "results", "body_estimator_node",
          "Body mesh (mesh backends only, e.g. sam3d)."),
    Topic(TRACKED_BODIES_TOPIC, "sam4dcap_msgs/msg/IdsList", "results", "body_estimator_node",
          "REP-155 ids of every tracked person, one per frame (the subject is always body<person_id>)."),
    Topic(body_roi_topic(1), "sam4dcap_msgs/msg/NormalizedRegionOfInterest2D", "results", "body_estimator_node",
          "REP-155 box of tracked body <id> (one topic per person, normalised image coordinates, c = 0 "
          "while another person overlaps it); only body<person_id> is recorded."),
    Topic(PROMPT_TOPIC, "sam4dcap_msgs/msg/Prompt", "results", EXTERNAL_PUBLISHER,
          "Choose the subject: a positive point (else the box centre) on a person in view; "
          "the tracker follows that person from the next frame."),
    Topic(MARKERS_TOPIC, "sam4dcap_msgs/msg/VirtualMarkers", "deep", "markers_node",
          "Virtual anatomical markers in the world frame (y up, metres)."),
    Topic(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", "latched", "markers_node",
          "world (z up, REP-103) -> opensim_world (y up, the markers' frame) -> camera_optical_frame."),
    Topic(KINEMATICS_TOPIC, "sam4dcap_msgs/msg/JointKinematics", "results", "ik_node",
          "Inverse-kinematics coordinates (rad, m) with marker errors."),
    Topic(joint_states_topic(1), "sensor_msgs/msg/JointState", "results", "ik_node",
          "REP-155 joint states of body <id> (OpenSim coordinate names)."),
    Topic(MODEL_PATH_TOPIC, "std_msgs/msg/String", "latched", "ik_node",
          "Path of the (scaled) .osim model the IK uses; follows calibration hot swaps."),
    Topic(KINETICS_TOPIC, "sam4dcap_msgs/msg/JointKinetics", "results", "id_node",
          "Inverse-dynamics generalized forces (N m, N)."),
    Topic(VISUALIZATION_TOPIC, "visualization_msgs/msg/MarkerArray", "results", "visualization_node",
          "RViz markers: virtual markers, skeleton, mesh, twin."),
    Topic(TF_TOPIC, "tf2_msgs/msg/TFMessage", "results", "visualization_node",
          "opensim_world -> body1_<segment>: every body of the IK model, posed by IK (same stamp)."),
    Topic(PROGRESS_TOPIC, "std_msgs/msg/Header", "deep", "",
          "Frame acks of the pipeline stages (offline flow control).", record=False),
    Topic(READY_TOPIC, "std_msgs/msg/String", "latched", "",
          "Names of nodes whose input subscriptions exist (offline start).", record=False),
    Topic(END_OF_STREAM_TOPIC, "std_msgs/msg/Header", "latched", "video_source_node",
          "A file/bag source published its last frame (stamp = its capture stamp).", record=False),
    Topic(DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", "results", "",
          "Health of every node, once a second: tracking state, fit residual, processing time; OK/WARN/ERROR."),
)


def topic(name: str) -> Topic:
    for t in TOPICS:
        if t.name == name:
            return t
    raise KeyError(name)


@dataclass(frozen=True)
class NodeSpec:
    name: str             # node name == config section == console script
    package: str
    subscribes: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    acks: bool = False    # publishes frame acks on PROGRESS_TOPIC (gates file sources)
    description: str = ""
    # Announces on READY_TOPIC once its (lazily made) subscriptions exist; a file source waits
    # for that, and for the other ack nodes until they subscribe to all of `subscribes`.
    announces_ready: bool = False

    @property
    def startup_inputs(self) -> tuple[str, ...]:
        return tuple(t for t in self.subscribes
                     if t not in (PROGRESS_TOPIC, READY_TOPIC, END_OF_STREAM_TOPIC, PROMPT_TOPIC))

    @property
    def executable(self) -> str:
        return self.name


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("video_source_node", "sam4dcap_perception", (PROGRESS_TOPIC, READY_TOPIC),
             (IMAGE_TOPIC, CAMERA_INFO_TOPIC, END_OF_STREAM_TOPIC),
             description="file / camera / bag -> images"),
    NodeSpec("body_estimator_node", "sam4dcap_perception", (IMAGE_TOPIC, PROMPT_TOPIC),
             (SEGMENTATION_TOPIC, MASK_TOPIC, KEYPOINTS_TOPIC, MESH_TOPIC, TRACKED_BODIES_TOPIC, body_roi_topic(1),
              PROGRESS_TOPIC),
             acks=True, announces_ready=True,
             description="segmentation + keypoints (+ mesh)"),
    NodeSpec("markers_node", "sam4dcap_perception", (KEYPOINTS_TOPIC, CAMERA_INFO_TOPIC, END_OF_STREAM_TOPIC),
             (MARKERS_TOPIC, TF_STATIC_TOPIC, PROGRESS_TOPIC), acks=True, announces_ready=True,
             description="keypoints -> world-frame virtual markers"),
    NodeSpec("ik_node", "sam4dcap_biomech", (MARKERS_TOPIC,),
             (KINEMATICS_TOPIC, joint_states_topic(1), MODEL_PATH_TOPIC, PROGRESS_TOPIC), acks=True,
             description="streaming inverse kinematics"),
    NodeSpec("id_node", "sam4dcap_biomech", (KINEMATICS_TOPIC, MODEL_PATH_TOPIC),
             (KINETICS_TOPIC,),
             description="inverse dynamics (enabled: false by default)"),
    NodeSpec("trial_writer_node", "sam4dcap_biomech",
             (MARKERS_TOPIC, KINEMATICS_TOPIC, KINETICS_TOPIC), (),
             description="TRC/MOT/STO per trial"),
    NodeSpec("visualization_node", "sam4dcap_perception",
             (MARKERS_TOPIC, MESH_TOPIC, MODEL_PATH_TOPIC, KINEMATICS_TOPIC),
             (VISUALIZATION_TOPIC, TF_TOPIC), description="RViz MarkerArray + per-body TF"),
    NodeSpec("recorder_node", "sam4dcap_perception", tuple(t.name for t in TOPICS if t.record and t.name != PROGRESS_TOPIC),
             (PROGRESS_TOPIC,), acks=True, description="rosbag2 (mcap) recorder (acks the images it wrote)",
             announces_ready=True),
)


NODE_NAMES = frozenset(n.name for n in NODES)


def node(name: str) -> NodeSpec:
    for n in NODES:
        if n.name == name:
            return n
    raise KeyError(name)


def downstream_of(node_name: str) -> set[str]:
    """Nodes that (transitively) consume what `node_name` publishes (acks/readiness excluded)."""
    control = {PROGRESS_TOPIC, READY_TOPIC, END_OF_STREAM_TOPIC}
    out: set[str] = set()
    todo = [node_name]
    while todo:
        src = node(todo.pop())
        for n in NODES:
            if n.name not in out and n.name != node_name and \
                    (set(src.publishes) - control) & set(n.subscribes):
                out.add(n.name)
                todo.append(n.name)
    return out


def waits_on_held_frames(holder: str, node_name: str) -> bool:
    """A frame held back by `holder` cannot be acked by `node_name`: it consumes what `holder`
    publishes and does not read the source's images itself (the recorder does: its acks follow
    the images, held or not)."""
    source_topics = set(node("video_source_node").publishes) - {END_OF_STREAM_TOPIC}
    return node_name in downstream_of(holder) and not (set(node(node_name).subscribes) & source_topics)


@dataclass
class GraphOptions:
    """What `sam4dcap graph` and the launch file take as arguments."""
    video: str = ""                  # video file, image folder or bag; or
    camera: int | None = None        # camera device index
    height_m: float | None = None
    mass_kg: float | None = None
    record: str = ""                 # bag folder; empty = no recorder
    backend: str | None = None       # body estimator backend
    realtime: bool | None = None     # None: true for cameras, false for files/bags
    person_id: int | None = None
    namespace: str = ""              # ROS namespace of every node (e.g. "cam2"); "" = none
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> {param: value}
    without: tuple[str, ...] = ()    # optional nodes left out (OPTIONAL_NODES), e.g. on a slow machine
    one_process_perception: bool = False   # video source + body estimator in one process (PERCEPTION_PROCESS)

    @property
    def source(self) -> str:
        return f"camera:{self.camera}" if self.camera is not None else self.video

    @property
    def offline(self) -> bool:
        if self.realtime is not None:
            return not self.realtime
        return self.camera is None


def normalize_namespace(namespace: str) -> str:
    """"cam2", "/cam2", "/cam2/" -> "/cam2"; "" -> "" (no namespace). Refuses names ROS
    would refuse (each token: letters, digits, underscores, not starting with a digit)."""
    tokens = [t for t in (namespace or "").strip().strip("/").split("/") if t]
    for t in tokens:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t):
            raise ValueError(f"namespace {namespace!r}: token {t!r} must be letters, digits and underscores, "
                             "not starting with a digit")
    return "/" + "/".join(tokens) if tokens else ""


# One process for the image path (nodes/perception_process.py): its executable and the nodes it runs.
PERCEPTION_PROCESS = "perception_process"
PERCEPTION_PROCESS_NODES = ("video_source_node", "body_estimator_node")


# Nodes a graph can run without (`without`): nothing downstream of the joint angles needs them.
OPTIONAL_NODES = ("visualization_node", "trial_writer_node", "id_node")


def check_without(names) -> tuple[str, ...]:
    """The `without` list, checked: each an optional node (ValueError naming the bad one)."""
    out = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in OPTIONAL_NODES:
            raise ValueError(f"{name!r} is not a node the graph can run without; optional nodes: "
                             f"{', '.join(OPTIONAL_NODES)}")
        out.append(name)
    return tuple(out)


def selected_nodes(options: GraphOptions, *, available: set[str] | None = None) -> list[NodeSpec]:
    """The nodes to start: all, minus the recorder without --record, minus those left out
    (`without`), minus unavailable ones."""
    out = []
    without = set(check_without(options.without))
    for n in NODES:
        if n.name == "recorder_node" and not options.record:
            continue
        if n.name in without:
            continue
        if available is not None and n.name not in available:
            continue
        out.append(n)
    return out


def node_overrides(options: GraphOptions, nodes: list[NodeSpec]) -> dict[str, dict[str, Any]]:
    """Per-node parameter values on top of the config file, from the graph options."""
    names = {n.name for n in nodes}
    o: dict[str, dict[str, Any]] = {n.name: {} for n in nodes}

    def put(node_name: str, key: str, value: Any) -> None:
        if node_name in names and value is not None:
            o[node_name][key] = value

    put("video_source_node", "source", options.source)
    put("video_source_node", "realtime", not options.offline)
    put("video_source_node", "ack_nodes", ",".join(n.name for n in nodes if n.acks))
    put("ik_node", "realtime", not options.offline)
    put("visualization_node", "realtime", not options.offline)
    put("markers_node", "subject_height_m", options.height_m)
    put("ik_node", "subject_height_m", options.height_m)
    put("ik_node", "subject_mass_kg", options.mass_kg)
    put("body_estimator_node", "backend", options.backend)
    put("body_estimator_node", "person_id", options.person_id)
    put("ik_node", "person_id", options.person_id)
    put("recorder_node", "bag_dir", options.record or None)
    for node_name, params in options.extra.items():
        for k, v in params.items():
            put(node_name, k, v)
    return {k: v for k, v in o.items()}
