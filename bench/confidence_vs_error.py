"""Per-coordinate confidence vs the actual error on real video (the Pose2Sim demo): is the confidence low where the monocular angles are wrong?

Each of the demo's four views through the monocular camera fit (`sam4dcap process`, default
`--fit camera`; the same cached stages as bench/camera_fit_demo.py in .cache/bench_camera_fit),
against the 4-view camera-fit reference of `sam4dcap compare` as truth (time-aligned by the views'
known offsets). Per view, coordinate and frame: |error| (deg) vs the emitted confidence, old (the
fit's local posterior std, 2 deg / 2 cm, the confidence before this change: `FitResult.local_confidence`)
and new (`FitResult.confidence`: local std plus the limbs' depth-flip test, fit_confidence.py, 5 deg /
5 cm), side by side, each gated at 0.5 (below = flagged). Reported: mean error of flagged and
unflagged frames, share of frames with error > 10 deg that are flagged (recall), share of flagged
frames that are fine (error <= 10 deg), AUC of (1 - confidence) for error > 10 deg; the same for the
live streaming fit (StreamingCameraFit) and its CPU per frame with and without
the flip test (three flip iterations, a third of the segments per frame in turn). Synthetic evidence with ground truth: a squat seen from the front with the 3D prior
of one shank flipped in depth (bench/camera_fit_synthetic.py's camera, the fit follows the prior).

Needs the cached demo (.cache/pose2sim_demo); says so and exits 0 when absent.
Writes bench/results/confidence_vs_error.md, .cache/bench_camera_fit/confidence_vs_error.npz
(per-view traces) and .cache/bench_camera_fit/confidence_cam0N.png (monocular vs reference traces,
low-confidence frames shaded); the last stdout line is the summary (figure last).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from camera_fit_demo import WORK      # the same cached stages
from monocular_vs_multiview import HEIGHT_M, MASS_KG, ROOT, demo_arguments

OUT = ROOT / "bench" / "results" / "confidence_vs_error.md"
NPZ = WORK / "confidence_vs_error.npz"
COORDS = [f"{c}_{s}" for s in ("r", "l") for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                                   "ankle_angle", "arm_flex", "elbow_flex")] + \
    ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "lumbar_extension"]
BAD_DEG = 10.0
GATE = 0.5


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score` for `positive` (Mann-Whitney, ties half)."""
    pos, neg = score[positive], score[~positive]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size)
    allv = np.concatenate([pos, neg])[order]
    r = np.arange(1, order.size + 1, dtype=float)
    # average ranks over ties
    uniq, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    ranks[order] = (sums / counts)[inv]
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def gate_stats(err: np.ndarray, conf: np.ndarray) -> dict:
    flagged = conf < GATE
    bad = err > BAD_DEG
    with np.errstate(invalid="ignore"):
        return {"n": int(err.size), "flagged": float(flagged.mean()) if err.size else np.nan,
                "err_flagged": float(err[flagged].mean()) if flagged.any() else np.nan,
                "err_kept": float(err[~flagged].mean()) if (~flagged).any() else np.nan,
                "recall": float(flagged[bad].mean()) if bad.any() else np.nan,
                "false_alarm": float((~bad[flagged]).mean()) if flagged.any() else np.nan,
                "bad_kept": float(bad[~flagged].mean()) if (~flagged).any() else np.nan,
                "auc": auc(1.0 - conf, bad)}


def aligned(coords, conf: dict, ref, lag: float):
    """Per-frame |error| (deg) of COORDS on the compare overlap and each confidence on those frames."""
    from sam4dcap_perception.compare import compare_series

    cmp = compare_series(coords, ref, fixed_lag_s=lag)
    rows = np.searchsorted(coords.time, cmp.result.time - 1e-9)
    names = [n for n in COORDS if n in cmp.result.names]
    err = np.abs(cmp.result.select(names).values - cmp.reference.select(names).values)
    idx = [list(coords.names).index(n) for n in names]
    return names, cmp.result.time, cmp.result.select(names).values, cmp.reference.select(names).values, err, \
        {k: v[rows][:, idx] for k, v in conf.items()}


