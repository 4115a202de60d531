"""`sam4dcap graph`: the node graph of graph.py as separate processes, like `ros2 launch`.

One process per node, started from the venv's console scripts with a generated ROS params
file (config file values + graph options; the same resolution the launch file makes), so each
node runs exactly as under `ros2 launch`. With a file or bag source the source exits once every
frame is acked; the runner then stops the remaining nodes front to back with SIGINT (each
flushes: the recorder closes its bag, the trial writer writes its files) and returns 0.
With a camera the graph runs until Ctrl-C/SIGTERM. A node that exits early with an error
stops the graph; its last log line is reported.
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


def write_params_file(node_name: str, params: Mapping[str, Any], path: Path) -> Path:
    lines = [f"{node_name}:", "  ros__parameters:"]
    lines += [f"    {k}: {_yaml_value(v)}" for k, v in params.items()]
    if not params:
        lines[-1] = "  ros__parameters: {}"
    path.write_text("\n".join(lines) + "\n")
    return path


def node_command(node_name: str, params: Mapping[str, Any], params_dir: Path) -> list[str]:
    """argv of one node: its console script with a params file of `params`."""
    cmd = [str(console_script(node_name))]
    if params:
        f = write_params_file(node_name, params, params_dir / f"{node_name}.params.yaml")
        cmd += ["--ros-args", "--params-file", str(f)]
    return cmd


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


def start_node(node_name: str, params: Mapping[str, Any], *, log_dir: Path, env: Mapping[str, str] | None = None
               ) -> NodeProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = node_command(node_name, params, log_dir)
    log_path = log_dir / f"{node_name}.log"
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


class GraphRun:
    """A running graph: `start()`, then `wait()` (file sources) or `stop()`."""

    def __init__(self, options: graph.GraphOptions, *, log_dir: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, drain_s: float = 1.0):
        self.options = options
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
        for name in START_ORDER:
            if name in names:
                self.procs[name] = start_node(name, self.params[name], log_dir=self.log_dir, env=self.env)
        log.info("graph started: %s (logs in %s)", ", ".join(self.procs), self.log_dir)
        return self

    def failed_node(self) -> NodeProcess | None:
        for np_ in self.procs.values():
            rc = np_.proc.poll()
            if rc is not None and rc != 0 and np_.name != "video_source_node":
                return np_
        return None

    def wait(self, timeout_s: float | None = None) -> int:
        """Until the source ends (file/bag) or a node fails; then stop all. Returns an exit code."""
        source = self.procs["video_source_node"]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        rc = None
        try:
            while True:
                src_rc = source.proc.poll()
                bad = self.failed_node()
                if bad is not None:
                    log.error("%s exited with %s:\n%s", bad.name, bad.proc.returncode, bad.tail())
                    rc = bad.proc.returncode or 1
                    break
                if src_rc is not None:
                    if src_rc != 0:
                        log.error("video_source_node exited with %s:\n%s", src_rc, source.tail())
                    rc = src_rc
                    break
                if deadline is not None and time.monotonic() > deadline:
                    log.error("graph did not finish within %.0f s", timeout_s)
                    rc = 1
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            log.info("interrupted: stopping the graph")
            rc = 0
        time.sleep(self.drain_s)  # let the last frame's results reach the writers
        stop_rc = self.stop()
        return rc or stop_rc

    def stop(self) -> int:
        rc = 0
        for name in STOP_ORDER:
            if name in self.procs:
                r = stop_node(self.procs[name])
                if r != 0:
                    log.error("%s exited with %s:\n%s", name, r, self.procs[name].tail())
                    rc = rc or r
        return rc


def run_graph(options: graph.GraphOptions, *, log_dir=None, timeout_s: float | None = None) -> int:
    run = GraphRun(options, log_dir=log_dir)
    run.start()
    return run.wait(timeout_s)
