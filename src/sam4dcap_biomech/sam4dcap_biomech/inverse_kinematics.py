"""Batch inverse kinematics with OpenSim's InverseKinematicsTool, and IK setups.

`run_ik(model, markers)` solves a whole trial with the InverseKinematicsTool. Weights come from
an OpenSim IK setup XML (`setup_xml`: marker weights, coordinate tasks, constraint weight,
accuracy, time range, so an OpenSim user's setup just works), else from `marker_weights`, else
from the project's marker-set weights (`MARKER_SET_WEIGHTS`, chosen by the markers' names).
Marker errors per frame come back with the coordinates.

Regularisation (`ik_regularization`, config ik_node.regularize_unobserved, on by default; off
when an IK setup XML defines the problem unless asked for): the marker set's weak coordinate
priors (`MARKER_SET_PRIORS`) and a task holding each coordinate no marker moves at its default.
`run_ik` and `StreamingIK` add the same tasks, so batch and streaming solve the same problem.

Joint ranges: coordinates the model clamps (every joint coordinate of the generated model) stay
inside their range. The tool solves with the clamps off (its bounded assembler is inaccurate, see
`_unclamp`), then the frames where a clamped coordinate left its range are re-solved with bounds
by StreamingIK's bounded Gauss-Newton, the solver `run_streaming_ik` uses on every frame, so both
solve the same bounded problem (`result.extra["resolved_frames"]`). Measured on the Pose2Sim demo
(bench/monocular_vs_multiview.py): monocular vs 4-view hip/knee/ankle flexion RMSE 43 -> 20 deg.

Bad input is refused before OpenSim sees it, each with one clear message: markers missing or
misnamed (named), millimetres labelled metres, frames with too few markers (NaN frames, times
named), and a model that does not fit the markers (worst markers named).
"""

from __future__ import annotations

import logging
import math
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import Sam4dcapError
from .filters import true_runs
from .ik_problem import (MARKER_SET_WEIGHTS, CoordinateTask, canonical_coordinates, closest_marker_set,
                         ik_regularization, unobserved_coordinates)
from .model_builder import load_model
from .opensim_logging import opensim_log
from .settings import IKSettings
from .storage import read_mot, write_mot, write_sto
from .streaming_ik import StreamingIK, solve_trial
from .timeseries import TimeSeries
from .trc import markers_in_mm_suspected, read_trc, write_trc

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class IKSetup:
    """What an OpenSim IK setup XML says (paths resolved against the setup's folder)."""

    marker_weights: dict[str, float]
    coordinate_tasks: dict[str, CoordinateTask]
    constraint_weight: float = math.inf
    accuracy: float | None = None
    model_file: Path | None = None
    marker_file: Path | None = None
    time_range: tuple[float, float] | None = None
    output_motion_file: str | None = None
    source: Path | None = None


def _text(elem, tag, default=None):
    child = elem.find(tag)
    return default if child is None or child.text is None or not child.text.strip() else child.text.strip()