def live_run(model: Path, markers, views, *, flip_iterations: int):
    """The streaming camera fit over the trial; q, local and new confidence, CPU s per frame."""
    from sam4dcap_biomech.camera_fit import FitSettings, StreamingCameraFit
    from sam4dcap_biomech.config import load_config
    from sam4dcap_biomech.streaming_ik import StreamingIK

    settings = FitSettings.from_params(load_config().params("camera_fit"))
    ik = StreamingIK(str(model), list(markers.names), min_markers=3)
    fit = StreamingCameraFit(ik, [views[0].camera], settings, flip_iterations=flip_iterations)
    view = views[0]
    cols = [list(view.names).index(n) if n in view.names else -1 for n in ik.marker_names]
    n, c = markers.n_frames, len(ik.coordinate_names)
    q, std, conf = np.full((n, c), np.nan), np.full((n, c), np.inf), np.zeros((n, c))
    cpu = time.process_time()
    for f in range(n):
        pix = np.array([view.pixels[f, j] if j >= 0 else (np.nan, np.nan) for j in cols])
        w = np.array([view.confidence[f, j] if j >= 0 else 0.0 for j in cols])
        w = np.where(np.isfinite(pix).all(axis=1), w, 0.0)
        fr = fit.solve(float(markers.time[f]), markers.values[f], [pix], [w])
        if fr is not None:
            q[f], std[f], conf[f] = fr.q, fr.q_std, fr.confidence
    cpu = (time.process_time() - cpu) / n
    rot = np.asarray(ik.rotational)
    ref = np.where(rot, np.deg2rad(2.0), 0.02)
    with np.errstate(over="ignore", invalid="ignore"):
        local = np.where(np.isfinite(std), 1.0 / (1.0 + (std / ref) ** 2), 0.0)
    return ik.coordinate_names, q, local, conf, cpu


PLOT = ["hip_flexion_l", "knee_angle_l", "ankle_angle_l", "hip_rotation_l", "arm_flex_r",
        "hip_flexion_r", "knee_angle_r", "ankle_angle_r", "pelvis_rotation", "elbow_flex_r"]


