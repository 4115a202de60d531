#!/usr/bin/env python
"""Streaming IK vs OpenSim's InverseKinematicsTool on the same trial, side by side in one run.

Trial: the Gait2354 walk (subject01_walk1.trc on OutputReference/subject01_simbody.osim with
subject01_Setup_IK.xml) from ../shared/data/gait2354 when present, else a synthetic gait trial
on the project's model. Both sides include their setup (model load, solver construction).
Reports throughput ratio, per-frame p50/p95 of the streaming solve, and the max coordinate
difference between the two results. Target: >= 3x at <= 0.1 deg. A second trial is the live
ik_node's problem: BlazePose keypoints (synthetic gait, 30 fps, 5 mm noise) on the project's
model with the default blazepose33 IK priors, which both solvers add (same objective). A third
is the live ik_node's real input: BlazePose markers of the cached demo clip
(.cache/pose2sim_demo/videos/cam01.mp4 through `sam4dcap markers`; skipped, and said so, when the
demo is absent), where the keypoints sit ~4 cm from any model pose (a large-residual problem):
StreamingIK's p50/p95 solve time, cold reassemblies and distance to the converged optimum
(each frame re-solved from its result at accuracy 1e-11, 2000 iterations).
Writes bench/results/streaming_ik.md; the last stdout line is the summary (figure last).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GAIT2354 = ROOT.parent / "shared" / "data" / "gait2354"
if not GAIT2354.is_dir():
    GAIT2354 = Path("/work/shared/data/gait2354")


def gait2354_trial():
    from sam4dcap_biomech.trc import read_trc

    model = GAIT2354 / "OutputReference" / "subject01_simbody.osim"
    setup = GAIT2354 / "subject01_Setup_IK.xml"
    return "Gait2354 subject01_walk1 (0.4-1.6 s, 60 Hz)", model, read_trc(GAIT2354 / "subject01_walk1.trc"), setup


def synthetic_trial(tmp: Path):
    from sam4dcap_biomech import model_builder, synthetic

    model_path = tmp / "model.osim"
    model_builder.write_model(model_path, height_m=1.75, mass_kg=70.0, markers="opencap43")
    import opensim

    model = opensim.Model(str(model_path))
    coords = synthetic.gait_trajectory(duration_s=4.0, rate_hz=60.0, height_m=1.75)
    markers = synthetic.markers_from_coordinates(model, coords)
    return "synthetic gait, project model (opencap43, 4 s, 60 Hz)", model_path, markers, None


def blazepose_trial(tmp: Path):
    from sam4dcap_biomech import model_builder, synthetic

    model_path = tmp / "model_blazepose.osim"
    model_builder.write_model(model_path, height_m=1.75, mass_kg=70.0, markers="blazepose33")
    import opensim

    coords = synthetic.gait_trajectory(duration_s=3.0, rate_hz=30.0, height_m=1.75)
    markers = synthetic.markers_from_coordinates(opensim.Model(str(model_path)), coords)
    markers = synthetic.add_marker_noise(markers, sigma_m=0.005, seed=5)
    return "synthetic gait, BlazePose 33 keypoints + 5 mm noise, default priors (3 s, 30 Hz)", model_path, markers


DEMO_VIDEO = Path(os.environ.get("SAM4DCAP_CACHE", ROOT / ".cache")) / "pose2sim_demo" / "videos" / "cam01.mp4"


def real_blazepose_case(tmp: Path) -> dict | None:
    """StreamingIK on the demo clip's real BlazePose markers (as the live ik_node gets them)."""
    import subprocess

    from sam4dcap_biomech.markersets import BLAZEPOSE33
    from sam4dcap_biomech.ik_stream import generated_model_path
    from sam4dcap_biomech.streaming_ik import StreamingIK, solve_trial
    from sam4dcap_biomech.trc import read_trc

    if not DEMO_VIDEO.is_file():
        print(f"note: {DEMO_VIDEO} absent (cached pose2sim demo); real-marker case SKIPPED", file=sys.stderr)
        return None
    trc = tmp / "cam01_markers.trc"
    subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "markers", str(DEMO_VIDEO), "--height", "1.70",
                    "--out", str(trc)], check=True, capture_output=True)
    markers = read_trc(trc).select(list(BLAZEPOSE33))
    model = generated_model_path(height_m=1.75, mass_kg=70.0, marker_set="blazepose33")
    from sam4dcap_biomech.config import load_config

    polish = StreamingIK(str(model), markers.names, accuracy=1e-11, max_iterations=2000)
    budget_ms = float(load_config().params("ik_node")["realtime_budget_ms"])
    out = {}
    # The ik_node's defaults: offline (to the accuracy) and live (realtime: the time budget).
    for key, budget in (("offline", None), ("live", budget_ms / 1e3 if budget_ms > 0 else None)):
        ik = StreamingIK(str(model), markers.names, accuracy=1e-6, time_budget_s=budget)
        best = None
        runs = []
        for _ in range(3):   # best of 3 runs (shared machine); budgeted runs differ run to run
            ik.reset()
            frames, seconds = solve_trial(ik, markers)
            runs.append(frames)
            best = seconds if best is None else np.minimum(best, seconds)
        frames = runs[-1]
        rot = [i for i, n in enumerate(ik.coordinate_names) if not n.endswith(("_tx", "_ty", "_tz"))]
        dist = [np.rad2deg(np.abs(f.q - polish.solve_from(f.time_s, markers.values[k], [f.q]).q)[rot]).max()
                for k, f in enumerate(frames)]
        ms = best[1:] * 1000   # warm frames (the first is the cold OpenSim assembly)
        out[key] = dict(n=len(frames), p50=float(np.median(ms)), p95=float(np.percentile(ms, 95)),
                        max=float(ms.max()), cold=sum(f.cold_start for f in frames[1:]),
                        it50=float(np.median([f.iterations for f in frames[1:]])),
                        it_max=max(f.iterations for f in frames[1:]),
                        stopped=sum(not f.converged for f in frames[1:]),
                        rms_mm=float(np.mean([f.marker_rms_m for f in frames])) * 1000,
                        d50=float(np.median(dist)), d95=float(np.percentile(dist, 95)), d_max=float(np.max(dist)),
                        budget_ms=None if budget is None else budget * 1e3)
    return {**out["offline"], "live": out["live"]}


