"""Live subject calibration beside a running solver (ROS-free; ik_node wires it).

`LiveCalibrator` keeps the recent marker stream (with per-marker confidence), and calibrates:
  - automatically, once: as soon as the stream holds `auto_min_s` of frames that show the
    body well enough for trial calibration (`trial_calibration.usable_frames`), from those
    frames (no still moment needed), and
  - on request (the calibrate service): from a still window when the buffer has one
    (OpenSim measurement scaling + marker placement, `scaling.scale_model`), else from the
    whole buffer (trial calibration).
A calibration runs in the background, never on the thread that solves frames: the OpenSim
scaling in a separate low-priority process (`_calibrate_in_worker`; OpenSim holds Python's GIL
while it works, so in a thread it stalled the solver for seconds and its CPU competed with the
live stream), the solver for the new model on a background thread. Its result,
including the solver built for the new model by `make_solver`, is handed over with
`take_result()`: the caller swaps its solver reference between two frames, so the stream never
waits for a calibration. One calibration runs at a time; a request while one runs is queued
behind it (from the buffer as it was at the request). After a successful calibration the automatic one is latched (never repeats);
requests may recalibrate any time.

States: "collecting" (automatic calibration pending), "calibrating", "calibrated", "idle"
(automatic calibration off or failed, nothing running).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import Sam4dcapError
from .process_lifetime import die_with_parent
from .scaling import scale_model
from .settings import check_height_m, check_mass_kg
from .static_window import find_static_window
from .timeseries import TimeSeries
from .trial_calibration import TrialCalibrationSettings, measured_marker_names, scale_model_from_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveCalibrationSettings:
    base_model: Path                    # the model the solver starts with (height-sized)
    marker_names: tuple[str, ...]
    marker_set: str
    height_m: float
    mass_kg: float
    output_dir: Path
    buffer_s: float = 10.0
    auto: bool = True
    auto_min_s: float = 1.0
    static_min_duration_s: float = 0.3
    static_max_speed_m_s: float = 0.05
    trial: TrialCalibrationSettings = TrialCalibrationSettings()


@dataclass
class CalibrationOutcome:
    """What one calibration produced."""
    model_path: Path                    # absolute
    method: str                         # "static window" | "trial"
    window: tuple[float, float]         # capture times used (static window or buffer span)
    marker_rms_m: float                 # static window: fit before marker placement; trial: NaN
    height_m: float
    mass_kg: float
    seconds: float
    solver: Any = None                  # built by make_solver for model_path
    details: dict = field(default_factory=dict)

    def message(self) -> str:
        rms = f", marker RMS {self.marker_rms_m * 1000:.1f} mm" if math.isfinite(self.marker_rms_m) else ""
        return (f"scaled to {self.height_m:.2f} m, {self.mass_kg:.1f} kg from the {self.method} "
                f"{self.window[0]:.2f}-{self.window[1]:.2f} s{rms} in {self.seconds:.1f} s; IK now uses "
                f"{self.model_path}"
                + (f" (no still window: {self.details['no_static_window']})"
                   if self.details.get("no_static_window") else ""))


class LiveCalibrator:
    def __init__(self, settings: LiveCalibrationSettings, make_solver: Callable[[Path], object]):
        self.settings = settings
        self.make_solver = make_solver
        self._recent: collections.deque = collections.deque()   # (t, positions (K,3), confidence (K,))
        self._lock = threading.Lock()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration")
        self._running: cf.Future | None = None
        self._ready: CalibrationOutcome | None = None
        self._latched = False
        self._auto_failed = False
        self.last: CalibrationOutcome | None = None
        names = settings.marker_names
        self._measured = np.array([names.index(n) for n in measured_marker_names(settings.marker_set)
                                   if n in names], int)
        self._good_times: collections.deque = collections.deque()

    # --- state ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        with self._lock:
            if self._running is not None and not self._running.done():
                return "calibrating"
            if self._latched:
                return "calibrated"
            return "collecting" if self.settings.auto and not self._auto_failed else "idle"

    def reset(self) -> None:
        """The stream restarted (time went back): forget the buffer, keep the calibration."""
        with self._lock:
            self._recent.clear()
            self._good_times.clear()

    # --- stream -----------------------------------------------------------------------------
    def _usable(self, positions: np.ndarray, confidence: np.ndarray) -> bool:
        if self._measured.size == 0:
            return False
        ok = np.isfinite(positions[self._measured]).all(axis=1)
        ok &= np.nan_to_num(confidence[self._measured], nan=0.0) >= self.settings.trial.min_confidence
        return bool(ok.mean() >= self.settings.trial.min_visible_share)

    def push(self, t: float, positions: np.ndarray, confidence: np.ndarray | None = None) -> bool:
        """Record one frame (positions in marker_names order). Returns True when this frame
        started the automatic calibration."""
        positions = np.asarray(positions, float)
        confidence = (np.isfinite(positions).all(axis=1).astype(float) if confidence is None
                      else np.asarray(confidence, float))
        s = self.settings
        with self._lock:
            self._recent.append((float(t), positions, confidence))
            horizon = t - s.buffer_s
            while self._recent and self._recent[0][0] < horizon:
                self._recent.popleft()
            if self._usable(positions, confidence):
                self._good_times.append(float(t))
            while self._good_times and self._good_times[0] < horizon:
                self._good_times.popleft()
            start = (s.auto and not self._latched and not self._auto_failed
                     and (self._running is None or self._running.done())
                     and len(self._good_times) >= s.trial.min_frames
                     and self._good_times[-1] - self._good_times[0] >= s.auto_min_s)
            if start:
                markers, conf = self._buffer_series()
                self._running = self._pool.submit(self._run, markers, conf, s.height_m, s.mass_kg, 0.0, True)
        if start:
            log.info("automatic calibration started at t=%.2f s from %d confident frames", t, len(self._good_times))
        return start

    def _buffer_series(self) -> tuple[TimeSeries, np.ndarray]:
        if len(self._recent) < 2:
            raise Sam4dcapError(f"only {len(self._recent)} marker frames received in the last "
                                f"{self.settings.buffer_s:.0f} s: stand in view, then call again")
        times = np.array([r[0] for r in self._recent])
        keep = np.append(np.diff(times) > 0, True)   # strictly increasing (a repeated stamp: last wins)
        values = np.stack([r[1] for r in self._recent])[keep]
        conf = np.stack([r[2] for r in self._recent])[keep]
        series = TimeSeries(times[keep], self.settings.marker_names, values, unit="m", frame="world",
                            meta={"marker_set": self.settings.marker_set})
        return series, conf

    # --- requests ---------------------------------------------------------------------------
    def request(self, height_m: float, mass_kg: float, window_s: float = 0.0) -> cf.Future:
        """Calibrate from the buffer as it is now (background). The future gives a
        CalibrationOutcome or raises Sam4dcapError."""
        check_height_m(height_m, name="height_m")
        check_mass_kg(mass_kg, name="mass_kg")
        if not (math.isfinite(window_s) and window_s >= 0):
            raise Sam4dcapError(f"window_s={window_s!r} must be >= 0 (0 = detect the stillest window)")
        with self._lock:
            markers, conf = self._buffer_series()
            self._running = self._pool.submit(self._run, markers, conf, float(height_m), float(mass_kg),
                                              float(window_s), False)
            return self._running

    def take_result(self) -> CalibrationOutcome | None:
        """The newest finished calibration not yet taken (its solver is ready to use), else None."""
        with self._lock:
            out, self._ready = self._ready, None
            return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


    # --- the work (background thread) -------------------------------------------------------
    def _run(self, markers: TimeSeries, confidence: np.ndarray, height_m: float, mass_kg: float, window_s: float,
             automatic: bool) -> CalibrationOutcome:
        try:
            outcome = self._calibrate(markers, confidence, height_m, mass_kg, window_s, automatic)
        except Exception as exc:
            if automatic:
                with self._lock:
                    self._auto_failed = True
                log.warning("automatic calibration failed: %s", exc)
            raise
        with self._lock:
            self._ready = outcome
            self._latched = True
            self.last = outcome
        return outcome

    def _calibrate(self, markers: TimeSeries, confidence: np.ndarray, height_m: float, mass_kg: float,
                   window_s: float, automatic: bool) -> CalibrationOutcome:
        t0 = time.perf_counter()
        s = self.settings
        out_dir = Path(s.output_dir).expanduser().resolve()
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(time.time()))
        # Milliseconds too: an automatic and a requested calibration can finish within one second,
        # and the second must not overwrite the model the first one handed over.
        stamp += f"_{int(time.time() * 1000) % 1000:03d}"
        found = _in_scaling_process(s, markers, confidence, height_m, mass_kg, window_s, automatic, out_dir, stamp)
        model_path = Path(found["model_path"])
        solver = self.make_solver(model_path)
        return CalibrationOutcome(model_path=model_path, method=found["method"], window=found["window"],
                                  marker_rms_m=found["marker_rms_m"], height_m=height_m, mass_kg=mass_kg,
                                  seconds=time.perf_counter() - t0, solver=solver, details=found["details"])


def _in_scaling_process(*args) -> dict:
    """_calibrate_in_worker(*args) in a new Python process (this module's __main__); its
    Sam4dcapError comes back as one."""
    with tempfile.TemporaryDirectory(prefix="sam4dcap-calibration-") as tmp:
        request, answer = Path(tmp) / "request.pickle", Path(tmp) / "answer.pickle"
        request.write_bytes(pickle.dumps(args))
        proc = subprocess.run([sys.executable, "-m", __name__, str(request), str(answer)],
                              capture_output=True, text=True)
        if not answer.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise Sam4dcapError(f"calibration process failed: {tail[0]}")
        status, value = pickle.loads(answer.read_bytes())
    if status != "ok":
        raise Sam4dcapError(value)
    return value


def _scaling_process_main(request: str, answer: str) -> int:
    """The scaling process: below the live stream's priority, gone with its parent."""
    try:
        os.nice(10)
    except OSError:
        pass
    die_with_parent()
    result: tuple[str, object]
    try:
        result = ("ok", _calibrate_in_worker(*pickle.loads(Path(request).read_bytes())))
    except Sam4dcapError as exc:
        result = ("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - OpenSim failures arrive as other errors: named
        result = ("error", f"{type(exc).__name__}: {exc}")
    Path(answer).write_bytes(pickle.dumps(result))
    return 0


def _calibrate_in_worker(s: LiveCalibrationSettings, markers: TimeSeries, confidence: np.ndarray, height_m: float,
                         mass_kg: float, window_s: float, automatic: bool, out_dir: Path, stamp: str) -> dict:
    """The scaling itself (in the scaling process): the scaled model's path and what was used."""
    window = None
    reason = ""
    if not automatic:
        min_duration = window_s if window_s > 0 else s.static_min_duration_s
        try:
            window = find_static_window(markers, min_duration_s=min_duration, max_speed_m_s=s.static_max_speed_m_s)
        except Sam4dcapError as exc:
            if window_s > 0:
                raise               # a still window was asked for explicitly
            reason = str(exc).splitlines()[0]
    if window is not None:
        start_s, end_s = float(window[0]), float(window[1])
        if window_s > 0:
            end_s = min(end_s, start_s + window_s)
        out_path = out_dir / f"subject_scaled_{height_m:.2f}m_{mass_kg:.0f}kg_{stamp}.osim"
        result = scale_model(str(s.base_model), markers, height_m=height_m, mass_kg=mass_kg, out_path=out_path,
                             marker_set=s.marker_set, window=(start_s, end_s))
        method, used = "static window", (float(result.window[0]), float(result.window[1]))
        details = {}
    else:
        out_path = out_dir / f"subject_trial_scaled_{height_m:.2f}m_{mass_kg:.0f}kg_{stamp}.osim"
        result = scale_model_from_trial(s.base_model, markers, height_m=height_m, mass_kg=mass_kg,
                                        out_path=out_path, marker_set=s.marker_set, confidence=confidence,
                                        settings=s.trial)
        method, used = "trial", (float(markers.time[0]), float(markers.time[-1]))
        details = {"no_static_window": reason, **result.extra["trial_calibration"].summary()}
    return {"model_path": str(Path(result.scaled_model).resolve()), "method": method, "window": used,
            "marker_rms_m": float(result.marker_rms_m), "details": details}


if __name__ == "__main__":
    raise SystemExit(_scaling_process_main(*sys.argv[1:3]))
