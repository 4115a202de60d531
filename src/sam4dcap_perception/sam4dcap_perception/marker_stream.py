"""The markers stage of the live graph without ROS: keypoints in, world-frame marker frames out,
one per input, in capture-time order (markers_node wires it to topics).

The first `ground_window_s` of keypoints fix the world frame (virtual_markers.StreamingMarkerEstimator).
  offline (file/bag source): the window's frames are held back and released with their own
      stamps, in order, once the world frame is found; `Step.hold` tells the node to announce
      them as held (the source then does not wait for downstream acks of those frames). A clip
      shorter than the window: at the source's end of stream the world frame is fixed from the
      frames held (a window as long as they span), once the last frame arrived or
      EOS_FLUSH_TIMEOUT_S after the newest input.
  live: causal; the window's frames go out as NaN when they arrive (nothing is published late).
A frame whose markers are unknown (no camera intrinsics yet, the estimator failed, no world frame)
goes out as NaN markers with confidence 0, so every capture stamp reaches IK and the trial.

Stamps are opaque to this class (the node's message stamps), carried with their time in ns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .observations import BodyObservation, CameraIntrinsics
from .virtual_markers import MarkerFrame, StreamingMarkerEstimator, marker_set_of

_log = logging.getLogger(__name__)


def _report(level: str, text: str, throttle_key: str | None = None) -> None:
    getattr(_log, level)(text)


@dataclass
class Output:
    stamp: Any            # the input's stamp (opaque)
    person_id: int
    frame: MarkerFrame


@dataclass
class Step:
    outputs: list[Output] = field(default_factory=list)   # publish these, in order
    hold: bool = False                                     # the input was held back (offline window)


@dataclass
class _Held:
    stamp: Any
    stamp_ns: int
    obs: BodyObservation
    person_id: int
    names: tuple


class MarkerStream:
    # After the end of stream, flush held frames even if the last keypoints never arrive [s].
    EOS_FLUSH_TIMEOUT_S = 5.0

    def __init__(self, params: Mapping[str, Any], *, extrinsics=None,
                 report: Callable[..., None] = _report):
        """`params`: the markers_node config section; `report(level, text, throttle_key)`
        ("info", "warning", "error") for what the node should log; messages that may repeat
        every frame carry a `throttle_key`."""
        self.p = dict(params)
        self.extrinsics = extrinsics
        self.report = report
        self.estimator: StreamingMarkerEstimator | None = None
        self.intrinsics: CameraIntrinsics | None = None
        self.offline: bool | None = None      # None until the node knows its source's kind
        self.frames = 0
        self._held: list[_Held] = []
        self._eos_ns: int | None = None       # capture stamp of the source's last frame
        self._last_ns = -1                    # newest input stamp handled
        self._last_input_s = 0.0              # clock of the newest input

    # --- state ----------------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        return bool(self._held)

    @property
    def world(self):
        """The fixed world frame (virtual_markers.WorldFrame), or None while it is pending."""
        return self.estimator.world if self.estimator is not None and self.estimator.ready else None

    @property
    def ready(self) -> bool:
        return self.estimator is not None and self.estimator.ready

    def nan_frame(self, time_s: float, names: tuple) -> MarkerFrame:
        return MarkerFrame(time_s=time_s, names=names, positions=np.full((len(names), 3), np.nan),
                           raw=np.full((len(names), 3), np.nan), confidence=np.zeros(len(names)),
                           tracked=False, frame_id=self.p["world_frame"], marker_set=marker_set_of(names))

    # --- input ----------------------------------------------------------------------------------
    def set_intrinsics(self, intrinsics: CameraIntrinsics) -> None:
        if self.intrinsics is None:
            self.intrinsics = intrinsics

    def push(self, stamp, stamp_ns: int, obs: BodyObservation, person_id: int, *, now_s: float) -> Step:
        """One keypoints input (its observation); returns what to publish."""
        self._last_input_s = now_s
        names = tuple(obs.names)
        self.frames += 1
        if self.intrinsics is None:
            # (a restarted node sees keypoints before its first CameraInfo): NaN markers.
            self.report("warning", "keypoints before any camera_info: markers unknown (NaN)", "no_intrinsics")
        elif self.estimator is None:
            self.estimator = StreamingMarkerEstimator(self.p, self.intrinsics, extrinsics=self.extrinsics)
        was_ready = self.ready
        try:
            mf = self.estimator.push(obs) if self.estimator is not None else None
        except Exception as exc:  # noqa: BLE001 - reported; the frame goes out as NaN
            self.report("error", f"keypoints at {obs.time_s:.3f} s: {type(exc).__name__}: {exc}", "estimator")
            mf = None
        if self.offline and not was_ready:
            # Offline: hold the window's frames until the world frame is known.
            self._held.append(_Held(stamp, int(stamp_ns), obs, int(person_id), names))
            if self.ready and self.estimator is not None:
                return Step(self._release_held(self.estimator.take_backlog() + ([mf] if mf is not None else [])))
            return Step(hold=True)
        if self.ready and not was_ready and self.estimator is not None:
            self.estimator.take_backlog()   # live: those stamps already went out as NaN
        return Step([Output(stamp, int(person_id), mf if mf is not None else self.nan_frame(obs.time_s, names))])

    def consumed(self, stamp_ns: int) -> list[Output]:
        """After each input (handled or failed): frames to publish if that finished the stream."""
        self._last_ns = max(self._last_ns, int(stamp_ns))
        return self._maybe_finish()

    def end_of_stream(self, eos_ns: int) -> list[Output]:
        """The source published its last frame (its capture stamp in ns)."""
        self._eos_ns = int(eos_ns)
        return self._maybe_finish()

    def check_eos_timeout(self, now_s: float) -> list[Output]:
        """Called periodically: the last frame's keypoints never came, finish with what is held."""
        if self._eos_ns is not None and self._held and now_s - self._last_input_s > self.EOS_FLUSH_TIMEOUT_S:
            self.report("warning", "no keypoints for the source's last frame: fixing the world frame "
                                   "from the frames received")
            return self._finish()
        return []

    # --- internals ------------------------------------------------------------------------------
    def _maybe_finish(self) -> list[Output]:
        if self._eos_ns is not None and self._held and self._last_ns >= self._eos_ns:
            return self._finish()
        return []

    def _release_held(self, frames: list[MarkerFrame]) -> list[Output]:
        """The held frames in order: their markers where the estimator has them, else NaN."""
        by_time = {f.time_s: f for f in frames}
        out = []
        for h in self._held:
            mf = by_time.get(h.obs.time_s)
            out.append(Output(h.stamp, h.person_id, mf if mf is not None else self.nan_frame(h.obs.time_s, h.names)))
        if self._held:
            self.report("info", f"published the {len(self._held)} frame(s) of the ground-plane window")
        self._held = []
        return out

    def _finish(self) -> list[Output]:
        """The clip ended inside the ground-plane window: fix the world frame from the frames
        held (a window as long as they span) and release them."""
        obs = [h.obs for h in self._held]
        frames: list[MarkerFrame] = []
        if obs and self.intrinsics is not None:
            span = obs[-1].time_s - obs[0].time_s
            estimator = StreamingMarkerEstimator(dict(self.p, ground_window_s=span), self.intrinsics,
                                                 extrinsics=self.extrinsics)
            last = None
            try:
                for o in obs:
                    last = estimator.push(o)
            except Exception as exc:  # noqa: BLE001 - reported; the frames go out as NaN
                self.report("error", f"world frame at end of stream: {type(exc).__name__}: {exc}")
            if estimator.ready:
                frames = estimator.take_backlog() + ([last] if last is not None else [])
                self.estimator = estimator
                self.report("info", f"clip shorter than ground_window_s={self.p['ground_window_s']} s: world "
                                    f"frame fixed from its {len(obs)} frames ({span:.2f} s)")
            else:
                self.report("warning", f"no world frame from the clip's {len(obs)} frames: markers NaN")
        return self._release_held(frames)
