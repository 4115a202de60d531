"""visualization_node: results -> /sam4dcap/visualization (visualization_msgs/MarkerArray) for RViz.

Namespaces (one MarkerArray per marker frame, in `world_frame`):
  markers   SPHERE_LIST of the virtual markers (missing ones left out)
  skeleton  LINE_LIST between anatomical neighbours (BlazePose names)
  twin      the biomechanical twin: every body of the IK model as one simple shape (CYLINDER
            along the segment, CUBE for the pelvis, SPHERE; `body_poses.BodyPoser`), posed by
            /sam4dcap/joint_kinematics with the model named on /sam4dcap/model_path (latched by
            the IK node; followed across calibration hot swaps). One MarkerArray per
            JointKinematics, marker id = body index, text = body name. Until a model and
            kinematics arrive, segments are drawn between markers instead (thigh, shank, foot,
            arms, trunk, pelvis). show_twin switches this namespace.
  mesh      TRIANGLE_LIST of the last BodyMesh with faces (mesh backends only), in its frame.

Per-body TF (/tf): with a model and kinematics, every body of the IK model as a frame
`<body id>_<OpenSim body>` (e.g. body1_pelvis, body1_femur_r), child of `world_frame`, stamped
with the kinematics' capture stamp: tf2 users look up any segment of the twin.

Live streams (realtime, set by launch/graph): markers, twin and TF at most `live_max_rate_hz`
per second of capture time (a display needs no more; the frames in between are not drawn);
offline every frame is drawn.
"""

from __future__ import annotations

import math

import numpy as np
from rclpy.node import Node
from std_msgs.msg import ColorRGBA

from sam4dcap_biomech.ros.msg_conversion import array_to_points, points_to_array, stamp_to_sec, transform_stamped
from sam4dcap_biomech.ros.node_plumbing import (DEEP_QOS, LATCHED_QOS, RESULTS_QOS, NodeDiagnostics,
                                                declare_parameters, run_node)
from sam4dcap_biomech.ros.topics import (KINEMATICS_TOPIC, MARKERS_TOPIC, MESH_TOPIC, MODEL_PATH_TOPIC, TF_TOPIC,
                                         VISUALIZATION_TOPIC, body_id, relative_topic)

