"""recorder_node: the session's topics -> a rosbag2 (mcap) bag, closed cleanly on shutdown.

Subscriptions are raw (CDR bytes straight into the bag, no deserialization), one per topic of
`graph.TOPICS` (or the `topics` parameter), each with the QoS its publisher offers (images:
best effort from cameras, reliable from files), plus any /humans/bodies/<id>/joint_states that
appears. The bag is flushed every `flush_period_s` (a SIGKILLed recorder keeps all but the last
period; `bag_io.recover_bag` completes it) and closed on SIGINT/SIGTERM/SIGHUP or when
the parent process dies (run_node then calls close()). A frame is acked once its image
and CameraInfo are written, so a file source never outruns the recorder.
"""

from __future__ import annotations

import time

from rclpy.node import Node

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.ros.msg_conversion import stamp_from_cdr
from sam4dcap_biomech.ros.node_plumbing import (DEEP_QOS, LATCHED_QOS, RESULTS_QOS, FrameAcks, NodeDiagnostics,
                                                announce_ready, declare_parameters, run_node,
                                                subscribe_like_publisher)
from sam4dcap_biomech.ros.topics import (CAMERA_INFO_TOPIC, IMAGE_TOPIC, JOINT_STATES_TOPIC_RE, PROGRESS_TOPIC,
                                         relative_topic)

from .. import graph
from ..bag_io import BagWriter, TopicQos


def _import_type(msgtype: str):
    import importlib

    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder_node")
        self.diagnostics = NodeDiagnostics(self)   # OK while it runs; a failed write stops the node
        p = declare_parameters(self, "recorder_node")
        if not p["bag_dir"]:
            raise Sam4dcapError("parameter recorder_node.bag_dir is empty: give the bag folder to write")
        known = {t.name: t for t in graph.TOPICS if t.name != PROGRESS_TOPIC}
        wanted = list(p["topics"])
        if wanted == ["all"]:
            wanted = [name for name, t in known.items() if t.record]
        unknown = [t for t in wanted if t not in known and not JOINT_STATES_TOPIC_RE.match(t)]
        if unknown:
            raise Sam4dcapError(f"parameter recorder_node.topics: unknown topic(s) {', '.join(unknown)} "
                                f"(known: all, {', '.join(known)})")
        self.writer = BagWriter(p["bag_dir"])
        self.acks = FrameAcks(self)
        self._subs = {}
        self._topics: dict[str, graph.Topic] = {}
        self._frame_parts: dict[tuple[int, int], set[str]] = {}
        self._timers = []
        self._record_all = p["topics"] == ["all"]
        for name in wanted:
            t = known.get(name) or graph.Topic(name, "sensor_msgs/msg/JointState", "results", "ik_node", "")
            self._add(t)
        self._announce_if_ready()
        self._flush_timer = self.create_timer(p["flush_period_s"], self.writer.flush)
        if self._record_all:
            self._discover_timer = self.create_timer(1.0, self._discover)
        self.get_logger().info(f"recording {len(wanted)} topics to {p['bag_dir']}")

    def _add(self, t: graph.Topic) -> None:
        if t.name in self._subs:
            return
        self._topics[t.name] = t
        cls = _import_type(t.msgtype)
        is_image = t.name == IMAGE_TOPIC

        is_frame_part = t.name in (IMAGE_TOPIC, CAMERA_INFO_TOPIC)

        def on_msg(cdr: bytes, topic=t.name):
            self.writer.write(topic, time.time_ns(), cdr)
            if is_frame_part:
                self._frame_part_written(topic, stamp_from_cdr(cdr))

        if t.qos == "image":
            # The offered QoS is recorded as the subscriber saw it: reliable from files,
            # best effort from cameras.
            def on_subscribed(sub, t=t):
                reliable = sub.qos_profile.reliability.name == "RELIABLE"
                self.writer.add_topic(t.name, t.msgtype, TopicQos(reliable=reliable, depth=sub.qos_profile.depth))
                self._subs[t.name] = sub
                self._announce_if_ready()

            self._timers.append(subscribe_like_publisher(
                self, cls, t.name, on_msg, raw=True, on_subscribed=on_subscribed,
                reliable_depth=30 if is_image else DEEP_QOS.depth))
            self._subs[t.name] = None
            return
        qos = {"latched": LATCHED_QOS, "deep": DEEP_QOS}.get(t.qos, RESULTS_QOS)
        self.writer.add_topic(t.name, t.msgtype, TopicQos(reliable=True, transient_local=t.qos == "latched",
                                                          depth=qos.depth))
        self._subs[t.name] = self.create_subscription(cls, relative_topic(t.name), on_msg, qos, raw=True)

    def _frame_part_written(self, topic: str, stamp) -> None:
        """Ack a frame once its image and (when recorded) its CameraInfo are both in the bag:
        the executor may serve the big images first, and the source must not finish (and the
        graph stop us) while CameraInfos are still queued."""
        parts = tuple(t for t in (IMAGE_TOPIC, CAMERA_INFO_TOPIC) if t in self._topics)
        key = (stamp.sec, stamp.nanosec)
        seen = self._frame_parts.setdefault(key, set())
        seen.add(topic)
        if all(t in seen for t in parts):
            del self._frame_parts[key]
            self.acks.ack(stamp)

    def _announce_if_ready(self) -> None:
        if not getattr(self, "_ready_pub", None) and all(s is not None for s in self._subs.values()):
            lazy = [name for name, t in self._topics.items() if t.qos == "image"]
            self._ready_pub = announce_ready(self, lazy)

    def _discover(self) -> None:
        # In a namespace the graph's names carry its prefix; the bag keeps the graph's own names
        # (/camera/image_raw, ...), so `sam4dcap process BAG` and replays read it unchanged.
        ns = self.get_namespace().rstrip("/")
        for full, types in self.get_topic_names_and_types():
            if ns and not full.startswith(ns + "/"):
                continue
            name = full[len(ns):]
            if JOINT_STATES_TOPIC_RE.match(name) and name not in self._subs and "sensor_msgs/msg/JointState" in types:
                self._add(graph.Topic(name, "sensor_msgs/msg/JointState", "results", "ik_node", ""))

    def close(self) -> None:
        self.writer.close()


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