def read_ik_setup(path) -> IKSetup:
    """Parse an OpenSim InverseKinematicsTool setup XML (IKMarkerTask / IKCoordinateTask, ...)."""
    path = Path(path)
    if not path.is_file():
        raise Sam4dcapError(f"IK setup file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise Sam4dcapError(f"{path}: not valid XML ({exc})") from None
    tool = root.find(".//InverseKinematicsTool")
    if tool is None:
        raise Sam4dcapError(f"{path}: no <InverseKinematicsTool> element; pass an OpenSim IK setup file")
    weights: dict[str, float] = {}
    for task in tool.iter("IKMarkerTask"):
        if _text(task, "apply", "true").lower() == "true":
            weights[task.get("name", "")] = float(_text(task, "weight", "1"))
    tasks: dict[str, CoordinateTask] = {}
    for task in tool.iter("IKCoordinateTask"):
        if _text(task, "apply", "true").lower() != "true":
            continue
        kind = _text(task, "value_type", "default_value")
        if kind == "from_file":
            raise Sam4dcapError(f"{path}: coordinate task {task.get('name')} takes its value from a coordinate "
                                "file, which sam4dcap does not support; use default_value or manual_value")
        value = float(_text(task, "value", "0")) if kind == "manual_value" else None
        tasks[task.get("name", "")] = CoordinateTask(float(_text(task, "weight", "1")), value)

    def resolve(text):
        return None if not text or text == "Unassigned" else (path.parent / text).resolve()

    cw = _text(tool, "constraint_weight", "Infinity")
    time_range = _text(tool, "time_range")
    tr = tuple(float(v) for v in time_range.split()) if time_range else None
    acc = _text(tool, "accuracy")
    return IKSetup(marker_weights=weights, coordinate_tasks=tasks,
                   constraint_weight=math.inf if cw.lower() in ("inf", "infinity") else float(cw),
                   accuracy=float(acc) if acc else None,
                   model_file=resolve(_text(tool, "model_file")), marker_file=resolve(_text(tool, "marker_file")),
                   time_range=tr if tr and len(tr) == 2 else None,
                   output_motion_file=_text(tool, "output_motion_file"), source=path)


@dataclass(frozen=True)
class IKResult:
    coordinates: TimeSeries             # rad for rotations, m for translations (channel_units)
    marker_rms_m: np.ndarray            # (N,) per frame
    marker_max_m: np.ndarray            # (N,)
    out_mot: Path | None = None
    marker_errors_file: Path | None = None
    log_file: Path | None = None
    max_error_marker: tuple[str, ...] = ()   # per frame, when known (streaming)
    seconds_per_frame: np.ndarray | None = None  # streaming only
    extra: dict = field(default_factory=dict)


def load_markers(markers) -> TimeSeries:
    """A marker TimeSeries (metres) from a TimeSeries or a TRC path; checks units."""
    if isinstance(markers, TimeSeries):
        if not markers.is_points:
            raise Sam4dcapError("markers must be a point TimeSeries (N, K, 3)")
        if markers.unit not in ("m", "mm", "cm"):
            raise Sam4dcapError(f"marker unit {markers.unit!r}: expected m, mm or cm")
        if markers_in_mm_suspected(markers):
            raise Sam4dcapError(f"marker values look like millimetres but the series says unit={markers.unit!r}; "
                                "convert with .to_unit('m') after setting unit='mm'")
        metres = markers if markers.unit == "m" else markers.to_unit("m")
        absurd = np.isinf(metres.values) | (np.abs(np.nan_to_num(metres.values)) > 1e4)
        if absurd.any():
            frame, marker = np.argwhere(absurd)[0][:2]
            raise Sam4dcapError(f"marker {metres.names[marker]} at t={metres.time[frame]:.3f} s is "
                                f"{metres.values[frame, marker].tolist()} m: not a position (use NaN for missing)")
        return metres
    return read_trc(markers)


def resolve_weights(marker_names, *, setup: IKSetup | None, marker_weights: Mapping[str, float] | None,
                    model_marker_names, min_markers: int) -> dict[str, float]:
    """Weights actually used, and a clear error for missing or misnamed markers."""
    names = list(marker_names)
    model_names = set(model_marker_names)
    if setup is not None and setup.marker_weights:
        weights = dict(setup.marker_weights)
        origin = f"IK setup {setup.source}"
    elif marker_weights is not None:
        weights = {k: float(v) for k, v in marker_weights.items()}
        origin = "the given marker weights"
    else:
        key = closest_marker_set(names)
        if key is not None:
            weights = dict(MARKER_SET_WEIGHTS[key])
            origin = f"the {key} marker-set weights"
        else:
            weights = {n: 1.0 for n in names if n in model_names}
            origin = "equal weights"
    wanted = {n for n, w in weights.items() if w > 0}
    not_in_data = sorted(wanted - set(names))
    not_on_model = sorted(n for n in wanted & set(names) if n not in model_names)
    if not_on_model:
        raise Sam4dcapError(f"marker(s) {', '.join(not_on_model)} (weighted by {origin}) are not on the model; "
                            "use a model carrying them or drop them from the weights")
    if not_in_data:
        missing_share = len(not_in_data) / max(len(wanted), 1)
        msg = (f"marker(s) {', '.join(not_in_data[:12])}{', ...' if len(not_in_data) > 12 else ''} "
               f"(weighted by {origin}) are missing from the marker data")
        if missing_share > 0.5 or len(wanted & set(names)) < 3:
            raise Sam4dcapError(msg + f"; the data has {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
                                " (misnamed markers? rename them to the model's names)")
        raise Sam4dcapError(msg + "; rename them in the data or give them weight 0")
    used = {n: w for n, w in weights.items() if w > 0 and n in names}
    if len(used) < min_markers:
        raise Sam4dcapError(f"only {len(used)} marker(s) in common between the data and the model "
                            f"({', '.join(sorted(used)) or 'none'}); IK needs at least {min_markers}: the data has "
                            f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''}; the model has "
                            f"{', '.join(sorted(model_names)[:8])}{', ...' if len(model_names) > 8 else ''}")
    unused_model = sorted(model_names - set(names))
    if unused_model:
        log.warning("%d model marker(s) not in the marker data, not used by IK: %s%s", len(unused_model),
                    ", ".join(unused_model[:12]), ", ..." if len(unused_model) > 12 else "")
    log.info("IK marker weights from %s (%d markers)", origin, len(used))
    return used


