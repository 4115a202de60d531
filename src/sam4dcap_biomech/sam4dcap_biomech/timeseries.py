"""The one time-series type shared by every stage: keypoints, markers, coordinates, forces.

A `TimeSeries` holds `time` (N,) in seconds of capture time, channel `names` (K), and `values`
of shape (N, K) for scalar channels (joint coordinates, generalized forces) or (N, K, 3) for
points (markers, keypoints). Units and the reference frame are attached, never implied.
Missing samples are NaN, never zeros. Instances are immutable by convention: methods return
new objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import Sam4dcapError

# Units understood by `to_unit`; scale factor to the SI unit of the same quantity.
_LENGTH = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
_ANGLE = {"rad": 1.0, "deg": np.pi / 180.0}


@dataclass(frozen=True)
class TimeSeries:
    time: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray
    unit: str = "m"
    frame: str = ""
    # Free-form metadata (e.g. {"marker_set": "blazepose33", "source": "cam01.mp4"}).
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Per-channel units when they differ (coordinates: "rad" for rotations, "m" for translations).
    channel_units: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        time = np.asarray(self.time, dtype=float).reshape(-1)
        values = np.asarray(self.values, dtype=float)
        names = tuple(str(n) for n in self.names)
        if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] != 3):
            raise Sam4dcapError(f"TimeSeries values must be (N, K) or (N, K, 3); got shape {values.shape}")
        if values.shape[0] != time.shape[0]:
            raise Sam4dcapError(f"TimeSeries has {time.shape[0]} times but {values.shape[0]} frames of values")
        if values.shape[1] != len(names):
            raise Sam4dcapError(f"TimeSeries has {len(names)} names but {values.shape[1]} channels")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise Sam4dcapError(f"TimeSeries channel names repeat: {dup}")
        if time.size > 1 and np.any(np.diff(time) <= 0):
            raise Sam4dcapError("TimeSeries time must be strictly increasing")
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "channel_units", dict(self.channel_units))

    # --- shape -------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self.time.shape[0])

    @property
    def is_points(self) -> bool:
        """True for 3D point channels (markers, keypoints)."""
        return self.values.ndim == 3

    @property
    def rate_hz(self) -> float:
        """Median sampling rate from the time stamps (capture times may jitter)."""
        if self.n_frames < 2:
            return float("nan")
        return float(1.0 / np.median(np.diff(self.time)))

    def unit_of(self, name: str) -> str:
        return self.channel_units.get(name, self.unit)

    # --- access ------------------------------------------------------------------------
    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise Sam4dcapError(f"no channel named {name!r} (have: {', '.join(self.names[:12])}"
                                f"{', ...' if len(self.names) > 12 else ''})") from None

    def get(self, name: str) -> np.ndarray:
        """Values of one channel: (N,) or (N, 3)."""
        return self.values[:, self.index(name)]

    def select(self, names: Iterable[str]) -> "TimeSeries":
        names = list(names)
        missing = [n for n in names if n not in self.names]
        if missing:
            raise Sam4dcapError(f"missing channels: {', '.join(missing)}")
        idx = [self.names.index(n) for n in names]
        return replace(self, names=tuple(names), values=self.values[:, idx],
                       channel_units={n: u for n, u in self.channel_units.items() if n in names})

    def slice_time(self, start_s: float | None = None, end_s: float | None = None) -> "TimeSeries":
        keep = np.ones(self.n_frames, bool)
        if start_s is not None:
            keep &= self.time >= start_s
        if end_s is not None:
            keep &= self.time <= end_s
        return replace(self, time=self.time[keep], values=self.values[keep])

    def frames(self, index) -> "TimeSeries":
        """Rows by integer index, slice or boolean mask."""
        return replace(self, time=self.time[index], values=self.values[index])

    def with_values(self, values: np.ndarray, **changes) -> "TimeSeries":
        return replace(self, values=values, **changes)

    def missing(self) -> np.ndarray:
        """(N, K) boolean: True where a sample is missing (any NaN component)."""
        v = self.values
        return np.isnan(v).any(axis=2) if v.ndim == 3 else np.isnan(v)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {n: self.values[:, i] for i, n in enumerate(self.names)}

    # --- units -------------------------------------------------------------------------
    def to_unit(self, unit: str) -> "TimeSeries":
        """Convert a length series (m/mm/cm) or an angle series (rad/deg).

        Channels with their own unit in `channel_units` (translations among angles) are left
        as they are, so a coordinate series converts its rotations only.
        """
        table = _LENGTH if self.unit in _LENGTH else _ANGLE if self.unit in _ANGLE else None
        if table is None or unit not in table:
            raise Sam4dcapError(f"cannot convert unit {self.unit!r} to {unit!r}")
        factor = table[self.unit] / table[unit]
        scale = np.array([1.0 if n in self.channel_units and self.channel_units[n] != self.unit
                          else factor for n in self.names])
        shape = (1, -1, 1) if self.is_points else (1, -1)
        return replace(self, values=self.values * scale.reshape(shape), unit=unit)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, time: Sequence[float] | np.ndarray, channels: Mapping[str, np.ndarray], **kw) -> "TimeSeries":
        names = list(channels)
        values = np.stack([np.asarray(channels[n], float) for n in names], axis=1)
        return cls(time=np.asarray(time, float), names=tuple(names), values=values, **kw)

    def __repr__(self) -> str:
        kind = "points" if self.is_points else "scalars"
        span = f"{self.time[0]:.3f}..{self.time[-1]:.3f} s" if self.n_frames else "empty"
        return (f"TimeSeries({self.n_frames} frames, {len(self.names)} {kind}, {span}, "
                f"unit={self.unit!r}, frame={self.frame!r})")
