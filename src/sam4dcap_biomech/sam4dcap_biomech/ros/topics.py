"""Topic and frame names of the sam4dcap graph, defined once (stdlib only: no rclpy).

Every node, `sam4dcap_perception.graph` (which node publishes / subscribes what), the graph
runner, the docs generator and the tests import these names; nothing retypes them. Nodes create
their endpoints with the relative form (`relative_topic`), so in a namespace /cam2 these become
/cam2/camera/image_raw, ...; without one they are exactly these names.
"""

from __future__ import annotations

import re

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
SEGMENTATION_TOPIC = "/sam4dcap/segmentation"
MASK_TOPIC = "/sam4dcap/mask"
KEYPOINTS_TOPIC = "/sam4dcap/keypoints"
MESH_TOPIC = "/sam4dcap/mesh"
MARKERS_TOPIC = "/sam4dcap/markers"
TF_STATIC_TOPIC = "/tf_static"
TF_TOPIC = "/tf"
KINEMATICS_TOPIC = "/sam4dcap/joint_kinematics"
MODEL_PATH_TOPIC = "/sam4dcap/model_path"
KINETICS_TOPIC = "/sam4dcap/joint_kinetics"
VISUALIZATION_TOPIC = "/sam4dcap/visualization"
# Frame acks: each pipeline stage publishes std_msgs/Header(stamp=capture stamp of the input it
# consumed, frame_id=its node name) after every input, output or not. File/bag sources wait for
# them so no frame is dropped (see sam4dcap_perception.graph).
PROGRESS_TOPIC = "/sam4dcap/progress"
# frame_id suffix of a "frames held back" notice on PROGRESS_TOPIC (FrameAcks.hold).
HELD_SUFFIX = "/held"
# Readiness: a node whose input subscriptions are made lazily announces its name here once they
# all exist; file sources wait for it.
READY_TOPIC = "/sam4dcap/ready"
# A file/bag source has published its last frame (std_msgs/Header, stamp = that frame's capture
# stamp, latched). Offline, markers_node then fixes the world frame from the frames it holds
# when its ground-plane window never completed (a clip shorter than ground_window_s).
END_OF_STREAM_TOPIC = "/sam4dcap/end_of_stream"
# Node health (diagnostic_msgs/DiagnosticArray), published by every node (REP-107 style
# aggregators and rqt_runtime_monitor read this topic).
DIAGNOSTICS_TOPIC = "/diagnostics"
# A user or GUI picks the subject (sam4dcap_msgs/Prompt: a positive point, else the box centre,
# on a person in view); the body estimator re-targets its tracker on that person.
PROMPT_TOPIC = "/sam4dcap/prompt"
# REP-155: ids of every tracked person on each frame (sam4dcap_msgs/IdsList, hri_msgs/IdsList's fields).
TRACKED_BODIES_TOPIC = "/humans/bodies/tracked"

# QoS kinds of the graph's topics (profiles in node_plumbing.qos_profile):
#   image    live cameras: sensor data (best effort, newest wins); file/bag sources: reliable,
#            deep queue, and the source waits for downstream (no frame silently dropped).
#   results  reliable, keep-last 100: every marker/kinematics sample matters.
#   deep     reliable, keep-last 1000: small per-frame messages a stage may emit in bursts.
#   latched  reliable + transient-local depth 1: static transforms (late joiners get them).
QOS_KINDS = ("image", "results", "deep", "latched")

# Frames (REP-103/105): `world` is z up for ROS consumers (RViz, tf2, robots); the markers,
# kinematics and the IK model live in OpenSim's y-up frame, published as its named child
# `opensim_world` (a fixed rotation of +90 deg about x: OpenSim x forward, y up, z right ->
# ROS x forward, y left, z up). The camera's optical frame (x right, y down, z forward) is a
# child of opensim_world; each body of the IK model is `<body id>_<OpenSim body>`, e.g.
# body1_pelvis, a child of opensim_world.
WORLD_FRAME = "world"
OPENSIM_WORLD_FRAME = "opensim_world"
OPENSIM_WORLD_IN_WORLD_XYZW = (0.7071067811865476, 0.0, 0.0, 0.7071067811865476)


def body_id(person_id: int) -> str:
    """REP-155 body id of a tracked person. ROS 2 name tokens may not start with a digit, so
    the numeric person_id gets a prefix: person 1 -> "body1"."""
    return f"body{int(person_id)}"


def joint_states_topic(person_id: int) -> str:
    """REP-155 body joint states of one tracked person: /humans/bodies/body<id>/joint_states."""
    return f"/humans/bodies/{body_id(person_id)}/joint_states"


# Any body's joint states (REP-155 body ids: a ROS name token), e.g. for a recorder of them all.
JOINT_STATES_TOPIC_RE = re.compile(r"^/humans/bodies/[A-Za-z_][A-Za-z0-9_]*/joint_states$")


def body_roi_topic(person_id: int) -> str:
    """REP-155 region of one tracked person in the image: /humans/bodies/body<id>/roi."""
    return f"/humans/bodies/{body_id(person_id)}/roi"


def relative_topic(name: str) -> str:
    """The relative form of a topic of the graph ("/sam4dcap/markers" -> "sam4dcap/markers"):
    nodes create every publisher/subscription with it, so a node started in a namespace
    (`__ns:=/cam2`, launch `namespace:=cam2`, `sam4dcap graph --namespace cam2`) talks on
    /cam2/sam4dcap/markers and two graphs share a ROS domain without seeing each other. TF
    too ("tf", "tf_static"), as Nav2 does for namespaced robots; without a namespace the names
    are the usual absolute ones."""
    return name.lstrip("/")