def solvable_frames(markers: TimeSeries, weights: Mapping[str, float], *, min_markers: int,
                    warn: bool = True) -> np.ndarray:
    """(N,) True on frames with at least min_markers weighted markers present.

    The others (the person lost, markers NaN) are not solved: their rows are NaN in every output
    and the solvable runs are solved on their own, on the trial's one time grid. Logs one warning
    (`warn`) saying how many frames are left out and where; no solvable frame at all is an error.
    """
    used = markers.select([n for n in markers.names if n in weights])
    present = (~used.missing()).sum(axis=1)
    ok = present >= min_markers
    if not ok.any():
        raise Sam4dcapError(f"no person in the markers: no frame has {min_markers} of the {len(weights)} weighted "
                            f"markers (at most {int(present.max()) if present.size else 0} present)")
    if warn and not ok.all():
        log.warning("IK: %d of %d frames (%.1f %%) have fewer than %d of the %d weighted markers, at %s: "
                    "their rows are NaN, the other frames are solved", (~ok).sum(), len(ok), 100 * (~ok).mean(),
                    min_markers, len(weights), describe_intervals(markers.time, ~ok))
    return ok


def describe_intervals(time: np.ndarray, mask: np.ndarray, *, most: int = 4) -> str:
    """"t = 1.200-1.483 s, 2.000 s, ..." for the runs of True in mask (the first `most`)."""
    runs = true_runs(mask)
    parts = [f"{time[a]:.3f} s" if b - a == 1 else f"{time[a]:.3f}-{time[b - 1]:.3f} s" for a, b in runs[:most]]
    more = f" and {len(runs) - most} more" if len(runs) > most else ""
    return "t = " + ", ".join(parts) + more


def _write_tool_trc(markers: TimeSeries, folder: Path) -> Path:
    # Metres, so OpenSim applies no unit conversion; NaN samples are read as missing markers.
    return write_trc(folder / "markers.trc", markers, units="m")


def _coordinate_units(model) -> dict[str, str]:
    cs = model.getCoordinateSet()
    return {cs.get(i).getName(): ("rad" if cs.get(i).getMotionType() == 1 else "m") for i in range(cs.getSize())}


def _fit_check(model_path, markers: TimeSeries, weights, rms: np.ndarray, *, max_rms_m: float,
               solved: np.ndarray) -> None:
    """Raise naming the worst markers when IK's marker RMS error says the model does not fit.
    Frames left unsolved on purpose (`solved` False: too few markers, NaN rows) are not judged."""
    rms = np.where(solved, rms, 0.0)
    not_finite = np.flatnonzero(~np.isfinite(rms))
    if not_finite.size:
        raise Sam4dcapError(f"IK marker error is not finite in {not_finite.size} of {rms.size} frame(s) (first at "
                            f"t={markers.time[not_finite[0]]:.3f} s): the solver could not fit the markers there "
                            "(corrupt or absurd marker values?)")
    worst_frame = int(np.argmax(rms))
    if rms[worst_frame] <= max_rms_m:
        return

    names = [n for n in markers.names if n in weights]
    ik = StreamingIK(model_path, names, marker_weights=weights, min_markers=3)
    frame = ik.solve(float(markers.time[worst_frame]), markers.select(names).values[worst_frame])
    worst = sorted(frame.marker_errors_m.items(), key=lambda kv: -kv[1])[:4] if frame is not None else []
    raise Sam4dcapError(
        f"the model does not fit the markers: marker RMS error {rms[worst_frame] * 1000:.0f} mm at "
        f"t={markers.time[worst_frame]:.3f} s (limit {max_rms_m * 1000:.0f} mm); worst markers: "
        + ", ".join(f"{n} {e * 1000:.0f} mm" for n, e in worst)
        + ". Check marker names/placement and units, or scale the model to the subject first")


