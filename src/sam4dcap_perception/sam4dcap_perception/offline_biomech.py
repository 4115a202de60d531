"""Offline stages "model", "scale", "ik", "id": generated or user model, scaling (still window
or from the trial), IK (camera fit or marker IK), inverse dynamics."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from sam4dcap_biomech.camera_fit import FitSettings
from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.filters import true_runs
from sam4dcap_biomech.inverse_dynamics import run_id
from sam4dcap_biomech.inverse_kinematics import run_ik
from sam4dcap_biomech.model_builder import builder_version, load_user_model, write_model
from sam4dcap_biomech.opensim_logging import opensim_log
from sam4dcap_biomech.scaling import scale_model
from sam4dcap_biomech.static_window import find_static_window
from sam4dcap_biomech.storage import read_mot, write_sto
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import read_trc
from sam4dcap_biomech.trial_calibration import TrialCalibrationSettings, scale_model_from_trial

from .fit_views import camera_fit_unsupported, fit_and_write, fit_summary
from .stage_runner import ProcessOptions, StageRunner

log = logging.getLogger(__name__)


# --- the shared biomechanics part ----------------------------------------------------------------
def biomech_stages(runner: StageRunner, markers_trc: Path, stem: str, opts: ProcessOptions, *,
                   marker_set: str, fit_views: Callable[[], list] | None = None,
                   fit_inputs: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """Model -> scaling -> IK (-> ID) on a marker TRC; the monocular path and the multi-view
    reference both go through here, so they use the same model, scaling and IK.
    fit_views: the camera views (camera_fit.CameraView) for the camera fit, built on demand from
    the files fit_inputs; without them IK is marker IK whatever opts.fit says."""
    mass_kg = opts.mass_kg
    if mass_kg is None:
        mass_kg = float(load_config().params("ik_node")["subject_mass_kg"])
        log.warning("no --mass given: using ik_node.subject_mass_kg = %g kg from the config", mass_kg)

    arts: dict[str, Path] = {"model": _model_stage(runner, stem, opts, marker_set=marker_set, mass_kg=mass_kg)}
    arts["scaled_model"] = _scale_stage(runner, arts["model"], markers_trc, stem, opts, marker_set=marker_set,
                                        mass_kg=mass_kg)
    arts.update(_ik_stage(runner, arts["scaled_model"], markers_trc, stem, opts, fit_views=fit_views,
                          fit_inputs=fit_inputs))
    if opts.inverse_dynamics:
        arts["id_sto"] = _id_stage(runner, arts["scaled_model"], arts["ik_mot"], stem)
    return arts


def _model_stage(runner: StageRunner, stem: str, opts: ProcessOptions, *, marker_set: str, mass_kg: float) -> Path:
    """Stage "model": the user's model (+ marker set), or the generated one for this subject."""
    out = runner.out_dir
    # Model: the user's, or the project's generated full-body model for this subject.
    generic = out / f"{stem}_model.osim"
    if opts.model:
        model_inputs = {"model": opts.model}
        if opts.markerset:
            model_inputs["markerset"] = opts.markerset
        user_model, user_markerset = Path(opts.model), Path(opts.markerset) if opts.markerset else None

        def make_model():
            _user_model(user_model, user_markerset, generic)
        runner.run("model", make_model, inputs=model_inputs, params={"marker_set": marker_set}, outputs=[generic])
    else:
        def make_model():
            write_model(generic, height_m=opts.height, mass_kg=mass_kg, markers=marker_set)

        # The builder's code hash: a changed model generator re-runs this stage and those after.
        runner.run("model", make_model, inputs={},
                   params={"height_m": opts.height_m, "mass_kg": mass_kg, "marker_set": marker_set,
                           "builder": builder_version()},
                   outputs=[generic])
    return generic


