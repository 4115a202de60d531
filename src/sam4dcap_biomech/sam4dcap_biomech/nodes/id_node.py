"""id_node: /sam4dcap/joint_kinematics -> streaming inverse dynamics -> /sam4dcap/joint_kinetics.

Off by default (`enabled: false`: the node starts, says so, and subscribes to nothing). When
enabled, each IK frame goes into `streaming_id.StreamingID`; the frame `delay_s` back comes out
as JointKinetics stamped with ITS capture stamp, `no_external_loads: true` (no ground reaction
forces on the live stream: pelvis residuals carry them and are not physical).

The model: `model_path`, or (empty) the one the ik_node latches on /sam4dcap/model_path, followed
through calibration hot swaps. Kinematics that arrive before their model (the latched path can
come after the first frames) wait in a bounded buffer and are solved once it loads, so a run
loses no frame to the race.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

from rclpy.node import Node

from ..errors import Sam4dcapError
from ..ros.msg_conversion import stamp_to_sec
from ..ros.node_plumbing import DEEP_QOS, LATCHED_QOS, RESULTS_QOS, NodeDiagnostics, declare_parameters, run_node
from ..ros.topics import KINEMATICS_TOPIC, KINETICS_TOPIC, MODEL_PATH_TOPIC, relative_topic


class IDNode(Node):
    def __init__(self):
        super().__init__("id_node")
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for kinematics and the model")
        from std_msgs.msg import String

        from sam4dcap_msgs.msg import JointKinematics, JointKinetics

        from ..opensim_logging import quiet_opensim

        quiet_opensim("warn")
        self.p = p = declare_parameters(self, "id_node")
        if p["external_loads_file"]:
            raise Sam4dcapError("parameter id_node.external_loads_file: external loads (ground reaction forces) are "
                                "not available on the live stream; leave it empty here and use "
                                "`sam4dcap id --external-loads` offline")
        self.id = None
        self._JointKinetics = JointKinetics
        self._stamps: collections.deque = collections.deque(maxlen=512)  # (time, stamp) of recent inputs
        self._warned: set[str] = set()
        # Kinematics received before their model arrived (bounded: ~10 s at 60 Hz).
        self._pending: collections.deque = collections.deque(maxlen=600)
        if not p["enabled"]:
            self.get_logger().info("inverse dynamics disabled (set parameter id_node.enabled:=true to run it)")
            return
        if p["model_path"]:
            try:
                self._use_model(p["model_path"])
            except Sam4dcapError as exc:
                raise Sam4dcapError(f"parameter id_node.model_path={p['model_path']!r}: {exc}") from None
        else:
            self.create_subscription(String, relative_topic(MODEL_PATH_TOPIC), self._on_model_path, LATCHED_QOS)
        self.kinetics_pub = self.create_publisher(JointKinetics, relative_topic(KINETICS_TOPIC), RESULTS_QOS)
        self.create_subscription(JointKinematics, relative_topic(KINEMATICS_TOPIC), self._on_kinematics, DEEP_QOS)
        self.get_logger().info(f"inverse dynamics on {KINEMATICS_TOPIC} (delay {p['delay_s']} s, "
                               f"low-pass {p['lowpass_cutoff_hz']} Hz, no external loads)")

    def _use_model(self, path) -> None:
        from ..streaming_id import StreamingID

        self.id = StreamingID(Path(path), lowpass_cutoff_hz=self.p["lowpass_cutoff_hz"], delay_s=self.p["delay_s"])
        self.model_path = str(path)
        self.get_logger().info(f"inverse dynamics model: {path} ({self.id.model_name})")
        pending, self._pending = list(self._pending), collections.deque(maxlen=self._pending.maxlen)
        for msg in pending:
            self._on_kinematics(msg)

    def _on_model_path(self, msg) -> None:
        if self.id is not None and msg.data == self.model_path:
            return
        try:
            self._use_model(msg.data)
        except Sam4dcapError as exc:
            self.get_logger().error(f"cannot use model {msg.data!r} from {MODEL_PATH_TOPIC}: {exc}")

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def _on_kinematics(self, msg) -> None:
        if msg.state != msg.STATE_VALID:
            # No pose this frame (person lost / fit not trusted): derivatives must not span the gap.
            if self.id is not None:
                self.id.reset()
            self.diagnostics.set(NodeDiagnostics.WARN, "no valid kinematics (person lost / fit not trusted)")
            return
        if self.id is None:
            self._warn_once("nomodel", f"no model yet (waiting for {MODEL_PATH_TOPIC}): kinematics buffered")
            self._pending.append(msg)
            return
        if msg.model_name and msg.model_name != self.id.model_name:
            self._warn_once(f"model:{msg.model_name}", f"kinematics of model {msg.model_name!r}, but inverse dynamics "
                            f"runs on {self.id.model_name!r}: buffered until the matching model path arrives")
            self._pending.append(msg)
            return
        t = stamp_to_sec(msg.header.stamp)
        self._stamps.append((t, msg.header.stamp))
        t0 = time.perf_counter()
        try:
            frame = self.id.add(t, list(msg.name), list(msg.position))
        except Sam4dcapError as exc:
            self.id.reset()
            self.get_logger().warning(f"inverse dynamics skipped a frame: {exc}", throttle_duration_sec=5.0)
            return
        if frame is None:
            return
        stamp = next((s for ts, s in reversed(self._stamps) if ts == frame.time_s), None)
        if stamp is None:  # cannot happen: the output frame is one of the inputs
            return
        out = self._JointKinetics()
        out.header.stamp = stamp
        out.header.frame_id = msg.header.frame_id
        out.person_id = msg.person_id
        out.model_name = self.id.model_name
        out.name = list(frame.coordinate_names)
        out.generalized_force = [float(v) for v in frame.generalized_forces]
        out.no_external_loads = frame.no_external_loads
        self.kinetics_pub.publish(out)
        self.diagnostics.processed(time.perf_counter() - t0)
        self.diagnostics.set(NodeDiagnostics.OK, "publishing kinetics")


def main(args=None) -> int:
    return run_node(IDNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
