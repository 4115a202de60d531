#!/usr/bin/env python
"""ik_node killed (SIGKILL; --signal INT/TERM for a clean stop) and restarted mid-stream: how soon
does JointState resume downstream?

A live-like source publishes BlazePose markers of a synthetic gait at 30 Hz; the ik_node runs in
its own process; it is killed and restarted `--restarts` times. Per restart: process start ->
node discovered (its latched /sam4dcap/model_path arrives), process start -> first JointState,
node discovered -> first JointState, and the longest JointState gap in the 2 s after it resumed.

Two configurations, measured side by side in one run (each in its own child process, since a
process loads its Fast DDS profile once):
  before: config/fastdds_profiles.xml without its restart timings (SHM healthy check, discovery
          announcements/lease, writer heartbeat) and without the node-side shared-memory port
          recovery (SAM4DCAP_DDS_SHM_RECOVERY=0), i.e. the setup before the fix;
  after:  the project's profile and recovery as shipped.
Goal: JointState within 1 s of the restart. Writes bench/results/ik_node_restart.md; the last
stdout line is the summary (figure last).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_profiles.xml"
NS = "{http://www.eprosima.com}"
RESULT_PREFIX = "RESULT "


def baseline_profile(path: Path) -> Path:
    """The project's profile without the elements added for restart recovery."""
    ET.register_namespace("", NS.strip("{}"))
    tree = ET.parse(PROFILE)
    root = tree.getroot()
    for parent in root.iter():
        for child in list(parent):
            if child.tag in (f"{NS}healthy_check_timeout_ms", f"{NS}builtin", f"{NS}data_writer"):
                parent.remove(child)
    tree.write(path, encoding="UTF-8", xml_declaration=True)
    return path


def measure(restarts: int, sig_name: str) -> dict:
    """One configuration (the environment given by the parent): rows of timings per start."""
    sys.path.insert(0, str(ROOT / "src" / "sam4dcap_biomech" / "test"))
    import opensim
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from ros_harness import Harness, markers_msg, start_node, stop_node
    from sam4dcap_biomech.markersets import BLAZEPOSE33
    from sam4dcap_biomech.model_builder import write_model
    from sam4dcap_biomech.ros.topics import MODEL_PATH_TOPIC, joint_states_topic
    from sam4dcap_biomech.ros.node_plumbing import LATCHED_QOS, RESULTS_QOS
    from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
    from sam4dcap_msgs.msg import VirtualMarkers

    opensim.Logger.setLevelString("warn")
    tmp = Path(tempfile.mkdtemp(prefix="sam4dcap_bench_restart_"))
    model = write_model(tmp / "model.osim", height_m=1.75, mass_kg=70.0)
    markers = markers_from_coordinates(opensim.Model(str(model)), gait_trajectory(2.0, 30.0),
                                       marker_names=BLAZEPOSE33)
    ros = Harness("ik_restart_bench")
    arrivals: list[float] = []
    ros.node.create_subscription(JointState, joint_states_topic(1),
                                 lambda _msg: arrivals.append(time.monotonic()), RESULTS_QOS)
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
        for k in range(restarts + 1):
            n_states, n_paths = len(arrivals), len(paths)
            started, started_wall = time.monotonic(), time.time()
            proc = start_node("ik_node", {"model_path": str(model)}, log_path=tmp / f"ik{k}.log")
            if not ros.spin_until(lambda: len(paths) > n_paths, 60.0, procs=[proc]):   # noqa: B023 (called in this iteration)
                raise RuntimeError("ik_node not discovered within 60 s")
            up = time.monotonic()
            if not ros.spin_until(lambda: len(arrivals) > n_states, 60.0, procs=[proc]):   # noqa: B023 (called in this iteration)
                raise RuntimeError("no JointState within 60 s")
            first = arrivals[n_states]
            ros.spin_until(lambda: False, 2.0)  # mid-stream; also shows a later stall, if any
            after = np.array([t for t in arrivals[n_states:] if t <= first + 2.0])
            gap = float(np.diff(after).max()) if len(after) > 1 else float("nan")
            # The node's own start-up (imports, model, publishers): its log line ending __init__.
            ready = re.search(r"\[INFO\] \[(\d+\.\d+)\] \[ik_node\]: IK on", (tmp / f"ik{k}.log").read_text())
            rows.append({"run": "clean start" if k == 0 else f"restart {k}",
                         "ready_s": float(ready.group(1)) - started_wall if ready else float("nan"),
                         "up_s": up - started,
                         "first_s": first - started, "up_to_first_s": max(0.0, first - up), "gap_s": gap})
            if k < restarts:
                if sig_name == "KILL":
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                else:
                    stop_node(proc, sig=getattr(signal, f"SIG{sig_name}"))
    finally:
        if proc is not None:
            stop_node(proc)
        ros.close()
    return {"rows": rows, "load": os.getloadavg()[0]}


