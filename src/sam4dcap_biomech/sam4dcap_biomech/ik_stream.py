"""The IK stage of the live graph without ROS: marker frames in, one verdict per frame out
(ik_node wires it to topics, threads and the calibration service).

- Model: `model_path`, or the project's generated model for the subject height/mass, built once
  into the cache folder (`generated_model_path`).
- Gates (safe output): markers of another body are ignored; fewer than `min_markers` markers ->
  LOST; a failed solve or a fit worse than `max_marker_rms_m` -> UNTRUSTED; after any of those
  the next solve starts cold. A time that does not increase (a source restarted or looped)
  resets the solver, the calibration buffer and the camera fit.
- Calibration: a `live_calibration.LiveCalibrator` beside the solver; a finished calibration's
  solver is swapped in between two frames (`take_calibration`).

`params` is the ik_node config section as a dict the caller may update while running (the
run-time parameters are read at their next use; `apply_parameter` updates the copies the solver
and the calibrator keep). Not thread-safe: the caller serialises `step`, `take_calibration` and
`apply_parameter`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, MutableMapping, Sequence

import numpy as np

from .errors import Sam4dcapError
from .live_calibration import CalibrationOutcome, LiveCalibrationSettings, LiveCalibrator
from .markersets import MARKER_SETS
from .model_builder import builder_version, write_model
from .streaming_ik import StreamingIK
from .trial_calibration import TrialCalibrationSettings

_log = logging.getLogger(__name__)

VALID, LOST, UNTRUSTED, IGNORED = "valid", "lost", "untrusted", "ignored"


def cache_dir() -> Path:
    """SAM4DCAP_CACHE (set by scripts/env.sh and the tests), else ~/.cache/sam4dcap."""
    env = os.environ.get("SAM4DCAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sam4dcap"


def generated_model_path(*, height_m: float, mass_kg: float, marker_set: str) -> Path:
    """The project's model for this subject, built once and kept in the cache folder."""
    path = cache_dir() / "models" / (f"sam4dcap_{marker_set}_{height_m:.3f}m_{mass_kg:.2f}kg_"
                                     f"{builder_version()}.osim")
    if not path.is_file():
        # Written under a private name then renamed: two nodes starting together never read
        # a half-written model.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.osim")
        write_model(tmp, height_m=height_m, mass_kg=mass_kg, markers=marker_set)
        os.replace(tmp, path)
    return path


@dataclass
class IKStep:
    """What one marker frame gave: `state` VALID (with `frame`), LOST, UNTRUSTED or IGNORED
    (another body, or a malformed message: nothing to publish)."""
    state: str
    t: float = math.nan
    frame: Any = None                 # streaming_ik.IKFrame when VALID
    n_valid: int = 0
    reason: str = ""
    marker_rms_m: float = math.nan
    solve_s: float = 0.0


# Parameters whose new value the calibrator's settings take (config name -> settings field).
CALIBRATION_FIELDS = {"static_min_duration_s": "static_min_duration_s",
                      "static_max_speed_m_s": "static_max_speed_m_s",
                      "calibration_buffer_s": "buffer_s", "output_dir": "output_dir"}


def _report(level: str, text: str, throttle_key: str | None = None) -> None:
    getattr(_log, level)(text)