def _max_rot_diff_deg(a, b):
    b = b.select(a.names)
    rot = [i for i, name in enumerate(a.names) if a.unit_of(name) == "rad"]
    diff = np.rad2deg(np.abs(a.values - b.values))[:, rot]
    per = diff.max(axis=0)
    return float(per.max()), a.names[rot[int(per.argmax())]], float(np.sqrt(np.mean(diff ** 2, axis=0)).mean())


def _best_of_interleaved(n, fn_a, fn_b):
    """Best wall time of n runs of each, alternating a and b so both see the same machine load
    (the usual guard against a busy shared machine); returns (best_a, result_a, best_b, result_b)."""
    best_a = best_b = float("inf")
    result_a = result_b = None
    for _ in range(n):
        t0 = time.perf_counter()
        result_a = fn_a()
        best_a = min(best_a, time.perf_counter() - t0)
        t0 = time.perf_counter()
        result_b = fn_b()
        best_b = min(best_b, time.perf_counter() - t0)
    return best_a, result_a, best_b, result_b


def main() -> int:
    import opensim

    from sam4dcap_biomech.inverse_kinematics import read_ik_setup, run_ik, run_streaming_ik

    opensim.Logger.setLevelString("warn")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if GAIT2354.is_dir():
            label, model, markers, setup = gait2354_trial()
        else:
            print(f"note: {GAIT2354} absent; using a synthetic trial", file=sys.stderr)
            label, model, markers, setup = synthetic_trial(tmp)
        setup_acc = (read_ik_setup(setup).accuracy if setup else None) or 1e-5
        # The converged answer of the same problem (tool at 1e-9), to tell solver error apart.
        converged = run_ik(model, markers, setup_xml=setup, accuracy=1e-9).coordinates
        rows_out = []
        for acc in (setup_acc, setup_acc / 10):
            tool_s, tool, stream_s, stream = _best_of_interleaved(
                5,
                lambda: run_ik(model, markers, setup_xml=setup, accuracy=acc, out_mot=tmp / "tool.mot"),   # noqa: B023 (called in this iteration)
                lambda: run_streaming_ik(model, markers, setup_xml=setup, accuracy=acc, out_mot=tmp / "stream.mot"))   # noqa: B023 (called in this iteration)
            n = tool.coordinates.n_frames
            assert stream.coordinates.n_frames == n, (stream.coordinates.n_frames, n)
            d_tool, worst, rms = _max_rot_diff_deg(tool.coordinates, stream.coordinates)
            d_tool_conv = _max_rot_diff_deg(converged, tool.coordinates)[0]
            d_stream_conv = _max_rot_diff_deg(converged, stream.coordinates)[0]
            p50, p95 = np.percentile(stream.seconds_per_frame * 1000, [50, 95])
            rows_out.append(dict(acc=acc, n=n, tool_s=tool_s, stream_s=stream_s, ratio=tool_s / stream_s,
                                 d_tool=d_tool, worst=worst, rms=rms, d_tool_conv=d_tool_conv,
                                 d_stream_conv=d_stream_conv, p50=p50, p95=p95,
                                 tool_rms_mm=tool.marker_rms_m.mean() * 1000,
                                 stream_rms_mm=stream.marker_rms_m.mean() * 1000))
        bp_label, bp_model, bp_markers = blazepose_trial(tmp)
        bp_converged = run_ik(bp_model, bp_markers, accuracy=1e-9).coordinates
        tool_s, tool, stream_s, stream = _best_of_interleaved(
            3,
            lambda: run_ik(bp_model, bp_markers, accuracy=1e-6, out_mot=tmp / "tool_bp.mot"),
            lambda: run_streaming_ik(bp_model, bp_markers, accuracy=1e-6, out_mot=tmp / "stream_bp.mot"))
        assert tool.extra["coordinate_tasks"] == stream.extra["coordinate_tasks"]
        d_tool, worst, _ = _max_rot_diff_deg(tool.coordinates, stream.coordinates)
        p50, p95 = np.percentile(stream.seconds_per_frame * 1000, [50, 95])
        bp = dict(acc=1e-6, n=tool.coordinates.n_frames, tool_s=tool_s, stream_s=stream_s, ratio=tool_s / stream_s,
                  d_tool=d_tool, worst=worst, d_tool_conv=_max_rot_diff_deg(bp_converged, tool.coordinates)[0],
                  d_stream_conv=_max_rot_diff_deg(bp_converged, stream.coordinates)[0], p50=p50, p95=p95,
                  tool_rms_mm=tool.marker_rms_m.mean() * 1000, stream_rms_mm=stream.marker_rms_m.mean() * 1000)
        real = real_blazepose_case(tmp)

    rows = [
        "# Streaming IK vs InverseKinematicsTool",
        "",
        f"Trial: {label}; {rows_out[0]['n']} frames. Both sides timed in one run (best of 5, alternating), each "
        "including model load, marker file handling and writing the .mot. 'converged' = the tool at "
        "accuracy 1e-9 (the exact answer of the same problem).",
        "",
        "| accuracy | tool s | tool frames/s | streaming s | streaming frames/s | ratio | streaming p50 / p95 ms "
        "| max diff streaming-tool deg | tool-converged deg | streaming-converged deg | marker RMS mm tool / streaming |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_out + [bp]:
        if r is bp:
            rows += ["", f"Trial: {bp_label}; {bp['n']} frames; best of 3. Coordinate tasks (priors and holds) "
                     f"identical on both sides: {', '.join(tool.extra['coordinate_tasks'])}.", "",
                     rows[4], rows[5]]
        rows.append(f"| {r['acc']:g} | {r['tool_s']:.3f} | {r['n'] / r['tool_s']:.0f} | {r['stream_s']:.3f} | "
                    f"{r['n'] / r['stream_s']:.0f} | **{r['ratio']:.1f}x** | {r['p50']:.2f} / {r['p95']:.2f} | "
                    f"{r['d_tool']:.4f} ({r['worst']}) | {r['d_tool_conv']:.4f} | {r['d_stream_conv']:.4f} | "
                    f"{r['tool_rms_mm']:.2f} / {r['stream_rms_mm']:.2f} |")
    if real is None:
        rows += ["", f"Real BlazePose markers: SKIPPED ({DEMO_VIDEO} absent; the cached pose2sim demo)."]
    else:
        rows += ["", f"Real BlazePose markers (the live ik_node's input): {DEMO_VIDEO.name} of the pose2sim demo "
                 f"through `sam4dcap markers`, {real['n']} frames, marker RMS {real['rms_mm']:.0f} mm (keypoints "
                 "sit cm from any model pose: large residuals), ik_node defaults (accuracy 1e-6), best of 3 per "
                 "frame. 'optimum' = each frame re-solved from its result at accuracy 1e-11, 2000 iterations.", "",
                 "| mode | warm solve p50 / p95 / max ms | iterations p50 / max | cold reassemblies | "
                 "frames stopped by the time budget | "
                 "max coordinate distance to the optimum, p50 / p95 / max over frames deg |", "|---|---|---|---|---|---|",
                 *[f"| {label} | {r['p50']:.1f} / {r['p95']:.1f} / {r['max']:.1f} | {r['it50']:.0f} / {r['it_max']} "
                   f"| {r['cold']} | {r['stopped']} | {r['d50']:.4f} / {r['d95']:.4f} / {r['d_max']:.4f} |"
                   for label, r in (("offline (to the accuracy)", real),
                                    (f"live (realtime_budget_ms {real['live']['budget_ms'] or 0:g}; each frame "
                                     "warm-starts from the last)", real["live"]))], "",
                 "The live row: a frame whose Gauss-Newton runs out of its time budget keeps the pose reached "
                 "(every step lowered the objective) and the next frame continues from it; its distance to "
                 "the frame's own optimum is the price. Timing on a shared machine: the share of frames "
                 "stopped grows with the load.", "",
                 "Before the secant correction (plain damped Gauss-Newton, 25 iterations, cold reassembly when not "
                 "converged), measured on the same clip: p50 43 ms / p95 50 ms, 42-64 cold reassemblies in 100 "
                 "frames, worst frame 0.13 deg from its optimum."]
    rows += [
        "",
        "Target: >= 3x throughput with every coordinate within 0.1 deg of the tool. The streaming "
        "solver converges tighter than the tool at the same accuracy setting: at the setup's 1e-5 the "
        "tool itself sits up to ~0.12 deg (weakly observed lumbar rotation) from the converged answer "
        "while the streaming solution is within a few thousandths of a degree of it; with the tool "
        "at 1e-6 both agree well within 0.1 deg. On the BlazePose trial (weakly observed forearm "
        "pronation) the tool at 1e-6 stops up to ~0.3 deg from the converged answer of the regularised "
        "problem, the streaming solver within 0.001 deg: the difference is the tool's, the problem is the same.",
        "",
        "Method (chosen by measurement): OpenSim's InverseKinematicsSolver cannot take new markers "
        "(the Python solver copies its MarkersReference) and rebuilding it per frame costs ≈ 11 ms/frame, "
        "slower than the tool. StreamingIK minimises the Assembler's objective itself: Gauss-Newton "
        "with an NL2SOL secant estimate of the Hessian's residual term (LM damping on a bad step) on Simbody's "
        "station Jacobians (one calcStationJacobian call per "
        "iteration), warm-started from the previous frame extrapolated by its velocity; OpenSim's "
        "solver assembles the first frame only.",
    ]
    out = ROOT / "bench" / "results" / "streaming_ik.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n")
    r0, r1 = rows_out
    print(f"streaming_ik: {label}: accuracy {r0['acc']:g}: {r0['n'] / r0['stream_s']:.0f} vs "
          f"{r0['n'] / r0['tool_s']:.0f} frames/s, p50 {r0['p50']:.2f} ms p95 {r0['p95']:.2f} ms, max diff "
          f"{r0['d_tool']:.3f} deg to the tool (tool to its converged answer {r0['d_tool_conv']:.3f}, streaming "
          f"{r0['d_stream_conv']:.4f}); accuracy {r1['acc']:g}: ratio {r1['ratio']:.1f}x, max diff "
          f"{r1['d_tool']:.3f} deg; BlazePose + priors: ratio {bp['ratio']:.1f}x, max diff {bp['d_tool']:.3f} deg; "
          + ("real BlazePose markers: SKIPPED (demo absent); " if real is None else
             f"real BlazePose markers: p50 {real['p50']:.1f} ms p95 {real['p95']:.1f} ms, {real['cold']} cold, "
             f"max {real['d_max']:.4f} deg from optimum; live (budget {real['live']['budget_ms'] or 0:g} ms): "
             f"p95 {real['live']['p95']:.1f} ms, {real['live']['stopped']} stopped, p95/max "
             f"{real['live']['d95']:.3f}/{real['live']['d_max']:.3f} deg from optimum; ")
          + 
          f"throughput ratio at setup accuracy {r0['ratio']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
