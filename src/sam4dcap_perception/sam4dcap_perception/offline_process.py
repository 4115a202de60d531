"""Offline trials: video or recorded bag -> markers, model, scaling, IK, (ID), C3D, report.

`process_trial` runs the stages of one trial into one folder. Every stage writes a small manifest
(`.sam4dcap/<stage>.json`: hashes of its input files, its parameters, hashes of its outputs);
running again with the same inputs reuses a stage whose manifest matches and whose outputs are
untouched, unless `force`. Changing an upstream output changes the downstream inputs' hashes,
so only what depends on a change runs again.

`process_batch` runs many trials over a process pool (one subfolder each); a failed trial is
reported in the batch summary without stopping the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from sam4dcap_biomech.errors import MissingDependencyError, Sam4dcapError
from sam4dcap_biomech.filters import true_runs
from sam4dcap_biomech.timeseries import TimeSeries

from .fit_views import write_camera_file
from .virtual_markers import FRAME_LOST, FRAME_TRACKED

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
BAG_EXTENSIONS = (".mcap", ".db3")
MANIFEST_DIR = ".sam4dcap"
MANIFEST_VERSION = 1
# Per-frame confidence below which a frame is listed in the summary as unreliable.
LOW_CONFIDENCE = 0.5


@dataclass(frozen=True)
class ProcessOptions:
    height_m: float | None
    mass_kg: float | None = None
    backend: str = "blazepose"
    model: str | None = None            # user .osim: used instead of the generated model
    markerset: str | None = None        # user marker set .xml added to the user model
    start_s: float = 0.0
    end_s: float | None = None
    inverse_dynamics: bool = False
    force: bool = False
    static_window: tuple[float, float] | None = None   # (start_s, end_s) of a still pose for scaling
    person: str | None = None           # subject choice (--person); None = body_estimator_node.person
    fit: str | None = None              # IK: "camera" (2D keypoints through the camera) | "markers"; None = config camera_fit.default_fit

    def check(self) -> None:
        if self.height_m is None:
            raise Sam4dcapError("missing subject height: pass --height in metres (e.g. --height 1.75)")
        if not 0.5 <= self.height_m <= 2.5:
            raise Sam4dcapError(f"--height {self.height_m} m is outside 0.5..2.5 m (give metres, not cm)")
        if self.mass_kg is not None and not 10.0 <= self.mass_kg <= 300.0:
            raise Sam4dcapError(f"--mass {self.mass_kg} kg is outside 10..300 kg")
        if self.markerset and not self.model:
            raise Sam4dcapError("--markerset needs --model (the marker set is added to that model)")
        for flag, value in (("--model", self.model), ("--markerset", self.markerset)):
            if value and not Path(value).is_file():
                raise Sam4dcapError(f"{flag} file not found: {value}")
        if self.model and Path(self.model).suffix.lower() != ".osim":
            raise Sam4dcapError(f"--model {self.model}: expected an OpenSim .osim file")
        if self.markerset and Path(self.markerset).suffix.lower() != ".xml":
            raise Sam4dcapError(f"--markerset {self.markerset}: expected an OpenSim marker set .xml")
        if self.fit not in (None, "camera", "markers"):
            raise Sam4dcapError(f"--fit {self.fit!r}: expected camera or markers")
        if self.start_s < 0 or (self.end_s is not None and self.end_s and self.end_s <= self.start_s):
            raise Sam4dcapError(f"time window {self.start_s}..{self.end_s} s is empty or negative")


@dataclass
class TrialResult:
    source: str
    out_dir: str
    ok: bool
    error: str = ""
    stages: dict[str, str] = field(default_factory=dict)        # stage -> "ran" | "reused" | "skipped"
    artefacts: dict[str, str] = field(default_factory=dict)     # kind -> path
    seconds: float = 0.0
    warning: str = ""       # one line: frames lost (NaN in the outputs) and where


# --- inputs ----------------------------------------------------------------------------------
def source_kind(path: str | Path) -> str:
    """'video' or 'bag' for a processable input; one clear error otherwise."""
    p = Path(path)
    if not p.exists():
        raise Sam4dcapError(f"input not found: {p}")
    if p.is_dir():
        if (p / "metadata.yaml").is_file() or any(p.glob("*.mcap")) or any(p.glob("*.db3")):
            return "bag"
        raise Sam4dcapError(f"{p}: a folder that is not a rosbag2 bag (pass its videos, or the folder to batch)")
    suffix = p.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in BAG_EXTENSIONS:
        return "bag"
    raise Sam4dcapError(f"{p}: unknown input type {suffix or '(no extension)'!r}; give a video "
                        f"({', '.join(VIDEO_EXTENSIONS)}) or a rosbag2 bag folder / .mcap")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Videos and bags named, plus the videos and bags inside named folders (not recursive)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not (p / "metadata.yaml").is_file() and not any(p.glob("*.mcap")):
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS
                           or q.is_dir() and (q / "metadata.yaml").is_file())
            if not found:
                raise Sam4dcapError(f"{p}: folder holds no video ({', '.join(VIDEO_EXTENSIONS)}) or bag")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise Sam4dcapError("no input given: pass a video, a bag, a folder of videos, or several")
    return out


# --- stage reuse ---------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if p.is_dir():
        for q in sorted(p.rglob("*")):
            if q.is_file():
                h.update(str(q.relative_to(p)).encode())
                h.update(file_sha256(q).encode())
        return h.hexdigest()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def _code_version() -> str:
    """The installed sam4dcap version: results of another release are not reused."""
    import importlib.metadata

    try:
        return importlib.metadata.version("sam4dcap_perception")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class StageRunner:
    """Runs named stages into `out_dir`, reusing those whose manifest still matches."""

    def __init__(self, out_dir: str | Path, *, force: bool = False, on_stage: Callable[[str, str], None] | None = None):
        self.out_dir = Path(out_dir)
        self.force = force
        self.status: dict[str, str] = {}
        self.extras: dict[str, dict] = {}
        self._on_stage = on_stage
        (self.out_dir / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)

    def manifest_path(self, name: str) -> Path:
        return self.out_dir / MANIFEST_DIR / f"{name}.json"

    def _rel(self, p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(self.out_dir.resolve()))
        except ValueError:
            return str(Path(p).resolve())

    def run(self, name: str, fn: Callable[[], Mapping | None], *, inputs: Mapping[str, str | Path],
            params: Mapping, outputs: Sequence[str | Path]) -> dict:
        """Run `fn` unless a matching manifest says its outputs are current. Returns the
        stage's extra data (what `fn` returned, stored in the manifest)."""
        wanted = {
            "version": MANIFEST_VERSION,
            "code": _code_version(),
            "inputs": {k: file_sha256(v) for k, v in sorted(inputs.items())},
            "params": _jsonable(dict(params)),
        }
        path = self.manifest_path(name)
        if not self.force and path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = {}
            same = all(old.get(k) == v for k, v in wanted.items())
            outs = old.get("outputs", {})
            intact = same and all(
                (self.out_dir / rel).exists() and file_sha256(self.out_dir / rel) == digest
                for rel, digest in outs.items()) and {self._rel(Path(o)) for o in outputs} <= set(outs)
            if intact:
                self.status[name] = "reused"
                self.extras[name] = old.get("extra", {})
                log.info("stage %s: reused (inputs and parameters unchanged)", name)
                if self._on_stage:
                    self._on_stage(name, "reused")
                return self.extras[name]
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        extra = dict(fn() or {})
        missing = [str(o) for o in outputs if not Path(o).exists()]
        if missing:
            raise Sam4dcapError(f"stage {name} did not write {', '.join(missing)}")
        record = dict(wanted, outputs={self._rel(Path(o)): file_sha256(o) for o in outputs},
                      extra=_jsonable(extra), seconds=round(time.perf_counter() - t0, 3))
        path.write_text(json.dumps(record, indent=1) + "\n")
        self.status[name] = "ran"
        self.extras[name] = record["extra"]
        log.info("stage %s: done in %.1f s", name, record["seconds"])
        if self._on_stage:
            self._on_stage(name, "ran")
        return self.extras[name]


