#!/usr/bin/env python
"""Accuracy against ground truth: synthetic trials through the project's model -> scaling + IK.

A 1.82 m / 80 kg subject (the project's model built at that size) performs gait, squat and drop
jump trials (synthetic.*_trajectory, 60 Hz); its markers (forward kinematics) get soft-tissue-like
noise (5 mm RMS per axis, 70 % as slow drift) and 2 % dropouts (gaps up to 0.2 s). A generic
1.70 m model is scaled from a noisy static trial of the subject, then batch IK
(InverseKinematicsTool) runs on the raw markers, and on markers gap-filled and low-passed at
6 Hz, and on the noise-free markers (the bias of the IK priors). Per-coordinate MAE / RMSE against
the known joint angles, for both marker sets; blazepose33 with its default IK priors
(ik_problem.MARKER_SET_PRIORS) and without them (regularize=False).
Target: <= 2 deg lower-limb with 5 mm noise (for a marker set that observes every dof).
Writes bench/results/accuracy_synthetic.md; the last stdout line is the summary (figure last).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOWER = ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "hip_flexion_r", "hip_adduction_r",
         "hip_rotation_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "hip_adduction_l",
         "hip_rotation_l", "knee_angle_l", "ankle_angle_l"]
SUBJECT_H, SUBJECT_KG, GENERIC_H = 1.82, 80.0, 1.70
NOISE_M, DROPOUT, DURATION_S, RATE_HZ, TARGET_DEG = 0.005, 0.02, 3.0, 60.0, 2.0


def _errors(result, truth):
    err = np.rad2deg(result.select(LOWER).values - truth.select(LOWER).values)
    return np.mean(np.abs(err), axis=0), np.sqrt(np.mean(err ** 2, axis=0))


def main() -> int:
    import opensim

    from sam4dcap_biomech import model_builder, synthetic
    from sam4dcap_biomech.filters import butterworth_zero_phase, fill_gaps
    from sam4dcap_biomech.inverse_kinematics import run_ik
    from sam4dcap_biomech.scaling import scale_model

    opensim.Logger.setLevelString("warn")
    trials = {"gait": synthetic.gait_trajectory, "squat": synthetic.squat_trajectory,
              "drop jump": synthetic.drop_jump_trajectory}
    table = []       # (marker_set label, preprocessing, trial, mae (13,), rmse (13,))
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for marker_set in ("opencap43", "blazepose33"):
            generic = tmp / f"generic_{marker_set}.osim"
            model_builder.write_model(generic, height_m=GENERIC_H, mass_kg=70.0, markers=marker_set)
            subject = model_builder.build_model(height_m=SUBJECT_H, mass_kg=SUBJECT_KG, markers=marker_set)
            static = synthetic.markers_from_coordinates(
                subject, synthetic.static_trajectory(2.0, RATE_HZ, height_m=SUBJECT_H))
            static = synthetic.add_marker_noise(static, sigma_m=NOISE_M, seed=11)
            scaled = scale_model(generic, static, height_m=SUBJECT_H, mass_kg=SUBJECT_KG,
                                 out_path=tmp / f"scaled_{marker_set}.osim", marker_set=marker_set).scaled_model
            for k, (trial, make) in enumerate(trials.items()):
                truth = make(duration_s=DURATION_S, rate_hz=RATE_HZ, height_m=SUBJECT_H)
                clean = synthetic.markers_from_coordinates(subject, truth)
                noisy = synthetic.add_marker_noise(clean, sigma_m=NOISE_M, dropout_fraction=DROPOUT, seed=100 + k)
                filled, _ = fill_gaps(noisy, max_gap_frames=int(0.25 * RATE_HZ))
                smoothed = butterworth_zero_phase(filled, cutoff_hz=6.0)
                variants = [(marker_set, None)]
                if marker_set == "blazepose33":
                    variants = [("blazepose33 (priors off)", False), ("blazepose33 (default priors)", None)]
                for label, regularize in variants:
                    for prep, markers in (("noise-free", clean), ("raw", noisy),
                                          ("gap-filled + 6 Hz low-pass", smoothed)):
                        result = run_ik(scaled, markers, regularize=regularize).coordinates
                        mae, rmse = _errors(result, truth)
                        table.append((label, prep, trial, mae, rmse))
    seconds = time.perf_counter() - t_start

    lines = ["# Accuracy against ground truth (synthetic trials, scaling + batch IK)", "",
             f"Subject {SUBJECT_H} m / {SUBJECT_KG:.0f} kg; generic model {GENERIC_H} m scaled from a noisy static "
             f"trial; trials {DURATION_S:.0f} s at {RATE_HZ:.0f} Hz; marker noise {NOISE_M * 1000:.0f} mm RMS per "
             f"axis (70 % slow drift), {DROPOUT:.0%} dropouts. Errors in degrees over the lower-limb and pelvis "
             f"angles ({len(LOWER)} coordinates). Target: <= {TARGET_DEG} deg. Run time {seconds:.0f} s.", "",
             "| marker set | markers | trial | mean MAE | mean RMSE | max RMSE (coordinate) |", "|---|---|---|---|---|---|"]
    for marker_set, prep, trial, mae, rmse in table:
        worst = int(np.argmax(rmse))
        lines.append(f"| {marker_set} | {prep} | {trial} | {mae.mean():.2f} | {rmse.mean():.2f} | "
                     f"{rmse[worst]:.2f} ({LOWER[worst]}) |")
    lines += ["", "Per-coordinate RMSE (deg), mean over the three trials:", "",
              "| marker set | markers | " + " | ".join(LOWER) + " |", "|---|---|" + "---|" * len(LOWER)]
    groups = {}
    for marker_set, prep, _, _, rmse in table:
        groups.setdefault((marker_set, prep), []).append(rmse)
    for (marker_set, prep), rows in groups.items():
        lines.append(f"| {marker_set} | {prep} | " + " | ".join(f"{v:.2f}" for v in np.mean(rows, axis=0)) + " |")
    lines += ["",
              "BlazePose's 33 points put only the two hip keypoints on the pelvis, a few millimetres off the "
              "hip centres: pelvis tilt, hip flexion and lumbar extension form a near null space and femoral "
              "rotation is barely observable, so without priors 5 mm noise moves them by 6-15 degrees. The "
              "default blazepose33 priors (weak IK coordinate tasks: lumbar angles, hip and arm rotation "
              "toward 0, weight 2e-4) trade that noise for a bias, visible in the noise-free rows (exact trial markers, model "
              "scaled from the noisy static trial): the trial's lumbar flexion is carried into pelvis tilt and hip flexion (largest in the squat). "
              "OpenCap's 43 markers (ASIS/PSIS, thigh and shank clusters) observe every lower-limb degree "
              "of freedom and get no prior."]
    out = ROOT / "bench" / "results" / "accuracy_synthetic.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")

    def summary(marker_set, prep):
        rows = [r for r in table if r[0] == marker_set and r[1] == prep]
        return np.mean([r[4].mean() for r in rows]), max(r[4].max() for r in rows)

    oc_raw = summary("opencap43", "raw")
    oc_f = summary("opencap43", "gap-filled + 6 Hz low-pass")
    bp_off = summary("blazepose33 (priors off)", "raw")
    bp_raw = summary("blazepose33 (default priors)", "raw")
    bp_bias = summary("blazepose33 (default priors)", "noise-free")
    print(f"accuracy_synthetic: 5 mm noise + 2% dropouts, lower-limb RMSE (deg, mean/max over coordinates and "
          f"trials): opencap43 raw {oc_raw[0]:.2f}/{oc_raw[1]:.2f}, low-passed {oc_f[0]:.2f}/{oc_f[1]:.2f}; "
          f"blazepose33 raw without priors {bp_off[0]:.2f}/{bp_off[1]:.2f}, with default priors "
          f"{bp_raw[0]:.2f}/{bp_raw[1]:.2f} (noise-free bias {bp_bias[0]:.2f}/{bp_bias[1]:.2f}); "
          f"target <= {TARGET_DEG}; opencap43 mean lower-limb RMSE {oc_raw[0]:.2f} deg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
