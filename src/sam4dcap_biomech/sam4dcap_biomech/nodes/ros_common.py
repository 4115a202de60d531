"""What every sam4dcap node shares: QoS profiles (named once), parameters declared from
config/sam4dcap.yaml, and capture-stamp conversion. Imports rclpy: nodes only."""

from __future__ import annotations

import os
from typing import Any, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from ..config import ParamSpec, load_config
from ..errors import Sam4dcapError

# Images and raw detections: newest wins, late samples are useless (REP-2003 sensor data).
# Offline (file) sources use RESULTS for images too, so no frame is dropped.
SENSOR_QOS = qos_profile_sensor_data
# Markers, kinematics, kinetics: every sample matters to controllers and recorders.
RESULTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Model/robot descriptions, static transforms: late joiners get the last one (latched).
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def image_qos(offline: bool) -> QoSProfile:
    """Reliable + deep queue for file sources (no silent drops), sensor-data for live cameras."""
    if offline:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=30,
                          reliability=ReliabilityPolicy.RELIABLE)
    return SENSOR_QOS


def ensure_localhost_discovery() -> None:
    """No DDS traffic may leave loopback on these machines; default it for every node."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=spec.name, description=spec.description)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.min is not None and spec.max is not None:
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    return desc


def declare_parameters(node: Node, section: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Declare every parameter of `section` from the config file, with descriptions and ranges.

    Values given on the command line/launch file override the file; all are validated with
    the config's rules, and a bad one raises Sam4dcapError naming the parameter (the node's
    main() turns that into a one-line refusal to start). Returns the validated values.
    """
    config = load_config()
    specs = config.specs(section)
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        default = overrides.get(name, spec.default) if overrides else spec.default
        try:
            param = node.declare_parameter(name, default, _descriptor(spec))
        except Exception as exc:  # rclpy raises on out-of-range/ wrong-type overrides
            raise Sam4dcapError(f"parameter {node.get_name()}.{name}: {exc}") from None
        values[name] = spec.validate(param.value, node=node.get_name())

    def _on_set(params):
        for p in params:
            if p.name in specs:
                try:
                    specs[p.name].validate(p.value, node=node.get_name())
                except Sam4dcapError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    return values


