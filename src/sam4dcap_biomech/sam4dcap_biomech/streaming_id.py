"""Streaming inverse dynamics: generalized forces frame by frame from a coordinate stream.

The live counterpart of `inverse_dynamics.run_id` (OpenSim's InverseDynamicsTool, which needs
the whole trial). Each new IK frame is appended to a short sliding window; the window is low-pass
filtered zero-phase (Butterworth, `lowpass_cutoff_hz` as the tool's filter) and differentiated
(central differences), and the frame `delay_s` behind the newest one is solved with OpenSim's
InverseDynamicsSolver (tau = M(q) qddot + C(q, qdot) - G(q) - applied forces; muscles excluded,
as the tool does). The delay buys the filter's future samples: output frames carry their own
capture time, `delay_s` later than their input arrived.

No external loads: the ground reaction is missing, so the pelvis residual forces/moments carry
it and are not physical (every result says so: `no_external_loads` is always True here).
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import Sam4dcapError
from .model_builder import load_model
from .settings import IDSettings
from .streaming_ik import state_index

log = logging.getLogger(__name__)

# Frames of history before the delayed frame: filtfilt needs > 3 * (2 * sections + 1) samples
# to pad (order 4: 15); the filter's memory (~1 / cutoff) decides how many actually matter.
_MIN_HISTORY_FRAMES = 16
# A capture-time gap longer than this breaks the window (new segment, velocities restart).
_MAX_GAP_S = 0.25


@dataclass(frozen=True)
class IDFrame:
    time_s: float
    coordinate_names: tuple[str, ...]
    generalized_forces: np.ndarray   # N*m (rotational) / N (translational), coordinate order
    q: np.ndarray                    # the filtered coordinates used (rad / m)
    qdot: np.ndarray
    qddot: np.ndarray
    no_external_loads: bool = True


class StreamingID:
    """Frame-by-frame inverse dynamics (no external loads) with a fixed output delay."""

    def __init__(self, model, *, lowpass_cutoff_hz: float | None = None, delay_s: float | None = None,
                 window_s: float = 1.0, settings: IDSettings | None = None):
        import opensim

        settings = settings if settings is not None else IDSettings.from_config()
        self.lowpass_cutoff_hz = float(settings.lowpass_cutoff_hz if lowpass_cutoff_hz is None else lowpass_cutoff_hz)
        self.delay_s = float(settings.delay_s if delay_s is None else delay_s)
        if not self.lowpass_cutoff_hz > 0:
            raise Sam4dcapError(f"lowpass_cutoff_hz={self.lowpass_cutoff_hz} must be > 0 (velocities and "
                                "accelerations of unfiltered IK are noise)")
        if self.delay_s < 0:
            raise Sam4dcapError(f"delay_s={self.delay_s} must be >= 0")
        self.window_s = max(float(window_s), 2 * self.delay_s)
        self.model = load_model(model)
        # Muscles would apply their default activation's force: excluded as the ID tool does.
        forces = self.model.updForceSet()
        for i in range(forces.getSize()):
            if opensim.Muscle.safeDownCast(forces.get(i)) is not None:
                forces.get(i).set_appliesForce(False)
        self.state = self.model.initSystem()
        self.solver = opensim.InverseDynamicsSolver(self.model)
        cs = self.model.getCoordinateSet()
        self._coords = [cs.get(i) for i in range(cs.getSize())]
        self.coordinate_names = tuple(c.getName() for c in self._coords)
        self._locked = np.array([c.getLocked(self.state) for c in self._coords])
        self._u_index = np.array([state_index(self.state, c, "u") for c in self._coords])
        self._default_q = np.array([c.getDefaultValue() for c in self._coords])
        self._times: collections.deque = collections.deque()
        self._values: collections.deque = collections.deque()
        self._emitted_until = -math.inf
        self._order_cache: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def model_name(self) -> str:
        return self.model.getName()

    def reset(self) -> None:
        self._times.clear()
        self._values.clear()
        self._emitted_until = -math.inf

    def _reorder(self, names: Sequence[str]) -> np.ndarray:
        key = tuple(names)
        index = self._order_cache.get(key)
        if index is None:
            where = {n: i for i, n in enumerate(key)}
            missing = [n for n, locked in zip(self.coordinate_names, self._locked) if n not in where and not locked]
            if missing:
                raise Sam4dcapError(f"coordinates {', '.join(missing[:6])} of model {self.model_name!r} are missing "
                                    "from the kinematics (a different model?)")
            index = np.array([where.get(n, -1) for n in self.coordinate_names])
            self._order_cache[key] = index
        return index

    def add(self, time_s: float, names: Sequence[str], q) -> IDFrame | None:
        """Append one IK frame (rad / m); returns the frame `delay_s` back once computable."""
        index = self._reorder(names)
        values = np.asarray(q, dtype=float)
        full = np.where(index >= 0, values[np.maximum(index, 0)], self._default_q)
        if not np.all(np.isfinite(full)):
            raise Sam4dcapError(f"t={time_s:.3f} s: non-finite coordinates")
        if self._times and (time_s <= self._times[-1] or time_s - self._times[-1] > _MAX_GAP_S):
            log.debug("t=%.3f: stream restarted or gap: new window", time_s)
            self.reset()
        self._times.append(float(time_s))
        self._values.append(full)
        while self._times and self._times[0] < time_s - self.window_s:
            self._times.popleft()
            self._values.popleft()
        return self._solve_delayed()

    def _solve_delayed(self) -> IDFrame | None:
        times = np.asarray(self._times)
        target_time = times[-1] - self.delay_s
        # The newest frame at least delay_s old, not yet emitted, with enough history.
        k = int(np.searchsorted(times, target_time + 1e-9, side="right")) - 1
        if k < _MIN_HISTORY_FRAMES - 1 or times[k] <= self._emitted_until or len(times) < _MIN_HISTORY_FRAMES + 1:
            return None
        rate = (len(times) - 1) / (times[-1] - times[0])
        if self.lowpass_cutoff_hz >= 0.5 * rate:
            raise Sam4dcapError(f"lowpass_cutoff_hz={self.lowpass_cutoff_hz} is not below the Nyquist frequency "
                                f"of the {rate:.1f} Hz kinematics")
        from scipy.signal import butter, sosfiltfilt

        values = np.stack(self._values)
        sos = butter(4, self.lowpass_cutoff_hz, fs=rate, output="sos")
        filtered = sosfiltfilt(sos, values, axis=0)
        qdot = np.gradient(filtered, times, axis=0)[k]
        if 0 < k < len(times) - 1:
            # Three-point second difference (non-uniform spacing): half the error of
            # differentiating twice, whose stencil is twice as wide.
            h1, h2 = times[k] - times[k - 1], times[k + 1] - times[k]
            qddot = 2 * (h1 * filtered[k + 1] - (h1 + h2) * filtered[k] + h2 * filtered[k - 1]) / (h1 * h2 * (h1 + h2))
        else:  # delay 0: the newest frame has no successor
            qddot = np.gradient(np.gradient(filtered, times, axis=0), times, axis=0)[k]
        self._emitted_until = times[k]
        return self._solve(times[k], filtered[k], qdot, qddot)

    def _solve(self, time_s, q, qdot, qddot) -> IDFrame:
        import opensim

        s = self.state
        s.setTime(float(time_s))
        for c, value, speed, locked in zip(self._coords, q, qdot, self._locked):
            if not locked:
                c.setValue(s, float(value), False)
                c.setSpeedValue(s, float(speed))
        self.model.realizeVelocity(s)
        udot = np.zeros(s.getNU())
        free = ~self._locked
        udot[self._u_index[free]] = qddot[free]
        tau = self.solver.solve(s, opensim.Vector.createFromMat(udot)).to_numpy()
        forces = tau[self._u_index]
        forces[self._locked] = 0.0
        return IDFrame(time_s=float(time_s), coordinate_names=self.coordinate_names, generalized_forces=forces,
                       q=q.copy(), qdot=qdot.copy(), qddot=qddot.copy())
