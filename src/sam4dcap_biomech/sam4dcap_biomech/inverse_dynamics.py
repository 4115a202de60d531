"""Inverse dynamics with OpenSim's InverseDynamicsTool: coordinates (.mot) -> generalized forces.

The coordinates are low-pass filtered by the tool before differentiation (default from config
id_node.lowpass_cutoff_hz, 6 Hz). External loads come from an OpenSim ExternalLoads XML (e.g.
ground reaction forces); without one, the pelvis (root) forces and moments are the residuals
that replace the missing ground reaction and the joint moments are not physical during
ground contact: the result says so (IDResult.no_external_loads, the .sto name and header).
"""

from __future__ import annotations

import logging
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Sam4dcapError
from .model_builder import load_model
from .opensim_logging import opensim_log
from .settings import IDSettings
from .storage import read_mot, write_mot, write_sto
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

NO_LOADS_NAME = "Inverse Dynamics (NO EXTERNAL LOADS: residuals not physical)"
NO_LOADS_HEADER = ("external_loads=none (no ground reaction forces given: pelvis residual forces/moments "
                   "and joint moments during ground contact are not physical)")


# Peak joint moments of human movement stay below ~5 N*m per kg of body mass (sprinting, jumping);
# three times that is no longer a human result but a unit or input error.
PLAUSIBLE_JOINT_MOMENT_N_M_PER_KG = 15.0
# No rotational coordinate of a human trial turns a joint more than a full turn.
_MAX_JOINT_ANGLE_RAD = 2 * np.pi
# Translations (pelvis_tx...) beyond this are not a capture volume [m].
_MAX_TRANSLATION_M = 1000.0


@dataclass(frozen=True)
class IDResult:
    forces: TimeSeries            # generalized forces: N*m for rotational, N for translational dofs
    no_external_loads: bool
    out_sto: Path | None = None
    log_file: Path | None = None
    lowpass_cutoff_hz: float | None = None
    implausible: tuple[str, ...] = ()  # joint moments beyond human ranges (see the warning)


def _coordinates(coordinates) -> TimeSeries:
    if isinstance(coordinates, TimeSeries):
        if coordinates.is_points:
            raise Sam4dcapError("coordinates must be a scalar TimeSeries (N, K), not points")
        return coordinates
    return read_mot(coordinates)


def check_coordinates_plausible(coords: TimeSeries, model, state) -> None:
    """Refuse coordinates no human trial has: non-finite cells, degrees labelled as radians,
    translations beyond a capture volume (each named, with the header's inDegrees)."""
    cs = model.getCoordinateSet()
    header = coords.meta.get("header") or {}
    in_deg = header.get("inDegrees")
    label = f"inDegrees={in_deg}" if in_deg is not None else "no inDegrees line (read as radians)"
    for i in range(cs.getSize()):
        c = cs.get(i)
        name = c.getName()
        if name not in coords.names:
            continue
        q = coords.get(name)
        if np.isinf(q).any():
            raise Sam4dcapError(f"coordinate {name} holds infinite values (first t = "
                                f"{coords.time[np.flatnonzero(np.isinf(q))[0]]:.3f} s)")
        peak = float(np.nanmax(np.abs(q))) if np.isfinite(q).any() else 0.0
        rotational = c.getMotionType() == 1
        if rotational and peak > _MAX_JOINT_ANGLE_RAD and c.getRangeMax() - c.getRangeMin() <= 2 * np.pi:
            where = coords.meta.get("source", "the coordinates")
            if peak < 2 * 360.0:
                raise Sam4dcapError(f"{where}: {name} reaches {peak:.1f} rad: the coordinates look like degrees "
                                    f"but the header has {label}; set inDegrees=yes in the header")
            raise Sam4dcapError(f"{where}: {name} reaches {peak:.3g} rad, no human joint angle: corrupt value?")
        if not rotational and peak > _MAX_TRANSLATION_M:
            raise Sam4dcapError(f"coordinate {name} reaches {peak:.3g} m, beyond any capture volume: corrupt value "
                                "or millimetres?")


