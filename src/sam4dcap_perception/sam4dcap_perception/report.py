"""Trial reports: summary.json numbers, PNG plots (matplotlib Agg), one self-contained HTML file.

The HTML report embeds every image as a base64 PNG and uses no external script or stylesheet,
so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from sam4dcap_biomech.filters import jitter, true_runs
from sam4dcap_biomech.fit_confidence import GATE_CONFIDENCE
from sam4dcap_biomech.timeseries import TimeSeries

# Sagittal joint angles plotted like the paper's figures (left and right on one axis).
JOINT_PLOTS = (
    ("Hip flexion", "hip_flexion_l", "hip_flexion_r"),
    ("Knee flexion", "knee_angle_l", "knee_angle_r"),
    ("Ankle dorsiflexion", "ankle_angle_l", "ankle_angle_r"),
)
_LEFT, _RIGHT, _REF = "#d62728", "#1f77b4", "#444444"


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _in_degrees(coordinates: TimeSeries) -> TimeSeries:
    return coordinates.to_unit("deg") if coordinates.unit in ("rad", "deg") else coordinates


# --- numbers -------------------------------------------------------------------------------
def coordinate_summary(coordinates: TimeSeries) -> dict[str, dict]:
    """Per coordinate: unit, min/max with their times, range of motion, jitter.

    Rotations in degrees, translations in metres; jitter is the mean absolute second difference
    (unit per frame^2, `filters.jitter`), a measure of frame-to-frame noise.
    """
    deg = _in_degrees(coordinates)
    jit = jitter(deg)
    out = {}
    for i, name in enumerate(deg.names):
        v = deg.values[:, i]
        ok = np.isfinite(v)
        unit = "m" if deg.unit_of(name) == "m" else ("deg" if deg.unit == "deg" else deg.unit)
        if not ok.any():
            out[name] = {"unit": unit, "valid_frames": 0}
            continue
        i_max = int(np.nanargmax(v))
        i_min = int(np.nanargmin(v))
        out[name] = {
            "unit": unit,
            "valid_frames": int(ok.sum()),
            "min": float(v[i_min]), "min_time_s": float(deg.time[i_min]),
            "max": float(v[i_max]), "max_time_s": float(deg.time[i_max]),
            "range_of_motion": float(v[i_max] - v[i_min]),
            "mean": float(np.nanmean(v)),
            "jitter_per_frame2": _finite(jit[name]),
        }
    return out


def low_confidence_frames(time: np.ndarray, confidence: np.ndarray, *, threshold: float) -> dict:
    """Frames whose confidence (0..1, NaN = no detection) is below `threshold`, as index ranges."""
    conf = np.asarray(confidence, float)
    low = ~(conf >= threshold)          # NaN (no person) counts as low
    idx = np.nonzero(low)[0]
    runs = []
    if idx.size:
        start = prev = int(idx[0])
        for k in idx[1:]:
            k = int(k)
            if k != prev + 1:
                runs.append((start, prev))
                start = k
            prev = k
        runs.append((start, prev))
    return {
        "threshold": threshold,
        "count": int(idx.size),
        "share": float(idx.size / max(1, conf.size)),
        "ranges": [{"first_frame": a, "last_frame": b, "start_s": float(time[a]), "end_s": float(time[b])}
                   for a, b in runs],
    }


# Confidence below this marks a coordinate as untrusted in a frame: its expected error (the fit's
# posterior std and the limbs' depth flips one camera cannot tell apart) is above 5 deg / 5 cm
# (fit_confidence.GATE_CONFIDENCE, the threshold a controller gates on).
LOW_COORDINATE_CONFIDENCE = GATE_CONFIDENCE


def coordinate_confidence_summary(confidence: TimeSeries, *, threshold: float = LOW_COORDINATE_CONFIDENCE) -> dict:
    """Per coordinate: median confidence (0..1, from the camera fit), the share of frames below
    `threshold` and those frames as time spans ("untrusted": first/last frame and seconds);
    coordinates no keypoint determines (confidence 0 throughout) are listed apart."""
    out = {}
    for i, name in enumerate(confidence.names):
        c = confidence.values[:, i]
        ok = np.isfinite(c)
        low = low_confidence_frames(confidence.time, np.where(ok, c, 0.0), threshold=threshold)
        out[name] = {"median": _finite(np.median(c[ok])) if ok.any() else None,
                     "share_below": _finite(np.mean(c[ok] < threshold)) if ok.any() else None,
                     "untrusted": low["ranges"]}
    return {"threshold": threshold, "coordinates": out,
            "undetermined": [n for n, v in out.items() if v["median"] == 0.0]}


def add_confidence_section(report: "HtmlReport", summary: Mapping) -> None:
    """The per-coordinate confidence of the fit: a controller can gate on the companion file."""
    report.heading("Joint-angle confidence")
    report.paragraph(
        "From the camera fit: how well the 2D keypoints determine each coordinate per frame, "
        "1 / (1 + e^2 / (5 deg)^2) of its expected error e (the fit's posterior standard deviation and the "
        "limbs' depth flips that one camera cannot tell apart; 5 cm for translations). Below "
        f"{summary['threshold']:g} a coordinate is untrusted in that frame (expected error above 5 deg): "
        "do not act on it. Per-frame values are in the *_ik_confidence.sto file next to the .mot and in "
        "JointKinematics.confidence.")
    rows = [[n, v["median"], v["share_below"], _spans(v.get("untrusted") or [])]
            for n, v in summary["coordinates"].items() if n not in summary["undetermined"]]
    report.table(["coordinate", "median confidence", f"frames below {summary['threshold']:g}",
                  "untrusted (s)"], rows)
    if summary["undetermined"]:
        report.paragraph("Not determined by any keypoint (held at their default): "
                         + ", ".join(summary["undetermined"]), css_class="warn")


def _spans(ranges: Sequence[Mapping], most: int = 4) -> str:
    """Time spans of low-confidence frame ranges, "0.10-0.45, 1.20-1.60 (+3 more)"."""
    text = ", ".join(f"{r['start_s']:.2f}-{r['end_s']:.2f}" for r in ranges[:most])
    return text + (f" (+{len(ranges) - most} more)" if len(ranges) > most else "") if ranges else "none"


def marker_error_summary(marker_error: TimeSeries) -> dict:
    """IK marker error channels (metres) -> mean / max per channel."""
    out = {}
    for i, name in enumerate(marker_error.names):
        v = marker_error.values[:, i]
        ok = np.isfinite(v)
        out[name] = {"mean_m": _finite(np.mean(v[ok])) if ok.any() else None,
                     "max_m": _finite(np.max(v[ok])) if ok.any() else None}
    return out


def write_json(path: str | Path, data: Mapping) -> Path:
    path = Path(path)

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return float(x) if math.isfinite(float(x)) else None
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        if isinstance(x, Path):
            return str(x)
        return x

    path.write_text(json.dumps(clean(dict(data)), indent=2) + "\n")
    return path


# --- plots ---------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_joint_angles(coordinates: TimeSeries, path: str | Path, *, title: str = "",
                      reference: TimeSeries | None = None, reference_label: str = "reference") -> Path:
    """Hip, knee and ankle flexion, left and right over time (one panel per joint)."""
    plt = _pyplot()
    deg = _in_degrees(coordinates)
    ref = _in_degrees(reference) if reference is not None else None
    fig, axes = plt.subplots(len(JOINT_PLOTS), 1, figsize=(8, 2.4 * len(JOINT_PLOTS)), sharex=True)
    for ax, (label, left, right) in zip(np.atleast_1d(axes), JOINT_PLOTS):
        drew = False
        for name, color, side in ((left, _LEFT, "L"), (right, _RIGHT, "R")):
            if name in deg.names:
                ax.plot(deg.time, deg.get(name), color=color, lw=1.5, label=side)
                drew = True
            if ref is not None and name in ref.names:
                ax.plot(ref.time, ref.get(name), color=color, lw=1.0, ls="--", label=f"{side} {reference_label}")
        if not drew:
            ax.text(0.5, 0.5, "not in this model", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(f"{label} [deg]")
        ax.grid(alpha=0.3)
        if drew:
            ax.legend(loc="upper right", fontsize=8, ncol=2)
    np.atleast_1d(axes)[-1].set_xlabel("time [s]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_marker_error(marker_error: TimeSeries, path: str | Path, *, title: str = "IK marker error") -> Path:
    """Marker error channels (metres, e.g. rms and max per frame) over time, plotted in cm."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    for i, name in enumerate(marker_error.names):
        ax.plot(marker_error.time, 100.0 * marker_error.values[:, i], lw=1.2, label=name)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("marker error [cm]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_comparison(comparison, path: str | Path, *, channels: Sequence[str] | None = None,
                    max_channels: int = 12, labels: tuple[str, str] = ("result", "reference")) -> Path:
    """Result and aligned reference overlaid, one small panel per channel (largest RMSE first
    when there are more than `max_channels`)."""
    plt = _pyplot()
    if channels is None:
        ranked = sorted((m for m in comparison.metrics if m.n_samples), key=lambda m: -(m.rmse or 0))
        preferred = [n for _, l, r in JOINT_PLOTS for n in (l, r)]
        names = [n for n in preferred if any(m.name == n for m in ranked)]
        names += [m.name for m in ranked if m.name not in names]
        channels = names[:max_channels]
    n = max(1, len(channels))
    cols = 3 if n > 4 else min(n, 2)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.4 * rows), squeeze=False, sharex=True)
    res, ref = comparison.result, comparison.reference
    for k, name in enumerate(channels):
        ax = axes[k // cols][k % cols]
        i = res.names.index(name)
        m = comparison.metric(name)
        if res.is_points:
            # Markers: the vertical (y) coordinate shows the motion best.
            a, b = res.values[:, i, 1], ref.values[:, i, 1]
            unit = "m (y)"
        else:
            a, b = res.values[:, i], ref.values[:, i]
            unit = m.unit
        ax.plot(res.time, a, color=_RIGHT, lw=1.3, label=labels[0])
        ax.plot(ref.time, b, color=_REF, lw=1.0, ls="--", label=labels[1])
        ax.set_title(f"{name}  RMSE {m.rmse:.3g} {m.unit}", fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    for k in range(len(channels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time [s]", fontsize=8)
    fig.suptitle(f"{labels[0]} vs {labels[1]} (reference shifted by {comparison.lag_s:+.3f} s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_lag_scores(comparison, path: str | Path) -> Path:
    """Mean correlation against the tried lag: shows how clear the chosen alignment is."""
    plt = _pyplot()
    lags, scores = comparison.lag_scores
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot(lags, scores, color=_RIGHT)
    ax.axvline(comparison.lag_s, color=_LEFT, ls="--", label=f"lag {comparison.lag_s:+.3f} s")
    ax.set_xlabel("reference lag [s]")
    ax.set_ylabel("mean correlation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


# --- HTML ----------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
.warn{color:#a33}.muted{color:#777;font-size:.85em}code{background:#f6f6f6;padding:0 .2em}
"""


@dataclass
class HtmlReport:
    """Builds one self-contained HTML page: headings, paragraphs, tables, embedded PNGs."""
    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> "HtmlReport":
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def paragraph(self, text: str, *, css_class: str = "") -> "HtmlReport":
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def key_values(self, items: Mapping[str, object]) -> "HtmlReport":
        return self.table(["", ""], [[k, v] for k, v in items.items()], header=False)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[object]], *, header: bool = True,
              digits: int = 3) -> "HtmlReport":
        def cell(v):
            if isinstance(v, (float, np.floating)):
                return "–" if not np.isfinite(v) else f"{v:.{digits}g}"
            return html.escape("–" if v is None else str(v))

        out = ["<table>"]
        if header:
            out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>")
        out.append("</table>")
        self.parts.append("".join(out))
        return self

    def image(self, png_path: str | Path, caption: str = "") -> "HtmlReport":
        data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img alt="{html.escape(caption or Path(png_path).stem)}" '
                          f'src="data:image/png;base64,{data}">{cap}</figure>')
        return self

    def render(self) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = "\n".join(self.parts)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
                f"<h1>{html.escape(self.title)}</h1><p class=\"muted\">generated {stamp} by sam4dcap</p>\n"
                f"{body}\n</body></html>\n")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.render(), encoding="utf-8")
        return path


def gap_summary(time: np.ndarray, status: Sequence[str], solved: np.ndarray, *, frames_file: str = "") -> dict:
    """Frames without a usable person, for summary.json: counts per status ("tracked",
    "bridged", "lost"), IK-unsolved frames, and the intervals [start_s, end_s] of unusable frames
    (lost or not solved; NaN rows in the outputs)."""
    status_arr = np.asarray(status, dtype=str)
    unusable = (status_arr == "lost") | ~np.asarray(solved, bool)
    intervals = [[float(time[a]), float(time[b - 1])] for a, b in true_runs(unusable)]
    n = len(status)
    return {
        "frames": n,
        "tracked_frames": int((status_arr == "tracked").sum()),
        "bridged_frames": int((status_arr == "bridged").sum()),
        "lost_frames": int((status_arr == "lost").sum()),
        "unsolved_frames": int(unusable.sum()),
        "unsolved_fraction": float(unusable.mean()) if n else 0.0,
        "unsolved_intervals_s": intervals,
        "frames_file": frames_file,
    }


def gap_warning(gaps: Mapping) -> str:
    """One line saying how much of the trial was lost and where; "" when nothing was."""
    if not gaps or not gaps.get("unsolved_frames"):
        if gaps and gaps.get("bridged_frames"):
            return (f"{gaps['bridged_frames']} frame(s) without the person were bridged by interpolation "
                    f"(lower confidence, flagged in {gaps.get('frames_file') or 'the frames file'})")
        return ""
    spans = gaps["unsolved_intervals_s"]
    where = ", ".join(f"{a:.2f}-{b:.2f} s" if b > a else f"{a:.2f} s" for a, b in spans[:4])
    if len(spans) > 4:
        where += f" and {len(spans) - 4} more"
    bridged = f"; {gaps['bridged_frames']} more bridged" if gaps.get("bridged_frames") else ""
    return (f"person lost in {gaps['unsolved_frames']} of {gaps['frames']} frames "
            f"({100 * gaps['unsolved_fraction']:.1f} %) at {where}: NaN rows in the TRC, .mot and .sto, "
            f"flagged in {gaps.get('frames_file') or 'the frames file'}{bridged}")


def add_gap_section(report: HtmlReport, gaps: Mapping) -> None:
    """The lost/bridged frames of a trial (summary.json "gaps")."""
    if not gaps:
        return
    report.heading("Frames without the person")
    text = gap_warning(gaps)
    report.paragraph(text or "The person was seen and solved in every frame.", css_class="warn" if text else "")
    if gaps.get("unsolved_intervals_s"):
        report.table(["from [s]", "to [s]"], [[a, b] for a, b in gaps["unsolved_intervals_s"][:50]])


def add_summary_tables(report: HtmlReport, summary: Mapping) -> None:
    """Range-of-motion table (and low-confidence frames) of a `summary.json` dict."""
    coords = summary.get("coordinates", {})
    if coords:
        report.heading("Range of motion")
        rows = []
        for name, c in coords.items():
            if not c.get("valid_frames"):
                rows.append([name, c.get("unit", ""), None, None, None, None, 0])
                continue
            rows.append([name, c["unit"], c["min"], c["max"], c["range_of_motion"],
                         c.get("jitter_per_frame2"), c["valid_frames"]])
        report.table(["coordinate", "unit", "min", "max", "range", "jitter /frame²", "frames"], rows)
    low = summary.get("low_confidence_frames")
    if low:
        report.heading("Frames with low confidence")
        report.paragraph(f"{low['count']} frame(s) ({low['share']:.0%}) below confidence "
                         f"{low['threshold']:g}.", css_class="warn" if low["count"] else "")
        if low["ranges"]:
            report.table(["first frame", "last frame", "from [s]", "to [s]"],
                         [[r["first_frame"], r["last_frame"], r["start_s"], r["end_s"]] for r in low["ranges"][:50]])


def add_comparison(report: HtmlReport, comparison, *, overlay_png: str | Path | None = None,
                   lag_png: str | Path | None = None, title: str = "Comparison with the reference") -> None:
    """Alignment facts, the per-channel metric table and the plots of one `Comparison`."""
    report.heading(title)
    facts = {
        "result": comparison.sources.get("result", ""),
        "reference": comparison.sources.get("reference", ""),
        "time alignment (reference lag)": {
            "search": f"{comparison.lag_s:+.4f} s (searched ±{comparison.max_lag_s:g} s, "
                      f"mean r {comparison.alignment_score:.3f})",
            "given": f"{comparison.lag_s:+.4f} s (same clock: known from the recording, not searched)",
            "none": "none (compared as stamped)"}.get(comparison.lag_source, f"{comparison.lag_s:+.4f} s"),
        "overlap": f"{comparison.result.time[0]:.3f} – {comparison.result.time[-1]:.3f} s "
                   f"({comparison.result.n_frames} frames)",
        "frame rates": f"result {comparison.result_rate_hz:.2f} Hz, reference {comparison.reference_rate_hz:.2f} Hz",
    }
    if comparison.rigid_transform is not None:
        facts["spatial alignment"] = "rigid (rotation + translation) fit of the reference markers"
    if comparison.only_in_result or comparison.only_in_reference:
        facts["not compared"] = (f"{len(comparison.only_in_result)} channel(s) only in the result, "
                                 f"{len(comparison.only_in_reference)} only in the reference")
    report.key_values(facts)
    report.table(["channel", "unit", "RMSE", "MAE", "peak error", "peak diff", "r", "samples"],
                 [[m.name, m.unit, m.rmse, m.mae, m.max_abs_error, m.peak_difference, m.correlation, m.n_samples]
                  for m in comparison.metrics])
    if overlay_png is not None:
        report.image(overlay_png, "result (solid) and time-aligned reference (dashed)")
    if lag_png is not None:
        report.image(lag_png, "mean correlation of the common channels against the reference lag")
