"""video_source_node: video file / image folder / camera / rosbag -> /camera/image_raw + camera_info.

Stamps (`stamp_mode`): `ros_time` = the ROS time at capture: a camera's frames get the clock
at capture, a file's frames the ROS time of the first frame + their container offset (so
`now - stamp` is the latency and TF lookups work); `container` = the file's own times from 0
(a bag's images keep their recorded stamps). `auto` (default): ros_time for cameras and
realtime replays, container for offline runs (the results then line up with the file).
Modes:
  offline (file or bag with realtime=false): images are published reliably and the source
      waits for downstream: it starts once every node of `ack_nodes` has subscribed to its
      inputs, keeps at most `max_queue_frames` frames un-acked per ack node (acks on
      /sam4dcap/progress, see graph.py), and exits 0 once every frame is acked. No frame is
      dropped; a node silent for `ack_timeout_s` with frames pending is reported by name and
      no longer waited for; a node that restarts (new subscription endpoints) has the frames
      in flight to its dead instance written off, reported by name and count. Frames a stage
      holds back ("<node>/held" notices, e.g. markers_node's ground-plane window) do not count
      as in flight to the nodes downstream of it, except in the final wait.
  A file or bag source announces its last frame on /sam4dcap/end_of_stream (latched Header,
  stamp = that frame's capture stamp), so a stage holding frames can finish them.
  The protocol's state and wait are `frame_flow.FrameFlow` (ROS-free, unit-tested); this node
  feeds it the acks and asks the ROS graph who is ready or restarted.
  realtime (cameras, or realtime=true): once the `ack_nodes` are ready, frames are published
      at their capture times with sensor-data QoS (best effort, newest wins); a slow consumer
      skips frames.
In one process with the body estimator (perception_process), each frame is handed to it as an
array (`local_images`: no message is built, serialized or copied) and /camera/image_raw is
published only while another node (recorder, image viewer) subscribes to it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.ros.msg_conversion import ns_to_stamp, restamp_cdr, sec_to_stamp, stamp_from_cdr, stamp_to_ns
from sam4dcap_biomech.ros.node_plumbing import (DEEP_QOS, LATCHED_QOS, NodeDiagnostics, declare_parameters,
                                                image_qos, run_node)
from sam4dcap_biomech.ros.topics import (CAMERA_INFO_TOPIC, END_OF_STREAM_TOPIC, IMAGE_TOPIC,
                                         PROGRESS_TOPIC, READY_TOPIC, relative_topic)

from .. import graph
from ..camera_calibration import load_camera_info_file
from ..frame_flow import FrameFlow
from .image_conversion import camera_info_from_intrinsics, numpy_to_image

# A stage's ListParameters answer not back after this long: ask again (a lost response) [s].
SPINNING_QUERY_RETRY_S = 2.0


def is_bag(source: str) -> bool:
    p = Path(source)
    return (p.is_dir() and ((p / "metadata.yaml").is_file() or any(p.glob("*.mcap")))) or p.suffix == ".mcap"


class VideoSourceNode(Node):
    def __init__(self, *, local_images=None, local_idle=None):
        """`local_images(rgb, header)`: in-process consumer of every frame (perception_process);
        `local_idle(timeout_s)`: waits until it has processed them (before the node ends)."""
        super().__init__("video_source_node")
        self.local_images = local_images
        self.local_idle = local_idle
        p = self.p = declare_parameters(self, "video_source_node", runtime=("ack_timeout_s", "max_queue_frames"))
        if not p["source"]:
            raise Sam4dcapError("parameter video_source_node.source is empty: give a video file, image folder, "
                                "bag folder or camera:N")
        self.error: str | None = None
        self.bag = is_bag(p["source"])
        self.camera = p["source"].startswith("camera:")
        self.offline = not p["realtime"] and not self.camera
        self.ros_time_stamps = p["stamp_mode"] == "ros_time" or (p["stamp_mode"] == "auto" and not self.offline)
        self._stop = threading.Event()   # close(): the publishing thread ends, then is joined
        self.src = None
        if self.bag:
            from .. import bag_io

            topics = bag_io.bag_topics(p["source"])
            if IMAGE_TOPIC not in topics or topics[IMAGE_TOPIC].count == 0:
                raise Sam4dcapError(f"parameter video_source_node.source: bag {p['source']} has no {IMAGE_TOPIC} "
                                    "messages")
            self.n_frames = topics[IMAGE_TOPIC].count
        else:
            from ..video_source import open_source

            # (image_folder_fps was declared but never passed: folders were refused by the node)
            self.src = open_source(p["source"], start_s=p["start_s"], end_s=p["end_s"] or None,
                                   image_folder_fps=p["image_folder_fps"] or None)
            self.n_frames = self.src.n_frames_hint
            self.intrinsics = (load_camera_info_file(p["camera_info_file"], self.src.width, self.src.height)
                               if p["camera_info_file"] else self.src.intrinsics_default(p["horizontal_fov_deg"]))
        qos = image_qos(self.offline)
        self.image_pub = self.create_publisher(Image, relative_topic(IMAGE_TOPIC), qos)
        # CameraInfo is small: offline, a deep queue, so a reader busy with images never loses one.
        self.info_pub = self.create_publisher(CameraInfo, relative_topic(CAMERA_INFO_TOPIC),
                                             DEEP_QOS if self.offline else qos)
        # Offline: the source starts once these nodes are ready, then waits for their frame
        # acks. Realtime: it only waits for them to be ready (a camera's frames go out as captured).
        self.ack_nodes = [n.strip() for n in p["ack_nodes"].split(",") if n.strip()]
        self.flow = FrameFlow(self.ack_nodes, offline=self.offline)
        self.ready_nodes: dict[str, set[str]] = {}  # node -> its lazily subscribed topics
        self._spinning: set[str] = set()
        self._param_clients: dict = {}
        self._param_futures: dict = {}
        if self.ack_nodes:
            from std_msgs.msg import String

            self.create_subscription(Header, relative_topic(PROGRESS_TOPIC), self._on_progress, DEEP_QOS)
            def on_ready(m):
                name, *topics = m.data.split()
                self.ready_nodes[name] = set(topics)

            self.create_subscription(String, relative_topic(READY_TOPIC), on_ready, LATCHED_QOS)
        self.frames_published = 0
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for the pipeline", frames_published=0)
        self.eos_pub = self.create_publisher(Header, relative_topic(END_OF_STREAM_TOPIC), LATCHED_QOS) \
            if not self.camera else None
        self._thread = threading.Thread(target=self._run_guarded, name="video_source", daemon=True)
        self._thread.start()
        mode = "offline (reliable, acked by " + (", ".join(self.ack_nodes) or "nobody") + ")" if self.offline \
            else "realtime (sensor-data QoS)"
        self.get_logger().info(f"source {p['source']}: {mode}; stamps: "
                               + ("ROS time at capture" if self.ros_time_stamps else "container time"))

    # --- flow control ---------------------------------------------------------------------
    def _on_progress(self, msg: Header) -> None:
        self.flow.on_progress(msg.frame_id, stamp_to_ns(msg.stamp))

    def _input_endpoints(self, node_name: str) -> set[bytes]:
        """GIDs of `node_name`'s subscriptions to its first input: a restarted node has new ones."""
        spec = next((n for n in graph.NODES if n.name == node_name), None)
        if spec is None or not spec.startup_inputs:
            return set()
        return {bytes(i.endpoint_gid) for i in self._subscriptions_of(spec.startup_inputs[0])
                if self._is_ours(i, node_name)}

    def _subscriptions_of(self, topic: str):
        return self.get_subscriptions_info_by_topic(self.resolve_topic_name(relative_topic(topic)))

    def _is_ours(self, endpoint_info, node_name: str) -> bool:
        """That endpoint belongs to `node_name` of this graph (same namespace)."""
        return endpoint_info.node_name == node_name and endpoint_info.node_namespace == self.get_namespace()

    def _check_restarts(self, waiting: list[str]) -> None:
        """A stage killed and restarted lost the frames in flight to it: they will never be
        acked. Seen as new subscription endpoints of that node; its backlog is then written
        off (reported) so the stream goes on (called by FrameFlow.wait_for_acks)."""
        for n in waiting:
            gids = self._input_endpoints(n)
            known = self._endpoints.setdefault(n, gids)
            if gids - known:
                lost = self.flow.write_off(n)
                self.get_logger().warning(f"{n} restarted: the {lost} frame(s) in flight to it are lost "
                                          "(to it and to the nodes downstream of it); waiting until it is ready")
                self.ready_nodes.pop(n, None)     # its new announcement says its inputs exist again
            self._endpoints[n] = known | gids

    def _wait_for_acks(self, max_pending: int) -> None:
        def dropped(name: str, timeout_s: float, pending: int) -> None:
            self.get_logger().error(f"{name} acked no frame for {timeout_s:.1f} s with {pending} pending: "
                                    "no longer waiting for it (its results may be incomplete)")

        def not_ready(name: str, timeout_s: float) -> None:
            self.get_logger().error(f"{name} restarted but not ready after {timeout_s:.1f} s: going on")

        self.flow.wait_for_acks(max_pending, self.p["ack_timeout_s"], check_restarts=self._check_restarts,
                                stopped=lambda: not self.context.ok() or self._stop.is_set(), on_dropped=dropped,
                                is_ready=lambda name: name in self.ready_nodes, on_not_ready=not_ready)

    def _is_spinning(self, node_name: str) -> bool:
        """The node answers its parameter service: constructed and spinning."""
        from rcl_interfaces.srv import ListParameters

        if node_name in self._spinning:
            return True
        client = self._param_clients.get(node_name)
        if client is None:
            ns = self.get_namespace().rstrip("/")
            client = self._param_clients[node_name] = self.create_client(ListParameters,
                                                                         f"{ns}/{node_name}/list_parameters")
            self._param_futures[node_name] = None
        pending = self._param_futures[node_name]
        if pending is not None and pending[0].done():
            self._spinning.add(node_name)
            self.destroy_client(client)
            return True
        if pending is not None and time.monotonic() - pending[1] > SPINNING_QUERY_RETRY_S:
            # A lost request or response ("failed to send response (timeout)"): ask again
            # instead of waiting for startup_timeout_s.
            client.remove_pending_request(pending[0])
            pending = self._param_futures[node_name] = None
        if pending is None and client.service_is_ready():
            self._param_futures[node_name] = (client.call_async(ListParameters.Request(depth=1)), time.monotonic())
        return False

    def _wait_for_pipeline(self) -> None:
        """Until each ack node subscribes to all its inputs (so no early frame is lost): nodes
        that subscribe lazily announce it on READY_TOPIC; for the others the graph shows it."""
        deadline = time.monotonic() + self.p["startup_timeout_s"]
        known = {n.name: n for n in graph.NODES}
        while True:
            missing = []
            for name in self.ack_nodes:
                if name in known and known[name].announces_ready:
                    if name not in self.ready_nodes:
                        missing.append(f"{name} (ready announcement)")
                    continue
                inputs = list(known[name].startup_inputs) if name in known else []
                before = len(missing)
                for t in inputs:
                    if not any(self._is_ours(i, name) for i in self._subscriptions_of(t)):
                        missing.append(f"{name} on {t}")
                if not inputs and (name, self.get_namespace()) not in self.get_node_names_and_namespaces():
                    missing.append(name)
                if len(missing) == before and not self._is_spinning(name):
                    # Subscriptions can exist while the node is still loading (e.g. a model):
                    # frames sent then would queue up behind its start-up.
                    missing.append(f"{name} (still starting)")
            if not self.ack_nodes and self.local_images is None and self.image_pub.get_subscription_count() == 0:
                missing.append(f"a subscriber on {IMAGE_TOPIC}")
            # Our own publishers must have matched every announced reader of our topics.
            for topic, pub in ((IMAGE_TOPIC, self.image_pub), (CAMERA_INFO_TOPIC, self.info_pub)):
                expected = sum(topic in topics for n, topics in self.ready_nodes.items() if n in self.ack_nodes)
                if pub.get_subscription_count() < expected:
                    missing.append(f"{expected - pub.get_subscription_count()} matched reader(s) on {topic}")
            if not missing:
                break
            if time.monotonic() > deadline:
                raise Sam4dcapError(f"downstream not ready after {self.p['startup_timeout_s']:.0f} s "
                                    f"(startup_timeout_s): waiting for {', '.join(missing)}")
            if not self.context.ok() or self._stop.is_set():
                raise Sam4dcapError("shut down before the first frame")
            time.sleep(0.1)
        self._stop.wait(0.5)  # discovery is per participant: give the other side's matching a moment

    # --- publishing ------------------------------------------------------------------------
    def _frames(self):
        """(stamp, Image or CDR bytes or None, CameraInfo or CDR bytes, capture time for pacing,
        RGB array or None)."""
        if self.bag:
            from rclpy.serialization import deserialize_message

            from .. import bag_io

            infos = {}
            for topic, _, _, raw in bag_io.read_messages(self.p["source"], [CAMERA_INFO_TOPIC, IMAGE_TOPIC],
                                                         deserialize=False):
                if topic == CAMERA_INFO_TOPIC:
                    infos[stamp_to_ns(stamp_from_cdr(raw))] = bytes(raw)
            start_ns = int(self.p["start_s"] * 1e9)
            ros_t0_ns = None
            end_ns = int(self.p["end_s"] * 1e9) if self.p["end_s"] else None
            first = None
            for topic, _, _, raw in bag_io.read_messages(self.p["source"], [IMAGE_TOPIC], deserialize=False):
                stamp = stamp_from_cdr(raw)
                t_ns = stamp_to_ns(stamp)
                first = t_ns if first is None else first
                if t_ns - first < start_ns or (end_ns is not None and t_ns - first > end_ns):
                    continue
                info = infos.get(t_ns)
                if self.ros_time_stamps:  # replayed in ROS time: start now, keep the offsets
                    ros_t0_ns = ros_t0_ns if ros_t0_ns is not None else self.get_clock().now().nanoseconds - t_ns
                    stamp = ns_to_stamp(ros_t0_ns + t_ns)   # replayed with ROS-time stamps
                    raw = restamp_cdr(raw, ros_t0_ns + t_ns)
                    if isinstance(info, (bytes, bytearray)):
                        info = restamp_cdr(info, ros_t0_ns + t_ns)
                if info is None:
                    img = deserialize_message(bytes(raw), Image)
                    from ..observations import CameraIntrinsics

                    info = camera_info_from_intrinsics(
                        CameraIntrinsics.from_fov(img.width, img.height, self.p["horizontal_fov_deg"]),
                        stamp=stamp, frame_id=img.header.frame_id)
                yield stamp, bytes(raw), info, t_ns * 1e-9, None
            return
        t0 = None
        for frame in self.src:
            if self.camera:
                # The clock at capture: the camera's start wall time + its frame offset.
                t0 = t0 if t0 is not None else (self.src.wall_time_at_start or time.time())
                stamp = sec_to_stamp(t0 + frame.time_s)
            elif self.ros_time_stamps:
                # ROS time of the first frame + the container offset (`now - stamp` = latency).
                t0 = t0 if t0 is not None else self.get_clock().now().nanoseconds * 1e-9 - frame.time_s
                stamp = sec_to_stamp(t0 + frame.time_s)
            else:
                stamp = sec_to_stamp(frame.time_s)
            # In-process consumer: the message is built only when another node subscribes.
            img = None if self.local_images is not None else \
                numpy_to_image(frame.image, "rgb8", stamp=stamp, frame_id=self.p["frame_id"])
            info = camera_info_from_intrinsics(self.intrinsics, stamp=stamp, frame_id=self.p["frame_id"])
            yield stamp, img, info, frame.time_s, frame.image

    def _hand_over(self, stamp, img, rgb) -> None:
        """perception_process: the frame to the in-process consumer; published as an Image too
        only while another node subscribes (the consumer in this process does not)."""
        header = Header(stamp=stamp, frame_id=self.p["frame_id"])
        if rgb is None:   # a bag's image (CDR bytes)
            from rclpy.serialization import deserialize_message

            from .image_conversion import to_rgb8

            try:
                msg = img if isinstance(img, Image) else deserialize_message(bytes(img), Image)
                header.frame_id = msg.header.frame_id or header.frame_id
                rgb = to_rgb8(msg)
            except Exception as exc:  # noqa: BLE001 - one bad image: the consumer reports and acks it
                self.local_images(None, header, error=f"{type(exc).__name__}: {exc}")
                return
        if self.image_pub.get_subscription_count() > 0:
            self.image_pub.publish(img if img is not None else
                                   numpy_to_image(rgb, "rgb8", stamp=stamp, frame_id=header.frame_id))
        self.local_images(rgb, header)

    def _announce_end(self) -> None:
        """Once, after the last frame (the file's end, or a stop): stages holding frames
        (markers_node's ground-plane window) finish them, so the results of every published
        frame still come out after a Ctrl-C."""
        if self.eos_pub is not None and self.frames_published and not getattr(self, "_end_announced", False) \
                and self.context.ok():
            self._end_announced = True
            self.eos_pub.publish(Header(stamp=self._last_stamp, frame_id=self.p["frame_id"]))

    def close(self) -> None:
        """run_node calls this on a stop (signal, parent gone) before destroying the node: the
        publishing thread ends at its next frame or wait slice and is joined, so no thread is
        inside a publish when rclpy and the interpreter shut down (that aborted the process:
        "terminate called without an active exception")."""
        self._stop.set()
        self.flow.wake()
        self._thread.join(5.0)
        if self._thread.is_alive():
            self.get_logger().warning("publishing thread still busy after 5 s")
            return
        if not getattr(self, "_ended", False):
            self.get_logger().info(f"stopped after {self.frames_published} frames")
        if self.eos_pub is not None and getattr(self, "_end_announced", False) and self.context.ok():
            from rclpy.duration import Duration

            self.eos_pub.wait_for_all_acked(Duration(seconds=1.0))  # delivered before we exit

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Sam4dcapError as exc:
            if self._stop.is_set():
                self._announce_end()  # stopped by a signal/parent death: not an error
            elif self.context.ok():
                self.error = str(exc)
                self.get_logger().error(self.error)
        except Exception as exc:  # noqa: BLE001 - report, then stop the node with an error
            if self.context.ok() and not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(self.error)
        finally:
            if self.src is not None:
                self.src.close()
            if not self._stop.is_set():   # the source's own end stops the node (run_node shuts down otherwise)
                if self.local_idle is not None:
                    # The in-process consumer's last frames: processed before the process ends.
                    self.local_idle(self.p["ack_timeout_s"])
                self.context.try_shutdown()

    def _run(self) -> None:
        self.flow.started = self.flow.last_publish = time.monotonic()
        if self.offline or self.ack_nodes:
            self._wait_for_pipeline()
        self._endpoints = {n: self._input_endpoints(n) for n in self.flow.acked_ns}
        t_start = time.monotonic()
        pace0 = None
        t_frame = time.monotonic()
        for stamp, img, info, t_capture, rgb in self._frames():
            self.diagnostics.processed(time.monotonic() - t_frame)   # reading + converting one frame
            if not self.context.ok() or self._stop.is_set():
                self._announce_end()
                return
            if self.offline:
                self._wait_for_acks(self.p["max_queue_frames"] - 1)
            elif not self.camera:  # realtime replay of a file/bag: pace at the capture times
                pace0 = pace0 if pace0 is not None else (time.monotonic() - t_capture)
                delay = pace0 + t_capture - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    self._announce_end()
                    return
            self.flow.published(stamp_to_ns(stamp))
            if self.local_images is not None:
                self._hand_over(stamp, img, rgb)
            else:
                self.image_pub.publish(img)
            self.info_pub.publish(info)
            self.frames_published += 1
            self.diagnostics.set(NodeDiagnostics.OK, "publishing frames", frames_published=self.frames_published)
            self._last_stamp = stamp
            t_frame = time.monotonic()
        self._announce_end()
        if self.offline:
            self._wait_for_acks(0)
            # Readers that do not ack (a plain subscriber): the reliable frames still in our
            # queue reach them before the node ends.
            from rclpy.duration import Duration

            for pub in (self.image_pub, self.info_pub):
                pub.wait_for_all_acked(Duration(seconds=self.p["ack_timeout_s"]))
        self._ended = True
        dt = time.monotonic() - t_start
        self.get_logger().info(f"source ended: {self.frames_published} frames in {dt:.1f} s "
                               f"({self.frames_published / max(dt, 1e-9):.1f} fps)")
        if self.frames_published == 0:
            self.error = f"no frames published from {self.p['source']} (check start_s/end_s)"


def main(args=None) -> int:
    # A failed source (unreadable file, downstream never ready) ends with exit code 1.
    return run_node(VideoSourceNode, args, final_error=lambda node: node.error)


if __name__ == "__main__":
    raise SystemExit(main())
