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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Sam4dcapError
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

NO_LOADS_NAME = "Inverse Dynamics (NO EXTERNAL LOADS: residuals not physical)"
NO_LOADS_HEADER = ("external_loads=none (no ground reaction forces given: pelvis residual forces/moments "
                   "and joint moments during ground contact are not physical)")


@dataclass(frozen=True)
class IDResult:
    forces: TimeSeries            # generalized forces: N*m for rotational, N for translational dofs
    no_external_loads: bool
    out_sto: Path | None = None
    log_file: Path | None = None
    lowpass_cutoff_hz: float | None = None


def _coordinates(coordinates) -> TimeSeries:
    from .storage import read_mot

    if isinstance(coordinates, TimeSeries):
        if coordinates.is_points:
            raise Sam4dcapError("coordinates must be a scalar TimeSeries (N, K), not points")
        return coordinates
    return read_mot(coordinates)


def _mark_no_loads(path: Path) -> None:
    """Name the .sto and add a header line saying there were no external loads."""
    lines = path.read_text().splitlines()
    lines[0] = NO_LOADS_NAME
    end = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader")
    lines.insert(end, NO_LOADS_HEADER)
    path.write_text("\n".join(lines) + "\n")


def run_id(model_path, coordinates, *, external_loads_xml=None, lowpass_cutoff_hz: float | None = None,
           out_sto=None, start_s: float | None = None, end_s: float | None = None,
           log_file=None) -> IDResult:
    """Inverse dynamics of a coordinate trial (TimeSeries rad/m, or .mot path).

    lowpass_cutoff_hz: None = config id_node.lowpass_cutoff_hz; <= 0 = no filtering.
    Returns generalized forces (`<coordinate>_moment` N*m / `<coordinate>_force` N).
    """
    import opensim

    from .config import load_config
    from .opensim_logging import opensim_log
    from .storage import read_mot, write_mot
    from .streaming_ik import _load_model

    params = load_config().params("id_node")
    cutoff = params["lowpass_cutoff_hz"] if lowpass_cutoff_hz is None else float(lowpass_cutoff_hz)
    coords = _coordinates(coordinates)
    if external_loads_xml in ("", None):
        external_loads_xml = None
    elif not Path(external_loads_xml).is_file():
        raise Sam4dcapError(f"external loads file not found: {external_loads_xml}")
    model = _load_model(model_path)
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
    if coords.n_frames < 4:
        raise Sam4dcapError(f"{coords.n_frames} frames of coordinates: inverse dynamics needs at least 4")
    if cutoff > 0 and cutoff >= 0.5 * coords.rate_hz:
        raise Sam4dcapError(f"low-pass cutoff {cutoff} Hz is not below the Nyquist frequency of the "
                            f"{coords.rate_hz:.1f} Hz coordinates")

    out_sto = Path(out_sto) if out_sto is not None else None
    with tempfile.TemporaryDirectory(prefix="sam4dcap_id_") as tmp:
        tmp = Path(tmp)
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
        if external_loads_xml is None:
            _mark_no_loads(result_path)
        forces = read_mot(result_path)
    meta = dict(forces.meta, no_external_loads=external_loads_xml is None, lowpass_cutoff_hz=cutoff)
    forces = TimeSeries(time=forces.time, names=forces.names, values=forces.values, unit="N",
                        meta=meta, channel_units={n: "N*m" for n in forces.names if n.endswith("_moment")})
    if external_loads_xml is None:
        log.warning("inverse dynamics without external loads: residuals are not physical")
    return IDResult(forces=forces, no_external_loads=external_loads_xml is None, out_sto=out_sto,
                    log_file=log_path, lowpass_cutoff_hz=cutoff)
