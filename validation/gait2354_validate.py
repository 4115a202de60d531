#!/usr/bin/env python
"""Validate scaling, IK (batch and streaming) and ID against OpenSim's Gait2354 subject01 outputs.

Not a test: it needs ../shared/data/gait2354 (the OpenSim example data, never copied into the
repository) and says so clearly when the folder is absent (exit code 2).

Checks (targets):
- IK of subject01_walk1.trc on OutputReference/subject01_simbody.osim with subject01_Setup_IK.xml
  matches OutputReference/subject01_walk1_ik.mot: mean per-coordinate RMS <= 0.05 deg, batch
  (InverseKinematicsTool) and streaming (StreamingIK).
- Scaling gait2354_simbody.osim with subject01_Setup_Scale.xml reproduces
  OutputReference/subject01_scaleSet_applied.xml (every factor within 1e-4).
- ID with the subject01 GRF setup (subject01_walk1_grf.xml, 6 Hz) on the reference IK motion:
  joint moments within 1 N*m RMS of OutputReference/ResultsInverseDynamics/inverse_dynamics.sto,
  and the same on our own batch IK motion (the whole chain).
Usage: python validation/gait2354_validate.py [--data DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = [ROOT.parent / "shared" / "data" / "gait2354", Path("/work/shared/data/gait2354")]
IK_TARGET_DEG, SCALE_TARGET, ID_TARGET_NM = 0.05, 1e-4, 1.0


def _find_data(arg: str | None) -> Path | None:
    for cand in ([Path(arg)] if arg else DEFAULT_DATA):
        if (cand / "subject01_walk1.trc").is_file():
            return cand
    return None


def _compare_coordinates(result, reference) -> tuple[float, float, str]:
    """Mean and max per-coordinate RMS [deg] over rotational coordinates, at the result's times."""
    # TRC times are rounded to 1 ms (0.417 for 0.41667): pair frames by nearest time (<= 1.5 ms)
    # rather than interpolating the reference at shifted times.
    nearest = np.abs(result.time[:, None] - reference.time[None, :]).argmin(axis=1)
    paired = np.abs(reference.time[nearest] - result.time) <= 1.5e-3
    if paired.sum() < 0.9 * result.n_frames:
        raise SystemExit(f"only {paired.sum()} of {result.n_frames} frames pair with the reference times")
    rms = {}
    for name in result.names:
        if result.unit_of(name) != "rad" or name not in reference.names:
            continue
        ref = reference.get(name)[nearest[paired]]
        rms[name] = float(np.rad2deg(np.sqrt(np.mean((result.get(name)[paired] - ref) ** 2))))
    worst = max(rms, key=rms.get)
    return float(np.mean(list(rms.values()))), rms[worst], worst