class IKStream:
    def __init__(self, params: MutableMapping[str, Any], *, accepted_frames: Sequence[str] = (),
                 report: Callable[..., None] = _report):
        """`accepted_frames`: marker frame ids the IK takes as its world (others are warned
        about once); `report(level, text, throttle_key)` for what the node should log."""
        self.p = p = params
        self.report = report
        self.accepted_frames = tuple(accepted_frames)
        self.marker_names = MARKER_SETS[p["marker_set"]]
        if p["model_path"]:
            model = Path(p["model_path"]).expanduser()
            if not model.is_file():
                raise Sam4dcapError(f"parameter ik_node.model_path={p['model_path']!r}: file not found "
                                    "(give a scaled .osim, or leave it empty for the generated model)")
        else:
            model = generated_model_path(height_m=p["subject_height_m"], mass_kg=p["subject_mass_kg"],
                                         marker_set=p["marker_set"])
        self.base_model_path = model
        try:
            self.ik = self.make_solver(model)
        except Sam4dcapError as exc:
            raise Sam4dcapError(f"parameter ik_node.model_path={str(model)!r}: {exc}") from None
        self.model_path = model
        self.calibrator = LiveCalibrator(LiveCalibrationSettings(
            base_model=Path(model).resolve(), marker_names=tuple(self.marker_names), marker_set=p["marker_set"],
            height_m=p["subject_height_m"], mass_kg=p["subject_mass_kg"], output_dir=Path(p["output_dir"]),
            buffer_s=p["calibration_buffer_s"], auto=bool(p["auto_calibrate"]), auto_min_s=p["auto_calibrate_min_s"],
            static_min_duration_s=p["static_min_duration_s"], static_max_speed_m_s=p["static_max_speed_m_s"],
            trial=TrialCalibrationSettings.from_params(p)), make_solver=self.make_solver)
        self.live_fit = None          # camera_fit.LiveCameraFit, when the node sets one
        self._order_cache: dict[tuple[str, ...], np.ndarray] = {}
        self.budget_stops = 0         # solves stopped by the realtime time budget (not converged)
        self._last_time = -math.inf
        self._warned: set[str] = set()

    # --- setup ---------------------------------------------------------------------------------
    def make_solver(self, model_path: Path) -> StreamingIK:
        options = {}
        if "regularize_unobserved" in self.p:  # the node's value, not only the file's default
            options["regularize"] = self.p["regularize_unobserved"]
        budget_ms = float(self.p.get("realtime_budget_ms", 0.0)) if self.p.get("realtime") else 0.0
        return StreamingIK(str(model_path), self.marker_names, accuracy=self.p["accuracy"],
                           min_markers=self.p["min_markers"], time_budget_s=budget_ms / 1e3 if budget_ms > 0 else None,
                           **options)

    def apply_parameter(self, name: str, value) -> None:
        """A run-time parameter changed (the caller's params dict has the new value)."""
        if name == "min_markers":   # the solver keeps its own copy
            self.ik.min_markers = int(value)
        # The calibrator keeps its own settings: the next calibration uses the new value.
        if name in CALIBRATION_FIELDS:
            field = CALIBRATION_FIELDS[name]
            value = Path(value) if field == "output_dir" else float(value)
            self.calibrator.settings = dataclasses.replace(self.calibrator.settings, **{field: value})

    def close(self) -> None:
        self.calibrator.close()

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.report("warning", text)

    # --- input ---------------------------------------------------------------------------------
    def positions(self, names: Sequence[str], points: np.ndarray, confidence: Sequence[float]
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        """Sent positions (N, 3) and confidences reordered into marker_names order (NaN / 0 for
        names not sent; confidence 1 for present markers when none is sent); None when the
        message is malformed."""
        names = tuple(names)
        index = self._order_cache.get(names)
        if index is None:
            where = {n: i for i, n in enumerate(names)}
            index = np.array([where.get(n, -1) for n in self.marker_names])
            if len(self._order_cache) > 16:
                self._order_cache.clear()
            self._order_cache[names] = index
            if not (index >= 0).any():
                self._warn_once(f"names:{names[:3]}", f"markers named {', '.join(names[:5])}... match none of "
                                f"marker set {self.p['marker_set']!r}: set parameter ik_node.marker_set")
        if len(points) != len(names):
            self._warn_once("len", f"VirtualMarkers with {len(names)} names but {len(points)} positions: skipped")
            return None
        sent = np.asarray(points, float).reshape(-1, 3)
        out = np.full((len(self.marker_names), 3), np.nan)
        ok = index >= 0
        out[ok] = sent[index[ok]]
        conf = np.zeros(len(self.marker_names))
        if len(confidence) == len(names):
            conf[ok] = np.asarray(confidence, float)[index[ok]]
        else:
            conf[ok] = 1.0
        conf[~np.isfinite(out).all(axis=1)] = 0.0
        return out, conf

    def take_calibration(self) -> CalibrationOutcome | None:
        """Between two frames: a finished calibration's solver is used from now on."""
        outcome = self.calibrator.take_result()
        if outcome is None:
            return None
        self.ik = outcome.solver          # atomic: the next frame is solved on the scaled model
        self.model_path = outcome.model_path
        return outcome

    def step(self, t: float, *, person_id: int, frame_id: str, names: Sequence[str], points: np.ndarray,
             confidence: Sequence[float]) -> IKStep:
        """Solve one marker frame (capture time t [s]) through the gates."""
        if person_id != self.p["person_id"]:
            self._warn_once(f"person:{person_id}", f"ignoring markers of body {person_id}: this node "
                            f"follows body {self.p['person_id']} (parameter ik_node.person_id)")
            return IKStep(IGNORED, t, reason="another body")
        if frame_id and self.accepted_frames and frame_id not in self.accepted_frames:
            self._warn_once(f"frame:{frame_id}", f"markers arrive in frame {frame_id!r}; "
                            "IK assumes the OpenSim world frame (y up)")
        sent = self.positions(names, points, confidence)
        if sent is None:
            return IKStep(IGNORED, t, reason="malformed")
        positions, conf = sent
        if t <= self._last_time:
            # Source restarted or looped: velocities across the jump would be garbage, and
            # calibration must not mix the two passes.
            self.ik.reset()
            self.calibrator.reset()
            if self.live_fit is not None:
                self.live_fit.reset()
        self._last_time = t
        self.calibrator.push(t, positions, conf)
        n_valid = int(np.isfinite(positions).all(axis=1).sum())
        t0 = time.perf_counter()
        if n_valid < self.p["min_markers"]:
            self.ik.reset()  # re-acquisition starts from a fresh solve, not the pose before the loss
            self.report("warning", f"t={t:.3f}: {n_valid} markers < min_markers={self.p['min_markers']}: "
                                   "person lost, no joint states", "lost")
            return IKStep(LOST, t, n_valid=n_valid,
                          reason=f"person lost ({n_valid} markers < min_markers {self.p['min_markers']})")
        try:
            frame = self.live_fit.solve(self.ik, t, positions) if self.live_fit is not None else None
            if frame is None:
                frame = self.ik.solve(t, positions)
        except Sam4dcapError as exc:
            self.ik.reset()
            self.report("warning", f"IK failed: {exc}", "failed")
            return IKStep(UNTRUSTED, t, n_valid=n_valid, reason="IK failed")
        if frame is None:
            return IKStep(LOST, t, n_valid=n_valid, reason="person lost")
        if not (frame.marker_rms_m <= self.p["max_marker_rms_m"]) or not np.all(np.isfinite(frame.q)):
            self.ik.reset()  # never warm-start from a fit this bad
            self.report("warning", f"t={t:.3f}: IK marker RMS {frame.marker_rms_m * 1000:.0f} mm > "
                                   f"max_marker_rms_m={self.p['max_marker_rms_m']} (worst {frame.max_error_marker}): "
                                   "no joint states", "untrusted")
            return IKStep(UNTRUSTED, t, n_valid=n_valid, marker_rms_m=float(frame.marker_rms_m),
                          reason=f"fit not trusted (marker RMS {frame.marker_rms_m * 1000:.0f} mm)")
        if not getattr(frame, "converged", True):
            self.budget_stops += 1
        return IKStep(VALID, t, frame=frame, n_valid=n_valid, marker_rms_m=float(frame.marker_rms_m),
                      solve_s=time.perf_counter() - t0)