def _need(module: str, stage: str):
    """Import a stage's module, or fail that stage with one clear line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"stage {stage}: {module} is not available ({exc})") from None


def _progress_bar(enabled: bool, **kw):
    from tqdm import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr, **kw)


# --- the shared biomechanics part ----------------------------------------------------------------
def biomech_stages(runner: StageRunner, markers_trc: Path, stem: str, opts: ProcessOptions, *,
                   marker_set: str, fit_views: Callable[[], list] | None = None,
                   fit_inputs: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """Model -> scaling -> IK (-> ID) on a marker TRC; the monocular path and the multi-view
    reference both go through here, so they use the same model, scaling and IK.
    fit_views: the camera views (camera_fit.CameraView) for the camera fit, built on demand from
    the files fit_inputs; without them IK is marker IK whatever opts.fit says."""
    out = runner.out_dir
    arts: dict[str, Path] = {}
    mass_kg = opts.mass_kg
    if mass_kg is None:
        from sam4dcap_biomech.config import load_config

        mass_kg = float(load_config().params("ik_node")["subject_mass_kg"])
        log.warning("no --mass given: using ik_node.subject_mass_kg = %g kg from the config", mass_kg)

    # Model: the user's, or the project's generated full-body model for this subject.
    generic = out / f"{stem}_model.osim"
    if opts.model:
        model_inputs = {"model": opts.model}
        if opts.markerset:
            model_inputs["markerset"] = opts.markerset

        def make_model():
            _user_model(Path(opts.model), Path(opts.markerset) if opts.markerset else None, generic)
        runner.run("model", make_model, inputs=model_inputs, params={"marker_set": marker_set}, outputs=[generic])
    else:
        def make_model():
            mb = _need("sam4dcap_biomech.model_builder", "model")
            mb.write_model(generic, height_m=opts.height_m, mass_kg=mass_kg, markers=marker_set)
        from sam4dcap_biomech.model_builder import builder_version

        # The builder's code hash: a changed model generator re-runs this stage and those after.
        runner.run("model", make_model, inputs={},
                   params={"height_m": opts.height_m, "mass_kg": mass_kg, "marker_set": marker_set,
                           "builder": builder_version()},
                   outputs=[generic])
    arts["model"] = generic

    scaled = out / f"{stem}_scaled.osim"

    def scale():
        sc = _need("sam4dcap_biomech.scaling", "scale")
        window = opts.static_window
        if window is None:
            from sam4dcap_biomech.static_window import find_static_window
            from sam4dcap_biomech.trc import read_trc

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
        result = sc.scale_model(generic, markers_trc, height_m=opts.height_m, mass_kg=mass_kg, window=window,
                                out_path=scaled, marker_set=marker_set, log_file=out / f"{stem}_scale_opensim.log")
        return dict(_scale_extra(result), scaling="static window")
    scale_inputs = {"model": generic, "markers": markers_trc}
    if _keypoint_confidence_file(markers_trc, stem).is_file():
        scale_inputs["keypoints"] = _keypoint_confidence_file(markers_trc, stem)
    runner.run("scale", scale, inputs=scale_inputs,
               params={"height_m": opts.height_m, "mass_kg": mass_kg, "marker_set": marker_set,
                       "static_window": opts.static_window, "trial_calibration": _trial_params()},
               outputs=[scaled])
    arts["scaled_model"] = scaled

    ik_mot = out / f"{stem}_ik.mot"
    ik_err = out / f"{stem}_ik_marker_errors.sto"
    ik_conf = out / f"{stem}_ik_confidence.sto"
    from sam4dcap_biomech.config import load_config

    fit_config = load_config().params("camera_fit")
    fit = opts.fit or str(fit_config["default_fit"])
    if fit == "camera" and fit_views is None:
        log.info("no camera views for this source: IK fits the 3D markers (--fit markers)")
        fit = "markers"
    if fit == "camera":
        from sam4dcap_biomech.trc import read_trc

        from .fit_views import camera_fit_unsupported

        reason = camera_fit_unsupported(scaled, read_trc(markers_trc).names)
        if reason:
            log.warning("the camera fit cannot use this model (%s): IK fits the 3D markers (--fit markers)", reason)
            fit = "markers"

    def ik():
        from sam4dcap_biomech.storage import write_sto

        if fit == "camera":
            from sam4dcap_biomech.camera_fit import FitSettings
            from sam4dcap_biomech.trc import read_trc

            from .fit_views import fit_and_write, fit_summary

            res = fit_and_write(scaled, read_trc(markers_trc), fit_views(), FitSettings.from_params(fit_config),
                                out_mot=ik_mot, out_errors=ik_err, out_confidence=ik_conf)
            return fit_summary(res)
        ikm = _need("sam4dcap_biomech.inverse_kinematics", "ik")
        res = ikm.run_ik(scaled, markers_trc, out_mot=ik_mot, log_file=out / f"{stem}_ik_opensim.log",
                         warn_gaps=False)
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
               outputs=[ik_mot, ik_err] + ([ik_conf] if fit == "camera" else []))
    arts["ik_mot"] = ik_mot
    arts["ik_marker_errors"] = ik_err
    if fit == "camera":
        arts["ik_confidence"] = ik_conf

    if opts.inverse_dynamics:
        id_sto = out / f"{stem}_id.sto"

        def inverse_dynamics():
            from sam4dcap_biomech.storage import read_mot, write_sto

            idm = _need("sam4dcap_biomech.inverse_dynamics", "id")
            coords = read_mot(ik_mot)
            solved = np.isfinite(coords.values).all(axis=1)
            if solved.all():
                idm.run_id(scaled, ik_mot, out_sto=id_sto, log_file=out / f"{stem}_id_opensim.log")
                return
            # Gaps: each solved run of at least 4 frames on its own, NaN rows elsewhere (one time grid).
            forces = None
            for a, b in true_runs(solved):
                if b - a < 4:
                    continue
                res = idm.run_id(scaled, coords.frames(slice(a, b)), log_file=out / f"{stem}_id_opensim.log")
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
        arts["id_sto"] = id_sto
    return arts


def _trial_params() -> dict:
    from sam4dcap_biomech.config import load_config

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
    from sam4dcap_biomech.config import load_config
    from sam4dcap_biomech.trc import read_trc
    from sam4dcap_biomech.trial_calibration import TrialCalibrationSettings, scale_model_from_trial

    markers = read_trc(markers_trc)
    confidence = _marker_confidence(markers, _keypoint_confidence_file(markers_trc, stem))
    settings = TrialCalibrationSettings.from_params(load_config().params("ik_node"))
    result = scale_model_from_trial(generic, markers, height_m=opts.height_m, mass_kg=mass_kg, out_path=scaled,
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
    extra = {}
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
    from sam4dcap_biomech.opensim_logging import opensim_log

    mb = _need("sam4dcap_biomech.model_builder", "model")
    with opensim_log(out.with_suffix(".opensim.log")):
        m = mb.load_user_model(model, markerset_xml=markerset)
        if not m.printToXML(str(out)):
            raise Sam4dcapError(f"could not write the model to {out}: check the folder is writable")


# --- markers: from a video or from a recorded bag --------------------------------------------------
def frame_confidence(confidence: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """One number per frame: mean keypoint confidence, NaN where no person was tracked."""
    conf = np.asarray(confidence, float)
    out = np.full(conf.shape[0], np.nan)
    ok = np.asarray(tracked, bool)
    if ok.any():
        out[ok] = conf[ok].mean(axis=1)
    return out


def write_keypoints(npz_path: Path, json_path: Path, observations: Sequence, *, source: str,
                    lr_swapped: np.ndarray | None = None) -> None:
    """Per-frame 2D/3D keypoints of the tracked person (NaN when missing) as .npz and .json, as the
    estimator gave them; `lr_swapped` (N,): frames whose left/right labels the markers stage
    exchanged (`lr_consistency`), stored so later stages (the camera fit) read the same labels."""
    obs = list(observations)
    names = next((tuple(o.names) for o in obs if o.tracked and o.names), ())
    k = len(names)
    n = len(obs)
    time_s = np.array([o.time_s for o in obs], float)
    tracked = np.array([bool(o.tracked) for o in obs])
    # Another person overlapped the subject: identity held by appearance only (confidence lowered).
    overlap = np.array([bool(o.extra.get("overlap", False)) for o in obs])
    # The landmarks' colours drifted from the subject's typical ones (a possible mixed skeleton).
    identity_doubt = np.array([bool(o.extra.get("identity_doubt", False)) for o in obs])
    k2 = np.full((n, k, 2), np.nan)
    k3 = np.full((n, k, 3), np.nan)
    conf = np.zeros((n, k))
    vis = np.zeros((n, k))
    for i, o in enumerate(obs):
        if not o.tracked or not k:
            continue
        if o.keypoints_2d is not None:
            k2[i] = o.keypoints_2d
        if o.keypoints_3d is not None:
            k3[i] = o.keypoints_3d
        if o.confidence is not None:
            conf[i] = o.confidence
        if o.visibility is not None:
            vis[i] = o.visibility
    skeleton = next((o.skeleton for o in obs if o.tracked), "")
    np.savez_compressed(npz_path, time_s=time_s, names=np.array(names), tracked=tracked, overlap=overlap,
                        identity_doubt=identity_doubt, keypoints_2d=k2,
                        keypoints_3d=k3, confidence=conf, visibility=vis, skeleton=skeleton, source=source,
                        lr_swapped=np.zeros(n, bool) if lr_swapped is None else np.asarray(lr_swapped, bool))

    def r(a, digits):
        return [[None if not np.isfinite(x) else round(float(x), digits) for x in row] for row in a]

    frames = [{"index": i, "time_s": round(float(time_s[i]), 6), "tracked": bool(tracked[i]),
               "overlap": bool(overlap[i]), "identity_doubt": bool(identity_doubt[i]),
               "keypoints_2d_px": r(k2[i], 2) if tracked[i] else None,
               "keypoints_3d_m": r(k3[i], 4) if tracked[i] else None,
               "confidence": [round(float(c), 3) for c in conf[i]] if tracked[i] else None,
               "visibility": [round(float(v), 3) for v in vis[i]] if tracked[i] else None}
              for i in range(n)]
    json_path.write_text(json.dumps({"source": source, "skeleton": skeleton, "names": list(names),
                                     "keypoints_2d": "pixels, x right, y down",
                                     "keypoints_3d": "metres, camera axes, hip-centred (estimator output)",
                                     "frames": frames}) + "\n")


def _marker_stage_paths(out: Path, stem: str) -> tuple[Path, Path, Path, Path]:
    """Files of the markers stage, whatever the source: TRC, keypoints npz/json, quality."""
    return (out / f"{stem}_markers.trc", out / f"{stem}_keypoints.npz", out / f"{stem}_keypoints.json",
            out / f"{stem}_markers_quality.json")


def _camera_path(out: Path, stem: str) -> Path:
    """The camera the markers stage placed the world in (intrinsics, world<-camera): the camera fit's."""
    return out / f"{stem}_camera.json"