def external_loads_time_range(xml_path) -> tuple[Path, float, float]:
    """(data file, first, last time) of an OpenSim ExternalLoads XML's force data file."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise Sam4dcapError(f"external loads {xml_path}: not valid XML ({exc})") from None
    except OSError as exc:
        raise Sam4dcapError(f"cannot read external loads {xml_path}: {exc.strerror or exc}") from None
    loads = root if root.tag == "ExternalLoads" else root.find(".//ExternalLoads")
    text = (loads.findtext("datafile") or "").strip() if loads is not None else ""
    if loads is None or not text:
        raise Sam4dcapError(f"external loads {xml_path}: no <ExternalLoads> with a <datafile> (the ground-force "
                            ".mot); pass an OpenSim ExternalLoads file")
    data = Path(text) if Path(text).is_absolute() else xml_path.parent / text
    if not data.is_file():
        raise Sam4dcapError(f"ground-force file {data} named by {xml_path} (datafile) not found")
    forces = read_mot(data)
    return data, float(forces.time[0]), float(forces.time[-1])


def _check_loads_overlap(coords: TimeSeries, xml_path) -> None:
    data, t0, t1 = external_loads_time_range(xml_path)
    tol = 0.5 / coords.rate_hz if coords.n_frames > 1 else 1e-6
    if coords.time[0] < t0 - tol or coords.time[-1] > t1 + tol:
        raise Sam4dcapError(f"coordinates {coords.time[0]:.3f}-{coords.time[-1]:.3f} s are not inside the "
                            f"ground-force time range {t0:.3f}-{t1:.3f} s of {data}: trim the trial "
                            "(--start/--end) or fix the time columns")


def _on_time_grid(forces: TimeSeries, time: np.ndarray) -> TimeSeries:
    """The tool's output (its own padded, resampled grid) back on the coordinates' times."""
    if forces.n_frames == time.size and np.allclose(forces.time, time, atol=1e-9):
        return forces
    values = np.column_stack([np.interp(time, forces.time, forces.values[:, k]) for k in range(len(forces.names))])
    return TimeSeries(time=np.asarray(time, float), names=forces.names, values=values, unit=forces.unit,
                      meta=forces.meta, channel_units=forces.channel_units)


def implausible_moments(forces: TimeSeries, mass_kg: float) -> tuple[str, ...]:
    """Joint moments (not the root's residuals) beyond PLAUSIBLE_JOINT_MOMENT_N_M_PER_KG."""
    limit = PLAUSIBLE_JOINT_MOMENT_N_M_PER_KG * mass_kg
    out = []
    for n in forces.names:
        if n.endswith("_moment") and not n.startswith("pelvis"):
            peak = float(np.nanmax(np.abs(forces.get(n))))
            if peak > limit:
                out.append(f"{n} {peak:.3g} N*m")
    return tuple(out)


def _mark_no_loads(path: Path) -> None:
    """Name the .sto and add a header line saying there were no external loads."""
    lines = path.read_text().splitlines()
    lines[0] = NO_LOADS_NAME
    end = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader")
    lines.insert(end, NO_LOADS_HEADER)
    path.write_text("\n".join(lines) + "\n")


def run_id(model_path, coordinates, *, external_loads_xml=None, lowpass_cutoff_hz: float | None = None,
           out_sto=None, start_s: float | None = None, end_s: float | None = None,
           log_file=None, settings: IDSettings | None = None) -> IDResult:
    """Inverse dynamics of a coordinate trial (TimeSeries rad/m, or .mot path).

    lowpass_cutoff_hz: None = settings.lowpass_cutoff_hz (settings None = the config's,
    `IDSettings.from_config()`); <= 0 = no filtering.
    Returns generalized forces (`<coordinate>_moment` N*m / `<coordinate>_force` N).
    """
    import opensim

    settings = settings if settings is not None else IDSettings.from_config()
    cutoff = settings.lowpass_cutoff_hz if lowpass_cutoff_hz is None else float(lowpass_cutoff_hz)
    coords = _coordinates(coordinates)
    if external_loads_xml in ("", None):
        external_loads_xml = None
    elif not Path(external_loads_xml).is_file():
        raise Sam4dcapError(f"external loads file not found: {external_loads_xml}")
    model = load_model(model_path)
    cs = model.getCoordinateSet()
    state = model.initSystem()
    model_coords = [cs.get(i).getName() for i in range(cs.getSize())]
    needed = [cs.get(i).getName() for i in range(cs.getSize()) if not cs.get(i).getLocked(state)]
    missing = [n for n in needed if n not in coords.names]
    if missing:
        if not set(coords.names) & set(model_coords):
            raise Sam4dcapError(f"none of the coordinate columns ({', '.join(coords.names[:6])}, ...) are coordinates of "
                                f"model {model.getName()!r}: wrong model or wrong file")
        raise Sam4dcapError(f"coordinate(s) {', '.join(missing)} of the model are missing from the coordinates; "
                            "give a full IK result for this model")
    if start_s is not None or end_s is not None:
        coords = coords.slice_time(start_s, end_s)
    used = coords.select(needed)
    if np.isnan(used.values).any():
        bad = np.flatnonzero(np.isnan(used.values).any(axis=1))
        raise Sam4dcapError(f"{bad.size} frame(s) of the coordinates have missing values (first t = "
                            f"{coords.time[bad[0]]:.3f} s); fill the gaps (filters.fill_gaps) before inverse dynamics")
    check_coordinates_plausible(used, model, state)
    if external_loads_xml is not None:
        _check_loads_overlap(used, external_loads_xml)
    if coords.n_frames < 4:
        raise Sam4dcapError(f"{coords.n_frames} frames of coordinates: inverse dynamics needs at least 4")
    if cutoff > 0 and cutoff >= 0.5 * coords.rate_hz:
        raise Sam4dcapError(f"low-pass cutoff {cutoff} Hz is not below the Nyquist frequency of the "
                            f"{coords.rate_hz:.1f} Hz coordinates")

    out_sto = Path(out_sto) if out_sto is not None else None
    with tempfile.TemporaryDirectory(prefix="sam4dcap_id_") as tmp_name:
        tmp = Path(tmp_name)
        results_dir = out_sto.parent if out_sto is not None else tmp
        results_dir.mkdir(parents=True, exist_ok=True)
        sto_name = out_sto.name if out_sto is not None else "inverse_dynamics.sto"
        log_path = Path(log_file) if log_file is not None else (
            results_dir / f"{Path(sto_name).stem}_opensim.log" if out_sto is not None else None)
        mot = write_mot(tmp / "coordinates.mot", used, name="coordinates")
        tool = opensim.InverseDynamicsTool()
        tool.setModel(model)
        tool.setCoordinatesFileName(str(mot))
        tool.setLowpassCutoffFrequency(cutoff if cutoff > 0 else -1.0)
        tool.setStartTime(float(coords.time[0]))
        tool.setEndTime(float(coords.time[-1]))
        excluded = opensim.ArrayStr()
        excluded.append("Muscles")
        tool.setExcludedForces(excluded)
        if external_loads_xml is not None:
            tool.setExternalLoadsFileName(str(Path(external_loads_xml).resolve()))
        tool.setResultsDir(str(results_dir))
        tool.setOutputGenForceFileName(sto_name)
        with opensim_log(log_path):
            try:
                ok = tool.run()
            except Exception as exc:  # noqa: BLE001
                raise Sam4dcapError(f"OpenSim inverse dynamics failed: {str(exc).splitlines()[0]}"
                                    + (f" (log: {log_path})" if log_path else "")) from None
        result_path = results_dir / sto_name
        if not ok or not result_path.is_file():
            raise Sam4dcapError("OpenSim inverse dynamics failed" + (f" (see {log_path})" if log_path else ""))
        forces = read_mot(result_path)
        on_grid = _on_time_grid(forces, used.time)
        if on_grid is not forces:
            write_sto(result_path, on_grid)
            forces = read_mot(result_path)
        if external_loads_xml is None:
            _mark_no_loads(result_path)
    meta = dict(forces.meta, no_external_loads=external_loads_xml is None, lowpass_cutoff_hz=cutoff)
    forces = TimeSeries(time=forces.time, names=forces.names, values=forces.values, unit="N",
                        meta=meta, channel_units={n: "N*m" for n in forces.names if n.endswith("_moment")})
    if external_loads_xml is None:
        log.warning("inverse dynamics without external loads: residuals are not physical")
    implausible = implausible_moments(forces, model.getTotalMass(state))
    if implausible:
        log.warning("joint moments beyond human ranges (> %g N*m/kg): %s; check the coordinates' units and the "
                    "external loads", PLAUSIBLE_JOINT_MOMENT_N_M_PER_KG, ", ".join(implausible))
    return IDResult(forces=forces, no_external_loads=external_loads_xml is None, out_sto=out_sto,
                    log_file=log_path, lowpass_cutoff_hz=cutoff, implausible=implausible)