SKELETON = (
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_heel"),
    ("left_heel", "left_foot_index"), ("left_ankle", "left_foot_index"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("right_ankle", "right_heel"),
    ("right_heel", "right_foot_index"), ("right_ankle", "right_foot_index"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
)
# (segment, proximal end, distal end, diameter as a fraction of length)
TWIN_SEGMENTS = (
    ("thigh_l", "left_hip", "left_knee", 0.30), ("thigh_r", "right_hip", "right_knee", 0.30),
    ("shank_l", "left_knee", "left_ankle", 0.25), ("shank_r", "right_knee", "right_ankle", 0.25),
    ("foot_l", "left_heel", "left_foot_index", 0.35), ("foot_r", "right_heel", "right_foot_index", 0.35),
    ("upper_arm_l", "left_shoulder", "left_elbow", 0.30), ("upper_arm_r", "right_shoulder", "right_elbow", 0.30),
    ("forearm_l", "left_elbow", "left_wrist", 0.25), ("forearm_r", "right_elbow", "right_wrist", 0.25),
    ("trunk", "mid_hip", "mid_shoulder", 0.55), ("pelvis", "left_hip", "right_hip", 0.45),
)


def _quaternion_z_to(direction: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) rotating +z onto `direction`."""
    d = direction / np.linalg.norm(direction)
    z = np.array([0.0, 0.0, 1.0])
    c = float(np.dot(z, d))
    if c < -1 + 1e-9:
        return (1.0, 0.0, 0.0, 0.0)
    axis = np.cross(z, d)
    w = 1.0 + c
    n = math.sqrt(w * w + float(axis @ axis))
    return (float(axis[0] / n), float(axis[1] / n), float(axis[2] / n), float(w / n))


def _color(r, g, b, a=1.0) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def marker_array(names, positions: np.ndarray, header, *, diameter_m: float, show_twin: bool):
    """MarkerArray of one VirtualMarkers frame (markers, skeleton, twin)."""
    from visualization_msgs.msg import Marker, MarkerArray

    pos = {n: p for n, p in zip(names, positions) if np.all(np.isfinite(p))}
    if "left_hip" in pos and "right_hip" in pos:
        pos["mid_hip"] = (pos["left_hip"] + pos["right_hip"]) / 2
    if "left_shoulder" in pos and "right_shoulder" in pos:
        pos["mid_shoulder"] = (pos["left_shoulder"] + pos["right_shoulder"]) / 2
    out = MarkerArray()

    spheres = Marker(header=header, ns="markers", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
    spheres.scale.x = spheres.scale.y = spheres.scale.z = float(diameter_m)
    spheres.pose.orientation.w = 1.0
    spheres.color = _color(1.0, 0.5, 0.0)
    spheres.points = array_to_points(np.array([p for n, p in pos.items() if n not in ("mid_hip", "mid_shoulder")],
                                              float).reshape(-1, 3))
    out.markers.append(spheres)

    lines = Marker(header=header, ns="skeleton", id=0, type=Marker.LINE_LIST, action=Marker.ADD)
    lines.scale.x = float(diameter_m) / 3
    lines.pose.orientation.w = 1.0
    lines.color = _color(0.2, 0.8, 1.0)
    for a, b in SKELETON:
        if a in pos and b in pos:
            lines.points += array_to_points(np.array([pos[a], pos[b]], float))
    out.markers.append(lines)

    if show_twin:
        for i, (seg, a, b, frac) in enumerate(TWIN_SEGMENTS):
            m = Marker(header=header, ns="twin", id=i, type=Marker.CYLINDER)
            if a in pos and b in pos and np.linalg.norm(pos[b] - pos[a]) > 1e-6:
                d = pos[b] - pos[a]
                length = float(np.linalg.norm(d))
                mid = (pos[a] + pos[b]) / 2
                m.action = Marker.ADD
                m.pose.position.x, m.pose.position.y, m.pose.position.z = map(float, mid)
                (m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z,
                 m.pose.orientation.w) = _quaternion_z_to(d)
                m.scale.x = m.scale.y = frac * length
                m.scale.z = length
                m.color = _color(0.85, 0.85, 0.9, 0.6)
            else:
                m.action = Marker.DELETE  # segment not seen this frame
            m.text = seg
            out.markers.append(m)
    return out


def twin_markers(poses, header):
    """One Marker per model body: its simple shape (`body_poses.BodyShape`) posed in ground,
    RViz's convention (a cylinder's length along its z; scale = full extents)."""
    from visualization_msgs.msg import Marker

    kinds = {"cylinder": Marker.CYLINDER, "box": Marker.CUBE, "sphere": Marker.SPHERE}
    out = []
    for i, body in enumerate(poses):
        m = Marker(header=header, ns="twin", id=i, type=kinds[body.shape.kind], action=Marker.ADD)
        m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in body.shape_position_m)
        (m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z,
         m.pose.orientation.w) = (float(v) for v in body.shape_quaternion_xyzw)
        m.scale.x, m.scale.y, m.scale.z = (float(v) for v in body.shape.size_m)
        m.color = _color(0.3, 0.9, 0.4, 0.7)
        m.text = body.name
        out.append(m)
    return out


def mesh_marker(mesh_msg, faces: np.ndarray):
    from visualization_msgs.msg import Marker

    v = np.asarray(mesh_msg.vertices, float).reshape(-1, 3)
    m = Marker(header=mesh_msg.header, ns="mesh", id=0, type=Marker.TRIANGLE_LIST, action=Marker.ADD)
    m.scale.x = m.scale.y = m.scale.z = 1.0
    m.pose.orientation.w = 1.0
    m.color = _color(0.7, 0.7, 0.75, 0.8)
    tri = v[faces.reshape(-1)]
    m.points = array_to_points(tri)
    return m


def body_transforms(poses, header, body: str):
    """TFMessage: one transform `header.frame_id` -> `<body>_<OpenSim body>` per body pose."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=[transform_stamped(header.frame_id, f"{body}_{pose.name}", header.stamp,
                                                   pose.position_m, pose.quaternion_xyzw) for pose in poses])