def _compare_moments(result, reference) -> tuple[float, str]:
    rms = {}
    for name in reference.names:
        if not name.endswith("_moment") or name.startswith("pelvis") or name not in result.names:
            continue
        keep = (result.time >= reference.time[0] - 1e-6) & (result.time <= reference.time[-1] + 1e-6)
        ref = np.interp(result.time[keep], reference.time, reference.get(name))
        rms[name] = float(np.sqrt(np.mean((result.get(name)[keep] - ref) ** 2)))
    worst = max(rms, key=rms.get)
    return rms[worst], worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="gait2354 folder (default ../shared/data/gait2354)")
    parser.add_argument("--out", default=None, help="folder for outputs (default: a temporary folder)")
    args = parser.parse_args()
    data = _find_data(args.data)
    if data is None:
        print("gait2354 validation: reference data not found (looked in "
              f"{', '.join(str(p) for p in ([Path(args.data)] if args.data else DEFAULT_DATA))}); nothing validated",
              file=sys.stderr)
        return 2

    import opensim

    from sam4dcap_biomech.inverse_dynamics import run_id
    from sam4dcap_biomech.inverse_kinematics import run_ik, run_streaming_ik
    from sam4dcap_biomech.scaling import read_scale_factors, scale_model
    from sam4dcap_biomech.storage import read_mot

    opensim.Logger.setLevelString("warn")
    ref_dir = data / "OutputReference"
    model = ref_dir / "subject01_simbody.osim"
    tmp_holder = tempfile.TemporaryDirectory() if args.out is None else None
    out = Path(args.out) if args.out else Path(tmp_holder.name)
    out.mkdir(parents=True, exist_ok=True)
    rows, ok = [], True

    # --- IK ---------------------------------------------------------------------------------
    ref_ik = read_mot(ref_dir / "subject01_walk1_ik.mot")
    for label, solve in (("batch (InverseKinematicsTool)", run_ik), ("streaming (StreamingIK)", run_streaming_ik)):
        result = solve(model, data / "subject01_walk1.trc", setup_xml=data / "subject01_Setup_IK.xml",
                       out_mot=out / f"walk1_ik_{solve.__name__}.mot")
        mean_rms, worst_rms, worst = _compare_coordinates(result.coordinates, ref_ik)
        passed = mean_rms <= IK_TARGET_DEG
        ok &= passed
        rows.append((f"IK {label}", f"mean RMS {mean_rms:.4f} deg (worst {worst} {worst_rms:.4f} deg), "
                     f"{result.coordinates.n_frames} frames", f"<= {IK_TARGET_DEG} deg", passed))

    # --- scaling ------------------------------------------------------------------------------
    scaled = scale_model(data / "gait2354_simbody.osim", data / "subject01_static.trc", height_m=1.8034,
                         mass_kg=72.6, out_path=out / "subject01_scaled.osim",
                         setup_xml=data / "subject01_Setup_Scale.xml")
    ref_factors = read_scale_factors(ref_dir / "subject01_scaleSet_applied.xml")
    diffs = {b: float(np.max(np.abs(np.subtract(scaled.scale_factors[b], f))))
             for b, f in ref_factors.items() if b in scaled.scale_factors}
    missing = sorted(set(ref_factors) - set(scaled.scale_factors))
    worst_body = max(diffs, key=diffs.get)
    passed = not missing and diffs[worst_body] <= SCALE_TARGET
    ok &= passed
    rows.append(("Scale factors (ScaleTool, Setup_Scale.xml)",
                 f"{len(diffs)} bodies, max |diff| {diffs[worst_body]:.2e} ({worst_body})"
                 + (f"; missing {missing}" if missing else ""), f"<= {SCALE_TARGET:g}", passed))

    # --- ID -------------------------------------------------------------------------------------
    ref_id = read_mot(ref_dir / "ResultsInverseDynamics" / "inverse_dynamics.sto")
    grf = data / "subject01_walk1_grf.xml"
    result = run_id(model, ref_dir / "subject01_walk1_ik.mot", external_loads_xml=grf, lowpass_cutoff_hz=6.0,
                    out_sto=out / "walk1_id.sto", start_s=0.4, end_s=1.6)
    worst_rms, worst = _compare_moments(result.forces, ref_id)
    passed = worst_rms <= ID_TARGET_NM
    ok &= passed
    rows.append(("ID joint moments (reference IK motion, GRF)", f"worst RMS {worst_rms:.4f} N*m ({worst})",
                 f"<= {ID_TARGET_NM} N*m", passed))
    ours = run_id(model, out / "walk1_ik_run_ik.mot", external_loads_xml=grf, lowpass_cutoff_hz=6.0,
                  out_sto=out / "walk1_id_our_ik.sto")
    worst_rms, worst = _compare_moments(ours.forces, ref_id)
    passed = worst_rms <= ID_TARGET_NM
    ok &= passed
    rows.append(("ID joint moments (our batch IK motion, GRF)", f"worst RMS {worst_rms:.3f} N*m ({worst}); "
                 "the motion's 1 ms-rounded TRC times change the tool's resampling", f"<= {ID_TARGET_NM} N*m",
                 passed))

    lines = ["# Gait2354 subject01 validation", "", f"Data: {data}", "",
             "| check | result | target | pass |", "|---|---|---|---|"]
    for name, text, target, passed in rows:
        lines.append(f"| {name} | {text} | {target} | {'-' if passed is None else 'yes' if passed else 'NO'} |")
    report = ROOT / "validation" / "results" / "gait2354.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"gait2354 validation: {'all checks pass' if ok else 'SOME CHECKS FAIL'} (report {report})")
    if tmp_holder is not None:
        tmp_holder.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