def _scale_stage(runner: StageRunner, generic: Path, markers_trc: Path, stem: str, opts: ProcessOptions, *,
                 marker_set: str, mass_kg: float) -> Path:
    """Stage "scale": from a still window, else from the trial, else the model as given."""
    out = runner.out_dir
    scaled = out / f"{stem}_scaled.osim"

    def scale():
        window = opts.static_window
        if window is None:
            try:
                window = find_static_window(read_trc(markers_trc))
            except Sam4dcapError as exc:
                # A dynamic-only clip: scaled from the trial itself (segment proportions from
                # its confident frames, `trial_calibration`); when too little of the body is
                # seen for that, the generated model (built to the subject's height and mass;
                # a user's model is taken as already scaled) is used as it is. The summary and
                # the report say which.
                # A user's model is theirs (often scaled in a lab already): proportions from a
                # monocular trial never override it; only a still window rescales it.
                still = str(exc).splitlines()[0]
                if opts.model:
                    reason = f"{still}; a user's model is not rescaled from the trial"
                else:
                    try:
                        return _scale_from_trial(generic, markers_trc, scaled, stem, opts, mass_kg=mass_kg,
                                                 marker_set=marker_set, no_still_window=still)
                    except Sam4dcapError as trial_exc:
                        reason = f"{still}; trial calibration: {str(trial_exc).splitlines()[0]}"
                which = "the user's model" if opts.model else "the generated model sized by height"
                log.warning("scaling skipped, %s is used as given: %s", which, reason)
                shutil.copyfile(generic, scaled)
                return {"scaling": "skipped", "reason": reason, "model": which}
        result = scale_model(generic, markers_trc, height_m=opts.height, mass_kg=mass_kg, window=window,
                                out_path=scaled, marker_set=marker_set, log_file=out / f"{stem}_scale_opensim.log")
        return dict(_scale_extra(result), scaling="static window")
    scale_inputs = {"model": generic, "markers": markers_trc}
    if _keypoint_confidence_file(markers_trc, stem).is_file():
        scale_inputs["keypoints"] = _keypoint_confidence_file(markers_trc, stem)
    runner.run("scale", scale, inputs=scale_inputs,
               params={"height_m": opts.height_m, "mass_kg": mass_kg, "marker_set": marker_set,
                       "static_window": opts.static_window, "trial_calibration": _trial_params()},
               outputs=[scaled])
    return scaled


def _ik_stage(runner: StageRunner, scaled: Path, markers_trc: Path, stem: str, opts: ProcessOptions, *,
              fit_views: Callable[[], list] | None, fit_inputs: Mapping[str, Path] | None) -> dict[str, Path]:
    """Stage "ik": the camera fit on the 2D keypoints when there are views, else marker IK."""
    out = runner.out_dir
    arts: dict[str, Path] = {}
    ik_mot = out / f"{stem}_ik.mot"
    ik_err = out / f"{stem}_ik_marker_errors.sto"
    ik_conf = out / f"{stem}_ik_confidence.sto"
    fitted_model = out / f"{stem}_fitted.osim"

    fit_config = load_config().params("camera_fit")
    fit = opts.fit or str(fit_config["default_fit"])
    if fit == "camera" and fit_views is None:
        log.info("no camera views for this source: IK fits the 3D markers (--fit markers)")
        fit = "markers"
    views = fit_views
    if fit == "camera":
        reason = camera_fit_unsupported(scaled, read_trc(markers_trc).names)
        if reason:
            log.warning("the camera fit cannot use this model (%s): IK fits the 3D markers (--fit markers)", reason)
            fit = "markers"

    def ik():
        if fit == "camera":
            assert views is not None   # fit == "camera" only with views
            fitted = fit_and_write(scaled, read_trc(markers_trc), views(), FitSettings.from_params(fit_config),
                                   out_mot=ik_mot, out_errors=ik_err, out_confidence=ik_conf,
                                   out_model=fitted_model)
            return fit_summary(fitted)
        res = run_ik(scaled, markers_trc, out_mot=ik_mot, log_file=out / f"{stem}_ik_opensim.log", warn_gaps=False)
        if not ik_err.exists():
            err = TimeSeries.from_dict(res.coordinates.time, {"marker_error_RMS": res.marker_rms_m,
                                                              "marker_error_max": res.marker_max_m}, unit="m")
            write_sto(ik_err, err)
        return {"marker_rms_mean_m": float(np.nanmean(res.marker_rms_m)),
                "marker_max_m": float(np.nanmax(res.marker_max_m)),
                "unsolved_frames": int((~res.extra["solved_frames"]).sum())}
    camera_inputs = (fit_inputs or {}) if fit == "camera" else {}
    runner.run("ik", ik, inputs={"model": scaled, "markers": markers_trc, **camera_inputs},
               params={"fit": fit, **(fit_config if fit == "camera" else {})},
               outputs=[ik_mot, ik_err] + ([ik_conf, fitted_model] if fit == "camera" else []))
    arts["ik_mot"] = ik_mot
    arts["ik_marker_errors"] = ik_err
    if fit == "camera":
        arts["ik_confidence"] = ik_conf
        arts["fitted_model"] = fitted_model
    return arts