def _coordinate_tasks(model, weights, setup: IKSetup | None, regularize: bool | None,
                      settings: IKSettings) -> dict:
    """The coordinate tasks of the problem: regularisation (see ik_regularization), then the setup's."""
    if regularize is None:
        regularize = settings.regularize_unobserved and setup is None
    tasks: dict[str, CoordinateTask] = {}
    if regularize:
        cs = model.getCoordinateSet()
        names = [cs.get(i).getName() for i in range(cs.getSize())]
        locked = [cs.get(i).getName() for i in range(cs.getSize()) if cs.get(i).getDefaultLocked()]
        tasks = ik_regularization(list(weights), names, unobserved=unobserved_coordinates(model, list(weights)),
                                  locked=locked)
    tasks.update(setup.coordinate_tasks if setup is not None else {})
    return tasks



def _model_marker_names(model) -> tuple[str, ...]:
    ms = model.getMarkerSet()
    return tuple(ms.get(i).getName() for i in range(ms.getSize()))


def _ik_problem(model_path, markers, *, setup_xml, marker_weights, accuracy, max_marker_rms_m,
                start_s, end_s, settings: IKSettings):
    """What batch and streaming IK share: setup, accuracy, marker window, model, weights."""
    setup = read_ik_setup(setup_xml) if setup_xml is not None else None
    if accuracy is None:
        accuracy = setup.accuracy if setup is not None and setup.accuracy else settings.accuracy
    max_marker_rms_m = settings.max_marker_rms_m if max_marker_rms_m is None else max_marker_rms_m
    series = load_markers(markers)
    if setup is not None and setup.time_range is not None and start_s is None and end_s is None:
        start_s, end_s = setup.time_range
    if start_s is not None or end_s is not None:
        # TRC times are often rounded to 1 ms: keep frames within half a millisecond of the range.
        series = series.slice_time(None if start_s is None else start_s - 5e-4,
                                   None if end_s is None else end_s + 5e-4)
        if series.n_frames == 0:
            raise Sam4dcapError(f"no marker frames in the time range {start_s}..{end_s} s")
    accuracy = IKSettings.check_accuracy(accuracy)
    model = load_model(model_path)
    weights = resolve_weights(series.names, setup=setup, marker_weights=marker_weights,
                              model_marker_names=list(_model_marker_names(model)),
                              min_markers=settings.min_markers)
    return setup, accuracy, max_marker_rms_m, series, model, weights

