"""What every sam4dcap node shares: QoS profiles (named once, per QoS kind of topics.py),
parameters declared from config/sam4dcap.yaml, `run_node`, frame acks, readiness and
`NodeDiagnostics`. Imports rclpy: nodes only (names: topics.py; conversions: msg_conversion.py)."""

from __future__ import annotations

import os
from typing import Any, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from ..config import ParamSpec, load_config
from ..errors import Sam4dcapError
from ..process_lifetime import die_with_parent
from .shm_recovery import release_stale_shm_ports
from .topics import DIAGNOSTICS_TOPIC, HELD_SUFFIX, PROGRESS_TOPIC, READY_TOPIC, relative_topic

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


def _descriptor(spec: ParamSpec, *, read_only: bool) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=spec.name, description=spec.description, read_only=read_only)
    constraints = []
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    if read_only:
        constraints.append(READ_ONLY_REASON)
    desc.additional_constraints = "; ".join(constraints)
    if spec.min is not None and spec.max is not None:
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    return desc


# Shown by `ros2 param describe`; rclpy refuses `set` of a read-only parameter with
# "Trying to set a read-only parameter: NAME".
READ_ONLY_REASON = "read-only: fixed when the node starts (give it in the params file / launch and restart)"


def declare_parameters(node: Node, section: str, overrides: Mapping[str, Any] | None = None, *,
                       runtime: tuple[str, ...] = (), on_change=None) -> dict[str, Any]:
    """Declare every parameter of `section` from the config file, with descriptions and ranges.

    Values given on the command line/launch file override the file; all are validated with
    the config's rules, and a bad one raises Sam4dcapError naming the parameter (the node's
    main() turns that into a one-line refusal to start). Returns the validated values as a
    dict the node keeps reading.

    A parameter is either applied while running or refused: those named in `runtime` can be
    set at run time (`ros2 param set`); a valid new value is written into the returned dict
    (the node reads it at its next use) and `on_change(name, value)` is called for nodes that
    must rebuild something. Every other parameter is declared read_only, so a set is refused
    with a reason instead of being accepted and ignored.
    """
    config = load_config()
    specs = config.specs(section)
    unknown = set(runtime) - set(specs)
    if unknown:
        raise ValueError(f"runtime parameters not in the config section {section}: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        default = overrides.get(name, spec.default) if overrides else spec.default
        try:
            param = node.declare_parameter(name, default, _descriptor(spec, read_only=name not in runtime))
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

    def _after_set(params):
        for p in params:
            if p.name in specs and p.name in runtime:
                values[p.name] = specs[p.name].validate(p.value, node=node.get_name())
                node.get_logger().info(f"parameter {p.name} = {values[p.name]!r} (applied)")
                if on_change is not None:
                    on_change(p.name, values[p.name])

    node.add_on_set_parameters_callback(_on_set)
    node.add_post_set_parameters_callback(_after_set)
    return values


class CoreReport:
    """The `report(level, text, throttle_key=None)` callable a ROS-free core class logs through
    (ik_stream.IKStream, marker_stream.MarkerStream): the node's logger, with lines that may
    repeat every frame (those with a `throttle_key`) at most every `period_s` per key."""

    def __init__(self, node: Node, period_s: float = 5.0):
        self._logger = node.get_logger()
        self._period_s = period_s
        self._last: dict[str, float] = {}

    def __call__(self, level: str, text: str, throttle_key: str | None = None) -> None:
        import time

        if throttle_key is not None:
            now = time.monotonic()
            if now - self._last.get(throttle_key, -float("inf")) < self._period_s:
                return
            self._last[throttle_key] = now
        # One call site per severity: rclpy refuses a call site whose severity changes.
        if level == "info":
            self._logger.info(text)
        elif level == "warning":
            self._logger.warning(text)
        else:
            self._logger.error(text)


# Signals that stop a node cleanly: Ctrl-C, `kill`/launch's SIGTERM, a closed terminal or SSH
# session (SIGHUP).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
# How often the spin loop looks at the stop flag and the parent process [s].
SPIN_PERIOD_S = 0.1


class ShutdownRequest:
    """Why a node stops: a stop signal, its parent process gone (orphan), or its own end
    (e.g. a file source finished). Set from Python signal handlers, read by the spin loop."""

    def __init__(self):
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


# On a stop, messages already received are still handled for at most this long [s] (a writer
# gets the last results that were on their way).
FINISH_QUEUED_S = 0.5


def _finish_queued_callbacks(executor) -> None:
    """Run callbacks that are ready until none is (a spin that waits idles) or FINISH_QUEUED_S."""
    import time

    import rclpy

    deadline = time.monotonic() + FINISH_QUEUED_S
    while rclpy.ok() and time.monotonic() < deadline:
        t0 = time.monotonic()
        executor.spin_once(timeout_sec=0.02)
        if time.monotonic() - t0 >= 0.018:   # waited the whole timeout: nothing was ready
            return


def run_node(node_factory, args=None, *, final_error=None) -> int:
    """Standard main(): init, build, spin until stopped, close, then end the process.

    Stops cleanly within SPIN_PERIOD_S + the node's close() on SIGINT, SIGTERM or SIGHUP, when
    the parent process dies (a killed runner or launch: no orphans), or when the node shuts its
    own context down (a finished file source). rclpy's own signal handlers are off: they shut
    the context down under a running callback (seen as RCLError/RuntimeError at stop and as a
    C++ abort of a publishing thread). Instead the flag is set, the spin loop ends, then the
    node's `close()` runs while the context is still valid (threads joined, bag closed, trial
    written), then the node is destroyed and rclpy shut down.
    A Sam4dcapError while building the node (bad parameter) prints one line and exits 2;
    `final_error(node)` may name a failure found at the end (one line, exit 1).

    The process ends with os._exit once everything is closed: interpreter finalization then
    destroyed leftover DDS/MediaPipe objects and sometimes hung there (seen under ros2 launch:
    markers_node and body_estimator_node stuck after "stopping", then SIGTERMed with -15).
    Nothing is left to flush by then (stdout/stderr are flushed first).
    """
    import signal
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # A native crash (SIGSEGV in DDS, OpenCV or MediaPipe) leaves the Python stacks in the node's
    # log instead of an empty one (seen once: video_source_node killed by SIGSEGV at start-up).
    import faulthandler

    faulthandler.enable()
    ensure_localhost_discovery()
    stop = ShutdownRequest()
    parent = die_with_parent()

    def on_signal(signum, frame):
        stop.set(signal.Signals(signum).name)

    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), on_signal)
    # A restart after a crash: take over the dead process's shared-memory ports (shm_recovery.py).
    release_stale_shm_ports()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    nodes: list = []
    executor = None
    profile = None
    profile_name = "node"
    code = 0
    try:
        # One node, or several in this process (perception_process): the first one names the
        # process in logs and in final_error, they are closed in the order given.
        made = node_factory()
        nodes = list(made) if isinstance(made, (list, tuple)) else [made]
        node = nodes[0]
        executor = SingleThreadedExecutor()
        for n in nodes:
            executor.add_node(n)
        profile = _start_profile()
        profile_name = node.get_name()   # taken now: a finished file source has destroyed its handle by the end
        while not stop and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            if os.getppid() != parent:
                stop.set("parent process gone")
        _finish_queued_callbacks(executor)
    except Sam4dcapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:   # a bug: the traceback, then the same clean end (exit 1)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        if stop and node is not None:
            node.get_logger().info(f"stopping ({stop.reason})")
        for n in nodes:
            close = getattr(n, "close", None)
            if close is not None:
                close()
        for n in nodes:
            _deliver_pending(n)
        if executor is not None:
            executor.shutdown()
        if profile is not None:
            _dump_profile(profile, profile_name)
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    message = final_error(node) if final_error is not None and node is not None and not code else None
    if message:
        print(f"error: {message}", file=sys.stderr)
        code = 1
    _end_process(code)