def _id_stage(runner: StageRunner, scaled: Path, ik_mot: Path, stem: str) -> Path:
    """Stage "id": inverse dynamics of the IK coordinates (each solved run of 4+ frames)."""
    out = runner.out_dir
    id_sto = out / f"{stem}_id.sto"

    def inverse_dynamics():
        coords = read_mot(ik_mot)
        solved = np.isfinite(coords.values).all(axis=1)
        if solved.all():
            run_id(scaled, ik_mot, out_sto=id_sto, log_file=out / f"{stem}_id_opensim.log")
            return
        # Gaps: each solved run of at least 4 frames on its own, NaN rows elsewhere (one time grid).
        forces = None
        for a, b in true_runs(solved):
            if b - a < 4:
                continue
            res = run_id(scaled, coords.frames(slice(a, b)), log_file=out / f"{stem}_id_opensim.log")
            if forces is None:
                forces = TimeSeries(time=coords.time, names=res.forces.names,
                                    values=np.full((coords.n_frames, len(res.forces.names)), np.nan),
                                    unit=res.forces.unit, meta=res.forces.meta,
                                    channel_units=res.forces.channel_units)
            forces.values[a:b] = res.forces.select(forces.names).values
        if forces is None:
            raise Sam4dcapError("inverse dynamics: no run of 4 or more solved frames in the trial")
        write_sto(id_sto, forces)
    runner.run("id", inverse_dynamics, inputs={"model": scaled, "coordinates": ik_mot}, params={},
               outputs=[id_sto])
    return id_sto


def _trial_params() -> dict:
    params = load_config().params("ik_node")
    return {k: params[k] for k in ("trial_min_confidence", "trial_min_visible_share", "trial_min_frames",
                                   "trial_max_deviation")}


def _keypoint_confidence_file(markers_trc: Path, stem: str) -> Path:
    """The markers stage's keypoints file beside the TRC (per-keypoint visibility)."""
    return Path(markers_trc).parent / f"{stem}_keypoints.npz"


def _marker_confidence(markers, keypoints_npz: Path) -> np.ndarray | None:
    """(N, K) visibility of the markers' keypoints, when the keypoints file matches the markers
    frame for frame and name for name; None otherwise (every present marker then counts)."""
    if not keypoints_npz.is_file():
        return None
    with np.load(keypoints_npz) as data:
        names = [str(n) for n in data["names"]]
        vis = np.asarray(data["visibility"], float)
        time_s = np.asarray(data["time_s"], float)
    if vis.shape[0] != markers.n_frames or not np.allclose(time_s, markers.time, atol=1e-4):
        return None
    if any(n not in names for n in markers.names):
        return None
    return vis[:, [names.index(n) for n in markers.names]]


def _scale_from_trial(generic: Path, markers_trc: Path, scaled: Path, stem: str, opts: ProcessOptions, *,
                      mass_kg: float, marker_set: str, no_still_window: str) -> dict:
    markers = read_trc(markers_trc)
    confidence = _marker_confidence(markers, _keypoint_confidence_file(markers_trc, stem))
    settings = TrialCalibrationSettings.from_params(load_config().params("ik_node"))
    result = scale_model_from_trial(generic, markers, height_m=opts.height, mass_kg=mass_kg, out_path=scaled,
                                    marker_set=marker_set, confidence=confidence, settings=settings,
                                    log_file=scaled.parent / f"{stem}_scale_opensim.log")
    calib = result.extra["trial_calibration"]
    log.info("no still moment (%s): scaled from the trial (%d of %d frames)", no_still_window,
             calib.frames_used, calib.frames_total)
    return {"scaling": "trial", "no_static_window": no_still_window,
            "confidence": "keypoint visibility" if confidence is not None else "markers present",
            "scale_factors": {k: list(v) for k, v in result.scale_factors.items()}, **calib.summary()}


def _scale_extra(result) -> dict:
    """Plain numbers a scaling result may carry (for the summary)."""
    extra: dict[str, Any] = {}
    for key in ("marker_rms_m", "marker_max_m", "scale_factors", "window", "max_error_marker"):
        value = getattr(result, key, None) if not isinstance(result, Mapping) else result.get(key)
        if isinstance(value, (int, float, np.floating)):
            extra[key] = float(value)
        elif isinstance(value, str):
            extra[key] = value
        elif isinstance(value, tuple):
            extra[key] = [float(v) for v in value]
        elif isinstance(value, Mapping):
            extra[key] = {str(k): (float(v) if isinstance(v, (int, float, np.floating)) else
                                   [float(x) for x in np.ravel(v)]) for k, v in value.items()}
    return extra


def _user_model(model: Path, markerset: Path | None, out: Path) -> None:
    """The user's model (with their marker set added, when given) written into the trial folder."""
    with opensim_log(out.with_suffix(".opensim.log")):
        m = load_user_model(model, markerset_xml=markerset)
        if not m.printToXML(str(out)):
            raise Sam4dcapError(f"could not write the model to {out}: check the folder is writable")
