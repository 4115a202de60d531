"""`sam4dcap graph`: the node graph of graph.py as separate processes, like `ros2 launch`.

One process per node, started from the venv's console scripts with a generated ROS params
file (config file values + graph options; the same resolution the launch file makes), so each
node runs exactly as under `ros2 launch`. With a file or bag source the source exits once every
frame is acked; the runner then stops the remaining nodes front to back with SIGINT (each
flushes: the recorder closes its bag, the trial writer writes its files) and returns 0.
With a camera the graph runs until Ctrl-C, SIGTERM or SIGHUP (a closed terminal): the source
is stopped first, then the runner drains: it waits until every frame the source published has
been acked by every stage (bounded by `drain_timeout_s`), says how many got no result, and
stops the rest; exit code 0. A node that dies (an error exit or a signal such as SIGKILL)
stops the graph with exit code 1 and one line naming it. Nodes die with the runner: each
asks Linux for SIGTERM when its parent dies (node_plumbing.run_node), so a SIGKILLed runner
leaves no orphans and the recorder still closes its bag.
`namespace`: every node runs in that ROS namespace (`__ns`), so its topics are
/<namespace>/camera/image_raw, ... and graphs in different namespaces share a ROS domain.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError

from . import graph

log = logging.getLogger(__name__)

# After the source stops, the longest wait for the stages to finish the frames it published [s].
DRAIN_TIMEOUT_S = 30.0

# Downstream first, so each subscriber exists before its publisher's first message.
START_ORDER = ("recorder_node", "visualization_node", "trial_writer_node", "id_node", "ik_node",
               "markers_node", "body_estimator_node", "video_source_node")
# Upstream first on shutdown: each stage gets to process what is still in flight.
STOP_ORDER = ("video_source_node", "body_estimator_node", "markers_node", "ik_node", "id_node",
              "trial_writer_node", "visualization_node", "recorder_node")


def bin_dir() -> Path:
    return Path(sys.executable).parent


def console_script(name: str) -> Path:
    return bin_dir() / name


def node_available(spec: graph.NodeSpec) -> bool:
    """The node's console script is installed and its module exists (biomech nodes may be absent)."""
    module = f"{spec.package}.nodes.{spec.name}"
    try:
        return console_script(spec.name).is_file() and importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def ros_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment every node process gets: loopback discovery, our Fast DDS profile, config."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    root = Path(__file__).resolve().parents[3]
    profile = root / "config" / "fastdds_profiles.xml"
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env and profile.is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _yaml_value(v: Any) -> str:
    import json

    # JSON scalars/lists are valid YAML with unambiguous types (strings always quoted).
    return json.dumps(v)


