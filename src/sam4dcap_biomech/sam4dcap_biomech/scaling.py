"""Scale an OpenSim model to a subject from a static trial (OpenSim ScaleTool).

Measurement-based scaling (distances between marker pairs in the static pose vs the same
distances on the model), preserve_mass_distribution, subject mass, then marker placement
(the MarkerPlacer's IK on the static pose moves the model's markers onto the subject's). The
static window is detected automatically (`static_window.find_static_window`) unless given.

Measurement sets of the project's marker sets are defined here (`MEASUREMENTS`): which marker
pairs scale which bodies. An OpenSim scale setup XML (`setup_xml`) is used as is instead, with
the model, static markers, window, mass and outputs given here overriding its own.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import Sam4dcapError
from .ik_problem import MARKER_SET_WEIGHTS, closest_marker_set
from .inverse_kinematics import load_markers
from .model_builder import load_model
from .opensim_logging import opensim_log
from .settings import check_height_m, check_mass_kg
from .static_window import find_static_window
from .streaming_ik import StreamingIK
from .timeseries import TimeSeries
from .trc import write_trc

log = logging.getLogger(__name__)


def _lr(fmt_r: str, fmt_l: str, body: str) -> list[tuple[str, str]]:
    return [(fmt_r, body.format(s="r")), (fmt_l, body.format(s="l"))]


# measurement name -> (marker pairs, bodies scaled uniformly (X Y Z) by the pairs' mean ratio).
# Both sides are averaged: a single video's depth error is side dependent, the body is not.
MEASUREMENTS: dict[str, dict[str, tuple[list[tuple[str, str]], list[str]]]] = {
    "blazepose33": {
        "pelvis": ([("left_hip", "right_hip")], ["pelvis"]),
        "thigh": ([("right_hip", "right_knee"), ("left_hip", "left_knee")], ["femur_r", "femur_l"]),
        "shank": ([("right_knee", "right_ankle"), ("left_knee", "left_ankle")], ["tibia_r", "tibia_l"]),
        "foot": ([("right_heel", "right_foot_index"), ("left_heel", "left_foot_index")],
                 ["talus_r", "calcn_r", "toes_r", "talus_l", "calcn_l", "toes_l"]),
        "torso": ([("right_shoulder", "right_hip"), ("left_shoulder", "left_hip"),
                   ("left_shoulder", "right_shoulder")], ["torso"]),
        "head": ([("left_ear", "right_ear")], ["head"]),
        "upper_arm": ([("right_shoulder", "right_elbow"), ("left_shoulder", "left_elbow")],
                      ["humerus_r", "humerus_l"]),
        "forearm": ([("right_elbow", "right_wrist"), ("left_elbow", "left_wrist")],
                    ["ulna_r", "radius_r", "hand_r", "ulna_l", "radius_l", "hand_l"]),
    },
    "opencap43": {
        "pelvis": ([("r.ASIS_study", "L.ASIS_study"), ("r.PSIS_study", "L.PSIS_study"),
                    ("r.ASIS_study", "r.PSIS_study"), ("L.ASIS_study", "L.PSIS_study")], ["pelvis"]),
        "thigh": ([("RHJC_study", "r_knee_study"), ("LHJC_study", "L_knee_study")], ["femur_r", "femur_l"]),
        "shank": ([("r_knee_study", "r_ankle_study"), ("L_knee_study", "L_ankle_study"),
                   ("r_mknee_study", "r_mankle_study"), ("L_mknee_study", "L_mankle_study")],
                  ["tibia_r", "tibia_l"]),
        "foot": ([("r_calc_study", "r_toe_study"), ("L_calc_study", "L_toe_study")],
                 ["talus_r", "calcn_r", "toes_r", "talus_l", "calcn_l", "toes_l"]),
        "torso": ([("r_shoulder_study", "r.ASIS_study"), ("L_shoulder_study", "L.ASIS_study"),
                   ("r_shoulder_study", "L_shoulder_study")], ["torso", "head"]),
        "upper_arm": ([("r_shoulder_study", "r_lelbow_study"), ("L_shoulder_study", "L_lelbow_study")],
                      ["humerus_r", "humerus_l"]),
        "forearm": ([("r_lelbow_study", "r_lwrist_study"), ("L_lelbow_study", "L_lwrist_study")],
                    ["ulna_r", "radius_r", "hand_r", "ulna_l", "radius_l", "hand_l"]),
    },
}


@dataclass(frozen=True)
class ScaleResult:
    scaled_model: Path
    window: tuple[float, float]
    marker_rms_m: float                 # static pose, scaled model before marker placement
    marker_max_m: float
    max_error_marker: str
    scale_factors: dict[str, tuple[float, float, float]]
    log_file: Path | None = None
    extra: dict = field(default_factory=dict)


def _measurement_set(osim, marker_set: str, data_names, model_markers, model_bodies):
    if marker_set not in MEASUREMENTS:
        raise Sam4dcapError(f"no measurement set for marker set {marker_set!r}; choose one of "
                            f"{', '.join(MEASUREMENTS)} or pass an OpenSim scale setup XML")
    have = set(data_names) & set(model_markers)
    mset = osim.MeasurementSet()
    used = {}
    for name, (pairs, bodies) in MEASUREMENTS[marker_set].items():
        usable = [p for p in pairs if p[0] in have and p[1] in have]
        bodies = [b for b in bodies if b in model_bodies]
        if not bodies:
            continue
        if not usable:
            missing = sorted({m for p in pairs for m in p} - have)
            raise Sam4dcapError(f"cannot scale {', '.join(bodies)}: marker(s) {', '.join(missing)} are missing "
                                "from the static trial's window (absent or NaN) or from the model")
        meas = osim.Measurement()
        meas.setName(name)
        meas.setApply(True)
        for a, b in usable:
            meas.getMarkerPairSet().cloneAndAppend(osim.MarkerPair(a, b))
        for body in bodies:
            bs = osim.BodyScale()
            bs.setName(body)
            axes = osim.ArrayStr()
            for ax in ("X", "Y", "Z"):
                axes.append(ax)
            bs.setAxisNames(axes)
            meas.getBodyScaleSet().cloneAndAppend(bs)
        mset.cloneAndAppend(meas)
        used[name] = (usable, bodies)
    return mset, used


def unusable_setup_measurements(setup_xml, usable_markers) -> list[tuple[str, list[str], list[str]]]:
    """Measurements of a scale setup none of whose marker pairs has data: OpenSim would leave their
    bodies at scale 1.0 and say so only in its log. Returns (measurement, missing markers, bodies)."""
    root = ET.parse(setup_xml).getroot()
    scaler = root.find(".//ModelScaler")
    if scaler is None or (scaler.findtext("apply") or "true").strip().lower() != "true":
        return []
    order = (scaler.findtext("scaling_order") or "measurements").split()
    if "measurements" not in order:
        return []
    have = set(usable_markers)
    out = []
    for meas in scaler.iter("Measurement"):
        if (meas.findtext("apply") or "true").strip().lower() != "true":
            continue
        pairs = [tuple((mp.findtext("markers") or "").split()) for mp in meas.iter("MarkerPair")]
        pairs = [p for p in pairs if len(p) == 2]
        if pairs and not any(a in have and b in have for a, b in pairs):
            missing = sorted({m for p in pairs for m in p} - have)
            bodies = [b.get("name") or "?" for b in meas.iter("BodyScale")]
            out.append((meas.get("name") or "?", missing, bodies))
    return out


def _static_frame_mean(markers: TimeSeries, window) -> np.ndarray:
    part = markers.slice_time(window[0] - 5e-4, window[1] + 5e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN marker -> NaN mean, by design
        return np.nanmean(part.values, axis=0)


def read_scale_factors(path) -> dict[str, tuple[float, float, float]]:
    """Body -> (sx, sy, sz) from an OpenSim ScaleSet XML (the ScaleTool's output_scale_file)."""
    root = ET.parse(path).getroot()
    out = {}
    for scale in root.iter("Scale"):
        seg = (scale.findtext("segment") or "").strip()
        vals = tuple(float(v) for v in (scale.findtext("scales") or "").split())
        if seg and len(vals) == 3:
            out[seg] = vals
    return out


def _output_files(out_path, log_file) -> tuple[Path, str, Path, Path]:
    """(scaled model path, its stem, OpenSim log, scale factors file) of a scaling run; the
    folder is created."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stem = out_path.stem
    log_path = Path(log_file) if log_file is not None else out_path.parent / f"{stem}_opensim.log"
    return out_path, stem, log_path, out_path.parent / f"{stem}_scale_factors.xml"


def scale_model(model_path, static_markers, *, height_m: float, mass_kg: float, out_path,
                marker_set: str = "blazepose33", setup_xml=None, window=None,
                marker_weights=None, log_file=None) -> ScaleResult:
    """Scale `model_path` to the subject of `static_markers` (TimeSeries or TRC path).

    window: (start_s, end_s) of the static pose; None = the setup's time range when a setup is
    given, else automatic detection. Writes `out_path` (scaled model with placed markers) and,
    beside it, `<stem>_scale_factors.xml`, `<stem>_static_markers.trc` and `<stem>_opensim.log`.
    """
    import opensim

    check_height_m(height_m)
    check_mass_kg(mass_kg)
    if setup_xml is not None and not Path(setup_xml).is_file():
        raise Sam4dcapError(f"scale setup file not found: {setup_xml}")
    model_path = Path(model_path)
    model = load_model(model_path)
    markers = load_markers(static_markers)
    out_path, stem, log_path, scale_file = _output_files(out_path, log_file)
    trc_path = out_path.parent / f"{stem}_static_markers.trc"
    window = _static_window(markers, window, setup_xml)
    model_markers, marker_set_file = _model_marker_names(model, setup_xml)
    with_data, on_model = _usable_static_markers(markers, window, model_markers, setup_xml)
    write_trc(trc_path, markers, units="m")

    if setup_xml is not None:
        tool = opensim.ScaleTool(str(setup_xml))
        weights = _setup_marker_weights(setup_xml)
    else:
        key = marker_set if marker_set in MEASUREMENTS else (closest_marker_set(markers.names) or marker_set)
        weights = dict(marker_weights) if marker_weights else dict(MARKER_SET_WEIGHTS.get(key, {}))
        model_bodies = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
        tool = _measurement_tool(opensim, stem, key, with_data, model_markers, model_bodies, on_model, weights)
    scaled_only = out_path.parent / f"{stem}_scaled_only.osim"
    _run_scale_tool(opensim, tool, model_path=model_path, marker_set_file=marker_set_file, trc_path=trc_path,
                    window=window, height_m=height_m, mass_kg=mass_kg, scaled_only=scaled_only,
                    scale_file=scale_file, out_path=out_path, log_path=log_path)
    factors = read_scale_factors(scale_file) if scale_file.is_file() else {}

    # Marker fit of the scaled model in the static pose before marker placement (placement then
    # moves the model's markers onto the subject's, so after it the static fit is exact).
    frame = _static_fit(scaled_only if scaled_only.is_file() else out_path, markers, window, on_model, weights)
    result = ScaleResult(scaled_model=out_path, window=window, marker_rms_m=frame.marker_rms_m,
                         marker_max_m=frame.marker_max_m, max_error_marker=frame.max_error_marker,
                         scale_factors=factors, log_file=log_path,
                         extra={"scale_file": scale_file, "static_trc": trc_path,
                                "marker_errors_m": frame.marker_errors_m})
    scaled_only.unlink(missing_ok=True)
    log.info("scaled %s -> %s (window %.2f-%.2f s, static marker RMS before placement %.1f mm, max %.1f mm at %s)",
             model_path.name, out_path, *window, frame.marker_rms_m * 1000, frame.marker_max_m * 1000,
             frame.max_error_marker)
    if math.isfinite(frame.marker_rms_m) and frame.marker_rms_m > 0.05:
        log.warning("static marker RMS error %.0f mm after scaling: check marker names/placement",
                    frame.marker_rms_m * 1000)
    return result


def _static_window(markers: TimeSeries, window, setup_xml) -> tuple[float, float]:
    """The static pose's window: given, else the setup's time range, else the stillest window."""
    if window is None and setup_xml is not None:
        tr = ET.parse(setup_xml).getroot().findtext(".//ModelScaler/time_range")
        if tr and len(tr.split()) == 2:
            window = tuple(float(v) for v in tr.split())
    if window is None:
        window = find_static_window(markers)
    window = (float(window[0]), float(window[1]))
    if window[1] < window[0] or window[1] < markers.time[0] - 1e-3 or window[0] > markers.time[-1] + 1e-3:
        raise Sam4dcapError(f"static window {window[0]}-{window[1]} s is outside the trial "
                            f"({markers.time[0]:.3f}-{markers.time[-1]:.3f} s)")
    return window


def _model_marker_names(model, setup_xml) -> tuple[list[str], str]:
    """(the model's markers plus the setup's extra marker set, that marker set file or "Unassigned")."""
    ms = model.getMarkerSet()
    model_markers = [ms.get(i).getName() for i in range(ms.getSize())]
    marker_set_file = "Unassigned"
    if setup_xml is not None:
        # The setup's extra marker set (e.g. gait2354_Scale_MarkerSet.xml), relative to the setup.
        text = (ET.parse(setup_xml).getroot().findtext(".//GenericModelMaker/marker_set_file") or "").strip()
        if text and text != "Unassigned":
            marker_set_file = str((Path(setup_xml).parent / text).resolve())
            model_markers += [m.get("name") or "" for m in ET.parse(marker_set_file).getroot().iter("Marker")]
    return model_markers, marker_set_file


def _usable_static_markers(markers: TimeSeries, window, model_markers, setup_xml) -> tuple[list[str], list[str]]:
    """(markers with data in the window, markers on the model); refuses a window or setup they
    cannot scale."""
    window_pose = _static_frame_mean(markers, window)
    with_data = [n for n in markers.names if np.isfinite(window_pose[markers.index(n)]).all()]
    if not with_data:
        raise Sam4dcapError(f"no marker has data in the static window {window[0]:.2f}-{window[1]:.2f} s "
                            "(all NaN): choose another window or fill the gaps")
    no_data = [n for n in markers.names if n not in with_data and n in model_markers]
    if no_data:
        log.warning("static trial markers without data in the window %.2f-%.2f s (not used for scaling): %s",
                    *window, ", ".join(no_data))
    if setup_xml is not None:
        unusable = unusable_setup_measurements(setup_xml, [n for n in with_data if n in model_markers])
        if unusable:
            raise Sam4dcapError("cannot scale " + "; ".join(
                f"{', '.join(bodies)} (measurement {m}: marker(s) {', '.join(missing)} missing from the static "
                "window)" for m, missing, bodies in unusable)
                + ": OpenSim would leave them at scale 1.0; add the markers or set apply=false on the measurement")
    on_model = [n for n in markers.names if n in model_markers]
    if len(on_model) < 3:
        raise Sam4dcapError(f"only {len(on_model)} static-trial markers are on the model "
                            f"(trial: {', '.join(markers.names[:8])}, ...; model: {', '.join(model_markers[:8])}, ...);"
                            " the markers are misnamed or the model has another marker set")
    return with_data, on_model


def _setup_marker_weights(setup_xml) -> dict[str, float]:
    """The setup's MarkerPlacer task weights (IKMarkerTask elements of the scale setup)."""
    root = ET.parse(setup_xml).getroot()
    return {t.get("name") or "": float(t.findtext("weight") or 1) for t in root.iter("IKMarkerTask")
            if (t.findtext("apply") or "true").strip() == "true"}


def _measurement_tool(osim, stem: str, marker_set: str, with_data, model_markers, model_bodies, on_model,
                      weights: dict[str, float]):
    """A ScaleTool scaling by the marker set's measurements and placing the weighted markers."""
    tool = osim.ScaleTool()
    tool.setName(stem)
    mset, _ = _measurement_set(osim, marker_set, with_data, model_markers, model_bodies)
    scaler = tool.getModelScaler()
    scaler.setApply(True)
    order = osim.ArrayStr()
    order.append("measurements")
    scaler.setScalingOrder(order)
    scaler.setMeasurementSet(mset)
    placer = tool.getMarkerPlacer()
    placer.setApply(True)
    placer.setMoveModelMarkers(True)
    tasks = placer.getIKTaskSet()
    for name in on_model:
        w = float(weights.get(name, 1.0))
        if w <= 0:
            continue
        task = osim.IKMarkerTask()
        task.setName(name)
        task.setWeight(w)
        task.setApply(True)
        tasks.cloneAndAppend(task)
    return tool


def _run_scale_tool(osim, tool, *, model_path: Path, marker_set_file: str, trc_path: Path, window, height_m: float,
                    mass_kg: float, scaled_only: Path, scale_file: Path, out_path: Path, log_path: Path) -> None:
    """Point the tool at the subject, the static trial and the output files; run it."""
    tool.setSubjectMass(float(mass_kg))
    tool.setSubjectHeight(float(height_m) * 1000.0)
    tool.getGenericModelMaker().setModelFileName(str(model_path.resolve()))
    tool.getGenericModelMaker().setMarkerSetFileName(marker_set_file)
    time_range = osim.ArrayDouble()
    time_range.append(window[0])
    time_range.append(window[1])
    scaler = tool.getModelScaler()
    scaler.setMarkerFileName(str(trc_path.resolve()))
    scaler.setTimeRange(time_range)
    scaler.setPreserveMassDist(True)
    scaler.setOutputModelFileName(str(scaled_only.resolve()))
    scaler.setOutputScaleFileName(str(scale_file.resolve()))
    placer = tool.getMarkerPlacer()
    placer.setStaticPoseFileName(str(trc_path.resolve()))
    placer.setTimeRange(time_range)
    placer.setOutputModelFileName(str(out_path.resolve()))
    placer.setOutputMotionFileName("")
    placer.setOutputMarkerFileName("")
    tool.setPathToSubject("")
    with opensim_log(log_path):
        try:
            ok = tool.run()
        except Exception as exc:  # noqa: BLE001
            raise Sam4dcapError(f"OpenSim scaling failed: {str(exc).splitlines()[0]} (log: {log_path})") from None
    if not ok or not out_path.is_file():
        raise Sam4dcapError(f"OpenSim scaling failed (see {log_path})")


def _static_fit(model_path: Path, markers: TimeSeries, window, on_model, weights: dict[str, float]):
    """IK of the model on the static window's mean pose (its marker errors)."""
    mean_pose = _static_frame_mean(markers, window)
    names = [n for n in on_model if weights.get(n, 1.0) > 0 and np.all(np.isfinite(mean_pose[markers.index(n)]))]
    ik = StreamingIK(model_path, names, marker_weights={n: weights.get(n, 1.0) for n in names}, min_markers=3)
    frame = ik.solve(float(np.mean(window)), np.array([mean_pose[markers.index(n)] for n in names]))
    if frame is None:
        raise Sam4dcapError(f"the static pose has {len(names)} usable markers on the model; the fit needs 3")
    return frame


def scale_model_manual(model_path, body_factors: dict[str, float], *, mass_kg: float, out_path,
                       log_file=None) -> ScaleResult:
    """Scale `model_path` by given uniform factors per body (OpenSim ScaleTool, manual scale
    set, mass distribution preserved at `mass_kg`); no static pose, markers move with their
    bodies. Writes `out_path` and `<stem>_scale_factors.xml` beside it. Bodies not named keep
    their size."""
    import opensim

    check_mass_kg(mass_kg)
    bad = {b: f for b, f in body_factors.items() if not (math.isfinite(f) and 0.3 <= f <= 3.0)}
    if bad:
        raise Sam4dcapError(f"scale factors outside 0.3-3: {bad}")
    model_path = Path(model_path)
    out_path, stem, log_path, scale_file = _output_files(out_path, log_file)
    tool = opensim.ScaleTool()
    tool.setName(stem)
    tool.setSubjectMass(float(mass_kg))
    tool.getGenericModelMaker().setModelFileName(str(model_path.resolve()))
    scaler = tool.getModelScaler()
    scaler.setApply(True)
    order = opensim.ArrayStr()
    order.append("manualScale")
    scaler.setScalingOrder(order)
    scale_set = opensim.ScaleSet()
    for body, factor in sorted(body_factors.items()):
        scale = opensim.Scale()
        scale.setName(body)
        scale.setSegmentName(body)
        scale.setScaleFactors(opensim.Vec3(float(factor), float(factor), float(factor)))
        scale.setApply(True)
        scale_set.cloneAndAppend(scale)
    manual_file = out_path.parent / f"{stem}_manual_scale_set.xml"
    scale_set.printToXML(str(manual_file))
    scaler.setScaleSetFile(str(manual_file.resolve()))
    scaler.setPreserveMassDist(True)
    scaler.setOutputModelFileName(str(out_path.resolve()))
    scaler.setOutputScaleFileName(str(scale_file.resolve()))
    tool.getMarkerPlacer().setApply(False)
    tool.setPathToSubject("")
    started = time.time() - 1.0
    with opensim_log(log_path):
        try:
            tool.run()
        except Exception as exc:  # noqa: BLE001
            raise Sam4dcapError(f"OpenSim scaling failed: {str(exc).splitlines()[0]} (log: {log_path})") from None
    # (run() reports False when the marker placer is off, as here: the written model decides)
    if not out_path.is_file() or out_path.stat().st_mtime < started:
        raise Sam4dcapError(f"OpenSim scaling failed (see {log_path})")
    factors = read_scale_factors(scale_file) if scale_file.is_file() else {}
    return ScaleResult(scaled_model=out_path, window=(float("nan"), float("nan")), marker_rms_m=float("nan"),
                       marker_max_m=float("nan"), max_error_marker="", scale_factors=factors, log_file=log_path,
                       extra={"scale_file": scale_file, "manual_scale_set": manual_file})