def stamp_to_sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float):
    from builtin_interfaces.msg import Time

    sec = int(t // 1)
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def run_node(node_factory, args=None) -> int:
    """Standard main(): init, build, spin, shut down cleanly on Ctrl-C / SIGTERM.

    A Sam4dcapError while building the node (bad parameter) prints one line and returns 2.
    """
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException

    ensure_localhost_discovery()
    # A restart after a crash: take over the dead process's shared-memory ports (shm_recovery.py).
    from .shm_recovery import release_stale_shm_ports
    release_stale_shm_ports()
    rclpy.init(args=args)
    node = None
    try:
        node = node_factory()
        rclpy.spin(node)
    except Sam4dcapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT/SIGTERM shut the context down under a running spin: rclpy may then raise
        # RCLError ("context is not valid") instead of ExternalShutdownException. Clean stop.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


# --- Offline flow control and publisher-matched subscriptions (see sam4dcap_perception.graph) ---

# Frame acks: each pipeline stage publishes std_msgs/Header(stamp=capture stamp of the input it
# consumed, frame_id=its node name) after every input, output or not. File/bag sources wait for
# them so no frame is dropped (sam4dcap_perception.graph.PROGRESS_TOPIC is the same name).
PROGRESS_TOPIC = "/sam4dcap/progress"
# Reliable and deep: small per-frame messages a stage may emit in bursts (markers after the
# ground-plane window, frame acks).
DEEP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


LIVE_IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                            reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


class FrameAcks:
    """Publishes this node's frame acks on PROGRESS_TOPIC: call `ack(stamp)` after each input."""

    def __init__(self, node: Node):
        from std_msgs.msg import Header

        self._header = Header
        self._name = node.get_name()
        self._pub = node.create_publisher(Header, PROGRESS_TOPIC, DEEP_QOS)

    def ack(self, stamp) -> None:
        self._pub.publish(self._header(stamp=stamp, frame_id=self._name))

    def hold(self, stamp) -> None:
        """This node holds the frames up to `stamp` back (acked, not yet passed on): a source
        must not count them as in flight to the nodes downstream of it."""
        self._pub.publish(self._header(stamp=stamp, frame_id=self._name + HELD_SUFFIX))


# frame_id suffix of a "frames held back" notice on PROGRESS_TOPIC (FrameAcks.hold).
HELD_SUFFIX = "/held"


def subscribe_like_publisher(node: Node, msg_type, topic: str, callback, *, raw: bool = False,
                             poll_s: float = 0.1, on_subscribed=None, reliable_depth: int = 30):
    """Subscribe to `topic` with the reliability its publisher offers, once one exists.

    Images: a live camera publishes best effort (a reliable reader would not match it), a file
    source publishes reliable with a deep queue (a best-effort reader with sensor-data depth
    would drop frames). Polls the graph every `poll_s` until a publisher appears; returns the
    timer (cancelled once subscribed). `on_subscribed(subscription)` is called then.
    `reliable_depth`: queue of a reliable subscription (images: the source's in-flight limit;
    small per-frame messages such as CameraInfo: deep, they are not flow-controlled).
    """
    state = {}

    def try_subscribe():
        if "sub" in state:
            return
        infos = node.get_publishers_info_by_topic(topic)
        if not infos:
            return
        reliable = any(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        # Live (best effort): keep only the newest frame, so a busy node always works on the
        # latest image instead of a queue of stale ones (latency over completeness).
        if reliable:  # (history depth is not part of DDS discovery: the caller says how deep)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=reliable_depth,
                             reliability=ReliabilityPolicy.RELIABLE)
        else:
            qos = LIVE_IMAGE_QOS
        state["sub"] = node.create_subscription(msg_type, topic, callback, qos, raw=raw)
        timer.cancel()
        node.get_logger().info(f"subscribed to {topic} ({'reliable' if reliable else 'best effort'})")
        if on_subscribed is not None:
            on_subscribed(state["sub"])

    timer = node.create_timer(poll_s, try_subscribe)
    return timer


# Readiness: a node whose input subscriptions are made lazily (subscribe_like_publisher)
# announces its name here, latched, once they all exist; file sources wait for it.
READY_TOPIC = "/sam4dcap/ready"


def announce_ready(node: Node, topics=()):
    """Publish "<node name> <topic> <topic>..." on READY_TOPIC (latched: late subscribers get it
    too): the node's lazily made subscriptions exist. The source then also waits until its own
    publishers have matched them (DDS discovery is per participant)."""
    from std_msgs.msg import String

    pub = node.create_publisher(String, READY_TOPIC, LATCHED_QOS)
    pub.publish(String(data=" ".join([node.get_name(), *topics])))
    node.get_logger().info("ready: all input subscriptions exist")
    return pub


class BackgroundNode:
    """A node in its own rclpy context, spun by a daemon thread: the probe that tests and
    benchmarks use to watch a running graph from their own process. Add subscriptions to
    `.node` at any time; `close()` stops the thread and shuts the context down."""

    def __init__(self, name: str, *, spin_period_s: float = 0.02):
        import threading

        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._period_s = spin_period_s
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop:
            self.executor.spin_once(timeout_sec=self._period_s)

    def close(self) -> None:
        import rclpy

        self._stop = True
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


# Node health (REP-107 style aggregators and rqt_runtime_monitor read this topic).
DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class NodeDiagnostics:
    """This node's health on DIAGNOSTICS_TOPIC (diagnostic_msgs/DiagnosticArray), once every
    `period_s` and at once when the level changes: one DiagnosticStatus named
    "sam4dcap/<node>" with level OK / WARN / ERROR, a message, and key/values (e.g. tracking
    state, fit residual) plus the processing time per input (last and mean over the period [ms]).

    The node calls `set(level, message, **values)` when its state changes and
    `processed(seconds)` after each input it handled.
    """

    OK, WARN, ERROR = 0, 1, 2

    def __init__(self, node: Node, *, period_s: float = 1.0):
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        self._types = DiagnosticArray, DiagnosticStatus, KeyValue
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self.level = self.OK
        self.message = "running"
        self.values: dict[str, str] = {}
        self._count = 0
        self._period_seconds: list[float] = []
        self._last_ms = float("nan")
        node.create_timer(period_s, self.publish)

    def set(self, level: int, message: str, **values) -> None:
        changed = level != self.level
        self.level, self.message = int(level), str(message)
        self.values.update({k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in values.items()})
        if changed:
            self.publish()

    def processed(self, seconds: float) -> None:
        self._count += 1
        self._last_ms = 1000.0 * float(seconds)
        self._period_seconds.append(float(seconds))

    def publish(self) -> None:
        DiagnosticArray, DiagnosticStatus, KeyValue = self._types
        mean_ms = 1000.0 * sum(self._period_seconds) / len(self._period_seconds) if self._period_seconds else float("nan")
        values = dict(self.values, inputs_processed=str(self._count),
                      processing_time_ms_last=f"{self._last_ms:.2f}", processing_time_ms_mean=f"{mean_ms:.2f}")
        self._period_seconds = []
        status = DiagnosticStatus(level=bytes([self.level]), name=f"sam4dcap/{self._node.get_name()}",
                                  message=self.message, hardware_id="sam4dcap",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        try:
            self._pub.publish(msg)
        except RuntimeError:  # the context is shutting down: health no longer matters
            pass