def markers_from_video(runner: StageRunner, video: Path, stem: str, opts: ProcessOptions, *,
                       progress: bool) -> dict[str, Path]:
    out = runner.out_dir
    trc_path, npz_path, json_path, quality_path = _marker_stage_paths(out, stem)
    camera_path = _camera_path(out, stem)

    def markers():
        from sam4dcap_biomech.trc import write_trc

        mp = _need("sam4dcap_perception.marker_pipeline", "markers")
        result = mp.video_to_markers(video, height_m=opts.height_m, backend=opts.backend, start_s=opts.start_s,
                                     end_s=opts.end_s, progress=progress, keep_observations=True,
                                     estimator_overrides={"person": opts.person} if opts.person else None)
        write_trc(trc_path, result.filtered)
        write_keypoints(npz_path, json_path, result.observations or [], source=video.name,
                        lr_swapped=result.flags.get("lr_swapped"))
        write_camera_file(camera_path, result.intrinsics, result.world_from_camera)
        usable = np.asarray(result.flags["frame_status"]) != FRAME_LOST
        conf = frame_confidence(result.confidence, usable)
        quality_path.write_text(json.dumps(_jsonable({
            "quality": {k: v for k, v in result.quality.items() if isinstance(v, (int, float, str, bool))},
            # Frames where another person overlapped the subject (identity uncertain, confidence lowered).
            "overlap_frames": sum(bool(o.extra.get("overlap")) for o in result.observations or []),
            "identity_doubt_frames": sum(bool(o.extra.get("identity_doubt")) for o in result.observations or []),
            "time_s": result.filtered.time.tolist(),
            "frame_confidence": [None if not np.isfinite(c) else float(c) for c in conf],
            "frame_status": [str(x) for x in result.flags["frame_status"]],
            "lost_intervals_s": result.quality.get("lost_intervals_s", []),
            "marker_set": result.filtered.meta.get("marker_set"),
        })) + "\n")
        return {"marker_set": result.filtered.meta.get("marker_set"), "frames": result.filtered.n_frames}

    cfg = _config_snapshot(("markers_node", "body_estimator_node", "video_source_node"))
    runner.run("markers", markers, inputs={"video": video},
               params={"height_m": opts.height_m, "backend": opts.backend, "start_s": opts.start_s,
                       "end_s": opts.end_s, "config": cfg, **({"person": opts.person} if opts.person else {}),
                       # 2: the keypoints file carries lr_swapped (older ones are rewritten).
                       "keypoints_file": 2},
               outputs=[trc_path, npz_path, json_path, quality_path, camera_path])
    return {"markers_trc": trc_path, "keypoints_npz": npz_path, "keypoints_json": json_path,
            "markers_quality": quality_path, "camera": camera_path}