def run_ik(model_path, markers, *, out_mot=None, setup_xml=None, marker_weights=None,
           accuracy: float | None = None, start_s: float | None = None, end_s: float | None = None,
           log_file=None, max_marker_rms_m: float | None = None, regularize: bool | None = None,
           warn_gaps: bool = True, settings: IKSettings | None = None) -> IKResult:
    """Batch IK of a trial with OpenSim's InverseKinematicsTool.

    model_path: .osim (or opensim.Model); markers: TimeSeries (metres) or TRC path.
    Time range: start_s/end_s, else the setup's time_range, else the whole trial.
    Returns coordinates (rad/m) and per-frame marker RMS/max errors; writes out_mot (degrees)
    and, beside it, `<stem>_marker_errors.sto` and `<stem>_opensim.log`.
    settings: the solver settings (None = the config's, `IKSettings.from_config()`); the
    arguments above override them. regularize: add ik_regularization's tasks; None =
    settings.regularize_unobserved when there is no setup_xml (a setup defines the whole
    problem), else off. The tasks used are in
    `result.extra["coordinate_tasks"]`. Frames with fewer than settings.min_markers markers are
    not solved: NaN rows (`result.extra["solved_frames"]` is False there), see `solvable_frames`.
    """
    settings = settings if settings is not None else IKSettings.from_config()
    setup, accuracy, max_marker_rms_m, series, model, weights = _ik_problem(
        model_path, markers, setup_xml=setup_xml, marker_weights=marker_weights, accuracy=accuracy,
        max_marker_rms_m=max_marker_rms_m, start_s=start_s, end_s=end_s, settings=settings)
    min_markers = min(settings.min_markers, len(weights))
    solvable = solvable_frames(series, weights, min_markers=min_markers, warn=warn_gaps)
    units = _coordinate_units(model)
    coordinate_tasks = _coordinate_tasks(model, weights, setup, regularize, settings)
    clamped = _unclamp(model)

    with tempfile.TemporaryDirectory(prefix="sam4dcap_ik_") as tmp_name:
        tmp = Path(tmp_name)
        out_mot = Path(out_mot) if out_mot is not None else None
        results_dir = out_mot.parent if out_mot is not None else tmp
        results_dir.mkdir(parents=True, exist_ok=True)
        stem = out_mot.stem if out_mot is not None else "ik"
        log_path = Path(log_file) if log_file is not None else (
            results_dir / f"{stem}_opensim.log" if out_mot is not None else None)
        coords, errors, labels = _solve_runs(model, model_path, series, solvable, weights, coordinate_tasks, setup,
                                             accuracy, tmp, log_path, units, source=str(out_mot) if out_mot else "ik")
        coords, errors, resolved = _keep_to_ranges(model_path, series, coords, errors, labels, clamped, weights=weights,
                                                   coordinate_tasks=coordinate_tasks, accuracy=accuracy,
                                                   min_markers=min_markers,
                                                   constraint_weight=setup.constraint_weight if setup else math.inf)
        unbounded = np.array([units.get(n) == "rad" and n not in clamped for n in coords.names])
        coords = coords.with_values(canonical_coordinates(coords.names, coords.values, unbounded_rotations=unbounded))
        rms = errors[:, labels.index("marker_error_RMS")]
        mx = errors[:, labels.index("marker_error_max")]
        err_file = None
        if out_mot is not None:
            err_file = results_dir / f"{stem}_marker_errors.sto"
            write_mot(out_mot, coords, name=stem)
            write_sto(err_file, TimeSeries(time=series.time, names=tuple(labels), values=errors, unit="m"))
    _fit_check(model_path, series, weights, rms, max_rms_m=max_marker_rms_m, solved=solvable)
    return IKResult(coordinates=coords, marker_rms_m=rms, marker_max_m=mx, out_mot=out_mot,
                    marker_errors_file=err_file, log_file=log_path,
                    extra={"weights": weights, "accuracy": accuracy, "coordinate_tasks": coordinate_tasks,
                           "clamped_ranges": clamped, "resolved_frames": resolved, "solved_frames": solvable})


def _solve_runs(model, model_path, series: TimeSeries, solvable: np.ndarray, weights, coordinate_tasks, setup,
                accuracy, tmp: Path, log_path, units: Mapping[str, str], *, source: str):
    """(coordinates, error rows, error labels) on the trial's time grid, NaN where not solvable.

    The InverseKinematicsTool cannot take NaN frames: each run of solvable frames is solved on
    its own (a fresh, unclamped copy of the model each after the first)."""
    segments = []
    for k, (a, b) in enumerate(true_runs(solvable)):
        segment_model = model if k == 0 else load_model(model_path)
        if k:
            _unclamp(segment_model)
        segments.append((a, b, *_run_tool(segment_model, series.frames(slice(a, b)), weights, coordinate_tasks,
                                          setup, accuracy, tmp / f"segment{k}", log_path, units)))
    names, labels = segments[0][2].names, segments[0][4]   # solvable_frames refused a trial without one
    coords = TimeSeries(time=series.time, names=names, values=np.full((series.n_frames, len(names)), np.nan),
                        unit="rad", meta={"source": source},
                        channel_units={n: "m" for n in names if units.get(n) == "m"})
    errors = np.full((series.n_frames, len(labels)), np.nan)
    for a, b, seg_coords, seg_errors, _ in segments:
        coords.values[a:b] = seg_coords.select(names).values
        errors[a:b] = seg_errors
    return coords, errors, labels


