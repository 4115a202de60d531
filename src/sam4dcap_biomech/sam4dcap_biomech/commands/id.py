"""Inverse dynamics: coordinates (.mot) -> generalized forces (.sto) with OpenSim's InverseDynamicsTool.

Example: sam4dcap id --model scaled.osim --coordinates walk_ik.mot --external-loads grf.xml --out walk_id.sto
Coordinates are low-pass filtered first (default config id_node.lowpass_cutoff_hz, 6 Hz).
Without --external-loads the result is flagged: residuals are not physical.
"""

from __future__ import annotations

from sam4dcap_biomech.errors import Sam4dcapError


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="PATH.osim", help="scaled model")
    parser.add_argument("--coordinates", required=True, metavar="PATH.mot", help="IK coordinates (.mot/.sto)")
    parser.add_argument("--external-loads", default=None, metavar="LOADS.xml",
                        help="OpenSim ExternalLoads XML (e.g. ground reaction forces)")
    parser.add_argument("--out", required=True, metavar="PATH.sto", help="generalized forces to write (.sto)")
    parser.add_argument("--lowpass-hz", type=float, default=None, metavar="HZ",
                        help="coordinate low-pass cutoff [Hz]; <= 0 = none (default config id_node.lowpass_cutoff_hz)")
    parser.add_argument("--start", type=float, default=None, metavar="S", help="first time [s]")
    parser.add_argument("--end", type=float, default=None, metavar="S", help="last time [s]")


def run(args) -> int:
    import sys

    import numpy as np

    from sam4dcap_biomech.inverse_dynamics import run_id

    if not str(args.out).lower().endswith(".sto"):
        raise Sam4dcapError(f"--out {args.out} must end in .sto")
    result = run_id(args.model, args.coordinates, external_loads_xml=args.external_loads,
                    lowpass_cutoff_hz=args.lowpass_hz, out_sto=args.out, start_s=args.start, end_s=args.end)
    f = result.forces
    moments = [n for n in f.names if n.endswith("_moment") and not n.startswith("pelvis")]
    peak = max(moments, key=lambda n: np.max(np.abs(f.get(n)))) if moments else None
    peak_text = f", peak |{peak}| {np.max(np.abs(f.get(peak))):.1f} N*m" if peak else ""
    print(f"{result.out_sto}: {f.n_frames} frames, {len(f.names)} generalized forces, low-pass "
          f"{result.lowpass_cutoff_hz:g} Hz{peak_text}")
    if result.implausible:
        print(f"warning: joint moments beyond human ranges: {', '.join(result.implausible)}: check the "
              "coordinates' units (inDegrees) and the external loads", file=sys.stderr)
    if result.no_external_loads:
        print("warning: no external loads given: pelvis residuals and joint moments during ground contact "
              "are not physical (give --external-loads)", file=sys.stderr)
    return 0
