#!/usr/bin/env python
"""Where each 720p frame's CPU goes on the perception side, stage by stage, in one process.

Input: the live benchmark's clip (bench/graph_latency.py `make_clip`: 450 frames 1280x720 at
30 fps made from the Pose2Sim demo cam01, written to a temporary mp4). Each frame goes through
the stages the ROS graph runs for it, timed with this process's CPU time (`time.process_time`:
every thread, so MediaPipe's and OpenCV's worker threads count) and wall time:

  source node   decode (OpenCV), colour conversion (BGR -> RGB), image message (numpy ->
                sensor_msgs/Image, CDR serialization: what publishing costs);
  body node     image message in (CDR deserialization + rgb8 view), person detector, landmark
                model (landmarks + world landmarks + mask inference and MediaPipe's filters,
                one graph run), tracking + appearance (PeopleTracker.update/coast and the
                identity colour check), mask post-processing (resize/threshold), output
                messages (PersonSegmentation with the mask, BodyKeypoints: build + serialize);
  markers node  StreamingMarkerEstimator.push (world frame, left/right repair, filter).

The body estimator runs in three variants, interleaved frame by frame on the same frames (same
load on all): `previous` = the person detector on every frame (people_scan_hz = 1000) and the
mask always made and sent (the behaviour before this benchmark); `scan + mask` = the configured
people_scan_hz (detector only when tracking needs it) with the mask (someone subscribes to the
segmentation, e.g. the recorder); `scan, no mask` = the default live graph (nobody consumes the
mask: no segmentation pass, no PersonSegmentation message). IK, visualization, trial writer and recorder are separate nodes: their CPU per
frame is in bench/results/graph_latency.md (per-node CPU time of the graph run).
Writes bench/results/frame_cost.md; the last stdout line is the summary (figure last: body
node CPU ms per frame, default variant).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results" / "frame_cost.md"
N_FRAMES = int(os.environ.get("FRAME_COST_FRAMES", 300))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Clock:
    """CPU and wall seconds per stage, summed over frames."""

    def __init__(self):
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def add(self, stage: str, cpu: float, wall: float) -> None:
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu
        self.wall[stage] = self.wall.get(stage, 0.0) + wall

    def timed(self, stage: str, fn, *args, **kwargs):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        self.add(stage, time.process_time() - c0, time.perf_counter() - w0)
        return out


def instrument(est, clock: Clock) -> None:
    """Time the estimator's own stages (method wrappers on this instance; the outer
    `process` time minus these is the rest: ROI maths, checks, observation assembly)."""
    for obj, name, stage in ((est.detector, "detect", "person detector"),
                             (est, "_run_landmarks", "landmark model (+ mask inference)"),
                             (est.people, "update", "tracking + appearance"),
                             (est.people, "coast", "tracking + appearance"),
                             (est, "_looks_like_subject", "tracking + appearance"),
                             (est, "_mask", "mask post-processing")):
        fn = getattr(obj, name, None)
        if fn is None:
            continue
        setattr(obj, name, lambda *a, _fn=fn, _s=stage, **k: clock.timed(_s, _fn, *a, **k))


def main() -> int:
    import cv2
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from graph_latency import CLIP, make_clip
    from sam4dcap_biomech.config import load_config
    from sam4dcap_perception.blazepose import BlazePoseEstimator
    from sam4dcap_perception.nodes.body_estimator_node import observation_to_msgs
    from sam4dcap_perception.nodes.image_conversion import numpy_to_image, to_rgb8
    from sam4dcap_perception.observations import CameraIntrinsics, Frame
    from sam4dcap_perception.virtual_markers import StreamingMarkerEstimator

    if not CLIP.is_file():
        print(f"frame_cost: demo clip missing ({CLIP}): run `make setup`", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="frame_cost-"))
    video = tmp / "clip_720p30.mp4"
    make_clip(video)
    default_hz = float(load_config().params("body_estimator_node", {})["people_scan_hz"])
    variants = {"previous": {"people_scan_hz": 1000.0}, "scan + mask": {}, "scan, no mask": {}}
    with_mask = {"previous": True, "scan + mask": True, "scan, no mask": False}
    clocks = {v: Clock() for v in variants}
    source, markers_clock = Clock(), {v: Clock() for v in variants}
    ests = {v: BlazePoseEstimator(p) for v, p in variants.items()}
    for v, est in ests.items():
        est.want_mask = with_mask[v]
        instrument(est, clocks[v])
    intr = CameraIntrinsics.from_fov(1280, 720, 70.0)
    marker_params = load_config().params("markers_node", {"subject_height_m": 1.70})
    markers = {v: StreamingMarkerEstimator(marker_params, intr) for v in variants}
    tracked = {v: 0 for v in variants}

    def image_out(rgb, header):            # what the source's publish costs
        return serialize_message(numpy_to_image(rgb, "rgb8", stamp=header.stamp, frame_id=header.frame_id))

    def image_in(wire):                    # what the body node's take costs
        return to_rgb8(deserialize_message(wire, Image))

    def results_out(obs, header, shape, with_segmentation):
        return [serialize_message(m) for m in observation_to_msgs(obs, header, shape, segmentation=with_segmentation)
                if m is not None]
    load_before = os.getloadavg()[0]
    cap = cv2.VideoCapture(str(video))
    n = 0
    try:
        while n < N_FRAMES:
            ok, bgr = source.timed("decode (OpenCV)", cap.read)
            if not ok:
                break
            rgb = source.timed("colour conversion BGR->RGB", cv2.cvtColor, bgr, cv2.COLOR_BGR2RGB)
            header = Header()
            header.stamp.sec, header.stamp.nanosec = divmod(int(n * 1e9 / 30), 1_000_000_000)
            header.frame_id = "camera_optical_frame"
            wire = source.timed("image message out (numpy -> Image, serialize)", image_out, rgb, header)
            for v, est in ests.items():
                clk = clocks[v]
                img = clk.timed("image message in (deserialize, rgb8 view)", image_in, wire)
                c0, w0 = time.process_time(), time.perf_counter()
                before_cpu, before_wall = sum(clk.cpu.values()), sum(clk.wall.values())
                obs = est.process(Frame(n, n / 30.0, img))
                inner_cpu, inner_wall = sum(clk.cpu.values()) - before_cpu, sum(clk.wall.values()) - before_wall
                clk.add("estimator rest (ROI, checks, output arrays)",
                        time.process_time() - c0 - inner_cpu, time.perf_counter() - w0 - inner_wall)
                tracked[v] += bool(obs.tracked)
                clk.timed("output messages (segmentation + mask, keypoints: build, serialize)",
                          results_out, obs, header, img.shape[:2], with_mask[v])
                markers_clock[v].timed("markers (StreamingMarkerEstimator.push)", markers[v].push, obs)
            n += 1
    finally:
        cap.release()
        for est in ests.values():
            est.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    load_after = os.getloadavg()[0]

    names = list(variants)

    def rows(per_variant: dict, node: str):
        stages = list(dict.fromkeys(st for c in per_variant.values() for st in c.cpu))
        return [f"| {node} | {st} | " + " | ".join(f"{1e3 * per_variant[v].cpu.get(st, 0.0) / n:.2f}" for v in names)
                + " |" for st in stages]

    body_total = {v: 1e3 * sum(c.cpu.values()) / n for v, c in clocks.items()}
    body_wall = {v: 1e3 * sum(c.wall.values()) / n for v, c in clocks.items()}
    table = ["| node | stage | " + " | ".join(f"{v}: CPU ms" for v in names) + " |",
             "|---|---|" + "---|" * len(names)]
    table += [f"| video source | {st} | " + " | ".join(f"{1e3 * source.cpu[st] / n:.2f}" for _ in names) + " |"
              for st in source.cpu]
    table += rows(clocks, "body estimator")
    table.append("| body estimator | **total CPU** | " + " | ".join(f"**{body_total[v]:.1f}**" for v in names) + " |")
    table.append("| body estimator | total wall (contended) | " + " | ".join(f"{body_wall[v]:.1f}" for v in names) + " |")
    table += rows(markers_clock, "markers")
    scans = "; ".join(f"{v}: {ests[v].n_scans} (" + ", ".join(
        f"{k} {c}" for k, c in sorted(ests[v].scan_reasons.items(), key=lambda kv: -kv[1])) + ")" for v in names)
    text = f"""# CPU per 720p frame, per stage (perception side)

Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; load average
before/after: {load_before:.1f} / {load_after:.1f} (the cores are shared with other jobs: CPU time is the
comparable figure, wall time is contended). {n} frames of the live benchmark's clip (1280x720,
Pose2Sim demo cam01 letterboxed, 30 fps). Milliseconds per frame, averaged over all frames. The
body estimator variants ran interleaved frame by frame: `previous` = person detector on every
frame (people_scan_hz=1000) and the mask always; `scan + mask` = people_scan_hz={default_hz:g}
(detector only when tracking needs it), mask made and sent; `scan, no mask` = the default live
graph without a mask consumer. The video source stages are shared (one decode per frame).

{chr(10).join(table)}

Frames tracked: {", ".join(f"{v} {tracked[v]}" for v in names)} (of {n}).
Detector runs: {scans}.
Landmark model: one run per tracked frame, plus re-prompts. The mask's segmentation pass is part
of the landmark model's run: compare that row between `scan + mask` and `scan, no mask`.
IK, visualization, trial writer and recorder: per-node CPU in bench/results/graph_latency.md.
"""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    print(f"frame_cost: {cpu_model()}, 720p, detector runs {ests['previous'].n_scans} -> "
          f"{ests['scan, no mask'].n_scans} of {n} frames, tracked {tracked['previous']} -> {tracked['scan, no mask']}; "
          f"body node CPU ms/frame previous {body_total['previous']:.1f}, scan + mask {body_total['scan + mask']:.1f}, "
          f"default (scan, no mask): {body_total['scan, no mask']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
