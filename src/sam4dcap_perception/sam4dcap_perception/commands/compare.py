"""Compare a result with a reference: time alignment, RMSE/MAE/peak error/r, overlay plots, report.

RESULT is a .mot (IK coordinates), a .trc (markers) or a `sam4dcap process` output folder (its
IK .mot). REFERENCE is a .mot (mocap / OpenCap IK) or .trc of the same kind, or a folder with
calibrated multi-view videos of the same trial (`calibration/*.qca.txt` + `videos/*.mp4`, the
Pose2Sim layout): then the reference is built by triangulation and the same model, scaling and
IK as the monocular path (cached in the output folder).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("result", help="result .mot/.trc or a `sam4dcap process` output folder")
    parser.add_argument("reference", help="reference .mot/.trc, or a folder with calibration/*.qca.txt and videos/")
    parser.add_argument("--out", help="output folder (default: next to the result, compare_<reference name>)")
    parser.add_argument("--max-lag", type=float, default=1.0, metavar="S",
                        help="time-alignment search window: +-S seconds (default 1.0)")
    parser.add_argument("--no-align", action="store_true", help="compare as stamped, no time alignment")
    parser.add_argument("--align-on", metavar="NAMES",
                        help="comma-separated channels the time alignment uses (default: every common channel)")
    parser.add_argument("--rigid", action="store_true",
                        help="markers only: fit the reference to the result with a rigid transform first")
    parser.add_argument("--no-resample", action="store_true",
                        help="refuse references at another frame rate instead of resampling them")
    parser.add_argument("--height", type=float, metavar="M",
                        help="multi-view reference: subject height [m] (default: from the result's summary.json)")
    parser.add_argument("--mass", type=float, metavar="KG",
                        help="multi-view reference: subject mass [kg] (default: from the result's summary.json)")
    parser.add_argument("--max-reproj-error", type=float, default=25.0, metavar="PX",
                        help="multi-view reference: largest reprojection error of a view kept for a keypoint (default 25)")
    parser.add_argument("--fit", choices=["camera", "markers"], default=None,
                        help="multi-view reference joint angles from: camera = the model fitted to every view's 2D "
                             "keypoints, markers = marker IK on the triangulation (default: config camera_fit.default_fit)")
    parser.add_argument("--force", action="store_true", help="multi-view reference: rebuild it even if current")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    import contextlib

    from tqdm.contrib.logging import logging_redirect_tqdm

    # Log lines printed above the progress bars (multi-view keypoints) instead of through them.
    with logging_redirect_tqdm() if not args.quiet and sys.stderr.isatty() else contextlib.nullcontext():
        return _run(args)


def _run(args) -> int:
    from sam4dcap_perception.compare import compare_series, load_series

    result_path, reference_path, out = _paths(args)
    result = load_series(result_path)
    reference, mv, same_view, fixed_lag = _reference(args, result, result_path, reference_path, out)
    comparison = compare_series(result, reference, max_lag_s=args.max_lag, align_time=not args.no_align,
                                rigid=args.rigid, allow_resample=not args.no_resample,
                                align_channels=args.align_on.split(",") if args.align_on else None,
                                fixed_lag_s=fixed_lag)
    comparison.sources.update(result=str(result_path), reference=str(reference_path))
    _write_report(out, args, comparison, mv, same_view, fixed_lag, result_path, reference_path)
    _print_summary(comparison, same_view, fixed_lag, out)
    return 0


def _paths(args) -> tuple[Path, Path, Path]:
    """(result, reference, output folder, created), or one clear error."""
    from sam4dcap_biomech.errors import Sam4dcapError

    result_path, reference_path = Path(args.result), Path(args.reference)
    if not result_path.exists():
        raise Sam4dcapError(f"result not found: {result_path}")
    if not reference_path.exists():
        raise Sam4dcapError(f"reference not found: {reference_path}")
    if args.max_lag < 0:
        raise Sam4dcapError(f"--max-lag must be >= 0 (got {args.max_lag})")
    base = result_path if result_path.is_dir() else result_path.parent
    out = Path(args.out) if args.out else base / f"compare_{reference_path.stem or 'reference'}"
    out.mkdir(parents=True, exist_ok=True)
    return result_path, reference_path, out


def _reference(args, result, result_path: Path, reference_path: Path, out: Path):
    """(reference series, multi-view reference or None, the result's view of it, fixed lag or None).

    A folder of calibrated videos (no .mot/.trc in it) becomes a multi-view reference, built with
    the same model, scaling and IK as the result."""
    from sam4dcap_perception.compare import load_series

    if not (reference_path.is_dir() and not any(reference_path.glob("*.mot"))
            and not any(reference_path.glob("*.trc"))):
        return load_series(reference_path), None, None, None
    from sam4dcap_perception.multiview import find_multiview_trial
    from sam4dcap_perception.multiview_reference import multiview_reference

    calib, videos = find_multiview_trial(reference_path)
    height, mass = _subject(args, result_path)
    mv = multiview_reference(videos, calib, out_dir=out / "multiview_reference", height_m=height,
                             mass_kg=mass, progress=not args.quiet and sys.stderr.isatty(),
                             max_error_px=args.max_reproj_error, force=args.force, fit=args.fit)
    reference = load_series(mv.markers_trc if result.is_points else mv.coordinates_mot)
    same_view = _result_view(mv, result_path)
    fixed_lag = None
    if same_view is not None and not args.no_align:
        # The result was made from one of the reference's videos: same clock, known lag.
        fixed_lag = mv.lag_for_view_s(same_view)
        log.info("result video is view %s of the reference: lag %+.4f s from the views' offsets, no search",
                 same_view, fixed_lag)
    return reference, mv, same_view, fixed_lag


def _write_report(out: Path, args, comparison, mv, same_view, fixed_lag, result_path: Path,
                  reference_path: Path) -> None:
    """comparison.json, the overlay and lag plots, comparison.html."""
    from sam4dcap_perception import report as rp

    data = comparison.as_dict()
    if mv is not None:
        data["multiview_reference"] = {"out_dir": str(mv.out_dir), "cameras": mv.cameras,
                                       "frame_offsets": mv.frame_offsets, "result_view": same_view,
                                       "reprojection_px": mv.reprojection, "max_reproj_error_px": args.max_reproj_error}
    rp.write_json(out / "comparison.json", data)
    overlay = rp.plot_comparison(comparison, out / "overlay.png")
    lag_png = rp.plot_lag_scores(comparison, out / "lag.png") if not args.no_align and fixed_lag is None else None
    page = rp.HtmlReport(f"sam4dcap comparison: {result_path.name} vs {reference_path.name}")
    rp.add_comparison(page, comparison, overlay_png=overlay, lag_png=lag_png)
    if mv is not None:
        page.heading("Multi-view reference")
        page.paragraph(f"Triangulated from {len(mv.cameras)} calibrated views ({', '.join(mv.cameras)}) with "
                       f"the same model, scaling and IK as the result; files in {mv.out_dir}. "
                       f"Frame offsets found between the views: {mv.frame_offsets}.")
        page.table(["view", "median px (used)", "p90 px (used)", "median px (all seen)", "used / seen"],
                   [[v, r["used_median_px"], r["used_p90_px"], r["all_median_px"],
                     f"{r['observations_used']} / {r['observations']}"] for v, r in mv.reprojection.items()])
    page.save(out / "comparison.html")


def _print_summary(comparison, same_view, fixed_lag, out: Path) -> None:
    how = (f"same clock as view {same_view}" if fixed_lag is not None else
           f"window +-{comparison.max_lag_s:g} s, mean r {comparison.alignment_score:.3f}")
    print(f"time alignment: reference lag {comparison.lag_s:+.4f} s ({how}); overlap {comparison.result.n_frames} frames")
    print(f"{'channel':<28}{'unit':>5}{'RMSE':>10}{'MAE':>10}{'peak err':>10}{'r':>8}")
    for m in comparison.metrics:
        r = f"{m.correlation:8.3f}" if m.correlation == m.correlation else f"{'-':>8}"
        print(f"{m.name:<28}{m.unit:>5}{m.rmse:10.4g}{m.mae:10.4g}{m.max_abs_error:10.4g}{r}")
    print(f"report: {out / 'comparison.html'}")


def _result_view(mv, result_path: Path) -> str | None:
    """The reference view whose video the result was processed from (summary.json source)."""
    import json

    summary = (result_path if result_path.is_dir() else result_path.parent) / "summary.json"
    if not summary.is_file():
        return None
    source = json.loads(summary.read_text()).get("source")
    return mv.view_of(source) if source else None


def _subject(args, result_path: Path) -> tuple[float, float]:
    """Height and mass for the multi-view model: flags, else the result's summary.json."""
    import json

    from sam4dcap_biomech.errors import Sam4dcapError

    height, mass = args.height, args.mass
    summary = (result_path if result_path.is_dir() else result_path.parent) / "summary.json"
    if (height is None or mass is None) and summary.is_file():
        subject = json.loads(summary.read_text()).get("subject", {})
        height = height if height is not None else subject.get("height_m")
        mass = mass if mass is not None else subject.get("mass_kg")
    if height is None:
        raise Sam4dcapError("a multi-view reference needs the subject height: pass --height (metres)")
    if mass is None:
        raise Sam4dcapError("a multi-view reference needs the subject mass: pass --mass (kg)")
    return float(height), float(mass)