def _config_snapshot(sections: Iterable[str]) -> dict:
    """The config values a stage depends on (a changed default reruns it)."""
    from sam4dcap_biomech.config import load_config

    cfg = load_config()
    return {s: cfg.params(s) for s in sections if s in cfg.nodes}


VIRTUAL_MARKERS_TYPE = "sam4dcap_msgs/msg/VirtualMarkers"
BODY_KEYPOINTS_TYPE = "sam4dcap_msgs/msg/BodyKeypoints"


def _points(msg_points) -> np.ndarray:
    return np.array([[p.x, p.y, p.z] for p in msg_points], float).reshape(-1, 3)


def markers_from_bag(runner: StageRunner, bag: Path, stem: str, opts: ProcessOptions) -> dict[str, Path]:
    """The markers a live session recorded (VirtualMarkers), stamped with capture times."""
    out = runner.out_dir
    trc_path, npz_path, json_path, quality_path = _marker_stage_paths(out, stem)

    def markers():
        from sam4dcap_biomech.trc import write_trc

        bio = _need("sam4dcap_perception.bag_io", "markers")
        topics = bio.bag_topics(bag)
        mk = [t for t in topics.values() if t.msgtype == VIRTUAL_MARKERS_TYPE and t.count]
        if not mk:
            have = ", ".join(f"{t.name} ({t.msgtype})" for t in topics.values()) or "nothing"
            raise Sam4dcapError(f"bag {bag} has no {VIRTUAL_MARKERS_TYPE} messages to process (has: {have})")
        by_time: dict[int, object] = {}
        for _, _, _, msg in bio.read_messages(bag, [mk[0].name]):
            by_time[bio.stamp_ns(msg)] = msg          # a repeated stamp keeps the last message
        stamps = sorted(by_time)
        names: list[str] = []
        for s in stamps:
            for n in by_time[s].names:
                if n not in names:
                    names.append(n)
        pts = np.full((len(stamps), len(names), 3), np.nan)
        conf = np.zeros((len(stamps), len(names)))
        for i, s in enumerate(stamps):
            msg = by_time[s]
            p = _points(msg.positions)
            for j, n in enumerate(msg.names):
                pts[i, names.index(n)] = p[j]
                if len(msg.confidence) > j:
                    conf[i, names.index(n)] = float(msg.confidence[j])
        time_s = np.array(stamps, float) * 1e-9
        markers_ts = TimeSeries(time_s, tuple(names), pts, unit="m", frame=str(by_time[stamps[0]].header.frame_id),
                                meta={"marker_set": str(by_time[stamps[0]].marker_set), "source": bag.name})
        write_trc(trc_path, markers_ts)
        tracked = np.isfinite(pts).all(axis=2).any(axis=1)
        _bag_keypoints(bio, bag, topics, npz_path, json_path)
        fc = frame_confidence(conf, tracked)
        quality_path.write_text(json.dumps({
            "quality": {"frames": len(stamps), "topic": mk[0].name},
            "time_s": time_s.tolist(),
            "frame_confidence": [None if not np.isfinite(c) else float(c) for c in fc],
            "frame_status": [FRAME_TRACKED if t else FRAME_LOST for t in tracked],
            "marker_set": markers_ts.meta["marker_set"]}) + "\n")
        return {"marker_set": markers_ts.meta["marker_set"], "frames": len(stamps)}

    runner.run("markers", markers, inputs={"bag": bag}, params={"height_m": opts.height_m},
               outputs=[trc_path, npz_path, json_path, quality_path])
    return {"markers_trc": trc_path, "keypoints_npz": npz_path, "keypoints_json": json_path,
            "markers_quality": quality_path}