def _run_tool(model, series: TimeSeries, weights, coordinate_tasks, setup, accuracy, folder: Path, log_path,
              units: Mapping[str, str]):
    """InverseKinematicsTool on `series` (every frame solvable): (coordinates, error rows, error labels)."""
    import opensim

    folder.mkdir(parents=True, exist_ok=True)
    # The tool writes <results dir>/<name>_ik_marker_errors.sto, but cuts its name at a dot
    # ("x_0.0" -> "x_0"): it runs under a fixed name in the temporary folder.
    mot_path = folder / "ik.mot"
    trc_path = _write_tool_trc(series, folder)
    tool = opensim.InverseKinematicsTool()
    tool.setName("ik")
    tool.setModel(model)
    tool.setMarkerDataFileName(str(trc_path))
    task_set = tool.getIKTaskSet()
    for name, weight in weights.items():
        task = opensim.IKMarkerTask()
        task.setName(name)
        task.setWeight(float(weight))
        task.setApply(True)
        task_set.cloneAndAppend(task)
    for name, ct in coordinate_tasks.items():
        task = opensim.IKCoordinateTask()
        task.setName(name)
        task.setWeight(ct.weight)
        task.setApply(True)
        if ct.value is None:
            task.setValueType(opensim.IKCoordinateTask.DefaultValue)
        else:
            task.setValueType(opensim.IKCoordinateTask.ManualValue)
            task.setValue(ct.value)
        task_set.cloneAndAppend(task)
    if setup is not None and not math.isinf(setup.constraint_weight):
        tool.set_constraint_weight(setup.constraint_weight)
    tool.set_accuracy(float(accuracy))
    tool.setStartTime(float(series.time[0]))
    tool.setEndTime(float(series.time[-1]))
    tool.setResultsDir(str(folder))
    tool.set_report_errors(True)
    tool.setOutputMotionFileName(str(mot_path))
    with opensim_log(log_path):
        try:
            ok = tool.run()
        except Exception as exc:  # noqa: BLE001 - OpenSim's RuntimeError text
            raise Sam4dcapError(f"OpenSim IK failed: {str(exc).splitlines()[0]}"
                                + (f" (log: {log_path})" if log_path else "")) from None
    if not ok:
        raise Sam4dcapError(f"OpenSim IK failed{f' (see {log_path})' if log_path else ''}")
    coords = read_mot(mot_path, translational={n for n, u in units.items() if u == "m"})
    err_table = opensim.TimeSeriesTable(str(folder / "ik_ik_marker_errors.sto"))
    labels = list(err_table.getColumnLabels())
    err_matrix = err_table.getMatrix()
    errors = err_matrix.to_numpy().copy()
    if coords.n_frames != series.n_frames or len(errors) != series.n_frames:
        raise Sam4dcapError(f"OpenSim IK returned {coords.n_frames} frames for {series.n_frames} marker frames "
                            f"({series.time[0]:.3f}-{series.time[-1]:.3f} s)")
    return coords, errors, labels


def _unclamp(model) -> dict[str, tuple[float, float]]:
    """Unclamp the model's clamped coordinates for the InverseKinematicsTool; returns their ranges.

    Measured: with clamped coordinates the tool's assembler leaves up to 1.1 mm marker RMS and
    0.8 deg (squat hip flexion, no coordinate near its range) on noise-free markers whatever its
    accuracy (1e-6..1e-8), against < 0.01 mm / 0.005 deg unclamped. So the tool solves the
    unclamped problem and `_keep_to_ranges` re-solves, with bounds, the frames that leave a range.
    """
    cs = model.updCoordinateSet()
    ranges = {}
    for i in range(cs.getSize()):
        c = cs.get(i)
        if c.getDefaultClamped() and not c.getDefaultLocked():
            ranges[c.getName()] = (c.getRangeMin(), c.getRangeMax())
            c.setDefaultClamped(False)
    return ranges


def _keep_to_ranges(model_path, series: TimeSeries, coords: TimeSeries, errors: np.ndarray, labels, clamped, *,
                    weights, coordinate_tasks, accuracy, min_markers, constraint_weight):
    """Re-solve the frames where the unclamped tool left a clamped coordinate's range.

    The same objective with the model's clamps, by StreamingIK's bounded Gauss-Newton from two
    start poses: the tool's solution clipped into the ranges and the previous frame's solution
    (as the streaming warm start); the lower objective wins. A bounded problem's solution that is
    inside the ranges is the unclamped one, so the other frames keep the tool's solution.
    Returns (coordinates, marker-error rows, indices of the re-solved frames).
    """
    names = [n for n in clamped if n in coords.names]
    if not names:
        return coords, errors, np.zeros(0, int)
    lo = np.array([clamped[n][0] for n in names])
    hi = np.array([clamped[n][1] for n in names])
    values = coords.select(names).values
    tol = 1e-7      # rad (m): .mot rounding
    beyond = (values < lo - tol) | (values > hi + tol)
    outside = np.flatnonzero(beyond.any(axis=1))
    if not outside.size:
        return coords, errors, outside
    used = [n for n in series.names if n in weights]
    ik = StreamingIK(model_path, used, marker_weights=weights, coordinate_tasks=coordinate_tasks, accuracy=accuracy,
                     min_markers=min_markers, constraint_weight=constraint_weight, regularize=False)
    order = [coords.names.index(n) for n in ik.coordinate_names]
    q_all = coords.values.copy()
    marker_values = series.select(used).values
    for k in outside:
        starts = [q_all[k, order]]
        if k > 0 and np.isfinite(q_all[k - 1]).all():
            starts.append(q_all[k - 1, order])
        frame = ik.solve_from(float(series.time[k]), marker_values[k], starts)
        if frame is None:
            continue
        q_all[k, order] = frame.q
        errors[k, labels.index("marker_error_RMS")] = frame.marker_rms_m
        errors[k, labels.index("marker_error_max")] = frame.marker_max_m
        if "total_squared_error" in labels:
            errors[k, labels.index("total_squared_error")] = sum(e ** 2 for e in frame.marker_errors_m.values())
    log.info("IK: %d of %d frames left a clamped coordinate's range (%s); re-solved with bounds", outside.size,
             coords.n_frames, ", ".join(n for j, n in enumerate(names) if beyond[:, j].any()))
    return coords.with_values(q_all), errors, outside


