"""Shared by the biomech node tests: start console-script nodes in their own processes, and a
test-side rclpy node (own context) to publish inputs, collect outputs and call services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor

from sam4dcap_biomech.ros.msg_conversion import sec_to_stamp
from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS

BIN = Path(sys.executable).parent


def ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def child_env() -> dict:
    """os.environ for a node process. `import opensim` overwrites LD_LIBRARY_PATH (its folder +
    PATH), which hides the ROS wheels' libraries from children; dropping the bootstrap flag makes
    the child's ros_wheels_bootstrapper rebuild the library path."""
    env = os.environ.copy()
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    # A node that hangs gets SIGABRT before SIGKILL: faulthandler prints every thread's stack.
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def start_node(script: str, params: dict | None = None, *, cwd=None, log_path=None) -> subprocess.Popen:
    """Start a node's console script with `-p name:=value` overrides; stderr to `log_path`."""
    args = [str(BIN / script), "--ros-args"]
    for name, value in (params or {}).items():
        args += ["-p", f"{name}:={ros_value(value)}"]
    stderr = open(log_path, "w") if log_path else subprocess.PIPE
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, text=True, cwd=cwd,
                            env=child_env())
    proc.log_path = log_path
    return proc


def stop_node(proc: subprocess.Popen, *, sig=signal.SIGINT, timeout_s: float = 30.0) -> int:
    """Signal a node and wait; if it does not exit, SIGABRT (stack dump into its log), then kill.
    Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return proc.returncode


def node_log(proc) -> str:
    path = getattr(proc, "log_path", None)
    return Path(path).read_text() if path and Path(path).exists() else ""


class Harness:
    """A test-side node in its own context; spin_until() drives its callbacks."""

    def __init__(self, name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def collect(self, msg_type, topic: str, qos=RESULTS_QOS) -> list:
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def spin_until(self, condition, timeout_s: float, *, procs=()) -> bool:
        """Spin until condition() is true; False on timeout. Fails fast if a node process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"node exited with {proc.returncode}:\n{node_log(proc)[-3000:]}")
            self.executor.spin_once(timeout_sec=0.02)
        return bool(condition())

    def wait_for_subscriber(self, publisher, timeout_s: float = 30.0, *, procs=()) -> None:
        assert self.spin_until(lambda: publisher.get_subscription_count() > 0, timeout_s, procs=procs), \
            f"no subscriber on {publisher.topic_name} after {timeout_s} s"

    def call(self, client, request, timeout_s: float = 60.0, *, procs=()):
        assert self.spin_until(client.service_is_ready, 30.0, procs=procs), f"service {client.srv_name} not ready"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout_s, procs=procs), f"service {client.srv_name} timed out"
        return future.result()


def markers_msg(time_s: float, names, positions, *, person_id: int = 1, marker_set: str = "blazepose33"):
    """VirtualMarkers in the world frame; NaN rows = missing (confidence 0)."""
    from geometry_msgs.msg import Point

    from sam4dcap_msgs.msg import VirtualMarkers

    positions = np.asarray(positions, dtype=float)
    msg = VirtualMarkers()
    msg.header.stamp = sec_to_stamp(time_s)
    msg.header.frame_id = "world"
    msg.person_id = person_id
    msg.marker_set = marker_set
    msg.names = list(names)
    msg.positions = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in positions]
    msg.confidence = [0.0 if np.isnan(p).any() else 1.0 for p in positions]
    return msg


def stamp_key(stamp) -> tuple[int, int]:
    return (stamp.sec, stamp.nanosec)