class VisualizationNode(Node):
    def __init__(self):
        super().__init__("visualization_node")
        self.diagnostics = NodeDiagnostics(self)
        from visualization_msgs.msg import MarkerArray

        from sam4dcap_msgs.msg import BodyMesh, VirtualMarkers

        from std_msgs.msg import String
        from tf2_msgs.msg import TFMessage

        from sam4dcap_msgs.msg import JointKinematics

        self.p = declare_parameters(self, "visualization_node",
                                    runtime=("show_twin", "marker_diameter_m", "live_max_rate_hz"))
        self._drawn_s: dict[str, float] = {}   # callback -> capture time last drawn (live rate limit)
        self.pub = self.create_publisher(MarkerArray, relative_topic(VISUALIZATION_TOPIC), RESULTS_QOS)
        self.tf_pub = self.create_publisher(TFMessage, relative_topic(TF_TOPIC), RESULTS_QOS)
        self.faces: dict[str, np.ndarray] = {}
        self.create_subscription(VirtualMarkers, relative_topic(MARKERS_TOPIC), self._on_markers, DEEP_QOS)
        self.create_subscription(BodyMesh, relative_topic(MESH_TOPIC), self._on_mesh, RESULTS_QOS)
        self.poser = None
        self.poser_path = ""
        # The model and kinematics pose the twin (show_twin) and the per-body TF frames.
        self.create_subscription(String, relative_topic(MODEL_PATH_TOPIC), self._on_model_path, LATCHED_QOS)
        self.create_subscription(JointKinematics, relative_topic(KINEMATICS_TOPIC), self._on_kinematics,
                                 DEEP_QOS)

    def _on_model_path(self, msg) -> None:
        if msg.data == self.poser_path:
            return
        from sam4dcap_biomech.body_poses import BodyPoser

        try:
            self.poser = BodyPoser(msg.data)
            self.poser_path = msg.data
            self.get_logger().info(f"twin: model {self.poser.model_name} ({len(self.poser.body_names)} bodies)")
        except Exception as exc:  # noqa: BLE001 - keep drawing the marker-based twin
            self.get_logger().error(f"twin: cannot load {msg.data}: {exc}")

    def _due(self, what: str, stamp) -> bool:
        """Live streams: at most live_max_rate_hz drawings of `what` per second of capture time
        (a repeated or earlier stamp, e.g. a restarted source, draws at once)."""
        rate = float(self.p["live_max_rate_hz"])
        if not self.p["realtime"] or rate <= 0:
            return True
        t = stamp_to_sec(stamp)
        last = self._drawn_s.get(what)
        if last is not None and last < t < last + 1.0 / rate - 1e-4:
            return False
        self._drawn_s[what] = t
        return True

    def _on_kinematics(self, msg) -> None:
        from visualization_msgs.msg import MarkerArray

        if self.poser is None or msg.state != msg.STATE_VALID:
            return   # no pose this frame (person lost / fit not trusted): no invented twin pose
        if not self._due("twin", msg.header.stamp):
            return
        coordinates = {n: q for n, q in zip(msg.name, msg.position) if math.isfinite(q)}
        try:
            poses = self.poser.poses(coordinates)
        except Exception as exc:  # noqa: BLE001 - e.g. kinematics of another model: reported
            self.get_logger().error(f"twin: {exc}", throttle_duration_sec=10.0)
            return
        header = msg.header
        header.frame_id = self.p["world_frame"] or "world"
        self.tf_pub.publish(body_transforms(poses, header, body_id(msg.person_id)))
        if self.p["show_twin"]:
            self.pub.publish(MarkerArray(markers=twin_markers(poses, header)))

    def _on_markers(self, msg) -> None:
        if not self._due("markers", msg.header.stamp):
            return
        pos = points_to_array(msg.positions)
        header = msg.header
        if self.p["world_frame"] and header.frame_id != self.p["world_frame"]:
            self.get_logger().warning(f"markers in {header.frame_id!r}, expected {self.p['world_frame']!r}",
                                      throttle_duration_sec=10.0)
        # The marker-based twin stands in until the IK model's twin is available.
        self.pub.publish(marker_array(msg.names, pos, header, diameter_m=self.p["marker_diameter_m"],
                                      show_twin=self.p["show_twin"] and self.poser is None))

    def _on_mesh(self, msg) -> None:
        from visualization_msgs.msg import MarkerArray

        if len(msg.faces):
            self.faces[msg.topology_id] = np.asarray(msg.faces, np.int64)
        faces = self.faces.get(msg.topology_id)
        if faces is None or not len(msg.vertices):
            return
        self.pub.publish(MarkerArray(markers=[mesh_marker(msg, faces)]))


def main(args=None) -> int:
    return run_node(VisualizationNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
