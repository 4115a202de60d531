"""Scale a model to a subject from a static trial (OpenSim ScaleTool, measurement-based).

Example: sam4dcap scale --model generic.osim --static static.trc --height 1.75 --mass 70 --out scaled.osim
The still part of the static trial is found automatically (lowest marker speed over
>= ik_node.static_min_duration_s) unless --window is given; --setup runs an OpenSim scale setup.
"""

from __future__ import annotations

from sam4dcap_biomech.errors import Sam4dcapError


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="PATH.osim", help="generic (unscaled) model")
    parser.add_argument("--static", required=True, metavar="PATH.trc", help="static trial markers (.trc)")
    parser.add_argument("--height", type=float, required=True, metavar="M", help="subject height [m]")
    parser.add_argument("--mass", type=float, required=True, metavar="KG", help="subject mass [kg]")
    parser.add_argument("--out", required=True, metavar="PATH.osim", help="scaled model to write")
    parser.add_argument("--marker-set", default=None, choices=["blazepose33", "opencap43"],
                        help="marker set of the static trial (default: config ik_node.marker_set, or "
                             "recognised from the marker names)")
    parser.add_argument("--setup", default=None, metavar="SETUP.xml",
                        help="OpenSim ScaleTool setup (measurement set, marker placer tasks) used as is")
    parser.add_argument("--window", nargs=2, type=float, default=None, metavar=("START_S", "END_S"),
                        help="static window [s] (default: detected automatically)")
    parser.add_argument("--min-still-s", type=float, default=None, metavar="S",
                        help="shortest still window (default config ik_node.static_min_duration_s)")
    parser.add_argument("--max-speed", type=float, default=None, metavar="M_S",
                        help="highest marker speed counted as still [m/s] (default config "
                             "ik_node.static_max_speed_m_s)")


def run(args) -> int:
    from sam4dcap_biomech.config import load_config
    from sam4dcap_biomech.ik_problem import closest_marker_set
    from sam4dcap_biomech.inverse_kinematics import load_markers
    from sam4dcap_biomech.scaling import scale_model
    from sam4dcap_biomech.static_window import find_static_window

    if not str(args.out).lower().endswith(".osim"):
        raise Sam4dcapError(f"--out {args.out} must end in .osim")
    markers = load_markers(args.static)
    marker_set = args.marker_set or closest_marker_set(markers.names) or load_config().params("ik_node")["marker_set"]
    window = tuple(args.window) if args.window else None
    if window is None and args.setup is None:
        window = find_static_window(markers, min_duration_s=args.min_still_s, max_speed_m_s=args.max_speed)
    result = scale_model(args.model, markers, height_m=args.height, mass_kg=args.mass, out_path=args.out,
                         marker_set=marker_set, setup_xml=args.setup, window=window)
    factors = {b: f for b, f in result.scale_factors.items() if b != "ground" and not b.endswith("_frame")}
    uniform = [f[0] for f in factors.values()]
    span = f"{min(uniform):.3f}..{max(uniform):.3f}" if uniform else "none"
    print(f"{result.scaled_model}: static window {result.window[0]:.2f}-{result.window[1]:.2f} s, "
          f"{len(factors)} bodies scaled ({span}), static marker RMS {result.marker_rms_m * 1000:.1f} mm "
          f"(max {result.marker_max_m * 1000:.1f} mm at {result.max_error_marker}) before marker placement; "
          f"scale factors in {result.extra['scale_file']}")
    return 0