def run_streaming_ik(model_path, markers, *, out_mot=None, setup_xml=None, marker_weights=None,
                     accuracy: float | None = None, start_s: float | None = None,
                     end_s: float | None = None, max_marker_rms_m: float | None = None,
                     regularize: bool | None = None, settings: IKSettings | None = None) -> IKResult:
    """The same problem as run_ik, solved frame by frame by StreamingIK (warm start)."""
    settings = settings if settings is not None else IKSettings.from_config()
    setup, accuracy, max_marker_rms_m, series, model, weights = _ik_problem(
        model_path, markers, setup_xml=setup_xml, marker_weights=marker_weights, accuracy=accuracy,
        max_marker_rms_m=max_marker_rms_m, start_s=start_s, end_s=end_s, settings=settings)
    min_markers = min(settings.min_markers, len(weights))
    solvable = solvable_frames(series, weights, min_markers=min_markers)
    names = [n for n in series.names if n in weights]
    if regularize is None:
        regularize = settings.regularize_unobserved and setup is None
    ik = StreamingIK(model, names, marker_weights=weights,
                     coordinate_tasks=setup.coordinate_tasks if setup is not None else None,
                     accuracy=accuracy, min_markers=min_markers, regularize=regularize,
                     constraint_weight=setup.constraint_weight if setup is not None else math.inf)
    frames, seconds = solve_trial(ik, series.select(names))
    n_coords = len(ik.coordinate_names)
    # Unsolvable frames (too few markers) come back as None: NaN rows on the same time grid.
    q = np.array([f.q if f is not None else np.full(n_coords, np.nan) for f in frames])
    units = _coordinate_units(model)
    coords = TimeSeries(time=series.time, names=ik.coordinate_names, values=q, unit="rad",
                        meta={"source": "streaming_ik"},
                        channel_units={n: "m" for n in ik.coordinate_names if units[n] == "m"})
    rms = np.array([f.marker_rms_m if f is not None else np.nan for f in frames])
    mx = np.array([f.marker_max_m if f is not None else np.nan for f in frames])
    blank = np.full(n_coords, np.nan)
    err_file = None
    if out_mot is not None:
        out_mot = Path(out_mot)
        write_mot(out_mot, coords, name=out_mot.stem)
        err_file = out_mot.parent / f"{out_mot.stem}_marker_errors.sto"
        errs = TimeSeries.from_dict(series.time, {"marker_error_RMS": rms, "marker_error_max": mx}, unit="m")
        write_sto(err_file, errs)
    _fit_check(model, series, weights, rms, max_rms_m=max_marker_rms_m, solved=solvable)
    return IKResult(coordinates=coords, marker_rms_m=rms, marker_max_m=mx, out_mot=out_mot,
                    marker_errors_file=err_file,
                    max_error_marker=tuple(f.max_error_marker if f is not None else "" for f in frames),
                    seconds_per_frame=seconds, extra={"weights": weights, "accuracy": accuracy,
                                                      "coordinate_tasks": ik.coordinate_tasks,
                                                      "q_std": np.array([f.q_std if f is not None else blank
                                                                         for f in frames]),
                                                      "confidence": np.array([f.confidence if f is not None
                                                                              else np.zeros(n_coords)
                                                                              for f in frames]),
                                                      "solved_frames": solvable})
