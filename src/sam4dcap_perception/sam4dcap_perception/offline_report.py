"""Offline stages "c3d" and "report": markers as C3D; summary.json, plots, the HTML report and the
per-frame file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from sam4dcap_biomech.c3d import write_c3d
from sam4dcap_biomech.storage import read_mot
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import read_trc

from . import report as rp
from .stage_runner import ProcessOptions, StageRunner
from .virtual_markers import FRAME_TRACKED

log = logging.getLogger(__name__)


# Per-frame confidence below which a frame is listed in the summary as unreliable.
LOW_CONFIDENCE = 0.5


# --- exports and report ----------------------------------------------------------------------------
def c3d_stage(runner: StageRunner, markers_trc: Path, stem: str) -> Path:
    c3d_path = runner.out_dir / f"{stem}_markers.c3d"

    def export():
        write_c3d(c3d_path, read_trc(markers_trc))
    runner.run("c3d", export, inputs={"markers": markers_trc}, params={}, outputs=[c3d_path])
    return c3d_path


def report_stage(runner: StageRunner, arts: Mapping[str, Path], stem: str, opts: ProcessOptions, *,
                 source: Path, marker_set: str) -> dict[str, Path]:
    """Stage "report": summary.json, the per-frame file, joint-angle and marker-error plots, report.html."""
    out = runner.out_dir
    summary_path = out / "summary.json"
    frames_csv = out / f"{stem}_frames.csv"
    angles_png = out / "joint_angles.png"
    error_png = out / "marker_error.png"
    html_path = out / "report.html"

    def make_report():
        summary, coords, err = _trial_summary(runner, arts, opts, source=source, marker_set=marker_set,
                                              frames_csv=frames_csv)
        rp.write_json(summary_path, summary)
        rp.plot_joint_angles(coords, angles_png, title=f"{source.name}: sagittal joint angles")
        rp.plot_marker_error(_marker_error_channels(err), error_png)
        _html_report(html_path, summary, arts, opts, source=source, marker_set=marker_set, coords=coords,
                     angles_png=angles_png, error_png=error_png)

    inputs = {k: v for k, v in arts.items()
              if k in ("ik_mot", "ik_marker_errors", "ik_confidence", "markers_quality", "scaled_model", "id_sto")}
    runner.run("report", make_report, inputs=inputs,
               params={"height_m": opts.height_m, "mass_kg": opts.mass_kg, "backend": opts.backend,
                       "low_confidence": LOW_CONFIDENCE, "source": str(source)},
               outputs=[summary_path, frames_csv, angles_png, error_png, html_path])
    return {"summary": summary_path, "frames": frames_csv, "joint_angles_png": angles_png,
            "marker_error_png": error_png, "report": html_path}


def _marker_error_channels(err: TimeSeries) -> TimeSeries:
    """The marker_error_* channels of an IK error file (all of it when it has none)."""
    names = [n for n in err.names if "marker_error" in n]
    return err.select(names) if names else err


def _trial_summary(runner: StageRunner, arts: Mapping[str, Path], opts: ProcessOptions, *, source: Path,
                   marker_set: str, frames_csv: Path) -> tuple[dict, TimeSeries, TimeSeries]:
    """(summary.json's content, the IK coordinates, the IK marker errors); writes the per-frame file."""
    coords = read_mot(arts["ik_mot"])
    err = read_mot(arts["ik_marker_errors"])
    quality = json.loads(Path(arts["markers_quality"]).read_text())
    conf = np.array([np.nan if c is None else c for c in quality["frame_confidence"]], float)
    conf_time = np.asarray(quality["time_s"], float)
    gaps = write_frames_file(frames_csv, quality, coords, err)
    summary = {
        "source": str(source),
        "subject": {"height_m": opts.height_m, "mass_kg": opts.mass_kg},
        "backend": opts.backend,
        "marker_set": marker_set,
        "frames": coords.n_frames,
        "duration_s": float(coords.time[-1] - coords.time[0]) if coords.n_frames else 0.0,
        "rate_hz": coords.rate_hz,
        "coordinates": rp.coordinate_summary(coords),
        "ik_marker_error": rp.marker_error_summary(_marker_error_channels(err)),
        "low_confidence_frames": rp.low_confidence_frames(conf_time, conf, threshold=LOW_CONFIDENCE),
        "gaps": gaps,
        "markers_quality": quality.get("quality", {}),
        "scaling": runner.extras.get("scale", {}),
        "ik": runner.extras.get("ik", {}),
        "artefacts": {k: Path(v).name for k, v in arts.items()},
        "stages": dict(runner.status),
    }
    if "id_sto" in arts:
        forces = read_mot(arts["id_sto"])
        summary["inverse_dynamics"] = {
            "external_loads": False,
            "note": "no external loads: residuals and lower-limb moments are not physical",
            "peak_abs": {n: {"value": float(np.nanmax(np.abs(forces.values[:, i]))),
                             "unit": forces.unit_of(n)}
                         for i, n in enumerate(forces.names) if np.isfinite(forces.values[:, i]).any()},
        }
    if "ik_confidence" in arts:
        summary["ik_confidence"] = rp.coordinate_confidence_summary(read_mot(arts["ik_confidence"]))
    return summary, coords, err


def _html_report(path: Path, summary: dict, arts: Mapping[str, Path], opts: ProcessOptions, *, source: Path,
                 marker_set: str, coords: TimeSeries, angles_png: Path, error_png: Path) -> None:
    """report.html: the subject, the plots, scaling notes, gaps, summary tables, confidence, ID, files."""
    page = rp.HtmlReport(f"sam4dcap trial report: {source.name}")
    page.key_values({
        "source": str(source), "subject": f"{opts.height_m:g} m, "
                                          f"{'%g kg' % opts.mass_kg if opts.mass_kg else 'mass not given'}",
        "body estimator": opts.backend, "marker set": marker_set,
        "frames": f"{coords.n_frames} ({summary['duration_s']:.2f} s at {summary['rate_hz']:.1f} Hz)",
        "model": Path(arts.get("fitted_model", arts["scaled_model"])).name,
    })
    page.heading("Joint angles")
    page.image(angles_png, "hip, knee and ankle flexion, left (red) and right (blue)")
    page.heading("IK marker error")
    page.image(error_png, "distance between the experimental and the model markers after IK")
    scaling = summary["scaling"]
    if scaling.get("scaling") == "trial":
        page.paragraph(f"No still moment in the clip: the model was scaled from the trial itself "
                       f"({scaling.get('frames_used')} of {scaling.get('frames_total')} frames showed the body "
                       f"well; segment proportions from their median lengths, overall size from the given "
                       f"height)" + (f"; held at the bounds: {', '.join(scaling['bounded'])}"
                                     if scaling.get("bounded") else "") + ".")
    if scaling.get("scaling") == "skipped":
        page.paragraph(f"Scaling skipped, {scaling.get('model', 'the model')} was used as given: "
                       f"{scaling.get('reason', '')}", css_class="warn")
    rp.add_gap_section(page, summary["gaps"])
    rp.add_summary_tables(page, summary)
    if "ik_confidence" in summary:
        rp.add_confidence_section(page, summary["ik_confidence"])
    if "inverse_dynamics" in summary:
        page.heading("Inverse dynamics (peak absolute generalized forces)")
        page.paragraph(summary["inverse_dynamics"]["note"], css_class="warn")
        page.table(["generalized force", "unit", "peak |value|"],
                   [[n, v["unit"], v["value"]] for n, v in summary["inverse_dynamics"]["peak_abs"].items()])
    page.heading("Files")
    page.table(["artefact", "file"], [[k, Path(v).name] for k, v in arts.items()])
    page.save(path)


def write_frames_file(path: Path, quality: Mapping, coords: TimeSeries, marker_errors: TimeSeries) -> dict:
    """`<trial>_frames.csv`, one row per frame of the trial's time grid (TRC, .mot, .sto):
    time_s, status (tracked | bridged | lost), confidence (mean keypoint confidence, empty when
    lost), ik_solved (1 | 0: 0 = NaN row in the .mot/.sto), ik_marker_rms_m. Returns the
    summary's "gaps" entry (`report.gap_summary`)."""
    n = coords.n_frames
    time_s = coords.time
    status = list(quality.get("frame_status") or [])
    conf = list(quality.get("frame_confidence") or [])
    if len(status) != n:
        # Markers of another time grid (e.g. an old markers stage): status from the IK alone.
        status = [FRAME_TRACKED] * n
        conf = [None] * n
    solved = np.isfinite(coords.values).all(axis=1)
    rms = marker_errors.values[:, marker_errors.names.index("marker_error_RMS")] \
        if "marker_error_RMS" in marker_errors.names else np.full(n, np.nan)
    lines = ["time_s,status,confidence,ik_solved,ik_marker_rms_m"]
    for i in range(n):
        c = conf[i] if i < len(conf) else None
        lines.append(f"{time_s[i]:.6f},{status[i]},{'' if c is None else f'{c:.3f}'},{int(solved[i])},"
                     f"{'' if not np.isfinite(rms[i]) else f'{rms[i]:.5f}'}")
    path.write_text("\n".join(lines) + "\n")
    return rp.gap_summary(time_s, status, solved, frames_file=path.name)