def write_params_file(sections: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """A ROS params file: one section per node name of `sections` (node name -> params)."""
    lines = []
    for node_name, params in sections.items():
        lines += [f"{node_name}:", "  ros__parameters:"]
        lines += [f"    {k}: {_yaml_value(v)}" for k, v in params.items()]
        if not params:
            lines[-1] = "  ros__parameters: {}"
    path.write_text("\n".join(lines) + "\n")
    return path


def node_command(node_name: str, params: Mapping[str, Any], params_dir: Path, *, namespace: str = "",
                 executable: str | None = None, sections: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """argv of one node: its console script with a params file of `params`, in `namespace`;
    or of a process running several nodes (`executable`, `sections`: node name -> params)."""
    cmd = [str(console_script(executable or node_name))]
    ros_args = []
    if namespace:
        ros_args += ["-r", f"__ns:={namespace}"]
    # Always a file (also when empty): the command line then names the run's folder, which is
    # how a user (and the tests) find a graph's processes. Keyed by the fully qualified name: a
    # plain node name would not match in a namespace.
    sections = sections if sections is not None else {node_name: params}
    f = write_params_file({(f"{namespace}/{n}" if namespace else n): p for n, p in sections.items()},
                          params_dir / f"{executable or node_name}.params.yaml")
    ros_args += ["--params-file", str(f)]
    return cmd + ["--ros-args", *ros_args]


@dataclass
class NodeProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def start_node(node_name: str, params: Mapping[str, Any], *, log_dir: Path, env: Mapping[str, str] | None = None,
               namespace: str = "", executable: str | None = None,
               sections: Mapping[str, Mapping[str, Any]] | None = None) -> NodeProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = node_command(node_name, params, log_dir, namespace=namespace, executable=executable, sections=sections)
    log_path = log_dir / f"{executable or node_name}.log"
    out = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ros_env(env),
                            start_new_session=True)  # Ctrl-C goes to the runner, which stops nodes in order
    out.close()
    return NodeProcess(node_name, proc, log_path)


def stop_node(np_: NodeProcess, *, timeout_s: float = 20.0) -> int:
    """SIGINT, then SIGTERM, then SIGKILL; returns the exit code (0 for a clean signal stop)."""
    p = np_.proc
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if p.poll() is not None:
            break
        p.send_signal(sig)
        try:
            p.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop on %s", np_.name, sig.name)
    rc = p.wait()
    return 0 if rc in (0, -signal.SIGINT, -signal.SIGTERM, 130, 143) else rc


def describe_exit(rc: int) -> str:
    """"exited with code 2" / "was killed by SIGKILL" for a Popen return code."""
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


class DrainWatch:
    """The runner's own probe node (in the graph's namespace): the capture stamps the source
    published (its CameraInfo, one per frame) and each stage's ack watermark (PROGRESS_TOPIC),
    so after a stop the runner knows when every published frame has its results and how many
    never got them."""

    def __init__(self, ack_nodes: list[str], namespace: str = ""):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo
        from std_msgs.msg import Header

        from sam4dcap_biomech.ros.msg_conversion import stamp_to_sec
        from sam4dcap_biomech.ros.node_plumbing import DEEP_QOS
        from sam4dcap_biomech.ros.probe import BackgroundNode
        from sam4dcap_biomech.ros.topics import HELD_SUFFIX, relative_topic

        self.bg = BackgroundNode("sam4dcap_graph_runner", namespace=namespace)
        self._to_s = stamp_to_sec
        self.published: set[float] = set()
        self.acked = {n: float("-inf") for n in ack_nodes}

        def on_info(m):
            self.published.add(stamp_to_sec(m.header.stamp))

        def on_ack(m):
            if m.frame_id in self.acked and not m.frame_id.endswith(HELD_SUFFIX):
                self.acked[m.frame_id] = max(self.acked[m.frame_id], stamp_to_sec(m.stamp))

        # A best-effort reader matches reliable (file) and best-effort (camera) writers alike.
        info_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.bg.node.create_subscription(CameraInfo, relative_topic(graph.CAMERA_INFO_TOPIC), on_info, info_qos)
        self.bg.node.create_subscription(Header, relative_topic(graph.PROGRESS_TOPIC), on_ack, DEEP_QOS)

    def unfinished(self) -> int:
        """Published frames not yet acked by every stage (acks are watermarks)."""
        done = min(self.acked.values(), default=float("inf"))
        return sum(t > done + 1e-6 for t in self.published)

    def close(self) -> None:
        self.bg.close()


class GraphRun:
    """A running graph: `start()`, then `wait()` (file sources) or `stop()`."""

    def __init__(self, options: graph.GraphOptions, *, log_dir: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, drain_s: float = 0.3,
                 drain_timeout_s: float = DRAIN_TIMEOUT_S, watch: bool = True):
        self.options = options
        try:
            self.namespace = graph.normalize_namespace(options.namespace)
        except ValueError as exc:
            raise Sam4dcapError(f"--namespace: {exc}") from None
        self.drain_timeout_s = drain_timeout_s
        self.watch = watch   # the drain probe (rclpy in this process)
        self.watcher: DrainWatch | None = None
        self.lost_frames = 0
        self._reported: set[str] = set()
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="sam4dcap-graph-"))
        self.env = env
        self.drain_s = drain_s
        available = {n.name for n in graph.NODES if node_available(n)}
        self.nodes = graph.selected_nodes(options, available=available)
        missing = [n.name for n in graph.NODES if n.name not in available]
        if missing:
            log.warning("nodes not installed, graph runs without them: %s", ", ".join(missing))
        self.params = graph.node_overrides(options, self.nodes)
        config = load_config()
        for name, params in options.extra.items():  # a misspelt node would otherwise be ignored
            if name not in config.nodes:
                guess = difflib.get_close_matches(name, list(config.nodes), n=1)
                raise Sam4dcapError(f"--set {name}.{next(iter(params), 'PARAM')}: no node {name!r}"
                                    + (f" (did you mean {guess[0]}?)" if guess else "")
                                    + f"; nodes: {', '.join(config.nodes)}")
            config.params(name, params)
        for name, params in self.params.items():  # refuse bad values before starting anything
            checked = config.params(name, params)
            # Coerced to the parameter's type: an int given for a float parameter reaches the node as a float.
            self.params[name] = {k: checked[k] for k in params}
        self.procs: dict[str, NodeProcess] = {}

    def start(self) -> "GraphRun":
        if not self.options.source:
            raise Sam4dcapError("no source: give --video PATH (file, image folder or bag) or --camera N")
        names = {n.name for n in self.nodes}
        if self.watch:
            self.watcher = DrainWatch([n.name for n in self.nodes if n.acks], self.namespace)
        together = set(graph.PERCEPTION_PROCESS_NODES) if self.options.one_process_perception else set()
        for name in START_ORDER:
            if name not in names or name in self.procs:
                continue
            if name in together:
                # One process for the image path (nodes/perception_process.py), started in the
                # place of the first of its nodes in the start order; listed under each of them.
                members = [n for n in graph.PERCEPTION_PROCESS_NODES if n in names]
                np_ = start_node(name, {}, log_dir=self.log_dir, env=self.env, namespace=self.namespace,
                                 executable=graph.PERCEPTION_PROCESS, sections={n: self.params[n] for n in members})
                for n in members:
                    self.procs[n] = np_
                continue
            self.procs[name] = start_node(name, self.params[name], log_dir=self.log_dir, env=self.env,
                                          namespace=self.namespace)
        log.info("graph started: %s (logs in %s)", ", ".join(self.procs), self.log_dir)
        return self

    def failed_node(self) -> NodeProcess | None:
        source = self.procs.get("video_source_node")
        for np_ in self.procs.values():
            rc = np_.proc.poll()
            if rc is not None and rc != 0 and np_ is not source:
                return np_
        return None

    def _died(self, np_: NodeProcess, rc: int) -> None:
        """One line naming the node that died (its log for the details)."""
        if np_.name in self._reported:
            return
        self._reported.add(np_.name)
        log.error("%s %s; graph stopped (its log: %s)", np_.name, describe_exit(rc), np_.log_path)
        log.debug("%s log tail:\n%s", np_.name, np_.tail())

    def wait(self, timeout_s: float | None = None) -> int:
        """Until the source ends (file/bag), a node dies, the timeout passes or Ctrl-C/SIGTERM/
        SIGHUP (KeyboardInterrupt); then drain and stop all. Returns the exit code: 0 for a
        normal end or a stop by the user, 1 when a node died or the graph timed out."""
        source = self.procs["video_source_node"]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        rc = None
        try:
            while True:
                src_rc = source.proc.poll()
                bad = self.failed_node()
                if bad is not None:
                    self._died(bad, bad.proc.returncode)
                    rc = 1
                    break
                if src_rc is not None:
                    if src_rc != 0:
                        self._died(source, src_rc)
                    rc = 0 if src_rc == 0 else 1
                    break
                if deadline is not None and time.monotonic() > deadline:
                    log.error("graph did not finish within %.0f s", timeout_s)
                    rc = 1
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            log.info("interrupted: stopping the source, then finishing the frames it published")
            rc = 0
        try:
            stop_rc = self.stop()
        except KeyboardInterrupt:   # Ctrl-C while stopping: stop now
            log.warning("interrupted while stopping: stopping the nodes without waiting for their results")
            stop_rc = self.stop(drain=False)
        return rc or stop_rc

    def drain(self) -> int:
        """After the source stopped: until every frame it published is acked by every stage or
        `drain_timeout_s`; returns (and logs) the number of frames left without results."""
        if self.watcher is None:
            time.sleep(self.drain_s)
            return 0
        deadline = time.monotonic() + self.drain_timeout_s
        while self.watcher.unfinished() and time.monotonic() < deadline:
            source = self.procs.get("video_source_node")
            if any(np_.proc.poll() is not None for np_ in self.procs.values() if np_ is not source):
                break   # a stage is gone: its frames will never be acked
            time.sleep(0.05)
        lost = self.watcher.unfinished()
        total = len(self.watcher.published)
        if lost:
            log.warning("%d of %d published frames got no result (not acked by every stage within %.0f s)",
                        lost, total, self.drain_timeout_s)
        else:
            log.info("all %d published frames have their results", total)
        time.sleep(self.drain_s)   # let the last results reach the writers (they do not ack)
        return lost

    def stop(self, *, drain: bool = True) -> int:
        """Stop the source, drain, stop the rest upstream first. 0, or 1 with one line per node
        that did not stop cleanly."""
        rc = 0
        stopped: set[int] = set()
        try:
            for name in STOP_ORDER:
                if name not in self.procs or id(self.procs[name]) in stopped:
                    continue
                stopped.add(id(self.procs[name]))
                r = stop_node(self.procs[name])
                if r != 0:
                    self._died(self.procs[name], r)
                    rc = 1
                if name == "video_source_node" and drain:
                    self.lost_frames = self.drain()
        finally:
            if self.watcher is not None:
                self.watcher.close()
                self.watcher = None
        return rc


def run_graph(options: graph.GraphOptions, *, log_dir=None, timeout_s: float | None = None) -> int:
    run = GraphRun(options, log_dir=log_dir)
    run.start()
    return run.wait(timeout_s)