def plot_view(tr: dict, view: str, out_png: Path) -> None:
    """Monocular vs reference traces of one view, frames below the gate shaded (new: red, upper
    half; old: grey, lower half), both confidences dotted on the right axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, t = list(tr["names"]), tr["time"]
    dt = float(np.median(np.diff(t)))
    fig, axes = plt.subplots(5, 2, figsize=(14, 12), sharex=True)
    for ax, c in zip(axes.T.ravel(), PLOT):
        i = names.index(c)
        for k in range(len(t)):
            for conf, y0, color in ((tr["new"], 0.5, "tab:red"), (tr["old"], 0.0, "tab:gray")):
                if conf[k, i] < GATE:
                    ax.axvspan(t[k] - dt / 2, t[k] + dt / 2, ymin=y0, ymax=y0 + 0.5, color=color, alpha=0.3, lw=0)
        ax.plot(t, tr["ref"][:, i], "k-", lw=2, label="4-view reference")
        ax.plot(t, tr["mono"][:, i], "b-", lw=1.5, label=f"{view} monocular")
        ax2 = ax.twinx()
        ax2.plot(t, tr["new"][:, i], "r:", lw=1)
        ax2.plot(t, tr["old"][:, i], color="gray", ls=":", lw=1)
        ax2.set_ylim(0, 1.05)
        err = np.abs(tr["mono"][:, i] - tr["ref"][:, i])
        ax.set_title(f"{c}: mean |error| {err.mean():.1f} deg; below {GATE} new {np.mean(tr['new'][:, i] < GATE):.0%}, "
                     f"old {np.mean(tr['old'][:, i] < GATE):.0%}", fontsize=9)
        ax.set_ylabel("deg")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{view}: monocular (blue) vs 4-view reference (black); confidence < {GATE} shaded: new red (upper), "
                 "old grey (lower); confidences dotted (right axis)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def synthetic_flip() -> list[str]:
    """Squat seen from the front (4 m), exact 2D keypoints, 3D prior with the left shank and foot
    flipped in depth about the knee: error and confidence of the left and right knee/ankle."""
    import opensim

    from sam4dcap_biomech import model_builder, synthetic
    from sam4dcap_biomech.camera_fit import CameraView, FitSettings, PinholeCamera, fit_trial
    from sam4dcap_biomech.config import load_config
    from sam4dcap_biomech.fit_confidence import flipped_targets
    from sam4dcap_biomech.markersets import BLAZEPOSE33
    from sam4dcap_biomech.streaming_ik import StreamingIK

    tmp = Path(tempfile.mkdtemp(prefix="conf_syn_"))
    model = tmp / "model.osim"
    model_builder.write_model(model, height_m=1.75, mass_kg=70.0, markers="blazepose33")
    coords = synthetic.squat_trajectory(duration_s=1.0, rate_hz=30.0, height_m=1.75, depth_deg=70.0, period_s=2.0)
    names = list(BLAZEPOSE33)
    markers = synthetic.markers_from_coordinates(opensim.Model(str(model)), coords, marker_names=names)
    center = np.array([4.0, 1.0, 0.0])
    z = np.array([0.0, 0.9, 0.0]) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    K = np.array([[1400.0, 0, 960], [0, 1400.0, 540], [0, 0, 1]])
    cam = PinholeCamera("front", K, R, -R @ center)
    idx = {n: i for i, n in enumerate(names)}
    prior = markers.values.copy()
    for f in range(markers.n_frames):
        prior[f] = flipped_targets(prior[f], center, idx["left_knee"], [idx["left_ankle"]],
                                   [idx["left_heel"], idx["left_foot_index"]])
    view = CameraView(cam, tuple(names), cam.project(markers.values), np.ones(prior.shape[:2]))
    ik = StreamingIK(str(model), names, min_markers=3)
    res = fit_trial(ik, markers.with_values(prior), [view], FitSettings.from_params(load_config().params("camera_fit")))
    lines = ["| coordinate | mean abs error (deg) | old confidence (median) | new confidence (median) |",
             "|---|---|---|---|"]
    cn = list(res.coordinates.names)
    for c in ("knee_angle_l", "ankle_angle_l", "hip_rotation_l", "knee_angle_r", "ankle_angle_r", "hip_flexion_r"):
        i = cn.index(c)
        e = np.rad2deg(np.abs(res.coordinates.values[:, i] - coords.get(c)))
        lines.append(f"| {c} | {e.mean():.1f} | {np.median(res.local_confidence[:, i]):.2f} "
                     f"| {np.median(res.confidence[:, i]):.2f} |")
    return lines


def main() -> int:
    demo = demo_arguments(__doc__.splitlines()[0], "confidence_vs_error", OUT, "Confidence vs error")
    if demo is None:
        return 0
    args, calib, videos = demo

    from sam4dcap_biomech.camera_fit import FLIP_ITERATIONS_LIVE, FitSettings
    from sam4dcap_biomech.fit_confidence import combined_confidence
    from sam4dcap_biomech.config import load_config
    from sam4dcap_biomech.storage import read_mot
    from sam4dcap_biomech.trc import read_trc
    from sam4dcap_perception import offline_process as op
    from sam4dcap_perception.fit_views import fit_and_write, monocular_views
    from sam4dcap_perception.multiview_reference import multiview_reference

    t0 = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    mv = multiview_reference(videos, calib, out_dir=WORK / "multiview", height_m=HEIGHT_M, mass_kg=MASS_KG,
                             force=args.force, fit="camera")
    ref = read_mot(mv.coordinates_mot)
    settings = FitSettings.from_params(load_config().params("camera_fit"))
    pooled: dict = {}
    per_coord: dict = {}
    view_rows, traces, live_rows = [], {}, []
    scratch = Path(tempfile.mkdtemp(prefix="conf_bench_"))
    for video in videos:
        view = mv.view_of(video)
        arts = op.process_trial(video, WORK / view, op.ProcessOptions(height_m=HEIGHT_M, mass_kg=MASS_KG,
                                                                      force=args.force, fit="camera")).artefacts
        markers = read_trc(arts["markers_trc"])
        views = monocular_views(Path(arts["keypoints_npz"]), Path(arts["camera"]))
        cpu = time.process_time()
        res = fit_and_write(Path(arts["scaled_model"]), markers, views, settings, out_mot=scratch / f"{view}.mot",
                            out_errors=scratch / f"{view}_err.sto", out_confidence=scratch / f"{view}_conf.sto")
        fit_cpu = time.process_time() - cpu
        lost = ~np.isfinite(res.coordinates.values).all(axis=1)
        local = np.where(lost[:, None], 0.0, res.local_confidence)
        # The round's start: local std and flips, without the range-limit term (limit_rms).
        rotational = np.array([res.coordinates.channel_units[n] == "rad" for n in res.coordinates.names])
        prev = np.where(lost[:, None], 0.0, combined_confidence(res.q_std, res.flip_rms ** 2, rotational))
        names, t, mono, truth, err, conf = aligned(res.coordinates, {"old": local, "prev": prev, "new": res.confidence,
                                                                      "flip_deg": np.rad2deg(res.flip_rms)},
                                                   ref, mv.lag_for_view_s(view))
        traces[view] = dict(names=np.array(names), time=t, mono=mono, ref=truth, old=conf["old"], new=conf["new"],
                            flip_deg=conf["flip_deg"])
        for k, c in enumerate(names):
            per_coord.setdefault(c, {"err": [], "old": [], "prev": [], "new": []})
            per_coord[c]["err"].append(err[:, k])
            for kind in ("old", "prev", "new"):
                per_coord[c][kind].append(conf[kind][:, k])
        for kind in ("old", "prev", "new"):
            s = gate_stats(err.ravel(), conf[kind].ravel())
            view_rows.append((view, kind, s))
            pooled.setdefault(kind, {"err": [], "conf": []})
            pooled[kind]["err"].append(err.ravel())
            pooled[kind]["conf"].append(conf[kind].ravel())
        # Live: the streaming fit with and without the flip test (CPU per frame, same run).
        cn, q_live, loc_live, new_live, cpu_flip = live_run(Path(arts["scaled_model"]), markers, views,
                                                            flip_iterations=FLIP_ITERATIONS_LIVE)
        _, _, _, _, cpu_none = live_run(Path(arts["scaled_model"]), markers, views, flip_iterations=0)
        live_coords = res.coordinates.with_values(q_live)
        _, _, _, _, err_l, conf_l = aligned(live_coords, {"old": loc_live, "new": new_live}, ref,
                                            mv.lag_for_view_s(view))
        live_rows.append((view, gate_stats(err_l.ravel(), conf_l["old"].ravel()),
                          gate_stats(err_l.ravel(), conf_l["new"].ravel()), cpu_none, cpu_flip,
                          fit_cpu / markers.n_frames))
    np.savez(NPZ, **{f"{v}__{k}": a for v, d in traces.items() for k, a in d.items()})
    for view in traces:
        plot_view(traces[view], view, WORK / f"confidence_{view}.png")
    pool = {k: gate_stats(np.concatenate(v["err"]), np.concatenate(v["conf"])) for k, v in pooled.items()}

    def stat_row(label, s):
        return (f"| {label} | {s['n']} | {100 * s['flagged']:.0f} % | {s['err_flagged']:.1f} | {s['err_kept']:.1f} "
                f"| {100 * s['recall']:.0f} % | {100 * s['false_alarm']:.0f} % | {100 * s['bad_kept']:.0f} % "
                f"| {s['auc']:.2f} |")

    head = ("| view | samples | flagged (conf < 0.5) | mean error flagged (deg) | mean error kept (deg) "
            "| errors > 10 deg flagged | flagged frames fine | kept frames > 10 deg | AUC |")
    sep = "|---|---|---|---|---|---|---|---|---|"
    coord_rows = []
    for c, d in per_coord.items():
        e = np.concatenate(d["err"])
        so, sn = gate_stats(e, np.concatenate(d["prev"])), gate_stats(e, np.concatenate(d["new"]))
        coord_rows.append(f"| {c} | {np.mean(e):.1f} | {100 * np.mean(e > BAD_DEG):.0f} % "
                          f"| {100 * so['flagged']:.0f} % / {100 * sn['flagged']:.0f} % "
                          f"| {so['err_flagged']:.1f} / {sn['err_flagged']:.1f} | {so['err_kept']:.1f} / {sn['err_kept']:.1f} "
                          f"| {100 * so['recall']:.0f} % / {100 * sn['recall']:.0f} % | {so['auc']:.2f} / {sn['auc']:.2f} |")
    syn = synthetic_flip()
    seconds = time.perf_counter() - t0
    import platform
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor())
    lines = [
        "# Per-coordinate confidence vs error, monocular camera fit vs 4-view reference (Pose2Sim demo)",
        "",
        f"Subject {HEIGHT_M} m / {MASS_KG:.0f} kg; 4 calibrated 60 fps views (1.7 s). Truth: the 4-view camera fit "
        "(`sam4dcap compare`'s reference); each view's monocular camera fit (`sam4dcap process`) against it, per "
        f"frame and coordinate ({', '.join(COORDS)}). **old** = the fit's local posterior std alone (with the 3D "
        "prior counted; 0.5 at 2 deg), **prev** = local std plus the limbs' depth-flip test (fit_confidence.py; 0.5 "
        "at an expected error of 5 deg; the confidence at this round's start), **new** = prev plus, offline, the pull "
        "past the bound of a coordinate held at its range limit (`fit_confidence.pinned_msq`; live unchanged). "
        "All gated at 0.5. AUC: how well 1 - confidence ranks "
        f"the samples with error > {BAD_DEG:.0f} deg above the rest (0.5 = chance). CPU: {cpu_model}, 2 cores shared "
        f"with other jobs (CPU time per process). Run time {seconds:.0f} s.",
        "",
        "## All coordinates, per view and pooled (offline fit)",
        "",
        head.replace("| view |", "| view, confidence |"), sep,
        *(stat_row(f"{v} {k}", s) for v, k, s in view_rows),
        stat_row("all views old", pool["old"]),
        stat_row("all views prev", pool["prev"]),
        stat_row("all views new", pool["new"]),
        "",
        "## Per coordinate, all views (prev / new)",
        "",
        "| coordinate | mean error (deg) | frames > 10 deg | flagged | mean error flagged | mean error kept "
        "| errors > 10 deg flagged | AUC |",
        "|---|---|---|---|---|---|---|---|",
        *coord_rows,
        "",
        "## Live (StreamingCameraFit, causal; three flip iterations, a third of the limb segments per frame in turn)",
        "",
        "CPU per frame of the streaming fit without and with the flip test (same process, same frames), and "
        "the offline fit's CPU per frame (three flip iterations).",
        "",
        "| view | AUC old / new | errors > 10 deg flagged old / new | flagged frames fine old / new "
        "| CPU ms/frame without flip | with flip | offline fit ms/frame |",
        "|---|---|---|---|---|---|---|",
        *(f"| {v} | {o['auc']:.2f} / {n['auc']:.2f} | {100 * o['recall']:.0f} % / {100 * n['recall']:.0f} % "
          f"| {100 * o['false_alarm']:.0f} % / {100 * n['false_alarm']:.0f} % | {1000 * a:.1f} | {1000 * b:.1f} "
          f"| {1000 * c:.0f} |" for v, o, n, a, b, c in live_rows),
        "",
        "Traces with the frames below the gate shaded, per view: `.cache/bench_camera_fit/confidence_cam0N.png`.",
        "",
        "## Synthetic: one shank's 3D prior flipped in depth (ground truth)",
        "",
        "Squat (1 s, 30 Hz) seen from the front at 4 m, exact 2D keypoints, the 3D prior's left ankle/heel/toe "
        "flipped about the knee along the camera's lines of sight (the two-fold ambiguity of a monocular limb).",
        "",
        *syn,
        "",
    ]
    OUT.write_text("\n".join(lines))
    po, pp, pn = pool["old"], pool["prev"], pool["new"]
    print(f"confidence_vs_error: errors > {BAD_DEG:.0f} deg flagged old {100 * po['recall']:.0f} % prev "
          f"{100 * pp['recall']:.0f} % new {100 * pn['recall']:.0f} %, flagged frames fine old "
          f"{100 * po['false_alarm']:.0f} % prev {100 * pp['false_alarm']:.0f} % new {100 * pn['false_alarm']:.0f} %; "
          f"AUC old {po['auc']:.2f} prev {pp['auc']:.2f} new {pn['auc']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
