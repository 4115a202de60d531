"""Accumulate one trial's marker, kinematics and kinetics samples; write OpenSim files at its end.

ROS-free (the trial writer node is a thin adapter). Samples arrive one instant at a time, stamped
with the capture time of their source frame, possibly with channel names changing mid-trial
(a hot-swapped model): each stream keeps the union of names in first-seen order, NaN where a
sample lacked a channel. Out-of-order samples are sorted; a repeated stamp keeps the last one.

Files written into `<output_dir>/<trial>/`:
    <trial>.trc              markers, metres, world frame (y up)
    <trial>_ik.mot           coordinates (rotations in degrees, translations in metres)
    <trial>_ik_errors.sto    per-frame IK marker error (marker_error_RMS/max [m], markers_used)
    <trial>_id.sto           generalized forces, OpenSim ID column names (<coord>_moment [N*m],
                             <coord>_force [N])
    <trial>_trial.json       what was recorded (counts, time span, marker set, model, flags)
Only the streams that received samples are written.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import Sam4dcapError
from .storage import is_translational, write_mot, write_sto
from .timeseries import TimeSeries
from .trc import write_trc

log = logging.getLogger(__name__)

_TRIAL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def trial_name_or_default(name: str, *, now: float | None = None) -> str:
    """`name` checked against [A-Za-z0-9_-]+, or a time-stamped name when empty."""
    name = (name or "").strip()
    if not name:
        stamp = _time.strftime("%Y%m%d_%H%M%S", _time.localtime(now if now is not None else _time.time()))
        return f"trial_{stamp}"
    if not _TRIAL_NAME.match(name):
        raise Sam4dcapError(f"trial name {name!r} may only hold letters, digits, '_' and '-'")
    return name


class _Stream:
    """Samples of one kind: time, channel names, values (K,) or (K, 3) per sample."""

    def __init__(self, point_width: int | None):
        self.point_width = point_width  # 3 for points, None for scalars
        self.times: list[float] = []
        self.names: list[tuple[str, ...]] = []
        self.values: list[np.ndarray] = []

    def add(self, time_s: float, names: Sequence[str], values) -> None:
        names = tuple(str(n) for n in names)
        values = np.asarray(values, dtype=float)
        expected = (len(names), self.point_width) if self.point_width else (len(names),)
        if values.shape != expected:
            raise Sam4dcapError(f"sample at t={time_s:.3f} s has values of shape {values.shape} "
                                f"for {len(names)} names (expected {expected})")
        if not math.isfinite(time_s):
            raise Sam4dcapError("sample time is not finite")
        self.times.append(float(time_s))
        self.names.append(names)
        self.values.append(values)

    def __len__(self) -> int:
        return len(self.times)

    def assemble(self) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
        """Sorted unique times, union of names, values NaN-filled where a sample lacked a name."""
        union: dict[str, int] = {}
        for names in dict.fromkeys(self.names):  # distinct name tuples, first-seen order
            for n in names:
                union.setdefault(n, len(union))
        tail = (self.point_width,) if self.point_width else ()
        out = np.full((len(self.times), len(union)) + tail, np.nan)
        for i, (names, values) in enumerate(zip(self.names, self.values)):
            out[i, [union[n] for n in names]] = values
        times = np.asarray(self.times)
        # Stable sort, then keep the LAST sample of each repeated stamp (a re-sent frame wins).
        order = np.argsort(times, kind="stable")
        times, out = times[order], out[order]
        keep = np.append(np.diff(times) > 0, True)
        return times[keep], tuple(union), out[keep]


@dataclass
class TrialFiles:
    """What `TrialRecording.write` produced: files written and problems met (one line each)."""

    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class TrialRecording:
    """One trial: call add_* as samples arrive, then write() once at the end."""

    def __init__(self, name: str, output_dir, *, translational: Iterable[str] = ()):
        """`translational`: coordinate names in metres besides OpenSim's *_tx/_ty/_tz naming."""
        self.name = trial_name_or_default(name)
        self.folder = Path(output_dir) / self.name
        self._translational = set(translational)
        self._markers = _Stream(3)
        self._coordinates = _Stream(None)
        self._ik_errors = _Stream(None)
        self._kinetics = _Stream(None)
        self._lock = threading.Lock()
        self.marker_set = ""
        self.model_name = ""
        self.no_external_loads: bool | None = None
        self.written: TrialFiles | None = None

    # --- samples -------------------------------------------------------------------------
    def add_markers(self, time_s: float, names: Sequence[str], positions_m, *, marker_set: str = "") -> None:
        """One frame of marker positions (M, 3) in metres, world frame; NaN rows = missing."""
        with self._lock:
            self._markers.add(time_s, names, positions_m)
            self.marker_set = marker_set or self.marker_set

    def add_kinematics(self, time_s: float, names: Sequence[str], positions, *, model_name: str = "",
                       marker_error_rms_m: float = math.nan, marker_error_max_m: float = math.nan,
                       markers_used: int | None = None) -> None:
        """One IK frame: coordinate values (rad or m) and its marker error."""
        with self._lock:
            self._coordinates.add(time_s, names, positions)
            self._ik_errors.add(time_s, ("marker_error_RMS", "marker_error_max", "markers_used"),
                                [marker_error_rms_m, marker_error_max_m,
                                 math.nan if markers_used is None else float(markers_used)])
            self.model_name = model_name or self.model_name

    def add_kinetics(self, time_s: float, names: Sequence[str], generalized_forces, *,
                     no_external_loads: bool = True) -> None:
        """One ID frame: generalized forces per coordinate name (N*m rotational, N translational)."""
        columns = [f"{n}_force" if self._is_translational(n) else f"{n}_moment" for n in names]
        with self._lock:
            self._kinetics.add(time_s, columns, generalized_forces)
            # Any frame without external loads makes the trial's residuals non-physical.
            self.no_external_loads = bool(no_external_loads) or bool(self.no_external_loads)

    def _is_translational(self, name: str) -> bool:
        return name in self._translational or is_translational(name)

    @property
    def counts(self) -> dict[str, int]:
        return {"markers": len(self._markers), "kinematics": len(self._coordinates),
                "kinetics": len(self._kinetics)}

    @property
    def is_empty(self) -> bool:
        return not any(self.counts.values())

    # --- series ------------------------------------------------------------------------
    def markers(self) -> TimeSeries | None:
        if not len(self._markers):
            return None
        t, names, v = self._markers.assemble()
        return TimeSeries(t, names, v, unit="m", frame="world",
                          meta={"marker_set": self.marker_set, "trial": self.name})

    def coordinates(self) -> TimeSeries | None:
        if not len(self._coordinates):
            return None
        t, names, v = self._coordinates.assemble()
        return TimeSeries(t, names, v, unit="rad", meta={"name": f"{self.name}_ik", "model": self.model_name},
                          channel_units={n: "m" for n in names if self._is_translational(n)})

    def ik_errors(self) -> TimeSeries | None:
        if not len(self._ik_errors):
            return None
        t, names, v = self._ik_errors.assemble()
        if np.isnan(v).all():  # the kinematics source reported no errors
            return None
        return TimeSeries(t, names, v, unit="m", channel_units={"markers_used": "count"})

    def kinetics(self) -> TimeSeries | None:
        if not len(self._kinetics):
            return None
        t, names, v = self._kinetics.assemble()
        return TimeSeries(t, names, v, unit="N*m",
                          channel_units={n: "N" for n in names if n.endswith("_force")},
                          meta={"no_external_loads": self.no_external_loads})

    # --- files -------------------------------------------------------------------------
    def write(self) -> TrialFiles:
        """Write every stream that received samples; a failing file doesn't stop the others.

        Raises Sam4dcapError when the trial received nothing at all.
        """
        with self._lock:
            if self.is_empty:
                raise Sam4dcapError(f"trial {self.name!r} received no markers, kinematics or kinetics:"
                                    " nothing written (is the pipeline publishing?)")
            result = TrialFiles()
            self.folder.mkdir(parents=True, exist_ok=True)
            jobs = [
                (f"{self.name}.trc", self.markers, lambda p, s: write_trc(p, s, units="m")),
                (f"{self.name}_ik.mot", self.coordinates,
                 lambda p, s: write_mot(p, s, in_degrees=True, name=f"{self.name}_ik")),
                (f"{self.name}_ik_errors.sto", self.ik_errors, lambda p, s: write_sto(p, s)),
                (f"{self.name}_id.sto", self.kinetics, lambda p, s: write_sto(p, s)),
            ]
            spans = {}
            for filename, series_of, writer in jobs:
                try:
                    series = series_of()
                    if series is None:
                        continue
                    spans[filename] = [float(series.time[0]), float(series.time[-1]), series.n_frames]
                    result.files.append(Path(writer(self.folder / filename, series)))
                except Sam4dcapError as exc:
                    result.problems.append(f"{filename}: {exc}")
                    log.warning("trial %s: %s not written: %s", self.name, filename, exc)
            summary = {
                "trial": self.name, "counts": self.counts, "files": [p.name for p in result.files],
                "spans_s": spans, "marker_set": self.marker_set, "model_name": self.model_name,
                "no_external_loads": self.no_external_loads, "problems": result.problems,
            }
            summary_path = self.folder / f"{self.name}_trial.json"
            summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            result.files.append(summary_path)
            self.written = result
            log.info("trial %s: wrote %s", self.name, ", ".join(p.name for p in result.files))
            return result
