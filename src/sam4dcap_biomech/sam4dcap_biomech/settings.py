"""Typed, frozen settings of the biomechanics stages, built at the edges from the one config.

The CLI, the nodes and the offline runner build these from `config/sam4dcap.yaml` (or take
them from their caller) and pass them into the core; the core never looks a parameter up by a
ROS node's name. `<Settings>.from_config()` is the one place that knows which YAML section and
parameter each field comes from. The subject's height and mass have one validator each here
(`check_height_m`, `check_mass_kg`), used by every entry point that takes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import Config, load_config
from .errors import Sam4dcapError

# The YAML documents the same ranges (ik_node.subject_height_m / subject_mass_kg,
# markers_node.subject_height_m): tests/test_config.py checks they agree.
HEIGHT_RANGE_M = (0.5, 2.5)
MASS_RANGE_KG = (10.0, 300.0)


def check_height_m(value, *, name: str = "height") -> float:
    """A subject's standing height in metres, or one clear error (`name` is how the caller calls
    it, e.g. "--height")."""
    lo, hi = HEIGHT_RANGE_M
    try:
        height = float(value)
    except (TypeError, ValueError):
        raise Sam4dcapError(f"{name} {value!r} is not a number of metres (e.g. 1.75)") from None
    if not math.isfinite(height) or not lo <= height <= hi:
        raise Sam4dcapError(f"{name} {value!r} m is outside {lo}..{hi} m: not a human standing height in metres "
                            "(give metres, not cm)")
    return height


def check_mass_kg(value, *, name: str = "mass") -> float:
    """A subject's body mass in kilograms, or one clear error."""
    lo, hi = MASS_RANGE_KG
    try:
        mass = float(value)
    except (TypeError, ValueError):
        raise Sam4dcapError(f"{name} {value!r} is not a number of kilograms (e.g. 70)") from None
    if not math.isfinite(mass) or not lo <= mass <= hi:
        raise Sam4dcapError(f"{name} {value!r} kg is outside {lo:g}..{hi:g} kg: give the body mass in kilograms")
    return mass


def _section(config: Config | None, name: str) -> dict:
    return (config if config is not None else load_config()).params(name)


@dataclass(frozen=True)
class IKSettings:
    """Marker IK, batch and streaming alike (config section ik_node)."""

    accuracy: float               # solver convergence accuracy (OpenSim meaning)
    min_markers: int              # frames with fewer valid markers are not solved
    max_marker_rms_m: float       # a result whose marker RMS exceeds this in any frame is refused
    regularize_unobserved: bool   # marker-set priors + hold of unobserved coordinates

    @classmethod
    def from_config(cls, config: Config | None = None) -> IKSettings:
        p = _section(config, "ik_node")
        return cls(accuracy=float(p["accuracy"]), min_markers=int(p["min_markers"]),
                   max_marker_rms_m=float(p["max_marker_rms_m"]),
                   regularize_unobserved=bool(p["regularize_unobserved"]))

    @staticmethod
    def check_accuracy(value, config: Config | None = None) -> float:
        """An accuracy given by a caller, checked against the range the config documents."""
        spec = (config if config is not None else load_config()).specs("ik_node")["accuracy"]
        return float(spec.validate(value, node="ik_node"))


@dataclass(frozen=True)
class StaticWindowSettings:
    """Still-window detection for scaling (config section ik_node, static_*)."""

    min_duration_s: float     # shortest still window
    max_speed_m_s: float      # highest mean marker speed counted as still

    @classmethod
    def from_config(cls, config: Config | None = None) -> StaticWindowSettings:
        p = _section(config, "ik_node")
        return cls(min_duration_s=float(p["static_min_duration_s"]), max_speed_m_s=float(p["static_max_speed_m_s"]))


@dataclass(frozen=True)
class IDSettings:
    """Inverse dynamics, batch and streaming (config section id_node)."""

    lowpass_cutoff_hz: float   # low-pass of the coordinates before differentiation
    delay_s: float             # streaming: output delay (future samples for the zero-phase filter)

    @classmethod
    def from_config(cls, config: Config | None = None) -> IDSettings:
        p = _section(config, "id_node")
        return cls(lowpass_cutoff_hz=float(p["lowpass_cutoff_hz"]), delay_s=float(p["delay_s"]))


@dataclass(frozen=True)
class Subject:
    """The subject's height and mass, checked once (config ik_node.subject_height_m / _mass_kg)."""

    height_m: float
    mass_kg: float

    def __post_init__(self):
        object.__setattr__(self, "height_m", check_height_m(self.height_m))
        object.__setattr__(self, "mass_kg", check_mass_kg(self.mass_kg))

    @classmethod
    def from_config(cls, config: Config | None = None) -> Subject:
        p = _section(config, "ik_node")
        return cls(height_m=p["subject_height_m"], mass_kg=p["subject_mass_kg"])