def _bag_keypoints(bio, bag: Path, topics, npz_path: Path, json_path: Path) -> None:
    """BodyKeypoints of the bag as keypoint files (empty files when none were recorded)."""
    from .observations import BodyObservation

    kp = [t for t in topics.values() if t.msgtype == BODY_KEYPOINTS_TYPE and t.count]
    obs = []
    if kp:
        for i, (_, _, _, msg) in enumerate(bio.read_messages(bag, [kp[0].name])):
            conf = np.asarray(msg.confidence, float)
            obs.append(BodyObservation(
                frame_index=i, time_s=bio.stamp_ns(msg) * 1e-9, person_id=int(msg.person_id),
                tracked=len(msg.names) > 0, skeleton=str(msg.skeleton), names=tuple(msg.names),
                keypoints_2d=_points(msg.keypoints_2d)[:, :2], keypoints_3d=_points(msg.keypoints_3d),
                confidence=conf, visibility=np.asarray(msg.visibility, float)))
    write_keypoints(npz_path, json_path, obs, source=bag.name)


# --- exports and report ----------------------------------------------------------------------------
def c3d_stage(runner: StageRunner, markers_trc: Path, stem: str) -> Path:
    c3d_path = runner.out_dir / f"{stem}_markers.c3d"

    def export():
        from sam4dcap_biomech.trc import read_trc

        c3d = _need("sam4dcap_biomech.c3d", "c3d")
        c3d.write_c3d(c3d_path, read_trc(markers_trc))
    runner.run("c3d", export, inputs={"markers": markers_trc}, params={}, outputs=[c3d_path])
    return c3d_path


