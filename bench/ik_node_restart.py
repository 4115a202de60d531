#!/usr/bin/env python
"""ik_node killed (SIGKILL; --signal INT/TERM for a clean stop) and restarted mid-stream: how soon
does JointState resume?

A live-like source publishes BlazePose markers of a synthetic gait at 30 Hz; the ik_node runs in
its own process; it is killed and restarted `--restarts` times. Per restart, measured side by
side in one run: process start -> node discovered (its latched /sam4dcap/model_path arrives),
process start -> first JointState, and node discovered -> first JointState. The first (clean)
start is reported alongside. Goal: JointState within 1 s of the restarted node being up.
Writes bench/results/ik_node_restart.md; the last stdout line is the summary (figure last).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src" / "sam4dcap_biomech" / "test"))
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_profiles.xml"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--signal", choices=("KILL", "INT", "TERM"), default="KILL",
                        help="how the running node is stopped before each restart (KILL = crash)")
    args = parser.parse_args()

    import opensim
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from ros_harness import Harness, markers_msg, start_node, stop_node
    from sam4dcap_biomech.markersets import BLAZEPOSE33
    from sam4dcap_biomech.model_builder import write_model
    from sam4dcap_biomech.nodes.ik_node import MODEL_PATH_TOPIC, joint_states_topic
    from sam4dcap_biomech.nodes.ros_common import LATCHED_QOS, RESULTS_QOS
    from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
    from sam4dcap_msgs.msg import VirtualMarkers

    opensim.Logger.setLevelString("warn")
    tmp = Path(tempfile.mkdtemp(prefix="sam4dcap_bench_restart_"))
    model = write_model(tmp / "model.osim", height_m=1.75, mass_kg=70.0)
    markers = markers_from_coordinates(opensim.Model(str(model)), gait_trajectory(2.0, 30.0),
                                       marker_names=BLAZEPOSE33)
    ros = Harness("ik_restart_bench")
    states = ros.collect(JointState, joint_states_topic(1))
    paths = ros.collect(String, MODEL_PATH_TOPIC, LATCHED_QOS)
    pub = ros.node.create_publisher(VirtualMarkers, "/sam4dcap/markers", RESULTS_QOS)
    counter = {"i": 0}

    def publish_next():
        i = counter["i"]
        counter["i"] += 1
        pub.publish(markers_msg(100.0 + i / 30.0, BLAZEPOSE33, markers.values[i % markers.n_frames]))

    ros.node.create_timer(1.0 / 30.0, publish_next)
    rows = []
    proc = None
    try:
        for k in range(args.restarts + 1):
            n_states, n_paths = len(states), len(paths)
            started = time.monotonic()
            proc = start_node("ik_node", {"model_path": str(model)}, log_path=tmp / f"ik{k}.log")
            if not ros.spin_until(lambda: len(paths) > n_paths, 60.0, procs=[proc]):
                raise RuntimeError("ik_node not discovered within 60 s")
            up = time.monotonic()
            if not ros.spin_until(lambda: len(states) > n_states, 60.0, procs=[proc]):
                raise RuntimeError("no JointState within 60 s")
            first = time.monotonic()
            rows.append(("clean start" if k == 0 else f"restart {k}", up - started, first - started, first - up))
            ros.spin_until(lambda: False, 1.0)  # mid-stream
            if k < args.restarts:
                if args.signal == "KILL":
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                else:
                    stop_node(proc, sig=getattr(signal, f"SIG{args.signal}"))
    finally:
        if proc is not None:
            stop_node(proc)
        ros.close()

    restarts = np.array([r[1:] for r in rows[1:]])
    lines = ["# ik_node kill/restart mid-stream", "",
             f"{args.restarts} SIG{args.signal} restarts while markers stream at 30 Hz (synthetic gait, BlazePose 33).",
             f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.", "",
             "| run | start -> node discovered s | start -> first JointState s | discovered -> first JointState s |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {a:.2f} | {b:.2f} | {c:.3f} |" for name, a, b, c in rows]
    out = ROOT / "bench" / "results" / "ik_node_restart.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"ik_node_restart: clean start -> first JointState {rows[0][2]:.2f} s; after SIG{args.signal}, process start -> "
          f"first JointState median {np.median(restarts[:, 1]):.2f} s (max {restarts[:, 1].max():.2f}); "
          f"node discovered -> first JointState median {np.median(restarts[:, 2]):.3f} s "
          f"(max {restarts[:, 2].max():.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