def run_child(config: str, restarts: int, sig_name: str, tmp: Path) -> dict:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(10 + (os.getpid() + (0 if config == "before" else 1)) % 90)
    if config == "before":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(baseline_profile(tmp / "baseline_profile.xml"))
        env["SAM4DCAP_DDS_SHM_RECOVERY"] = "0"
    else:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
        env.pop("SAM4DCAP_DDS_SHM_RECOVERY", None)
    out = subprocess.run([sys.executable, __file__, "--child", "--restarts", str(restarts), "--signal", sig_name],
                         env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{config} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=6)
    parser.add_argument("--signal", choices=("KILL", "INT", "TERM"), default="KILL",
                        help="how the running node is stopped before each restart (KILL = crash)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(args.restarts, args.signal)), flush=True)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="sam4dcap_bench_restart_"))
    results = {config: run_child(config, args.restarts, args.signal, tmp) for config in ("before", "after")}
    lines = ["# ik_node kill/restart mid-stream", "",
             f"{args.restarts} SIG{args.signal} restarts per configuration while markers stream at 30 Hz "
             f"(synthetic gait, BlazePose 33), {os.cpu_count()} cores. before = profile without the restart "
             "timings and no node-side shared-memory port recovery; after = as shipped. "
             "discovered -> first JointState is 0 when JointState came first (the latched model path "
             "was late: its first sample lost and repaired at the next writer heartbeat).", ""]
    stats = {}
    for config, result in results.items():
        rows = result["rows"]
        restarts = np.array([[r["first_s"], r["up_to_first_s"], r["gap_s"], r["first_s"] - r["ready_s"]]
                             for r in rows[1:]])
        stats[config] = {"median": float(np.median(restarts[:, 0])), "max": float(restarts[:, 0].max()),
                         "up_median": float(np.median(restarts[:, 1])), "up_max": float(restarts[:, 1].max()),
                         "gap_max": float(np.nanmax(restarts[:, 2])), "clean": rows[0]["first_s"],
                         "ready_median": float(np.nanmedian(restarts[:, 3])),
                         "ready_max": float(np.nanmax(restarts[:, 3]))}
        lines += [f"## {config} (load average at the end {result['load']:.1f})", "",
                  "| run | start -> node initialised (its log) s | start -> node discovered s | "
                  "start -> first JointState s | discovered -> first JointState s | "
                  "longest JointState gap in the next 2 s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['ready_s']:.2f} | {r['up_s']:.2f} | {r['first_s']:.2f} | "
                  f"{r['up_to_first_s']:.3f} | {r['gap_s']:.3f} |"
                  for r in rows]
        s = stats[config]
        lines += ["", f"restart -> first JointState: median {s['median']:.2f} s, max {s['max']:.2f} s; "
                  f"node discovered -> first JointState: median {s['up_median']:.3f} s, max {s['up_max']:.3f} s; "
                  f"node initialised -> first JointState: median {s['ready_median']:.2f} s, "
                  f"max {s['ready_max']:.2f} s", ""]
    out = ROOT / "bench" / "results" / "ik_node_restart.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    b, a = stats["before"], stats["after"]
    print(f"ik_node_restart: after SIG{args.signal}, restart -> first JointState before median {b['median']:.2f} s "
          f"(max {b['max']:.2f}), after median {a['median']:.2f} s (max {a['max']:.2f}); clean start "
          f"{a['clean']:.2f} s; node initialised -> first JointState before median {b['ready_median']:.2f} s "
          f"(max {b['ready_max']:.2f}), after median {a['ready_median']:.2f} s (max {a['ready_max']:.2f}); "
          f"ratio before/after {b['median'] / a['median']:.1f}; "
          f"restart -> first JointState median {a['median']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
