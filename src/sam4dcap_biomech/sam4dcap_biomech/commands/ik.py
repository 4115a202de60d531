"""Inverse kinematics: markers (.trc) -> coordinates (.mot), with marker errors.

Example: sam4dcap ik --model scaled.osim --trc walk.trc --out walk_ik.mot [--setup Setup_IK.xml] [--streaming]
Batch uses OpenSim's InverseKinematicsTool; --streaming solves the same problem frame by frame
with warm start (the live ik_node's engine). Weights: --setup (an OpenSim IK setup: marker
weights, coordinate tasks, constraint weight, accuracy, time range), else the project's
marker-set weights. Writes <out>_marker_errors.sto beside the .mot.
"""

from __future__ import annotations

from sam4dcap_biomech.errors import Sam4dcapError


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="PATH.osim", help="scaled model")
    parser.add_argument("--trc", required=True, metavar="PATH.trc", help="marker trajectories (.trc)")
    parser.add_argument("--out", required=True, metavar="PATH.mot", help="coordinates to write (.mot, degrees)")
    parser.add_argument("--setup", default=None, metavar="SETUP.xml",
                        help="OpenSim InverseKinematicsTool setup (weights, tasks, accuracy, time range)")
    parser.add_argument("--streaming", action="store_true",
                        help="frame-by-frame solve with warm start instead of the InverseKinematicsTool")
    parser.add_argument("--accuracy", type=float, default=None,
                        help="solver accuracy (default: the setup's, else config ik_node.accuracy)")
    parser.add_argument("--start", type=float, default=None, metavar="S", help="first time [s]")
    parser.add_argument("--end", type=float, default=None, metavar="S", help="last time [s]")


def run(args) -> int:
    import numpy as np

    from sam4dcap_biomech.inverse_kinematics import run_ik, run_streaming_ik

    if not str(args.out).lower().endswith(".mot"):
        raise Sam4dcapError(f"--out {args.out} must end in .mot")
    solve = run_streaming_ik if args.streaming else run_ik
    result = solve(args.model, args.trc, out_mot=args.out, setup_xml=args.setup, accuracy=args.accuracy,
                   start_s=args.start, end_s=args.end)
    n = result.coordinates.n_frames
    extra = ""
    if result.seconds_per_frame is not None:
        extra = f", {np.median(result.seconds_per_frame) * 1000:.2f} ms/frame median"
    print(f"{result.out_mot}: {n} frames, {len(result.coordinates.names)} coordinates "
          f"({'streaming' if args.streaming else 'InverseKinematicsTool'}{extra}); marker RMS error mean "
          f"{np.mean(result.marker_rms_m) * 1000:.1f} mm, max {np.max(result.marker_max_m) * 1000:.1f} mm; "
          f"errors in {result.marker_errors_file}")
    return 0