def report_stage(runner: StageRunner, arts: Mapping[str, Path], stem: str, opts: ProcessOptions, *,
                 source: Path, marker_set: str) -> dict[str, Path]:
    out = runner.out_dir
    summary_path = out / "summary.json"
    frames_csv = out / f"{stem}_frames.csv"
    angles_png = out / "joint_angles.png"
    error_png = out / "marker_error.png"
    html_path = out / "report.html"

    def make_report():
        from sam4dcap_biomech.storage import read_mot

        from . import report as rp

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
            "ik_marker_error": rp.marker_error_summary(err.select([n for n in err.names if "marker_error" in n])
                                                       if any("marker_error" in n for n in err.names) else err),
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
        rp.write_json(summary_path, summary)
        rp.plot_joint_angles(coords, angles_png, title=f"{source.name}: sagittal joint angles")
        err_plot = err.select([n for n in err.names if "marker_error" in n]) \
            if any("marker_error" in n for n in err.names) else err
        rp.plot_marker_error(err_plot, error_png)

        page = rp.HtmlReport(f"sam4dcap trial report: {source.name}")
        page.key_values({
            "source": str(source), "subject": f"{opts.height_m:g} m, "
                                              f"{'%g kg' % opts.mass_kg if opts.mass_kg else 'mass not given'}",
            "body estimator": opts.backend, "marker set": marker_set,
            "frames": f"{coords.n_frames} ({summary['duration_s']:.2f} s at {summary['rate_hz']:.1f} Hz)",
            "model": Path(arts["scaled_model"]).name,
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
        rp.add_gap_section(page, gaps)
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
        page.save(html_path)

    inputs = {k: v for k, v in arts.items()
              if k in ("ik_mot", "ik_marker_errors", "ik_confidence", "markers_quality", "scaled_model", "id_sto")}
    runner.run("report", make_report, inputs=inputs,
               params={"height_m": opts.height_m, "mass_kg": opts.mass_kg, "backend": opts.backend,
                       "low_confidence": LOW_CONFIDENCE, "source": str(source)},
               outputs=[summary_path, frames_csv, angles_png, error_png, html_path])
    return {"summary": summary_path, "frames": frames_csv, "joint_angles_png": angles_png,
            "marker_error_png": error_png, "report": html_path}


def write_frames_file(path: Path, quality: Mapping, coords: TimeSeries, marker_errors: TimeSeries) -> dict:
    """`<trial>_frames.csv`, one row per frame of the trial's time grid (TRC, .mot, .sto):
    time_s, status (tracked | bridged | lost), confidence (mean keypoint confidence, empty when
    lost), ik_solved (1 | 0: 0 = NaN row in the .mot/.sto), ik_marker_rms_m. Returns the
    summary's "gaps" entry (`report.gap_summary`)."""
    from . import report as rp

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


# --- one trial, many trials ------------------------------------------------------------------------
STAGES = ("markers", "model", "scale", "ik", "id", "c3d", "report")


def process_trial(source: str | Path, out_dir: str | Path, opts: ProcessOptions, *,
                  progress: bool = False) -> TrialResult:
    """All stages of one trial into `out_dir`; raises on the first failing stage."""
    t0 = time.perf_counter()
    source = Path(source)
    opts.check()
    kind = source_kind(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = trial_stem(source)
    stages = [s for s in STAGES if s != "id" or opts.inverse_dynamics]
    bar = _progress_bar(progress, total=len(stages), desc=f"{stem}", unit="stage")
    runner = StageRunner(out, force=opts.force,
                         on_stage=lambda name, status: (bar.set_postfix_str(f"{name} {status}"), bar.update(1)))
    try:
        if kind == "video":
            arts = markers_from_video(runner, source, stem, opts, progress=progress)
        else:
            arts = markers_from_bag(runner, source, stem, opts)
        marker_set = runner.extras["markers"].get("marker_set") or "blazepose33"
        fit_inputs = {k: arts[k] for k in ("keypoints_npz", "camera") if k in arts}
        fit_views = None
        if len(fit_inputs) == 2:
            from .fit_views import monocular_views

            def fit_views():
                return monocular_views(fit_inputs["keypoints_npz"], fit_inputs["camera"])
        arts.update(biomech_stages(runner, arts["markers_trc"], stem, opts, marker_set=marker_set,
                                   fit_views=fit_views, fit_inputs=fit_inputs))
        arts["c3d"] = c3d_stage(runner, arts["markers_trc"], stem)
        arts.update(report_stage(runner, arts, stem, opts, source=source, marker_set=marker_set))
    finally:
        bar.close()
    from .report import gap_warning

    warning = gap_warning(json.loads(Path(arts["summary"]).read_text()).get("gaps", {}))
    return TrialResult(source=str(source), out_dir=str(out), ok=True, stages=dict(runner.status),
                       artefacts={k: str(v) for k, v in arts.items()}, seconds=time.perf_counter() - t0,
                       warning=warning)


def _trial_worker(source: str, out_dir: str, opts: ProcessOptions, verbose: bool) -> TrialResult:
    """Process-pool entry: never raises; a failure becomes a TrialResult with its error."""
    # force: a pool worker runs several trials in turn, and each one's lines carry its own name.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, force=True,
                        format=f"%(asctime)s [{Path(source).stem}] %(name)s: %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()
    try:
        return process_trial(source, out_dir, opts, progress=False)
    except Sam4dcapError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("trial failed: %s", msg)
    except Exception as exc:  # noqa: BLE001 - one trial's crash must not stop the batch
        log.error("%s: %s", source, traceback.format_exc())
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return TrialResult(source=str(source), out_dir=str(out_dir), ok=False, error=msg,
                       seconds=time.perf_counter() - t0)


def trial_stem(source: Path) -> str:
    """File name without its video/bag extension (a bag folder keeps its name)."""
    return source.stem if source.suffix.lower() in VIDEO_EXTENSIONS + BAG_EXTENSIONS else source.name


def trial_folder_names(sources: Sequence[Path]) -> list[str]:
    """One distinct subfolder name per input (the file stem; parent folder added on clashes)."""
    stems = [trial_stem(s) for s in sources]
    out = []
    for s, stem in zip(sources, stems):
        out.append(f"{s.parent.name}_{stem}" if stems.count(stem) > 1 else stem)
    if len(set(out)) != len(out):
        out = [f"{i:03d}_{n}" for i, n in enumerate(out)]
    return out


def process_batch(sources: Sequence[str | Path], out_dir: str | Path, opts: ProcessOptions, *,
                  max_workers: int | None = None, progress: bool = False, verbose: bool = False,
                  ) -> list[TrialResult]:
    """Trials in parallel over a process pool, each in `out_dir/<name>/`; writes
    `out_dir/batch_summary.json`. Failures are collected, never raised."""
    import concurrent.futures as cf
    import multiprocessing as mp

    opts.check()
    srcs = [Path(s) for s in sources]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = trial_folder_names(srcs)
    workers = max(1, min(len(srcs), max_workers or os.cpu_count() or 1))
    results: dict[int, TrialResult] = {}
    t0 = time.perf_counter()
    bar = _progress_bar(progress, total=len(srcs), desc="trials", unit="trial")
    # spawn: workers start clean (no inherited OpenSim/MediaPipe threads from the parent).
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_trial_worker, str(s), str(out / n), opts, verbose): i
                   for i, (s, n) in enumerate(zip(srcs, names))}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. killed by the OS)
                results[i] = TrialResult(source=str(srcs[i]), out_dir=str(out / names[i]), ok=False,
                                         error=f"worker died: {type(exc).__name__}: {exc}")
            bar.update(1)
    bar.close()
    ordered = [results[i] for i in range(len(srcs))]
    summary = {
        "trials": len(ordered), "succeeded": sum(r.ok for r in ordered),
        "failed": sum(not r.ok for r in ordered), "workers": workers,
        "seconds": round(time.perf_counter() - t0, 2),
        "options": asdict(opts),
        "results": [asdict(r) for r in ordered],
    }
    (out / "batch_summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    return ordered