def _start_profile():
    """SAM4DCAP_PROFILE_DIR=folder (developers): cProfile of the node's spin thread (its
    callbacks), written there as <node>.prof at the end (the process ends with os._exit)."""
    if not os.environ.get("SAM4DCAP_PROFILE_DIR"):
        return None
    import cProfile

    profile = cProfile.Profile()
    profile.enable()
    return profile


def _dump_profile(profile, name: str) -> None:
    profile.disable()
    folder = os.environ["SAM4DCAP_PROFILE_DIR"]
    os.makedirs(folder, exist_ok=True)
    profile.dump_stats(os.path.join(folder, f"{name}.prof"))


# At the end, reliable messages already published get this long to reach their readers [s]
# (the process then ends at once: os._exit).
DELIVER_PENDING_S = 1.0


def _deliver_pending(node) -> None:
    import time

    import rclpy
    from rclpy.duration import Duration

    if not rclpy.ok():
        return
    deadline = time.monotonic() + DELIVER_PENDING_S
    for pub in list(node.publishers):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            pub.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _end_process(code: int) -> None:
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# --- Offline flow control and publisher-matched subscriptions (see sam4dcap_perception.graph) ---

# Reliable and deep: small per-frame messages a stage may emit in bursts (markers after the
# ground-plane window, frame acks).
DEEP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


LIVE_IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                            reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def qos_profile(kind: str, *, offline: bool = True) -> QoSProfile:
    """The profile of a QoS kind of topics.py (image | results | deep | latched); `offline`
    only matters for images (file/bag source: reliable and deep; camera: sensor data)."""
    profiles = {"results": RESULTS_QOS, "deep": DEEP_QOS, "latched": LATCHED_QOS}
    if kind == "image":
        return image_qos(offline)
    if kind not in profiles:
        raise ValueError(f"unknown QoS kind {kind!r} (one of image, results, deep, latched)")
    return profiles[kind]


class FrameAcks:
    """Publishes this node's frame acks on PROGRESS_TOPIC: call `ack(stamp)` after each input."""

    def __init__(self, node: Node):
        from std_msgs.msg import Header

        self._header = Header
        self._name = node.get_name()
        self._pub = node.create_publisher(Header, relative_topic(PROGRESS_TOPIC), DEEP_QOS)

    def ack(self, stamp) -> None:
        self._pub.publish(self._header(stamp=stamp, frame_id=self._name))

    def hold(self, stamp) -> None:
        """This node holds the frames up to `stamp` back (acked, not yet passed on): a source
        must not count them as in flight to the nodes downstream of it."""
        self._pub.publish(self._header(stamp=stamp, frame_id=self._name + HELD_SUFFIX))


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
        infos = node.get_publishers_info_by_topic(node.resolve_topic_name(relative_topic(topic)))
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
        state["sub"] = node.create_subscription(msg_type, relative_topic(topic), callback, qos, raw=raw)
        timer.cancel()
        node.get_logger().info(f"subscribed to {topic} ({'reliable' if reliable else 'best effort'})")
        if on_subscribed is not None:
            on_subscribed(state["sub"])

    timer = node.create_timer(poll_s, try_subscribe)
    return timer


# The announcement is repeated this often: latched QoS alone lost it twice in ~100 starts (a
# late-matched reader), and the source then waited for startup_timeout_s for nothing [s].
READY_REPEAT_S = 1.0


def announce_ready(node: Node, topics=()):
    """Publish "<node name> <topic> <topic>..." on READY_TOPIC (latched: late subscribers get it
    too, and repeated every READY_REPEAT_S so a lost sample costs one period): the node's lazily
    made subscriptions exist. The source then also waits until its own publishers have matched
    them (DDS discovery is per participant)."""
    from std_msgs.msg import String

    pub = node.create_publisher(String, relative_topic(READY_TOPIC), LATCHED_QOS)
    msg = String(data=" ".join([node.get_name(), *topics]))
    pub.publish(msg)
    node.create_timer(READY_REPEAT_S, lambda: pub.publish(msg))   # the node keeps its timers
    node.get_logger().info("ready: all input subscriptions exist")
    return pub


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
